r"""Complex white Gaussian measurement noise.

Definition (recorded in every store through ``SimConfig.snr``):

.. math:: \sigma = \frac{\mathrm{rms}(k)}{\mathrm{SNR}}, \qquad
          \mathrm{rms}(k) = \sqrt{\tfrac{1}{N}\textstyle\sum_n |k_n|^2}

over **all** N elements of the clean k-space array handed in (every coil, frame, row and
column, zeros included: pass the array you want the SNR to refer to), and

.. math:: n \sim \mathcal{CN}(0, \sigma^2), \quad E|n|^2 = \sigma^2,

i.e. real and imaginary parts independent with standard deviation :math:`\sigma/\sqrt 2`,
independent across elements and therefore across coils (no noise correlation between coils).
Because ``fft2c`` is orthonormal, the same :math:`\sigma` is the per-pixel noise level of the
zero-filled image.  Noise is added at every element; apply the sampling mask afterwards.
"""

from __future__ import annotations

import numpy as np

from synth.errors import ConfigError

_CHUNK = 1 << 16


def _check_snr(snr) -> float:
    snr = float(snr)
    if not (snr > 0 and np.isfinite(snr)):
        raise ConfigError(f"--snr: must be a finite number > 0 (or omitted for no noise), got {snr}")
    return snr


def noise_sigma(kspace: np.ndarray, snr: float) -> float:
    """Noise standard deviation ``sigma = rms(kspace) / snr`` (``E|n|^2 = sigma^2``).

    Parameters
    ----------
    kspace : complex (...)
        Clean k-space; the rms runs over all its elements (accumulated in float64).
    snr : float
        > 0.

    Returns
    -------
    sigma : float
        In the units of ``kspace``.
    """
    snr = _check_snr(snr)
    k = np.asarray(kspace)
    if k.size == 0:
        return 0.0
    flat = k.ravel()
    # vdot(k, k) = sum |k|^2 without a full-size temporary; BLAS accumulates in the input's
    # precision (1e-4 relative error over 8M complex64), so sum chunks of 64k in float64
    power = 0.0
    for i in range(0, flat.size, _CHUNK):
        c = flat[i : i + _CHUNK]
        power += float(np.vdot(c, c).real)
    return float(np.sqrt(power / k.size)) / snr


def add_noise(kspace: np.ndarray, snr: float | None, rng: np.random.Generator) -> np.ndarray:
    r"""Return ``kspace + n`` with :math:`n \sim \mathcal{CN}(0, \sigma^2)`, :math:`\sigma` from :func:`noise_sigma`.

    Parameters
    ----------
    kspace : complex (...)
        Clean k-space, e.g. (C, T, Ky, Kx).  Not modified.
    snr : float or None
        ``rms(kspace) / sigma``; None means no noise (an unchanged complex64 copy is returned
        and ``rng`` is not used).
    rng : numpy.random.Generator
        Draws ``2 * kspace.size`` float32 standard normals (real/imag interleaved).

    Returns
    -------
    noisy : complex64, same shape as ``kspace``
        A new array.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out = np.array(kspace, dtype=np.complex64, copy=True)
    if snr is None:
        return out
    sigma = noise_sigma(kspace, snr)
    noise = rng.standard_normal(out.shape + (2,), dtype=np.float32)
    noise *= np.float32(sigma / np.sqrt(2.0))
    out += noise.view(np.complex64)[..., 0]
    return out
