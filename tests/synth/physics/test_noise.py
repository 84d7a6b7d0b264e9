"""Tests of synth.physics.noise: complex Gaussian noise with sigma = rms(k) / snr."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.errors import ConfigError
from synth.physics.noise import add_noise, noise_sigma


def _kspace(shape=(4, 6, 31, 37), seed=0):
    rng = np.random.default_rng(seed)
    k = rng.normal(size=shape) * 3 + 1j * rng.normal(size=shape) + 2.0
    return k.astype(np.complex64)


def test_sigma_definition():
    k = _kspace()
    rms = np.sqrt(np.mean(np.abs(k.astype(np.complex128)) ** 2))
    assert noise_sigma(k, 4.0) == pytest.approx(rms / 4.0, rel=1e-6)
    assert noise_sigma(np.zeros((3, 5), np.complex64), 2.0) == 0.0


def test_empirical_noise_matches_definition():
    k = _kspace()
    snr = 5.0
    sigma = noise_sigma(k, snr)
    n = (add_noise(k, snr, np.random.default_rng(1)) - k).astype(np.complex128)
    assert np.sqrt(np.mean(np.abs(n) ** 2)) == pytest.approx(sigma, rel=0.02)  # E|n|^2 = sigma^2
    assert n.real.std() == pytest.approx(sigma / np.sqrt(2), rel=0.02)
    assert n.imag.std() == pytest.approx(sigma / np.sqrt(2), rel=0.02)
    assert abs(n.mean()) < 0.02 * sigma
    assert abs(np.corrcoef(n.real.ravel(), n.imag.ravel())[0, 1]) < 0.02  # circular
    # independent across coils
    assert abs(np.corrcoef(n[0].real.ravel(), n[1].real.ravel())[0, 1]) < 0.03
    assert abs(np.mean(n[0] * np.conj(n[1]))) < 0.03 * sigma**2


def test_empirical_snr():
    k = _kspace(seed=3)
    y = add_noise(k, 10.0, np.random.default_rng(0))
    rms_k = np.sqrt(np.mean(np.abs(k) ** 2))
    rms_n = np.sqrt(np.mean(np.abs(y - k) ** 2))
    assert rms_k / rms_n == pytest.approx(10.0, rel=0.02)


def test_none_returns_unchanged_copy_and_leaves_rng_alone():
    k = _kspace(shape=(2, 3, 5, 7))
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    y = add_noise(k, None, rng)
    assert y is not k and y.dtype == np.complex64
    np.testing.assert_array_equal(y, k)
    y[0, 0, 0, 0] = 99
    assert k[0, 0, 0, 0] != 99
    assert rng.bit_generator.state == state


def test_input_not_modified_and_complex64_out():
    k = _kspace(shape=(2, 3, 5, 7)).astype(np.complex128)
    before = k.copy()
    y = add_noise(k, 2.0, np.random.default_rng(0))
    np.testing.assert_array_equal(k, before)
    assert y.dtype == np.complex64 and y.shape == k.shape


def test_deterministic_by_seed():
    k = _kspace(shape=(2, 3, 9, 5))
    a = add_noise(k, 3.0, np.random.default_rng(5))
    b = add_noise(k, 3.0, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, add_noise(k, 3.0, np.random.default_rng(6)))


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), snr=st.floats(0.1, 1e4))
def test_any_shape(shape, snr):
    k = _kspace(shape=tuple(shape))
    y = add_noise(k, snr, np.random.default_rng(0))
    assert y.shape == k.shape and y.dtype == np.complex64 and np.isfinite(y).all()


@pytest.mark.parametrize("snr", [0, -1.0, float("nan"), float("inf")])
def test_invalid_snr(snr):
    with pytest.raises(ConfigError, match="--snr"):
        add_noise(_kspace(shape=(2, 2)), snr, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="--snr"):
        noise_sigma(_kspace(shape=(2, 2)), snr)


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        add_noise(_kspace(shape=(2, 2)), 3.0, 0)


def test_threaded_equals_serial(monkeypatch):
    """The noise depends on the generator only, not on the thread count or the size threshold."""
    import synth.physics.noise as noise

    k = _kspace(shape=(3, 4, 17, 13))
    monkeypatch.setattr(noise, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(noise, "_cpus", lambda: 4)
    threaded = add_noise(k, 2.0, np.random.default_rng(3))
    monkeypatch.setattr(noise, "_cpus", lambda: 1)
    serial = add_noise(k, 2.0, np.random.default_rng(3))
    np.testing.assert_array_equal(threaded, serial)


def test_non_contiguous_input():
    k = _kspace(shape=(4, 6, 8))
    kt = k.transpose(2, 0, 1)
    y = add_noise(kt, 3.0, np.random.default_rng(0))
    assert y.flags.c_contiguous and y.shape == kt.shape
    n = y - kt
    assert np.sqrt(np.mean(np.abs(n) ** 2)) == pytest.approx(noise_sigma(k, 3.0), rel=0.2)
