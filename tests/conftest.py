"""Shared fixtures: small phantom DICOM series the tests write themselves, and real data paths."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fixed_salt(monkeypatch, tmp_path_factory):
    """Never touch the user's ~/.config salt from tests; a fixed salt keeps keys reproducible."""
    monkeypatch.setenv("SMSSYNTH_SALT", "tests-salt")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.getbasetemp() / "xdg"))


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test if the real data is not beside the checkout."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data {p} not present (expected ../shared/data beside the checkout)")
    return p


@pytest.fixture(scope="session")
def phantom_cine(tmp_path_factory) -> Path:
    """A 4-slice cine phantom: 8 frames, 40x34 acquired, stored at 48x48 (odd sizes catch axis mix-ups)."""
    from synth.io.phantom import PhantomSpec, write_phantom

    out = tmp_path_factory.mktemp("phantom_cine")
    write_phantom(out, PhantomSpec(kind="cine", n_slices=4, n_frames=8, acquired=(40, 34), matrix=(48, 48), seed=1))
    return out


@pytest.fixture(scope="session")
def phantom_perfusion(tmp_path_factory) -> Path:
    from synth.io.phantom import PhantomSpec, write_phantom

    out = tmp_path_factory.mktemp("phantom_perf")
    write_phantom(
        out, PhantomSpec(kind="perfusion", n_slices=3, n_frames=10, acquired=(36, 30), matrix=(48, 48), seed=2),
        extension="",
    )
    return out


@pytest.fixture(scope="module")
def torch_one_thread():
    """One intra-op torch thread: tiny test models gain nothing from more, and on a shared CPU box
    oversubscribed OpenMP threads spin and make them many times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def phantom_store(root: Path, *, frames: int, shape: tuple[int, int], coils: int, seed: int, salt: bytes) -> Path:
    """A small SMS-2 store (C(4,2) = 6 examples) from a 4-slice cine phantom written under ``root``."""
    from synth.dataset.config import SimConfig
    from synth.dataset.pipeline import dicom2kspace
    from synth.io.phantom import PhantomSpec, write_phantom

    write_phantom(root / "dcm", PhantomSpec(kind="cine", n_slices=4, n_frames=frames, acquired=shape, matrix=shape,
                                            seed=seed))
    out = root / "s.zarr"
    dicom2kspace([root / "dcm"], out, SimConfig(sms=2, coils=coils, accel=2, acs=4, seed=seed), salt=salt)
    return out


def invoke(cmd, *args):
    """Run a click command in-process; exceptions propagate (a traceback would fail the test)."""
    from click.testing import CliRunner

    return CliRunner().invoke(cmd, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, *needles):
    """A usage error: exit code 2, no traceback, and every needle in the message."""
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in r.output, r.output
