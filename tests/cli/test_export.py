"""``smssynth export`` on the command line: files written; bad input is one line and exit code 2."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from synth.dataset.config import SimConfig
from synth.dataset.export import MANIFEST, file_name
from synth.dataset.pipeline import dicom2kspace

SALT = b"export-cli"


@pytest.fixture(scope="module")
def stores(phantom_cine, tmp_path_factory):
    root = tmp_path_factory.mktemp("export_cli")
    kspace, targets = root / "k.zarr", root / "t.zarr"
    dicom2kspace([phantom_cine], kspace, SimConfig(sms=2, coils=2, combos=2, seed=1), salt=SALT, threads=1)
    dicom2kspace([phantom_cine], targets, SimConfig(sms=2, coils=2, combos=1, targets_only=True), salt=SALT, threads=1)
    return kspace, targets


def run(capsys, *args):
    """(exit code, stdout, stderr) of ``smssynth ARGS`` as the console script runs it."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("layout", ["fastmri-h5", "ismrmrd"])
def test_export_writes_one_file_per_example(layout, stores, tmp_path, capsys):
    code, out, err = run(capsys, "export", stores[0], "--to", layout, "--out", tmp_path / "o", "-q")
    assert code == 0, err
    assert "2 example(s) written" in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted([MANIFEST, file_name(0), file_name(1)])
    assert json.loads((tmp_path / "o" / MANIFEST).read_text())["layout"] == layout


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_inputs_are_one_line_with_exit_code_2(stores, tmp_path, capsys):
    kspace, targets = stores
    # not an smssynth store
    plain = tmp_path / "plain"
    plain.mkdir()
    code, _, err = run(capsys, "export", plain, "--to", "ismrmrd", "--out", tmp_path / "o", "-q")
    assert code == 2 and str(plain) in _one_line(err)
    # a targets store has no k-space
    code, _, err = run(capsys, "export", targets, "--to", "fastmri-h5", "--out", tmp_path / "o", "-q")
    line = _one_line(err)
    assert code == 2 and str(targets) in line and "targets store has no k-space" in line
    # an existing --out without --overwrite
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("mine")
    code, _, err = run(capsys, "export", kspace, "--to", "ismrmrd", "--out", tmp_path / "taken", "-q")
    line = _one_line(err)
    assert code == 2 and "--out" in line and "--overwrite" in line and str(tmp_path / "taken") in line
    # ... and --overwrite does not replace what is not an earlier export
    code, _, err = run(capsys, "export", kspace, "--to", "ismrmrd", "--out", tmp_path / "taken", "--overwrite", "-q")
    assert code == 2 and "not one" in _one_line(err) and (tmp_path / "taken" / "x.txt").read_text() == "mine"
    # a missing store, an unknown layout
    code, _, err = run(capsys, "export", tmp_path / "nope.zarr", "--to", "ismrmrd", "--out", tmp_path / "o", "-q")
    assert code == 2 and str(tmp_path / "nope.zarr") in _one_line(err)
    code, _, err = run(capsys, "export", kspace, "--to", "nifti", "--out", tmp_path / "o")
    assert code == 2 and "--to" in err
    assert not (tmp_path / "o").exists()
