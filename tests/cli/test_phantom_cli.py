"""``smssynth phantom`` through click: writes patients, refuses to clobber, rejects bad sizes."""

from __future__ import annotations

import dataclasses

import pydicom
import pytest
from click.testing import CliRunner

from cli.phantom import KINDS, phantom
from synth.io import phantom as lib


def invoke(*args):
    return CliRunner().invoke(phantom, [str(a) for a in args], catch_exceptions=False)


def test_default_is_representative(tmp_path):
    # (how fast it is is no business of a test: the machines are shared and timings noisy)
    r = invoke(tmp_path / "demo")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("PHANTOM01: cine, 4 slices x 16 frames")
    assert "1.2.826" not in r.output  # no UIDs
    files = sorted((tmp_path / "demo" / "PHANTOM01").iterdir())
    assert len(files) == 64 and all(f.suffix == ".dcm" for f in files)
    ds = pydicom.dcmread(files[0])
    assert (ds.Rows, ds.Columns) == (80, 80)


def test_defaults_match_the_library():
    spec = lib.PhantomSpec()
    params = {p.name: p.default for p in phantom.params}
    assert (params["kind"], params["slices"], params["frames"]) == (spec.kind, spec.n_slices, spec.n_frames)
    assert params["acquired"] == "{}x{}".format(*spec.acquired)
    assert params["matrix"] == "{}x{}".format(*spec.matrix)
    assert params["seed"] == spec.seed
    assert KINDS == lib.KINDS
    assert {f.name for f in dataclasses.fields(spec)} >= {"kind", "n_slices", "n_frames", "acquired", "matrix"}


def test_several_patients(tmp_path):
    r = invoke(tmp_path, "--kind", "perfusion", "--patients", 2, "--slices", 2, "--frames", 3,
               "--acquired", "31x27", "--matrix", "40x36", "--seed", 7, "--no-extension")
    assert r.exit_code == 0, r.output
    assert [ln.split(":")[0] for ln in r.output.strip().splitlines()] == ["PHANTOM01", "PHANTOM02"]
    assert "seed 7" in r.output and "seed 8" in r.output
    ids = set()
    for key in ("PHANTOM01", "PHANTOM02"):
        files = list((tmp_path / key).iterdir())
        assert len(files) == 6 and all(f.suffix == "" for f in files)
        ds = pydicom.dcmread(files[0])
        assert (ds.Rows, ds.Columns) == (40, 36) and ds.SeriesDescription.startswith("FIRST PASS")
        ids.add(ds.PatientID)
    assert len(ids) == 2


def test_snr_range_gives_each_patient_its_own(tmp_path):
    r = invoke(tmp_path / "a", "--kind", "perfusion", "--patients", 3, "--slices", 1, "--frames", 2,
               "--acquired", "24x24", "--matrix", "24x24", "--seed", 40, "--snr", "15:60")
    assert r.exit_code == 0, r.output
    snrs = [float(ln.split("SNR ")[1].split(";")[0]) for ln in r.output.strip().splitlines()]
    assert snrs == pytest.approx([lib.draw_snr(40 + i, 15, 60) for i in range(3)], rel=1e-2)
    assert len(set(snrs)) == 3 and all(15 <= v <= 60 for v in snrs)
    r = invoke(tmp_path / "b", "--slices", 1, "--frames", 2, "--snr", "30")
    assert r.exit_code == 0 and "SNR 30;" in r.output, r.output
    r = invoke(tmp_path / "c", "--slices", 1, "--frames", 2)
    assert r.exit_code == 0 and "SNR" not in r.output, r.output


def test_refuses_non_empty_dir_unless_overwrite(tmp_path):
    assert invoke(tmp_path, "--patients", 3, "--slices", 1, "--frames", 2).exit_code == 0
    r = invoke(tmp_path, "--slices", 1, "--frames", 2)
    assert r.exit_code == 2 and str(tmp_path) in r.output and "--overwrite" in r.output
    r = invoke(tmp_path, "--slices", 1, "--frames", 2, "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["PHANTOM01"]  # stale patients are gone


def test_overwrite_never_deletes_foreign_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    r = invoke(tmp_path, "--overwrite")
    assert r.exit_code == 2 and "notes.txt" in r.output
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--matrix", "10"], "--matrix"),
        (["--matrix", "60x60"], "smaller than --acquired"),
        (["--acquired", "64"], "--acquired"),
        (["--acquired", "4x4"], "--acquired"),
        (["--slices", "0"], "--slices"),
        (["--kind", "t1map"], "--kind"),
        (["--snr", "0"], "--snr"),
        (["--snr", "60:15"], "--snr"),
        (["--snr", "loud"], "--snr"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, args, needle):
    r = invoke(tmp_path / "out", *args)
    assert r.exit_code == 2 and needle in r.output, r.output
    assert not (tmp_path / "out").exists()
