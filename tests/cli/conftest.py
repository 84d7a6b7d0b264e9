"""Small inputs the command-line tests share: a k-space store, a damaged copy, a raw k-space file,
and ``smssynth ARGS`` run as the console script runs it (exit code, stdout, stderr)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def kspace_store(phantom_cine, tmp_path_factory) -> Path:
    """One SMS-2 example, 2 coils, no phase model (seconds to make)."""
    from synth.dataset.config import SimConfig
    from synth.dataset.pipeline import dicom2kspace

    out = tmp_path_factory.mktemp("cli_store") / "k.zarr"
    dicom2kspace([phantom_cine], out, SimConfig(sms=2, coils=2, combos=1, phase="none", seed=1), salt=b"cli",
                 threads=1)
    return out


@pytest.fixture(scope="session")
def damaged_store(kspace_store, tmp_path_factory) -> Path:
    """``kspace_store`` with every k-space chunk truncated: commands fail on it at run time."""
    out = tmp_path_factory.mktemp("cli_damaged") / "d.zarr"
    shutil.copytree(kspace_store, out)
    for chunk in (out / "kspace").rglob("*"):
        if chunk.is_file() and chunk.name != "zarr.json":
            chunk.write_bytes(chunk.read_bytes()[:10])
    return out


@pytest.fixture(scope="session")
def raw_kspace(tmp_path_factory) -> Path:
    """A fastMRI-style HDF5 file: 'kspace' (slice, time, coil, ky, kx) = (3, 2, 2, 16, 16)."""
    import h5py

    rng = np.random.default_rng(0)
    k = (rng.standard_normal((3, 2, 2, 16, 16)) + 1j * rng.standard_normal((3, 2, 2, 16, 16))).astype(np.complex64)
    path = tmp_path_factory.mktemp("cli_raw") / "raw.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = k
    return path


@pytest.fixture
def foreign(tmp_path) -> Path:
    """A folder of the user's that no command may write into or delete."""
    path = tmp_path / "mine"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    return path


def smssynth(capsys, *args) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``smssynth ARGS`` through the console-script entry point."""
    from cli.main import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
