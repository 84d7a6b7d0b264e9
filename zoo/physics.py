r"""SMS/CAIPI acquisition physics in PyTorch: differentiable, complex64, CPU or CUDA.

The torch twin of :mod:`synth.physics.sms` and :mod:`synth.physics.fft`, with the same conventions (the store's
``conventions`` attribute; ``docs/store-format.md``).  Models call these operators; they never
inline FFTs.

Layouts
-------
image            ``(B, M, T, Y, X)`` complex, slice axis ``M`` at dim -4
3D k-space       ``(B, Kz=M, T, Ky, Kx)`` complex, kz at dim -4
collapsed data   ``(B, T, Ky, Kx)`` complex (what the scanner measures, per coil)
in-plane mask    ``(B, T, Ky)`` bool, True where ky row ``n`` of frame ``t`` is sampled
3D mask          ``(B, M, T, Ky, 1)`` bool
kz               ``(B, T, Ky)`` integer (int8 or long), the kz each row carries (the store's ``kz``);
                 every operator takes ``kz=None`` as ``n mod M`` (the ``row`` CAIPI ordering)

``B`` stands for any leading dims: a coil axis may be folded into it or kept as an extra leading
dim, ``(B, C, M, T, Y, X)``, because every operator acts on the trailing dims only.  Ky and Kx are
on the image grid (Ky = Y, Kx = X).

Forward model (CAIPI with sign ``s = -1``; ``n`` is the ky **array index** of the centred k-space,
DC row ``Ky // 2``)
--------------------------------------------------------------------------------------------------
.. math::

    y[t, n, :] = \sum_{i=0}^{M-1} e^{-j 2\pi i n / M}\, \mathrm{fft2c}(x_i)[t, n, :]
               = \sqrt{M}\, (F_z\, \mathrm{fft2c}\, x)[n \bmod M, t, n, :]

with :math:`F_z` the orthonormal, unshifted DFT over the slice axis: the collapsed data are the 3D
Fourier transform of the slice stack sampled at one kz per ky row (the paper's supplement).  In
general (store format 1.1, ``--caipi acquired``) row ``n`` of frame ``t`` carries its own
``kz[t, n]`` in place of ``n mod M``:
:math:`y[t, n, :] = \sum_i e^{-j 2\pi i\, k_z[t,n] / M} \mathrm{fft2c}(x_i)[t, n, :]
= \sqrt{M} (F_z \mathrm{fft2c}\, x)[k_z[t,n], t, n, :]`.  So
reconstruction is a 3D-Fourier problem with the sampling mask
``mask3[kz', t, n] = row_mask[t, n] & (kz' == kz[t, n])``, and data consistency is done in 3D k-space
(Schlemper et al., "A deep cascade of convolutional neural networks for dynamic MR image
reconstruction", IEEE TMI 2018 / arXiv 2017):

.. math::

    x^{(n+1)} = F_{3D}^{-1}\big(Y_u + (1 - U)\, F_{3D}\, G(x^{(n)})\big).

Scaling: ``to_3d_data`` stores ``y / sqrt(M)`` so that the zero-filled 3D k-space holds the true 3D
k-space values on the sampled entries; then ``ifft3`` of a fully sampled 3D k-space is the image
itself, and ``zero_filled(to_3d_data(y, mask, M)) = SmsOperator(mask, M).adjoint(y) / M``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_DIMS = (-2, -1)
_SLICE = -4  # slice / kz axis of the image and 3D k-space layouts
_SLICE_3 = -3  # slice axis of per-slice k-space (..., M, Ky, Kx) as taken by ``collapse``
CAIPI_SIGN = -1


# --- centred 2D FFT ---------------------------------------------------------------------------


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2D FFT over dims (-2, -1): (..., Y, X) -> (..., Ky, Kx).

    ``fftshift(fft2(ifftshift(x), norm="ortho"))``, DC at ``(Ky // 2, Kx // 2)``; equals
    :func:`synth.physics.fft.fft2c`.
    """
    x = torch.fft.ifftshift(x, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.fft2(x, dim=_DIMS, norm="ortho"), dim=_DIMS)


def ifft2c(k: Tensor) -> Tensor:
    """Inverse (and adjoint) of :func:`fft2c`: (..., Ky, Kx) -> (..., Y, X)."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    return torch.fft.fftshift(torch.fft.ifft2(k, dim=_DIMS, norm="ortho"), dim=_DIMS)


# --- CAIPI collapse ---------------------------------------------------------------------------


def caipi_phase(m: int, ny: int, device=None, dtype: torch.dtype = torch.complex64) -> Tensor:
    """CAIPI phase factors ``exp(-2j*pi * i * n / M)``, complex (M, Ny); equals :func:`synth.physics.sms.caipi_phase`.

    ``dtype`` defaults to complex64; the operators ask for the dtype of their input so that
    complex128 (e.g. ``gradcheck``) stays in double precision.
    """
    i = torch.arange(m, device=device)[:, None]
    n = torch.arange(ny, device=device)[None, :]
    # i*n reduced modulo M in integers before the float phase, so large n loses nothing
    angle = (CAIPI_SIGN * 2 * math.pi / m) * ((i * n) % m).to(torch.float64)
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def caipi_phase_kz(kz: Tensor, m: int, dtype: torch.dtype = torch.complex64) -> Tensor:
    """CAIPI phase factors for per-row kz, complex (..., M, Ky): ``exp(-2j*pi * i * kz / M)``.

    ``kz`` integer (..., Ky); equals :func:`synth.physics.sms.caipi_phase_kz`.
    """
    i = torch.arange(m, device=kz.device)[:, None]
    angle = (CAIPI_SIGN * 2 * math.pi / m) * ((i * kz.long()[..., None, :]) % m).to(torch.float64)
    return torch.polar(torch.ones_like(angle), angle).to(dtype)


def _phase_like(m: int, ny: int, t: Tensor, kz: Tensor | None = None) -> Tensor:
    """(M, Ky) phases, or (..., M, Ky) for a ``kz`` (..., Ky), in ``t``'s complex dtype and device."""
    dtype = t.dtype if t.is_complex() else torch.complex64
    if kz is None:
        return caipi_phase(m, ny, device=t.device, dtype=dtype)
    return caipi_phase_kz(kz.to(t.device), m, dtype=dtype)


def collapse(k: Tensor, kz: Tensor | None = None) -> Tensor:
    """CAIPI-collapse per-slice k-space: (..., M, Ky, Kx) -> (..., Ky, Kx).

    ``y[..., n, :] = sum_i exp(-2j*pi*i*kz[..., n]/M) * k[..., i, n, :]``; equals
    :func:`synth.physics.sms.collapse`.  ``kz`` integer (..., Ky) broadcasts against ``k``'s leading dims
    (None = ``n mod M``).  Note the slice axis is dim -3 here (as in ``synth``), not -4 as in the
    image layout.
    """
    m, ny = k.shape[-3], k.shape[-2]
    return (k * _phase_like(m, ny, k, kz)[..., None]).sum(dim=-3)


def expand(y: Tensor, m: int, kz: Tensor | None = None) -> Tensor:
    """Adjoint of :func:`collapse`: (..., Ky, Kx) -> (..., M, Ky, Kx)."""
    p = _phase_like(m, y.shape[-2], y, kz).conj()
    return y[..., None, :, :] * p[..., None]


# --- 3D Fourier view --------------------------------------------------------------------------


def fft3(x: Tensor) -> Tensor:
    """Image (..., M, T, Y, X) -> 3D k-space (..., Kz=M, T, Ky, Kx).

    ``F_z ∘ fft2c``: the orthonormal **unshifted** DFT over the slice axis (dim -4) after the
    centred 2D FFT over (Y, X).  Unitary.
    """
    return torch.fft.fft(fft2c(x), dim=_SLICE, norm="ortho")


def ifft3(k3: Tensor) -> Tensor:
    """Inverse (= adjoint) of :func:`fft3`: (..., Kz=M, T, Ky, Kx) -> (..., M, T, Y, X)."""
    return ifft2c(torch.fft.ifft(k3, dim=_SLICE, norm="ortho"))


def _kz_one_hot(m: int, ny: int, device, kz: Tensor | None = None) -> Tensor:
    """bool (M, 1, Ky, 1): True at ``kz == n mod M``, or (..., M, T, Ky, 1) for a ``kz``
    (..., T, Ky): True at ``kz' == kz[..., t, n]`` (broadcasts against (..., M, T, Ky, Kx))."""
    if kz is None:
        kz = torch.arange(ny, device=device) % m
        return (kz[None, :] == torch.arange(m, device=device)[:, None])[:, None, :, None]
    kz = kz.to(device=device, dtype=torch.long)
    return (kz[..., None, :, :] == torch.arange(m, device=device)[:, None, None])[..., None]


def kz_mask(m: int, row_mask: Tensor, kz: Tensor | None = None) -> Tensor:
    """3D sampling mask from the in-plane mask: row ``n`` of frame ``t`` is sampled at its kz only.

    Parameters
    ----------
    m : int
        M, slices per SMS excitation.
    row_mask : bool (..., T, Ky)
        In-plane sampled rows (the store's ``mask`` is (T, Ky); batched (B, T, Ky)).
    kz : integer (..., T, Ky), or None for ``n mod M``
        The kz of every row (the store's ``kz``); broadcasts against ``row_mask``.

    Returns
    -------
    mask3 : bool (..., M, T, Ky, 1)
        ``mask3[..., k, t, n, 0] = row_mask[..., t, n] & (k == kz[..., t, n])``; same as
        :func:`synth.physics.sms.kz_mask` up to the axis order.
    """
    row_mask = row_mask.to(torch.bool)
    one_hot = _kz_one_hot(m, row_mask.shape[-1], row_mask.device, kz)  # (M, 1, Ky, 1) or (..., M, T, Ky, 1)
    return row_mask[..., None, :, :, None] & one_hot


def to_3d_data(y: Tensor, row_mask: Tensor | None, m: int, kz: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Place measured collapsed data into zero-filled 3D k-space.

    Parameters
    ----------
    y : complex (..., T, Ky, Kx)
        Collapsed k-space (the store's ``kspace`` rows; unsampled rows are ignored).
    row_mask : bool (..., T, Ky), or None for all rows
        In-plane mask; leading dims broadcast against ``y``'s.
    m : int
        M.
    kz : integer (..., T, Ky), or None for ``n mod M``
        The kz of every row (the store's ``kz``); leading dims broadcast like ``row_mask``'s.

    Returns
    -------
    k3 : complex (..., M, T, Ky, Kx)
        ``y[..., t, n, :] / sqrt(M)`` at ``kz[..., t, n]`` on sampled rows, 0 elsewhere.
    mask3 : bool (..., M, T, Ky, 1)
        :func:`kz_mask` of ``row_mask`` and ``kz`` (with their leading dims, not ``y``'s).

    Notes
    -----
    A right inverse of ``mask * from_3d_data``: ``from_3d_data(k3) == row_mask * y``.  As a linear
    map of ``y`` it is ``from_3d_data^H ∘ mask / M``.
    """
    if row_mask is None:
        row_mask = torch.ones(y.shape[-3:-1], dtype=torch.bool, device=y.device)
    mask3 = kz_mask(m, row_mask, kz)
    k3 = (y / math.sqrt(m))[..., None, :, :, :] * mask3.to(y.dtype)
    return k3, mask3


def from_3d_data(k3: Tensor, kz: Tensor | None = None) -> Tensor:
    """Collapsed data from 3D k-space: (..., M, T, Ky, Kx) -> (..., T, Ky, Kx).

    ``y[..., t, n, :] = sqrt(M) * k3[..., kz[..., t, n], t, n, :]`` (no in-plane mask applied;
    ``kz`` integer (..., T, Ky), None = ``n mod M``), so ``from_3d_data(fft3(x), kz)`` is the CAIPI
    collapse of ``fft2c(x)`` with that kz (the paper's 3D identity).
    """
    m, ny = k3.shape[_SLICE], k3.shape[-2]
    one_hot = _kz_one_hot(m, ny, k3.device, kz).to(k3.dtype)
    return math.sqrt(m) * (k3 * one_hot).sum(dim=_SLICE)


def zero_filled(k3: Tensor) -> Tensor:
    """The zero-filled 3D reconstruction ``ifft3(k3)``: (..., M, T, Ky, Kx) -> (..., M, T, Y, X)."""
    return ifft3(k3)


def data_consistency(
    x: Tensor, k3: Tensor, mask3: Tensor, noise_lambda: float | Tensor | None = None
) -> Tensor:
    r"""Data consistency in 3D k-space (Schlemper et al. 2017, "deep cascade" DC layer).

    Parameters
    ----------
    x : complex (..., M, T, Y, X)
        Current image estimate (e.g. a network's output).
    k3 : complex (..., M, T, Ky, Kx)
        Measured 3D k-space, zeros off the mask (:func:`to_3d_data`).
    mask3 : bool (..., M, T, Ky, 1)
        3D sampling mask; broadcasts against ``k3``.
    noise_lambda : None, float or real Tensor
        None (or ``inf``): hard DC, sampled entries are replaced by ``k3``.  ``λ >= 0``: the
        noise-weighted variant, sampled entries become :math:`(k + λ k_3) / (1 + λ)` with
        ``k = fft3(x)``; ``λ = 0`` leaves ``x`` unchanged.  A tensor (e.g. a learnable
        ``nn.Parameter``, shape () or broadcastable to ``k3``) receives gradients.

    Returns
    -------
    complex (..., M, T, Y, X)
        ``ifft3(mask3 * k_dc + (1 - mask3) * fft3(x))``.
    """
    # fft3 = P F Q and ifft3 = P F^-1 Q, with F the orthonormal unshifted FFT over (slice, y, x)
    # and Q, P = ifftshift, fftshift over (y, x).  The inner P and Q cancel (Q P = I) when the
    # blend is done on shifted data: ifft3(where(m, k3, fft3 x)) = P F^-1 where(Q m, Q k3, F Q x),
    # which is the same math with one 3D FFT each way and two shifts of x instead of four.
    k = torch.fft.fftn(torch.fft.ifftshift(x, dim=_DIMS), dim=(_SLICE, -2, -1), norm="ortho")
    k3 = torch.fft.ifftshift(k3, dim=_DIMS)
    mask3 = torch.fft.ifftshift(mask3.to(torch.bool), dim=_DIMS)  # a size-1 Kx axis stays as it is
    if noise_lambda is None or (not isinstance(noise_lambda, Tensor) and math.isinf(noise_lambda)):
        sampled = k3
    else:
        # k3 + (k - k3)/(1+λ) == (k + λ k3)/(1+λ), written so that a tensor λ = inf gives k3 exactly
        sampled = k3 + (k - k3) / (1 + noise_lambda)
    out = torch.fft.ifftn(torch.where(mask3, sampled, k), dim=(_SLICE, -2, -1), norm="ortho")
    return torch.fft.fftshift(out, dim=_DIMS)


# --- the full acquisition operator ------------------------------------------------------------


class SmsOperator:
    r"""The SMS acquisition of one batch as a linear operator with adjoint.

    .. math:: A x = P \cdot \mathrm{collapse}_{k_z}(\mathrm{fft2c}\, x)

    ``x`` complex (..., M, T, Y, X) -> ``y`` complex (..., T, Ky, Kx), with ``P`` the in-plane row
    mask and ``kz`` the kz of every row.  Equals :class:`synth.physics.sms.SmsForward` with the coil axis
    as the leading dim.

    Parameters
    ----------
    row_mask : bool (..., T, Ky), or None for every row
        Broadcast against the data's leading dims (e.g. (B, T, Ky), or (B, 1, T, Ky) for
        (B, C, M, T, Y, X) images).
    m : int
        M, slices per excitation.
    kz : integer (..., T, Ky), or None for ``n mod M``
        The kz of every row (the store's ``kz``); broadcast like ``row_mask``.
    """

    def __init__(self, row_mask: Tensor | None, m: int, kz: Tensor | None = None):
        if m < 1:
            raise ValueError(f"SmsOperator: m (slices per excitation) must be >= 1, got {m}")
        self.m = int(m)
        self.row_mask = None if row_mask is None else row_mask.to(torch.bool)[..., None]
        self.kz = None if kz is None else kz.long()

    def _mask(self, y: Tensor) -> Tensor:
        return y if self.row_mask is None else y * self.row_mask.to(y.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(..., M, T, Y, X) -> (..., T, Ky, Kx)."""
        if x.shape[_SLICE] != self.m:
            raise ValueError(f"SmsOperator: expected {self.m} slices at dim -4, got shape {tuple(x.shape)}")
        k = fft2c(x).movedim(_SLICE, _SLICE_3)  # (..., T, M, Ky, Kx)
        return self._mask(collapse(k, self.kz))

    def adjoint(self, y: Tensor) -> Tensor:
        """(..., T, Ky, Kx) -> (..., M, T, Y, X)."""
        return ifft2c(expand(self._mask(y), self.m, self.kz).movedim(_SLICE_3, _SLICE))

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    __call__ = forward

    def __repr__(self) -> str:
        mask = None if self.row_mask is None else tuple(self.row_mask.shape[:-1])
        kz = None if self.kz is None else tuple(self.kz.shape)
        return f"SmsOperator(m={self.m}, row_mask={mask}, kz={kz})"


# --- network boundary -------------------------------------------------------------------------


def complex_to_channels(x: Tensor, dim: int) -> Tensor:
    """Complex (...) -> real with a new size-2 (real, imag) dim at position ``dim`` of the output.

    E.g. ``(B, M, T, Y, X)`` with ``dim=1`` -> ``(B, 2, M, T, Y, X)``.  complex64 -> float32.
    """
    return torch.view_as_real(x).movedim(-1, dim)


def channels_to_complex(x: Tensor, dim: int) -> Tensor:
    """Inverse of :func:`complex_to_channels`: removes the size-2 dim ``dim``."""
    if x.shape[dim] != 2:
        raise ValueError(f"channels_to_complex: dim {dim} must have size 2 (real, imag), got shape {tuple(x.shape)}")
    return torch.view_as_complex(x.movedim(dim, -1).contiguous())
