r"""Simultaneous multi-slice (SMS) with CAIPI, and its 3D Fourier view.

Conventions (recorded in every store's ``conventions`` attribute)
-----------------------------------------------------------------
* Slices ``i = 0..M-1`` of an SMS group are ordered by position along the slice normal.
* ``n = 0..Ny-1`` is the **array index** of a ky row in centred k-space (``fft2c``; the DC row is
  ``n = Ny // 2``), *not* the signed frequency.
* CAIPI: row ``n`` of slice ``i`` is multiplied by :math:`\exp(s\,j 2\pi\, i n / M)` with
  ``s = CAIPI_SIGN = -1``, and the slices are summed:

  .. math:: y_{c,t}[n, :] = \sum_{i=0}^{M-1} e^{-j 2\pi i n / M}\, K_{c,i,t}[n, :]

  where :math:`K_{c,i,t} = \mathrm{fft2c}(x_{c,i,t})`.
* 3D view (the paper's supplement): with :math:`k_z = n \bmod M` and :math:`F_z` the orthonormal,
  **unshifted** DFT over the slice index (``numpy.fft.fft(..., axis=slice, norm="ortho")``),

  .. math:: y[n, :] = \sqrt{M}\; (F_z\, K)[n \bmod M,\; n, :]

  i.e. the collapsed data are the 3D FFT of the slice stack sampled at one kz per ky row.
  ``s = -1`` is what makes :math:`F_z` a forward DFT.
* Image-space equivalent: when ``M`` divides ``Ny`` the phase ramp is a circular FOV shift, so
  ``ifft2c(y) = sum_i exp(-j pi i Ny/M) * roll(x_i, i*Ny/M, axis=y)`` (the aliased SMS image).

M = 1 is allowed and reduces everything to plain multi-coil data.
"""

from __future__ import annotations

import numpy as np

from synth.fft import fft2c, ifft2c
from synth.linop import Linop

CAIPI_SIGN = -1


def caipi_phase(n_slices: int, ny: int) -> np.ndarray:
    """CAIPI phase factors, complex64 (M, Ny): ``exp(CAIPI_SIGN * 2j*pi * i * n / M)``."""
    i = np.arange(n_slices)[:, None]
    n = np.arange(ny)[None, :]
    # reduce i*n modulo M exactly in integers before the float phase, so large n loses nothing
    return np.exp(CAIPI_SIGN * 2j * np.pi * ((i * n) % n_slices) / n_slices).astype(np.complex64)


def kz_index(n_slices: int, ny: int) -> np.ndarray:
    """The kz sampled by each ky row: int (Ny,) ``n mod M``."""
    return np.arange(ny) % n_slices


def collapse(k: np.ndarray) -> np.ndarray:
    """CAIPI-collapse per-slice k-space ``(..., M, Ky, Kx) -> (..., Ky, Kx)``."""
    m, ny = k.shape[-3], k.shape[-2]
    return np.einsum("...iyx,iy->...yx", k, caipi_phase(m, ny).astype(k.dtype, copy=False))


def expand(y: np.ndarray, n_slices: int) -> np.ndarray:
    """Adjoint of :func:`collapse`: ``(..., Ky, Kx) -> (..., M, Ky, Kx)``."""
    p = np.conj(caipi_phase(n_slices, y.shape[-2])).astype(y.dtype, copy=False)
    return y[..., None, :, :] * p[:, :, None]


def to_3d(k: np.ndarray) -> np.ndarray:
    """Per-slice k-space ``(..., M, Ky, Kx)`` -> 3D k-space ``(..., Kz=M, Ky, Kx)`` (``F_z``, ortho)."""
    return np.fft.fft(k, axis=-3, norm="ortho").astype(k.dtype, copy=False)


def from_3d(k3: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_3d`."""
    return np.fft.ifft(k3, axis=-3, norm="ortho").astype(k3.dtype, copy=False)


def sample_kz(k3: np.ndarray) -> np.ndarray:
    """Collapsed data from 3D k-space: ``y[..., n, :] = sqrt(M) * k3[..., n mod M, n, :]``."""
    m, ny = k3.shape[-3], k3.shape[-2]
    rows = np.arange(ny)
    return np.sqrt(m).astype(k3.real.dtype) * k3[..., kz_index(m, ny), rows, :]


def kz_mask(n_slices: int, row_mask: np.ndarray) -> np.ndarray:
    """3D sampling mask, bool ``(..., Kz=M, Ky)``: row n is sampled at ``kz = n mod M`` only.

    ``row_mask`` is the in-plane mask ``(..., Ky)`` (e.g. the store's ``mask`` (T, Ky)).
    """
    ny = row_mask.shape[-1]
    one_hot = kz_index(n_slices, ny)[None, :] == np.arange(n_slices)[:, None]  # (M, Ky)
    return row_mask[..., None, :] & one_hot


def fov_shifts(n_slices: int, ny: int) -> np.ndarray | None:
    """Row shifts ``i * Ny / M`` of the image-space CAIPI equivalent, or None if M does not divide Ny."""
    if ny % n_slices:
        return None
    return np.arange(n_slices) * (ny // n_slices)


def collapse_images(x: np.ndarray) -> np.ndarray:
    """CAIPI collapse done in image space: ``(..., M, Y, X) -> (..., Y, X)`` aliased image.

    Equals ``ifft2c(collapse(fft2c(x)))`` but needs no FFT; used by the simulator so that it
    transforms only C*T images instead of C*M*T.  Falls back to the k-space route when ``M``
    does not divide ``Ny``.
    """
    m, ny = x.shape[-3], x.shape[-2]
    shifts = fov_shifts(m, ny)
    if shifts is None:
        return ifft2c(collapse(fft2c(x)))
    out = np.array(x[..., 0, :, :], copy=True)
    for i in range(1, m):
        # the constant is the phase of row n=0 relative to the DC row: exp(s*2j*pi*i*(Ny//2)/M)
        c = np.exp(CAIPI_SIGN * 2j * np.pi * ((i * (ny // 2)) % m) / m).astype(x.dtype)
        out += c * np.roll(x[..., i, :, :], int(shifts[i]), axis=-2)
    return out


class CaipiCollapse(Linop):
    """Linear operator ``(..., M, Ky, Kx) -> (..., Ky, Kx)``; adjoint :func:`expand`."""

    def __init__(self, ishape):
        ishape = tuple(ishape)
        self.n_slices = ishape[-3]
        super().__init__(ishape[:-3] + ishape[-2:], ishape)

    def _apply(self, x):
        return collapse(x)

    def _adjoint(self, y):
        return expand(y, self.n_slices)


class SmsForward(Linop):
    """Full acquisition model, per example.

    ``x`` complex (C, M, T, Y, X) per-coil slice images ->
    ``y`` complex (C, T, Ky, Kx) = ``mask * collapse(fft2c(x))``, with ``mask`` bool (T, Ky)
    (all rows when ``mask`` is None).
    """

    def __init__(self, ishape, mask: np.ndarray | None = None):
        ishape = tuple(ishape)
        c, m, t, ny, nx = ishape
        self.mask = None if mask is None else mask[:, :, None].astype(np.float32)
        super().__init__((c, t, ny, nx), ishape)

    def _apply(self, x):
        k = fft2c(x)  # (C, M, T, Ky, Kx)
        y = collapse(np.moveaxis(k, 1, -3))  # move M next to (Ky, Kx)
        return y if self.mask is None else y * self.mask

    def _adjoint(self, y):
        m = self.ishape[1]
        if self.mask is not None:
            y = y * self.mask
        k = np.moveaxis(expand(y, m), -3, 1)
        return ifft2c(k)
