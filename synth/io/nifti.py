"""NIfTI-1/2 image series (``.nii``, ``.nii.gz``) as the same series/slices/frames DICOM gives.

:func:`synth.io.dicom.scan` hands every file named ``*.nii`` or ``*.nii.gz`` to :func:`probe`
(header only, plus a bounded pass over a gzip stream to prove it complete) and the volumes it
found to :func:`build_series`; a slice's pixels are read by :meth:`NiftiSliceInfo.read_pixels`, which
:func:`synth.io.dicom.load_slice` calls.  Everything downstream (planning, simulation, the store) is
the DICOM path's.

Axes
----
The data array's axes are named ``x``, ``y`` (in-plane), ``z`` (slices) and ``t`` (frames):

* 4D: ``x,y,z,t``, as the NIfTI standard fixes (dim 4 is time); a 4D file with one slice
  (``z`` of size 1) is one slice over time.  Trailing axes of size 1 beyond the 4th are dropped.
* 3D: NIfTI's third axis is spatial, so a 3D file holds no time axis and is refused, unless its
  header's intent is ``NIFTI_INTENT_TIME_SERIES`` (then ``x,y,t``: one slice over time).
* ``--nifti-axes`` (e.g. ``t,y,x`` for a time-first array, ``x,y,t``, ``t,z,y,x``) names the
  axes in the array's order and overrides both; it needs ``x``, ``y`` and ``t`` once each, ``z``
  at most once, and as many names as the array has axes.

Nothing else is guessed: an array whose order the header does not fix is refused with what to
pass.  The image of one frame has rows along ``y`` and columns along ``x``; rows are taken in
*decreasing* voxel index, as viewers show NIfTI (voxel ``j`` upward) and as dcm2niix writes
DICOM rows (it flips them), so a DICOM series converted by dcm2niix reads back in its own pixel
order.

Geometry and time
-----------------
From the affine (nibabel's choice of sform/qform; both codes 0 gives the pixdim diagonal, with
which slices in separate files cannot be told apart).  With ``u_c`` the world direction of
increasing column (voxel ``x``) and ``u_r`` that of increasing row (voxel ``-y``), the normal is
``n = u_c x u_r`` (DICOM's ``row cosines x column cosines``), a slice's position is
``origin(slice) . n`` in mm, and slices are sorted by it, as for DICOM.  Pixel spacing is the
norm of the ``y`` and ``x`` columns of the affine.  Frame times: ``t * pixdim[4]`` in the header's
time unit when the time axis is the 4th and the unit is set (s, ms, us), else unknown (None; the
frames keep the array's order).  NIfTI carries no acquisition matrix, so ``--resolution
acquired`` keeps the stored matrix.

Series and patients
-------------------
A file holding several slices is one series.  Files holding one slice (no ``z`` axis, or ``z`` of
size 1) that lie in one folder with the same orientation and matrix form one series (a perfusion
set stored as one file per slice); two of them at the same position are refused (put rest and
stress in separate folders).  The patient is the input folder a file was found under (for a file
given directly: the folder holding it): one folder per patient, as ``generate`` expects; a
manifest's ``patient`` column overrides.  Keys are salted pseudonyms of the folder's *name* and of
the path below it, so they do not depend on where the data are mounted; neither a name nor a path
is ever written or logged (messages use :class:`synth.io.deid.PathNames`).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import math
import os
import zlib
from dataclasses import dataclass, field

import numpy as np

from synth.errors import ConfigError, NiftiError
from synth.io.deid import pseudonym
from synth.io.dicom import FrameRef, SeriesInfo, SliceInfo

SUFFIXES = (".nii", ".nii.gz")
AXIS_NAMES = ("x", "y", "z", "t")
INTENT_TIME_SERIES = 2001
GZIP_SLACK = 4 * 2**20
"""Bytes a ``.nii.gz`` may inflate to beyond its header's voxel offset + voxel bytes (extensions
and padding); a small "gzip bomb" is refused after this much instead of inflating to GBs."""
_TIME_TO_MS = {"sec": 1000.0, "msec": 1.0, "usec": 1e-3}
_SAME_POSITION_MM = 0.01  # as synth.io.dicom.POSITION_TOL_MM
_NORMAL_TOL = 1e-4  # as synth.io.dicom.ORIENTATION_TOL
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def is_nifti(path: str) -> bool:
    return path.lower().endswith(SUFFIXES)


def parse_axes(text: str | None) -> tuple[str, ...] | None:
    """``"t,y,x"`` -> ``("t", "y", "x")``; None stays None.  ConfigError for a bad spec."""
    if text is None or not str(text).strip():
        return None
    axes = tuple(a.strip().lower() for a in str(text).replace(" ", "").split(","))
    bad = [a for a in axes if a not in AXIS_NAMES]
    ok = (not bad and len(set(axes)) == len(axes) and {"x", "y", "t"} <= set(axes) and 3 <= len(axes) <= 4)
    if not ok:
        raise ConfigError(
            f"--nifti-axes {text!r}: expected the data array's axes in order, comma-separated, from x, y, z, t "
            f"with x, y and t once each and z at most once (e.g. x,y,z,t or t,y,x)"
        )
    return axes


class Problem(Exception):
    """Why a NIfTI file or group cannot be used (becomes a skip or an error in synth.io.dicom.scan)."""

    def __init__(self, category: str, reason: str, hint: str | None = None):
        super().__init__(reason)
        self.category, self.reason, self.hint = category, reason, hint


@dataclass(frozen=True)
class Volume:
    """One NIfTI file's facts from its header (real ``path`` for reading; ``name`` for messages)."""

    path: str
    name: str
    patient: str = field(repr=False)  # the patient folder's name: only ever hashed
    rel: str = field(repr=False)  # path below the patient folder: only ever hashed
    axes: tuple[str, ...]
    shape: tuple[int, ...]  # the array's shape (trailing singleton axes dropped)
    affine: tuple[tuple[float, ...], ...]  # 4x4
    frame_ms: float | None  # time between frames, ms, when the header says


@dataclass(frozen=True)
class NiftiSliceInfo(SliceInfo):
    """A :class:`synth.io.dicom.SliceInfo` whose pixels come from a NIfTI file: ``frames`` name the
    file (frame = index along ``t``); ``axes`` and ``z`` say where the slice is in the array."""

    axes: tuple[str, ...] = ()
    z: int | None = None  # index along the z axis; None: the file has none

    def read_pixels(self) -> np.ndarray:
        """float32 (T, rows, cols) magnitudes, scaling (scl_slope/inter) applied.  NiftiError."""
        import nibabel as nib

        path, name = self.frames[0].path, self.frames[0].name or f"slice {self.index}"
        index = tuple(self.z if a == "z" else slice(None) for a in self.axes)
        try:
            proxy = nib.load(path).dataobj
            extra = len(proxy.shape) - len(self.axes)  # dropped singleton axes
            data = np.asarray(proxy[index + (0,) * extra], dtype=np.float32)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            raise NiftiError(f"{name}: cannot read the voxels ({_why(e)}); the file may be truncated or changed "
                             f"since the scan; re-export it or leave it out") from None
        kept = [a for a in self.axes if a != "z"]
        out = np.transpose(data, (kept.index("t"), kept.index("y"), kept.index("x")))[:, ::-1, :]
        if out.shape != (self.n_frames, *self.shape):
            raise NiftiError(f"{name}: the voxels are {out.shape} (frames, rows, cols), the scan found "
                             f"{(self.n_frames, *self.shape)}; did the file change since the scan?")
        if not np.isfinite(out).all():
            raise NiftiError(f"{name}: holds NaN or infinite voxels; magnitude images must be finite (fix the "
                             f"export or leave the file out)")
        return np.ascontiguousarray(out)


def _why(e: BaseException) -> str:
    """An exception as ``Type: first line``, without any path it may quote."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    for word in text.split():
        if os.sep in word or word.lower().strip("'\",.:").endswith(SUFFIXES):
            text = text.replace(word, "<file>")
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def patient_folder(path: str, inputs: list[str]) -> tuple[str, str]:
    """(the patient folder's name, the path below it) for a file found under ``inputs``."""
    full = os.path.abspath(path)
    for root in sorted((os.path.abspath(p) for p in inputs), key=len, reverse=True):
        if os.path.isdir(root) and full.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.basename(root.rstrip(os.sep)) or os.sep, os.path.relpath(full, root)
    parent = os.path.dirname(full)
    return os.path.basename(parent) or os.sep, os.path.basename(full)


def probe(path: str, name: str, patient: tuple[str, str], axes_override: tuple[str, ...] | None) -> Volume:
    """Read a NIfTI file's header and decide its axes; :class:`Problem` if it cannot be used."""
    try:
        _check_header(path)
        with _quiet_nibabel():
            import nibabel as nib

            img = nib.load(path)
            hdr = img.header
            shape = tuple(int(s) for s in img.shape)
            dtype = np.dtype(hdr.get_data_dtype())
            affine = np.asarray(img.affine, dtype=float)
            offset = int(getattr(img.dataobj, "offset", hdr.get_data_offset()))
    except (KeyboardInterrupt, SystemExit, Problem):
        raise
    except Exception as e:
        raise Problem("corrupt", f"not a readable NIfTI header ({_why(e)})") from None
    if dtype.kind not in "iuf" or dtype.fields is not None:
        raise Problem("unsupported", f"voxel type {dtype} (complex or RGB); magnitude images need a real scalar type")
    if any(s < 1 for s in shape):
        raise Problem("corrupt", f"the header gives an empty array {shape}")
    if not np.isfinite(affine).all():
        raise Problem("corrupt", "the header's affine holds NaN or infinite values")
    _check_complete(path, offset + int(np.prod(shape)) * dtype.itemsize)

    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    axes = axes_override or _header_axes(hdr, shape)
    if len(axes) != len(shape):
        raise Problem("unsupported", f"--nifti-axes names {len(axes)} axes ({','.join(axes)}) but the array has "
                                     f"{len(shape)} ({'x'.join(map(str, shape))}); give one name per axis")
    frame_ms = None
    t_axis = axes.index("t")
    unit = hdr.get_xyzt_units()[1]
    pix = [float(v) for v in hdr["pixdim"]]
    if t_axis == 3 and unit in _TIME_TO_MS and t_axis + 1 < len(pix) and math.isfinite(pix[4]) and pix[4] > 0:
        frame_ms = pix[4] * _TIME_TO_MS[unit]
    return Volume(path, name, patient[0], patient[1], axes, shape, tuple(map(tuple, affine.tolist())), frame_ms)


# header faults nibabel would repair silently but that mean the file is not what it claims
_FATAL_HEADER = ("sizeof_hdr", "magic", "data code", "datatype", "bitpix")


def _check_header(path: str) -> None:
    """Refuse a header whose size, magic, data type or bit depth is wrong (nibabel fixes these
    with a log line and reads on; such a file is damaged or not NIfTI)."""
    import nibabel as nib

    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(540)
    except (OSError, EOFError, zlib.error) as e:
        raise Problem("corrupt", f"cannot read the header ({_why(e)})") from None
    klass = nib.Nifti2Header if raw[4:8] in (b"n+2\0", b"ni2\0") else nib.Nifti1Header
    if len(raw) < klass.sizeof_hdr:
        raise Problem("corrupt", f"{len(raw)} bytes, shorter than a NIfTI header ({klass.sizeof_hdr})")
    with _quiet_nibabel():
        report = klass.diagnose_binaryblock(raw[: klass.sizeof_hdr])
    fatal = [line for line in report.splitlines() if any(w in line for w in _FATAL_HEADER)]
    if fatal:
        raise Problem("corrupt", f"invalid NIfTI header ({fatal[0].strip().rstrip('.;')}); re-export the file")


@contextlib.contextmanager
def _quiet_nibabel():
    """nibabel logs header repairs itself (to stderr); our messages say what matters."""
    logger = logging.getLogger("nibabel")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _header_axes(hdr, shape: tuple[int, ...]) -> tuple[str, ...]:
    if len(shape) == 4:
        return ("x", "y", "z", "t")
    if len(shape) == 3 and int(hdr["intent_code"]) == INTENT_TIME_SERIES:
        return ("x", "y", "t")
    dims = "x".join(map(str, shape))
    if len(shape) == 3:
        raise Problem(
            "unsupported",
            f"3D image ({dims}) with no time axis: NIfTI's third axis is spatial and the header does not mark it as "
            f"time; if the file is one slice over time pass --nifti-axes x,y,t (t,y,x for a time-first array), a "
            f"volume without frames cannot be used",
        )
    raise Problem("unsupported", f"a {len(shape)}D array ({dims}), expected 4D x,y,z,t or 3D one slice over time; "
                                 f"pass --nifti-axes naming each axis (e.g. t,z,y,x)")


def _check_complete(path: str, need: int) -> None:
    """The file holds the voxel bytes its header implies; a gzip stream is inflated (bounded) to
    prove it is whole and not a bomb."""
    if not path.lower().endswith(".gz"):
        size = os.path.getsize(path)
        if size < need:
            raise Problem("corrupt", f"truncated: the header implies {need} bytes, the file holds {size}")
        return
    cap = need + GZIP_SLACK
    got = 0
    try:
        with gzip.open(path, "rb") as fh:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                if got > cap:
                    raise Problem("corrupt", f"the gzip stream inflates past {cap} bytes, far more than the {need} its "
                                             f"header implies (a damaged or hostile file)")
    except Problem:
        raise
    except (OSError, EOFError, zlib.error) as e:
        raise Problem("corrupt", f"damaged or truncated gzip stream after {got} bytes ({_why(e)})") from None
    if got < need:
        raise Problem("corrupt", f"truncated: the header implies {need} bytes, the gzip stream holds {got}")


# ----------------------------------------------------------------------------- series


@dataclass(frozen=True)
class _Slice:
    vol: Volume
    z: int | None
    position: float
    normal: np.ndarray
    spacing: tuple[float, float]
    thickness: float | None


def _geometry(vol: Volume, z: int | None) -> _Slice:
    a = np.asarray(vol.affine)
    ex, ey = a[:3, vol.axes.index("x")], a[:3, vol.axes.index("y")]
    nx, ny = float(np.linalg.norm(ex)), float(np.linalg.norm(ey))
    if nx == 0 or ny == 0:
        raise Problem("corrupt", "the affine has a zero in-plane column; slice geometry is unknown")
    # world directions in LPS, DICOM's frame (positions along the normal do not change)
    u_col, u_row = _RAS_TO_LPS @ (ex / nx), _RAS_TO_LPS @ (-ey / ny)  # rows read in decreasing y
    n = np.cross(u_col, u_row)
    if np.linalg.norm(n) < 1e-6:
        raise Problem("corrupt", "the affine's in-plane columns are parallel; slice geometry is unknown")
    n = n / np.linalg.norm(n)
    origin = _RAS_TO_LPS @ a[:3, 3]
    thickness = None
    if "z" in vol.axes:
        ez = _RAS_TO_LPS @ a[:3, vol.axes.index("z")]
        origin = origin + ez * (z or 0)
        thickness = float(np.linalg.norm(ez)) or None
    return _Slice(vol, z, float(origin @ n), n, (ny, nx), thickness)


def build_series(volumes: list[Volume], salt: bytes):
    """Series from probed volumes: ``(series, problems, notes)``.

    ``series`` are :class:`synth.io.dicom.SeriesInfo`; ``problems`` are ``(path, name, Problem)`` of
    files or groups that cannot be used.
    """
    out, problems, notes = [], [], []
    singles: dict[tuple, list[_Slice]] = {}
    for vol in volumes:
        try:
            nz = vol.shape[vol.axes.index("z")] if "z" in vol.axes else 1
            if nz == 1:
                sl = _geometry(vol, 0 if "z" in vol.axes else None)
                key = (vol.patient, os.path.dirname(vol.rel), tuple(np.round(sl.normal, 2) + 0.0), _inplane(vol),
                       vol.axes)
                singles.setdefault(key, []).append(sl)
                continue
            group = [_geometry(vol, z) for z in range(nz)]
        except Problem as p:
            problems.append((vol.path, vol.name, p))
            continue
        ident = f"{vol.patient}/{vol.rel}|{','.join(vol.axes)}"
        out.append(_series(group, ident, vol.patient, salt, notes))
    for key, group in singles.items():
        patient, folder, normal, inplane, axes = key
        worst = max(1.0 - float(np.dot(group[0].normal, s.normal)) for s in group)
        ident = f"{patient}/{folder}|{normal}|{inplane}|{','.join(axes)}"
        pos = sorted(s.position for s in group)
        if worst > _NORMAL_TOL:
            problems.append((group[0].vol.path, group[0].vol.name, Problem(
                "inconsistent-series", f"the {len(group)} single-slice files of this folder differ in orientation")))
            continue
        if any(b - a <= _SAME_POSITION_MM for a, b in zip(pos, pos[1:])):
            problems.append((os.path.dirname(group[0].vol.path), os.path.dirname(group[0].vol.name) or group[0].vol.name,
                             Problem("inconsistent-series",
                                     f"{len(group)} single-slice NIfTI files in this folder share slice positions, "
                                     f"so they cannot be ordered (an affine with sform/qform codes 0, or two series in "
                                     f"one folder)",
                                     hint="put each series in its own folder, fix the affine, or leave files out")))
            continue
        out.append(_series(group, ident, patient, salt, notes))
    return out, problems, notes


def _inplane(vol: Volume) -> tuple[int, int]:
    return vol.shape[vol.axes.index("y")], vol.shape[vol.axes.index("x")]


def _series(group: list[_Slice], ident: str, patient: str, salt: bytes, notes: list[str]) -> SeriesInfo:
    group = sorted(group, key=lambda s: s.position)
    key = pseudonym(f"nifti-series:{ident}", salt, "se-")
    slices = tuple(make_slice(i, s) for i, s in enumerate(group))
    timed = all(s.vol.frame_ms is not None for s in group)
    counts = sorted({s.n_frames for s in slices})
    if len(counts) > 1:
        notes.append(f"series {key}: slices have different frame counts ({', '.join(map(str, counts))})")
    return SeriesInfo(
        key=key, study_key=pseudonym(f"nifti-study:{patient}", salt, "st-"),
        patient_key=pseudonym(f"nifti-patient:{patient}", salt, "pt-"),
        normal=tuple(float(v) for v in group[0].normal), position_source="NIfTI affine",
        time_source="NIfTI pixdim[4]" if timed else "NIfTI axis order (times unknown)", slices=slices,
    )


def make_slice(index: int, s: _Slice) -> NiftiSliceInfo:
    vol = s.vol
    t = vol.shape[vol.axes.index("t")]
    return NiftiSliceInfo(
        index=index, position_mm=s.position,
        frames=tuple(FrameRef(vol.path, i, vol.name) for i in range(t)),
        times_ms=None if vol.frame_ms is None else tuple(round(i * vol.frame_ms, 3) for i in range(t)),
        shape=_inplane(vol), pixel_spacing_mm=s.spacing, slice_thickness_mm=s.thickness, acquisition_matrix=None,
        axes=vol.axes, z=s.z,
    )
