r"""A dynamic cardiac phantom written as real multi-file DICOM: the embedded default sample.

The phantom is a short-axis (SAX) stack through an analytic chest: body ellipse (subcutaneous fat
around soft tissue), lungs, liver, spine, descending aorta, and the heart (LV blood pool,
myocardium with papillary muscles, RV crescent, patchy epicardial fat).  The LV is a truncated
prolate ellipsoid, so slices from base to apex shrink; the RV fades out towards the apex (slices
above the base repeat the base, slices beyond the apex show no heart).
Edges are analytic soft steps half an acquired pixel wide (anti-aliasing without super-sampling),
a few smooth random sinusoids give tissue texture, and a smooth receive-bias field multiplies it
all, so nothing is piecewise flat.

Two kinds
---------
``cine``
    bright-blood (SSFP-like) contrast, one periodic cardiac cycle of ``n_frames`` phases: the
    endocardial radius follows a periodic contraction curve ``c(phi)`` and the myocardium keeps its
    area (so the wall thickens in systole); frame ``t`` is at phase ``phi = t / n_frames``, so frame
    ``n_frames`` would equal frame 0.  Breath-held: nothing outside the heart moves.
``perfusion``
    first-pass saturation-recovery contrast (dark blood before contrast), one frame per heartbeat;
    each slice is read at its own trigger delay, so at its own, fixed cardiac phase.  Gamma-variate
    concentrations (signal ``s0 + (smax - s0)(1 - exp(-2 C))``) reach the RV first, then the LV and
    aorta, then the myocardium (lower, later, slow washout); the apical half of the stack has a
    subendocardial defect sector with a quarter of the normal uptake; free breathing moves heart
    and liver by a few mm.  For series shorter than ``_BOLUS_BEATS`` frames the bolus is
    time-compressed (frame ``t`` is bolus time ``t * 30 / T`` beats) so every series shows the
    whole first pass; breathing runs in real beats.

The design follows the MRXCAT idea (analytic anatomy + tissue signal models + scanner effects;
Wissmann et al., J Cardiovasc Magn Reson 2014;16:63) on a far simpler, 2D analytic anatomy.

From image to DICOM
-------------------
``phantom_images`` renders the *acquired* matrix (``spec.acquired``, pixel size
``fov / acquired``), band-limited to it (even-size Nyquist lines zeroed, so its zero-filled
interpolation is real).  ``write_phantom`` then does what scanners do: zero-fills k-space to the
stored matrix (:func:`zero_fill`), keeps the magnitude, scales by ``SIGNAL_SCALE`` and quantises
with ``RescaleSlope = 0.5``, so ``stored * slope + intercept = SIGNAL_SCALE * zero_fill(truth)`` up
to quantisation and the outer k-space of every stored image is (nearly) empty.  Cine pixels are
unsigned (12 bits stored), perfusion pixels signed 16-bit, like the scanners they imitate.  Cine
files carry ``TriggerTime`` = phase * RR and ``CardiacNumberOfImages = T``; perfusion files carry
each slice's trigger delay (constant over frames), ``CardiacNumberOfImages = 1`` and
``TemporalPositionIdentifier`` / ``NumberOfTemporalPositions``; both carry ``AcquisitionTime``
increasing in acquisition order.

Geometry conventions
--------------------
* Image axes (rows, cols) = (y, x); the phantom's in-plane origin is pixel ``(N // 2, M // 2)``
  (the ``fft2c`` centre), so zero-filling keeps every structure where it was.
* Stored pixels are square: ``PixelSpacing = fov_mm / max(matrix)``; the acquired matrix covers
  the same field of view with coarser (possibly anisotropic) pixels.
* Slice ``s`` is centred at ``P0 + (s - (S - 1) / 2) * slice_spacing_mm * n``, with
  ``n = row_dir x col_dir`` the normal of the oblique ``ImageOrientationPatient``; ``s`` runs from
  base towards apex.  ``SliceLocation = P . n``.
* ``AcquisitionMatrix`` follows the DICOM order (frequency rows, frequency columns, phase rows,
  phase columns): phase encoding runs along the smaller acquired dimension, so
  ``acquired = (64, 56)`` is ``ROW`` phase encoding, ``[0, 64, 56, 0]`` (rows = 64 frequency
  samples, cols = 56 phase lines); ``acquired = (56, 64)`` is ``COL``, ``[64, 0, 0, 56]``.

Instance numbers follow acquisition order (cine: slice-major; perfusion: heartbeat-major) and file
names are hashes of the SOP Instance UID, so readers must order by the tags, never by file name.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from synth.errors import ConfigError
from synth.physics.fft import fft2c, ifft2c

KINDS = ("cine", "perfusion")

#: physical DICOM value (after rescale) of phantom magnitude 1.0
SIGNAL_SCALE = 1000.0
RESCALE_SLOPE = 0.5
RESCALE_INTERCEPT = 0.0

#: tissue labels of :func:`phantom_labels`
LABELS = {
    "air": 0,
    "fat": 1,
    "soft_tissue": 2,
    "lung": 3,
    "liver": 4,
    "bone": 5,
    "aorta": 6,
    "rv_blood": 7,
    "myocardium": 8,
    "lv_blood": 9,
}

# physiology of the perfusion series is laid out on this many heartbeats (see module docstring)
_BOLUS_BEATS = 30.0
_MANUFACTURER = "smssynth phantom"


@dataclass(frozen=True)
class PhantomSpec:
    """What phantom to make; frozen and validated (raises :class:`~synth.errors.ConfigError`).

    Attributes
    ----------
    kind : ``"cine"`` (one periodic cardiac cycle) or ``"perfusion"`` (first pass, one frame per beat).
    n_slices : S, short-axis slices from base towards apex.
    n_frames : T, cine: cardiac phases per cycle; perfusion: heartbeats.
    acquired : (rows, cols) acquired matrix, the resolution of the truth (odd/unequal sizes work).
    matrix : (rows, cols) stored DICOM matrix, >= ``acquired`` in both dimensions.
    fov_mm : field of view along the larger stored dimension, mm (pixels are square).
    slice_spacing_mm : distance between slice centres along the normal, mm.
    seed : geometry, heart rate, orientation and defect position derive from it.
    """

    kind: str = "cine"
    n_slices: int = 4
    n_frames: int = 16
    acquired: tuple[int, int] = (64, 56)
    matrix: tuple[int, int] = (80, 80)
    fov_mm: float = 320.0
    slice_spacing_mm: float = 8.0
    seed: int = 0

    def __post_init__(self):
        def need(cond, what, msg):
            if not cond:
                raise ConfigError(f"phantom {what}: {msg}")

        need(self.kind in KINDS, "kind", f"must be one of {KINDS}, got {self.kind!r}")
        need(int(self.n_slices) >= 1, "n_slices", f"must be >= 1, got {self.n_slices}")
        need(int(self.n_frames) >= 1, "n_frames", f"must be >= 1, got {self.n_frames}")
        sizes = {}
        for name in ("acquired", "matrix"):
            v = getattr(self, name)
            try:
                t = tuple(int(a) for a in v)
            except (TypeError, ValueError):
                t = ()
            need(len(t) == 2 and min(t) >= 8, name, f"must be (rows, cols), both >= 8, got {v!r}")
            need(max(t) <= 2048, name, f"must be at most 2048 per side, got {v!r}")
            sizes[name] = t
        a, m = sizes["acquired"], sizes["matrix"]
        need(
            m[0] >= a[0] and m[1] >= a[1], "matrix",
            f"{m[0]}x{m[1]} is smaller than the acquired matrix {a[0]}x{a[1]}; the stored matrix "
            "must be >= acquired in both dimensions (scanners interpolate up, never down)",
        )
        need(100.0 <= float(self.fov_mm) <= 600.0, "fov_mm", f"must be in [100, 600] mm, got {self.fov_mm}")
        need(float(self.slice_spacing_mm) > 0, "slice_spacing_mm", f"must be > 0, got {self.slice_spacing_mm}")
        need(0 <= int(self.seed) < 2**63, "seed", f"must be in [0, 2**63), got {self.seed}")
        for name, v in (("n_slices", int(self.n_slices)), ("n_frames", int(self.n_frames)),
                        ("acquired", a), ("matrix", m), ("fov_mm", float(self.fov_mm)),
                        ("slice_spacing_mm", float(self.slice_spacing_mm)), ("seed", int(self.seed))):
            object.__setattr__(self, name, v)

    @property
    def pixel_mm(self) -> float:
        """Stored (square) pixel size, mm."""
        return self.fov_mm / max(self.matrix)

    @property
    def fov_yx_mm(self) -> tuple[float, float]:
        """Field of view (rows, cols) in mm, shared by the acquired and the stored matrix."""
        return (self.matrix[0] * self.pixel_mm, self.matrix[1] * self.pixel_mm)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["acquired"], d["matrix"] = list(self.acquired), list(self.matrix)
        return d


# --------------------------------------------------------------------------------------------
# anatomy


@dataclass(frozen=True)
class _Anatomy:
    """Seed-drawn geometry (mm, image-plane coordinates x right, y down, origin at the centre)."""

    body_ax: float
    body_ay: float
    fat_mm: float
    heart_xy: tuple[float, float]
    r_endo_base: float  # LV cavity radius at the base, end-diastole
    wall_mm: float
    l_endo: float  # base plane -> endocardial apex
    ellipticity: float
    rv_angle: float  # direction LV -> RV, radians (image coordinates)
    stack_centre_h: float  # depth of the stack centre below the base plane
    pm_angle: float  # papillary muscles' mean angle
    defect_angle: float
    resp_phase: float
    heart_rate: float  # beats per minute
    texture: tuple[tuple[float, float, float, float], ...]  # (kx, ky, phase, amplitude)
    bias: tuple[float, float, float]
    orientation: tuple[float, ...]  # 6 direction cosines (row dir, col dir)
    centre_patient: tuple[float, float, float]  # LPS mm of the stack centre


def _anatomy(seed: int) -> _Anatomy:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    u = rng.uniform
    tex = []
    for _ in range(8):
        wavelength, theta = u(12, 45), u(0, 2 * np.pi)
        k = 2 * np.pi / wavelength
        tex.append((k * np.cos(theta), k * np.sin(theta), u(0, 2 * np.pi), u(0.4, 1.0)))
    # typical SAX orientation (the GE perfusion series), tilted by a few degrees
    row = np.array([0.65, 0.76, 0.03])
    col = np.array([-0.19, 0.21, -0.96])
    row /= np.linalg.norm(row)
    col -= row * (col @ row)
    col /= np.linalg.norm(col)
    axis = rng.normal(size=3)
    rot = _rotation(axis / np.linalg.norm(axis), np.deg2rad(u(-8, 8)))
    row, col = rot @ row, rot @ col
    return _Anatomy(
        body_ax=u(128, 146), body_ay=u(92, 108), fat_mm=u(6, 14),
        heart_xy=(u(8, 24), u(-14, 2)),
        r_endo_base=u(22, 27), wall_mm=u(8, 10.5), l_endo=u(70, 82), ellipticity=u(0.92, 1.08),
        rv_angle=np.deg2rad(180 + u(12, 32)), stack_centre_h=u(0.38, 0.48),
        pm_angle=np.deg2rad(u(70, 110)), defect_angle=u(0, 2 * np.pi), resp_phase=u(0, 2 * np.pi),
        heart_rate=u(62, 82),
        texture=tuple(tex), bias=(u(-0.08, 0.08), u(-0.1, 0.02), u(0.06, 0.14)),
        orientation=tuple(float(v) for v in (*row, *col)),
        centre_patient=(u(10, 40), u(-40, -10), u(-60, -20)),
    )


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _contraction(phi: np.ndarray | float) -> np.ndarray:
    """Periodic contraction ``c(phi)`` in [0, 1]: ~0 at end-diastole (phi=0), 1 at end-systole (0.35).

    A von Mises bump with a diastolic tail (early filling + atrial kick) -- smooth and exactly
    periodic in ``phi``.
    """
    phi = np.asarray(phi, dtype=float)
    main = np.exp(2.8 * (np.cos(2 * np.pi * (phi - 0.35)) - 1))
    kick = 0.08 * np.exp(12 * (np.cos(2 * np.pi * (phi - 0.88)) - 1))
    return main + kick


def _gamma_variate(b: np.ndarray, t0: float, tmax: float, alpha: float) -> np.ndarray:
    """Gamma variate with peak 1 at ``b = t0 + tmax`` (zero before ``t0``)."""
    s = np.clip((b - t0) / tmax, 0, None)
    with np.errstate(divide="ignore"):
        return np.where(s > 0, np.exp(alpha * (np.log(np.maximum(s, 1e-12)) + 1 - s)), 0.0)


def _smooth_step(b: np.ndarray, t0: float, tau: float) -> np.ndarray:
    """0 before ``t0``, then ``1 - exp(-(b - t0) / tau)``."""
    return 1 - np.exp(-np.clip(b - t0, 0, None) / tau)


def _bolus(b: np.ndarray) -> dict[str, np.ndarray]:
    """Contrast concentration (arbitrary units) per compartment at bolus time ``b`` (heartbeats)."""
    # blood: first pass + a slow recirculation/steady-state rise, so blood stays above myocardium
    rv = _gamma_variate(b, 2.0, 2.5, 3.0) + 0.4 * _smooth_step(b, 4.5, 8.0)
    lv = 0.9 * _gamma_variate(b, 4.5, 3.0, 3.0) + 0.4 * _smooth_step(b, 7.0, 8.0)
    aorta = 0.9 * _gamma_variate(b, 5.0, 3.0, 3.0) + 0.4 * _smooth_step(b, 7.5, 8.0)
    myo = 0.2 * _gamma_variate(b, 5.5, 4.5, 2.0) + 0.05 * _smooth_step(b, 8.0, 10.0)
    liver = 0.10 * _gamma_variate(b, 10, 12, 2.0)
    return {"rv": rv, "lv": lv, "aorta": aorta, "myo": myo, "liver": liver}


# signal = s0 + (smax - s0) * (1 - exp(-2 C)); cine has no contrast agent (C = 0)
_CINE = {"fat": 0.82, "soft": 0.30, "lung": 0.03, "liver": 0.36, "marrow": 0.55, "cortex": 0.05,
         "blood": 0.92, "rv_blood": 0.88, "myo": 0.26}
_PERF = {"fat": 0.40, "soft": 0.14, "lung": 0.02, "liver": 0.18, "marrow": 0.30, "cortex": 0.03,
         "blood": 0.07, "rv_blood": 0.07, "myo": 0.11}
_PERF_MAX = {"blood": 1.0, "myo": 0.95, "liver": 0.6}


def _ellipse_sd(x, y, cx, cy, a, b, angle=0.0):
    """Approximate signed distance (mm, negative inside) to an ellipse; exact for circles.

    ``(rho - 1) * r / rho`` with ``rho`` the ellipse-normalised radius: the distance along the ray
    from the centre, good enough for the mild eccentricities used here.
    """
    u, v = x - cx, y - cy
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        u, v = u * c + v * s, v * c - u * s
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    r = np.sqrt(u * u + v * v)
    with np.errstate(invalid="ignore", divide="ignore"):
        along = np.where(rho > 1e-9, r / rho, min(a, b))  # the ellipse's radius along the ray
    return (rho - 1) * along


class _Canvas:
    """Paints soft-edged layers back to front, keeping a hard label map of what covers > 50 %."""

    def __init__(self, shape, edge_mm):
        self.img = np.zeros(shape)
        self.lab = np.zeros(shape, dtype=np.uint8)
        self.edge = edge_mm

    def copy(self) -> "_Canvas":
        other = _Canvas(self.img.shape, self.edge)
        other.img, other.lab = self.img.copy(), self.lab.copy()
        return other

    def mask(self, sd):
        return expit(-sd / self.edge)

    def paint(self, m, value, label=None):
        self.img = self.img * (1 - m) + value * m
        if label is not None:
            self.lab[m > 0.5] = LABELS[label]


def _grid(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray, float]:
    ny, nx = spec.acquired
    fy, fx = spec.fov_yx_mm
    dy, dx = fy / ny, fx / nx
    y = (np.arange(ny) - ny // 2) * dy
    x = (np.arange(nx) - nx // 2) * dx
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return xx, yy, 0.5 * math.sqrt(dx * dy)


def _timing(spec: PhantomSpec, anat: _Anatomy) -> dict[str, np.ndarray | float]:
    """Cardiac timing: RR (ms), trigger delays (S, T) ms and cardiac phases (S, T)."""
    rr = 60000.0 / anat.heart_rate
    s_idx = np.arange(spec.n_slices)[:, None]
    t_idx = np.arange(spec.n_frames)[None, :]
    if spec.kind == "cine":
        phi = np.broadcast_to(t_idx / spec.n_frames, (spec.n_slices, spec.n_frames))
        trigger = phi * rr
    else:
        # slices read one after the other within each RR interval, after a short saturation delay
        trigger = np.broadcast_to(10.0 + s_idx * (rr - 60.0) / spec.n_slices, (spec.n_slices, spec.n_frames))
        phi = trigger / rr
    return {"rr": rr, "trigger": np.array(trigger, dtype=float), "phi": np.array(phi, dtype=float)}


def _render(spec: PhantomSpec) -> tuple[np.ndarray, np.ndarray]:
    anat = _anatomy(spec.seed)
    xx, yy, edge = _grid(spec)
    timing = _timing(spec, anat)
    S, T = spec.n_slices, spec.n_frames
    perf = spec.kind == "perfusion"
    tis = _PERF if perf else _CINE

    # depth h of each slice below the base plane: above the base the base is repeated (no atria),
    # beyond the epicardial apex there is no heart
    l_epi = anat.l_endo + anat.wall_mm
    h_c = anat.stack_centre_h * anat.l_endo
    hs = np.clip(h_c + (np.arange(S) - (S - 1) / 2) * spec.slice_spacing_mm, 0.0, None)
    conc = _bolus(np.arange(T) * max(1.0, _BOLUS_BEATS / T)) if perf else None
    defect_slices = set(range(S // 2, S)) if S > 1 else {0}  # the apical half

    r_body = np.hypot(xx / anat.body_ax, yy / anat.body_ay)
    bx, by, bq = anat.bias
    bias = 1.0 + bx * xx / anat.body_ax + by * yy / anat.body_ay + bq * (r_body**2 - 0.5)

    images = np.zeros((S, T, *xx.shape), dtype=np.float32)
    labels = np.zeros((S, T, *xx.shape), dtype=np.uint8)
    chest: dict[int | None, tuple[_Canvas, np.ndarray]] = {}
    for s in range(S):
        h = hs[s]
        heart = {
            "r_endo0": anat.r_endo_base * math.sqrt(max(0.0, 1 - (h / anat.l_endo) ** 2)),
            "r_epi0": (anat.r_endo_base + anat.wall_mm) * math.sqrt(max(0.0, 1 - (h / l_epi) ** 2)),
            "rv_scale": math.sqrt(max(0.0, 1 - (h / (0.85 * anat.l_endo)) ** 2)),
            "defect": perf and s in defect_slices,
        }
        for t in range(T):
            if perf:
                # free breathing: heart and liver drift a few mm, the chest wall less
                resp = 3.5 * math.sin(2 * math.pi * t / 4.6 + anat.resp_phase)
                shift_heart, shift_body = (0.4 * resp, resp), 0.25 * resp
                frame_conc = {k: float(v[t]) for k, v in conc.items()}
            else:
                shift_heart, shift_body, frame_conc = (0.0, 0.0), 0.0, None
            key = t if perf else None  # the chest is the same for every slice (and, in cine, frame)
            if key not in chest:
                cv = _Canvas(xx.shape, edge)
                _paint_chest(cv, anat, tis, xx, yy - shift_body, xx - shift_heart[0], yy - shift_heart[1],
                             frame_conc)
                chest[key] = (cv, _texture(anat, xx - shift_heart[0], yy - shift_heart[1], 0.12))
            cv, tex_h = chest[key][0].copy(), chest[key][1]
            _paint_heart(cv, anat, tis, xx - shift_heart[0], yy - shift_heart[1], tex_h, heart,
                         float(_contraction(timing["phi"][s, t])), frame_conc)
            images[s, t] = cv.img * bias
            labels[s, t] = cv.lab
    return _band_limit(images), labels


def _texture(anat: _Anatomy, x, y, amp):
    """Smooth multiplicative texture ``1 + amp * mean_k a_k cos(k . r + p_k)`` tied to the anatomy."""
    f = sum(a * np.cos(kx * x + ky * y + ph) for kx, ky, ph, a in anat.texture)
    return 1 + amp * f / len(anat.texture)


def _signal(tis, name, conc):
    """Tissue signal: the cine value, or the perfusion one ``s0 + (smax - s0)(1 - exp(-2 C))``."""
    s0 = tis[name]
    if conc is None:
        return s0
    smax = _PERF_MAX["blood" if "blood" in name else name]
    return s0 + (smax - s0) * (1 - np.exp(-2.0 * conc))


def _paint_chest(cv, anat, tis, xb, yb, xh, yh, conc):
    """Body wall, lungs, liver, spine and aorta; ``(xb, yb)`` body, ``(xh, yh)`` heart/liver coordinates."""
    tex_b, tex_h = _texture(anat, xb, yb, 0.18), _texture(anat, xh, yh, 0.12)
    inner_ax, inner_ay = anat.body_ax - anat.fat_mm, anat.body_ay - anat.fat_mm
    cv.paint(cv.mask(_ellipse_sd(xb, yb, 0, 5, anat.body_ax, anat.body_ay)), tis["fat"] * tex_b, "fat")
    inside = cv.mask(_ellipse_sd(xb, yb, 0, 5, inner_ax, inner_ay))
    cv.paint(inside, tis["soft"] * tex_b, "soft_tissue")
    # lungs either side of the heart, inside the chest wall
    chest = cv.mask(_ellipse_sd(xb, yb, 0, 5, inner_ax - 9, inner_ay - 9))
    for lx, ly, la, lb, lr in ((84, -8, 42, 66, 0.15), (-82, -14, 44, 68, -0.2)):
        cv.paint(cv.mask(_ellipse_sd(xh, yh, lx, ly, la, lb, lr)) * chest, tis["lung"], "lung")
    # liver at the lower left (the patient's right), enhancing late in perfusion
    liver = _signal(tis, "liver", None if conc is None else conc["liver"])
    cv.paint(cv.mask(_ellipse_sd(xh, yh, -62, 62, 78, 46, 0.25)) * inside, liver * tex_h, "liver")
    # spine: cortex ring around marrow; the descending aorta beside it
    sy = 5 + anat.body_ay - 26
    cv.paint(cv.mask(_ellipse_sd(xb, yb, 2, sy, 16, 14)), tis["cortex"], "bone")
    cv.paint(cv.mask(_ellipse_sd(xb, yb, 2, sy, 12.5, 10.5)), tis["marrow"] * tex_b, "bone")
    aorta = _signal(tis, "blood", None if conc is None else conc["aorta"])
    cv.paint(cv.mask(_ellipse_sd(xb, yb, 24, sy - 24, 10.5, 10.5)), aorta, "aorta")


def _paint_heart(cv, anat, tis, xh, yh, tex_h, heart, c, conc):
    """RV, LV myocardium, LV blood and papillary muscles at contraction ``c`` (0 = end-diastole)."""
    r_endo0, r_epi0 = heart["r_endo0"], heart["r_epi0"]
    if r_epi0 < 1.0:
        return  # beyond the apex
    hx, hy = anat.heart_xy[0] + 1.5 * c, anat.heart_xy[1] - 1.5 * c
    # the myocardium keeps its area, so the wall thickens as the cavity shrinks
    r_endo = r_endo0 * (1 - 0.30 * c)
    r_epi = math.sqrt(r_endo**2 + r_epi0**2 - r_endo0**2)
    ea, eb = anat.ellipticity, 1 / anat.ellipticity
    if heart["rv_scale"] > 0.05:
        k = heart["rv_scale"] * (1 - 0.18 * c)
        rcx = hx + math.cos(anat.rv_angle) * 0.62 * r_epi0
        rcy = hy + math.sin(anat.rv_angle) * 0.62 * r_epi0
        ra, rb = 0.95 * r_epi0 * k + 3.0, 1.65 * r_epi0 * k + 3.0
        # patchy epicardial fat in the grooves, the RV free wall, then the RV cavity (the LV,
        # painted next, cuts the crescent out of the ellipse)
        fat = cv.mask(_ellipse_sd(xh, yh, rcx, rcy, ra + 3.5, rb + 3.5, anat.rv_angle))
        groove = np.clip(np.cos(np.arctan2(yh - hy, xh - hx) - anat.rv_angle - 1.2) * 2.5 - 1.2, 0, 1)
        cv.paint(fat * groove, tis["fat"] * tex_h, "fat")
        cv.paint(cv.mask(_ellipse_sd(xh, yh, rcx, rcy, ra, rb, anat.rv_angle)), tis["myo"] * tex_h, "myocardium")
        rv = _signal(tis, "rv_blood", None if conc is None else conc["rv"])
        cv.paint(cv.mask(_ellipse_sd(xh, yh, rcx, rcy, ra - 3.0, rb - 3.0, anat.rv_angle)), rv, "rv_blood")
    cm = None
    if conc is not None:
        cm = conc["myo"]
        if heart["defect"]:
            # subendocardial sector (inner ~65 % of the wall) with 25 % of the normal uptake
            ang = np.arctan2(yh - hy, xh - hx)
            sector = np.exp(4.0 * (np.cos(ang - anat.defect_angle) - 1))
            depth = np.clip((np.hypot(xh - hx, yh - hy) - r_endo) / max(r_epi - r_endo, 1e-3), 0, 1)
            cm = cm * (1 - 0.75 * sector * expit((0.65 - depth) / 0.1))
    myo = _signal(tis, "myo", cm)
    cv.paint(cv.mask(_ellipse_sd(xh, yh, hx, hy, r_epi * ea, r_epi * eb)), myo * tex_h, "myocardium")
    if r_endo < 1.0:
        return  # apical cap: no cavity
    lv = _signal(tis, "blood", None if conc is None else conc["lv"])
    cv.paint(cv.mask(_ellipse_sd(xh, yh, hx, hy, r_endo * ea, r_endo * eb)), lv, "lv_blood")
    # papillary muscles against the lateral wall, thicker in systole
    for da in (-0.6, 0.6):
        a = anat.pm_angle + da + 0.1 * c
        rad = (2.4 + 1.6 * c) * min(1.0, r_endo / 15)
        pr = r_endo - 0.6 * rad
        px, py = hx + pr * math.cos(a), hy + pr * math.sin(a)
        cv.paint(cv.mask(_ellipse_sd(xh, yh, px, py, rad, rad)), myo, "myocardium")


def _band_limit(images: np.ndarray) -> np.ndarray:
    """Zero the unpaired Nyquist row/column of even sizes, so zero-filling keeps the image real."""
    k = fft2c(images.astype(np.complex64))
    ny, nx = images.shape[-2:]
    if ny % 2 == 0:
        k[..., 0, :] = 0
    if nx % 2 == 0:
        k[..., :, 0] = 0
    return np.clip(ifft2c(k).real, 0, None).astype(np.float32)


def phantom_images(spec: PhantomSpec) -> np.ndarray:
    """The phantom's truth at the acquired resolution.

    Returns
    -------
    float32 (S, T, Ny, Nx) = (n_slices, n_frames, *acquired), magnitude, mostly in [0, 1]
    (LV blood ~0.9 in cine).  Deterministic in ``spec``.
    """
    return _render(spec)[0]


def phantom_labels(spec: PhantomSpec) -> np.ndarray:
    """Tissue labels (:data:`LABELS`) of :func:`phantom_images`, uint8 (S, T, Ny, Nx)."""
    return _render(spec)[1]


def zero_fill(images: np.ndarray, matrix: tuple[int, int]) -> np.ndarray:
    """Interpolate like a scanner: zero-fill centred k-space to ``matrix``, keep the magnitude.

    ``|ifft2c(pad(fft2c(x)))| * sqrt(My*Mx / (Ny*Nx))`` -- the factor undoes the orthonormal
    FFT's scaling so intensities are kept.  The pad puts DC at ``(My // 2, Mx // 2)``, the
    convention of :func:`synth.io.resolution.crop_kspace`, whose inverse this is (up to the magnitude).

    Parameters
    ----------
    images : float (..., Ny, Nx).
    matrix : (My, Mx) >= (Ny, Nx).

    Returns
    -------
    float32 (..., My, Mx).
    """
    ny, nx = images.shape[-2:]
    my, mx = matrix
    if (my, mx) == (ny, nx):
        return np.abs(images).astype(np.float32)
    k = fft2c(images.astype(np.complex64))
    kp = np.zeros((*images.shape[:-2], my, mx), dtype=np.complex64)
    y0, x0 = my // 2 - ny // 2, mx // 2 - nx // 2
    kp[..., y0 : y0 + ny, x0 : x0 + nx] = k
    return (np.abs(ifft2c(kp)) * math.sqrt(my * mx / (ny * nx))).astype(np.float32)


# --------------------------------------------------------------------------------------------
# DICOM

_SURNAMES = ("HARTLEY", "OKAFOR", "LINDQVIST", "MORENO", "TANAKA", "DUBOIS", "KOWALSKI", "NAVARRO",
             "PETERSEN", "ABERNATHY", "SANTORO", "WEBER")
_GIVEN = {"F": ("ANNA", "MARTA", "GRACE", "LEILA", "SOFIA", "INGRID"),
          "M": ("JONAS", "PAUL", "TOMAS", "HUGO", "OMAR", "VIKTOR")}


def _patient_rng(spec: PhantomSpec, patient: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(patient.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([spec.seed, key, 0xD1C0]))


def _ds(v: float, nd: int = 6) -> str:
    """DS text (<= 16 chars) of ``v`` rounded to ``nd`` decimals."""
    s = f"{round(float(v), nd):.{nd}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _tm(t: _dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def write_phantom(
    out_dir: str | Path,
    spec: PhantomSpec,
    *,
    extension: str = ".dcm",
    extra_tags: Mapping[str, Any] | None = None,
    patient: str = "PHANTOM",
) -> list[Path]:
    """Write the phantom as one MR Image Storage file per (slice, frame).

    Parameters
    ----------
    out_dir : directory (created if missing); files go directly into it.
    spec : the phantom.
    extension : file name suffix, ``".dcm"`` or ``""``.
    extra_tags : DICOM keyword -> value, set on every file after the generated tags (e.g. canary
        strings for de-identification tests).  A value ``None`` deletes the tag; a callable is
        called as ``value(slice, frame)`` per file.  Setting ``SOPInstanceUID`` also sets the
        file meta's ``MediaStorageSOPInstanceUID``.
    patient : pseudonymous patient key; Patient ID/name, dates and every UID derive from
        ``(spec.seed, patient)`` (the Series UID also from the whole spec), so distinct keys give
        distinct patients that can be written side by side (even into one directory: file names
        are hashes of the generated SOP Instance UIDs).

    Returns
    -------
    The S*T paths, in (slice, frame) order.  The stored pixel ``p`` satisfies
    ``p * RescaleSlope + RescaleIntercept = SIGNAL_SCALE * zero_fill(phantom_images(spec), matrix)``
    up to quantisation.
    """
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

    extra = dict(extra_tags or {})
    for kw in extra:
        if tag_for_keyword(kw) is None:
            raise ConfigError(f"extra_tags: {kw!r} is not a DICOM keyword (e.g. 'PatientName')")
    if extension not in ("", ".dcm"):
        raise ConfigError(f"extension must be '.dcm' or '', got {extension!r}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    anat = _anatomy(spec.seed)
    timing = _timing(spec, anat)
    truth = phantom_images(spec)
    stored_img = zero_fill(truth, spec.matrix) * (SIGNAL_SCALE / RESCALE_SLOPE)

    perf = spec.kind == "perfusion"
    # cine: unsigned 12-bit like many scanners; perfusion: signed 16-bit like the GE series
    dtype, bits_stored = (np.int16, 16) if perf else (np.uint16, 12)
    top = 2 ** (bits_stored - 1) - 1 if perf else 2**bits_stored - 1
    stored = np.clip(np.rint(stored_img - RESCALE_INTERCEPT / RESCALE_SLOPE), 0, top).astype(dtype)

    # identity: everything derives from (seed, patient)
    prng = _patient_rng(spec, patient)
    sex = "F" if prng.random() < 0.5 else "M"
    name = f"{_SURNAMES[prng.integers(len(_SURNAMES))]}^{_GIVEN[sex][prng.integers(6)]}"
    patient_id = f"{prng.integers(10**7, 10**8)}"
    study_dt = _dt.datetime(2019, 1, 7, 8, 0) + _dt.timedelta(days=int(prng.integers(0, 1800)),
                                                              minutes=int(prng.integers(0, 540)))
    birth = study_dt.date() - _dt.timedelta(days=int(prng.integers(35 * 365, 80 * 365)))
    age = (study_dt.date() - birth).days // 365
    accession = f"A{prng.integers(10**7, 10**8)}"
    weight = round(float(prng.uniform(55, 105)), 1)
    root = ["smssynth-phantom", str(spec.seed), patient]
    study_uid = generate_uid(entropy_srcs=[*root, "study"])
    series_uid = generate_uid(entropy_srcs=[*root, "series", repr(spec)])
    for_uid = generate_uid(entropy_srcs=[*root, "frame-of-reference"])
    series_dt = study_dt + _dt.timedelta(minutes=(4 if not perf else 21) + int(prng.integers(0, 6)))

    # geometry
    row_dir = np.array(anat.orientation[:3])
    col_dir = np.array(anat.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    ps = spec.pixel_mm
    my, mx = spec.matrix
    ar, ac = spec.acquired
    phase_dir = "ROW" if ac < ar else "COL"
    # (frequency rows, frequency columns, phase rows, phase columns)
    acq_matrix = [0, ar, ac, 0] if phase_dir == "ROW" else [ac, 0, 0, ar]
    n_phase, n_freq = (ac, ar) if phase_dir == "ROW" else (ar, ac)
    rr = timing["rr"]
    S, T = spec.n_slices, spec.n_frames

    vmax = float(np.percentile(stored_img, 99.5)) * RESCALE_SLOPE + RESCALE_INTERCEPT
    common: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"],
        "SOPClassUID": MRImageStorage,
        "StudyDate": study_dt.strftime("%Y%m%d"), "SeriesDate": series_dt.strftime("%Y%m%d"),
        "AcquisitionDate": series_dt.strftime("%Y%m%d"), "ContentDate": series_dt.strftime("%Y%m%d"),
        "StudyTime": study_dt.strftime("%H%M%S"), "SeriesTime": series_dt.strftime("%H%M%S"),
        "AccessionNumber": accession,
        "Modality": "MR",
        "Manufacturer": _MANUFACTURER,
        "InstitutionName": "Lakeside General Hospital",
        "InstitutionAddress": "12 Harbour Road, Springfield",
        "ReferringPhysicianName": "MARSH^ELEANOR",
        "StationName": "SMSMR01",
        "StudyDescription": "CARDIAC^MR HEART",
        "SeriesDescription": "SAX CINE SSFP" if not perf else "FIRST PASS PERFUSION SAX",
        "OperatorsName": "TECH^ROBIN",
        "ManufacturerModelName": "smssynth",
        "PatientName": name, "PatientID": patient_id, "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": sex, "PatientAge": f"{age:03d}Y", "PatientWeight": _ds(weight, 1),
        "BodyPartExamined": "HEART",
        "ScanningSequence": "GR",
        "SequenceVariant": "SS" if not perf else ["SP", "MP"],
        "ScanOptions": "CG" if not perf else ["CG", "SAT1"],
        "MRAcquisitionType": "2D",
        "SequenceName": "*tfi2d1" if not perf else "*tfl2d1",
        "SliceThickness": _ds(min(8.0, spec.slice_spacing_mm)),
        "RepetitionTime": "2.9" if not perf else "2.5",
        "EchoTime": "1.45" if not perf else "1.1",
        "NumberOfAverages": "1",
        "ImagingFrequency": "63.676",
        "ImagedNucleus": "1H",
        "EchoNumbers": "1",
        "MagneticFieldStrength": "1.5",
        "SpacingBetweenSlices": _ds(spec.slice_spacing_mm),
        "EchoTrainLength": "1",
        "PercentSampling": _ds(100.0 * n_phase / n_freq, 4),
        "PercentPhaseFieldOfView": "100",
        "PixelBandwidth": "930" if not perf else "1085",
        "DeviceSerialNumber": "SMS0042",
        "SoftwareVersions": "smssynth phantom 1",
        "ProtocolName": "cine_sax" if not perf else "perfusion_sax",
        "HeartRate": str(int(round(anat.heart_rate))),
        "NominalInterval": str(int(round(rr))),
        "CardiacNumberOfImages": str(T) if not perf else "1",
        "ReconstructionDiameter": _ds(spec.fov_mm),
        "ReceiveCoilName": "BODY18",
        "TransmitCoilName": "Body",
        "AcquisitionMatrix": acq_matrix,
        "InPlanePhaseEncodingDirection": phase_dir,
        "FlipAngle": "50" if not perf else "12",
        "VariableFlipAngleFlag": "N",
        "SAR": "1.9" if not perf else "0.8",
        "PatientPosition": "HFS",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "StudyID": "1",
        "SeriesNumber": "5" if not perf else "12",
        "AcquisitionNumber": "1",
        "ImageOrientationPatient": [_ds(v) for v in anat.orientation],
        "FrameOfReferenceUID": for_uid,
        "PositionReferenceIndicator": "",
        "ImagesInAcquisition": str(S * T),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": my, "Columns": mx,
        "PixelSpacing": [_ds(ps), _ds(ps)],
        "BitsAllocated": 16, "BitsStored": bits_stored, "HighBit": bits_stored - 1,
        "PixelRepresentation": 1 if perf else 0,
        "WindowCenter": _ds(vmax / 2, 1), "WindowWidth": _ds(vmax, 1),
        "RescaleIntercept": _ds(RESCALE_INTERCEPT), "RescaleSlope": _ds(RESCALE_SLOPE), "RescaleType": "US",
    }
    if perf:
        common["InversionTime"] = "100"  # saturation-recovery delay
        common["NumberOfTemporalPositions"] = str(T)

    paths = []
    for s in range(S):
        centre = np.array(anat.centre_patient) + (s - (S - 1) / 2) * spec.slice_spacing_mm * normal
        ipp = centre - row_dir * (mx // 2) * ps - col_dir * (my // 2) * ps
        for t in range(T):
            trig = float(timing["trigger"][s, t])
            if perf:
                instance = t * S + s + 1  # heartbeat-major, the acquisition order
                acq = series_dt + _dt.timedelta(milliseconds=t * rr + trig)
            else:
                instance = s * T + t + 1  # one breath-hold per slice
                acq = series_dt + _dt.timedelta(seconds=18 * s, milliseconds=trig)
            sop_uid = generate_uid(entropy_srcs=[*root, "instance", series_uid, str(s), str(t)])
            ds = pydicom.Dataset()
            for kw, v in common.items():
                setattr(ds, kw, v)
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = str(instance)
            ds.AcquisitionTime = _tm(acq)
            ds.ContentTime = _tm(acq + _dt.timedelta(seconds=9))
            ds.TriggerTime = _ds(trig, 2)
            ds.ImagePositionPatient = [_ds(v, 4) for v in ipp]
            ds.SliceLocation = _ds(float(centre @ normal), 4)
            if perf:
                ds.TemporalPositionIdentifier = str(t + 1)
            px = stored[s, t]
            ds.SmallestImagePixelValue = int(px.min())
            ds.LargestImagePixelValue = int(px.max())
            ds.PixelData = px.tobytes()
            ds["PixelData"].VR = "OW"
            for kw, v in extra.items():
                if v is None:
                    if kw in ds:
                        delattr(ds, kw)
                    continue
                setattr(ds, kw, v(s, t) if callable(v) else v)

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", MRImageStorage)
            meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", sop_uid)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "SMSSYNTH_PHANTOM"
            ds.file_meta = meta
            ds.preamble = b"\x00" * 128
            # names carry no order: a hash of the generated (unique) SOP Instance UID
            fname = "MR" + hashlib.sha1(sop_uid.encode()).hexdigest()[:14].upper() + extension
            path = out_dir / fname
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def describe(spec: PhantomSpec) -> str:
    """One line, no identifiers: what :func:`write_phantom` writes for ``spec``."""
    return (f"{spec.kind}, {spec.n_slices} slices x {spec.n_frames} frames, acquired "
            f"{spec.acquired[0]}x{spec.acquired[1]} stored {spec.matrix[0]}x{spec.matrix[1]}, "
            f"{spec.fov_mm:g} mm FOV, seed {spec.seed}")
