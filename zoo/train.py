r"""Training and fine-tuning of the zoo's models on an smssynth store.

One loop serves ``smssynth train`` (a new model), ``smssynth finetune`` (weights and architecture
from a checkpoint or a registry name, some parameters optionally frozen) and ``--resume``::

    store -> SmsDataset -> normalize_batch -> [crop_readout] -> fold coils -> model -> SmsLoss
                                                         \-> denormalize -> RSS -> NMSE/PSNR/SSIM

Both the loss and the metrics compare the root-sum-of-squares of the model's (virtual) coil
images with the store's ``target``, the magnitude image from the DICOM, in every coil mode
(:mod:`zoo.data`: ``virtual``, ``compressed`` to K coils, ``per-coil``).

Input normalisation (:func:`normalize_batch`, :func:`denormalize`)
------------------------------------------------------------------
The models do not normalise their input, and a ReLU network with biases is not scale
equivariant, so every example is divided by one positive scale before the model and the output
multiplied back: ``s = quantile(|x0|, 0.99)`` over all of the example's (C,) M, T, Y, X, with
``x0`` the zero-filled image.  ``x0``, ``k3``, ``truth`` and ``target`` are divided by the same
``s``; data consistency stays exact because ``k3`` and ``x0`` are scaled together and the
physics is linear.  The 99th percentile (not the max) ignores a few bright aliased pixels; it is
computed from the measured data only, so inference (``recon``, ``evaluate``) applies it the same
way.  The loss is computed on the normalised scale; metrics on the store's scale (after
:func:`denormalize`).

Validation split
----------------
If the store records per-example splits (``attrs["examples"][i]["split"]``, ``smssynth generate
--split``) and one is ``val``, the ``val`` examples validate and the ``train`` examples train
(all non-``val``, non-``test`` examples if there is no ``train`` split).  Otherwise a
deterministic held-out fraction ``val_fraction`` of the store (less any ``test`` split)
validates: whole patients (the pseudonymous ``sources[0]["patient"]`` key) are held out when the
store has at least two, so a patient's slices never reach both sides; patients (else examples) are
ordered by
``SHA-256(seed, key)`` and taken until at least ``ceil(val_fraction * N)`` examples are held out,
always leaving one group to train on.  ``val_fraction = 0`` (and no ``val`` split) trains
without validation (and writes no ``best`` checkpoint).

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

Run directory
-------------
``config.json`` (everything resolved), ``log.csv`` (one row per epoch: epoch, step, lr, the mean
train loss terms, val NMSE/PSNR/SSIM means, seconds), ``baseline.json`` (zero-filled metrics on
the same val examples), ``checkpoints/epoch-NNN``, ``last`` and ``best`` (by val PSNR), each a
:func:`zoo.checkpoint.save_checkpoint` pair (``.safetensors`` + ``.json``), and
``checkpoints/last.state.{safetensors,json}``, the resume state: the optimizer's tensors
(flattened, ``optimizer.<param>.<key>``) and the torch RNG states in safetensors, its scalars,
param groups, epoch, step, best PSNR and the state file's SHA-256 in JSON (no pickle); the step
is checked against the weights' metadata on resume.  With
``torch.utils.tensorboard`` importable, ``tensorboard/`` gets the same scalars per step.

Resume (:func:`resumed_run_config`): the run's ``config.json`` fixes everything except
:data:`RESUMABLE` (``epochs``, ``max_steps``, ``num_workers``, ``device``) and the store's path.

Determinism: shuffling is ``DistributedSampler(seed)`` with ``set_epoch`` (also for one process),
fresh masks and crops derive from (seed, epoch, step, rank), model initialisation from the seed
under ``torch.random.fork_rng``; a resumed run replays the remaining batches of its epoch, so on
CPU it ends with the same weights as an uninterrupted one.

Distributed (``torchrun``; :mod:`zoo.distributed`): DDP over ranks, each rank trains on its
``DistributedSampler`` shard and validates on its share of the val examples; losses and
metrics are gathered; rank 0 alone writes.  ``batch_size`` is per rank.

CPU: the small convolutions of these models scale poorly over threads, and on a CPU shared with
other jobs oversubscribed OpenMP threads spin: there ``OMP_NUM_THREADS=1`` was ~3-10x faster per
step than 2 threads on a 2-core box (torchrun sets it to 1 by default).

Mixed precision (``amp``, CUDA only): the convolutions -- nearly all the FLOPs -- run under
``torch.autocast(float16)`` with a ``GradScaler`` and return float32; the complex physics
(FFTs, data consistency) stays complex64, because cuFFT in half precision needs power-of-two
sizes and complex bfloat16 does not exist.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from synth.errors import ConfigError
from synth.splits import unit_hash
from synth.store import Store
from zoo import distributed as D
from zoo import physics
from zoo.checkpoint import Normalization, describe_store, load_checkpoint, save_checkpoint
from zoo.data import SmsDataset, DataConfig
from zoo.errors import CheckpointError
from zoo.losses import LossConfig, SmsLoss, rss
from zoo.metrics import nmse, psnr, ssim, summarize
from zoo.models import build_model, count_parameters, make_config, model_config_dict

__all__ = [
    "NORM_QUANTILE", "FitResult", "RunConfig", "TrainConfig", "crop_readout", "denormalize", "example_scale",
    "fold_coils", "rss_magnitude",
    "RESUMABLE", "evaluate_examples", "fit", "freeze_parameters", "load_parent", "load_state", "load_yaml_config",
    "normalize_batch", "resolve_run_config", "resumed_run_config", "save_state", "split_examples",
]

NORM_QUANTILE = 0.99
METRICS = ("nmse", "psnr", "ssim")
STATE_SUFFIX = ".state"
_IMAGE_KEYS = ("x0", "k3", "truth", "target")


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings (validated on construction).

    Attributes
    ----------
    epochs : passes over the training examples.
    lr, weight_decay : Adam's learning rate and (L2) weight decay.
    grad_clip : clip the global gradient norm to this value; None = no clipping.
    batch_size : examples per step and rank (with K coils each example brings K coil images).
    num_workers : DataLoader worker processes.
    val_fraction : held-out fraction when the store has no ``val`` split (module doc).
    crop : random readout (x) window in pixels for training, None = whole images (module doc).
    seed : root seed: model initialisation, shuffling, fresh masks, crops, the held-out split.
    max_steps : stop after this many optimizer steps in all (smoke runs); None = no limit.
    amp : float16 autocast of the convolutions with a GradScaler (CUDA only).
    device : ``cpu``, ``cuda``, ``cuda:N``; None = CUDA when available.
    freeze : glob patterns of parameter names to keep fixed (``cell.*``), matched with fnmatch.
    allow_incomplete : train on a store of which less than :data:`MIN_COMPLETE` of the examples
        are complete (an interrupted generation); otherwise refused.  Any incomplete example
        is reported with the count either way.
    """

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = None
    batch_size: int = 1
    num_workers: int = 0
    val_fraction: float = 0.1
    crop: int | None = None
    seed: int = 0
    max_steps: int | None = None
    amp: bool = False
    device: str | None = None
    freeze: tuple[str, ...] = ()
    allow_incomplete: bool = False

    def __post_init__(self):
        def need(cond, key, msg):
            if not cond:
                raise ConfigError(f"training option {key!r}: {msg}")

        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(is_int(self.epochs) and self.epochs >= 1, "epochs", f"must be an integer >= 1, got {self.epochs!r}")
        need(is_num(self.lr) and self.lr > 0, "lr", f"must be a number > 0, got {self.lr!r}")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
             f"must be a number >= 0, got {self.weight_decay!r}")
        need(self.grad_clip is None or (is_num(self.grad_clip) and self.grad_clip > 0), "grad_clip",
             f"must be None or a number > 0, got {self.grad_clip!r}")
        need(is_int(self.batch_size) and self.batch_size >= 1, "batch_size",
             f"must be an integer >= 1, got {self.batch_size!r}")
        need(is_int(self.num_workers) and self.num_workers >= 0, "num_workers",
             f"must be an integer >= 0, got {self.num_workers!r}")
        need(is_num(self.val_fraction) and 0 <= self.val_fraction < 1, "val_fraction",
             f"must be a number in [0, 1), got {self.val_fraction!r}")
        # 16: the loss's SSIM window (7) must fit, and narrower windows carry too little context
        need(self.crop is None or (is_int(self.crop) and self.crop >= 16), "crop",
             f"must be None or an integer >= 16 (pixels), got {self.crop!r}")
        need(is_int(self.seed) and self.seed >= 0, "seed", f"must be an integer >= 0, got {self.seed!r}")
        need(self.max_steps is None or (is_int(self.max_steps) and self.max_steps >= 1), "max_steps",
             f"must be None or an integer >= 1, got {self.max_steps!r}")
        need(isinstance(self.amp, bool), "amp", f"must be true or false, got {self.amp!r}")
        need(self.device is None or isinstance(self.device, str), "device", f"must be a string, got {self.device!r}")
        need(isinstance(self.freeze, tuple) and all(isinstance(p, str) and p for p in self.freeze), "freeze",
             f"must be a list of glob patterns, got {self.freeze!r}")
        need(isinstance(self.allow_incomplete, bool), "allow_incomplete",
             f"must be true or false, got {self.allow_incomplete!r}")


# where each TrainConfig field lives in the YAML file
_SECTIONS = {
    "optimizer": ("lr", "weight_decay", "grad_clip"),
    "data": ("batch_size", "num_workers", "val_fraction", "crop"),
    "train": ("epochs", "seed", "max_steps", "amp", "device", "freeze", "allow_incomplete"),
}
# DataConfig fields the YAML may set (split and seed are the loop's: the split selection and train.seed)
_DATA_KEYS = ("coil_mode", "coils", "mask", "accel", "acs", "mask_kind", "caipi", "synthesis")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, resolved; saved as ``config.json`` and in every checkpoint.

    ``parent`` is set by fine-tuning: ``{"source", "name", "sha256"}`` of the starting weights.
    """

    store: str
    model: str
    model_config: dict
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    train: TrainConfig = TrainConfig()
    command: str = "train"
    parent: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        t = dataclasses.asdict(self.train)
        t["freeze"] = list(t["freeze"])
        return {
            "command": self.command,
            "store": self.store,
            "model": {"name": self.model, "config": dict(self.model_config)},
            "loss": dataclasses.asdict(self.loss),
            "data": dataclasses.asdict(self.data),
            "train": t,
            "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        try:
            t = dict(d["train"])
            t["freeze"] = tuple(t.get("freeze", ()))
            return cls(store=d["store"], model=d["model"]["name"], model_config=dict(d["model"]["config"]),
                       data=DataConfig(**d["data"]), loss=LossConfig(**d["loss"]), train=TrainConfig(**t),
                       command=d.get("command", "train"), parent=d.get("parent"))
        except (KeyError, TypeError) as e:
            raise ConfigError(f"config.json: not a run configuration of this smssynth version ({e})") from None


def load_yaml_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a training config YAML; returns the validated sections ``model``, ``loss``, ``data``,
    ``optimizer``, ``train`` (missing ones empty).  Layout::

        model: {name: sms-crnn, config: {n_filters: 16, n_iterations: 5}}
        loss: {w_mse: 1.0, w_ssim: 0.1, w_tv: 0.001}          # zoo.losses.LossConfig
        optimizer: {lr: 1.0e-4, weight_decay: 0, grad_clip: null}
        data: {coil_mode: compressed, coils: 4, mask: stored, batch_size: 1, num_workers: 0, val_fraction: 0.1,
               crop: null}                                # coil modes: zoo.data
        # fresh masks (zoo.data, "Masks"): mask: fresh [mask_kind: vd (default), accel, acs, caipi: row|acquired]
        # fresh phase, coils, masks and noise every epoch (zoo.data): synthesis: on-the-fly
        train: {epochs: 10, seed: 0, max_steps: null, amp: false, device: null, freeze: []}

    Unknown sections or keys raise ConfigError naming the file and the key.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--config {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping with sections model, loss, data, optimizer, train")
    known = {
        "model": ("name", "config"),
        "loss": tuple(f.name for f in dataclasses.fields(LossConfig)),
        "data": _DATA_KEYS + _SECTIONS["data"],
        "optimizer": _SECTIONS["optimizer"],
        "train": _SECTIONS["train"],
    }
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"--config {path}: unknown section(s) {unknown}; known: {sorted(known)}")
    out = {}
    for section, keys in known.items():
        s = data.get(section) or {}
        if not isinstance(s, dict):
            raise ConfigError(f"--config {path}: section {section!r} must be a mapping, got {type(s).__name__}")
        bad = sorted(set(s) - set(keys))
        if bad:
            raise ConfigError(f"--config {path}: unknown key(s) {bad} in section {section!r}; known: {sorted(keys)}")
        out[section] = dict(s)
    if out["model"].get("config") is not None and not isinstance(out["model"]["config"], dict):
        raise ConfigError(f"--config {path}: model.config must be a mapping of model options")
    return out


def resolve_run_config(
    store: str,
    *,
    yaml_sections: dict[str, dict] | None = None,
    overrides: dict[str, Any] | None = None,
    model: str | None = None,
    model_config: dict | None = None,
    command: str = "train",
    parent: dict | None = None,
    source: str = "--config",
) -> RunConfig:
    """Resolve flags > YAML > defaults into a validated :class:`RunConfig`.

    ``overrides`` holds only the options given explicitly (flag names as TrainConfig/DataConfig
    field names: ``epochs``, ``lr``, ``coil_mode``, ``mask``...).  ``model``/``model_config``
    given here (fine-tuning: from the checkpoint) win over the YAML's ``model`` section, which
    is then refused if it names something else.
    """
    y = yaml_sections or {k: {} for k in ("model", "loss", "data", "optimizer", "train")}
    overrides = dict(overrides or {})
    ymodel = y.get("model", {})
    if model is None:
        name = overrides.pop("model", None) or ymodel.get("name")
        if not name:
            raise ConfigError("no model given: pass --model NAME or set model.name in --config")
        cfg = ymodel.get("config") or {}
        if ymodel.get("name") not in (None, name) and cfg:
            raise ConfigError(f"{source}: model.config is for {ymodel.get('name')!r}, but --model is {name!r}")
        model_config = model_config_dict_of(name, cfg)
    else:
        if ymodel:
            raise ConfigError(
                f"{source}: a 'model' section cannot change the architecture when fine-tuning "
                f"(it comes from the checkpoint); remove it"
            )
        name = model
        model_config = model_config_dict_of(name, model_config or {})

    tfields = {f.name for f in dataclasses.fields(TrainConfig)}
    t: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        t.update({k: v for k, v in y.get(section, {}).items() if k in keys})
    d = {k: v for k, v in y.get("data", {}).items() if k in _DATA_KEYS}
    if overrides.get("coil_mode") in ("virtual", "per-coil") and "coils" not in overrides:
        d.pop("coils", None)  # a flag choosing a mode without K overrides the YAML's K along with its mode
    for k, v in overrides.items():
        if k in tfields:
            t[k] = v
        elif k in _DATA_KEYS:
            d[k] = v
        else:
            raise ConfigError(f"unknown training option {k!r}")
    if "freeze" in t:
        t["freeze"] = tuple(t["freeze"] or ())
    train = TrainConfig(**t)
    data = DataConfig(**d, split=None, seed=int(train.seed))
    loss = LossConfig(**y.get("loss", {}))
    return RunConfig(store=str(store), model=name, model_config=model_config, data=data, loss=loss, train=train,
                     command=command, parent=parent)


_FLAG_NAMES = {"coils": "--virtual-coils"}  # config field -> command-line flag, where they differ
RESUMABLE = ("epochs", "max_steps", "num_workers", "device")
"""Options a resumed run may change; everything else is fixed by the run's ``config.json``."""


def resumed_run_config(run_dir: str | Path, command: str, given: dict[str, Any], store: str | None = None) -> RunConfig:
    """The configuration of the run in ``run_dir`` with ``given`` changes (only :data:`RESUMABLE`).

    ``given`` holds the options given explicitly (any other key -- ``lr``, ``config``, ``model``,
    ``from``, ``freeze``... -- is refused, named as its flag); ``store`` re-points the data (a moved
    store).  ConfigError for a folder without a run, or a run of another command.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--out {run_dir}: no run to resume (no config.json); start one without --resume")
    try:
        saved = RunConfig.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg}); the run cannot be resumed") from None
    if saved.command != command:
        raise ConfigError(f"--out {run_dir} is a '{saved.command}' run; resume it with `smssynth {saved.command}`")
    fixed = sorted(k for k in given if k not in RESUMABLE)
    if fixed:
        flags = ", ".join(_FLAG_NAMES.get(k, "--" + k.replace("_", "-")) for k in fixed)
        raise ConfigError(f"{flags} cannot change on --resume (the run's config.json fixes them); only "
                          f"{', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} and --data may")
    train = dataclasses.replace(saved.train, **{k: given[k] for k in RESUMABLE if k in given})
    return dataclasses.replace(saved, train=train, store=str(store) if store else saved.store)


def model_config_dict_of(name: str, config: dict) -> dict:
    """The full, validated config dict of model ``name`` with ``config``'s overrides."""
    return dataclasses.asdict(make_config(name, dict(config)))


# --- normalisation and crop -------------------------------------------------------------------


def example_scale(x0: Tensor, quantile: float = NORM_QUANTILE) -> Tensor:
    """Per-example scale ``quantile(|x0|)`` over every axis but the first: float32 (B,), > 0.

    ``kthvalue`` (not ``torch.quantile``, limited to 2**24 elements): the ``ceil(q n)``-th
    smallest magnitude.  An all-zero example gets scale 1.
    """
    mag = x0.detach().abs().flatten(1).float()
    k = max(1, min(mag.shape[1], math.ceil(quantile * mag.shape[1])))
    s = mag.kthvalue(k, dim=1).values
    fallback = mag.amax(dim=1)
    s = torch.where(s > 0, s, fallback)
    return torch.where(s > 0, s, torch.ones_like(s))


def normalize_batch(batch: dict[str, Tensor], quantile: float = NORM_QUANTILE) -> tuple[dict[str, Tensor], Tensor]:
    """Divide an example batch by its per-example scale (module doc).

    Parameters
    ----------
    batch : dict from :class:`zoo.data.SmsDataset` (batched): ``x0`` complex (B, [C,] M, T, Y, X)
        and any of ``k3``, ``truth`` (same leading dims), ``target`` float (B, M, T, Y, X); other
        keys (``mask3``, ``index``) pass through.
    quantile : of ``|x0|`` over all of an example's axes.

    Returns
    -------
    normalised : a new dict, ``x0``, ``k3``, ``truth``, ``target`` divided by the scale.
    scale : float32 (B,), on ``x0``'s device; undo with :func:`denormalize`.
    """
    scale = example_scale(batch["x0"], quantile)
    out = dict(batch)
    for key in _IMAGE_KEYS:
        if key in batch:
            out[key] = batch[key] / _bcast(scale, batch[key])
    return out, scale


def denormalize(x: Tensor, scale: Tensor) -> Tensor:
    """Undo :func:`normalize_batch`: ``x * scale`` per example; ``x`` (B, ...) with ``scale`` (B,)."""
    return x * _bcast(scale, x)


def _bcast(scale: Tensor, x: Tensor) -> Tensor:
    return scale.to(x.real.dtype if x.is_complex() else x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


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
    root-sum-of-squares over the coils of (B, K, M, T, Y, X) (:func:`zoo.losses.rss`)."""
    return rss(x, x.ndim == 6)


# --- splits -----------------------------------------------------------------------------------


def split_examples(
    store: Store, complete: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int], str]:
    """Store indices of the training and validation examples, and how they were chosen (module doc)."""
    examples = store.attrs.get("examples", [])
    prov = {int(e.get("index", j)): e for j, e in enumerate(examples)}
    splits = {i: prov.get(i, {}).get("split") for i in complete}
    if "val" in splits.values():
        val = [i for i in complete if splits[i] == "val"]
        if "train" in splits.values():
            train = [i for i in complete if splits[i] == "train"]
            how = "store split 'train' / 'val'"
        else:
            train = [i for i in complete if splits[i] not in ("val", "test")]
            how = "store split 'val'; every example not in 'val' or 'test' trains"
        if not train:
            raise ConfigError(
                f"{store.path}: every complete example is in the 'val' (or 'test') split; none to train on"
            )
        return train, val, how
    if "test" in splits.values():  # never train or validate on the test split
        complete = [i for i in complete if splits[i] != "test"]
        if not complete:
            raise ConfigError(f"{store.path}: every complete example is in the 'test' split; none to train on")
    if val_fraction == 0 or len(complete) < 2:
        return list(complete), [], "no validation (val_fraction 0, or a single example)"

    def patient(i):
        src = prov.get(i, {}).get("sources") or [{}]
        return src[0].get("patient")

    keys = {i: patient(i) for i in complete}
    by_patient = all(keys.values()) and len(set(keys.values())) >= 2
    groups: dict[str, list[int]] = {}
    for i in complete:
        groups.setdefault(keys[i] if by_patient else f"example-{i}", []).append(i)
    order = sorted(groups, key=lambda g: (unit_hash(seed, g), g))
    need = math.ceil(val_fraction * len(complete))
    val: list[int] = []
    for g in order[:-1]:  # the last group always trains
        if len(val) >= need:
            break
        val += groups[g]
    val_set = set(val)
    how = f"held out {len(val)} of {len(complete)} examples ({'by patient' if by_patient else 'by example'}, " \
          f"val_fraction {val_fraction:g}, seed {seed})"
    return [i for i in complete if i not in val_set], sorted(val), how


# --- parameters -------------------------------------------------------------------------------


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


def _amp_convs(model: nn.Module, dtype: torch.dtype = torch.float16) -> None:
    """Run the convolutions under CUDA autocast and hand float32 back (module doc)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            inner = m.forward

            def forward(*args, _inner=inner, **kwargs):
                with torch.autocast("cuda", dtype=dtype):
                    out = _inner(*args, **kwargs)
                return out.float()

            m.forward = forward


# --- resume state (safetensors + JSON, no pickle) ---------------------------------------------


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
    _write_json(js, meta)


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


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)


def _copy_checkpoint(src: Path, dst: Path) -> None:
    for suffix in (".safetensors", ".json"):
        s, d = Path(str(src) + suffix), Path(str(dst) + suffix)
        tmp = d.with_name(d.name + ".tmp")
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What :func:`fit` did (rank 0's view).

    ``history`` holds the log rows (dicts) of this run dir, resumed ones included; ``zero_filled``
    the zero-filled metrics on the val examples ({metric: {mean, sd, n}}), None without validation.
    """

    run_dir: Path
    epoch: int
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    zero_filled: dict[str, dict] | None = None
    split: str = ""
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0
    model: nn.Module | None = None
    rank: int = 0


class _Log:
    """``log.csv`` (rank 0): the header is fixed by the first row; resumed runs append."""

    def __init__(self, path: Path, keep_until_step: int | None):
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if keep_until_step is not None and path.is_file():
            with path.open(newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= keep_until_step]
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.rows:
            self.path.write_text("")
            return
        cols = list(self.rows[0])
        with self.path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            w.writerows(self.rows)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append({k: _fmt(v) for k, v in row.items()})  # strings, as read back on resume
        self._rewrite()


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional; log.csv has everything
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    nb = device.type == "cuda"
    return {k: v.to(device, non_blocking=nb) for k, v in batch.items()}


def _step_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, np.uint64)[0] >> 1))
    return g


@torch.no_grad()
def evaluate_examples(model: nn.Module | None, dataset, positions: list[int], device: torch.device,
                      batch_size: int, num_workers: int) -> list[tuple[int, float, float, float]]:
    """Per-example (store index, NMSE, PSNR, SSIM) of ``model`` on ``dataset[positions]``.

    ``model`` None scores the zero-filled image.  Inputs are normalised as in training and the
    output denormalised; magnitudes (RSS over coils) are compared with ``target``.
    """
    if not positions:
        return []
    loader = DataLoader(Subset(dataset, positions), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    rows = []
    if model is not None:
        model.eval()
    for batch in loader:
        batch = _to_device(batch, device)
        if model is None:
            pred = batch["x0"]
        else:
            nb, scale = normalize_batch(batch)
            x0, k3, mask3, c = fold_coils(nb)
            out = model(x0, k3, mask3)
            pred = denormalize(out.unflatten(0, (-1, c)) if nb["x0"].ndim == 6 else out, scale)
        mag = rss_magnitude(pred).float()
        target = batch["target"]
        vals = [f(mag, target).tolist() for f in (nmse, psnr, ssim)]
        rows += list(zip(batch["index"].tolist(), *vals))
    return rows


def _summaries(rows: list[tuple]) -> dict[str, dict] | None:
    if not rows:
        return None
    rows = sorted({r[0]: r for r in rows}.values())  # dedupe by store index
    return {name: summarize([r[j + 1] for r in rows]) for j, name in enumerate(METRICS)}


def fit(
    run: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    init_model: nn.Module | None = None,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
) -> FitResult:
    """Train (or fine-tune) ``run.model`` on ``run.store``, writing ``run_dir`` (module doc).

    Parameters
    ----------
    run : the resolved configuration.
    run_dir : output folder (created).  With ``resume``, the run continues from
        ``run_dir/checkpoints/last`` (weights, optimizer, epoch/step, RNG states).
    init_model : starting weights and architecture (fine-tuning); must match ``run.model``.
    quiet : no progress bar or epoch lines.
    echo : where rank 0's human-readable lines go.

    Raises ConfigError / StoreError (user errors, one line each) and CheckpointError.
    Runs distributed when started by torchrun (:mod:`zoo.distributed`).
    """
    t_start = time.perf_counter()
    cfg = run.train
    info = D.env_info()
    device = D.pick_device(cfg.device, info)
    if cfg.amp and device.type != "cuda":
        raise ConfigError(f"--amp needs a CUDA device, but the run is on {device}; drop --amp or use --device cuda")
    D.init(info, device)
    try:
        return _fit(run, Path(run_dir), resume, init_model, quiet, echo, info, device, t_start)
    finally:
        D.shutdown(info)


MIN_COMPLETE = 0.9  # below this fraction of complete examples, training needs allow_incomplete


def check_complete(store: Store, allow: bool, say=print) -> None:
    """Report a store with incomplete examples; refuse one mostly incomplete unless ``allow``."""
    done = store.complete()
    n, k = len(done), int(done.sum())
    if k == n:
        return
    msg = (f"{store.path}: only {k} of {n} examples are complete (an interrupted generation?); "
           f"re-run the generating command to complete the store")
    if k < MIN_COMPLETE * n and not allow:
        raise ConfigError(f"{msg}, or pass --allow-incomplete to train on the {k} complete examples")
    say(f"warning: {msg}; training on the {k} complete examples")


def _fit(run, run_dir, resume, init_model, quiet, echo, info, device, t_start) -> FitResult:
    cfg = run.train
    main = info.is_main
    say = echo if (main and not quiet) else (lambda s: None)
    ckdir = run_dir / "checkpoints"
    last = ckdir / "last"

    # data: two views of the store, validation never sees fresh masks of later epochs
    store = Store.open(run.store)
    check_complete(store, cfg.allow_incomplete, echo if main else (lambda s: None))
    train_ds = SmsDataset(run.store, run.data)
    if run.data.synthesis is None:  # record what the store's kind chose (stored / on-the-fly)
        run = dataclasses.replace(run, data=dataclasses.replace(run.data, synthesis=train_ds.synthesis))
    val_ds = SmsDataset(run.store, run.data)
    train_idx, val_idx, how = split_examples(store, train_ds.indices, cfg.val_fraction, cfg.seed)
    pos = {s: i for i, s in enumerate(train_ds.indices)}
    train_set = Subset(train_ds, [pos[i] for i in train_idx])
    val_positions = [pos[i] for i in val_idx]
    if cfg.crop is not None and cfg.crop > train_ds.dims["Kx"]:
        raise ConfigError(f"--crop {cfg.crop} is wider than the store's images ({train_ds.dims['Kx']} columns)")

    # model: fresh, fine-tuned, or resumed
    progress = None
    if not resume and Path(str(last) + ".json").is_file():
        raise ConfigError(f"--out {run_dir} already holds a run (checkpoints/last); pass --resume to continue it "
                          f"or choose another --out")
    if resume:
        if not Path(str(last) + ".json").is_file():
            raise ConfigError(f"--resume: {run_dir} has no checkpoints/last checkpoint to resume from")
        model, meta = load_checkpoint(last, device="cpu")
    elif init_model is not None:
        model = init_model
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(run.model, run.model_config)
    if getattr(model, "name", run.model) != run.model:
        raise CheckpointError(f"the checkpoint's model is {model.name!r}, the run's config says {run.model!r}")
    frozen = freeze_parameters(model, cfg.freeze) if cfg.freeze else []
    model.to(device)
    if cfg.amp:
        _amp_convs(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
    if resume:
        progress = load_state(last, optimizer, scaler)
        if progress["step"] != meta.get("training", {}).get("step"):
            raise CheckpointError(f"{last}: the resume state (step {progress['step']}) and the weights (step "
                                  f"{meta.get('training', {}).get('step')}) differ; the last save was interrupted")
    net = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = SmsLoss(run.loss)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckdir.mkdir(exist_ok=True)
        cfg_dict = {**run.to_dict(), "world_size": info.world_size, "split": how,
                    "n_train": len(train_idx), "n_val": len(val_idx),
                    "normalization": f"quantile {NORM_QUANTILE} of |x0|",
                    "frozen": frozen, "n_parameters": count_parameters(model),
                    "versions": {"torch": torch.__version__, "smssynth": _version()}}
        _write_json(run_dir / "config.json", cfg_dict)
    D.barrier(info)

    say(f"{run.command}: {run.model} ({count_parameters(model):,} trainable parameters"
        f"{f', {len(frozen)} frozen tensors' if frozen else ''}) on {device}"
        f"{f' x {info.world_size} ranks' if info.enabled else ''}; {len(train_idx)} train / {len(val_idx)} val "
        f"examples ({how})")

    # zero-filled reference on the same val examples (once per run dir)
    zf = None
    if val_positions:
        base = run_dir / "baseline.json"
        if resume and base.is_file():
            zf = json.loads(base.read_text())["zero_filled"]
        else:
            rows = evaluate_examples(None, val_ds, val_positions[info.rank::info.world_size], device,
                                     cfg.batch_size, cfg.num_workers)
            zf = _summaries([r for part in D.all_gather_objects(rows, info) for r in part])
            if main:
                _write_json(base, {"zero_filled": zf, "val_indices": val_idx})
        say("zero-filled on val: " + _metric_line(zf))

    step = progress["step"] if progress else 0
    epoch_done = progress["epoch"] if progress else 0
    skip = 0
    if progress and not progress["epoch_complete"]:
        epoch_done, skip = progress["epoch"] - 1, progress["batch_in_epoch"]
    best = progress.get("best") if progress else None
    log = _Log(run_dir / "log.csv", keep_until_step=step if resume else None) if main else None
    tb = _tensorboard(run_dir) if main else None
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)

    from tqdm import tqdm

    epoch = epoch_done
    for epoch in range(epoch_done + 1, cfg.epochs + 1):
        if cfg.max_steps is not None and step >= cfg.max_steps:
            epoch -= 1
            break
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        order = list(sampler)
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        n_batches = len(batches)
        if skip and progress.get("batches_per_epoch") != n_batches:
            raise CheckpointError(f"--resume: the interrupted epoch had {progress.get('batches_per_epoch')} batches, "
                                  f"now {n_batches} (the store's examples or the rank count changed); it cannot be "
                                  f"replayed")
        loader = DataLoader(train_set, batch_sampler=batches[skip:], num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda")
        bar = tqdm(loader, total=n_batches, initial=skip, desc=f"epoch {epoch}/{cfg.epochs}", unit="step",
                   disable=not main or quiet, dynamic_ncols=True, leave=False)
        sums, n_seen, done, step = _train_epoch(net, bar, optimizer, scaler, params, loss_fn, cfg, device, epoch,
                                                step, skip, info.rank, tb)
        skip = 0
        complete = done == n_batches

        # reductions: train terms averaged over ranks, val metrics gathered over ranks
        keys = sorted(sums)
        tot = D.all_reduce_sum([sums[k] for k in keys] + [n_seen], info, device)
        train_terms = {k: tot[j] / max(tot[-1], 1) for j, k in enumerate(keys)}
        val = None
        if val_positions:
            rows = evaluate_examples(model, val_ds, val_positions[info.rank::info.world_size], device,
                                     cfg.batch_size, cfg.num_workers)
            val = _summaries([r for part in D.all_gather_objects(rows, info) for r in part])
        seconds = time.perf_counter() - t0

        improved = val is not None and (best is None or val["psnr"]["mean"] > best["psnr"])
        if improved:
            best = {"epoch": epoch, "step": step, "psnr": val["psnr"]["mean"]}
        prog = {"epoch": epoch, "step": step, "batch_in_epoch": done, "batches_per_epoch": n_batches,
                "epoch_complete": complete, "best": best}
        if main:
            name = ckdir / f"epoch-{epoch:03d}"
            _save(name, model, run, prog, val, zf, how, len(train_idx), len(val_idx), frozen, info, device,
                  time.perf_counter() - t_start)
            _copy_checkpoint(name, last)
            save_state(last, optimizer, scaler, prog)
            if improved:
                _copy_checkpoint(name, ckdir / "best")
            row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                   **{f"train_{k}": v for k, v in train_terms.items()},
                   **{f"val_{m}": (val[m]["mean"] if val else "") for m in METRICS},
                   "seconds": seconds}
            log.add(row)
            if tb is not None and val:
                for m in METRICS:
                    tb.add_scalar(f"val/{m}", val[m]["mean"], step)
                tb.flush()
        loss_mean = train_terms.get("loss", float("nan"))
        say(f"epoch {epoch}{'' if complete else ' (partial)'}  step {step}  loss {loss_mean:.4g}"
            + (f"  val {_metric_line(val)}" if val else "") + f"  {seconds:.1f}s")
        D.barrier(info)
        if not complete:
            break

    if tb is not None:
        tb.close()
    return FitResult(run_dir=run_dir, epoch=epoch, step=step, history=list(log.rows) if log else [],
                     best=best, zero_filled=zf, split=how, n_train=len(train_idx), n_val=len(val_idx),
                     seconds=time.perf_counter() - t_start, model=model, rank=info.rank)


def _train_epoch(net, bar, optimizer, scaler, params, loss_fn, cfg: TrainConfig, device, epoch: int, step: int,
                 done: int, rank: int, tb):
    """One (possibly resumed or cut short) epoch of optimizer steps over the batches of ``bar``.

    Returns (sums of the loss terms weighted by examples, examples seen, batches done in the
    epoch, global step).
    """
    net.train()
    sums: dict[str, float] = {}
    n_seen = 0
    for batch in bar:
        batch = _to_device(batch, device)
        nb, _ = normalize_batch(batch)
        if cfg.crop is not None:
            nb = crop_readout(nb, cfg.crop, _step_generator(cfg.seed, epoch, step, rank))
        x0, k3, mask3, c = fold_coils(nb)
        out = net(x0, k3, mask3)
        if nb["x0"].ndim == 6:  # K coils: the loss takes (B, K, ...) and compares their RSS with target
            out = out.unflatten(0, (-1, c))
        loss, terms = loss_fn(out, nb["target"])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        done += 1
        n_b = x0.shape[0] // c
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v * n_b
        n_seen += n_b
        bar.set_postfix(loss=f"{terms['loss']:.4g}", refresh=False)
        if tb is not None:
            for k, v in terms.items():
                tb.add_scalar(f"train/{k}", v, step)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    bar.close()
    return sums, n_seen, done, step


def _metric_line(s: dict | None) -> str:
    if not s:
        return "-"
    return f"PSNR {s['psnr']['mean']:.2f} dB  SSIM {s['ssim']['mean']:.4f}  NMSE {s['nmse']['mean']:.4g}"


def _save(name, model, run, prog, val, zf, how, n_train, n_val, frozen, info, device, seconds) -> None:
    training = {
        "command": run.command,
        "epoch": prog["epoch"],
        "step": prog["step"],
        "epoch_complete": prog["epoch_complete"],
        "seconds": seconds,
        "device": str(device),
        "world_size": info.world_size,
        "optimizer": {"name": "Adam", "lr": run.train.lr, "weight_decay": run.train.weight_decay,
                      "grad_clip": run.train.grad_clip},
        "loss": dataclasses.asdict(run.loss),
        "train": {**dataclasses.asdict(run.train), "freeze": list(run.train.freeze)},
        "frozen": frozen,
        "normalization": Normalization(NORM_QUANTILE).to_meta(),  # what normalize_batch used: recon reads it
        "parent": run.parent,
    }
    data = describe_store(run.store, split=how, n_examples=n_train, n_val=n_val,
                          data_config=dataclasses.asdict(run.data))
    metrics = {"val": val, "zero_filled": zf}
    # the metadata's n_parameters is counted over trainable parameters and checked against a freshly
    # built model on load, so frozen ones are counted as what they are in the architecture: parameters
    with _all_trainable(model):
        save_checkpoint(name, model, model_name=run.model, model_config=model_config_dict(model),
                        training=training, data=data, metrics=metrics)


@contextlib.contextmanager
def _all_trainable(model: nn.Module):
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("smssynth")
    except Exception:
        return "unknown"
