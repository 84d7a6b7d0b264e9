"""Configuration of a training run: :class:`TrainConfig`, :class:`RunConfig`, the ``--config`` YAML,
the precedence flags > YAML > defaults, and what a resumed run may change.

Every value is checked where it enters, and a wrong one is named by its key and the type or
range expected (``optimizer.lr: expected a number, got 'fast'``), as a ConfigError that the CLI
prints as one line (exit code 2).  The keys are the YAML's (``section.key``); in a run's
``config.json`` every loop setting lives under ``train``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth.errors import ConfigError
from zoo.data import DataConfig
from zoo.models import make_config
from zoo.train.losses import LossConfig

SCHEDULES = ("constant", "cosine", "step")
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings (validated on construction).

    Attributes
    ----------
    epochs : passes over the training examples.
    lr, weight_decay : Adam's (peak) learning rate and (L2) weight decay.
    grad_clip : clip the global gradient norm to this value; None = no clipping.
    schedule : learning rate over the optimizer steps (:mod:`zoo.train.schedule`): ``constant``
        (the default), ``cosine`` (half a cosine from ``lr`` to ``min_lr`` over the run's steps)
        or ``step`` (``lr * gamma ** (s // step_size)``).
    warmup_steps : linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first optimizer
        steps, before the schedule; 0 = none.
    min_lr : where ``cosine`` ends (>= 0, below ``lr``).
    step_size, gamma : optimizer steps between decays of ``step`` (needed) and the factor of each
        decay (None = 0.1).
    batch_size : examples per micro-batch and rank (with K coils each example brings K coil images).
    accumulate : micro-batches whose gradients add up to one optimizer step (the effective batch
        is ``batch_size * accumulate`` per rank; the loss is weighted so it is their mean).
    num_workers : DataLoader worker processes.
    val_fraction : held-out fraction when the store has no ``val`` split (:mod:`zoo.train.splits`).
    crop : random readout (x) window in pixels for training, None = whole images
        (:func:`zoo.train.batch.crop_readout`).
    seed : root seed: model initialisation, shuffling, fresh masks, crops, the held-out split.
    max_steps : stop after this many optimizer steps in all (smoke runs); None = no limit.
    early_stop : stop after this many epochs without a better val PSNR; None = off.
    amp : float16 autocast of the convolutions with a GradScaler (CUDA only).
    precision : ``float32`` (the default) or ``bfloat16``: the CRNN blocks and 2D+time
        convolutions compute in bfloat16 (float32 parameters, gradients, optimizer state and
        physics; :func:`zoo.train.params.set_compute_dtype`).  Fast on CPUs with AMX or
        AVX512-BF16 (and on CUDA); slower than float32 on CPUs without them.  Not with ``amp``.
    device : ``cpu``, ``cuda``, ``cuda:N``; None = CUDA when available.
    freeze : glob patterns of parameter names to keep fixed (``cell.*``), matched with fnmatch.
    allow_incomplete : train on a store of which less than :data:`zoo.train.splits.MIN_COMPLETE`
        of the examples are complete (an interrupted generation); otherwise refused.  Any
        incomplete example is reported with the count either way.
    """

    epochs: int = 10
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float | None = None
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr: float = 0.0
    step_size: int | None = None
    gamma: float | None = None
    batch_size: int = 1
    accumulate: int = 1
    num_workers: int = 0
    val_fraction: float = 0.1
    crop: int | None = None
    seed: int = 0
    max_steps: int | None = None
    early_stop: int | None = None
    amp: bool = False
    precision: str = "float32"
    device: str | None = None
    freeze: tuple[str, ...] = ()
    allow_incomplete: bool = False

    def __post_init__(self):
        check_types(self, TrainConfig, key_of=yaml_key)

        def need(cond, name, expected):
            if not cond:
                raise ConfigError(f"{yaml_key(name)}: expected {expected}, got {getattr(self, name)!r}")

        def finite(v):
            return v is None or math.isfinite(v)

        need(self.epochs >= 1, "epochs", "an integer >= 1")
        need(finite(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(finite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.grad_clip is None or (finite(self.grad_clip) and self.grad_clip > 0), "grad_clip",
             "null or a number > 0")
        need(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        need(self.warmup_steps >= 0, "warmup_steps", "an integer >= 0")
        need(finite(self.min_lr) and 0 <= self.min_lr < self.lr, "min_lr", f"a number >= 0 and below lr ({self.lr:g})")
        need(self.min_lr == 0 or self.schedule == "cosine", "min_lr", "0: it is where schedule 'cosine' ends")
        need(self.step_size is None or self.step_size >= 1, "step_size", "null or an integer >= 1 (optimizer steps)")
        need(self.step_size is not None or self.schedule != "step", "step_size",
             "the optimizer steps between decays of schedule 'step' (--lr-step-size N)")
        need(self.step_size is None or self.schedule == "step", "step_size", "null: it applies to schedule 'step'")
        need(self.gamma is None or (finite(self.gamma) and 0 < self.gamma <= 1), "gamma", "null or a number in (0, 1]")
        need(self.gamma is None or self.schedule == "step", "gamma", "null: it applies to schedule 'step'")
        need(self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.accumulate >= 1, "accumulate", "an integer >= 1")
        need(self.num_workers >= 0, "num_workers", "an integer >= 0")
        need(finite(self.val_fraction) and 0 <= self.val_fraction < 1, "val_fraction", "a number in [0, 1)")
        # 16: the loss's SSIM window (7) must fit, and narrower windows carry too little context
        need(self.crop is None or self.crop >= 16, "crop", "null or an integer >= 16 (pixels)")
        need(self.seed >= 0, "seed", "an integer >= 0")
        need(self.max_steps is None or self.max_steps >= 1, "max_steps", "null or an integer >= 1")
        need(self.early_stop is None or self.early_stop >= 1, "early_stop", "null (off) or an integer >= 1 (epochs)")
        need(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        need(not (self.amp and self.precision != "float32"), "precision",
             "float32 with train.amp (float16 autocast); use one of the two")
        need(isinstance(self.freeze, tuple) and all(self.freeze), "freeze", "a list of non-empty glob patterns")


# where each TrainConfig field lives in the YAML file
_SECTIONS = {
    "optimizer": ("lr", "weight_decay", "grad_clip", "schedule", "warmup_steps", "min_lr", "step_size", "gamma"),
    "data": ("batch_size", "num_workers", "val_fraction", "crop"),
    "train": ("epochs", "seed", "max_steps", "accumulate", "early_stop", "amp", "precision", "device", "freeze",
              "allow_incomplete"),
}
# DataConfig fields the YAML may set (split and seed are the loop's: the split selection and train.seed)
_DATA_KEYS = ("coil_mode", "coils", "mask", "accel", "acs", "mask_kind", "caipi", "synthesis", "augment")
_SECTION_OF = {k: s for s, keys in _SECTIONS.items() for k in keys}


def yaml_key(name: str) -> str:
    """``section.key`` of a TrainConfig field in the ``--config`` YAML."""
    return f"{_SECTION_OF.get(name, 'train')}.{name}"


# --- type checks ------------------------------------------------------------------------------


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


_KINDS = {
    float: ("a number", _is_num),
    int: ("an integer", _is_int),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    dict: ("a mapping", lambda v: isinstance(v, dict)),
}


def expected_kind(hint) -> tuple[str, Any]:
    """``(words, test)`` for a field's type hint: ``float`` -> "a number", ``int | None`` -> "an
    integer or null", ``tuple[str, ...]`` -> "a list of strings"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        words, test = expected_kind(inner)
        return f"{words} or null", lambda v: v is None or test(v)
    if origin is tuple and args and args[0] is str:
        return "a list of strings", lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
    return _KINDS[hint]


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_value(key: str, value, hint) -> None:
    """ConfigError ``KEY: expected WHAT, got VALUE`` unless ``value`` fits the type ``hint``."""
    words, test = expected_kind(hint)
    if not test(value):
        raise ConfigError(f"{key}: expected {words}, got {value!r}")


def check_types(obj, cls, key_of) -> None:
    """Check every field of dataclass instance ``obj`` against ``cls``'s annotations."""
    for name, hint in _hints(cls).items():
        check_value(key_of(name), getattr(obj, name), hint)


# YAML 1.1 (PyYAML) reads 1e-4 (no dot) as a string; such a string is the number it spells
_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_section(section: str, values: dict, hints: dict, where: str) -> dict:
    out = {}
    for key, v in values.items():
        hint = hints[key]
        if isinstance(v, str) and _FLOAT_LITERAL.fullmatch(v) and expected_kind(hint)[0].startswith("a number"):
            v = float(v)
        try:
            check_value(f"{section}.{key}", v, hint)
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None
        out[key] = v
    return out


def _section_hints() -> dict[str, dict[str, Any]]:
    t, d, lo = _hints(TrainConfig), _hints(DataConfig), _hints(LossConfig)
    return {
        "model": {"name": str, "config": dict},
        "loss": lo,
        "data": {**{k: d[k] for k in _DATA_KEYS}, **{k: t[k] for k in _SECTIONS["data"]}},
        "optimizer": {k: t[k] for k in _SECTIONS["optimizer"]},
        "train": {k: t[k] for k in _SECTIONS["train"]},
    }


# --- the run ----------------------------------------------------------------------------------


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
        """The inverse of :meth:`to_dict` (a run's ``config.json``); keys missing from an older
        file take their defaults, unknown keys and wrong types are ConfigErrors naming them."""
        try:
            sections = {"train": (dict(d["train"]), TrainConfig), "data": (dict(d["data"]), DataConfig),
                        "loss": (dict(d["loss"]), LossConfig)}
            for name, (values, kind) in sections.items():
                hints = _hints(kind)
                unknown = sorted(set(values) - set(hints))
                if unknown:
                    raise ConfigError(f"config.json: unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)} "
                                      f"(not a run configuration of this smssynth version); known: {sorted(hints)}")
                _check_section(name, values, hints, "config.json: ")
            t = sections["train"][0]
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
        loss: {w_mse: 1.0, w_ssim: 0.1, w_tv: 0.001}          # zoo.train.losses.LossConfig
        optimizer: {lr: 1.0e-4, weight_decay: 0, grad_clip: null,
                    schedule: constant, warmup_steps: 0}   # cosine [min_lr: 0] | step, step_size: N [gamma: 0.1]
        data: {coil_mode: compressed, coils: 4, mask: stored, batch_size: 1, num_workers: 0, val_fraction: 0.1,
               crop: null}                                # coil modes: zoo.data
        # fresh masks (zoo.data, "Masks"): mask: fresh [mask_kind: vd (default), accel, acs, caipi: row|acquired]
        # fresh phase, coils, masks and noise every epoch (zoo.data): synthesis: on-the-fly
        # with the images augmented first (synth.dataset.augment): augment: [flip, transpose, roll, gamma]
        train: {epochs: 10, seed: 0, max_steps: null, accumulate: 1, early_stop: null, amp: false, precision: float32, device: null,
                freeze: []}

    Unknown sections or keys raise ConfigError naming the file, the key and the known ones; a
    value of the wrong type names its key and the type expected (``--config c.yaml:
    optimizer.lr: expected a number, got 'fast'``).  Ranges and combinations are checked when
    the run is resolved (:func:`resolve_run_config`).  A number written without a dot
    (``1e-4``, a string to YAML 1.1) is read as the number.
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
    known = _section_hints()
    unknown = sorted(map(str, set(data) - set(known)))
    if unknown:
        raise ConfigError(f"--config {path}: unknown section(s) {unknown}; known: {sorted(known)}")
    out = {}
    for section, hints in known.items():
        s = data.get(section) or {}
        if not isinstance(s, dict):
            raise ConfigError(f"--config {path}: section {section!r} must be a mapping, got {type(s).__name__}")
        bad = sorted(map(str, set(s) - set(hints)))
        if bad:
            raise ConfigError(f"--config {path}: unknown key(s) {', '.join(f'{section}.{k}' for k in bad)}; known in "
                              f"section {section!r}: {sorted(hints)}")
        out[section] = _check_section(section, s, hints, f"--config {path}: ")
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
            raise ConfigError(f"unknown training option {k!r}; known: {sorted(tfields | set(_DATA_KEYS))}")
    if "freeze" in t:
        t["freeze"] = tuple(t["freeze"] or ())
    try:
        train = TrainConfig(**t)
    except ConfigError as e:  # a value from the YAML: name the file too
        field = str(e).split(":", 1)[0].rpartition(".")[2]
        if field in t and field not in overrides:
            raise ConfigError(f"{source}: {e}") from None
        raise
    data = DataConfig(**d, split=None, seed=int(train.seed))
    loss = LossConfig(**y.get("loss", {}))
    return RunConfig(store=str(store), model=name, model_config=model_config, data=data, loss=loss, train=train,
                     command=command, parent=parent)


# config field -> command-line flag, where they differ
_FLAG_NAMES = {"coils": "--virtual-coils", "schedule": "--lr-schedule", "step_size": "--lr-step-size",
               "gamma": "--lr-gamma"}
RESUMABLE = ("epochs", "max_steps", "early_stop", "num_workers", "device")
"""Options a resumed run may change; everything else is fixed by the run's ``config.json``.
(``epochs`` and ``max_steps`` set the horizon of a ``cosine`` schedule: changing them on resume
changes the remaining learning rates, and the run says so.)"""


def flag_name(field: str) -> str:
    """The command-line flag of a config field (``max_steps`` -> ``--max-steps``)."""
    return _FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


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
    except ConfigError as e:
        raise ConfigError(f"{path.parent}/{e}") from None
    if saved.command != command:
        raise ConfigError(f"--out {run_dir} is a '{saved.command}' run; resume it with `smssynth {saved.command}`")
    fixed = sorted(k for k in given if k not in RESUMABLE)
    if fixed:
        flags = ", ".join(flag_name(k) for k in fixed)
        raise ConfigError(f"{flags} cannot change on --resume (the run's config.json fixes them); only "
                          f"{', '.join(flag_name(k) for k in RESUMABLE)} and --data may")
    train = dataclasses.replace(saved.train, **{k: given[k] for k in RESUMABLE if k in given})
    return dataclasses.replace(saved, train=train, store=str(store) if store else saved.store)


def model_config_dict_of(name: str, config: dict) -> dict:
    """The full, validated config dict of model ``name`` with ``config``'s overrides."""
    return dataclasses.asdict(make_config(name, dict(config)))
