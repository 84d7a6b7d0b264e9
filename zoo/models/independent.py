r"""Baseline ``independent``: the SMS-CRNN body on each SMS slice image alone, without DC.

Each slice of the zero-filled (aliased) stack is treated as a separate dynamic example: the
same per-slice network as :mod:`zoo.models.sms_crnn` (CRNN block + 2D+time conv, weights shared
over slices and iterations), but **no data consistency**, so nothing couples the slices and the
measured k-space is never re-imposed.  It measures what the SMS-aware 3D-k-space DC brings.
``k3`` and ``mask3`` are accepted for a uniform signature and ignored.

Parameter count: the same as ``sms-crnn`` with hard DC (297,904 at ``n_filters=64``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from zoo.models import register_model
from zoo.models.crnn import CRNNBlock, CRNNConfig, SpatioTemporalConv, _need, _need_int
from zoo.models.sms_crnn import per_slice_crnn


@dataclass(frozen=True)
class IndependentConfig(CRNNConfig):
    """Configuration of the ``independent`` baseline (defaults: the paper's sizes).

    Attributes
    ----------
    n_filters, n_iterations, kernel_size, n_crnn_layers : see :class:`~zoo.models.crnn.CRNNConfig`.
    n_conv3d_layers : as in :class:`~zoo.models.sms_crnn.SmsCrnnConfig` (default 1, so that the
        only difference from ``sms-crnn`` is the missing data consistency; 0 gives CRNN-MRI's body).
    """

    n_conv3d_layers: int = 1

    def __post_init__(self):
        super().__post_init__()
        _need_int(self, "n_conv3d_layers")
        _need(self.n_conv3d_layers >= 0, "n_conv3d_layers", f"must be >= 0, got {self.n_conv3d_layers}")


@register_model("independent", IndependentConfig)
class Independent(nn.Module):
    """Per-slice CRNN without DC.  ``forward(x0, k3, mask3) -> x``, complex64 (B, M, T, Y, X).

    Parameters
    ----------
    config : IndependentConfig

    ``x0`` complex64 (B, M, T, Y, X), the zero-filled slice images; ``k3``, ``mask3`` ignored.
    """

    def __init__(self, config: IndependentConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else IndependentConfig()
        ch = 2 * config.coil_channels
        self.crnn = CRNNBlock(config.n_filters, config.kernel_size, config.n_crnn_layers, ndim=2, n_channels=ch)
        self.st_conv = (
            SpatioTemporalConv(ch, config.n_filters, config.kernel_size, config.n_conv3d_layers)
            if config.n_conv3d_layers
            else None
        )

    def forward(self, x0: Tensor, k3: Tensor | None = None, mask3: Tensor | None = None) -> Tensor:
        x, state = x0, None
        for _ in range(self.config.n_iterations):
            x, state = per_slice_crnn(self.crnn, self.st_conv, x, state, self.config.coil_channels)
        return x
