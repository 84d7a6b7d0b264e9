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
    from synth.phantom import PhantomSpec, write_phantom

    out = tmp_path_factory.mktemp("phantom_cine")
    write_phantom(out, PhantomSpec(kind="cine", n_slices=4, n_frames=8, acquired=(40, 34), matrix=(48, 48), seed=1))
    return out


@pytest.fixture(scope="session")
def phantom_perfusion(tmp_path_factory) -> Path:
    from synth.phantom import PhantomSpec, write_phantom

    out = tmp_path_factory.mktemp("phantom_perf")
    write_phantom(
        out, PhantomSpec(kind="perfusion", n_slices=3, n_frames=10, acquired=(36, 30), matrix=(48, 48), seed=2),
        extension="",
    )
    return out
