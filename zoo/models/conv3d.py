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
layer — not by folding time into a fourth convolution axis — so the two models differ only in
how they see the slices.  Data consistency is the same 3D-k-space DC as ``sms-crnn``; there is
no extra 2D+time convolution (its convolutions are already 3D).

Parameters at ``n_filters=64``, 3x3x3 kernels: 892,226 (about three times the 2D CRNN's);
at ``n_filters=16``: 57,170.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from zoo.models import register_model
from zoo.models.crnn import (CRNNBlock, CRNNConfig, DataConsistency, _need, channels_to_coils, check_dc_config,
                             coils_to_channels)
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
    """

    dc_noise_lambda: float | None = None
    learn_lambda: bool = False
    slice_padding: str = "zeros"

    def __post_init__(self):
        super().__post_init__()
        check_dc_config(self.dc_noise_lambda, self.learn_lambda)
        _need(self.slice_padding in SLICE_PADDING, "slice_padding",
              f"must be one of {', '.join(SLICE_PADDING)}, got {self.slice_padding!r}")


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
        self.dc = DataConsistency(config.dc_noise_lambda, config.learn_lambda)

    def forward(self, x0: Tensor, k3: Tensor, mask3: Tensor) -> Tensor:
        x, state = x0, None
        k = self.config.coil_channels
        if k > 1 and x0.shape[0] % k:
            raise ValueError(f"a batch of {x0.shape[0]} coil images is not a whole number of {k}-coil examples")
        for _ in range(self.config.n_iterations):
            if k > 1:  # (B*K, M, T, Y, X) -> (B, T, 2K, M, Y, X): an example's coils as channels
                h = coils_to_channels(x.transpose(1, 2), k, channel_dim=2)
                h, state = self.crnn(h, state)
                x = channels_to_coils(h, k, channel_dim=2).transpose(1, 2)
            else:
                # (B, M, T, Y, X) -> (B, T, 2, M, Y, X): time is the recurrence axis, (M, Y, X) spatial
                h = complex_to_channels(x.transpose(1, 2), dim=2)
                h, state = self.crnn(h, state)
                x = channels_to_complex(h, dim=2).transpose(1, 2)
            x = self.dc(x, k3, mask3)
        return x
