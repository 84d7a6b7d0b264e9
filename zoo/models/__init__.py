"""Reconstruction models, registered by name with a frozen config dataclass.

Every model maps the zero-filled image to a reconstruction of the same shape::

    forward(x0, k3, mask3) -> x
    x0, x : complex64 (B, M, T, Y, X)    SMS slice images (a coil axis, if any, folded into B)
    k3    : complex64 (B, Kz=M, T, Ky, Kx) measured 3D k-space (zero where not sampled)
    mask3 : bool      (B, Kz=M, T, Ky, 1)  3D sampling pattern

Build one by name::

    from zoo.models import build_model, list_models, model_config_dict
    net = build_model("sms-crnn", {"n_filters": 16})
    model_config_dict(net)   # {"n_filters": 16, "n_iterations": 5, ...}: JSON, for checkpoints

Registered: ``sms-crnn`` (the proposed network), ``independent`` (per-slice CRNN, no data
consistency), ``conv3d`` (convolutions over slice, y, x).

Pretrained weights, as torchvision's builders take them (``resnet50(weights=...)``)::

    net = sms_crnn(weights="sms-crnn-cine-cpu")                   # or a zoo.Weights, or a checkpoint path
    net = build_model("sms-crnn", weights=zoo.get_weights("sms-crnn-cine-cpu"))
    net = sms_crnn(n_filters=16)                                  # weights=None: a fresh model
    get_model_weights("sms-crnn")                                 # the registered weights of an architecture

With weights, the config comes from their metadata (:func:`zoo.registry.build_from_weights`):
explicit options may repeat it but a conflicting one is refused, so weights and code cannot drift;
the model is hash-checked, in eval mode, and carries ``model.normalization``.

The registry follows torchvision's ``register_model`` (``torchvision/models/_api.py``); the
config is a frozen, validated dataclass like ``synth.dataset.config.SimConfig``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from synth.errors import ConfigError

_REGISTRY: dict[str, tuple[type[nn.Module], type]] = {}


def register_model(name: str, config_cls: type):
    """Class decorator: register an ``nn.Module`` under ``name`` with its config dataclass.

    The class is built as ``cls(config)`` and must keep ``self.config``; the decorator sets the
    class attribute ``name``.
    """
    if not (dataclasses.is_dataclass(config_cls) and isinstance(config_cls, type)):
        raise TypeError(f"config_cls of model {name!r} must be a dataclass type, got {config_cls!r}")

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY and _REGISTRY[name][0] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_REGISTRY[name][0].__qualname__}")
        cls.name = name
        _REGISTRY[name] = (cls, config_cls)
        return cls

    return wrap


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def _lookup(name: str) -> tuple[type[nn.Module], type]:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; known models: {list_models()}") from None


def get_model_config_class(name: str) -> type:
    """The frozen config dataclass of model ``name`` (ConfigError, a ValueError, if unknown)."""
    return _lookup(name)[1]


def make_config(name: str, config: dict[str, Any] | Any | None = None):
    """Validated config of model ``name`` from None (defaults), a dict, or a config instance."""
    config_cls = _lookup(name)[1]
    if config is None:
        return config_cls()
    if isinstance(config, config_cls):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        raise ConfigError(
            f"model {name!r} takes a {config_cls.__name__}, got a {type(config).__name__}; "
            f"pass a dict or {config_cls.__name__}(...)"
        )
    if not isinstance(config, dict):
        raise ConfigError(
            f"model {name!r}: config must be a dict, a {config_cls.__name__} or None, got {type(config).__name__}"
        )
    known = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ConfigError(f"model {name!r}: unknown config key(s) {unknown}; known keys: {known}")
    return config_cls(**config)


def build_model(name: str, config: dict[str, Any] | Any | None = None, *, weights=None,
                device="cpu") -> nn.Module:
    """Build model ``name`` from its config (None = defaults, a dict of overrides, or an instance).

    ``weights`` (registered weights name, ``zoo.Weights``, or checkpoint path) builds the
    architecture from the weights' metadata and loads them, hash-checked, in eval mode on
    ``device``; ``config`` may then only repeat the recorded values (module doc).  None: a fresh,
    randomly initialised model (``device`` is ignored).

    Raises ConfigError (a ValueError) for an unknown name, listing the known names, for an
    unknown config key, naming it and the known keys, and for weights of another architecture
    or a config that conflicts with theirs.
    """
    cls, _ = _lookup(name)
    if weights is not None:
        from zoo.registry import build_from_weights

        return build_from_weights(name, weights, config, device=device)
    return cls(make_config(name, config))


def get_model_weights(name: str) -> list:
    """The registered :class:`zoo.Weights` for architecture ``name`` (torchvision's ``get_model_weights``)."""
    from zoo.registry import read_registry

    _lookup(name)
    return [w for w in read_registry() if w.architecture == name]


def model_config_dict(model: nn.Module) -> dict[str, Any]:
    """The model's config as a JSON-serialisable dict (rebuild with ``build_model(model.name, d)``)."""
    return dataclasses.asdict(model.config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# registration happens on import; these come last because they import register_model from here
from zoo.models import conv3d, independent, sms_crnn  # noqa: E402,F401

# The builders below take the submodules' names, as torchvision.models.alexnet does: defined after
# the submodules are imported, so the package attribute is the function (``from zoo.models.sms_crnn
# import X`` still reaches the module through sys.modules).


def sms_crnn(*, weights=None, device="cpu", **config) -> nn.Module:
    """The paper's SMS-CRNN (``sms-crnn``); ``weights`` and ``config`` as :func:`build_model`."""
    return build_model("sms-crnn", config or None, weights=weights, device=device)


def independent(*, weights=None, device="cpu", **config) -> nn.Module:
    """Per-slice CRNN without data consistency (``independent``); as :func:`build_model`."""
    return build_model("independent", config or None, weights=weights, device=device)


def conv3d(*, weights=None, device="cpu", **config) -> nn.Module:
    """Convolutions over slice, y, x (``conv3d``); as :func:`build_model`."""
    return build_model("conv3d", config or None, weights=weights, device=device)


__all__ = [
    "build_model",
    "conv3d",
    "count_parameters",
    "get_model_weights",
    "independent",
    "sms_crnn",
    "get_model_config_class",
    "list_models",
    "make_config",
    "model_config_dict",
    "register_model",
]
