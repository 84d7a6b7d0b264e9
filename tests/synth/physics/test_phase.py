"""Tests of synth.physics.phase: k-means cluster phase, majority vote, grating."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import synth.physics.phase as phase
from synth.errors import ConfigError, DicomError
from synth.physics.phase import (
    PHASE_MODEL,
    cluster_phase,
    grating_phase,
    kmeans_labels,
    synthesize_phase,
)


def _disc_series(m=2, t=3, ny=17, nx=23):
    """(M, T, Y, X) float32: bright disc (20) on a dark background (2), identical slices."""
    yy, xx = np.mgrid[:ny, :nx]
    img = np.where((yy - ny // 2) ** 2 + (xx - nx // 2) ** 2 < 30, 20.0, 2.0).astype(np.float32)
    return np.broadcast_to(img, (m, t, ny, nx)).copy()


def _random_series(rng, m=2, t=4, ny=13, nx=11):
    return rng.random((m, t, ny, nx)).astype(np.float32) * 100


@settings(max_examples=15, deadline=None)
@given(
    m=st.integers(1, 3),
    t=st.integers(1, 4),
    ny=st.integers(3, 19),
    nx=st.integers(3, 19),
    c=st.integers(1, 3),
    k=st.integers(1, 5),
    kind=st.sampled_from(["kmeans", "grating", "none"]),
)
def test_shapes_and_dtypes(m, t, ny, nx, c, k, kind):
    mags = _random_series(np.random.default_rng(0), m, t, ny, nx)
    p = synthesize_phase(mags, c, kind, k, np.random.default_rng(1))
    assert p.shape == (c, m, t, ny, nx)
    assert p.dtype == np.float32
    assert np.isfinite(p).all()


def test_odd_unequal_shape_37x31():
    mags = _random_series(np.random.default_rng(0), 2, 5, 37, 31)
    labels = kmeans_labels(mags[0], 4, np.random.default_rng(0))
    assert labels.shape == (5, 37, 31) and np.issubdtype(labels.dtype, np.integer)
    assert labels.min() >= 0 and labels.max() < 4
    assert grating_phase(3, (37, 31), np.random.default_rng(0)).shape == (3, 37, 31)
    assert cluster_phase(mags, 3, 4, np.random.default_rng(0)).shape == (3, 2, 5, 37, 31)


@pytest.mark.parametrize("kind", ["kmeans", "grating", "none"])
def test_deterministic_by_seed(kind):
    mags = _random_series(np.random.default_rng(0))
    a = synthesize_phase(mags, 3, kind, 4, np.random.default_rng(7))
    b = synthesize_phase(mags, 3, kind, 4, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    if kind != "none":
        c = synthesize_phase(mags, 3, kind, 4, np.random.default_rng(8))
        assert not np.array_equal(a, c)


def test_kmeans_labels_deterministic_and_in_range():
    mags = _random_series(np.random.default_rng(3), 1, 3, 21, 9)[0]
    a = kmeans_labels(mags, 6, np.random.default_rng(5))
    b = kmeans_labels(mags, 6, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == mags.shape
    assert a.min() >= 0 and a.max() < 6
    assert kmeans_labels(mags, 1, np.random.default_rng(5)).max() == 0
    assert kmeans_labels(mags, 300, np.random.default_rng(5)).dtype == np.uint16  # compact_labels' type for K > 256


def test_kmeans_labels_independent_of_thread_count():
    """scikit-learn sums centres per OpenMP thread; kmeans_labels fits on one, so the labels do not
    depend on the cores (or on BLAS threads), also when called from a worker thread."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(11)
    t, ny, nx = 20, 64, 64  # 82k voxels: the 20k fit subsample spans many of scikit-learn's chunks
    yy, xx = np.mgrid[:ny, :nx]
    img = np.where((yy - 30) ** 2 + (xx - 20) ** 2 < 150, 40.0, 10.0) + 20.0 * (xx > 45)
    mags = (img + rng.normal(0, 8, (t, ny, nx))).astype(np.float32)
    runs = []
    for n in (1, 2, 4):
        with threadpool_limits(limits=n):
            runs.append(kmeans_labels(mags, 8, np.random.default_rng(3)))
    with ThreadPoolExecutor(2) as pool:
        runs.append(pool.submit(kmeans_labels, mags, 8, np.random.default_rng(3)).result())
    for r in runs[1:]:
        np.testing.assert_array_equal(r, runs[0])


def test_kmeans_degenerate_inputs_give_valid_labels():
    """Constant images, all-zero images and fewer voxels than clusters: labels in range, no warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. scikit-learn's ConvergenceWarning for duplicate points
        for mags, k in [(np.full((3, 9, 8), 7.0, np.float32), 4), (np.zeros((2, 5, 6), np.float32), 3),
                        (np.ones((1, 2, 2), np.float32), 6), (np.ones((1, 1, 1), np.float32), 2)]:
            labels = kmeans_labels(mags, k, np.random.default_rng(0))
            assert labels.shape == mags.shape and labels.dtype == np.uint8
            assert labels.max() < k
            if mags.size <= k:  # one cluster per voxel
                assert np.unique(labels).size == mags.size


def test_kmeans_labels_take_integer_and_float64_magnitudes():
    mags = np.random.default_rng(2).integers(0, 4000, (3, 19, 17)).astype(np.uint16)
    ref = kmeans_labels(mags.astype(np.float32), 5, np.random.default_rng(1))
    np.testing.assert_array_equal(kmeans_labels(mags, 5, np.random.default_rng(1)), ref)
    np.testing.assert_array_equal(kmeans_labels(mags.astype(np.float64), 5, np.random.default_rng(1)), ref)


def test_kmeans_separates_intensity_regions():
    mags = _disc_series(1)[0]
    disc = mags > 10
    for seed in range(5):
        labels = kmeans_labels(mags, 2, np.random.default_rng(seed))
        assert np.array_equal(labels == labels[disc][0], disc)


def test_kmeans_subsample_path_large_volume(monkeypatch):
    """More voxels than FIT_VOXELS: fit on a subsample, assign all; still separates regions."""
    rng = np.random.default_rng(0)
    t, ny, nx = 12, 61, 47
    assert t * ny * nx > phase.FIT_VOXELS
    yy, xx = np.mgrid[:ny, :nx]
    img = np.where((yy - 30) ** 2 + (xx - 23) ** 2 < 200, 50.0, 5.0)
    mags = (img + rng.normal(0, 1, (t, ny, nx))).astype(np.float32)
    labels = kmeans_labels(mags, 2, np.random.default_rng(1))
    disc = np.broadcast_to(img > 10, mags.shape)
    assert np.mean((labels == labels[disc][0]) == disc) > 0.99
    monkeypatch.setattr(phase, "PREDICT_VOXELS", 5 * ny * nx - 1)  # assigned in blocks of 4 frames: the same labels
    np.testing.assert_array_equal(kmeans_labels(mags, 2, np.random.default_rng(1)), labels)


def test_cluster_values_spread_is_pi_over_3():
    """Slice 0: each cluster's value ~ N(0, (pi/3)^2) per coil (checked over many draws)."""
    mags = _random_series(np.random.default_rng(0), 1, 2, 9, 8)
    values = []
    for seed in range(300):
        p = cluster_phase(mags, 4, 3, np.random.default_rng(seed))
        for c in range(4):
            u = np.unique(p[c, 0])
            assert u.size <= 3  # piecewise constant: one value per cluster
            values.extend(u.tolist())
    values = np.asarray(values)
    assert values.size > 2000
    assert abs(values.mean()) < 0.05
    assert values.std() == pytest.approx(np.pi / 3, rel=0.05)


def test_majority_vote_on_constructed_labels(monkeypatch):
    """Slice 1's clusters take the value of the slice-0 cluster most frequent under them."""
    k, shape = 4, (3, 11, 7)
    rng = np.random.default_rng(0)
    lab0 = rng.integers(0, k, shape).astype(np.int32)
    lab1 = ((lab0 + 1) % k).astype(np.int32)  # relabelled copy: cluster j of slice 1 = cluster j-1 of slice 0
    # corrupt a minority of voxels: the vote must still recover the permutation
    flip = rng.random(shape) < 0.2
    lab1[flip] = rng.integers(0, k, flip.sum())
    labels = iter([lab0, lab1])
    monkeypatch.setattr(phase, "kmeans_labels", lambda mag, n, r: next(labels))

    p = cluster_phase(np.zeros((2,) + shape, np.float32), 3, k, np.random.default_rng(1))
    for c in range(3):
        v0 = {j: np.unique(p[c, 0][lab0 == j]) for j in range(k)}
        assert all(v.size == 1 for v in v0.values())
        for j in range(k):
            np.testing.assert_array_equal(np.unique(p[c, 1][lab1 == j]), v0[(j - 1) % k])


def test_majority_vote_takes_majority_not_first(monkeypatch):
    shape = (1, 1, 10)
    lab0 = np.array([[[0, 1, 1, 1, 2, 2, 2, 2, 2, 0]]], np.int32)
    lab1 = np.array([[[0, 0, 0, 0, 0, 0, 1, 1, 1, 1]]], np.int32)
    # slice-1 cluster 0 covers slice-0 labels [0,1,1,1,2,2] -> 1; cluster 1 covers [2,2,2,0] -> 2
    labels = iter([lab0, lab1])
    monkeypatch.setattr(phase, "kmeans_labels", lambda mag, n, r: next(labels))
    p = cluster_phase(np.zeros((2,) + shape, np.float32), 2, 3, np.random.default_rng(2))
    for c in range(2):
        v = p[c, 0, 0, 0]
        np.testing.assert_array_equal(p[c, 1, 0, 0, :6], v[1])
        np.testing.assert_array_equal(p[c, 1, 0, 0, 6:], v[4])


def test_identical_slices_get_identical_phase():
    mags = _disc_series(2)
    for seed in range(5):
        p = synthesize_phase(mags, 3, "kmeans", 2, np.random.default_rng(seed))
        np.testing.assert_array_equal(p[:, 0], p[:, 1])


def test_grating_constant_over_time_and_slices_and_varies_across_coils():
    mags = _random_series(np.random.default_rng(0), 3, 4, 15, 21)
    p = synthesize_phase(mags, 4, "grating", 5, np.random.default_rng(3))
    np.testing.assert_array_equal(p, np.broadcast_to(p[:, :1, :1], p.shape))
    g = p[:, 0, 0]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not np.allclose(g[a], g[b])


def test_grating_amplitude_and_frequency_ranges():
    ny, nx = 64, 64
    g = grating_phase(50, (ny, nx), np.random.default_rng(0)).astype(np.float64)
    lo, hi = PHASE_MODEL["grating_amplitude_rad"]
    amp = np.abs(g).max(axis=(1, 2))
    assert (amp <= hi + 1e-5).all() and (amp >= 0.6 * lo).all()  # a pixel grid may miss the exact peak
    # dominant spatial frequency, in cycles per FOV, within the documented range (+- 1 bin)
    spec = np.abs(np.fft.fft2(g - g.mean(axis=(1, 2), keepdims=True)))
    fy, fx = np.meshgrid(np.fft.fftfreq(ny) * ny, np.fft.fftfreq(nx) * nx, indexing="ij")
    radius = np.hypot(fy, fx)
    peak = radius.ravel()[spec.reshape(50, -1).argmax(1)]
    f_lo, f_hi = PHASE_MODEL["grating_frequency_cycles_per_fov"]
    assert (peak >= f_lo - 1).all() and (peak <= f_hi + 1).all()


def test_kmeans_phase_is_cluster_phase_plus_grating():
    mags = _random_series(np.random.default_rng(0), 2, 3, 12, 10)
    p = synthesize_phase(mags, 2, "kmeans", 3, np.random.default_rng(4))
    r = np.random.default_rng(4)
    cp = cluster_phase(mags, 2, 3, r)
    g = grating_phase(2, (12, 10), r)  # same draw order: k-means, values, grating
    np.testing.assert_allclose(p, cp + g[:, None, None], atol=1e-6)


def test_none_is_zeros():
    p = synthesize_phase(_random_series(np.random.default_rng(0)), 2, "none", 3, np.random.default_rng(0))
    assert p.dtype == np.float32 and not p.any()


def test_errors():
    mags = _random_series(np.random.default_rng(0))
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="--phase"):
        synthesize_phase(mags, 2, "sinusoid", 3, rng)
    with pytest.raises(ConfigError, match="--clusters"):
        synthesize_phase(mags, 2, "kmeans", 0, rng)
    with pytest.raises(ConfigError, match="--coils"):
        synthesize_phase(mags, 0, "kmeans", 3, rng)
    with pytest.raises(ValueError, match=r"\(M, T, Y, X\)"):
        synthesize_phase(mags[0], 2, "kmeans", 3, rng)
    bad = mags.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DicomError, match="NaN"):
        synthesize_phase(bad, 2, "kmeans", 3, rng)
    with pytest.raises(TypeError, match="Generator"):
        synthesize_phase(mags, 2, "kmeans", 3, 0)


def test_phase_model_is_json():
    d = json.loads(json.dumps(PHASE_MODEL))
    assert d["cluster_sigma"] == pytest.approx(np.pi / 3)
    assert d["kmeans_fit_voxels"] == phase.FIT_VOXELS


@pytest.mark.slow
def test_typical_example_is_fast():
    """M=2, C=8, T=20, 224x224: the k-means phase well under 0.5 s (this 2-core machine: ~0.1 s)."""
    import time

    rng = np.random.default_rng(0)
    mags = rng.random((2, 20, 224, 224)).astype(np.float32)
    synthesize_phase(mags, 8, "kmeans", 8, np.random.default_rng(0))
    t0 = time.perf_counter()
    synthesize_phase(mags, 8, "kmeans", 8, np.random.default_rng(1))
    assert time.perf_counter() - t0 < 0.5


@pytest.mark.parametrize("kind", ["kmeans", "grating", "none"])
def test_factored_phase_matches_full_phase(kind):
    """phase_parts gives the same draws as synthesize_phase and a phasor equal to exp(j*phase)."""
    from synth.physics.phase import phase_parts

    mags = np.random.default_rng(0).random((2, 3, 13, 11)).astype(np.float32)
    full = synthesize_phase(mags, 3, kind, 4, np.random.default_rng(7))
    parts = phase_parts(mags, 3, kind, 4, np.random.default_rng(7))
    np.testing.assert_array_equal(parts.phase(), full)
    for c in range(3):
        np.testing.assert_allclose(parts.phasor(c), np.exp(1j * full[c]), atol=2e-6)


def test_vote_counts_identical_with_and_without_the_kernel(monkeypatch):
    import synth.physics._jit as jit

    if jit.kernels() is None:
        pytest.skip("numba kernels unavailable")
    rng = np.random.default_rng(5)
    for k in (1, 4, 9):
        a = rng.integers(0, k, (3, 17, 13)).astype(np.uint8)
        b = rng.integers(0, k, (3, 17, 13)).astype(np.uint8)
        b[0] = a[0]  # make some votes clear-cut, leave others to ties
        with_kernel = phase._vote(a, b, k)
        monkeypatch.setattr(jit, "_kernels", False)
        without = phase._vote(a, b, k)
        monkeypatch.setattr(jit, "_kernels", None)
        np.testing.assert_array_equal(with_kernel, without)
    bad = np.full((2, 3), 9, np.uint8)  # labels >= K: refused on both routes, never out of bounds
    with pytest.raises(ValueError):
        phase._vote(bad, bad, 4)
    monkeypatch.setattr(jit, "_kernels", False)
    with pytest.raises(ValueError):
        phase._vote(bad, bad, 4)
