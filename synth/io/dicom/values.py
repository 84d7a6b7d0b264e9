"""Header values: tolerant parsers of DICOM attributes (absent or unparsable -> None), image
geometry, the acquired matrix, and DICOM dates and times (internal to :mod:`synth.io.dicom`)."""

from __future__ import annotations

import datetime as _dt
import math
import re

import numpy as np
from pydicom.dataset import Dataset


def _get(ds: Dataset | None, keyword: str):
    """``ds.keyword`` or None; an unparsable value counts as absent."""
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except Exception:
        return None


def _float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(v) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _floats(v, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(map(math.isfinite, out)) else None


def _iop(v) -> tuple[float, ...] | None:
    """ImageOrientationPatient if it spans a plane (a usable normal), else None."""
    iop = _floats(v, 6)
    if iop is None or np.linalg.norm(np.cross(iop[:3], iop[3:])) < 0.5:
        return None
    return iop


def _normal(iop: tuple[float, ...]) -> np.ndarray:
    n = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    return n / np.linalg.norm(n)


def _geometry(pos_src: Dataset | None, ori_src: Dataset | None, where: str = ""):
    """``(ipp, iop, issue)``: ImagePositionPatient, ImageOrientationPatient, or None each, and
    why (``"ImagePositionPatient missing"``, ``"... malformed (2 values)"``; '' when both are fine).

    A malformed value is one that is not 3 (6) finite numbers, or an orientation whose two
    directions do not span a plane.
    """
    issues = []
    values = {}
    for keyword, src, n, parse in (("ImagePositionPatient", pos_src, 3, lambda v: _floats(v, 3)),
                                   ("ImageOrientationPatient", ori_src, 6, _iop)):
        raw = _get(src, keyword)
        values[keyword] = parsed = parse(raw)
        if parsed is not None:
            continue
        present = src is not None and keyword in src and raw not in (None, "", [])
        if not present:
            issues.append(f"{where}{keyword} missing")
        else:
            try:
                count = len(raw) if not isinstance(raw, str) else 1
            except TypeError:
                count = 1
            issues.append(f"{where}{keyword} malformed ({count} value{'s' if count != 1 else ''}, "
                          f"expected {n} finite numbers{' spanning a plane' if n == 6 else ''})")
    return values["ImagePositionPatient"], values["ImageOrientationPatient"], "; ".join(issues)


def _fg_item(per_frame_item: Dataset, shared: Dataset | None, keyword: str) -> Dataset | None:
    """First item of functional group ``keyword``: per-frame, else shared, else None."""
    for src in (per_frame_item, shared):
        if src is not None and keyword in src:
            seq = src[keyword].value
            if seq:
                return seq[0]
    return None


def _acq_matrix_classic(ds: Dataset) -> tuple[int, int] | None:
    """(n_rows_acquired, n_cols_acquired) from AcquisitionMatrix + InPlanePhaseEncodingDirection.

    AcquisitionMatrix is [frequency rows, frequency columns, phase rows, phase columns] with one
    of each pair zero.  Phase encoding along ROW means the phase steps run along a row, i.e.
    across columns: n_cols = phase steps, n_rows = frequency samples; COL is the transpose.
    Sunnybrook [224, 0, 0, 224] COL -> (224, 224); the GE perfusion [0, 128, 96, 0] ROW ->
    (128, 96).  Without the direction, the zero pattern ([f,0,0,p] is COL, [0,f,p,0] is ROW)
    decides.
    """
    m = _get(ds, "AcquisitionMatrix")
    try:
        fr, fc, pr, pc = (int(x) for x in m)
    except (TypeError, ValueError):
        return None
    freq, phase = max(fr, fc), max(pr, pc)
    if freq <= 0 or phase <= 0:
        return None
    direction = str(_get(ds, "InPlanePhaseEncodingDirection") or "").upper()
    if direction not in ("ROW", "COL", "COLUMN"):
        direction = "COL" if fr and pc else "ROW" if fc and pr else ""
    pct = _float(_get(ds, "PercentPhaseFieldOfView"))
    return _in_stored_grid(freq, phase, direction, pct, ds)


def _in_stored_grid(freq: int, phase: int, direction: str, pct: float | None, ds: Dataset) -> tuple[int, int] | None:
    """The acquired k-space extent (rows, cols) on the stored image's k-space grid.

    Phase encoding along ROW means the phase steps run along a row (across columns).  With a
    reduced phase field of view (PercentPhaseFieldOfView p < 100) the ``phase`` steps cover only
    p % of the frequency FOV; if the stored image still shows the full (e.g. square) FOV, the
    acquired samples span ``phase * (stored phase FOV / (p/100 * stored frequency FOV))`` points
    of its k-space grid (GE perfusion: 96 steps at 75 % on a square image -> 128).  When the
    stored image itself has the reduced FOV the factor is 1.
    """
    if direction == "ROW":
        phase_axis = 1
    elif direction in ("COL", "COLUMN"):
        phase_axis = 0
    else:
        return None
    if pct is not None and 0 < pct < 100:
        rows, cols = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
        spacing = _floats(_get(ds, "PixelSpacing"), 2) or (1.0, 1.0)
        if rows and cols:
            fov = (rows * spacing[0], cols * spacing[1])
            ratio = fov[phase_axis] / fov[1 - phase_axis]
            phase = int(round(phase * ratio / (pct / 100.0)))
    return (freq, phase) if phase_axis == 1 else (phase, freq)


def _acq_matrix_enhanced(geo: Dataset | None, ds: Dataset) -> tuple[int, int] | None:
    """Same as :func:`_acq_matrix_classic` from MRFOVGeometrySequence (ROW / COLUMN)."""
    if geo is None:
        return None
    freq = _int(_get(geo, "MRAcquisitionFrequencyEncodingSteps"))
    phase = _int(_get(geo, "MRAcquisitionPhaseEncodingStepsInPlane"))
    direction = str(_get(geo, "InPlanePhaseEncodingDirection") or "").upper()
    if not freq or not phase or freq <= 0 or phase <= 0:
        return None
    pct = _float(_get(geo, "PercentPhaseFieldOfView"))
    return _in_stored_grid(freq, phase, direction, pct, ds)


def _tod_ms(tm) -> float | None:
    """DICOM TM (HHMMSS.FFFFFF, also ACR-NEMA HH:MM:SS) -> ms since midnight."""
    if tm is None:
        return None
    m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?", str(tm).strip().replace(":", ""))
    if not m:
        return None
    h, mi, sec = int(m[1]), int(m[2] or 0), int(m[3] or 0)
    if h > 23 or mi > 59 or sec > 60:
        return None
    return ((h * 60 + mi) * 60 + sec + float(m[4] or 0)) * 1000.0


def _date_ord(da) -> int | None:
    """DICOM DA (YYYYMMDD) -> proleptic ordinal, None if invalid (e.g. Sunnybrook's 20120000)."""
    s = str(da or "").strip().replace(".", "")
    if not re.fullmatch(r"\d{8}", s):
        return None
    try:
        return _dt.date(int(s[:4]), int(s[4:6]), int(s[6:8])).toordinal()
    except ValueError:
        return None


def _datetime(dt) -> tuple[int | None, float | None]:
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) -> (date ordinal, ms since midnight)."""
    s = re.sub(r"[+-]\d{4}$", "", str(dt or "").strip())
    if len(s) < 10:
        return None, None
    return _date_ord(s[:8]), _tod_ms(s[8:])
