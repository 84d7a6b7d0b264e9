"""Dataset recipes: YAML files (``datasets/*.yaml``) holding simulation parameters.

A recipe is a mapping.  ``name`` and ``description`` are informational; every other key is a
:class:`synth.dataset.config.SimConfig` field (``matrix`` as ``[NY, NX]``), or ``split`` (e.g.
``train=0.8,val=0.1,test=0.1``).  Precedence: a CLI flag given on the command line > the recipe >
the defaults.

Every value is checked against its key's type before the configuration is built, and a wrong
one is named with the file, the key, what was expected and what was found::

    --recipe datasets/x.yaml: accel: expected an integer, got 'two'
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from pathlib import Path
from typing import Any, Callable

from synth.dataset.config import CAIPI_ORDERS, COMBINES, CSMS, FRAME_MODES, MASKS, PHASES, RESOLUTIONS, SimConfig
from synth.errors import ConfigError

INFO_KEYS = ("name", "description")
EXTRA_KEYS = ("split",)
# the string fields of SimConfig and the values each takes
CHOICES = {"mask": MASKS, "caipi": CAIPI_ORDERS, "csm": CSMS, "phase": PHASES, "resolution": RESOLUTIONS,
           "frames_mode": FRAME_MODES, "combine": COMBINES}

_Check = Callable[[Any], Any]  # returns the value (converted), or raises _Mismatch


class _Mismatch(Exception):
    """A value of the wrong type; the argument says what was expected."""


def _int(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Mismatch("an integer")
    return v


def _float(v):
    # PyYAML reads 1e-3 (no dot) as a string: accept any finite number spelled as one
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            raise _Mismatch("a number") from None
        if not math.isfinite(f):
            raise _Mismatch("a finite number")
        return f
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Mismatch("a number")
    if not math.isfinite(v):
        raise _Mismatch("a finite number")
    return float(v)


def _bool(v):
    if not isinstance(v, bool):
        raise _Mismatch("true or false")
    return v


def _pair(v):
    if (not isinstance(v, (list, tuple)) or len(v) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) for x in v)):
        raise _Mismatch("[ny, nx] (two integers, e.g. [192, 160])")
    return tuple(v)


def _text(v):
    if not isinstance(v, str):
        raise _Mismatch("a string")
    return v


def _choice(choices):
    def check(v):
        if not isinstance(v, str) or v not in choices:
            raise _Mismatch("one of " + ", ".join(choices))
        return v

    return check


def _split(v):
    from synth.dataset.splits import parse_split

    if not isinstance(v, (str, dict)):
        raise _Mismatch("NAME=FRACTION,... (e.g. train=0.8,val=0.1,test=0.1) or a mapping of name: fraction")
    try:
        parse_split(v)
    except ConfigError as e:  # the right type, a wrong value: parse_split says what
        raise ConfigError(str(e).removeprefix("--split: ")) from None
    return v


def _optional(check: _Check) -> _Check:
    def maybe(v):
        if v is None:
            return None
        try:
            return check(v)
        except _Mismatch as e:
            raise _Mismatch(f"{e} or null") from None

    return maybe


_BY_TYPE = {"int": _int, "float": _float, "bool": _bool, "tuple[int, int]": _pair}


def _field_check(field: dataclasses.Field) -> _Check:
    """The check of one SimConfig field, from its annotation (a string: ``from __future__ import annotations``)."""
    kind = str(field.type)
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if kind == "str":
        check = _choice(CHOICES[field.name])  # KeyError: a new string field needs its choices here
    else:
        check = _BY_TYPE[kind]  # KeyError: a new field type needs a check here
    return _optional(check) if optional else check


CHECKS: dict[str, _Check] = {
    **{f.name: _field_check(f) for f in dataclasses.fields(SimConfig)},
    "split": _split,
    "name": _text,
    "description": _text,
}


def check_values(data: dict) -> dict[str, Any]:
    """The recipe mapping ``data`` with every value checked (and converted: ``matrix`` to a tuple,
    numbers of float keys to float).  Raises :class:`ConfigError` naming each unknown key (with the
    allowed ones) or each key whose value has the wrong type."""
    unknown = [k for k in data if k not in CHECKS]
    if unknown:
        allowed = sorted(CHECKS)
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                          f"allowed: {', '.join(allowed)}")
    out, problems = {}, []
    for k, v in data.items():
        try:
            out[k] = CHECKS[k](v)
        except _Mismatch as e:
            problems.append(f"{k}: expected {e}, got {v!r}")
        except ConfigError as e:
            problems.append(f"{k}: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    return out


def _recipe_message(message: str) -> str:
    """SimConfig names a field as its command-line flag (``--frames-mode: ...``); a recipe's key is
    the field name (``frames_mode: ...``)."""
    for f in dataclasses.fields(SimConfig):
        flag = f"--{f.name.replace('_', '-')}: "
        if message.startswith(flag):
            return f"{f.name}: " + message[len(flag):]
    return message


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Parameters from a recipe file, validated; every error is one line naming the file and the key."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--recipe {path}: no such file (recipes live in datasets/*.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"--recipe {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--recipe {path}: not a text file (a YAML recipe is UTF-8 text)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--recipe {path}: expected a mapping of key: value, got "
                          f"{'an empty file' if data is None else type(data).__name__}")
    try:
        checked = check_values(data)
    except ConfigError as e:
        raise ConfigError(f"--recipe {path}: {e}") from None
    params = {k: v for k, v in checked.items() if k not in INFO_KEYS}
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    try:  # ranges and combinations, so a bad recipe fails before any work
        SimConfig(**{k: v for k, v in params.items() if k in fields})
    except ConfigError as e:
        raise ConfigError(f"--recipe {path}: {_recipe_message(str(e))}") from None
    return params
