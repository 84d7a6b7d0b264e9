"""CAIPI/SMS operators: the paper's 3D-Fourier identity, adjoints, image-space equivalence."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.errors import ConfigError
from synth.physics import sms
from synth.physics.fft import fft2c, ifft2c
from synth.physics.linop import FFT2c, Multiply, Sense
from tests.synth.physics.linop_suite import check_adjoint, check_linearity


def crandn(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 4), ny=st.integers(5, 19), nx=st.integers(3, 11), seed=st.integers(0, 2**31))
def test_collapse_is_3d_fft_sampled_at_kz_n_mod_m(m, ny, nx, seed):
    """Supplement of the paper: CAIPI-collapsed data = 3D FFT of the slice stack at kz = n mod M."""
    rng = np.random.default_rng(seed)
    x = crandn(rng, m, ny, nx)
    k = fft2c(x)
    y = sms.collapse(k)
    # explicit definition, row by row
    ref = np.zeros((ny, nx), np.complex128)
    for i in range(m):
        for n in range(ny):
            ref[n] += np.exp(-2j * np.pi * i * n / m) * k[i, n]
    np.testing.assert_allclose(y, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    k3 = np.fft.fft(k, axis=0, norm="ortho")
    y3 = np.stack([np.sqrt(m) * k3[n % m, n] for n in range(ny)])
    np.testing.assert_allclose(y, y3, rtol=0, atol=2e-5 * np.abs(ref).max())
    np.testing.assert_allclose(sms.sample_kz(sms.to_3d(k)), y, rtol=0, atol=2e-5 * np.abs(ref).max())


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 4), ny=st.integers(4, 21), nx=st.integers(3, 9), seed=st.integers(0, 2**31))
def test_image_space_collapse_matches_kspace_route(m, ny, nx, seed):
    rng = np.random.default_rng(seed)
    x = crandn(rng, 2, m, ny, nx)
    a = sms.collapse_images(x)
    b = ifft2c(sms.collapse(fft2c(x)))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * np.abs(b).max())


def test_caipi_shifts_fov_by_ny_over_m():
    """With M=2 the second slice appears shifted by half the FOV in the aliased image."""
    ny, nx = 16, 8
    x = np.zeros((2, ny, nx), np.complex64)
    x[1, 2, 3] = 1
    alias = ifft2c(sms.collapse(fft2c(x)))
    peak = np.unravel_index(np.abs(alias).argmax(), alias.shape)
    assert peak == (2 + ny // 2, 3)


def test_kz_mask_one_kz_per_row():
    rows = np.array([[True, False, True, True, False, True, False]])
    mk = sms.kz_mask(3, rows)
    assert mk.shape == (1, 3, 7)
    np.testing.assert_array_equal(mk.sum(axis=1)[0], rows[0].astype(int))
    for n in range(7):
        if rows[0, n]:
            assert mk[0, n % 3, n]


@pytest.mark.parametrize("m,ny,nx", [(1, 7, 5), (2, 10, 6), (3, 9, 4), (2, 11, 5), (4, 13, 3)])
def test_operator_suite(m, ny, nx):
    rng = np.random.default_rng(m * 100 + ny)
    c, t = 3, 2
    csm = crandn(rng, c, m, ny, nx)
    mask = rng.random((t, ny)) > 0.4
    ops = [
        sms.CaipiCollapse((c, t, m, ny, nx)),
        FFT2c((m, t, ny, nx)),
        Sense(csm, t),
        Multiply((t, ny, nx), rng.standard_normal((ny, nx)).astype(np.float32)),
        sms.SmsForward((c, m, t, ny, nx)),
        sms.SmsForward((c, m, t, ny, nx), mask),
        sms.SmsForward((c, m, t, ny, nx), mask) * Sense(csm, t),
        sms.CaipiCollapse((c, t, m, ny, nx), kz=sms.kz_table("acquired", mask, m)),
        sms.SmsForward((c, m, t, ny, nx), mask, kz=sms.kz_table("acquired", mask, m)),
        sms.SmsForward((c, m, t, ny, nx), mask, kz=rng.integers(0, m, (t, ny))) * Sense(csm, t),
    ]
    for op in ops:
        check_adjoint(op, rng)
        check_linearity(op, rng)


def test_sms_forward_equals_reference_model():
    rng = np.random.default_rng(3)
    c, m, t, ny, nx = 2, 3, 2, 9, 7
    x = crandn(rng, c, m, t, ny, nx)
    y = sms.SmsForward(x.shape)(x)
    ref = np.zeros((c, t, ny, nx), np.complex64)
    for i in range(m):
        ref += fft2c(x[:, i]) * sms.caipi_phase(m, ny)[i][:, None]
    np.testing.assert_allclose(y, ref, atol=1e-5)


def test_m1_is_plain_multicoil():
    rng = np.random.default_rng(0)
    x = crandn(rng, 4, 1, 3, 8, 6)
    np.testing.assert_allclose(sms.SmsForward(x.shape)(x), fft2c(x[:, 0]), atol=1e-6)


# --- general kz (store format 1.1) ------------------------------------------------------------


def test_kz_table_orders():
    mask = np.array([[True, False, True, True, False, True, False, True],
                     [False, True, True, False, True, True, True, False]])
    np.testing.assert_array_equal(sms.kz_table("row", mask, 3), np.tile(np.arange(8) % 3, (2, 1)))
    acq = sms.kz_table("acquired", mask, 2)
    assert acq.dtype == np.int8 and acq.shape == (2, 8)
    # sampled rows: rank among the frame's sampled rows (ascending ky) mod M; others: n mod M
    np.testing.assert_array_equal(acq[0], [0, 1, 1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(acq[1], [0, 0, 1, 1, 0, 1, 0, 1])
    # fully sampled: both orderings are n mod M
    full = np.ones((3, 11), bool)
    for m in (1, 2, 3):
        np.testing.assert_array_equal(sms.kz_table("acquired", full, m), sms.kz_table("row", full, m))
    with pytest.raises(ConfigError, match="--caipi"):
        sms.kz_table("rank", mask, 2)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 4), ny=st.integers(5, 17), nx=st.integers(3, 7), seed=st.integers(0, 2**31))
def test_collapse_with_kz_is_3d_fft_sampled_at_kz(m, ny, nx, seed):
    """kspace[t, n] = sum_i exp(-2j pi i kz[t,n]/M) K[i, t, n] = sqrt(M) F_z(K)[kz[t,n], t, n]."""
    rng = np.random.default_rng(seed)
    t = 3
    k = crandn(rng, t, m, ny, nx)  # (T, M, Ky, Kx)
    kz = rng.integers(0, m, (t, ny)).astype(np.int8)
    y = sms.collapse(k, kz)
    ref = np.zeros((t, ny, nx), np.complex128)
    for f in range(t):
        for i in range(m):
            for n in range(ny):
                ref[f, n] += np.exp(-2j * np.pi * i * kz[f, n] / m) * k[f, i, n]
    tol = 2e-5 * np.abs(ref).max()
    np.testing.assert_allclose(y, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(sms.sample_kz(sms.to_3d(k), kz), y, rtol=0, atol=tol)
    # kz = n mod M is the plain model
    row = np.broadcast_to(sms.kz_index(m, ny), (t, ny))
    np.testing.assert_allclose(sms.collapse(k, row), sms.collapse(k), rtol=0, atol=tol)
    np.testing.assert_allclose(sms.expand(y, m, row), sms.expand(y, m), rtol=0, atol=tol)
    np.testing.assert_array_equal(sms.caipi_phase_kz(sms.kz_index(m, ny), m), sms.caipi_phase(m, ny))
    # the 3D mask marks each sampled row at its own kz
    mask = rng.random((t, ny)) > 0.5
    mk = sms.kz_mask(m, mask, kz)
    assert mk.shape == (t, m, ny)
    np.testing.assert_array_equal(mk.sum(1), mask.astype(int))
    f, n = np.nonzero(mask)
    assert mk[f, kz[f, n], n].all()
    np.testing.assert_array_equal(sms.kz_mask(m, mask, row), sms.kz_mask(m, mask))
