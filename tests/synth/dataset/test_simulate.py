"""The fused coil-by-coil encoder against the plain forward model, and the coil-by-coil API."""

import numpy as np
import pytest

from synth.dataset.config import SimConfig
from synth.dataset.simulate import Encoder, prepare_example, simulate_example
from synth.physics.coils import coil_maps
from synth.physics.fft import centring_ramps, fft2c, ifft2c
from synth.physics.masks import row_mask
from synth.physics.phase import compact_labels, phase_parts
from synth.physics.sms import collapse_images, kz_table


@pytest.fixture(params=["jit", "numpy"])
def route(request, monkeypatch):
    """Run a test through the compiled kernels and through the NumPy fallback."""
    import synth.physics._jit as jit

    if request.param == "numpy":
        monkeypatch.setattr(jit, "_kernels", False)
    elif jit.kernels() is None:
        pytest.skip("numba kernels unavailable (numba missing or SMSSYNTH_NO_JIT set)")
    return request.param


def test_kernels_load_by_default():
    """numba is a dependency: the fast route must not silently fall back."""
    import os

    import synth.physics._jit as jit

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
    assert set(prep.arrays) == {"mask", "kz", "target", "csm", "scale", "noise_sigma", "offsets"}
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
    import synth.physics._jit as jit

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


# --- CAIPI orderings: a kz per row (--caipi) ----------------------------------------------------


def _reference_kz(parts, target, csm, kz):
    """kspace (C, T, Ky, Kx) = sum_i exp(-2j pi i kz[t,n]/M) fft2c(x[c,i,t])[n], row by row, complex128."""
    x = target[None].astype(np.complex128) * csm[:, :, None] * np.exp(1j * parts.phase().astype(np.float64))
    k = fft2c(x)  # (C, M, T, Ky, Kx)
    m = k.shape[1]
    out = np.zeros(k.shape[:1] + k.shape[2:], np.complex128)
    for i in range(m):
        out += np.exp(-2j * np.pi * i * kz[None, :, :, None] / m) * k[:, i]
    return out


@pytest.mark.parametrize("kind", ["kmeans", "grating", "none"])
@pytest.mark.parametrize("m,ny,nx", SHAPES)
def test_encoder_with_kz_matches_forward_model(kind, m, ny, nx):
    rng = np.random.default_rng(m * 1000 + ny + 7)
    t, c = 6, 2
    target = rng.random((m, t, ny, nx), dtype=np.float32)
    parts = phase_parts(target, c, kind, 6, np.random.default_rng(1))
    csm = coil_maps("blobs", c, (ny, nx), np.linspace(-0.1, 0.1, m), np.random.default_rng(2))
    mask = rng.random((t, ny)) < 0.5
    kz = kz_table("acquired", mask, m)
    kspace = np.full((c, t, ny, nx), np.nan, np.complex64)
    phase = np.full((c, m, t, ny, nx), np.nan, np.float32)
    enc = Encoder(parts, target, csm, kz)
    assert (enc.kz is None) == (m == 1)  # M = 1: every kz is 0 = n mod 1, the plain route
    for ci in reversed(range(c)):
        enc.coil(ci, kspace[ci], phase[ci])
    np.testing.assert_array_equal(phase, parts.phase())
    ref = _reference_kz(parts, target, csm, kz)
    assert np.abs(kspace - ref).max() <= 2e-6 * np.abs(ref).max()


@pytest.mark.parametrize("m,ny,nx", [(2, 40, 34), (3, 45, 35), (3, 40, 34)])
def test_row_kz_takes_the_unchanged_fast_route(m, ny, nx, route):
    """kz = n mod M (``--caipi row``) gives the same bytes as the encoder without kz."""
    rng = np.random.default_rng(ny)
    t, c = 5, 2
    target = rng.random((m, t, ny, nx), dtype=np.float32)
    parts = phase_parts(target, c, "kmeans", 5, np.random.default_rng(3))
    csm = coil_maps("mixed", c, (ny, nx), np.linspace(-0.1, 0.1, m), np.random.default_rng(4))
    row = kz_table("row", rng.random((t, ny)) < 0.5, m)
    out = []
    for kz in (None, row):
        enc = Encoder(parts, target, csm, kz)
        assert enc.kz is None
        kspace = np.empty((c, t, ny, nx), np.complex64)
        enc.coils(range(c), [(kspace[ci], np.empty((m, t, ny, nx), np.float32)) for ci in range(c)])
        out.append(kspace)
    np.testing.assert_array_equal(out[0], out[1])
    with pytest.raises(ValueError, match=r"\(T, Ky\)"):
        Encoder(parts, target, csm, row[:, :-1])


def _plain_encoder(x, kz):
    """kspace (T, Ky, Kx) of images x (M, T, Y, X) (one coil of ones, no phase) with the given kz."""
    m, t, ny, nx = x.shape
    parts = phase_parts(x, 1, "none", 1, np.random.default_rng(0))
    csm = np.ones((1, m, ny, nx), np.complex64)
    kspace = np.empty((1, t, ny, nx), np.complex64)
    Encoder(parts, x, csm, kz).coil(0, kspace[0], np.empty((m, t, ny, nx), np.float32))
    return kspace[0]


def _shifted_sum(x, shift, const):
    """sum_i const[t, i] * roll(x[i, t], i * shift, y): (T, Y, X)."""
    m = x.shape[0]
    return sum(const[:, i, None, None] * np.roll(x[i], i * shift, axis=-2) for i in range(m))


@pytest.mark.parametrize("order", ["row", "acquired"])
@pytest.mark.parametrize("m,ny", [(2, 24), (3, 24)])
def test_fully_sampled_both_orderings_shift_slice_i_by_i_fov_over_m(order, m, ny):
    rng = np.random.default_rng(m)
    t, nx = 3, 10
    x = rng.random((m, t, ny, nx), dtype=np.float32)
    full = np.ones((t, ny), bool)
    kz = kz_table(order, full, m)
    alias = ifft2c(_plain_encoder(x, kz))
    # the constant is each slice's phase at the DC row (see synth.physics.sms.collapse_images)
    const = np.exp(-2j * np.pi * np.arange(m) * (ny // 2) / m)[None, :].repeat(t, 0)
    np.testing.assert_allclose(alias, _shifted_sum(x, ny // m, const), atol=2e-6)
    # shifting slice i back by i*FOV/M puts it where it is in its own image: a point shows up there
    x0 = np.zeros((m, 1, ny, nx), np.float32)
    for i in range(m):
        x0[i, 0, 3 + i, 2 + i] = 1
    a = np.abs(ifft2c(_plain_encoder(x0, kz_table(order, np.ones((1, ny), bool), m))))[0]
    for i in range(m):
        assert a[(3 + i + i * ny // m) % ny, 2 + i] == pytest.approx(1, abs=1e-5)


@pytest.mark.parametrize("m,r,ny", [(2, 2, 24), (2, 3, 36), (3, 2, 36), (2, 4, 32)])
def test_acquired_uniform_shifts_slice_i_by_i_fov_over_rm(m, r, ny):
    """Uniform R, no ACS, ``--caipi acquired``: the row of rank k carries kz = k mod M, a phase
    cycle over M acquired rows = R*M rows of the grid, so the zero-filled aliased image shows slice
    i shifted by i*FOV/(R*M) (and its R in-plane aliases, FOV/R apart)."""
    rng = np.random.default_rng(r * 10 + m)
    t, nx = 4, 9
    mask = row_mask("uniform", t, ny, r, 0, np.random.default_rng(5))
    kz = kz_table("acquired", mask, m)
    counts = np.stack([(mask & (kz == z)).sum(1) for z in range(m)], axis=1)
    assert (counts.max(1) - counts.min(1) <= 1).all()  # every kz plane in every frame, within +-1
    x = rng.random((m, t, ny, nx), dtype=np.float32)
    y = _plain_encoder(x, kz) * mask[:, :, None]
    first = mask.argmax(1)  # o_t: the frame's first sampled row, rank 0
    # the phase of rank k = (n - o_t)/R is a roll by i*Ny/(RM) times a per-frame, per-slice constant
    const = np.exp(-2j * np.pi * np.arange(m)[None, :] * (ny // 2 - first[:, None]) / (r * m))
    shifted = _shifted_sum(x, ny // (r * m), const)
    np.testing.assert_allclose(ifft2c(y), ifft2c(fft2c(shifted) * mask[:, :, None]), atol=2e-6)
    # a point of slice i appears at y0 + i*Ny/(RM) (+ multiples of Ny/R, the in-plane aliases)
    x0 = np.zeros((m, t, ny, nx), np.float32)
    for i in range(m):
        x0[i, :, 1 + i, 2 + 2 * i] = 1
    a = np.abs(ifft2c(_plain_encoder(x0, kz) * mask[:, :, None]))
    for i in range(m):
        rows = (1 + i + i * ny // (r * m) + np.arange(r) * ny // r) % ny
        np.testing.assert_allclose(a[:, rows, 2 + 2 * i], 1 / r, atol=1e-5)
    # ... whereas the row ordering leaves both slices unshifted relative to each other within a frame
    if r % m == 0:
        b = np.abs(ifft2c(_plain_encoder(x0, kz_table("row", mask, m)) * mask[:, :, None]))
        assert np.allclose(b[:, (1 + np.arange(r) * ny // r) % ny, 2], 1 / r, atol=1e-5)


@pytest.mark.parametrize("snr", [None, 20.0])
def test_prepare_example_acquired_ordering(snr, route):
    rng = np.random.default_rng(8)
    mags = rng.random((2, 5, 24, 14), dtype=np.float32)
    offsets = np.array([-0.1, 0.1])
    acq = SimConfig(sms=2, coils=3, accel=2, acs=4, mask="uniform", caipi="acquired", snr=snr)
    row = acq.replace(caipi="row")
    a = simulate_example(mags, offsets, acq, np.random.SeedSequence(4))
    b = simulate_example(mags, offsets, row, np.random.SeedSequence(4))
    # the ordering changes kz and k-space only: same draws (mask, phase, coils) from the same streams
    for name in ("mask", "target", "csm", "phase", "scale"):
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(a["kz"], kz_table("acquired", a["mask"], 2))
    np.testing.assert_array_equal(b["kz"], kz_table("row", b["mask"], 2))
    assert not np.array_equal(a["kz"], b["kz"])
    x = a["target"][None] * a["csm"][:, :, None] * np.exp(1j * a["phase"].astype(np.float64))
    k = np.moveaxis(fft2c(x), 1, 2)  # (C, T, M, Ky, Kx)
    from synth.physics.sms import collapse

    ref = collapse(k, a["kz"])
    err = np.abs(a["kspace"] - ref)
    if snr is None:
        assert err.max() <= 2e-6 * np.abs(ref).max()
    else:
        assert float(a["noise_sigma"]) > 0
        assert np.sqrt((err ** 2).mean()) == pytest.approx(float(a["noise_sigma"]), rel=0.05)
