"""zoo reads data -> models -> weights -> training -> evaluation: every import (lazy ones inside
functions too) points down the layers, never back up.

* ``base`` -- ``zoo/__init__.py``, ``errors.py``, ``physics.py`` (torch physics of data, models and
  baselines) and ``metrics.py`` (the training loss and validation use the metrics evaluation
  reports, so they sit below both) -- imports only ``base``;
* ``data`` (``data.py``: the store's examples as tensors and the input normalisation before a
  model) imports ``base``;
* ``models`` (``models/``) imports ``data`` and below;
* ``weights`` (``checkpoint.py``, ``registry.py``, ``cards.py``: safetensors + JSON, the registry,
  model cards) imports ``models`` and below;
* ``train`` (``train/``, with the loss and ``distributed``) imports ``weights`` and below;
* ``eval`` (``eval/``: baselines, SENSE, recon, evaluate, the Table 1 experiment) may import
  anything in ``zoo``.

Two facades reach one layer up, and only lazily (inside a function, so importing them loads
nothing above): ``zoo`` (``zoo.load``, ``zoo.get_weights``, ...: PEP 562 from
:mod:`zoo.registry`) and ``zoo.models`` (``build_model(name, weights=...)``,
``get_model_weights``: torchvision's builders, which load weights through the registry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import layering

ZOO = Path(__file__).resolve().parents[2] / "zoo"
ORDER = ("base", "data", "models", "weights", "train", "eval")
PACKAGES = {"models", "train", "eval"}  # zoo.<package>.* is layer <package>
MODULES = {"data": "data", "checkpoint": "weights", "registry": "weights", "cards": "weights",
           "errors": "base", "physics": "base", "metrics": "base"}
TOP = {"__init__.py", *(f"{m}.py" for m in MODULES)}
# module -> layers it may import lazily although they lie above it (the facades of the module doc)
FACADES = {"zoo": {"weights"}, "zoo.models": {"weights"}}


def layer_of(module: str) -> str:
    """``zoo.eval.recon`` -> ``eval``; ``zoo.checkpoint`` -> ``weights``; ``zoo`` -> ``base``."""
    parts = module.split(".")
    if len(parts) < 2:
        return "base"
    if parts[1] in PACKAGES:
        return parts[1]
    if parts[1] in MODULES:
        return MODULES[parts[1]]
    raise AssertionError(f"{module}: no layer; add it to PACKAGES or MODULES")


def module_name(path: Path) -> str:
    return layering.module_name(path, ZOO)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    here = layer_of(module)
    bad = []
    for line, target, lazy in layering.package_imports(source, module, "zoo", is_package):
        there = layer_of(target)
        if ORDER.index(there) <= ORDER.index(here):
            continue
        if lazy and there in FACADES.get(module, ()):
            continue
        bad.append(f"{module}:{line} ({here}) imports {target} ({there}{', lazily' if lazy else ''})")
    return bad


def test_top_level_holds_the_layers_and_the_shared_modules():
    files = {p.name for p in ZOO.glob("*.py")}
    folders = {p.name for p in ZOO.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert files == TOP
    assert folders == PACKAGES


def test_imports_point_down_the_layers():
    modules = sorted(ZOO.rglob("*.py"))
    assert len(modules) > 25
    bad = []
    for path in modules:
        bad += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, module, expect", [
    ("from zoo.eval.metrics import nmse", "zoo.train.loop", 1),
    ("from zoo.eval import recon", "zoo.train.loop", 1),
    ("def f():\n    from zoo.eval.recon import load_method\n", "zoo.train.params", 1),
    ("import zoo.train", "zoo.checkpoint", 1),
    ("def f():\n    from zoo.train import normalize_batch\n", "zoo.checkpoint", 1),
    ("from zoo import registry", "zoo.models.crnn", 1),
    ("from ..registry import read_registry", "zoo.models.crnn", 1),
    ("from zoo.models import build_model", "zoo.data", 1),
    ("from zoo.data import DataConfig", "zoo.metrics", 1),
    ("from zoo.registry import build_from_weights", "zoo.models", 1),  # a facade, but not lazily
    ("def f():\n    from zoo.registry import build_from_weights\n", "zoo.models", 0),
    ("def f():\n    from zoo import registry\n", "zoo", 0),
    ("def f():\n    from zoo.train import fit\n", "zoo.models", 1),  # a facade reaches weights only
    ("from . import distributed as D", "zoo.train.loop", 0),
    ("from zoo.checkpoint import save_checkpoint\nfrom zoo.metrics import nmse", "zoo.train.loop", 0),
    ("from zoo.train import normalize_batch\nfrom zoo.registry import load", "zoo.eval.recon", 0),
    ("from zoo import physics\nfrom zoo.errors import ConfigError", "zoo.data", 0),
])
def test_the_check_catches_an_import_that_runs_back_up(source, module, expect):
    assert len(violations(source, module, module in ("zoo", "zoo.models"))) == expect
