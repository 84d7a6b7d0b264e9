"""``--out`` / ``--overwrite`` safety (synth.dataset.output): only our own outputs are ever replaced, never
an input or a folder holding one, and a failed replacement leaves the old store in place."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from synth.dataset import output
from synth.dataset import store as zstore
from synth.dataset.config import SimConfig
from synth.dataset.pipeline import dicom2kspace
from synth.errors import ConfigError, NoInputError, StoreExistsError

SALT = b"tests-salt"
CFG = SimConfig(sms=2, coils=2, accel=2, acs=4, combos=1, seed=3)


def user_folder(path: Path) -> dict[str, bytes]:
    """A folder of the user's own files; returns their contents to compare after."""
    path.mkdir(parents=True)
    files = {"notes.txt": b"my thesis draft", "sub/data.bin": os.urandom(64)}
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return files


def unchanged(path: Path, files: dict[str, bytes]) -> bool:
    return all((path / n).read_bytes() == d for n, d in files.items())


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def made_store(phantom_cine, tmp_path_factory):
    out = tmp_path_factory.mktemp("made") / "s.zarr"
    dicom2kspace([phantom_cine], out, CFG, salt=SALT)
    return out


# --- the rules, on synth.dataset.output directly -------------------------------------------------------


def test_refuses_a_users_folder_and_a_file(tmp_path):
    files = user_folder(tmp_path / "mine")
    with pytest.raises(StoreExistsError, match="not one: it is a folder without zarr.json"):
        output.prepare(tmp_path / "mine", formats=[zstore.FORMAT_NAME], overwrite=True)
    assert unchanged(tmp_path / "mine", files)
    (tmp_path / "f.zarr").write_bytes(b"x")
    with pytest.raises(StoreExistsError, match="it is a file"):
        output.prepare(tmp_path / "f.zarr", formats=[zstore.FORMAT_NAME], overwrite=True)
    assert (tmp_path / "f.zarr").read_bytes() == b"x"


def test_refuses_other_zarr_groups_and_stores_with_extra_files(made_store, tmp_path):
    import zarr

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").attrs["format"] = "someone-else"
    with pytest.raises(StoreExistsError, match="format is 'someone-else'"):
        output.prepare(other, formats=[zstore.FORMAT_NAME], overwrite=True)
    assert (other / "zarr.json").exists()

    import shutil

    mixed = tmp_path / "mixed.zarr"
    shutil.copytree(made_store, mixed)
    (mixed / "results.csv").write_text("precious")
    with pytest.raises(StoreExistsError, match=r"not part of a smssynth.sms-kspace store \(results.csv\)"):
        output.prepare(mixed, formats=[zstore.FORMAT_NAME], overwrite=True)
    assert (mixed / "results.csv").read_text() == "precious"
    (mixed / "results.csv").unlink()
    (mixed / "kspace" / "zarr.json").unlink()  # an entry that is not an array any more
    with pytest.raises(StoreExistsError, match="'kspace' is not a Zarr array"):
        output.prepare(mixed, formats=[zstore.FORMAT_NAME], overwrite=True)


def test_refuses_a_symlink_even_to_a_store(made_store, tmp_path):
    link = tmp_path / "link.zarr"
    link.symlink_to(made_store, target_is_directory=True)
    with pytest.raises(StoreExistsError, match="symbolic link"):
        output.prepare(link, formats=[zstore.FORMAT_NAME], overwrite=True)
    assert zstore.Store.open(made_store).complete().all()


def test_refuses_inputs_and_their_parents_with_or_without_overwrite(tmp_path):
    inp = tmp_path / "data" / "patient"
    files = user_folder(inp)
    for out in (inp, tmp_path / "data", tmp_path):
        for overwrite in (False, True):
            with pytest.raises(ConfigError, match="input of this command"):
                output.prepare(out, formats=[zstore.FORMAT_NAME], overwrite=overwrite, inputs=[inp])
    # a relative spelling of the same folder is recognised too
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ConfigError, match="input of this command"):
            output.prepare("data/../data", formats=[zstore.FORMAT_NAME], overwrite=True, inputs=[inp])
    finally:
        os.chdir(cwd)
    assert unchanged(inp, files)
    # a new path beside the input, or inside it, is fine
    assert output.prepare(tmp_path / "new.zarr", formats=[zstore.FORMAT_NAME], overwrite=True, inputs=[inp]).target


def test_staging_commit_and_abort(made_store, tmp_path):
    import shutil

    out = tmp_path / "s.zarr"
    shutil.copytree(made_store, out)
    before = tree(out)
    rep = output.prepare(out, formats=[zstore.FORMAT_NAME], overwrite=True)
    assert rep.staged and Path(rep.target).parent == tmp_path and Path(rep.target).name.startswith(".s.zarr")
    assert tree(out) == before  # nothing removed yet
    staged = Path(rep.target)
    staged.mkdir()
    (staged / "zarr.json").write_text("{}")
    rep.abort()
    assert tree(out) == before and not staged.exists() and rep.notes

    rep = output.prepare(out, formats=[zstore.FORMAT_NAME], overwrite=True)
    shutil.copytree(made_store, rep.target)
    rep.commit()
    assert zstore.Store.open(out).complete().all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # no staging or retired folders left


# --- through the commands ----------------------------------------------------------------------


def test_dicom2kspace_never_deletes_user_files_or_inputs(phantom_cine, tmp_path):
    import shutil

    files = user_folder(tmp_path / "mine")
    with pytest.raises(StoreExistsError, match="--overwrite only replaces an smssynth output"):
        dicom2kspace([phantom_cine], tmp_path / "mine", CFG, salt=SALT, overwrite=True)
    assert unchanged(tmp_path / "mine", files)

    dcm = tmp_path / "dcm"
    shutil.copytree(phantom_cine, dcm)
    before = tree(dcm)
    for out in (dcm, tmp_path):  # the input itself, and a folder holding it
        with pytest.raises(ConfigError, match="input of this command"):
            dicom2kspace([dcm], out, CFG, salt=SALT, overwrite=True)
    assert tree(dcm) == before


def test_dicom2kspace_replacement_keeps_the_old_store_when_the_run_fails(phantom_cine, made_store, tmp_path):
    import shutil

    out = tmp_path / "s.zarr"
    shutil.copytree(made_store, out)
    before = tree(out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoInputError):
        dicom2kspace([empty], out, CFG, salt=SALT, overwrite=True)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "s.zarr"]

    # a successful run replaces it, and says so
    summary = dicom2kspace([phantom_cine], out, CFG.replace(seed=4), salt=SALT, overwrite=True)
    assert summary.written == 1 and any("replaced the existing" in n for n in summary.notes)
    st = zstore.Store.open(out)
    assert st.params["seed"] == 4 and st.complete().all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "s.zarr"]


def test_store_create_refuses_to_clobber_foreign_folders(tmp_path):
    files = user_folder(tmp_path / "mine")
    dims = {"N": 1, "C": 1, "M": 1, "T": 1, "Ky": 4, "Kx": 4}
    with pytest.raises(StoreExistsError):
        zstore.create(tmp_path / "mine", dims, {}, overwrite=True)
    assert unchanged(tmp_path / "mine", files)
    root = zstore.create(tmp_path / "ok.zarr", dims, {})
    root["scale"][0] = np.float32(2)
    zstore.create(tmp_path / "ok.zarr", dims, {}, overwrite=True)  # our own store: replaced
    assert float(zstore.Store.open(tmp_path / "ok.zarr").root["scale"][0]) == 0.0
