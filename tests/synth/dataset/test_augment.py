"""Augmentations that keep the physics (synth.dataset.augment): they move the images and the
k-means labels together, draw from their own stream, and do exactly what they record."""

from __future__ import annotations

import numpy as np
import pytest

from synth.dataset.augment import AUGMENTS, GAMMA_RANGE, augment_images, augment_rng, check_augment


def example(m=2, t=5, ny=6, nx=6, seed=0):
    rng = np.random.default_rng(seed)
    mags = rng.random((m, t, ny, nx)).astype(np.float32) + 0.1
    labels = [(mags[i] * 7).astype(np.uint8) for i in range(m)]  # a label map that follows the pixels
    return mags, labels


def test_check_augment():
    assert check_augment("gamma, flip") == ("flip", "gamma")  # canonical order
    assert check_augment("none") == check_augment("") == check_augment(None) == ()
    assert check_augment(["roll", "transpose"]) == ("transpose", "roll")
    with pytest.raises(ValueError, match="unknown augmentation 'rotate'.*known: flip, transpose, roll, gamma"):
        check_augment("flip,rotate")


def test_each_kind_does_what_it_records():
    mags, labels = example()
    seen = set()
    for s in range(40):
        out, labs, applied = augment_images(mags, labels, AUGMENTS, np.random.default_rng(s))
        ref = mags
        if applied["flip_y"]:
            ref = ref[:, :, ::-1]
        if applied["flip_x"]:
            ref = ref[:, :, :, ::-1]
        if applied["transpose"]:
            ref = ref.swapaxes(2, 3)
        ref = np.roll(ref, applied["roll"], axis=1)
        # labels moved with the pixels (before the intensity change)
        for i in range(len(labels)):
            np.testing.assert_array_equal(labs[i], (ref[i] * 7).astype(np.uint8))
        g = applied["gamma"]
        assert GAMMA_RANGE[0] <= g <= GAMMA_RANGE[1]
        peak = ref.max()
        np.testing.assert_allclose(out, peak * (ref / peak) ** g, rtol=1e-5)
        assert out.max() == pytest.approx(peak, rel=1e-6) and out.dtype == mags.dtype
        seen.add((applied["flip_y"], applied["flip_x"], applied["transpose"]))
    assert len(seen) == 8  # every flip/transpose combination occurs
    np.testing.assert_array_equal(mags, example()[0])  # inputs untouched


def test_only_the_asked_kinds_and_no_transpose_of_rectangles():
    mags, labels = example(ny=6, nx=4)
    for s in range(10):
        out, labs, applied = augment_images(mags, labels, ("transpose",), np.random.default_rng(s))
        assert applied == {"transpose": False}
        np.testing.assert_array_equal(out, mags)
    out, labs, applied = augment_images(mags, None, (), np.random.default_rng(0))
    assert applied == {} and labs is None
    np.testing.assert_array_equal(out, mags)
    # one kind's draw does not depend on whether the others are on
    a = augment_images(mags, None, ("roll",), np.random.default_rng(5))[2]["roll"]
    b = augment_images(mags, None, AUGMENTS, np.random.default_rng(5))[2]["roll"]
    assert a == b


def test_own_stream_leaves_the_draw_seed_unchanged():
    seed = np.random.SeedSequence(123, spawn_key=(4, 1, 2))
    before = [s.generate_state(2).tolist() for s in seed.spawn(4)]
    seed2 = np.random.SeedSequence(123, spawn_key=(4, 1, 2))
    augment_rng(seed2).random()
    assert [s.generate_state(2).tolist() for s in seed2.spawn(4)] == before
    # deterministic, and not the stream of the simulation's first child (phase)
    fresh = np.random.SeedSequence(123, spawn_key=(4, 1, 2))
    assert augment_rng(seed2).random() == augment_rng(fresh).random()
    assert augment_rng(fresh).random() != np.random.default_rng(fresh.spawn(1)[0]).random()


def test_bad_shape():
    with pytest.raises(ValueError, match=r"\(M, T, Y, X\)"):
        augment_images(np.zeros((3, 4, 5)), None, ("flip",), np.random.default_rng(0))
