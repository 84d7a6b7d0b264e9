"""What the layering tests (``tests/synth/test_layers.py``, ``tests/zoo/test_layers.py``) read
from the source: a module's dotted name, and every import of a package it makes."""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(path: Path, package_dir: Path) -> str:
    """``ROOT/zoo/eval/recon.py`` -> ``zoo.eval.recon`` (``__init__.py`` names its package)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports(source: str, module: str, package: str, is_package: bool = False) -> list[tuple[int, str, bool]]:
    """``(line, imported module, lazy)`` for every import of ``package`` in ``source``, however deeply
    nested; ``lazy``: inside a function.  ``from P.x import name`` counts as importing ``P.x``,
    ``from P import x`` as ``P.x``; relative imports are resolved against ``module``."""
    out = []

    def visit(node, lazy):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, lazy) for a in node.names if a.name.split(".")[0] == package)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            if base.split(".")[0] == package:
                out.extend((node.lineno, f"{base}.{a.name}" if base == package else base, lazy) for a in node.names)
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return out
