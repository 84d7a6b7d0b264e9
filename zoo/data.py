r"""A PyTorch dataset over an smssynth store (``docs/store-format.md``): training examples in 3D k-space.

Each item is one SMS example, turned into the 3D-Fourier form that the models reconstruct
(:mod:`zoo.physics`): the measured collapsed k-space placed at each row's ``kz`` (the store's
``kz`` array; ``n mod M`` for 1.0 stores), its 3D mask, the
zero-filled image, the complex coil images built from the store's ``target``, ``csm`` and
``phase`` through the store's forward model ``x_c = target * csm_c * exp(j phase_c)``, and the
truth everything is scored against.

The truth is the image
----------------------
``target`` is **always the store's target**, the magnitude image that came from the DICOM,
whatever the coil mode.  It equals the root-sum-of-squares (RSS) of the coil images, because
sum_c |csm_c|^2 = 1.  The models reconstruct one complex image per (virtual) coil; the loss
(:mod:`zoo.train.losses`), validation (:func:`zoo.train.evaluate_examples`), :mod:`zoo.eval.recon` and
:mod:`zoo.eval.evaluate` turn those into a magnitude by RSS over the coil axis
(:func:`zoo.train.rss_magnitude`) and compare it with ``target``.  The complex ``truth`` (the
coil images in the item's coil basis) is kept for diagnostics and tests only; nothing is scored
against it.

Coil modes (:class:`DataConfig`)
--------------------------------
``compressed`` with ``coils = K`` (1..C)
    SVD coil compression to K virtual coils: ``W`` (C, K) are the K dominant left singular
    vectors of the calibration data, **acquired data only** (:func:`coil_compression_weights`:
    the fully sampled centre rows of the collapsed k-space).  The same projection ``W^H`` is
    applied to the measured k-space and to the coil images, so the compressed truth and data
    obey the same forward model exactly (data consistency stays exact).  ``k3``/``x0``/``truth``
    are (K, M, T, ...).  The RSS of the K compressed coil images is ``target * ||W^H s||``, with
    ``s`` the vector of the C coils' sensitivities ``csm_c exp(j phase_c)`` at a pixel:
    ``<= target`` (``W`` has orthonormal columns), equal where ``s`` lies in the span of ``W``
    -- everywhere when K = C, where ``W`` is unitary.  What a smaller K costs is that shading
    ``||W^H s|| < 1`` (K = 1: ``|s_v|``, mean ~0.6 on tissue with k-means phase), which the
    network must undo to match ``target``; what it gains is compute, a step costing about K/C
    of a per-coil step
    (README, "The truth is the image; coil compression").
``virtual``
    Alias of ``compressed`` with K = 1 (the paper's "no coil sensitivity maps" setting) whose
    items have no coil axis: ``k3``/``x0``/``truth`` are (M, T, ...).  The weights are
    :func:`virtual_coil_weights` (the first column of :func:`coil_compression_weights`).
``per-coil`` (the default)
    K = C with the coils as measured (``W = I``): ``k3``/``x0``/``truth`` are (C, M, T, ...).

Normalisation
-------------
The store normalises each example's ``target`` to max 1 over (M, T, Y, X); the items are not
rescaled (the model's input scale is :func:`normalize_batch`'s, below).  ``|truth_v| <= target``
for every (virtual) coil ``v``.  Because ``W`` has orthonormal columns, compressed data carry
the store's noise level ``noise_sigma`` unchanged (i.i.d. over the virtual coils).  ``x0`` and
``k3`` share the truth's scale (orthonormal FFTs).

Input normalisation (:func:`normalize_batch`, :func:`denormalize`)
------------------------------------------------------------------
The models do not normalise their input, and a ReLU network with biases is not scale
equivariant, so every example is divided by one positive scale before the model and the output
multiplied back: ``s = quantile(|x0|, 0.99)`` over all of the example's (C,) M, T, Y, X, with
``x0`` the zero-filled image.  ``x0``, ``k3``, ``truth`` and ``target`` are divided by the same
``s``; data consistency stays exact because ``k3`` and ``x0`` are scaled together and the
physics is linear.  The 99th percentile (not the max) ignores a few bright aliased pixels; it is
computed from the measured data only, so inference (``recon``, ``evaluate``) applies it the same
way.  The loss is computed on the normalised scale; metrics on the store's scale (after
:func:`denormalize`).

It lives here, under everything that applies it: training (``zoo.train``, which re-exports it),
inference and evaluation, and the weights' record of the quantile
(:class:`zoo.checkpoint.Normalization`).

Masks
-----
``stored`` uses the store's ``mask`` and ``kz``.  ``fresh`` draws a new in-plane mask per epoch
with the simulator's generator :func:`synth.physics.masks.row_mask` and ``np.random.default_rng([seed,
epoch, store_index])``, so a mask depends only on (seed, epoch, example) -- not on the worker
count or order; by default of CRNN-MRI's variable-density kind (``vd``) with the store's R and
ACS.  The store's k-space holds every ky row, so any mask can be applied as long as the rows keep
their kz: with the ``row`` CAIPI ordering (kz = n mod M) for both the store and the fresh mask,
the stored k-space is used.  Otherwise -- a fresh mask under the ``acquired`` ordering, whose kz
follows the new mask's acquisition order, or a store made with ``acquired`` -- the measurement is
re-simulated from ``target``, ``csm`` and ``phase`` with the fresh kz (:func:`simulate_kspace`),
plus complex Gaussian noise of the store's ``noise_sigma`` from
``np.random.default_rng([seed, epoch, store_index, 1])``.

Worker safety: no zarr handle is kept across pickling; each process opens the store on its first
read (``DataLoader`` workers with fork or spawn).  Call :meth:`SmsDataset.set_epoch` before an
epoch's iterator is created (with ``persistent_workers=True`` workers keep the epoch they started
with).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from synth.dataset.augment import augment_images, augment_rng, check_augment
from synth.dataset.store import Store
from synth.errors import ConfigError, StoreError
from synth.physics.masks import KINDS as MASK_KINDS
from synth.physics.masks import row_mask
from synth.physics.sms import CAIPI_ORDERS, SmsForward, kz_table
from zoo import physics

COIL_MODES = ("virtual", "compressed", "per-coil")
MASK_SOURCES = ("stored", "fresh")
SYNTHESIS = ("stored", "on-the-fly")
FRESH_MASK_KIND = "vd"  # CRNN-MRI's variable-density random lines, drawn anew per frame and epoch


@dataclass(frozen=True)
class DataConfig:
    """How a store's examples become training items (validated on construction).

    Attributes
    ----------
    coil_mode : ``per-coil`` (every coil as measured, K = C; the default), ``compressed``
        (``coils`` virtual coils from the acquired data) or ``virtual`` (alias of ``compressed``
        with one coil, items without a coil axis).  See the module doc; the default is K = C
        because it is the only K whose coil images have the target as their RSS (the README's
        "coil compression" table measures what a smaller K saves and costs).
    coils : K, the number of virtual coils of ``compressed`` (1..C, checked against the store by
        :class:`SmsDataset`); must be None (or 1 for ``virtual``) in the other modes.
    mask : ``stored`` (the store's mask) or ``fresh`` (a new mask per epoch, seeded).
    accel, acs, mask_kind, caipi : R, ACS rows, kind (``vd``/``uniform``/``random``) and CAIPI
        ordering (``row``/``acquired``) of a fresh mask (only with ``mask="fresh"``).  None: the
        store's ``params`` for R, ACS and the ordering (``row`` for 1.0 stores); ``vd`` for the
        kind, CRNN-MRI's masks, whatever the store's.
    split : keep only examples whose provenance (``attrs["examples"]``) has this ``split``; None = all.
    seed : root seed of the fresh masks, and of the on-the-fly draws.
    synthesis : ``stored`` (the store's k-space, phase and coil maps) or ``on-the-fly`` (phase,
        coil maps, mask and noise simulated anew for every (seed, epoch, example) with the
        simulator's own code and the store's recorded parameters; module doc).  None: ``stored``
        for a k-space store, ``on-the-fly`` for a targets store (which holds only images).
    augment : augmentations of the images before each on-the-fly draw, any of ``flip``,
        ``transpose``, ``roll`` (periodic cine only), ``gamma`` (:mod:`synth.dataset.augment`);
        empty (the default): none.  Needs on-the-fly synthesis; validation never augments.
    """

    coil_mode: str = "per-coil"
    coils: int | None = None
    mask: str = "stored"
    accel: int | None = None
    acs: int | None = None
    mask_kind: str | None = None
    caipi: str | None = None
    split: str | None = None
    seed: int = 0
    synthesis: str | None = None
    augment: tuple[str, ...] = ()

    def __post_init__(self):
        def need(cond, msg):
            if not cond:
                raise ConfigError(f"DataConfig: {msg}")

        try:
            object.__setattr__(self, "augment", check_augment(self.augment))  # a YAML/JSON list becomes a tuple
        except (TypeError, ValueError) as e:
            need(False, f"augment: {e}")

        need(self.coil_mode in COIL_MODES, f"coil_mode must be one of {COIL_MODES}, got {self.coil_mode!r}")
        k = self.coils
        k_ok = k is None or (isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1)
        need(k_ok, f"coils must be an integer >= 1 (the number of virtual coils), got {k!r}")
        need(self.coil_mode != "compressed" or k is not None,
             "coil_mode='compressed' needs coils=K, the number of virtual coils (1..C; "
             "smssynth train --virtual-coils K, or data.coils in --config)")
        need(self.coil_mode != "virtual" or k in (None, 1),
             f"coil_mode='virtual' is one virtual coil; got coils={k} (use coil_mode='compressed' for K > 1)")
        need(self.coil_mode != "per-coil" or k is None,
             f"coil_mode='per-coil' keeps all C coils; coils must be None, got {k} "
             f"(use coil_mode='compressed' for K virtual coils)")
        need(self.mask in MASK_SOURCES, f"mask must be one of {MASK_SOURCES}, got {self.mask!r}")
        fresh_only = {k: v for k, v in (("accel", self.accel), ("acs", self.acs), ("mask_kind", self.mask_kind),
                                        ("caipi", self.caipi)) if v is not None}
        need(self.mask == "fresh" or not fresh_only,
             f"{sorted(fresh_only)} only apply to mask='fresh'; set mask='fresh' or leave them None")
        need(self.accel is None or int(self.accel) >= 1, f"accel must be >= 1, got {self.accel}")
        need(self.acs is None or int(self.acs) >= 0, f"acs must be >= 0, got {self.acs}")
        need(self.mask_kind is None or self.mask_kind in MASK_KINDS,
             f"mask_kind must be one of {MASK_KINDS} or None, got {self.mask_kind!r}")
        need(self.caipi is None or self.caipi in CAIPI_ORDERS,
             f"caipi must be one of {CAIPI_ORDERS} or None, got {self.caipi!r}")
        need(self.split is None or isinstance(self.split, str), f"split must be a string or None, got {self.split!r}")
        need(isinstance(self.seed, (int, np.integer)) and self.seed >= 0,
             f"seed must be an int >= 0, got {self.seed!r}")
        need(self.synthesis is None or self.synthesis in SYNTHESIS,
             f"synthesis must be one of {SYNTHESIS} or None, got {self.synthesis!r}")
        need(not self.augment or self.synthesis in (None, "on-the-fly"),
             f"augment {list(self.augment)} changes the images before an on-the-fly draw; "
             f"it needs synthesis='on-the-fly' (smssynth train --synthesis on-the-fly), not {self.synthesis!r}")
        need(self.synthesis != "on-the-fly" or self.mask == "stored",
             "synthesis='on-the-fly' draws its own mask (the store's recorded mask kind, R, ACS and CAIPI "
             "ordering) every epoch; leave mask='stored'")


def coil_label(coil_mode: str, coils: int | None = None) -> str:
    """Short name of a coil mode for tables and messages: ``virtual``, ``per-coil``, ``compressed K=4``."""
    return f"compressed K={coils}" if coil_mode == "compressed" else coil_mode


def coil_compression_weights(kspace: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Coil-compression matrix from the acquired calibration data (SVD coil compression).

    Parameters
    ----------
    kspace : complex (C, T, Ky, Kx)
        Collapsed multi-coil k-space (only sampled rows are read).
    mask : bool (T, Ky)
        In-plane sampled rows.
    k : int, 1..C
        Number of virtual coils.

    Returns
    -------
    W : complex64 (C, K)
        The ``k`` dominant left singular vectors of the calibration data matrix (C, samples), in
        order of decreasing singular value: the contiguous block of rows sampled in **every**
        frame around the DC row ``Ky // 2`` (the ACS), all frames and kx.  If the DC row is not
        sampled in every frame (no ACS), all sampled rows are used.  Orthonormal columns
        (``W^H W = I``; unitary when K = C); each column's phase is fixed by making its
        largest-magnitude entry real positive.  Virtual coil ``v`` is ``sum_c conj(W[c, v]) y_c``,
        i.e. ``W^H y`` (Huang et al., "Software compression for partially parallel imaging with
        multichannels", MRI 2008; Buehrer et al., MRM 2007).
    """
    c, _, ny, _ = kspace.shape
    if not (isinstance(k, (int, np.integer)) and 1 <= k <= c):
        raise ConfigError(f"coil compression: the number of virtual coils must be 1..{c} (the store's coils), "
                          f"got {k!r}")
    always = np.asarray(mask, bool).all(axis=0)
    dc = ny // 2
    if always[dc]:
        lo, hi = dc, dc + 1
        while lo > 0 and always[lo - 1]:
            lo -= 1
        while hi < ny and always[hi]:
            hi += 1
        calib = kspace[:, :, lo:hi, :]
    else:
        calib = kspace[:, mask, :]  # (C, sampled rows over all frames, Kx)
    d = calib.reshape(c, -1).astype(np.complex128)
    # left singular vectors of d = eigenvectors of the C x C Gram matrix (cheap: C is small)
    _, vecs = np.linalg.eigh(d @ d.conj().T)  # ascending eigenvalues
    w = vecs[:, ::-1][:, :k]
    cols = np.arange(k)
    big = np.abs(w).argmax(axis=0)
    top = w[big, cols]
    w = w * np.where(top != 0, np.abs(top) / np.where(top != 0, top, 1), 1)
    w = w / np.linalg.norm(w, axis=0)
    w[big, cols] = np.abs(w[big, cols])  # exactly real (the product above leaves ~1e-17 imaginary parts)
    return w.astype(np.complex64)


def virtual_coil_weights(kspace: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The one-virtual-coil weights ``w`` complex64 (C,): the first column of
    :func:`coil_compression_weights` (``virtual`` mode; the virtual coil is ``sum_c conj(w_c) y_c``)."""
    return coil_compression_weights(kspace, mask, 1)[:, 0]


def simulate_kspace(target: np.ndarray, csm: np.ndarray, phase: np.ndarray | None, kz: np.ndarray,
                    sigma: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """The store's measurement of one example for a given kz, through its documented forward model.

    Parameters
    ----------
    target : float32 (M, T, Y, X)
    csm : complex64 (C, M, Y, X)
    phase : float32 (C, M, T, Y, X) radians, or None (phase model ``none``)
    kz : int (T, Ky)
        The kz of every row (:func:`synth.physics.sms.kz_table`).
    sigma : float
        Standard deviation of complex circular Gaussian noise, ``E|n|^2 = sigma^2`` (the store's
        ``noise_sigma``); 0 = none.
    rng : numpy.random.Generator
        Source of the noise (required when ``sigma > 0``).

    Returns
    -------
    kspace : complex64 (C, T, Ky, Kx)
        ``sum_i exp(-2j pi i kz[t,n]/M) fft2c(target[i] csm[c,i] exp(j phase[c,i]))[t, n] + noise``
        (:class:`synth.physics.sms.SmsForward` with ``kz``): every row, as the store's ``kspace``.
    """
    x = target[None] * csm[:, :, None]  # (C, M, T, Y, X)
    if phase is not None:
        x = x * np.exp(1j * phase)
    x = x.astype(np.complex64, copy=False)
    y = SmsForward(x.shape, None, kz)(x).astype(np.complex64, copy=False)
    if sigma > 0:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"simulate_kspace: noise needs a numpy.random.Generator, got {type(rng).__name__}")
        flat = y.reshape(-1).view(np.float32)  # (real, imag) interleaved
        flat += rng.standard_normal(flat.size, dtype=np.float32) * np.float32(sigma / np.sqrt(2.0))
    return y


class SmsDataset(Dataset):
    """Examples of an smssynth store as 3D k-space training items.

    Parameters
    ----------
    store_path : path or URL of the store.
    config : :class:`DataConfig`.

    Only complete examples (``complete`` true when the dataset is built) of the chosen split are
    indexed; ``dataset.indices[i]`` is the store index of item ``i``.

    Items (``__getitem__``), with ``L = ()`` for ``virtual``, ``(K,)`` for ``compressed`` and
    ``(C,)`` for ``per-coil`` (``dataset.n_coils`` is K: 1, ``coils`` or C):

    ======== ============================ ========= ==================================================
    key      shape                        dtype     meaning
    ======== ============================ ========= ==================================================
    k3       (*L, M, T, Ky, Kx)           complex64 measured 3D k-space, ``y / sqrt(M)`` at each row's kz
                                                    on sampled rows, 0 elsewhere (:func:`physics.to_3d_data`)
    mask3    (M, T, Ky, 1)                bool      3D sampling mask
    kz       (T, Ky)                      int64     the kz of every row (the store's ``kz``; ``n mod M``
                                                    for a 1.0 store; the fresh mask's under ``mask="fresh"``)
    x0       (*L, M, T, Y, X)             complex64 zero-filled image ``ifft3(k3)``
    truth    (*L, M, T, Y, X)             complex64 coil images in the item's coil basis, ``W^H x``
                                                    (diagnostics only; never scored against; for a
                                                    measured store, ``target * csm`` with its ESPIRiT maps)
    target   (M, T, Y, X)                 float32   the store's ``target`` in every coil mode: what every
                                                    loss and metric compares the RSS magnitude with
    index    ()                           int64     store index of the example
    ======== ============================ ========= ==================================================
    """

    def __init__(self, store_path: str | Path, config: DataConfig = DataConfig()):
        self.store_path = str(store_path)
        self.config = config
        store = Store.open(self.store_path)  # validates the format; not kept (see _open)
        self.dims = store.dims
        self.m = int(self.dims["M"])
        self.params = store.params
        self.store_caipi = store.caipi  # the stored k-space's CAIPI ordering ("row" for 1.0 stores)
        self.has_phase = "phase" in store.root
        self.synthesis = config.synthesis or ("on-the-fly" if store.kind == "targets" else "stored")
        self._sim = None
        self.measured = store.source == "measured"  # kspace2sms: real coil data, no phase array
        if self.synthesis == "on-the-fly" and self.measured:
            raise ConfigError(f"{self.store_path}: a store of measured k-space (kspace2sms) cannot be simulated on "
                              f"the fly; use synthesis='stored'")
        if config.augment and self.synthesis != "on-the-fly":
            raise ConfigError(f"{self.store_path}: augment {list(config.augment)} changes the images before an "
                              f"on-the-fly draw, and this store is read as stored k-space; use a targets store "
                              f"or synthesis='on-the-fly' (smssynth train --synthesis on-the-fly)")
        if self.synthesis == "on-the-fly":
            self._sim = self._sim_setup(store)
        elif store.kind == "targets":
            raise ConfigError(
                f"{self.store_path}: a targets store holds only images; use synthesis='on-the-fly' "
                f"(smssynth train --synthesis on-the-fly) to simulate its k-space"
            )
        if self._sim is None and not self.has_phase and self.params.get("phase") != "none":
            raise StoreError(
                f"{self.store_path}: the store has no 'phase' array (it was made with --no-phase), but "
                f"the dataset builds the complex coil images (item 'truth') from target, csm and phase; "
                f"regenerate the store without --no-phase"
            )
        self.n_coils = self._resolve_coils()
        self._fresh = self._fresh_mask_args() if config.mask == "fresh" else None
        self.indices = self._select(store)
        self.epoch = 0
        self._store: Store | None = None
        self._pid: int | None = None

    # --- construction ---

    def _sim_setup(self, store: Store) -> dict:
        """What on-the-fly synthesis needs: the simulation parameters and each example's seed."""
        from synth.dataset.config import SimConfig

        try:
            cfg = SimConfig.from_dict({**self.params, "targets_only": False})
        except (ConfigError, TypeError) as e:
            raise StoreError(f"{self.store_path}: the store's params cannot drive a simulation ({e})") from None
        if store.kind != "targets" and "offsets" not in store.root:
            raise StoreError(
                f"{self.store_path}: on-the-fly synthesis needs each example's slice offsets, which format "
                f"{store.attrs.get('format_version')} stores lack; regenerate the store (or a --targets-only one)"
            )
        prov = store.attrs.get("examples", [])
        seeds, keys = {}, {}
        for j, e in enumerate(prov):
            i = int(e.get("index", j))
            if "seed" not in e:
                raise StoreError(f"{self.store_path}: example {i} records no seed; regenerate the store")
            seeds[i] = e["seed"]
            keys[i] = [f"{src['series']}:{src['slice']}" for src in e.get("sources", [])]
        if int(cfg.coils) != int(self.dims["C"]):
            raise StoreError(f"{self.store_path}: params say {cfg.coils} coils, dims say {self.dims['C']}")
        return {"config": cfg, "seeds": seeds, "slice_keys": keys, "labels": {}}

    def simulate(self, index: int) -> dict[str, np.ndarray]:
        """One on-the-fly draw of store example ``index`` in the current epoch: the arrays
        ``dicom2kspace`` would write for it (``kspace``, ``mask``, ``kz``, ``target``, ``csm``,
        ``phase``, ``noise_sigma``...), from :func:`synth.dataset.simulate.draw_seed` of (the example's
        recorded seed, ``config.seed``, epoch).  Epoch 0 with seed 0 is the store's own draw."""
        from synth.dataset.simulate import draw_seed, prepare_example, slice_labels

        sim = self._sim
        cfg = sim["config"]
        t = self._open().targets(index)
        labels = t["labels"]
        if labels is None and cfg.phase == "kmeans":  # a k-space store: cluster its target, once per slice
            cache = sim["labels"]
            keys = sim["slice_keys"].get(index) or [f"example{index}:{i}" for i in range(self.m)]
            labels = []
            for i, key in enumerate(keys):
                if key not in cache:
                    cache[key] = slice_labels(t["magnitudes"][i], cfg, key)
                labels.append(cache[key])
        seed = draw_seed(sim["seeds"][index], self.epoch, int(self.config.seed))
        magnitudes = t["magnitudes"]
        if self.config.augment:  # before the simulation, so everything is computed from the new image
            magnitudes, labels, _ = augment_images(magnitudes, labels, self.config.augment, augment_rng(seed))
        return prepare_example(magnitudes, t["offsets"], cfg, seed, labels=labels).full()

    def _resolve_coils(self) -> int:
        """K, the number of coils of the items: 1 (virtual), ``coils`` (compressed) or C (per-coil)."""
        c, mode = int(self.dims["C"]), self.config.coil_mode
        if mode == "per-coil":
            return c
        k = 1 if mode == "virtual" else int(self.config.coils)
        if k > c:
            raise ConfigError(f"{self.store_path}: coils={k} virtual coils asked for, but the store has {c} coils; "
                              f"choose coils between 1 and {c}")
        return k

    def _fresh_mask_args(self) -> tuple[str, int, int, str]:
        """(kind, R, ACS, CAIPI ordering) of the fresh masks (:class:`DataConfig`)."""
        cfg, p = self.config, self.params

        def pick(value, key):
            if value is not None:
                return value
            if key not in p:
                raise ConfigError(
                    f"{self.store_path}: mask='fresh' needs {key!r}, which the store's params lack; "
                    f"set it in DataConfig"
                )
            return p[key]

        caipi = cfg.caipi if cfg.caipi is not None else self.store_caipi
        args = (cfg.mask_kind or FRESH_MASK_KIND, int(pick(cfg.accel, "accel")), int(pick(cfg.acs, "acs")), caipi)
        # fail here, not in a worker: a throwaway draw validates R and ACS against Ky
        row_mask(args[0], self.dims["T"], self.dims["Ky"], args[1], args[2], np.random.default_rng(0))
        return args

    @property
    def resimulates(self) -> bool:
        """True when items re-simulate their k-space (fresh masks whose rows may carry another kz
        than the stored k-space's: see the module doc, "Masks")."""
        return self._fresh is not None and self.m > 1 and not (self._fresh[3] == "row" == self.store_caipi)

    def _select(self, store: Store) -> list[int]:
        keep = [int(i) for i in np.flatnonzero(store.complete())]
        split = self.config.split
        if split is not None:
            prov = {int(e.get("index", j)): e for j, e in enumerate(store.attrs.get("examples", []))}
            have = sorted({str(e["split"]) for e in prov.values() if "split" in e})
            if not have:
                raise ConfigError(
                    f"{self.store_path}: split={split!r} asked for, but the store's examples record no "
                    f"'split'; pass split=None or regenerate the store with splits"
                )
            keep = [i for i in keep if prov.get(i, {}).get("split") == split]
            if not keep:
                raise ConfigError(f"{self.store_path}: no complete example in split {split!r}; splits present: {have}")
        if not keep:
            raise StoreError(
                f"{self.store_path}: no complete examples (all writers interrupted?); re-run the generating command"
            )
        return keep

    # --- per-process store handle ---

    def _open(self) -> Store:
        # reopen in each process: a handle inherited through fork (or unpickled) is never reused
        if self._store is None or self._pid != os.getpid():
            self._store = Store.open(self.store_path)
            self._pid = os.getpid()
        return self._store

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None
        state["_pid"] = None
        return state

    # --- items ---

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the fresh masks and on-the-fly draws (no effect on stored data)."""
        if int(epoch) < 0:
            raise ConfigError(f"set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def fresh_mask(self, index: int) -> np.ndarray:
        """The fresh in-plane mask, bool (T, Ky), of store example ``index`` in the current epoch."""
        kind, accel, acs, _ = self._fresh
        rng = np.random.default_rng([int(self.config.seed), self.epoch, int(index)])
        return row_mask(kind, self.dims["T"], self.dims["Ky"], accel, acs, rng)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        index = self.indices[i]
        resim = self.resimulates
        if self._sim is not None:
            ex = self.simulate(index)
            if self._sim["config"].phase == "none":
                ex["phase"] = None
        else:
            names = ["target", "csm"] + (["phase"] if self.has_phase else [])
            names += ["noise_sigma"] if resim else ["kspace"]
            if self._fresh is None:
                names += ["mask", "kz"]  # kz: the store's, or n mod M for a 1.0 store
            ex = self._open().example(index, names)
        target, csm = ex["target"], ex["csm"]  # (M, T, Y, X), (C, M, Y, X)
        phase = ex.get("phase")  # (C, M, T, Y, X) or None (phase model "none")
        if self._fresh is None:
            mask, kz = ex["mask"], ex["kz"]
        else:
            mask = self.fresh_mask(index)
            kz = kz_table(self._fresh[3], mask, self.m)
        if resim:
            noise = np.random.default_rng([int(self.config.seed), self.epoch, int(index), 1])
            y = simulate_kspace(target, csm, phase, kz, float(ex["noise_sigma"]), noise)
        else:
            y = ex["kspace"]  # (C, T, Ky, Kx)

        if self.config.coil_mode == "per-coil":
            sens = csm[:, :, None] * (1 if phase is None else np.exp(1j * phase))
            truth = (target * sens).astype(np.complex64)  # (C, M, T, Y, X)
        else:
            wh = coil_compression_weights(y, mask, self.n_coils).conj().T  # W^H (K, C), acquired data only
            y = np.tensordot(wh, y, axes=1)  # (K, T, Ky, Kx)
            # compressed sensitivities s_v = sum_c conj(W[c, v]) csm_c exp(j phase_c), one coil at a time
            sens = np.zeros((self.n_coils, *target.shape), np.complex64)
            for c in range(csm.shape[0]):
                s_c = csm[c][:, None] * (1 if phase is None else np.exp(1j * phase[c]))  # (M, T or 1, Y, X)
                sens += wh[:, c].reshape(-1, 1, 1, 1, 1) * s_c
            truth = target * sens  # (K, M, T, Y, X)
            if self.config.coil_mode == "virtual":  # K = 1 without a coil axis
                y, truth = y[0], truth[0]

        kz_t = torch.from_numpy(np.ascontiguousarray(kz, dtype=np.int64))
        k3, mask3 = physics.to_3d_data(torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(mask), self.m,
                                       kz_t)
        return {
            "k3": k3,
            "mask3": mask3,
            "kz": kz_t,
            "x0": physics.zero_filled(k3),
            "truth": torch.from_numpy(np.ascontiguousarray(truth, dtype=np.complex64)),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def __repr__(self) -> str:
        return f"SmsDataset({self.store_path!r}, {len(self)} examples, {self.config})"


# --- input normalisation (between a batch of items and the model) ------------------------------

NORM_QUANTILE = 0.99
_IMAGE_KEYS = ("x0", "k3", "truth", "target")


def example_scale(x0: Tensor, quantile: float = NORM_QUANTILE) -> Tensor:
    """Per-example scale ``quantile(|x0|)`` over every axis but the first: float32 (B,), > 0.

    ``kthvalue`` (not ``torch.quantile``, limited to 2**24 elements): the ``ceil(q n)``-th
    smallest magnitude.  An all-zero example gets scale 1.
    """
    mag = x0.detach().abs().flatten(1).float()
    k = max(1, min(mag.shape[1], math.ceil(quantile * mag.shape[1])))
    s = mag.kthvalue(k, dim=1).values
    fallback = mag.amax(dim=1)
    s = torch.where(s > 0, s, fallback)
    return torch.where(s > 0, s, torch.ones_like(s))


def normalize_batch(batch: dict[str, Tensor], quantile: float = NORM_QUANTILE) -> tuple[dict[str, Tensor], Tensor]:
    """Divide an example batch by its per-example scale (module doc).

    Parameters
    ----------
    batch : dict from :class:`zoo.data.SmsDataset` (batched): ``x0`` complex (B, [C,] M, T, Y, X)
        and any of ``k3``, ``truth`` (same leading dims), ``target`` float (B, M, T, Y, X); other
        keys (``mask3``, ``index``) pass through.
    quantile : of ``|x0|`` over all of an example's axes.

    Returns
    -------
    normalised : a new dict, ``x0``, ``k3``, ``truth``, ``target`` divided by the scale.
    scale : float32 (B,), on ``x0``'s device; undo with :func:`denormalize`.
    """
    scale = example_scale(batch["x0"], quantile)
    out = dict(batch)
    for key in _IMAGE_KEYS:
        if key in batch:
            out[key] = batch[key] / _bcast(scale, batch[key])
    return out, scale


def denormalize(x: Tensor, scale: Tensor) -> Tensor:
    """Undo :func:`normalize_batch`: ``x * scale`` per example; ``x`` (B, ...) with ``scale`` (B,)."""
    return x * _bcast(scale, x)


def _bcast(scale: Tensor, x: Tensor) -> Tensor:
    return scale.to(x.real.dtype if x.is_complex() else x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
