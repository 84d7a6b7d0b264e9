"""The phantom's images: :class:`PhantomSpec`, the seed-drawn anatomy, the cine and perfusion
physiology, and the rendering at the acquired resolution (see :mod:`synth.io.phantom` for the
model); :func:`zero_fill` interpolates them like a scanner."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
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

# physiology of the perfusion series is laid out on this many heartbeats (see the package docstring)
_BOLUS_BEATS = 30.0


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
    seed : geometry, heart rate, orientation and defect position derive from it (and the noise).
    snr : None (default) writes the noise-free images; a number > 0 adds thermal noise as a
        scanner's images have it (:func:`acquired_images`): complex white Gaussian noise of
        standard deviation ``1 / snr`` per real and imaginary part, on the phantom's full-scale
        magnitude 1.0 (fully enhanced blood in perfusion, ~0.9 blood in cine), at the acquired
        resolution, before the zero-filled interpolation and the magnitude.
    """

    kind: str = "cine"
    n_slices: int = 4
    n_frames: int = 16
    acquired: tuple[int, int] = (64, 56)
    matrix: tuple[int, int] = (80, 80)
    fov_mm: float = 320.0
    slice_spacing_mm: float = 8.0
    seed: int = 0
    snr: float | None = None

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
        if self.snr is not None:
            try:
                snr = float(self.snr)
            except (TypeError, ValueError):
                snr = float("nan")
            need(math.isfinite(snr) and snr > 0, "snr", f"must be a number > 0 or None, got {self.snr!r}")
            object.__setattr__(self, "snr", snr)
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


def acquired_images(spec: PhantomSpec) -> np.ndarray:
    """What the scanner reconstructs at the acquired resolution, before interpolation.

    :func:`phantom_images` plus, when ``spec.snr`` is set, complex white Gaussian noise of
    standard deviation ``1 / spec.snr`` per real and imaginary part (thermal noise is white in
    k-space, hence in the image); drawn from ``spec.seed``, so deterministic in ``spec``.  Its
    magnitude is Rician, as in a scanner's magnitude images, and :func:`zero_fill` correlates it
    over neighbouring stored pixels as their interpolation does.

    Returns
    -------
    float32 (S, T, Ny, Nx) without noise, complex64 with it.
    """
    images = phantom_images(spec)
    if spec.snr is None:
        return images
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0x5E1CE]))
    sigma = np.float32(1.0 / spec.snr)
    noise = rng.standard_normal((2, *images.shape), dtype=np.float32) * sigma
    return (images + noise[0]) + 1j * noise[1]


def draw_snr(seed: int, low: float, high: float) -> float:
    """The SNR of the phantom patient of ``seed`` when patients' SNRs span ``[low, high]``:
    log-uniform, drawn from ``seed`` alone (so a patient keeps its SNR whatever else is written)."""
    if not (0 < low <= high and math.isfinite(high)):
        raise ConfigError(f"phantom snr range: need 0 < low <= high, got {low}:{high}")
    if low == high:
        return float(low)
    u = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A12])).random()
    return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


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
    images : float or complex (..., Ny, Nx).
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
