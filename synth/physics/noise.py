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

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from synth.errors import ConfigError

STREAMS = 8  # fixed, so the noise does not depend on the machine's core count
_PARALLEL_MIN = 1 << 20  # floats; below this a thread pool costs more than it saves
_CHUNK = 1 << 17


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
    flat = k.ravel()  # contiguous (a copy only if k is not)
    if np.iscomplexobj(flat):
        flat = flat.view(flat.real.dtype)  # (re, im) interleaved
    elif not np.issubdtype(flat.dtype, np.floating):
        flat = flat.astype(np.float64)
    # sum of squares per chunk (einsum: no temporary, and no BLAS, whose threads stall when the
    # cores are busy), chunks accumulated in float64: 1e-8 relative error over 8M complex64
    power = 0.0
    for i in range(0, flat.size, _CHUNK):
        c = flat[i : i + _CHUNK]
        power += float(np.einsum("i,i->", c, c))
    return float(np.sqrt(power / k.size)) / snr


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
        Draws ``STREAMS`` integer seeds; child generator ``j`` (``default_rng(seed_j)``) fills
        the ``j``-th of ``STREAMS`` equal parts of the C-order (real, imag)-interleaved float32
        sequence with standard normals.  Generating normals is the cost of this function (about
        2.5x an FFT of the same array), so the parts are filled on a thread pool; the result does
        not depend on the number of threads.

    Returns
    -------
    noisy : complex64, same shape as ``kspace``
        A new C-contiguous array.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    out = np.array(kspace, dtype=np.complex64, order="C", copy=True)
    if snr is None:
        return out
    scale = np.float32(noise_sigma(kspace, snr) / np.sqrt(2.0))  # per real/imag component
    seeds = rng.integers(0, 2**63, size=STREAMS)
    flat = out.reshape(-1).view(np.float32)
    n = flat.size

    def fill(j: int) -> None:
        lo, hi = j * n // STREAMS, (j + 1) * n // STREAMS
        buf = np.random.default_rng(int(seeds[j])).standard_normal(hi - lo, dtype=np.float32)
        buf *= scale
        flat[lo:hi] += buf  # numpy releases the GIL in both the draw and the add

    workers = min(STREAMS, _cpus())
    if n < _PARALLEL_MIN or workers < 2:
        for j in range(STREAMS):
            fill(j)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fill, range(STREAMS)))
    return out
