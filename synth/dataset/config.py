"""Simulation parameters: one frozen, validated dataclass saved verbatim into every store.

Precedence (issue 3 adds recipes): CLI flag > YAML recipe > the defaults below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from synth.errors import ConfigError
from synth.physics.masks import KINDS as MASKS
from synth.physics.sms import CAIPI_ORDERS
CSMS = ("circle", "blobs", "mixed")
PHASES = ("kmeans", "grating", "none")
RESOLUTIONS = ("acquired", "dicom")
FRAME_MODES = ("crop", "resample")
MAX_COILS = 128  # also bounds the chunk files one example keeps open while it is written
MAX_CLUSTERS = 256  # k-means assignment costs K per voxel; labels are uint8 up to 256
COMBINES = ("within-series", "within-study", "across-series")


@dataclass(frozen=True)
class SimConfig:
    """Every parameter of the simulation (defaults: the paper's setting, SMS 2 x in-plane 2).

    Attributes
    ----------
    sms : M, slices excited simultaneously (>= 1; 1 gives plain multi-coil dynamic data).
    coils : C, receive coils, ``1 <= C <= MAX_COILS``.
    accel : R, in-plane acceleration of the mask (total acceleration R*M).
    acs : fully sampled central ky rows in every frame.
    mask : ``vd`` (variable-density random rows drawn anew per frame, CRNN-MRI's masks; the
        shipped recipes'), ``uniform`` (every R-th row, offset shifted by one row per frame) or
        ``random`` (uniformly random rows drawn anew per frame); see :mod:`synth.physics.masks`.
    caipi : CAIPI ordering, which kz each sampled ky row carries (:func:`synth.physics.sms.kz_table`):
        ``row`` (kz = n mod M, the paper's retrospective model) or ``acquired`` (kz = the row's
        acquisition rank within its frame mod M, a prospective acquisition: uniform R = M
        sampling then gets the FOV/M shift).  Recorded per row in the store's ``kz`` array.
    csm : coil model, ``circle`` (1/d^3 coils on a circle), ``blobs`` (random 2D Gaussians) or
        ``mixed`` (each example draws one of the two).
    phase : ``kmeans`` (cluster phase + grating, the paper's), ``grating`` (the paper's "simple
        phase" ablation) or ``none``.
    clusters : K of the 3D k-means, ``1 <= K <= MAX_CLUSTERS``.
    resolution : ``acquired`` crops k-space to the DICOM AcquisitionMatrix (the default, since
        DICOMs are usually interpolated); ``dicom`` keeps the stored matrix.
    matrix : (Ny, Nx) image-space centre crop / zero pad after the resolution step, or None.
    frames : number of time frames, or None to keep the series' own count.
    frames_mode : ``crop`` keeps the first ``frames`` frames; ``resample`` interpolates linearly
        over the series' time span.
    snr : complex Gaussian noise so that rms(k-space) / sigma = snr (see ``synth.physics.noise``), None = off.
    seed : root seed; each example's seed derives from it and the example's identity.
    combos : None = every M-subset of compatible slices; N = N random subsets per group.
    draws : independent synthetic draws (phase, coils, mask, noise) per slice combination.
    combine : which slices may form one SMS example: ``within-series``, ``within-study`` or
        ``across-series`` (slices of different series/patients; an augmentation for data-poor sets).
    min_distance_mm : minimum distance between any two slices of an example (``within-*``).
    store_phase : write the ``phase`` array (``--no-phase`` drops it).
    targets_only : write a *targets* store: only what cannot be redrawn -- each slice's working
        magnitudes (once per slice), its k-means labels, and per example the slices, their
        offsets and the scale -- from which ``zoo`` simulates phase, coils, masks and noise anew
        every epoch (``--targets-only``; ``docs/store-format.md``).  The other parameters are
        recorded as the defaults of that simulation.
    """

    sms: int = 2
    coils: int = 8
    accel: int = 2
    acs: int = 8
    mask: str = "uniform"
    caipi: str = "row"
    csm: str = "mixed"
    phase: str = "kmeans"
    clusters: int = 8
    resolution: str = "acquired"
    matrix: tuple[int, int] | None = None
    frames: int | None = None
    frames_mode: str = "crop"
    snr: float | None = None
    seed: int = 0
    combos: int | None = None
    draws: int = 1
    combine: str = "within-series"
    min_distance_mm: float = 0.0
    store_phase: bool = True
    targets_only: bool = False

    def __post_init__(self):
        def need(cond, opt, msg):
            if not cond:
                raise ConfigError(f"--{opt.replace('_', '-')}: {msg}")

        need(self.sms >= 1, "sms", f"must be >= 1, got {self.sms}")
        need(1 <= self.coils <= MAX_COILS, "coils",
             f"must be between 1 and {MAX_COILS} (the largest clinical receive arrays), got {self.coils}")
        need(self.accel >= 1, "accel", f"must be >= 1, got {self.accel}")
        need(self.acs >= 0, "acs", f"must be >= 0, got {self.acs}")
        need(self.mask in MASKS, "mask", f"must be one of {MASKS}, got {self.mask!r}")
        need(self.caipi in CAIPI_ORDERS, "caipi", f"must be one of {CAIPI_ORDERS}, got {self.caipi!r}")
        need(self.csm in CSMS, "csm", f"must be one of {CSMS}, got {self.csm!r}")
        need(self.phase in PHASES, "phase", f"must be one of {PHASES}, got {self.phase!r}")
        need(1 <= self.clusters <= MAX_CLUSTERS, "clusters",
             f"must be between 1 and {MAX_CLUSTERS}, got {self.clusters} (the cluster phase uses a few to a few "
             f"tens of clusters; k-means time grows with K)")
        need(self.resolution in RESOLUTIONS, "resolution", f"must be one of {RESOLUTIONS}, got {self.resolution!r}")
        need(self.frames_mode in FRAME_MODES, "frames_mode", f"must be one of {FRAME_MODES}, got {self.frames_mode!r}")
        need(self.combine in COMBINES, "combine", f"must be one of {COMBINES}, got {self.combine!r}")
        if self.matrix is not None:
            m = tuple(int(v) for v in self.matrix)
            need(len(m) == 2 and min(m) >= 4, "matrix", f"must be two sizes >= 4 (e.g. 192x160), got {self.matrix}")
            object.__setattr__(self, "matrix", m)
        need(self.frames is None or self.frames >= 1, "frames", f"must be >= 1, got {self.frames}")
        need(self.snr is None or self.snr > 0, "snr", f"must be > 0, got {self.snr}")
        need(self.combos is None or self.combos >= 1, "combos", f"must be >= 1, got {self.combos}")
        need(self.draws >= 1, "draws", f"must be >= 1, got {self.draws}")
        need(self.min_distance_mm >= 0, "min_distance_mm", f"must be >= 0, got {self.min_distance_mm}")
        need(0 <= self.seed < 2**63, "seed", f"must be in [0, 2**63), got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["matrix"] = list(self.matrix) if self.matrix is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SimConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown simulation parameter(s) {unknown}; known: {sorted(names)}")
        d = dict(d)
        if d.get("matrix") is not None:
            d["matrix"] = tuple(d["matrix"])
        return cls(**d)

    def replace(self, **changes) -> "SimConfig":
        return dataclasses.replace(self, **changes)
