"""Tests of synth.physics.coils: circle / blob / mixed sensitivity maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.errors import ConfigError
from synth.physics.coils import COIL_MODEL, blob_maps, circle_maps, coil_maps, draw_coil_kind
from synth.physics.fft import fft2c

KINDS = ["circle", "blobs", "mixed"]


def _grid(ny, nx):
    side = max(ny, nx)
    y = (np.arange(ny) - ny // 2) / side
    x = (np.arange(nx) - nx // 2) / side
    return np.meshgrid(y, x, indexing="ij")


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    c=st.integers(1, 6),
    ny=st.integers(1, 40),
    nx=st.integers(1, 40),
    offsets=st.lists(st.floats(-0.3, 0.3), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_shape_dtype_and_unit_sum_of_squares(kind, c, ny, nx, offsets, seed):
    s = coil_maps(kind, c, (ny, nx), np.array(offsets), np.random.default_rng(seed))
    assert s.shape == (c, len(offsets), ny, nx)
    assert s.dtype == np.complex64
    np.testing.assert_allclose((np.abs(s) ** 2).sum(0), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_odd_shape_37x31(kind):
    s = coil_maps(kind, 8, (37, 31), np.array([-0.02, 0.02]), np.random.default_rng(0))
    assert s.shape == (8, 2, 37, 31)
    np.testing.assert_allclose((np.abs(s) ** 2).sum(0), 1.0, atol=1e-5)


def test_single_coil_is_unit_magnitude():
    s = coil_maps("blobs", 1, (9, 7), np.zeros(2), np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(s), 1.0, atol=1e-6)


def _fit_quadratic(m, yy, xx):
    """Fit |S|^(-2/3) - (y^2 + x^2) = a + b y + c x; return (coef, residual max)."""
    a = np.stack([np.ones(yy.size), yy.ravel(), xx.ravel()], 1)
    rhs = (m.astype(np.float64) ** (-2.0 / 3.0) - yy**2 - xx**2).ravel()
    coef, *_ = np.linalg.lstsq(a, rhs, rcond=None)
    return coef, np.abs(a @ coef - rhs).max()


def test_circle_magnitude_is_inverse_cube_3d_distance():
    """Un-normalised: |S|^(-2/3) = d^2 = |r - p|^2 + (z - zeta)^2 is, per slice, an isotropic
    quadratic with unit curvature; the fit recovers the coil (p, zeta) consistently over
    three slices, and |S| falls as d^-3 along a line."""
    ny, nx = 37, 31
    z = np.array([-0.05, 0.02, 0.1])
    s = circle_maps(4, (ny, nx), z, np.random.default_rng(3), normalize=False)
    yy, xx = _grid(ny, nx)
    lo, hi = COIL_MODEL["circle"]["radius"]
    for c in range(4):
        fits = [_fit_quadratic(np.abs(s[c, i]), yy, xx) for i in range(3)]
        assert max(r for _, r in fits) < 1e-4
        p = [(-f[1] / 2, -f[2] / 2) for f, _ in fits]
        np.testing.assert_allclose(p, [p[0]] * 3, atol=1e-4)  # same in-plane position on every slice
        py, px = p[0]
        assert lo - 1e-3 <= np.hypot(py, px) <= hi + 1e-3
        dz2 = np.array([f[0] - py**2 - px**2 for f, _ in fits])  # (z_i - zeta)^2
        zeta = ((z[1] ** 2 - z[0] ** 2) - (dz2[1] - dz2[0])) / (2 * (z[1] - z[0]))
        np.testing.assert_allclose(dz2, (z - zeta) ** 2, atol=1e-4)
        assert COIL_MODEL["circle"]["coil_z"][0] - 1e-3 <= zeta <= COIL_MODEL["circle"]["coil_z"][1] + 1e-3
        # along the central row: log|S| against log d has slope -3
        d = np.sqrt((yy[ny // 2] - py) ** 2 + (xx[ny // 2] - px) ** 2 + (z[0] - zeta) ** 2)
        slope = np.polyfit(np.log(d), np.log(np.abs(s[c, 0, ny // 2]).astype(np.float64)), 1)[0]
        assert slope == pytest.approx(-3.0, abs=1e-3)


def test_circle_coils_are_evenly_spaced():
    ny = nx = 32
    s = circle_maps(6, (ny, nx), np.zeros(1), np.random.default_rng(1), normalize=False)
    yy, xx = _grid(ny, nx)
    angles = []
    for c in range(6):
        coef, _ = _fit_quadratic(np.abs(s[c, 0]), yy, xx)
        angles.append(np.arctan2(-coef[1] / 2, -coef[2] / 2))
    steps = np.diff(np.unwrap(angles))
    np.testing.assert_allclose(steps, 2 * np.pi / 6, atol=1e-3)


@pytest.mark.parametrize("kind", ["circle", "blobs"])
def test_slices_equal_iff_offsets_equal_and_vary_smoothly_in_z(kind):
    offsets = np.array([0.0, 0.0, 0.01, 0.1])
    s = coil_maps(kind, 8, (37, 31), offsets, np.random.default_rng(5))
    np.testing.assert_array_equal(s[:, 0], s[:, 1])
    near = np.linalg.norm(s[:, 2] - s[:, 0])
    far = np.linalg.norm(s[:, 3] - s[:, 0])
    assert 0 < near < far
    # a slice 1 % of the FOV away changes the maps only a little
    assert near / np.linalg.norm(s[:, 0]) < 0.05


@pytest.mark.parametrize("kind", ["circle", "blobs"])
def test_symmetric_offsets_give_different_slices(kind):
    """M = 2 examples get offsets +-z about their mean: the two slices must still differ."""
    for seed in range(5):
        s = coil_maps(kind, 8, (24, 20), np.array([-0.03, 0.03]), np.random.default_rng(seed))
        assert not np.allclose(s[:, 0], s[:, 1], atol=1e-4)


@pytest.mark.parametrize("kind", ["circle", "blobs"])
def test_maps_are_smooth(kind):
    ny, nx = 37, 31
    for seed in range(10):
        s = coil_maps(kind, 8, (ny, nx), np.array([0.0, 0.05]), np.random.default_rng(seed))
        # neighbouring pixels differ little (|S| <= 1) ...
        assert np.abs(np.diff(s, axis=-1)).max() < 0.3
        assert np.abs(np.diff(s, axis=-2)).max() < 0.3
        # ... and the energy sits at low spatial frequencies
        k = np.abs(fft2c(s)) ** 2
        h, w = ny // 8, nx // 8
        low = k[..., ny // 2 - h : ny // 2 + h + 1, nx // 2 - w : nx // 2 + w + 1].sum()
        assert low / k.sum() > 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_by_seed(kind):
    z = np.array([0.0, 0.03])
    a = coil_maps(kind, 4, (15, 11), z, np.random.default_rng(11))
    b = coil_maps(kind, 4, (15, 11), z, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    c = coil_maps(kind, 4, (15, 11), z, np.random.default_rng(12))
    assert not np.array_equal(a, c)


def test_coils_differ_from_each_other():
    for kind in ("circle", "blobs"):
        s = coil_maps(kind, 4, (16, 16), np.zeros(1), np.random.default_rng(0))
        for a in range(4):
            for b in range(a + 1, 4):
                assert not np.allclose(np.abs(s[a]), np.abs(s[b]), atol=1e-2)


def test_mixed_draws_both_kinds_and_matches_them():
    kinds = [draw_coil_kind("mixed", np.random.default_rng(s)) for s in range(200)]
    assert 70 < kinds.count("circle") < 130 and set(kinds) == {"circle", "blobs"}
    z = np.array([0.0, 0.05])
    for seed in range(6):
        r = np.random.default_rng(seed)
        expected = coil_maps(draw_coil_kind("mixed", r), 3, (9, 13), z, r)
        np.testing.assert_array_equal(coil_maps("mixed", 3, (9, 13), z, np.random.default_rng(seed)), expected)
    assert draw_coil_kind("circle", np.random.default_rng(0)) == "circle"


def test_blobs_unnormalised_peak_at_most_one():
    s = blob_maps(5, (33, 29), np.array([0.0]), np.random.default_rng(0), normalize=False)
    assert np.abs(s).max() <= 1.0 + 1e-6
    assert np.abs(s).max() > 0.1


def test_far_from_every_blob_is_still_normalised():
    """Log-domain normalisation: no 0/0 where every Gaussian underflows."""
    s = coil_maps("blobs", 3, (8, 8), np.array([0.0, 50.0]), np.random.default_rng(0))
    assert np.isfinite(s).all()
    np.testing.assert_allclose((np.abs(s) ** 2).sum(0), 1.0, atol=1e-5)


def test_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="--csm"):
        coil_maps("birdcage", 4, (8, 8), np.zeros(1), rng)
    with pytest.raises(ConfigError, match="--coils"):
        coil_maps("circle", 0, (8, 8), np.zeros(1), rng)
    with pytest.raises(ValueError, match="slice_offsets"):
        coil_maps("circle", 2, (8, 8), np.zeros((1, 2)), rng)
    with pytest.raises(TypeError, match="Generator"):
        coil_maps("circle", 2, (8, 8), np.zeros(1), 1)


def test_coil_model_is_json():
    d = json.loads(json.dumps(COIL_MODEL))
    assert d["circle"]["power"] == 3
