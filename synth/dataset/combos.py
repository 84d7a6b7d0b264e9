"""Plan SMS examples: which slices are excited together, and each example's seed.

An example is M slices plus a draw index.  Slices can form one example only if they end up with
the same working matrix and frame count (never silently stacked otherwise).  Groups:

* ``within-series`` (default): slices of one series; every M-subset, or ``combos`` random ones.
* ``within-study``: slices of all series of one study with the same orientation normal.
* ``across-series``: one slice from each of M different series (possibly different patients) -
  an augmentation for data-poor sets such as single-slice perfusion; documented as such.

Seeds (STYLE 4): ``SeedSequence(entropy=seed, spawn_key=key_ints(identity))`` where the identity
is the example's source slices (pseudonymous series keys + slice indices) and draw index, so an
example's data does not depend on the order or number of other examples or workers.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from synth.dataset.config import SimConfig
from synth.io.dicom import Catalog, SeriesInfo, SliceInfo
from synth.io.resolution import working_shape


@dataclass(frozen=True)
class Source:
    """One slice of an example (no patient identifiers: keys are pseudonyms)."""

    series: SeriesInfo
    slice: SliceInfo

    def to_dict(self) -> dict:
        return {
            "series": self.series.key,
            "study": self.series.study_key,
            "patient": self.series.patient_key,
            "slice": self.slice.index,
            "position_mm": round(float(self.slice.position_mm), 4),
            "frames": self.slice.n_frames,
            "stored_shape": list(self.slice.shape),
            "acquisition_matrix": None if self.slice.acquisition_matrix is None else list(self.slice.acquisition_matrix),
            # since format 1.4, for the store's per-example fact arrays (synth.dataset.store.example_facts)
            "position_source": self.series.position_source,
            "pixel_spacing_mm": None if self.slice.pixel_spacing_mm is None else [
                round(float(v), 6) for v in self.slice.pixel_spacing_mm],
            "times_ms": None if self.slice.times_ms is None else [round(float(v), 3) for v in self.slice.times_ms],
            "slice_thickness_mm": None if self.slice.slice_thickness_mm is None else round(
                float(self.slice.slice_thickness_mm), 6),
        }


@dataclass(frozen=True)
class ExamplePlan:
    index: int
    sources: tuple[Source, ...]
    draw: int
    seed_entropy: int
    spawn_key: tuple[int, ...]
    split: str | None = None
    size: tuple[int, int, int] | None = None  # (T, Ny, Nx) after the resolution step

    @property
    def identity(self) -> str:
        return example_identity(self.sources, self.draw)

    def seed_sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence(entropy=self.seed_entropy, spawn_key=self.spawn_key)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "identity": self.identity,
            "draw": self.draw,
            "seed": {"entropy": self.seed_entropy, "spawn_key": list(self.spawn_key)},
            "sources": [s.to_dict() for s in self.sources],
            **({"split": self.split} if self.split is not None else {}),
        }


@dataclass
class Plan:
    examples: list[ExamplePlan]
    signatures: list[tuple[int, int, int]]  # distinct (T, Ny, Nx) among the examples
    skipped: list[str]  # reasons slices or groups could not be used

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """(T, Ny, Nx) common to all examples, None if they differ (or there are none)."""
        return self.signatures[0] if len(self.signatures) == 1 else None


def example_identity(sources, draw: int) -> str:
    return "|".join(f"{s.series.key}:{s.slice.index}" for s in sources) + f"#draw{draw}"


def key_ints(text: str) -> tuple[int, ...]:
    """Four 32-bit integers from SHA-256 of ``text`` (a SeedSequence spawn key)."""
    h = hashlib.sha256(text.encode()).digest()
    return tuple(int.from_bytes(h[i : i + 4], "little") for i in range(0, 16, 4))


def slice_signature(sl: SliceInfo, config: SimConfig) -> tuple[int, int, int] | None:
    """(T, Ny, Nx) the slice will have, or None if it cannot give ``config.frames`` frames."""
    shape = working_shape(sl.shape, sl.acquisition_matrix, config.resolution, config.matrix)
    t = sl.n_frames
    if config.frames is not None:
        if config.frames_mode == "crop" and t < config.frames:
            return None
        t = config.frames
    return (t, *shape)


def _subsets(items: list[Source], m: int, config: SimConfig, rng_key: str) -> list[tuple[Source, ...]]:
    """All M-subsets of ``items`` respecting min distance, or ``combos`` random ones of them."""
    items = sorted(items, key=lambda s: (s.slice.position_mm, s.series.key, s.slice.index))

    def far_enough(group):
        if config.combine == "across-series" or config.min_distance_mm <= 0:
            return True
        pos = [s.slice.position_mm for s in group]
        return all(abs(a - b) >= config.min_distance_mm for a, b in itertools.combinations(pos, 2))

    def distinct_series(group):
        return config.combine != "across-series" or len({s.series.key for s in group}) == len(group)

    total = math.comb(len(items), m)
    if config.combos is not None and total > 50_000:
        # too many to list: rejection-sample distinct valid subsets
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key_ints(rng_key)))
        chosen: dict[tuple[int, ...], tuple[Source, ...]] = {}
        tries = 0
        while len(chosen) < config.combos and tries < 100 * config.combos:
            tries += 1
            idx = tuple(sorted(rng.choice(len(items), size=m, replace=False).tolist()))
            g = tuple(items[i] for i in idx)
            if idx not in chosen and far_enough(g) and distinct_series(g):
                chosen[idx] = g
        return [chosen[k] for k in sorted(chosen)]
    groups = [g for g in itertools.combinations(items, m) if far_enough(g) and distinct_series(g)]
    if config.combos is not None and config.combos < len(groups):
        rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key_ints(rng_key)))
        pick = np.sort(rng.choice(len(groups), size=config.combos, replace=False))
        groups = [groups[i] for i in pick]
    return groups


def plan_examples(catalog: Catalog, config: SimConfig, split_of: Callable[[SeriesInfo], str] | None = None) -> Plan:
    """Every SMS example to simulate, in a deterministic order.

    ``split_of`` assigns each series to a split (by patient); slices of different splits are
    never combined, so ``across-series`` cannot leak a patient into another split.
    """
    m = config.sms
    skipped: list[str] = []
    pools: dict[tuple, list[Source]] = defaultdict(list)
    for se in catalog.series:
        for sl in se.slices:
            sig = slice_signature(sl, config)
            if sig is None:
                skipped.append(
                    f"series {se.key} slice {sl.index}: {sl.n_frames} frames < --frames {config.frames} "
                    f"(use --frames-mode resample)"
                )
                continue
            if config.combine == "within-series":
                group = (se.key,)
            elif config.combine == "within-study":
                normal = None if se.normal is None else tuple(round(v, 2) for v in se.normal)
                group = (se.study_key, normal)
            else:
                group = ("all",)
            split = split_of(se) if split_of else None
            pools[(group, sig, split)].append(Source(se, sl))

    examples: list[ExamplePlan] = []
    signatures = set()
    for (group, sig, split), items in sorted(pools.items(), key=lambda kv: repr(kv[0])):
        if len(items) < m:
            where = "series" if config.combine == "within-series" else "group"
            skipped.append(
                f"{where} {group[0]} ({sig[0]} frames, {sig[1]}x{sig[2]}): {len(items)} compatible "
                f"slice(s) < --sms {m}"
            )
            continue
        # the random-combination stream key leaves out the split, so adding splits does not
        # change which combinations a group draws
        for g in _subsets(items, m, config, repr((group, sig))):
            signatures.add(sig)
            for d in range(config.draws):
                ident = example_identity(g, d)
                examples.append(ExamplePlan(len(examples), g, d, config.seed, key_ints(ident), split, sig))
    return Plan(examples, sorted(signatures), skipped)
