"""The fused coil-by-coil encoder against the plain forward model, and the coil-by-coil API."""

import numpy as np
import pytest

from synth.coils import coil_maps
from synth.config import SimConfig
from synth.fft import centring_ramps, fft2c
from synth.phase import compact_labels, phase_parts
from synth.simulate import Encoder, prepare_example, simulate_example
from synth.sms import collapse_images


@pytest.fixture(params=["jit", "numpy"])
def route(request, monkeypatch):
    """Run a test through the compiled kernels and through the NumPy fallback."""
    import synth._jit as jit

    if request.param == "numpy":
        monkeypatch.setattr(jit, "_kernels", False)
    elif jit.kernels() is None:
        pytest.skip("numba kernels unavailable (numba missing or SMSSYNTH_NO_JIT set)")
    return request.param


def test_kernels_load_by_default():
    """numba is a dependency: the fast route must not silently fall back."""
    import os

    import synth._jit as jit

    if os.environ.get("SMSSYNTH_NO_JIT", "") not in ("", "0"):
        pytest.skip("SMSSYNTH_NO_JIT set")
    assert jit.kernels() is not None


def _reference(parts, target, csm):
    """kspace (C, T, Ky, Kx) straight from the documented model, in complex128."""
    x = target[None].astype(np.complex128) * csm[:, :, None] * np.exp(1j * parts.phase().astype(np.float64))
    return fft2c(collapse_images(np.moveaxis(x, 1, 2)))  # (C, T, M, Y, X) -> (C, T, Y, X)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 35, 224])
def test_centring_ramps_turn_fft_into_centred_fft(n):
    x = np.random.default_rng(n).standard_normal((3, n)) + 1j * np.random.default_rng(n + 1).standard_normal((3, n))
    pre, post = centring_ramps(n)
    centred = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(x, axes=-1)), axes=-1)
    np.testing.assert_allclose(post * np.fft.fft(pre * x), centred, atol=1e-12 * n)


# (M, Ny, Nx): M divides Ny with even and odd sizes (the fused route), and does not (the fallback)
SHAPES = [(2, 40, 34), (3, 45, 35), (1, 9, 7), (2, 9, 8), (3, 40, 34)]


@pytest.mark.parametrize("kind", ["kmeans", "grating", "none"])
@pytest.mark.parametrize("m,ny,nx", SHAPES)
def test_encoder_matches_forward_model(kind, m, ny, nx, route):
    rng = np.random.default_rng(m * 1000 + ny)
    t, c = 5, 3
    target = rng.random((m, t, ny, nx), dtype=np.float32)
    parts = phase_parts(target, c, kind, 6, np.random.default_rng(1))
    csm = coil_maps("blobs", c, (ny, nx), np.linspace(-0.1, 0.1, m), np.random.default_rng(2))
    kspace = np.full((c, t, ny, nx), np.nan, np.complex64)
    phase = np.full((c, m, t, ny, nx), np.nan, np.float32)
    enc = Encoder(parts, target, csm)
    for ci in reversed(range(c)):  # coils are independent: any order
        enc.coil(ci, kspace[ci], phase[ci])
    np.testing.assert_array_equal(phase, parts.phase())
    ref = _reference(parts, target, csm)
    assert np.abs(kspace - ref).max() <= 2e-6 * np.abs(ref).max()


def test_compact_labels():
    lab = np.array([[0, 5], [255, 3]])
    small = compact_labels(lab, 256)
    assert small.dtype == np.uint8 and np.array_equal(small, lab)
    assert compact_labels(small, 256) is small
    assert compact_labels(lab, 300).dtype == np.uint16
    with pytest.raises(ValueError, match="integers"):
        compact_labels(lab.astype(float), 4)


@pytest.mark.parametrize("snr", [None, 15.0])
def test_prepared_coils_equal_the_whole_example(snr, route):
    rng = np.random.default_rng(3)
    mags = rng.random((2, 4, 16, 12), dtype=np.float32)
    config = SimConfig(sms=2, coils=3, accel=2, acs=2, snr=snr)
    seed = np.random.SeedSequence(9)
    whole = simulate_example(mags, np.array([-0.1, 0.1]), config, seed)
    prep = prepare_example(mags, np.array([-0.1, 0.1]), config, np.random.SeedSequence(9))
    assert set(prep.arrays) == {"mask", "target", "csm", "scale", "noise_sigma"}
    for name, value in prep.arrays.items():
        np.testing.assert_array_equal(value, whole[name])
    kbuf, pbuf = np.empty((4, 16, 12), np.complex64), np.empty((2, 4, 16, 12), np.float32)
    for ci in (2, 0, 1):
        k, p = prep.coil(ci, kbuf, pbuf)
        assert k is kbuf and p is pbuf
        np.testing.assert_array_equal(k, whole["kspace"][ci])
        np.testing.assert_array_equal(p, whole["phase"][ci])
    assert (float(whole["noise_sigma"]) > 0) == (snr is not None)


@pytest.mark.parametrize("m,ny,nx", [(2, 40, 34), (3, 45, 35), (2, 10, 9), (1, 8, 9)])
def test_jit_and_numpy_routes_agree(m, ny, nx, monkeypatch):
    """The compiled kernel and the NumPy passes give the same phase bytes and k-space to rounding."""
    import synth._jit as jit

    if jit.kernels() is None:
        pytest.skip("numba kernels unavailable")
    rng = np.random.default_rng(ny * nx)
    t, c = 6, 2
    target = rng.random((m, t, ny, nx), dtype=np.float32)
    parts = phase_parts(target, c, "kmeans", 5, np.random.default_rng(3))
    csm = coil_maps("mixed", c, (ny, nx), np.linspace(-0.1, 0.1, m), np.random.default_rng(4))
    out = {}
    for name in ("jit", "numpy"):
        if name == "numpy":
            monkeypatch.setattr(jit, "_kernels", False)
        kspace = np.empty((c, t, ny, nx), np.complex64)
        phase = np.empty((c, m, t, ny, nx), np.float32)
        enc = Encoder(parts, target, csm)
        assert (enc._jit is not None) == (name == "jit")
        enc.coils(range(c), [(kspace[ci], phase[ci]) for ci in range(c)])
        out[name] = kspace, phase
    np.testing.assert_array_equal(out["jit"][1], out["numpy"][1])
    k0, k1 = out["jit"][0], out["numpy"][0]
    assert np.abs(k0 - k1).max() <= 1e-6 * np.abs(k1).max()
