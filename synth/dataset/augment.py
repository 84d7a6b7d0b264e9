r"""Augmentations of an example's magnitude images that keep the physics.

On-the-fly synthesis (``zoo.data.SmsDataset`` over a targets store) simulates every training
draw from the store's magnitude images.  An augmentation changes those images **before** the
simulation, so the phase, coil maps, mask, CAIPI encoding and k-space are computed from the
augmented image exactly as from a real one, and the loss compares with the augmented image:
nothing downstream can tell it from another patient's slice.  (Flipping stored k-space instead
would need the mask, the kz table and the coil maps flipped with it.)

Kinds (:data:`AUGMENTS`), each drawn independently per draw:

``flip``
    reverse y with probability 1/2, and x with probability 1/2 (mirror anatomy).
``transpose``
    swap y and x with probability 1/2 (anatomy rotated a quarter turn with a flip; phase
    encoding then runs along the other anatomical axis), square images only: on others it
    does nothing.
``roll``
    a cyclic shift of the frames by a uniform 0..T-1: the cardiac cycle of a cine series
    starts at any phase.  Only for periodic series (cine), not for perfusion.
``gamma``
    magnitudes :math:`p\,(x/p)^\gamma` with ``p`` the peak and :math:`\log\gamma` uniform in
    :math:`[\log 0.8, \log 1.25]`: a different contrast (a global scale would be a no-op, the
    networks' input normalisation removes it).

Every slice of an example gets the same transform (they are one acquisition).  The k-means
labels of the slices (the phase clusters, cached per slice) are moved with the pixels; the
monotone ``gamma`` keeps them a valid clustering.  The random numbers come from their own
stream (:func:`augment_rng`), so the same draw without augmentation is unchanged.
"""

from __future__ import annotations

import math

import numpy as np

AUGMENTS = ("flip", "transpose", "roll", "gamma")
GAMMA_RANGE = (0.8, 1.25)

__all__ = ["AUGMENTS", "GAMMA_RANGE", "augment_images", "augment_rng", "check_augment"]


def check_augment(kinds) -> tuple[str, ...]:
    """``kinds`` (names, or a comma-separated string; ``"none"`` or empty: none) as a tuple in
    :data:`AUGMENTS` order; ValueError naming an unknown one."""
    if isinstance(kinds, str):
        kinds = [] if kinds.strip().lower() in ("", "none") else [k.strip() for k in kinds.split(",")]
    kinds = list(kinds or ())
    bad = [k for k in kinds if k not in AUGMENTS]
    if bad:
        raise ValueError(f"unknown augmentation {', '.join(map(repr, bad))}; known: {', '.join(AUGMENTS)} (or none)")
    return tuple(k for k in AUGMENTS if k in kinds)


def augment_rng(seed: np.random.SeedSequence) -> np.random.Generator:
    """The augmentation's own stream for the draw seeded by ``seed``, independent of the streams
    the simulation spawns from it (``seed`` itself is not advanced)."""
    return np.random.default_rng(np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, 0xA06)))


def augment_images(magnitudes: np.ndarray, labels, kinds, rng: np.random.Generator):
    """Apply the augmentations ``kinds`` to an example.

    Parameters
    ----------
    magnitudes : (M, T, Y, X) real, the slices' magnitude images.
    labels : None, or M integer arrays (T, Y, X) (k-means labels), moved with the pixels.
    kinds : augmentation names (:func:`check_augment`).
    rng : the draw's augmentation stream (:func:`augment_rng`).

    Returns ``(magnitudes, labels, applied)``: new arrays (the inputs are not changed) and a dict
    of what was drawn, e.g. ``{"flip_y": True, "flip_x": False, "transpose": False, "roll": 3,
    "gamma": 1.07}``.  Every kind always draws its numbers, so one kind's draw does not depend on
    whether another is on.
    """
    kinds = check_augment(kinds)
    x = np.asarray(magnitudes)
    if x.ndim != 4:
        raise ValueError(f"magnitudes must be (M, T, Y, X), got shape {x.shape}")
    t, ny, nx = x.shape[1:]
    labs = None if labels is None else [np.asarray(lab) for lab in labels]
    flips = rng.random(2) < 0.5
    swap = bool(rng.random() < 0.5)
    shift = int(rng.integers(t))
    gamma = math.exp(rng.uniform(math.log(GAMMA_RANGE[0]), math.log(GAMMA_RANGE[1])))
    applied: dict = {}

    def move(f):
        nonlocal x, labs
        x = f(x)
        if labs is not None:
            labs = [f(lab[None])[0] for lab in labs]

    if "flip" in kinds:
        applied.update(flip_y=bool(flips[0]), flip_x=bool(flips[1]))
        axes = tuple(a for a, f in zip((2, 3), flips) if f)
        if axes:
            move(lambda a: np.flip(a, axis=axes))
    if "transpose" in kinds:
        applied["transpose"] = swap and ny == nx
        if applied["transpose"]:
            move(lambda a: np.swapaxes(a, 2, 3))
    if "roll" in kinds:
        applied["roll"] = shift
        if shift:
            move(lambda a: np.roll(a, shift, axis=1))
    if "gamma" in kinds:
        applied["gamma"] = gamma
        peak = float(x.max())
        if peak > 0:
            x = (peak * np.power(x / peak, gamma)).astype(x.dtype, copy=False)
    x = np.ascontiguousarray(x)
    if labs is not None:
        labs = [np.ascontiguousarray(lab) for lab in labs]
    return x, labs, applied
