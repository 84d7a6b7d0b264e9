"""Patient-level dataset splits.

A patient goes to one split, always: ``u = H(seed, patient key)`` mapped to [0, 1) (first 8 bytes
of SHA-256, big-endian, / 2**64) falls into the cumulative fractions in the order given.  The
patient key is the pseudonymous ``pt-...`` key (from PatientID, or from a manifest's patient
column), so the same patients land in the same split whatever else is in the dataset, and one
patient's slices never reach two splits.  A manifest's explicit ``split`` column overrides.
"""

from __future__ import annotations

import hashlib
import re

from synth.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def parse_split(spec: str | dict | None) -> dict[str, float] | None:
    """``"train=0.8,val=0.1,test=0.1"`` (or a mapping) -> ordered {name: fraction}; sums to 1."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, dict):
        items = list(spec.items())
    else:
        items = []
        for part in str(spec).split(","):
            name, sep, frac = part.partition("=")
            if not sep:
                raise ConfigError(f"--split: {part!r} is not NAME=FRACTION (e.g. train=0.8,val=0.1,test=0.1)")
            items.append((name.strip(), frac.strip()))
    out: dict[str, float] = {}
    for name, frac in items:
        if not _NAME.match(str(name)):
            raise ConfigError(f"--split: split name {name!r} must start with a letter (letters, digits, _ and -)")
        try:
            f = float(frac)
        except ValueError:
            raise ConfigError(f"--split: fraction {frac!r} of {name!r} is not a number") from None
        if not 0 < f <= 1:
            raise ConfigError(f"--split: fraction of {name!r} must be in (0, 1], got {f}")
        if name in out:
            raise ConfigError(f"--split: {name!r} given twice")
        out[str(name)] = f
    total = sum(out.values())
    if abs(total - 1) > 1e-6:
        raise ConfigError(f"--split: fractions sum to {total:g}, expected 1")
    return out


def split_spec_str(fractions: dict[str, float] | None) -> str | None:
    return None if fractions is None else ",".join(f"{k}={v:g}" for k, v in fractions.items())


def unit_hash(seed: int, key: str) -> float:
    h = hashlib.sha256(f"smssynth-split:{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_split(patient_key: str, fractions: dict[str, float], seed: int) -> str:
    """The split of one patient (stable for the same key, fractions and seed)."""
    u = unit_hash(seed, patient_key)
    acc = 0.0
    names = list(fractions)
    for name in names:
        acc += fractions[name]
        if u < acc:
            return name
    return names[-1]
