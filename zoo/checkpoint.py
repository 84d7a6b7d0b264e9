"""Checkpoints: safetensors weights + JSON metadata, verified on load, never unpickled.

A checkpoint is a pair of files with one stem::

    PATH.safetensors   the model's ``state_dict`` (safetensors: a JSON header + raw tensor bytes)
    PATH.json          metadata (below); ``PATH.json["sha256"]`` is the SHA-256 of PATH.safetensors

Metadata (``format_version`` 1.0; readers accept 1.x)::

    format          "smssynth-checkpoint"
    format_version  "1.0"
    model           {"name", "config", "n_parameters"}: build with zoo.models.build_model(name, config)
    training        what the trainer passes: epochs, steps, seconds, optimizer, lr, loss config, seed, device...,
                    and always ``normalization`` = ``{"kind", "quantile"}``: the input normalisation the
                    model was trained with (:class:`Normalization`; written by :func:`save_checkpoint`)
    data            the training data: store basename, store format and version, dims, params,
                    n_examples, split (see :func:`describe_store`)
    metrics         what the trainer passes (e.g. validation NMSE/PSNR/SSIM summaries)
    software        {"smssynth", "torch", "python", "safetensors"} versions
    sha256          hex SHA-256 of PATH.safetensors
    created         ISO 8601 time (UTC) of writing

The safetensors header metadata (str -> str) repeats ``format``, ``format_version``,
``model_name`` and ``model_config`` (JSON), so the weights file alone says what it holds, and
``tensors_sha256``: a SHA-256 over the tensors themselves (name, dtype, shape and bytes, in name
order).  The file's own hash cannot be inside the file; the tensor hash is what ties the
header to the payload, and :func:`load_checkpoint` checks it after decoding.

Input normalisation travels with the weights: the models expect their input divided by a
per-example scale (:func:`zoo.data.normalize_batch`), and the quantile that sets the scale is
part of what the weights mean.  :func:`save_checkpoint` records it in
``training.normalization``, :func:`load_checkpoint` returns it as ``model.normalization``, and
``zoo.eval.recon`` / ``zoo.eval.evaluate`` normalise with it.  A checkpoint without the record (written
before it existed) is read with :data:`LEGACY_NORM_QUANTILE`, the quantile every such
checkpoint was trained with.

Loading (:func:`load_checkpoint`) recomputes the file's SHA-256 and refuses a mismatch
(:class:`~zoo.errors.ChecksumError`), builds the architecture from the metadata (so weights and
code cannot drift: torchvision's ``WeightsEnum`` builder, STYLE practice 6), and loads the
tensors strictly with ``safetensors.torch.load_file``.  Nothing is ever unpickled:
``torch.load`` is not used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from synth.errors import ConfigError
from zoo.errors import CheckpointError, ChecksumError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LEGACY_NORM_QUANTILE",
    "NORMALIZATION_KIND",
    "Normalization",
    "REQUIRED_KEYS",
    "checkpoint_paths",
    "describe_store",
    "load_checkpoint",
    "n_parameters",
    "read_metadata",
    "save_checkpoint",
    "sha256_file",
    "tensors_sha256",
]

FORMAT = "smssynth-checkpoint"
FORMAT_VERSION = "1.0"
SUPPORTED_MAJOR = 1
REQUIRED_KEYS = ("format", "format_version", "model", "training", "data", "metrics", "software", "sha256", "created")
MODEL_KEYS = ("name", "config", "n_parameters")
_SUFFIX = ".safetensors"
_CHUNK = 1 << 20
NORMALIZATION_KIND = "quantile of |x0| per example"
LEGACY_NORM_QUANTILE = 0.99
"""The quantile of checkpoints that record no normalisation: every one was trained with it (a fixed
historical fact, unlike :data:`zoo.train.NORM_QUANTILE`, the default of new training runs)."""


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The input normalisation a model was trained with, and must be fed with.

    Each example (``x0``, ``k3``) is divided by ``s = quantile(|x0|, quantile)`` over all its
    axes before the model and the output multiplied by ``s`` after
    (:func:`zoo.data.normalize_batch`, :func:`zoo.data.denormalize`).

    Attributes
    ----------
    quantile : in (0, 1].
    kind : :data:`NORMALIZATION_KIND` (the only kind so far; recorded so a new one is not misread).
    """

    quantile: float = LEGACY_NORM_QUANTILE
    kind: str = NORMALIZATION_KIND

    def __post_init__(self):
        q = self.quantile
        if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0 < float(q) <= 1:
            raise ConfigError(f"normalisation quantile must be a number in (0, 1], got {q!r}")
        if self.kind != NORMALIZATION_KIND:
            raise ConfigError(f"normalisation kind {self.kind!r} is unknown; this smssynth knows "
                              f"{NORMALIZATION_KIND!r}")
        object.__setattr__(self, "quantile", float(q))

    def to_meta(self) -> dict[str, Any]:
        """The ``training.normalization`` record of a checkpoint."""
        return {"kind": self.kind, "quantile": self.quantile}

    @classmethod
    def from_meta(cls, meta: dict, *, source: str | Path = "checkpoint metadata") -> "Normalization":
        """The normalisation recorded in checkpoint metadata; :data:`LEGACY_NORM_QUANTILE` when absent.

        A record that is present but malformed (not an object, unknown kind, quantile outside
        (0, 1]) raises CheckpointError naming ``source``: guessing would reconstruct garbage.
        """
        training = meta.get("training") if isinstance(meta, dict) else None
        record = training.get("normalization") if isinstance(training, dict) else None
        if record is None:
            return cls()
        if not isinstance(record, dict):
            raise CheckpointError(f"{source}: training.normalization must be an object "
                                  f"{{'kind', 'quantile'}}, found {record!r}; restore the metadata file")
        try:
            return cls(quantile=record.get("quantile", LEGACY_NORM_QUANTILE),
                       kind=record.get("kind", NORMALIZATION_KIND))
        except ConfigError as e:
            raise CheckpointError(f"{source}: training.normalization is unusable ({e}); "
                                  f"this smssynth cannot feed the model as it was trained") from None

    def normalize(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``(normalised batch, scale)``: :func:`zoo.data.normalize_batch` with this quantile."""
        from zoo.data import normalize_batch

        return normalize_batch(batch, self.quantile)

    @staticmethod
    def denormalize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`normalize` on a model output (:func:`zoo.data.denormalize`)."""
        from zoo.data import denormalize

        return denormalize(x, scale)


# --- paths and hashes ---------------------------------------------------------------------------


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(PATH.safetensors, PATH.json)`` for a path given without suffix or with either suffix."""
    p = Path(path)
    name = p.name
    for suffix in (_SUFFIX, ".json"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    stem = p.with_name(name)
    # append, never with_suffix: a stem like "run.v2" must keep its dot
    return stem.with_name(name + _SUFFIX), stem.with_name(name + ".json")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over tensors' names, dtypes, shapes and bytes, in name order (device-independent)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        # a uint8 view gives the raw bytes of every dtype (bfloat16 and complex included)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def n_parameters(model: nn.Module) -> int:
    """Number of parameter scalars, trainable or frozen: ``meta["model"]["n_parameters"]``.

    Not ``zoo.models.count_parameters`` (trainable only): a model fine-tuned with frozen layers
    must record the count that the rebuilt architecture has.
    """
    return sum(p.numel() for p in model.parameters())


# --- JSON ---------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback for values trainers naturally pass (configs, paths, numbers)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, (torch.dtype, torch.device)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _dump_json(meta: dict) -> str:
    try:
        return json.dumps(meta, indent=2, sort_keys=False, default=_jsonable)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint metadata cannot be written as JSON ({e}); pass numbers, strings, lists, dicts, "
            f"dataclasses, paths or tensors in training/data/metrics"
        ) from None


def _write_atomic(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: no half-written file ever."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(pkg):
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "unknown"

    return {"smssynth": ver("smssynth"), "torch": torch.__version__, "python": platform.python_version(),
            "safetensors": ver("safetensors")}


# --- save ---------------------------------------------------------------------------------------


def _check_buildable(model: nn.Module, model_name: str, model_config: dict, state: dict) -> None:
    """Refuse at save time what load time could not rebuild (a wrong name or config)."""
    from zoo.models import build_model

    if getattr(model, "name", model_name) != model_name:
        raise CheckpointError(
            f"model_name {model_name!r} but the model is a registered {model.name!r}; pass {model.name!r}"
        )
    try:
        rebuilt = build_model(model_name, dict(model_config))
    except ConfigError as e:
        raise CheckpointError(f"model_name/model_config cannot rebuild the model: {e}") from None
    want = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    if want != have:
        diff = sorted(set(want.items()) ^ set(have.items()))[:6]
        raise CheckpointError(
            f"build_model({model_name!r}, model_config) has other weights than the model being saved "
            f"(first differences: {diff}); pass the config the model was built with "
            f"(zoo.models.model_config_dict(model))"
        )


def _normalization_record(given: Normalization | dict | None, in_training: Any) -> dict[str, Any]:
    def coerce(value, what):
        if isinstance(value, Normalization):
            return value
        if isinstance(value, dict):
            return Normalization.from_meta({"training": {"normalization": value}}, source=f"save_checkpoint: {what}")
        raise CheckpointError(f"save_checkpoint: {what} must be a Normalization or a {{'kind', 'quantile'}} dict, "
                              f"got {value!r}")

    norms = [coerce(v, what) for v, what in ((given, "normalization"), (in_training, "training['normalization']"))
             if v is not None]
    if len(norms) == 2 and norms[0] != norms[1]:
        raise CheckpointError(f"save_checkpoint: normalization={norms[0].to_meta()} and "
                              f"training['normalization']={norms[1].to_meta()} disagree; pass one")
    if not norms:
        from zoo.data import NORM_QUANTILE  # normalize_batch's default: what a caller that set none used

        norms = [Normalization(NORM_QUANTILE)]
    return norms[0].to_meta()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_config: dict,
    training: dict,
    data: dict,
    metrics: dict,
    normalization: Normalization | dict | None = None,
) -> Path:
    """Write ``PATH.safetensors`` and ``PATH.json``; return the ``.safetensors`` path.

    Parameters
    ----------
    path : the checkpoint's path without suffix, or ending in ``.safetensors``; the folder is created.
    model : the module; its ``state_dict`` (parameters and persistent buffers) is saved, on CPU.
    model_name, model_config : the registered architecture and its config dict
        (:func:`zoo.models.model_config_dict`); checked here to rebuild the model's exact weights.
    training, data, metrics : JSON-able dicts stored verbatim (dataclasses, paths, numpy and
        tensor values are converted); see the module doc for the expected content.
    normalization : the input normalisation the model was trained with (:class:`Normalization`
        or its ``{"kind", "quantile"}`` record), stored as ``training["normalization"]``; it may
        instead already be in ``training`` (both given must agree).  Neither: the default of
        :func:`zoo.data.normalize_batch` (:data:`zoo.train.NORM_QUANTILE`), recorded explicitly
        so that every new checkpoint says how to feed it.

    Each file is written to a temporary name and renamed, weights first: an interrupted save
    leaves the previous checkpoint or a pair whose hash check fails, never a silent mix.
    """
    for key, value in (("model_config", model_config), ("training", training), ("data", data), ("metrics", metrics)):
        if not isinstance(value, dict):
            raise CheckpointError(f"save_checkpoint: {key} must be a dict, got {type(value).__name__}")
    training = {**training, "normalization": _normalization_record(normalization, training.get("normalization"))}
    st_path, json_path = checkpoint_paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _check_buildable(model, model_name, model_config, state)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_config": json.dumps(model_config, sort_keys=True, default=_jsonable),
        "tensors_sha256": tensors_sha256(state),
    }
    _write_atomic(st_path, lambda tmp: save_file(state, tmp, metadata=header))

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "config": model_config, "n_parameters": n_parameters(model)},
        "training": training,
        "data": data,
        "metrics": metrics,
        "software": _software(),
        "sha256": sha256_file(st_path),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    text = _dump_json(meta) + "\n"
    _write_atomic(json_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return st_path


def describe_store(store_path: str | Path, *, split: str | None = None, n_examples: int | None = None,
                   **extra: Any) -> dict[str, Any]:
    """The ``data`` entry of a checkpoint for a model trained on an smssynth store.

    Reads the store's documented attributes only (``docs/store-format.md``): ``store`` (the
    path's basename: full paths may name people or sites), ``format``, ``format_version``,
    ``kind``, ``dims``, ``params``, the phase and coil ``models``, plus ``split`` and ``n_examples`` (the examples actually used; default
    the store's complete examples, of ``split`` when given) and any ``extra`` items (e.g.
    ``data_config``).
    """
    from synth.dataset.store import Store

    st = Store.open(store_path)
    attrs = st.attrs
    if n_examples is None:
        done = st.complete()
        if split is None:
            n_examples = int(done.sum())
        else:
            examples = attrs.get("examples", [])
            n_examples = sum(1 for j, e in enumerate(examples)
                             if e.get("split") == split and done[int(e.get("index", j))])
    out = {
        "store": Path(str(store_path).rstrip("/")).name,
        "format": attrs.get("format"),
        "format_version": attrs.get("format_version"),
        "kind": st.kind,
        "dims": st.dims,
        "params": st.params,
        # the phase and coil models behind the data (and, on the fly, behind every fresh draw)
        "models": attrs.get("models"),
        "split": split,
        "n_examples": int(n_examples),
    }
    out.update(extra)
    return out


# --- read and load ------------------------------------------------------------------------------


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a checkpoint (path with or without suffix), validated for its keys.

    Raises CheckpointError, naming the file and what to do, when the JSON is missing, garbled,
    of another format or major version, or lacks a required key.
    """
    st_path, json_path = checkpoint_paths(path)
    fix = f"a checkpoint is {st_path.name} + {json_path.name} as written by zoo.checkpoint.save_checkpoint"
    try:
        text = json_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{json_path}: metadata file missing; {fix} (copy both files together)") from None
    except OSError as e:
        raise CheckpointError(f"{json_path}: cannot read the metadata ({e})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{json_path}: metadata is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); "
            f"the file is corrupt: restore it from the source of the checkpoint, or re-save the checkpoint"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{json_path}: metadata must be a JSON object, found {type(meta).__name__}; {fix}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: format {meta.get('format')!r}, expected {FORMAT!r}; {fix}")
    version = str(meta.get("format_version", ""))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        raise CheckpointError(f"{json_path}: unreadable format_version {version!r}; {fix}") from None
    if major != SUPPORTED_MAJOR:
        raise CheckpointError(
            f"{json_path}: checkpoint format version {version}, this smssynth reads {SUPPORTED_MAJOR}.x; "
            f"upgrade smssynth"
        )
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    model = meta.get("model")
    if isinstance(model, dict):
        missing += [f"model.{k}" for k in MODEL_KEYS if k not in model]
    elif "model" not in missing:
        missing.append("model (must be an object)")
    if missing:
        raise CheckpointError(f"{json_path}: metadata lacks {missing}; {fix}")
    return meta


def _verify_hash(st_path: Path, expected: str, source: str) -> None:
    actual = sha256_file(st_path)
    if actual != str(expected).lower():
        raise ChecksumError(
            f"{st_path}: SHA-256 mismatch: expected {expected} ({source}), found {actual}. The file is "
            f"corrupt, truncated or not the one recorded; restore it (or download it again) and do not use it as is"
        )


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> tuple[nn.Module, dict]:
    """Verify and load a checkpoint: returns ``(model, metadata)``, the model in eval mode on ``device``.

    Steps: read the metadata (:func:`read_metadata`); recompute the ``.safetensors`` SHA-256 and
    compare it with ``expected_sha256`` (when given, e.g. by the weights registry) and with
    ``metadata["sha256"]`` -- a mismatch raises :class:`~zoo.errors.ChecksumError` naming the
    file and both hashes; build the architecture with ``zoo.models.build_model(name, config)``
    from the metadata; load the tensors with ``safetensors.torch.load_file`` and
    ``load_state_dict(strict=True)``; check the header's model name and tensor hash, that every
    weight is finite (NaN/Inf weights are refused, not loaded to reconstruct NaN) and the
    parameter count.  Any mismatch with the code raises :class:`~zoo.errors.CheckpointError`.

    The model carries ``model.normalization``, the :class:`Normalization` it was trained with
    (:data:`LEGACY_NORM_QUANTILE` for a checkpoint that records none); feed it through
    ``model.normalization.normalize(batch)``.  ``metadata`` is the JSON file's content, as written.
    """
    from zoo.models import build_model

    st_path, json_path = checkpoint_paths(path)
    meta = read_metadata(path)
    normalization = Normalization.from_meta(meta, source=json_path)
    if not st_path.is_file():
        raise CheckpointError(
            f"{st_path}: weights file missing beside its metadata; copy {st_path.name} together with {json_path.name}"
        )
    if expected_sha256 is not None:
        _verify_hash(st_path, expected_sha256, "expected by the caller")
    _verify_hash(st_path, meta["sha256"], f"recorded in {json_path.name}")

    name, config = meta["model"]["name"], meta["model"]["config"]
    try:
        model = build_model(name, config)
    except ConfigError as e:
        raise CheckpointError(
            f"{st_path}: this smssynth cannot build the checkpoint's architecture ({e}); "
            f"use the smssynth version that wrote it ({meta['software'].get('smssynth', '?')}) or a newer one"
        ) from None

    try:
        with safe_open(str(st_path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(st_path), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError for a malformed file
        raise CheckpointError(f"{st_path}: not a readable safetensors file ({e}); restore the file") from None
    if header.get("model_name", name) != name:
        raise CheckpointError(
            f"{st_path}: weights are of model {header['model_name']!r} but the metadata says {name!r}; "
            f"the .json belongs to another checkpoint"
        )
    if "tensors_sha256" in header and tensors_sha256(state) != header["tensors_sha256"]:
        raise ChecksumError(
            f"{st_path}: tensor hash mismatch: expected {header['tensors_sha256']} (file header), "
            f"found {tensors_sha256(state)}; the file is corrupt, restore it"
        )
    bad = [k for k, v in state.items() if v.is_floating_point() or v.is_complex()
           if not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{st_path}: {len(bad)} weight tensor(s) hold NaN or infinite values ({', '.join(sorted(bad)[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); the training diverged or the file was altered -- use an "
            f"earlier checkpoint (e.g. checkpoints/best) or retrain with a lower learning rate"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{st_path}: weights do not fit build_model({name!r}, config) of this smssynth: {e}"
        ) from None
    n = n_parameters(model)
    if n != meta["model"]["n_parameters"]:
        raise CheckpointError(
            f"{st_path}: the rebuilt model has {n} parameters, the metadata records "
            f"{meta['model']['n_parameters']}; the checkpoint and this smssynth's model code disagree"
        )
    # the loader hands the normalisation over with the model, so no caller has to know where it is recorded
    model.normalization = normalization
    return model.to(device).eval(), meta
