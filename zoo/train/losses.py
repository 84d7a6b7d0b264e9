r"""The training loss: weighted MSE + (1 - SSIM) + temporal total variation.

.. math::

    \mathcal{L} = w_\mathrm{mse}\,\mathrm{MSE} + w_\mathrm{ssim}\,(1 - \mathrm{SSIM})
                + w_\mathrm{tv}\,\mathrm{TV}_t

averaged over the batch.  Every term is computed on the **magnitude** of the prediction and
compares it with ``target``, the store's magnitude image (the image that came from the DICOM;
:mod:`zoo.data`, "The truth is the image"): for a prediction ``pred`` complex (B, M, T, Y, X)
(one coil) or (B, K, M, T, Y, X) (K coils, virtual or measured), the magnitude is
``mag = |pred|`` or the root-sum-of-squares over K (:func:`rss`), and ``target`` is float
(B, M, T, Y, X).  The coil images themselves (an item's complex ``truth``) are never the
reference: with fewer virtual coils than measured ones their RSS is shaded by the coil
compression, while ``target`` is not.

``MSE``
    ``mean (mag - target)^2`` over every element.
``SSIM``
    mean 2D SSIM of ``mag`` against ``target``, per frame, averaged over slices and frames
    (:func:`zoo.metrics.ssim_frames`: Gaussian window ``ssim_window`` with sigma 1.5,
    K = (0.01, 0.03)), with each example's data range ``L = max target`` (1 for a store's
    target).  The window is 7 by default (fastMRI's SSIM loss uses 7; it resolves finer
    structure than the metric's 11 and works on small crops).
``TV_t``
    temporal total variation of the magnitude, ``mean |∂_t mag|`` over (B, M, T-1, Y, X) with
    the forward difference ``∂_t`` (not cyclic: perfusion series are not periodic); 0 when
    T = 1.  A prior, not a comparison: it has a floor (the target's own TV) and is kept small.

Default weights (``w_mse = 1``, ``w_ssim = 0.02``, ``w_tv = 0.001``) balance the terms'
gradients, measured on the embedded cine phantom (``smssynth phantom`` -> ``dicom2kspace
--sms 2 --accel 2 --acs 8``, virtual coil, example 0) as the ratio of each term's gradient norm
(weight 1) to the MSE's -- measured when the MSE was still the complex MSE against the
virtual-coil images (before the loss compared magnitudes with ``target``), not re-measured since:

======================== ======== ========= =======
prediction               MSE      1 - SSIM  TV_t
======================== ======== ========= =======
zero-filled              1        47        7.3
truth + 0.3 (x0 - truth) 1        178       24
truth + 0.1 (x0 - truth) 1        789       71
======================== ======== ========= =======

SSIM's gradient is ~1 / (2 sigma_local^2) times the MSE's per pixel, huge on flat regions, and
grows relative to it as the error shrinks; ``w_ssim = 0.02`` makes the two equal at the
zero-filled start, so structure takes over only as training converges.  The TV gradient does
not vanish at the truth (its floor is the truth's own TV, 0.0017 here): ``w_tv = 0.001``
keeps its pull below ~10 % of the MSE's near convergence, where it biases the optimum.
These are starting points, recorded in every checkpoint; tune them on validation data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from synth.errors import ConfigError
from zoo.metrics import ssim_frames

__all__ = ["LossConfig", "SmsLoss", "MSE_ON", "rss"]

MSE_ON = ("magnitude",)


@dataclass(frozen=True)
class LossConfig:
    """Weights and options of :class:`SmsLoss` (validated on construction; see the module doc).

    Attributes
    ----------
    w_mse : weight of the MSE term (>= 0).
    w_ssim : weight of ``1 - SSIM`` (>= 0).
    w_tv : weight of the temporal TV of ``|pred|`` (>= 0).
    ssim_window : odd side (>= 3) of the SSIM Gaussian window, sigma 1.5.
    on : what the MSE compares: ``magnitude`` (the RSS magnitude vs ``target``), the only value.
        Kept so that configs naming it load; the former ``complex`` (an MSE against the coil
        images) is refused with an explanation, because the coil images are not the truth.
    """

    w_mse: float = 1.0
    w_ssim: float = 0.02
    w_tv: float = 0.001
    ssim_window: int = 7
    on: str = "magnitude"

    def __post_init__(self):
        for key in ("w_mse", "w_ssim", "w_tv"):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"LossConfig: {key} must be a finite number >= 0, got {v!r}")
        if self.w_mse + self.w_ssim + self.w_tv <= 0:
            raise ConfigError("LossConfig: all weights are 0; set at least one of w_mse, w_ssim, w_tv > 0")
        w = self.ssim_window
        if not (isinstance(w, int) and not isinstance(w, bool) and w >= 3 and w % 2 == 1):
            raise ConfigError(f"LossConfig: ssim_window must be an odd integer >= 3, got {w!r}")
        if self.on == "complex":
            raise ConfigError(
                "LossConfig: on='complex' (an MSE against the complex coil images) is no longer offered: every "
                "loss term compares the RSS magnitude of the reconstruction with the store's target, the image "
                "from the DICOM (zoo.data, 'The truth is the image'); set on: magnitude or drop the key (a run "
                "trained with it cannot be resumed: fine-tune from its checkpoint instead)"
            )
        if self.on not in MSE_ON:
            raise ConfigError(f"LossConfig: on must be one of {MSE_ON}, got {self.on!r}")

    def to_dict(self) -> dict:
        """JSON-serialisable dict (for checkpoints); ``LossConfig(**d)`` rebuilds it."""
        return asdict(self)


def rss(pred: Tensor, coil_axis: bool) -> Tensor:
    """The magnitude compared with ``target``: ``|pred|``, or the root-sum-of-squares over the
    coil axis 1 when ``coil_axis`` (differentiable; the same as :func:`zoo.train.rss_magnitude`)."""
    return torch.linalg.vector_norm(pred, dim=1) if coil_axis else pred.abs()


class SmsLoss(nn.Module):
    """``w_mse MSE + w_ssim (1 - SSIM) + w_tv TV_t`` on the RSS magnitude (see the module doc).

    ``forward(pred, target) -> (loss, terms)``

    Parameters
    ----------
    pred : complex (B, M, T, Y, X) or (B, K, M, T, Y, X)
        Reconstruction, one image per (virtual) coil.
    target : float (B, M, T, Y, X)
        The store's magnitude image (max 1 per example for store data, before normalisation).

    Returns
    -------
    loss : real scalar tensor, differentiable.
    terms : dict of Python floats ``mse``, ``ssim`` (the SSIM itself, not 1 - SSIM), ``tv``
        and ``loss``, for logging (terms of weight 0 are still computed and reported).
    """

    def __init__(self, config: LossConfig = LossConfig()):
        super().__init__()
        if not isinstance(config, LossConfig):
            raise ConfigError(f"SmsLoss takes a LossConfig, got {type(config).__name__}")
        self.config = config

    def forward(self, pred: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
        cfg = self.config
        if target.ndim != 5 or target.is_complex():
            raise ValueError(f"target must be the real magnitude (B, M, T, Y, X), got "
                             f"{'complex ' if target.is_complex() else ''}shape {tuple(target.shape)}")
        coil_axis = pred.ndim == 6
        lead_ok = pred.ndim in (5, 6) and pred.shape[0] == target.shape[0]
        if not lead_ok or pred.shape[coil_axis + 1:] != target.shape[1:]:
            raise ValueError(
                f"pred {tuple(pred.shape)} does not match target {tuple(target.shape)}: expected "
                f"(B, M, T, Y, X) or (B, K, M, T, Y, X) with the target's B, M, T, Y, X"
            )
        target = target.to(pred.real.dtype)
        mag = rss(pred, coil_axis)

        mse = (mag - target).square().mean()
        data_range = target.detach().amax(dim=(1, 2, 3, 4))
        ssim = ssim_frames(mag, target, data_range, win_size=cfg.ssim_window).mean()
        tv = torch.diff(mag, dim=-3).abs().mean() if mag.shape[-3] > 1 else mag.new_zeros(())

        loss = cfg.w_mse * mse + cfg.w_ssim * (1 - ssim) + cfg.w_tv * tv
        values = torch.stack([mse, ssim, tv, loss]).detach().tolist()  # one device sync, not four
        terms = dict(zip(("mse", "ssim", "tv", "loss"), values))
        return loss, terms
