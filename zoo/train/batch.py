r"""What happens to a batch between the store and the model in training: the readout crop,
folding the coil axis into the batch, and the magnitude compared with ``target``.  The input
normalisation before the model (:func:`zoo.data.normalize_batch`) is the data layer's: the
weights' metadata records it (:class:`zoo.checkpoint.Normalization`).

Crop (``crop``)
---------------
CPU training can use a random readout window of ``crop`` columns (x, the store's fully sampled
``Kx`` direction) per example and step.  Cropping x commutes with everything the acquisition
does in (kz, ky) -- masks, CAIPI and the in-plane undersampling act on rows only -- so the
cropped example is an exact example of the same forward model: ``x0``, ``truth`` and ``target``
are cropped in image space and ``k3 = mask3 * fft3(x0_cropped)`` is recomputed (equal to
applying the 1D inverse FFT over kx to the measured data, cropping, and transforming back, so
noise stays noise of the same sigma).  Cropping y is **not** offered: the phase-encoding grid,
the CAIPI shift (a fraction of the y FOV) and the row mask are tied to the full Ky.  Validation
always uses whole images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from zoo import physics
from zoo.train.losses import rss


def crop_readout(batch: dict[str, Tensor], width: int, generator: torch.Generator) -> dict[str, Tensor]:
    """A random window of ``width`` readout columns per example, k-space recomputed exactly.

    ``x0``, ``truth``, ``target`` are cropped along x (last axis) at one offset per example drawn
    from ``generator``; ``k3 = mask3 * fft3(x0_cropped)`` (module doc: cropping x commutes with
    the acquisition, which acts on (kz, ky) only).  ``width >= X`` returns the batch unchanged.
    """
    nx = batch["x0"].shape[-1]
    if width >= nx:
        return batch
    b = batch["x0"].shape[0]
    starts = torch.randint(0, nx - width + 1, (b,), generator=generator).tolist()
    out = dict(batch)
    for key in ("x0", "truth", "target"):
        if key in batch:
            out[key] = torch.stack([batch[key][i, ..., s:s + width] for i, s in enumerate(starts)])
    mask3 = batch["mask3"]
    if out["x0"].ndim == 6:  # (B, C, M, T, Y, X): the mask (B, M, T, Ky, 1) broadcasts over C
        mask3 = mask3[:, None]
    out["k3"] = physics.fft3(out["x0"]) * mask3.to(out["x0"].dtype)
    return out


def fold_coils(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, int]:
    """Model inputs with a coil axis folded into B: ``(x0, k3, mask3, K)``.

    ``x0``/``k3`` (B, K, M, T, Y, X) (``compressed`` or ``per-coil``) become (B*K, M, T, Y, X) and
    ``mask3`` (B, M, T, Ky, 1) is repeated per coil: the models reconstruct each (virtual) coil
    as its own example, with shared weights.  ``virtual`` batches (5-D) pass through with K = 1.
    Undo on the model's output with ``out.unflatten(0, (-1, K))`` (only for 6-D inputs).
    """
    x0, k3, mask3 = batch["x0"], batch["k3"], batch["mask3"]
    if x0.ndim == 6:
        c = x0.shape[1]
        return x0.flatten(0, 1), k3.flatten(0, 1), mask3.repeat_interleave(c, dim=0), c
    return x0, k3, mask3, 1


def rss_magnitude(x: Tensor) -> Tensor:
    """The magnitude compared with ``target``: ``|x|`` of (B, M, T, Y, X), or the
    root-sum-of-squares over the coils of (B, K, M, T, Y, X) (:func:`zoo.train.losses.rss`)."""
    return rss(x, x.ndim == 6)


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Every tensor of ``batch`` on ``device`` (asynchronously from pinned memory on CUDA)."""
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


def step_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """The generator of a step's crops: seeded from (seed, epoch, step, rank), so a resumed run
    draws the same windows."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, np.uint64)[0] >> 1))
    return g

