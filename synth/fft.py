"""Centred, orthonormal 2D Fourier transforms (numpy).

Convention (used everywhere in smssynth, and recorded in every store)::

    fft2c(x) = fftshift(fft2(ifftshift(x, axes), axes, norm="ortho"), axes)

with ``axes = (-2, -1)`` = (ky, kx) / (y, x).  The k-space centre (DC) sits at array index
``(Ny // 2, Nx // 2)``; ``ifft2c`` is the exact inverse and adjoint.  Being orthonormal,
``||fft2c(x)||_2 == ||x||_2``.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

_AXES = (-2, -1)


def fft2c(x: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Centred orthonormal 2D FFT over the last two axes (y, x) -> (ky, kx)."""
    x = scipy.fft.ifftshift(x, axes=_AXES)
    k = scipy.fft.fft2(x, axes=_AXES, norm="ortho", workers=workers)
    return scipy.fft.fftshift(k, axes=_AXES)


def ifft2c(k: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Centred orthonormal inverse 2D FFT over the last two axes (ky, kx) -> (y, x)."""
    k = scipy.fft.ifftshift(k, axes=_AXES)
    x = scipy.fft.ifft2(k, axes=_AXES, norm="ortho", workers=workers)
    return scipy.fft.fftshift(x, axes=_AXES)
