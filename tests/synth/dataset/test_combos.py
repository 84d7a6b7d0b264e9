"""Planning SMS examples: subsets, minimum distance, random combos, draws, seeds."""

import math

import pytest

from synth.dataset.combos import plan_examples
from synth.dataset.config import SimConfig
from synth.io.dicom import scan

SALT = b"combos"


@pytest.fixture(scope="module")
def catalog(phantom_cine):
    return scan([phantom_cine], salt=SALT)  # 4 slices, 8 mm apart


def test_all_subsets(catalog):
    for m in (1, 2, 3, 4):
        plan = plan_examples(catalog, SimConfig(sms=m))
        assert len(plan.examples) == math.comb(4, m)
        for ex in plan.examples:
            pos = [s.slice.position_mm for s in ex.sources]
            assert pos == sorted(pos) and len(set(pos)) == m


def test_min_distance(catalog):
    plan = plan_examples(catalog, SimConfig(sms=2, min_distance_mm=10))
    pairs = {tuple(s.slice.index for s in ex.sources) for ex in plan.examples}
    assert pairs == {(0, 2), (0, 3), (1, 3)}


def test_random_combos_and_draws(catalog):
    full = plan_examples(catalog, SimConfig(sms=2, seed=4))
    some = plan_examples(catalog, SimConfig(sms=2, seed=4, combos=3, draws=2))
    assert len(some.examples) == 6
    ids_full = {ex.identity for ex in full.examples}
    assert {ex.identity.replace("#draw1", "#draw0") for ex in some.examples} <= ids_full
    assert len({ex.spawn_key for ex in some.examples}) == 6  # every draw has its own seed
    again = plan_examples(catalog, SimConfig(sms=2, seed=4, combos=3, draws=2))
    assert [e.identity for e in again.examples] == [e.identity for e in some.examples]


def test_frames_crop_too_short_is_reported(catalog):
    plan = plan_examples(catalog, SimConfig(sms=2, frames=50))
    assert not plan.examples and any("--frames 50" in s for s in plan.skipped)
    plan = plan_examples(catalog, SimConfig(sms=2, frames=50, frames_mode="resample"))
    assert len(plan.examples) == 6 and plan.shape[0] == 50
