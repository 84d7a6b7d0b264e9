"""synth reads input -> physics -> dataset: every import (lazy ones inside functions too) points
down the layers, never back up.

* ``physics`` imports only ``physics`` and the top-level modules (``errors``, ``runtime``);
* ``io`` imports ``io``, ``physics`` and the top level;
* ``dataset`` may import anything in ``synth``;
* the top level (``synth/__init__.py``, ``errors.py``, ``runtime.py``) imports only the top level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import layering

SYNTH = Path(__file__).resolve().parents[2] / "synth"
LAYERS = ("physics", "io", "dataset")
TOP = {"__init__.py", "errors.py", "runtime.py"}
ALLOWED = {
    "top": {"top"},
    "physics": {"top", "physics"},
    "io": {"top", "physics", "io"},
    "dataset": {"top", "physics", "io", "dataset"},
}


def layer_of(module: str) -> str:
    """``synth.io.dicom.scan`` -> ``io``; ``synth``, ``synth.errors`` -> ``top``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def module_name(path: Path) -> str:
    return layering.module_name(path, SYNTH)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    here = layer_of(module)
    bad = []
    for line, target, _lazy in layering.package_imports(source, module, "synth", is_package):
        if layer_of(target) not in ALLOWED[here]:
            bad.append(f"{module}:{line} ({here}) imports {target} ({layer_of(target)})")
    return bad


def test_top_level_holds_only_the_layers_and_the_shared_modules():
    files = {p.name for p in SYNTH.glob("*.py")}
    folders = {p.name for p in SYNTH.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert files == TOP
    assert folders == set(LAYERS)


def test_imports_point_down_the_layers():
    modules = sorted(SYNTH.rglob("*.py"))
    assert len(modules) > 30
    bad = []
    for path in modules:
        text = path.read_text()
        bad += violations(text, module_name(path), path.name == "__init__.py")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{module_name(path)}:{node.lineno} imports torch" for n in names if n.split(".")[0] == "torch"]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("source, module, expect", [
    ("from synth.dataset.config import SimConfig", "synth.physics.sms", 1),
    ("def f():\n    from synth.dataset import store\n", "synth.physics.noise", 1),
    ("import synth.io.dicom", "synth.physics.fft", 1),
    ("from synth import dataset", "synth.io.nifti", 1),
    ("from ..dataset import combos", "synth.io.resolution", 1),
    ("from . import combos", "synth.dataset", 0),
    ("from synth.physics.fft import fft2c\nfrom synth.errors import ConfigError", "synth.io.phantom.render", 0),
    ("import synth\nfrom synth.io.dicom import scan", "synth.dataset.pipeline", 0),
    ("from synth.physics import sms", "synth.errors", 1),
])
def test_the_check_catches_an_import_that_runs_back_up(source, module, expect):
    assert len(violations(source, module)) == expect
