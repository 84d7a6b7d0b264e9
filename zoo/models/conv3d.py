r"""Baseline ``conv3d``: CRNN-MRI with 3D convolutions over (slice, y, x), DC in 3D k-space.

Instead of sharing a 2D network across the SMS slices, this baseline treats the slice axis as a
third spatial axis: every convolution of the CRNN block is a ``Conv3d`` over (M, Y, X).  Along M
it is padded with zeros (``slice_padding="zeros"``, the default: with M = 1 only the kernel's
centre plane acts) or by wrapping the slices around (``"circular"``).

Why ``circular`` exists: with M = 2 and zero padding, a 3x3x3 kernel sees slice 0's partner
through its last plane and slice 1's through its first, and one plane always meets zeros, so
each outer plane learns from half the data and, at initialisation, a third of every kernel
multiplies zeros (the layer's output variance shrinks by a third per convolution).  Wrapped,
every plane sees a real slice for every output, and the network is equivariant to a cyclic
shift of the slices -- as the SMS model is: the slice axis is the one the periodic kz DFT acts
on (:mod:`zoo.physics`).  Any M >= 1 works either way.  Measured, it did not make ``conv3d``
learn faster: on the Table 1 ``cpu`` cine training data (16 filters, the same seed and draws),
its training loss over steps 1,400-1,600 was 0.213 wrapped against 0.185 zero padded (0.150
for ``independent``, 0.064 for ``sms-crnn``), so the experiment keeps zero padding.  Time
is handled exactly as in CRNN-MRI, by the bidirectional recurrence over frames of the BCRNN
layer — not by folding time into a fourth convolution axis.  Data consistency is the same
3D-k-space DC as ``sms-crnn``.

How it runs.  The parameters are ``Conv3d`` kernels (C_out, C_in, k, k, k), but a convolution
over (M, Y, X) with M slices is exactly a 2D convolution over (Y, X) from the M slices stacked
along channels to the same, with a block-Toeplitz kernel (block-circulant when the slice axis is
wrapped; :func:`stacked_kernel`).  The block runs that way, on the 2D path of
:class:`~zoo.models.crnn.CRNNBlock`: fewer multiplications for M = 2 (36 against 54 per output
pixel pair and channel pair) and the faster 2D kernels; a training step at the Table 1 ``cpu``
scale measured 1.73x faster (``benchmarks/bench_zoo.py --sections conv3d-stacked``).  The
checkpoints and the math are unchanged (``tests/zoo/test_models.py`` checks outputs, states and
gradients against the ``Conv3d`` block).

The 2D+time convolution before DC (``n_conv3d_layers``).  ``sms-crnn`` adds to CRNN-MRI a
residual convolution over (T, Y, X) of every slice before DC (:class:`~zoo.models.crnn.
SpatioTemporalConv`); ``n_conv3d_layers >= 1`` gives this baseline the same one, applied to each
slice of the volume, so that it differs from ``sms-crnn`` only in how the CRNN sees the slices
(as ``independent`` differs only in its missing DC).  0 leaves it out: the default, for the
checkpoints made before the option.  Why it matters: at the Table 1 ``cpu`` scale, ``sms-crnn``
without it learns as slowly as ``conv3d`` without it and loses 3.46 dB on the test patient
(README), so without it the comparison of the two mixes how the slices are seen with the
presence of that convolution.  The Table 1 experiment uses 1 (``Scale.conv3d_st_layers``).

Parameters at ``n_filters=64``, 3x3x3 kernels: 892,226 (about three times the 2D CRNN's);
at ``n_filters=16``: 57,170 (+ 110 with ``n_conv3d_layers=1`` and one coil, 1,736 with 4 coils
as channels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from zoo.models import register_model
from zoo.models.crnn import (CRNNBlock, CRNNConfig, DataConsistency, SpatioTemporalConv, _need, _need_int,
                             channels_to_coils, check_dc_config, coils_to_channels)
from zoo.physics import channels_to_complex, complex_to_channels

SLICE_PADDING = ("zeros", "circular")


@dataclass(frozen=True)
class Conv3dConfig(CRNNConfig):
    """Configuration of the ``conv3d`` baseline (defaults: the paper's sizes).

    Attributes
    ----------
    n_filters, n_iterations, kernel_size, n_crnn_layers : see :class:`~zoo.models.crnn.CRNNConfig`;
        ``kernel_size`` applies to all three axes (M, Y, X).
    dc_noise_lambda, learn_lambda : see :class:`~zoo.models.sms_crnn.SmsCrnnConfig`.
    slice_padding : ``"zeros"`` (the default, and every checkpoint made before this option) or
        ``"circular"``: how the convolutions pad the slice axis M (module docstring).
    n_conv3d_layers : depth of the residual 2D+time convolution applied to every slice before DC,
        as in :class:`~zoo.models.sms_crnn.SmsCrnnConfig`; 0 (the default, and every checkpoint
        made before this option) leaves it out (module docstring).
    """

    dc_noise_lambda: float | None = None
    learn_lambda: bool = False
    slice_padding: str = "zeros"
    n_conv3d_layers: int = 0

    def __post_init__(self):
        super().__post_init__()
        _need_int(self, "n_conv3d_layers")
        _need(self.n_conv3d_layers >= 0, "n_conv3d_layers", f"must be >= 0, got {self.n_conv3d_layers}")
        check_dc_config(self.dc_noise_lambda, self.learn_lambda)
        _need(self.slice_padding in SLICE_PADDING, "slice_padding",
              f"must be one of {', '.join(SLICE_PADDING)}, got {self.slice_padding!r}")


def slice_toeplitz(m: int, k: int, circular: bool) -> Tensor:
    """S (M, M, k): ``S[o, i, d] = 1`` where output slice ``o`` reads input slice ``i`` through kernel plane ``d``.

    A ``Conv3d`` (cross-correlation, padding ``k // 2``) over the slice axis reads slice
    ``o + d - k // 2``; zero padding drops the planes that fall outside ``0..M-1``, circular
    padding wraps them (several planes may then meet one slice, when ``k > M``).
    """
    p = k // 2
    s = torch.zeros(m, m, k)
    for o in range(m):
        for d in range(k):
            i = o + d - p
            if circular:
                s[o, i % m, d] += 1
            elif 0 <= i < m:
                s[o, i, d] = 1
    return s


def stacked_kernel(w3: Tensor, sel: Tensor) -> Tensor:
    """A Conv3d kernel (C_out, C_in, k_M, k, k) over (M, Y, X) as the Conv2d kernel (M*C_out, M*C_in, k, k)
    that acts on the M slices stacked along channels (slice-major: channel ``m * C + c``);
    ``sel`` from :func:`slice_toeplitz`.  Block ``(o, i)`` is the sum of the planes ``d`` that
    take output slice ``o`` to input slice ``i``: a block-Toeplitz (or block-circulant) kernel."""
    co, ci = w3.shape[:2]
    m = sel.shape[0]
    w = torch.einsum("oid,abdyx->oaibyx", sel.to(w3), w3)
    return w.reshape(m * co, m * ci, *w3.shape[3:])


@register_model("conv3d", Conv3dConfig)
class Conv3dCrnn(nn.Module):
    """CRNN over (M, Y, X) volumes with a recurrence over time.  ``forward(x0, k3, mask3) -> x``.

    Parameters
    ----------
    config : Conv3dConfig

    ``x0``, output: complex64 (B, M, T, Y, X); ``k3`` complex64 (B, Kz=M, T, Ky, Kx);
    ``mask3`` bool (B, Kz=M, T, Ky, 1).
    """

    def __init__(self, config: Conv3dConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else Conv3dConfig()
        self.crnn = CRNNBlock(config.n_filters, config.kernel_size, config.n_crnn_layers, ndim=3,
                              n_channels=2 * config.coil_channels, circular=config.slice_padding == "circular")
        ch = 2 * config.coil_channels
        self.st_conv = (
            SpatioTemporalConv(ch, config.n_filters, config.kernel_size, config.n_conv3d_layers)
            if config.n_conv3d_layers
            else None
        )
        self.dc = DataConsistency(config.dc_noise_lambda, config.learn_lambda)
        # the same block run as 2D convolutions over the slices stacked along channels (_stacked);
        # kept out of the module tree: its parameters are made from self.crnn's at every forward
        self.__dict__["_blocks2d"] = {}

    def _stacked(self, m: int) -> tuple[CRNNBlock, dict[str, Tensor]]:
        """The 2D CRNN block on M slices stacked along channels and its parameters, made from the 3D ones.

        A ``Conv3d`` over (M, Y, X) with M slices is, exactly, a ``Conv2d`` over (Y, X) from the M
        slices' stacked channels to the same (:func:`stacked_kernel`).  With M = 2 and 3x3x3
        kernels that is 4 * 9 = 36 multiplications per output pair of pixels and channel pair
        against 2 * 27 = 54 (the 3D kernel's outer planes meet the zero padding half the time),
        and it runs on the 2D path of :class:`~zoo.models.crnn.CRNNBlock` (time-major,
        channels-last, the hand-written recurrence), measured faster
        (``benchmarks/bench_zoo.py --sections conv3d-stacked``).  Same math: the parameters stay
        the 3D ones (checkpoints unchanged); ``tests/zoo/test_models.py`` checks the outputs
        and gradients against the ``Conv3d`` block.
        """
        cfg = self.config
        block = self._blocks2d.get(m)
        if block is None:
            block = CRNNBlock(m * cfg.n_filters, cfg.kernel_size, cfg.n_crnn_layers, ndim=2,
                              n_channels=m * 2 * cfg.coil_channels).requires_grad_(False)
            self._blocks2d[m] = block
        block.compute_dtype = self.crnn.compute_dtype  # the 3D block's (zoo.train.params.set_compute_dtype)
        circular = cfg.slice_padding == "circular"
        sel = slice_toeplitz(m, cfg.kernel_size, circular)
        params = {}
        for name, p in self.crnn.named_parameters():
            params[name] = stacked_kernel(p, sel) if p.dim() == 5 else p.repeat(m)
        return block, params

    def _per_slice(self, h: Tensor) -> Tensor:
        """The 2D+time convolution on every slice: real (B, T, C, M, Y, X) -> same."""
        b, m = h.shape[0], h.shape[3]
        s = self.st_conv(h.permute(0, 3, 1, 2, 4, 5).flatten(0, 1))  # (B*M, T, C, Y, X)
        return s.unflatten(0, (b, m)).permute(0, 2, 3, 1, 4, 5)

    def forward(self, x0: Tensor, k3: Tensor, mask3: Tensor) -> Tensor:
        x, state = x0, None
        k = self.config.coil_channels
        if k > 1 and x0.shape[0] % k:
            raise ValueError(f"a batch of {x0.shape[0]} coil images is not a whole number of {k}-coil examples")
        block, params = self._stacked(x0.shape[1])
        for _ in range(self.config.n_iterations):
            if k > 1:  # (B*K, M, T, Y, X) -> (B, T, 2K, M, Y, X): an example's coils as channels
                h = coils_to_channels(x.transpose(1, 2), k, channel_dim=2)
            else:
                # (B, M, T, Y, X) -> (B, T, 2, M, Y, X): time is the recurrence axis, (M, Y, X) spatial
                h = complex_to_channels(x.transpose(1, 2), dim=2)
            # (B, T, C, M, Y, X) -> (B, T, M*C, Y, X), slice-major, through the stacked 2D block
            m = h.shape[3]
            h = h.transpose(2, 3).flatten(2, 3)
            h, state = functional_call(block, params, (h, state))
            h = h.unflatten(2, (m, -1)).transpose(2, 3)
            if self.st_conv is not None:
                h = self._per_slice(h)
            if k > 1:
                x = channels_to_coils(h, k, channel_dim=2).transpose(1, 2)
            else:
                x = channels_to_complex(h, dim=2).transpose(1, 2)
            x = self.dc(x, k3, mask3)
        return x
