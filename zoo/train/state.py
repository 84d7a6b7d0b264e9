"""The resume state of a run, in safetensors + JSON (no pickle), and the run directory's small writers.

``PATH.state.safetensors`` holds the optimizer's tensors (flattened, ``optimizer.<param>.<key>``)
and the torch RNG states; ``PATH.state.json`` its scalars, param groups, the GradScaler's state,
the loop's progress record (epoch, step, batch in the epoch, best PSNR, the learning-rate
schedule, an early stop) and the SHA-256 of the safetensors file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zoo.errors import CheckpointError

STATE_SUFFIX = ".state"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, Tensor):
        return v.item()
    return v


def _state_paths(path: Path) -> tuple[Path, Path]:
    """``PATH.state.safetensors`` and ``PATH.state.json`` (appended: never ``with_suffix``)."""
    return Path(f"{path}{STATE_SUFFIX}.safetensors"), Path(f"{path}{STATE_SUFFIX}.json")


def save_state(path: Path, optimizer: torch.optim.Optimizer, scaler, progress: dict[str, Any]) -> None:
    """Write ``path.state.safetensors`` (optimizer tensors, RNG states) and ``path.state.json``."""
    from safetensors.torch import save_file

    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optimizer.{pid}.{k}"] = v.detach().to("cpu").contiguous()
            else:
                scalars[f"{pid}.{k}"] = _jsonable(v)
    st, js = _state_paths(path)
    tmp = st.with_name(st.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, st)
    meta = {
        "format": "smssynth.train-state",
        "version": 1,
        "optimizer": {"class": type(optimizer).__name__, "param_groups": _jsonable(sd["param_groups"]),
                      "scalars": scalars},
        "scaler": _jsonable(scaler.state_dict()) if scaler is not None and scaler.is_enabled() else None,
        "progress": progress,
        "sha256": _sha256(st),
    }
    write_json(js, meta)


def load_state(path: Path, optimizer: torch.optim.Optimizer, scaler) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote (SHA-256 checked); returns the progress record."""
    from safetensors.torch import load_file

    st, js = _state_paths(path)
    if not js.is_file() or not st.is_file():
        raise CheckpointError(f"{js}: no resume state; the run cannot be resumed "
                              f"(start a new run, or fine-tune from its checkpoint)")
    meta = json.loads(js.read_text())
    if _sha256(st) != meta.get("sha256"):
        raise CheckpointError(f"{st}: SHA-256 differs from {js}; the resume state is corrupt")
    tensors = load_file(str(st))
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optimizer."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["optimizer"]["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    groups = meta["optimizer"]["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{js}: optimizer state does not fit the model's trainable parameters ({e})") from None
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda_states = [tensors[k] for k in sorted(tensors, key=lambda s: (len(s), s)) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    return meta["progress"]


def write_json(path: Path, obj) -> None:
    """``obj`` as indented JSON, written whole (a temporary file renamed over ``path``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Copy a checkpoint pair (``.safetensors`` + ``.json``), each file replaced whole."""
    for suffix in (".safetensors", ".json"):
        s, d = Path(str(src) + suffix), Path(str(dst) + suffix)
        tmp = d.with_name(d.name + ".tmp")
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)

