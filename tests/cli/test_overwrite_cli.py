"""``--overwrite`` through every command that writes a store: it replaces only an smssynth output,
never the user's files, an input of the command, or a folder holding one (issue 9, item 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cli.main import cli
from synth.dataset.store import Store
from tests.conftest import invoke


def user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    files = {"thesis.tex": b"\\documentclass{article}", "figs/plot.png": b"\x89PNG fake"}
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def intact(path: Path, files: dict[str, bytes]) -> bool:
    return all((path / n).read_bytes() == d for n, d in files.items())


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


SIM = ("--sms", 2, "--coils", 2, "--combos", 1, "-q")


@pytest.mark.parametrize("command", ["dicom2kspace", "generate"])
def test_user_folder_input_and_parent_are_never_deleted(command, phantom_cine, tmp_path):
    dcm = tmp_path / "in" / "dcm"
    shutil.copytree(phantom_cine, dcm)
    dicom = tree(dcm)
    mine = tmp_path / "mine"
    files = user_folder(mine)
    extra = ("--workers", 1) if command == "generate" else ()
    r = invoke(cli, command, dcm, "--out", mine, "--overwrite", *SIM, *extra)
    assert r.exit_code != 0 and "only replaces an smssynth output" in r.output and "Traceback" not in r.output
    assert intact(mine, files)
    for out in (dcm, dcm.parent, tmp_path):
        r = invoke(cli, command, dcm, "--out", out, "--overwrite", *SIM, *extra)
        assert r.exit_code != 0 and "input of this command" in r.output, r.output
    assert tree(dcm) == dicom and intact(mine, files)


def test_generate_manifest_inputs_are_protected(phantom_cine, tmp_path):
    dcm = tmp_path / "dcm"
    shutil.copytree(phantom_cine, dcm)
    before = tree(dcm)
    (tmp_path / "m.csv").write_text("path,patient\ndcm,p1\n")
    r = invoke(cli, "generate", "--manifest", tmp_path / "m.csv", "--out", tmp_path, "--overwrite", *SIM)
    assert r.exit_code != 0 and "input of this command" in r.output
    assert tree(dcm) == before


def test_generate_replaces_its_own_store(phantom_cine, tmp_path):
    out = tmp_path / "s.zarr"
    r = invoke(cli, "generate", phantom_cine, "--out", out, *SIM, "--workers", 1)
    assert r.exit_code == 0, r.output
    r = invoke(cli, "generate", phantom_cine, "--out", out, *SIM, "--workers", 1, "--seed", 5, "--overwrite")
    assert r.exit_code == 0, r.output
    assert "replaced the existing" in r.output
    assert Store.open(out).params["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_recon_never_deletes_the_source_or_foreign_folders(tmp_path):
    from cli.recon import recon
    from tests.zoo.test_data import make_store

    src = tmp_path / "data" / "s.zarr"
    make_store(src, n=2, m=2, seed=1)
    before = tree(src)
    for out in (src, src.parent, tmp_path):
        r = invoke(recon, "--model", "zero-filled", src, "--out", out, "--overwrite", "-q")
        assert r.exit_code == 2 and ("source store" in r.output or "input of this command" in r.output), r.output
    mine = tmp_path / "mine"
    files = user_folder(mine)
    r = invoke(recon, "--model", "zero-filled", src, "--out", mine, "--overwrite", "-q")
    assert r.exit_code == 2 and "only replaces an smssynth output (smssynth.recon)" in r.output
    # a sample store is not a recon store either: --overwrite will not replace it with a recon
    other = tmp_path / "other.zarr"
    make_store(other, n=2, m=2, seed=2)
    r = invoke(recon, "--model", "zero-filled", src, "--out", other, "--overwrite", "-q")
    assert r.exit_code == 2 and "format is 'smssynth.sms-kspace'" in r.output
    assert tree(src) == before and intact(mine, files) and Store.open(other)
    # its own output is replaced
    rec = tmp_path / "r.zarr"
    assert invoke(recon, "--model", "zero-filled", src, "--out", rec, "-q").exit_code == 0
    assert invoke(recon, "--model", "zero-filled", src, "--out", rec, "-q", "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine", "other.zarr", "r.zarr"]
