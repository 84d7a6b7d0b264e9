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

* **General kz** (store format 1.1): each ky row of each frame carries its own
  :math:`k_z[t, n] \in \{0..M-1\}` (the store's ``kz`` array, :func:`kz_table`), and

  .. math:: y_{c,t}[n, :] = \sum_{i=0}^{M-1} e^{-j 2\pi i\, k_z[t,n] / M}\, K_{c,i,t}[n, :]
                        = \sqrt{M}\, (F_z K)[k_z[t,n],\, n, :].

  ``kz[t, n] = n mod M`` (CAIPI ordering ``row``) is the model above.  ``acquired`` gives each
  sampled row the kz of its acquisition rank: the phase cycles over the rows actually acquired,
  as a prospective CAIPI acquisition does.  Every function below that takes ``kz`` treats
  ``kz=None`` as ``n mod M``.

M = 1 is allowed and reduces everything to plain multi-coil data.
"""

from __future__ import annotations

import numpy as np

from synth.errors import ConfigError
from synth.physics.fft import fft2c, ifft2c
from synth.physics.linop import Linop

CAIPI_SIGN = -1
CAIPI_ORDERS = ("row", "acquired")


def caipi_phase(n_slices: int, ny: int) -> np.ndarray:
    """CAIPI phase factors, complex64 (M, Ny): ``exp(CAIPI_SIGN * 2j*pi * i * n / M)``."""
    i = np.arange(n_slices)[:, None]
    n = np.arange(ny)[None, :]
    # reduce i*n modulo M exactly in integers before the float phase, so large n loses nothing
    return np.exp(CAIPI_SIGN * 2j * np.pi * ((i * n) % n_slices) / n_slices).astype(np.complex64)


def kz_index(n_slices: int, ny: int) -> np.ndarray:
    """The kz sampled by each ky row under the ``row`` ordering: int (Ny,) ``n mod M``."""
    return np.arange(ny) % n_slices


def kz_table(order: str, mask: np.ndarray, n_slices: int) -> np.ndarray:
    """The kz of every ky row of every frame, int8 (..., Ky): the store's ``kz`` array.

    Parameters
    ----------
    order : {"row", "acquired"}
        ``row``: ``kz[t, n] = n mod M`` (the paper's retrospective model).  ``acquired``: a sampled
        row carries ``rank mod M``, its rank ``0, 1, ...`` among the frame's sampled rows in
        ascending ky index (ACS rows included); an unsampled row carries ``n mod M`` (its
        k-space content is computed with that kz; nothing reads it from the mask's point of view).
    mask : bool (..., Ky)
        In-plane sampled rows, e.g. (T, Ky).
    n_slices : int
        M.

    Raises
    ------
    ConfigError
        Unknown ``order`` (``--caipi``).
    """
    if order not in CAIPI_ORDERS:
        raise ConfigError(f"--caipi: must be one of {CAIPI_ORDERS}, got {order!r}")
    mask = np.asarray(mask, bool)
    row = np.broadcast_to(kz_index(n_slices, mask.shape[-1]), mask.shape)
    if order == "row":
        return row.astype(np.int8)
    rank = np.cumsum(mask, axis=-1) - 1
    return np.where(mask, rank % n_slices, row).astype(np.int8)


def caipi_phase_kz(kz: np.ndarray, n_slices: int) -> np.ndarray:
    """CAIPI phase factors for per-row kz, complex64 (..., M, Ky): ``exp(CAIPI_SIGN*2j*pi*i*kz/M)``.

    ``kz`` int (..., Ky); ``caipi_phase_kz(kz_index(M, Ny), M) == caipi_phase(M, Ny)``.
    """
    kz = np.asarray(kz)
    i = np.arange(n_slices).reshape((n_slices, 1))
    return np.exp(CAIPI_SIGN * 2j * np.pi * ((i * kz[..., None, :]) % n_slices) / n_slices).astype(np.complex64)


def collapse(k: np.ndarray, kz: np.ndarray | None = None) -> np.ndarray:
    """CAIPI-collapse per-slice k-space ``(..., M, Ky, Kx) -> (..., Ky, Kx)``.

    ``kz`` int (..., Ky), broadcast against ``k``'s leading dims (e.g. (T, Ky) for ``k``
    (C, T, M, Ky, Kx)); None = ``n mod M``.
    """
    m, ny = k.shape[-3], k.shape[-2]
    if kz is None:
        return np.einsum("...iyx,iy->...yx", k, caipi_phase(m, ny).astype(k.dtype, copy=False))
    p = caipi_phase_kz(kz, m).astype(k.dtype, copy=False)
    return (k * p[..., None]).sum(axis=-3)


def expand(y: np.ndarray, n_slices: int, kz: np.ndarray | None = None) -> np.ndarray:
    """Adjoint of :func:`collapse`: ``(..., Ky, Kx) -> (..., M, Ky, Kx)``."""
    if kz is None:
        p = np.conj(caipi_phase(n_slices, y.shape[-2])).astype(y.dtype, copy=False)
        return y[..., None, :, :] * p[:, :, None]
    p = np.conj(caipi_phase_kz(kz, n_slices)).astype(y.dtype, copy=False)
    return y[..., None, :, :] * p[..., None]


def to_3d(k: np.ndarray) -> np.ndarray:
    """Per-slice k-space ``(..., M, Ky, Kx)`` -> 3D k-space ``(..., Kz=M, Ky, Kx)`` (``F_z``, ortho)."""
    return np.fft.fft(k, axis=-3, norm="ortho").astype(k.dtype, copy=False)


def from_3d(k3: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_3d`."""
    return np.fft.ifft(k3, axis=-3, norm="ortho").astype(k3.dtype, copy=False)


def sample_kz(k3: np.ndarray, kz: np.ndarray | None = None) -> np.ndarray:
    """Collapsed data from 3D k-space: ``y[..., n, :] = sqrt(M) * k3[..., kz[..., n], n, :]``.

    ``kz`` int (..., Ky) broadcast against ``k3``'s leading dims; None = ``n mod M``.
    """
    m, ny = k3.shape[-3], k3.shape[-2]
    rows = np.arange(ny)
    scale = np.sqrt(m).astype(k3.real.dtype)
    if kz is None:
        return scale * k3[..., kz_index(m, ny), rows, :]
    kz = np.asarray(kz, np.intp)
    lead = np.broadcast_shapes(k3.shape[:-3], kz.shape[:-1])
    k3 = np.broadcast_to(k3, lead + k3.shape[-3:])
    idx = np.broadcast_to(kz, lead + (ny,))[..., None, :, None]  # (..., 1, Ky, 1)
    return scale * np.take_along_axis(k3, idx, axis=-3)[..., 0, :, :]


def kz_mask(n_slices: int, row_mask: np.ndarray, kz: np.ndarray | None = None) -> np.ndarray:
    """3D sampling mask, bool ``(..., Kz=M, Ky)``: row n is sampled at its kz only.

    ``row_mask`` is the in-plane mask ``(..., Ky)`` (e.g. the store's ``mask`` (T, Ky)); ``kz`` int
    (..., Ky) (the store's ``kz``), None = ``n mod M``.
    """
    ny = row_mask.shape[-1]
    if kz is None:
        one_hot = kz_index(n_slices, ny)[None, :] == np.arange(n_slices)[:, None]  # (M, Ky)
    else:
        one_hot = np.asarray(kz)[..., None, :] == np.arange(n_slices)[:, None]  # (..., M, Ky)
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
    """Linear operator ``(..., M, Ky, Kx) -> (..., Ky, Kx)``; adjoint :func:`expand`.

    ``kz`` int (..., Ky) broadcast against the leading dims (None = ``n mod M``).
    """

    def __init__(self, ishape, kz: np.ndarray | None = None):
        ishape = tuple(ishape)
        self.n_slices = ishape[-3]
        self.kz = None if kz is None else np.asarray(kz)
        super().__init__(ishape[:-3] + ishape[-2:], ishape)

    def _apply(self, x):
        return collapse(x, self.kz)

    def _adjoint(self, y):
        return expand(y, self.n_slices, self.kz)


class SmsForward(Linop):
    """Full acquisition model, per example.

    ``x`` complex (C, M, T, Y, X) per-coil slice images ->
    ``y`` complex (C, T, Ky, Kx) = ``mask * collapse(fft2c(x), kz)``, with ``mask`` bool (T, Ky)
    (all rows when ``mask`` is None) and ``kz`` int (T, Ky) (``n mod M`` when None).
    """

    def __init__(self, ishape, mask: np.ndarray | None = None, kz: np.ndarray | None = None):
        ishape = tuple(ishape)
        c, m, t, ny, nx = ishape
        self.mask = None if mask is None else mask[:, :, None].astype(np.float32)
        self.kz = None if kz is None else np.asarray(kz)
        super().__init__((c, t, ny, nx), ishape)

    def _apply(self, x):
        k = fft2c(x)  # (C, M, T, Ky, Kx)
        y = collapse(np.moveaxis(k, 1, -3), self.kz)  # move M next to (Ky, Kx)
        return y if self.mask is None else y * self.mask

    def _adjoint(self, y):
        m = self.ishape[1]
        if self.mask is not None:
            y = y * self.mask
        k = np.moveaxis(expand(y, m, self.kz), -3, 1)
        return ifft2c(k)
