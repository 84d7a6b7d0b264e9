"""File and folder names never reach the output, the logs or the store unless --show-paths.

Real exports name folders and files after the patient (``DOE_JOHN_12345/IM_DOE_JOHN.dcm``); the
skip lines, warnings, errors and the store must name them by salted hashes instead.
"""

import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file

from cli.main import cli

NEEDLES = ("DOE_JOHN", "JOHN", "DOE")  # letters outside [0-9a-f]: no hash or number contains them


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def export(tmp_path) -> Path:
    """``export/DOE_JOHN_12345/``: a 3-slice phantom series named after the patient, a corrupt
    image and a non-DICOM file beside it."""
    from synth.io.phantom import PhantomSpec, write_phantom

    folder = tmp_path / "export" / "DOE_JOHN_12345"
    paths = write_phantom(folder / "CINE_DOE", PhantomSpec(n_slices=3, n_frames=4, acquired=(24, 20), matrix=(24, 20)))
    for i, p in enumerate(paths):
        p.rename(p.with_name(f"IM_DOE_JOHN_{i:04d}.dcm"))
    shutil.copy(get_testdata_file("MR_truncated.dcm"), folder / "IM_DOE_JOHN.dcm")
    (folder / "DOE_JOHN_notes.txt").write_text("not dicom")
    return tmp_path / "export"


def store_bytes(out: Path) -> list[bytes]:
    metas = [p.read_bytes() for p in out.rglob("zarr.json")]
    assert len(metas) > 3
    return metas + [p.read_bytes() for p in out.rglob("*") if p.is_file() and p.stat().st_size < 1 << 20]


def assert_absent(blobs) -> None:
    for blob in blobs:
        blob = blob if isinstance(blob, bytes) else blob.encode()
        for needle in NEEDLES:
            assert needle.encode() not in blob, needle


@pytest.mark.parametrize("where", ["export", "patient folder"])
def test_dicom2kspace_masks_names(export, tmp_path, caplog, where):
    src = export if where == "export" else export / "DOE_JOHN_12345"
    out = tmp_path / "s.zarr"
    with caplog.at_level(logging.DEBUG):
        r = invoke("dicom2kspace", src, "--out", out, "--sms", 2, "--coils", 2)
        fail = invoke("dicom2kspace", src, "--out", tmp_path / "f.zarr", "--on-error", "fail")
    assert r.exit_code == 0, r.output
    assert "1 corrupt" in r.output and "1 not-dicom" in r.output and "--show-paths" in r.output
    skip_lines = [line for line in r.output.splitlines() if line.startswith("  - ")]
    assert len(skip_lines) == 2 and all("#" in line for line in skip_lines)
    assert fail.exit_code == 1 and "truncated" in fail.output and "#" in fail.output
    assert_absent([r.output, fail.output, caplog.text, *store_bytes(out)])


def test_dicom2kspace_show_paths_names_the_real_files(export, tmp_path):
    r = invoke("dicom2kspace", export, "--out", tmp_path / "s.zarr", "--sms", 2, "--coils", 2, "--show-paths")
    assert r.exit_code == 0, r.output
    skip_lines = [line for line in r.output.splitlines() if line.startswith("  - ")]
    assert any(str(export / "DOE_JOHN_12345" / "IM_DOE_JOHN.dcm") in line for line in skip_lines)
    assert any("DOE_JOHN_notes.txt" in line for line in skip_lines)
    assert "pass --show-paths" not in r.output
    assert_absent(store_bytes(tmp_path / "s.zarr"))  # the store never holds a path, even so
    fail = invoke("dicom2kspace", export, "--out", tmp_path / "f.zarr", "--on-error", "fail", "--show-paths")
    assert fail.exit_code == 1 and "IM_DOE_JOHN.dcm" in fail.output


def test_generate_masks_names(export, tmp_path, caplog):
    out = tmp_path / "g.zarr"
    with caplog.at_level(logging.DEBUG):
        r = invoke("generate", export, "--out", out, "--sms", 2, "--coils", 2, "--workers", 1, "-q")
    assert r.exit_code == 0, r.output
    assert "skipped inputs: 1 corrupt" in r.output and "--show-paths" in r.output
    assert_absent([r.output, caplog.text, *store_bytes(out)])
    shown = invoke("generate", export, "--out", tmp_path / "h.zarr", "--sms", 2, "--coils", 2, "--workers", 1, "-q",
                   "--show-paths")
    assert shown.exit_code == 0, shown.output
    assert "IM_DOE_JOHN.dcm" in shown.output
