"""Dataset recipes: YAML files (``datasets/*.yaml``) holding simulation parameters.

A recipe is a mapping.  ``name`` and ``description`` are informational; every other key is a
:class:`synth.config.SimConfig` field (``matrix`` as ``[NY, NX]``), or ``split`` (e.g.
``train=0.8,val=0.1,test=0.1``).  Precedence: a CLI flag given on the command line > the recipe >
the defaults.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from synth.config import SimConfig
from synth.errors import ConfigError

INFO_KEYS = ("name", "description")
EXTRA_KEYS = ("split",)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Parameters from a recipe file, validated (unknown keys and bad values name the file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--recipe {path}: no such file (recipes live in datasets/*.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--recipe {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--recipe {path}: expected a mapping of parameter: value")
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    params = {k: v for k, v in data.items() if k not in INFO_KEYS}
    unknown = sorted(set(params) - fields - set(EXTRA_KEYS))
    if unknown:
        raise ConfigError(f"--recipe {path}: unknown parameter(s) {unknown}; known: {sorted(fields | set(EXTRA_KEYS))}")
    if params.get("matrix") is not None:
        params["matrix"] = tuple(params["matrix"])
    try:  # validate the simulation part now, so a bad recipe fails before any work
        SimConfig(**{k: v for k, v in params.items() if k in fields})
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"--recipe {path}: {e}") from None
    return params
