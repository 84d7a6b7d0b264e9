"""Bring DICOM magnitudes to the resolution and size the simulation works at.

DICOM images are usually interpolated by the scanner (Sunnybrook: 224x224 acquired, stored at
256x256; the GE perfusion series: 128x96 acquired, stored at 256x256), which leaves the outer
k-space empty.  Simulating k-space at the stored matrix would teach a network that the outer
k-space is always zero, so by default (``resolution="acquired"``) the image is transformed with
the centred orthonormal FFT, the central ``AcquisitionMatrix`` of k-space is kept, and the
magnitude of the inverse transform is used.  This keeps the field of view and restores the
acquired pixel size.

Then ``matrix`` centre-crops or zero-pads in **image space** (changes the field of view, not the
resolution), and ``frames`` crops or linearly resamples time.
"""

from __future__ import annotations

import numpy as np

from synth.errors import ConfigError
from synth.physics.fft import fft2c, ifft2c


def crop_kspace(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Keep the central ``shape`` of each frame's k-space.

    Parameters
    ----------
    images : float32 (T, Y, X) magnitudes.
    shape : (ny, nx) with ny <= Y, nx <= X.

    Returns
    -------
    float32 (T, ny, nx) magnitudes, ``|ifft2c(crop(fft2c(images)))|``.  The orthonormal FFT
    scales intensities by ``sqrt(Y*X / (ny*nx))``; targets are normalised later anyway.
    """
    t, y, x = images.shape
    ny, nx = shape
    if (ny, nx) == (y, x):
        return images.astype(np.float32, copy=False)
    k = fft2c(images.astype(np.complex64))
    y0, x0 = y // 2 - ny // 2, x // 2 - nx // 2
    k = k[:, y0 : y0 + ny, x0 : x0 + nx]
    return np.abs(ifft2c(k)).astype(np.float32)


def crop_or_pad(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop or zero-pad each frame to ``shape`` in image space. float32 (T, ny, nx)."""
    t, y, x = images.shape
    out = np.zeros((t, *shape), dtype=np.float32)
    sy, sx = min(y, shape[0]), min(x, shape[1])
    iy, ix = (y - sy) // 2, (x - sx) // 2  # source offsets
    oy, ox = (shape[0] - sy) // 2, (shape[1] - sx) // 2  # destination offsets
    out[:, oy : oy + sy, ox : ox + sx] = images[:, iy : iy + sy, ix : ix + sx]
    return out


def fit_frames(images: np.ndarray, frames: int | None, mode: str, what: str = "slice") -> np.ndarray:
    """Crop (first ``frames``) or linearly resample (over the same time span) to ``frames`` frames."""
    t = images.shape[0]
    if frames is None or frames == t:
        return images
    if mode == "crop":
        if t < frames:
            raise ConfigError(
                f"--frames {frames}: {what} has only {t} frames; use a smaller --frames or "
                f"--frames-mode resample"
            )
        return images[:frames]
    if t == 1:
        return np.repeat(images, frames, axis=0)
    pos = np.linspace(0, t - 1, frames)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, t - 1)
    w = (pos - lo).astype(np.float32)[:, None, None]
    return ((1 - w) * images[lo] + w * images[hi]).astype(np.float32)


def working_shape(
    stored: tuple[int, int], acquired: tuple[int, int] | None, resolution: str, matrix: tuple[int, int] | None
) -> tuple[int, int]:
    """The (Ny, Nx) a slice will have after :func:`prepare` (for planning without pixel data)."""
    if matrix is not None:
        return tuple(matrix)
    return tuple(acquired_shape(stored, acquired, resolution))


def acquired_shape(stored, acquired, resolution) -> tuple[int, int]:
    if resolution != "acquired" or acquired is None:
        return tuple(stored)
    # an acquisition matrix larger than the stored one (or absent axes) cannot be restored
    return tuple(min(a, s) if a > 0 else s for a, s in zip(acquired, stored))


def prepare(
    images: np.ndarray,
    acquired: tuple[int, int] | None,
    *,
    resolution: str,
    matrix: tuple[int, int] | None,
    frames: int | None,
    frames_mode: str,
    what: str = "slice",
) -> np.ndarray:
    """DICOM magnitudes float32 (T, Y, X) -> working magnitudes float32 (T', Ny, Nx)."""
    images = fit_frames(images, frames, frames_mode, what)
    shape = acquired_shape(images.shape[1:], acquired, resolution)
    images = crop_kspace(images, shape)
    if matrix is not None:
        images = crop_or_pad(images, matrix)
    return np.ascontiguousarray(images, dtype=np.float32)
