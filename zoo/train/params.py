"""The parameters a run starts from and trains: the parent of a fine-tuning run, frozen
parameters, and the convolutions' mixed precision."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synth.errors import ConfigError
from zoo.data import NORM_QUANTILE
from zoo.errors import CheckpointError


def load_parent(source: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Starting point of a fine-tuning run: ``(model, parent)`` from a checkpoint path or registry name.

    The architecture and weights come from :func:`zoo.registry.load` (SHA-256 checked);
    ``parent`` = ``{"source", "name", "model", "sha256"}`` is recorded in the run's config and
    every checkpoint it writes (``name`` is the registry name, or the checkpoint's file stem).
    """
    from zoo.checkpoint import checkpoint_paths
    from zoo.registry import list_models as list_weights
    from zoo.registry import load as load_pretrained

    model, meta = load_pretrained(str(source), device=device)
    if model.normalization.quantile != NORM_QUANTILE:
        # the loop normalises with NORM_QUANTILE: fine-tuning would silently change the input scale
        raise CheckpointError(
            f"{source}: trained with input normalisation quantile {model.normalization.quantile:g} "
            f"(training.normalization), but fine-tuning normalises with {NORM_QUANTILE:g}; fine-tune it with the "
            f"smssynth version that trained it, or train a new model"
        )
    registered = isinstance(source, str) and source in list_weights()
    name = source if registered else checkpoint_paths(source)[0].name[: -len(".safetensors")]
    parent = {"source": str(source), "name": name, "model": meta["model"]["name"], "sha256": meta["sha256"],
              "registry": registered}
    return model, parent


def freeze_parameters(model: nn.Module, patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Set ``requires_grad = False`` on parameters whose names match any glob pattern; return them.

    Every pattern must match at least one parameter (ConfigError listing the names otherwise),
    and at least one parameter must stay trainable.
    """
    names = [n for n, _ in model.named_parameters()]
    frozen = []
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ConfigError(f"--freeze {pat!r} matches no parameter of the model; its parameters: {shown}")
        frozen += hits
    frozen = sorted(set(frozen), key=names.index)
    for n, p in model.named_parameters():
        if n in frozen:
            p.requires_grad_(False)
    if frozen and len(frozen) == len(names):
        raise ConfigError(f"--freeze {list(patterns)} freezes every parameter; nothing would be trained")
    return frozen


def amp_convs(model: nn.Module, dtype: torch.dtype = torch.float16) -> None:
    """Run the convolutions under CUDA autocast and hand float32 back (:mod:`zoo.train`, "Mixed precision")."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            inner = m.forward

            def forward(*args, _inner=inner, **kwargs):
                with torch.autocast("cuda", dtype=dtype):
                    out = _inner(*args, **kwargs)
                return out.float()

            m.forward = forward


BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bfloat16 convolutions


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str] | None:
    """Which of :data:`BF16_FLAGS` this CPU has; None where the flags cannot be read (not Linux)."""
    try:
        flags = set(Path(cpuinfo).read_text().split())
    except OSError:
        return None
    return [f for f in BF16_FLAGS if f in flags]


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU computes bfloat16 convolutions natively (AMX or AVX512-BF16 in its flags).

    oneDNN emulates bfloat16 on other CPUs, where ``precision: bfloat16`` is slower than float32.
    None where the flags cannot be read (not Linux).
    """
    have = cpu_bf16_flags(cpuinfo)
    return None if have is None else bool(have)


def set_compute_dtype(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Run the CRNN blocks and 2D+time convolutions of ``model`` in ``dtype`` (None: as their input).

    Only the convolutions' activations and kernel copies change dtype: the parameters, their
    gradients and Adam's state stay float32, and the complex physics (FFTs, data consistency)
    stays complex64 (:mod:`zoo.train`, "Mixed precision").  ``torch.bfloat16`` is what
    ``precision: bfloat16`` sets for training.  Returns how many modules were set; 0 means the
    model has nothing this applies to.
    """
    n = 0
    for m in model.modules():
        if hasattr(m, "compute_dtype"):
            m.compute_dtype = dtype
            n += 1
    return n
