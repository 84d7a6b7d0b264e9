r"""One SMS example: working magnitudes -> complex multi-coil CAIPI k-space and its ground truth.

Forward model (paper, Sec. 2; conventions in :mod:`synth.physics.sms`)::

    target[i, t]     = m[i, t] / max(m)                          (M, T, Y, X)  float32
    x[c, i, t]       = target[i, t] * csm[c, i] * exp(j phase[c, i, t])
    kspace[c, t]     = collapse_i( fft2c(x[c, i, t]) ) + noise   (C, T, Ky, Kx) complex64
    mask[t, ky]      = in-plane sampling (R, ACS)                (T, Ky)        bool

    kz[t, ky]        = the kz each row carries (``--caipi``)     (T, Ky)        int8

With the ``row`` CAIPI ordering (kz = n mod M) the collapse is computed in image space
(:func:`synth.physics.sms.collapse_images`, a circular FOV shift per slice when M divides Ny), so only
C*T FFTs are needed instead of C*M*T.  With ``acquired`` the kz of a row depends on the frame's
mask, which no image-space shift reproduces: each slice is transformed and the rows combined with
their own phase (:func:`synth.physics.sms.collapse` with ``kz``), C*M*T FFTs.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.fft

from synth.dataset.config import SimConfig
from synth.physics._jit import kernels
from synth.physics.coils import coil_maps
from synth.physics.fft import centring_ramps, fft2c
from synth.physics.masks import row_mask
from synth.physics.noise import add_noise, noise_sigma
from synth.physics.phase import PhaseParts, compact_labels, kmeans_labels, phase_parts, unit_phasor
from synth.physics.sms import CAIPI_SIGN, collapse, collapse_images, fov_shifts, kz_index, kz_table


# frames per block in Encoder.coils: 4 frames of 224^2 complex64 (3.2 MB) stay in cache while all
# the coils of a group use them; 2 and 4 measured alike alone, 4 slightly faster with 2 workers
FRAME_BLOCK = 4


class StageTimer:
    """Accumulates wall time per named stage (for the summary and the benchmark).

    Thread-safe; a stage timed in several threads at once accumulates the sum of their times.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


def slice_labels(magnitude: np.ndarray, config: SimConfig, slice_key: str) -> np.ndarray | None:
    """k-means labels of one slice's working magnitudes (T, Y, X), seeded by the slice's identity.

    ``slice_key`` is ``"<series key>:<slice index>"``.  Returns None unless ``--phase kmeans``.
    Deterministic, so the same slice gets the same clusters in every example and every worker.
    """
    if config.phase != "kmeans":
        return None
    from synth.dataset.combos import key_ints

    ss = np.random.SeedSequence(config.seed, spawn_key=key_ints(f"kmeans|{slice_key}|{config.clusters}"))
    return compact_labels(kmeans_labels(magnitude, config.clusters, np.random.default_rng(ss)), config.clusters)


class Encoder:
    r"""Computes one example's k-space and stored phase, for any subset of its coils.

    ``coils(indices, targets)`` fills, for each coil ``ci`` in ``indices``, its ``kspace``
    (T, Ky, Kx) with ``fft2c(collapse_images(x[ci, :, t]))`` for every frame t, where
    ``x[c, i, t] = target[i, t] * csm[c, i] * exp(j phase[c, i, t])``, and its ``phase``
    (M, T, Y, X) with ``phase[ci]``.  Each pair is one chunk each in the store; the targets can
    write every block into its chunk file as soon as it is computed, so no whole-example array
    is built and the output goes to the store while it is in cache.  Coils are independent, so
    threads can take disjoint groups.  Work goes in blocks of :data:`FRAME_BLOCK` frames (outer)
    by coils (inner); one coil's block stays in cache from the phasor lookup to the FFT:

    * ``exp(j phase)`` is a lookup in K complex table entries (:class:`synth.physics.phase.PhaseParts`);
      the grating phasor, the CAIPI constant of slice i and the centring ramp
      (:func:`synth.physics.fft.centring_ramps`) are folded into one complex map per coil and slice;
    * the FOV shift of slice i (:func:`synth.physics.sms.collapse_images`) is an accumulation into
      row-shifted views, and the output ramp and the orthonormal scale are applied while the
      FFT's result is copied out.

    With numba (a dependency; see :mod:`synth.physics._jit`), one compiled pass per coil and block
    (:func:`synth.physics._kernels.encode_block`) does the lookups, the products, the stored phase and
    the shifted accumulation, reading each input once; the NumPy route makes about eight passes
    over block-sized arrays, and on a machine whose memory bandwidth two cores already saturate
    (this project's CI machine) that traffic, not arithmetic, set the pace.  Both routes give
    the same values (tests compare them) and the NumPy one remains the fallback.

    Falls back to the k-space route (:func:`synth.physics.sms.collapse_images`) when M does not divide Ny.

    ``kz`` int (T, Ky): the kz of every row (:func:`synth.physics.sms.kz_table`).  None, or ``n mod M``
    everywhere (the ``row`` ordering), takes the routes above; any other kz (``--caipi
    acquired``) the per-slice route of :meth:`_coils_kz`.
    """

    def __init__(self, parts: PhaseParts, target: np.ndarray, csm: np.ndarray, kz: np.ndarray | None = None):
        self.parts, self.target, self.csm = parts, target, csm
        m, t, ny, nx = target.shape
        if kz is not None:
            kz = np.asarray(kz)
            if kz.shape != (t, ny):
                raise ValueError(f"Encoder: kz has shape {kz.shape}, expected (T, Ky) = {(t, ny)}")
            if np.array_equal(kz, np.broadcast_to(kz_index(m, ny), kz.shape)):
                kz = None  # the row ordering: the fast routes compute exactly this
        self.kz = kz
        self.shifts = fov_shifts(m, ny)
        self._jit = None
        if self.shifts is None or self.kz is not None:
            return
        pre_y, post_y = centring_ramps(ny)
        pre_x, post_x = centring_ramps(nx)
        pre = pre_y[:, None] * pre_x[None, :]
        self.post = (post_y[:, None] * post_x[None, :] / np.sqrt(ny * nx)).astype(np.complex64)
        # slice i's rows land shifts[i] rows down: weigh them with the ramp of where they land
        self.weights = [
            (np.exp(CAIPI_SIGN * 2j * np.pi * ((i * (ny // 2)) % m) / m) * np.roll(pre, -int(self.shifts[i]), axis=0))
            .astype(np.complex64)
            for i in range(m)
        ]
        self.tables = None if parts.labels is None else unit_phasor(parts.tables)  # (C, M, K)
        self._jit = kernels()
        if self._jit is not None:
            self._setup_jit(m, t, ny, nx)

    def _setup_jit(self, m, t, ny, nx):
        """Inputs of the compiled block kernel (:func:`synth.physics._kernels.encode_block`).

        For even Ny and Nx the output ramp is a sign checkerboard, i.e. a circular shift of the
        FFT's input by half the matrix: the kernel accumulates every slice straight into rows
        and columns shifted by (Ny/2 + FOV shift, Nx/2), with the signs and the orthonormal
        scale folded into the weights, so the FFT's output is the centred k-space as it is.
        """
        parts = self.parts
        self.even = ny % 2 == 0 and nx % 2 == 0
        shifts = np.asarray(self.shifts, dtype=np.int64)
        if self.even:
            sc = (-1.0) ** (ny // 2 + nx // 2) / np.sqrt(ny * nx)
            self.rows = (shifts + ny // 2) % ny
            self.cx = nx // 2
            self.kweights = [(w * sc).astype(np.complex64) for w in self.weights]
        else:
            self.rows, self.cx, self.kweights = shifts % ny, 0, self.weights
        if parts.labels is None:
            self.klabels = np.zeros((m, t, ny, nx), np.uint8)
            self.ktab_c = np.ones((self.csm.shape[0], m, 1), np.complex64)
            self.ktab_r = np.zeros((self.csm.shape[0], m, 1), np.float32)
        else:
            self.klabels = np.stack(parts.labels)
            self.ktab_c = self.tables
            self.ktab_r = np.ascontiguousarray(parts.tables, dtype=np.float32)
        self.kzero = np.zeros((ny, nx), np.float32)

    @property
    def zero_phase(self) -> bool:
        """True when the stored phase is identically zero (``--phase none``)."""
        return self.parts.labels is None and self.parts.grating is None

    def coil(self, ci: int, kspace, phase) -> None:
        """Fill coil ``ci``'s ``kspace`` (T, Ky, Kx) and ``phase`` (M, T, Y, X); see :meth:`coils`."""
        self.coils([ci], [(kspace, phase)])

    def coils(self, indices, targets) -> None:
        """Fill several coils: ``targets[n] = (kspace, phase)`` of coil ``indices[n]``.

        Targets are arrays, or anything that takes block assignments ``kspace[t0:t1] = block``
        and ``phase[i, t0:t1] = block`` (such as :class:`synth.dataset.store.ChunkFile`, which writes
        each block into its chunk file while it is in cache).  Frame blocks run outer and coils
        inner, so a block's labels and target are read from memory once for all the coils.
        """
        parts, target = self.parts, self.target
        m, t, ny, nx = target.shape
        if self.kz is not None:
            self._coils_kz(indices, targets)
            return
        if self.shifts is None:
            for ci, (kspace, phase) in zip(indices, targets):
                for i, block in enumerate(parts.phase_block(ci, 0, t)):
                    phase[i, 0:t] = block
                x = parts.phasor(ci) * target * self.csm[ci][:, None]  # (M, T, Y, X)
                kspace[0:t] = fft2c(collapse_images(np.moveaxis(x, 0, 1))).astype(np.complex64)
            return
        if self._jit is not None:
            self._coils_jit(indices, targets)
            return
        sens = {ci: self._sens(ci, self.weights) for ci in indices}
        b = min(FRAME_BLOCK, t)
        acc = np.empty((b, ny, nx), np.complex64)  # per call: thread-safe
        tmp = np.empty_like(acc)
        out = np.empty_like(acc)
        pbuf = np.empty((m, b, ny, nx), np.float32)
        tc = np.empty((m, b, ny, nx), np.complex64)
        for t0 in range(0, t, b):
            t1 = min(t, t0 + b)
            a, tb = acc[: t1 - t0], tmp[: t1 - t0]
            # the block's labels as intp and its target as complex64, once for all coils: gathers
            # with intp indices are 1.2-1.4x faster than with the compact stored type, and a
            # complex-by-real product casts the real operand on every call
            lab = None if parts.labels is None else [np.asarray(lb[t0:t1], dtype=np.intp) for lb in parts.labels]
            tgt = tc[:, : t1 - t0]
            tgt[...] = target[:, t0:t1]
            for ci, (kspace, phase) in zip(indices, targets):
                pb = parts.phase_block(ci, t0, t1, out=pbuf[:, : t1 - t0], block_labels=lab)
                for i in range(m):
                    phase[i, t0:t1] = pb[i]
                    dst = a if i == 0 else tb
                    if self.tables is None:
                        np.multiply(tgt[i], sens[ci][i], out=dst)
                    else:
                        np.take(self.tables[ci, i], lab[i], out=dst, mode="clip")
                        dst *= tgt[i]
                        dst *= sens[ci][i]
                    if i:
                        s = int(self.shifts[i])
                        a[:, s:] += tb[:, : ny - s]
                        if s:
                            a[:, :s] += tb[:, ny - s :]
                self._put_fft(a, kspace, t0, t1, out, ramp=True)

    def _coils_kz(self, indices, targets) -> None:
        """:meth:`coils` for a general kz: per coil and block of frames, the M slices' coil
        images are transformed one by one and their rows summed with the phase of each row's
        own kz, ``kspace[t, n] = sum_i exp(-2j pi i kz[t, n] / M) fft2c(x[ci, i, t])[n]``."""
        parts, target = self.parts, self.target
        m, t, ny, nx = target.shape
        b = min(FRAME_BLOCK, t)
        for ci, (kspace, phase) in zip(indices, targets):
            g = parts.grating_phasor(ci)
            tables = None if parts.labels is None else unit_phasor(parts.tables[ci])  # (M, K)
            for t0 in range(0, t, b):
                t1 = min(t, t0 + b)
                pb = parts.phase_block(ci, t0, t1)  # (M, b, Y, X)
                x = np.empty((m, t1 - t0, ny, nx), np.complex64)
                for i in range(m):
                    phase[i, t0:t1] = pb[i]
                    # exp(j phase) as the phasor tables give it (Prepared's other routes do the same)
                    if tables is None:
                        x[i] = 1 if g is None else g
                    else:
                        np.take(tables[i], parts.labels[i][t0:t1], out=x[i], mode="clip")
                        if g is not None:
                            x[i] *= g
                    x[i] *= target[i, t0:t1]
                    x[i] *= self.csm[ci, i]
                k = np.moveaxis(fft2c(x), 0, 1)  # (b, M, Ky, Kx)
                kspace[t0:t1] = collapse(k, self.kz[t0:t1]).astype(np.complex64, copy=False)

    def _sens(self, ci: int, weights) -> np.ndarray:
        """complex64 (M, Y, X): coil ``ci``'s map times ``weights[i]`` per slice, times its grating phasor."""
        sm = np.stack([self.csm[ci, i] * weights[i] for i in range(len(weights))])
        g = self.parts.grating_phasor(ci)
        if g is not None:
            sm *= g
        return sm

    def _put_fft(self, a, kspace, t0: int, t1: int, out, ramp: bool) -> None:
        """``kspace[t0:t1] = fft2(a)``, times the output ramp :attr:`post` when ``ramp``
        (through the scratch ``out`` when ``kspace`` is a block target rather than an array)."""
        f = scipy.fft.fft2(a, overwrite_x=True)
        if not ramp:
            kspace[t0:t1] = f
        elif isinstance(kspace, np.ndarray):
            np.multiply(f, self.post, out=kspace[t0:t1])
        else:
            o = out[: t1 - t0]
            np.multiply(f, self.post, out=o)
            kspace[t0:t1] = o

    def _coils_jit(self, indices, targets) -> None:
        """:meth:`coils` through the compiled kernel: per frame block and coil, one kernel call
        fills the block's stored phase and the FFT's input, then one FFT."""
        parts, target = self.parts, self.target
        m, t, ny, nx = target.shape
        kernel = self._jit.encode_block
        sens = {ci: self._sens(ci, self.kweights) for ci in indices}
        grat = {ci: self.kzero if parts.grating is None else np.ascontiguousarray(parts.grating[ci], np.float32)
                for ci in indices}
        b = min(FRAME_BLOCK, t)
        acc = np.empty((b, ny, nx), np.complex64)
        out = np.empty_like(acc)
        pbuf = np.empty((m, b, ny, nx), np.float32)
        for t0 in range(0, t, b):
            t1 = min(t, t0 + b)
            a, pb = acc[: t1 - t0], pbuf[:, : t1 - t0]
            for ci, (kspace, phase) in zip(indices, targets):
                kernel(self.klabels, target, t0, t1, self.ktab_c[ci], self.ktab_r[ci], sens[ci], grat[ci],
                       self.rows, self.cx, a, pb)
                for i in range(m):
                    phase[i, t0:t1] = pb[i]
                self._put_fft(a, kspace, t0, t1, out, ramp=not self.even)


def encode_into(encoder: Encoder, kspace: np.ndarray, phase: np.ndarray) -> None:
    """All coils into whole-example arrays ``kspace`` (C, T, Ky, Kx) and ``phase`` (C, M, T, Y, X)."""
    c = kspace.shape[0]
    encoder.coils(range(c), [(kspace[ci], phase[ci]) for ci in range(c)])


@dataclass
class Prepared:
    """One example with everything drawn and computed except its per-coil arrays.

    ``arrays`` holds ``mask``, ``kz``, ``target``, ``csm``, ``scale`` and ``noise_sigma``;
    :meth:`coil` computes coil ``ci``'s ``kspace`` (T, Ky, Kx) and ``phase`` (M, T, Y, X), which
    are one store chunk each, so a writer can take them coil by coil while they are in cache
    (coils are independent: any order, any thread).  :meth:`full` gives the whole example.
    With noise (``--snr``) the noise level depends on all coils, so the k-space is computed in
    full up front and :meth:`coil` copies from it.
    """

    encoder: Encoder
    arrays: dict[str, np.ndarray]
    n_coils: int
    _full: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def coil_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Shapes of one coil's ``kspace`` (T, Ky, Kx) and ``phase`` (M, T, Y, X)."""
        m, t, ny, nx = self.encoder.target.shape
        return (t, ny, nx), (m, t, ny, nx)

    @property
    def zero_phase(self) -> bool:
        """True when the stored phase is identically zero (``--phase none``)."""
        return self.encoder.zero_phase

    def coil(self, ci: int, kspace=None, phase=None):
        """Coil ``ci``'s (kspace, phase), written into the given targets (arrays, or block
        targets as :meth:`Encoder.coils` takes) when given."""
        ks, ps = self.coil_shapes
        kspace = np.empty(ks, np.complex64) if kspace is None else kspace
        phase = np.empty(ps, np.float32) if phase is None else phase
        self.coils([ci], [(kspace, phase)])
        return kspace, phase

    def coils(self, indices, targets) -> None:
        """Fill ``targets[n] = (kspace, phase)`` with coil ``indices[n]`` (see :meth:`Encoder.coils`)."""
        if self._full is None:
            self.encoder.coils(indices, targets)
            return
        ks, ps = self.coil_shapes
        for ci, (kspace, phase) in zip(indices, targets):
            kspace[0 : ks[0]] = self._full[0][ci]
            for i in range(ps[0]):
                phase[i, 0 : ps[1]] = self._full[1][ci, i]

    def full(self, timer: StageTimer | None = None) -> dict[str, np.ndarray]:
        """All arrays of the example (the :func:`simulate_example` dict)."""
        if self._full is not None:
            kspace, phase = self._full
        else:
            ks, ps = self.coil_shapes
            kspace = np.empty((self.n_coils,) + ks, np.complex64)
            phase = np.empty((self.n_coils,) + ps, np.float32)
            with (timer or StageTimer())("fft_sms"):
                encode_into(self.encoder, kspace, phase)
        return {"kspace": kspace, "phase": phase, **self.arrays}


def draw_seed(record: dict, epoch: int = 0, seed: int = 0) -> np.random.SeedSequence:
    """The seed of one synthetic draw of an example (phase, coils, mask, noise).

    ``record`` is the example's provenance seed, ``{"entropy", "spawn_key"}`` (the store's
    ``attrs["examples"][n]["seed"]``).  ``epoch == 0 and seed == 0`` is the draw the store was
    made with -- the same k-space ``dicom2kspace`` writes; any other ``(seed, epoch)`` is a fresh
    draw that depends only on ``(record, seed, epoch)``, never on worker count or order.
    """
    key = tuple(int(k) for k in record["spawn_key"])
    if int(epoch) == 0 and int(seed) == 0:
        return np.random.SeedSequence(entropy=int(record["entropy"]), spawn_key=key)
    return np.random.SeedSequence(entropy=int(record["entropy"]), spawn_key=key + (int(seed), int(epoch)))


def prepare_example(
    magnitudes: np.ndarray,
    slice_offsets: np.ndarray,
    config: SimConfig,
    seed: np.random.SeedSequence,
    timer: StageTimer | None = None,
    labels=None,
) -> Prepared:
    """Draw and compute one example up to its per-coil arrays; see :func:`simulate_example`."""
    timer = timer or StageTimer()
    m, t, ny, nx = magnitudes.shape
    c = config.coils
    rng_phase, rng_coils, rng_mask, rng_noise = (np.random.default_rng(s) for s in seed.spawn(4))

    peak = float(magnitudes.max())
    scale = peak if peak > 0 else 1.0
    target = np.divide(magnitudes, np.float32(scale), dtype=np.float32)  # one pass, float32

    with timer("phase"):
        parts = phase_parts(target, c, config.phase, config.clusters, rng_phase, labels=labels)
    with timer("coils"):
        csm = coil_maps(config.csm, c, (ny, nx), np.asarray(slice_offsets, dtype=float), rng_coils)
    with timer("noise_mask"):
        # the mask's own stream: drawing it before the encoding changes no value
        mask = row_mask(config.mask, t, ny, config.accel, config.acs, rng_mask)
        kz = kz_table(config.caipi, mask, m)
    encoder = Encoder(parts, target, csm, kz)
    full = None
    sigma = 0.0
    if config.snr is not None:
        kspace = np.empty((c, t, ny, nx), dtype=np.complex64)
        phase = np.empty((c, m, t, ny, nx), dtype=np.float32)
        with timer("fft_sms"):
            encode_into(encoder, kspace, phase)
        with timer("noise_mask"):
            sigma = noise_sigma(kspace, config.snr)
            full = (add_noise(kspace, config.snr, rng_noise), phase)
    arrays = {
        "mask": mask,
        "kz": kz,
        "target": target,
        "csm": csm,
        "scale": np.float32(scale),
        "noise_sigma": np.float32(sigma),
        "offsets": np.asarray(slice_offsets, dtype=np.float64),
    }
    return Prepared(encoder, arrays, c, full)


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
        :func:`synth.io.resolution.prepare`), slices in ascending position.
    slice_offsets : float (M,), slice positions relative to their mean, in units of the FOV
        (coil maps vary smoothly with them).
    config : the simulation parameters.
    seed : the example's seed; four child streams (phase, coils, mask, noise) are spawned in
        that fixed order, so e.g. changing ``--phase`` leaves the masks unchanged.
    labels : per slice int (T, Y, X) k-means labels (see :func:`slice_labels`); computed here
        from the phase stream when None.

    Returns
    -------
    dict with ``kspace`` complex64 (C, T, Ky, Kx), ``mask`` bool (T, Ky), ``kz`` int8 (T, Ky)
    (the kz of every row under ``config.caipi``, :func:`synth.physics.sms.kz_table`), ``target`` float32
    (M, T, Y, X), ``csm`` complex64 (C, M, Y, X), ``phase`` float32 (C, M, T, Y, X) (present even
    when zero), ``scale`` float32 (), ``noise_sigma`` float32 () and ``offsets`` float64 (M,)
    (``slice_offsets``, recorded so the example can be simulated again).  :func:`prepare_example`
    gives the same example coil by coil.
    """
    return prepare_example(magnitudes, slice_offsets, config, seed, timer, labels).full(timer)
