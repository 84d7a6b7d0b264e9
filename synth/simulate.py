r"""One SMS example: working magnitudes -> complex multi-coil CAIPI k-space and its ground truth.

Forward model (paper, Sec. 2; conventions in :mod:`synth.sms`)::

    target[i, t]     = m[i, t] / max(m)                          (M, T, Y, X)  float32
    x[c, i, t]       = target[i, t] * csm[c, i] * exp(j phase[c, i, t])
    kspace[c, t]     = collapse_i( fft2c(x[c, i, t]) ) + noise   (C, T, Ky, Kx) complex64
    mask[t, ky]      = in-plane sampling (R, ACS)                (T, Ky)        bool

The collapse is computed in image space (:func:`synth.sms.collapse_images`, a circular FOV
shift per slice when M divides Ny), so only C*T FFTs are needed instead of C*M*T.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import numpy as np

from synth.coils import coil_maps
from synth.config import SimConfig
from synth.fft import fft2c
from synth.masks import row_mask
from synth.noise import add_noise, noise_sigma
from synth.phase import kmeans_labels, phase_parts
from synth.sms import collapse_images


FRAME_BLOCK = 2


class StageTimer:
    """Accumulates wall time per named stage (for the summary and the benchmark)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t0


def slice_labels(magnitude: np.ndarray, config: SimConfig, slice_key: str) -> np.ndarray | None:
    """k-means labels of one slice's working magnitudes (T, Y, X), seeded by the slice's identity.

    ``slice_key`` is ``"<series key>:<slice index>"``.  Returns None unless ``--phase kmeans``.
    Deterministic, so the same slice gets the same clusters in every example and every worker.
    """
    if config.phase != "kmeans":
        return None
    from synth.combos import key_ints

    ss = np.random.SeedSequence(config.seed, spawn_key=key_ints(f"kmeans|{slice_key}|{config.clusters}"))
    return kmeans_labels(magnitude, config.clusters, np.random.default_rng(ss))


def simulate_example(
    magnitudes: np.ndarray,
    slice_offsets: np.ndarray,
    config: SimConfig,
    seed: np.random.SeedSequence,
    timer: StageTimer | None = None,
    labels=None,
) -> dict[str, np.ndarray]:
    """Simulate one example.

    Parameters
    ----------
    magnitudes : float32 (M, T, Y, X), non-negative working magnitudes (after
        :func:`synth.resolution.prepare`), slices in ascending position.
    slice_offsets : float (M,), slice positions relative to their mean, in units of the FOV
        (coil maps vary smoothly with them).
    config : the simulation parameters.
    seed : the example's seed; four child streams (phase, coils, mask, noise) are spawned in
        that fixed order, so e.g. changing ``--phase`` leaves the masks unchanged.
    labels : per slice int (T, Y, X) k-means labels (see :func:`slice_labels`); computed here
        from the phase stream when None.

    Returns
    -------
    dict with ``kspace`` complex64 (C, T, Ky, Kx), ``mask`` bool (T, Ky), ``target`` float32
    (M, T, Y, X), ``csm`` complex64 (C, M, Y, X), ``phase`` float32 (C, M, T, Y, X) (present even
    when zero), ``scale`` float32 () and ``noise_sigma`` float32 ().
    """
    timer = timer or StageTimer()
    m, t, ny, nx = magnitudes.shape
    c = config.coils
    rng_phase, rng_coils, rng_mask, rng_noise = (np.random.default_rng(s) for s in seed.spawn(4))

    peak = float(magnitudes.max())
    scale = peak if peak > 0 else 1.0
    target = (magnitudes / np.float32(scale)).astype(np.float32)

    with timer("phase"):
        parts = phase_parts(target, c, config.phase, config.clusters, rng_phase, labels=labels)
    with timer("coils"):
        csm = coil_maps(config.csm, c, (ny, nx), np.asarray(slice_offsets, dtype=float), rng_coils)
    with timer("fft_sms"):
        # x[c, i, t] = target * csm * exp(j phase).  Frame blocks (outer) by coils (inner): a
        # block's labels and target stay in cache while all C coils use them, and each coil's
        # arrays (M * block * Y * X) stay in cache through the phasor lookup, the two products,
        # the CAIPI collapse and the FFT, so memory is streamed about once.  The stored phase is
        # filled in the same pass; the grating phasor is folded into the coil map.
        kspace = np.empty((c, t, ny, nx), dtype=np.complex64)
        phase = np.empty((c, m, t, ny, nx), dtype=np.float32)
        sens = []
        for ci in range(c):
            g = parts.grating_phasor(ci)
            sens.append(csm[ci] if g is None else csm[ci] * g)  # (M, Y, X)
        for t0 in range(0, t, FRAME_BLOCK):
            t1 = min(t, t0 + FRAME_BLOCK)
            for ci in range(c):
                parts.phase_block(ci, t0, t1, out=phase[ci, :, t0:t1])
                x = parts.phasor_block(ci, t0, t1, include_grating=False)  # (M, b, Y, X)
                x *= target[:, t0:t1]
                x *= sens[ci][:, None]
                kspace[ci, t0:t1] = fft2c(collapse_images(np.moveaxis(x, 0, 1)))  # (b, M, Y, X) -> (b, Y, X)
    with timer("noise_mask"):
        sigma = 0.0
        if config.snr is not None:
            sigma = noise_sigma(kspace, config.snr)
            kspace = add_noise(kspace, config.snr, rng_noise)
        mask = row_mask(config.mask, t, ny, config.accel, config.acs, rng_mask)
    return {
        "kspace": kspace,
        "mask": mask,
        "target": target,
        "csm": csm,
        "phase": phase,
        "scale": np.float32(scale),
        "noise_sigma": np.float32(sigma),
    }
