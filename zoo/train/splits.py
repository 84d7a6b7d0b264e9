"""Which examples train and which validate, and whether the store is complete enough to train on.

Validation split
----------------
If the store records per-example splits (``attrs["examples"][i]["split"]``, ``smssynth generate
--split``) and one is ``val``, the ``val`` examples validate and the ``train`` examples train
(all non-``val``, non-``test`` examples if there is no ``train`` split).  Otherwise a
deterministic held-out fraction ``val_fraction`` of the store (less any ``test`` split)
validates: whole patients (the pseudonymous ``sources[0]["patient"]`` key) are held out when the
store has at least two, so a patient's slices never reach both sides; patients (else examples) are
ordered by ``SHA-256(seed, key)`` and taken until at least ``ceil(val_fraction * N)`` examples are
held out, always leaving one group to train on.  ``val_fraction = 0`` (and no ``val`` split)
trains without validation (and writes no ``best`` checkpoint).
"""

from __future__ import annotations

import math

from synth.dataset.splits import unit_hash
from synth.dataset.store import Store
from synth.errors import ConfigError


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

