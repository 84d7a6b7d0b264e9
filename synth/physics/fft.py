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


def centring_ramps(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Phase ramps that turn a plain FFT into the centred one, for any length ``n``.

    With ``h = n // 2``, ``pre[m] = exp(2j*pi*h*m/n)`` and ``post[k] = exp(2j*pi*(k-h)*h/n)``::

        fftshift(fft(ifftshift(x))) == post * fft(pre * x)

    (for even ``n`` both are checkerboards of +-1).  Multiplying by a ramp can be folded into a
    product the caller computes anyway, where the shifts would cost two extra copies.
    complex128 (n,) each.
    """
    h = n // 2
    idx = np.arange(n)
    pre = np.exp(2j * np.pi * ((h * idx) % n) / n)
    post = np.exp(2j * np.pi * (((idx - h) * h) % n) / n)
    return pre, post
