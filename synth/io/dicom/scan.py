"""The scan: image files under the inputs -> series -> slices -> frames in temporal order.

The public records (:class:`FrameRef`, :class:`SliceInfo`, :class:`SeriesInfo`, :class:`Skip`,
:class:`Catalog`) and :func:`scan`; the grouping and time-ordering rules are in the
:mod:`synth.io.dicom` package docstring.  Each file is read by :mod:`synth.io.dicom.probe`.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from synth.errors import ConfigError, NiftiError, NoInputError
from synth.io.deid import PathNames, pseudonym
from synth.io.dicom.probe import _SKIP_HINT, _Frame, _probe, _Problem, _quiet_pydicom
from synth.io.dicom.values import _normal

log = logging.getLogger("smssynth.dicom")

POSITION_TOL_MM = 0.01
"""Images whose positions along the normal differ by at most this much (mm) are one slice."""
ORIENTATION_TOL = 1e-4
"""Largest ``1 - cos(angle)`` between two images' normals within one series (about 0.8 deg)."""
ON_ERROR = ("skip", "fail")
SKIP_CATEGORIES = ("not-dicom", "non-image", "burned-in", "corrupt", "unsupported", "inconsistent-series",
                   "no-images")
NEVER_FATAL = ("not-dicom", "non-image")
"""Categories skipped even under ``on_error="fail"``: files that are plainly not images."""


# ----------------------------------------------------------------------------- public records

@dataclass(frozen=True)
class FrameRef:
    """Where one frame lives: ``path`` as found, ``frame`` index in a multi-frame file or None.

    ``name`` is how messages call the file (masked unless ``show_paths``; see
    :class:`synth.io.deid.PathNames`); it takes no part in comparisons.
    """

    path: str
    frame: int | None
    name: str = field(default="", compare=False)


@dataclass(frozen=True)
class SliceInfo:
    """One slice of a series: its frames in temporal order and its geometry.

    Attributes
    ----------
    index : 0.. in order of position along the series normal.
    position_mm : position along the normal (IPP . n) or SliceLocation, mm.
    frames : temporal order.
    times_ms : per-frame time used for ordering, ms: trigger delay, or acquisition clock
        relative to the series' earliest frame; None when ordered by an index.
    shape : (rows, cols) as stored.
    pixel_spacing_mm : (row spacing, column spacing), mm.
    slice_thickness_mm : mm.
    acquisition_matrix : (n_rows_acquired, n_cols_acquired): the acquired k-space extent on
        the stored image's k-space grid, in its row/column directions, from AcquisitionMatrix +
        InPlanePhaseEncodingDirection + PercentPhaseFieldOfView (Enhanced MR:
        MRFOVGeometrySequence); None when absent.
    """

    index: int
    position_mm: float
    frames: tuple[FrameRef, ...]
    times_ms: tuple[float, ...] | None
    shape: tuple[int, int]
    pixel_spacing_mm: tuple[float, float] | None
    slice_thickness_mm: float | None
    acquisition_matrix: tuple[int, int] | None

    @property
    def n_frames(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class SeriesInfo:
    """One series, named by pseudonyms; ``slices`` sorted by ``position_mm`` ascending."""

    key: str
    study_key: str
    patient_key: str
    normal: tuple[float, float, float] | None
    position_source: str
    time_source: str
    slices: tuple[SliceInfo, ...]


@dataclass(frozen=True)
class Skip:
    """A file (or, for ``inconsistent-series``, a series' folder) left out, and why.

    ``path`` is the real path (for the caller's own use); ``name`` is how messages name it
    (masked unless ``show_paths``).  ``reason`` never holds a path.
    """

    path: str
    reason: str
    category: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name or '(input)'}: {self.reason}"


@dataclass
class Catalog:
    """What :func:`scan` found: usable series (sorted by key), skips, warnings, files examined.

    ``fallbacks`` counts series that needed a documented fallback, e.g. ``{"SliceLocation": 2}``:
    two series whose slices were separated by SliceLocation because an image's
    ImagePositionPatient/ImageOrientationPatient was missing or malformed.
    """

    series: list[SeriesInfo]
    skipped: list[Skip]
    warnings: list[str]
    n_files: int
    fallbacks: Counter = field(default_factory=Counter)


# ----------------------------------------------------------------------------- scan

def scan(inputs: Sequence[str | os.PathLike], *, salt: bytes, on_error: str = "skip",
         show_paths: bool = False, nifti_axes: str | Sequence[str] | None = None) -> Catalog:
    """Find the image series under ``inputs`` (files and folders, searched recursively).

    Reads headers only; for uncompressed pixel data it checks that the file holds
    Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8 bytes, for compressed data that
    the fragment sequence is complete and a decoder is installed.

    Parameters
    ----------
    inputs : files and/or folders; files need no ``.dcm`` extension.
    salt : pseudonym key, see :func:`synth.io.deid.resolve_salt`.
    on_error : ``"skip"`` leaves corrupt/unsupported/burned-in files and inconsistent series out
        (counted in ``Catalog.skipped`` and logged) and accepts the SliceLocation fallback
        (counted, warned); ``"fail"`` raises on the first one.  Non-DICOM and non-image files
        are always skipped, never fatal.
    show_paths : name files by their real paths in messages; by default each path component
        is a salted hash (:class:`synth.io.deid.PathNames`).
    nifti_axes : the axis order of NIfTI files (``"t,y,x"``...), overriding the header's; files
        named ``*.nii``/``*.nii.gz`` are read as NIfTI (:mod:`synth.io.nifti`).

    Raises
    ------
    NoInputError
        An input does not exist, or no usable image series was found.
    DicomError
        (``on_error="fail"``) a corrupt or unsupported file, or an inconsistent series;
        :class:`MissingDecoderError` when a decoder plugin is absent.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"--on-error: must be one of {ON_ERROR}, got {on_error!r}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    names = PathNames(inputs, salt, show_paths)
    paths = _find_files(inputs, names)

    skipped: list[Skip] = []
    notes: list[str] = []
    fallbacks: Counter = Counter()
    by_series: dict[tuple[str, str], list[_Frame]] = defaultdict(list)

    def skip(path: str, p: _Problem, reason: str | None = None) -> None:
        s = Skip(path, reason or p.reason, p.category, names(path))
        if on_error == "fail" and s.category not in NEVER_FATAL:
            raise p.exc(f"{s}; {p.hint or _SKIP_HINT}")
        level = logging.INFO if s.category in NEVER_FATAL else logging.WARNING
        log.log(level, "skipped %s (%s): %s", s.name, s.category, s.reason)
        skipped.append(s)

    from synth.io import nifti

    axes = nifti_axes if isinstance(nifti_axes, tuple) else nifti.parse_axes(nifti_axes)
    volumes: list = []
    with _quiet_pydicom():
        for path in paths:
            if nifti.is_nifti(path):
                try:
                    volumes.append(nifti.probe(path, names(path), nifti.patient_folder(path, inputs), axes))
                except nifti.Problem as p:
                    skip(path, _Problem(p.category, p.reason, NiftiError, hint=p.hint))
                continue
            probe = _probe(path, names(path))
            if isinstance(probe, _Problem):
                skip(path, probe)
                continue
            notes.extend(probe.notes)
            for f in probe.frames:
                by_series[(f.study, f.series)].append(f)

    series: list[SeriesInfo] = []
    for (study, series_uid), frames in by_series.items():
        key = pseudonym(f"series:{study}/{series_uid}", salt, "se-")
        patient = frames[0].patient or f"patient-of-study:{study}"
        try:
            info, series_notes = _build_series(
                frames, key, pseudonym(f"study:{study}", salt, "st-"), pseudonym(patient, salt, "pt-"),
                strict=on_error == "fail",
            )
        except _Problem as p:
            where = p.where or (os.path.commonpath([f.path for f in frames]) if len({f.path for f in frames}) > 1
                                else frames[0].path)
            skip(where, p, f"series {key} ({len(frames)} frames): {p.reason}")
            continue
        series.append(info)
        notes.extend(series_notes)
        if info.position_source == "SliceLocation":
            fallbacks["SliceLocation"] += 1
    nifti_series, problems, nifti_notes = nifti.build_series(volumes, salt)
    for where, name, p in problems:
        s = Skip(where, p.reason, p.category, name)
        if on_error == "fail" and s.category not in NEVER_FATAL:
            raise NiftiError(f"{s}; {p.hint or _SKIP_HINT}")
        log.warning("skipped %s (%s): %s", s.name, s.category, s.reason)
        skipped.append(s)
    series.extend(nifti_series)
    notes.extend(nifti_notes)
    series.sort(key=lambda s: s.key)
    for n in notes:
        log.warning(n)

    if not series:
        raise NoInputError(_nothing_found(inputs, len(paths), skipped, names))
    return Catalog(series=series, skipped=skipped, warnings=notes, n_files=len(paths), fallbacks=fallbacks)


def _find_files(inputs: Sequence[str | os.PathLike], names: PathNames) -> list[str]:
    """Every file under ``inputs`` (folders recursively, sorted), each real file once."""
    inputs = [os.fspath(p) for p in inputs]
    if not inputs:
        raise NoInputError("no input given: pass DICOM files or folders")
    missing = [p for p in inputs if not os.path.exists(p)]
    if missing:
        raise NoInputError(f"input not found: {', '.join(map(names, missing))}")
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)

    for p in inputs:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                for name in sorted(files):
                    add(os.path.join(root, name))
        else:
            add(p)
    return out


def _nothing_found(inputs, n_files: int, skipped: list[Skip], names: PathNames) -> str:
    where = ", ".join(names(p) for p in inputs)
    if not n_files:
        return f"no files found in {where}"
    counts = Counter(s.category for s in skipped)
    parts = ", ".join(f"{n} {c}" for c, n in sorted(counts.items()))
    msg = f"no usable MR/CT image series (DICOM or NIfTI) in {where}: {n_files} files examined, skipped {parts}"
    worst = [s for s in skipped if s.category not in NEVER_FATAL] or skipped
    if worst:
        msg += f" (e.g. {worst[0]})"
    return msg


# ----------------------------------------------------------------------------- series assembly

def _build_series(frames: list[_Frame], key: str, study_key: str, patient_key: str, *, strict: bool = False):
    """One series from its frames: ``(SeriesInfo, notes)``; :class:`_Problem` if it cannot be used.

    ``strict`` (``--on-error fail``): an image without a usable ImagePositionPatient/
    ImageOrientationPatient refuses the series instead of falling back to SliceLocation.
    """
    notes: list[str] = []
    frames, dups = _dedupe(frames)
    if dups:
        notes.append(f"series {key}: {dups} duplicate image(s) (same SOPInstanceUID as another file) ignored")

    if all(f.ipp is not None and f.iop is not None for f in frames):
        normal = _normal(frames[0].iop)
        worst = max(1.0 - float(np.dot(normal, _normal(f.iop))) for f in frames)
        if worst > ORIENTATION_TOL:
            angle = math.degrees(math.acos(max(-1.0, min(1.0, 1.0 - worst))))
            raise _Problem("inconsistent-series", f"images differ in orientation by up to {angle:.1f} deg "
                                                  "(e.g. a multi-plane localizer); one stack needs one orientation")
        pos = [float(np.dot(f.ipp, normal)) for f in frames]
        position_source, normal_t = "ImagePositionPatient", tuple(float(v) for v in normal)
    elif all(f.slice_location is not None for f in frames):
        bad = [f for f in frames if f.ipp is None or f.iop is None]
        issues = Counter(f.geometry_issue for f in bad)
        what = "; ".join(f"{n} with {issue}" for issue, n in sorted(issues.items()))
        if strict:
            raise _Problem(
                "inconsistent-series",
                f"{bad[0].geometry_issue} in this file ({len(bad)} of {len(frames)} image(s): {what}); slices "
                f"could only be told apart by SliceLocation, which is rounded and not always along the normal",
                where=bad[0].path,
                hint="fix the header, or use --on-error skip to accept the SliceLocation fallback (counted and "
                     "warned)",
            )
        pos = [f.slice_location for f in frames]
        position_source, normal_t = "SliceLocation", None
        notes.append(f"series {key}: {len(bad)} of {len(frames)} image(s) without a usable "
                     f"ImagePositionPatient/ImageOrientationPatient ({what}; e.g. {bad[0].name}); slices "
                     "separated by SliceLocation")
    else:
        bad = [f for f in frames if (f.ipp is None or f.iop is None) and f.slice_location is None]
        raise _Problem("inconsistent-series", f"{len(bad)} image(s) have neither ImagePositionPatient + "
                       f"ImageOrientationPatient nor SliceLocation (e.g. {bad[0].name}: "
                       f"{bad[0].geometry_issue}, SliceLocation missing); slices cannot be told apart")

    groups: list[list[int]] = []
    anchor = -math.inf
    for i in sorted(range(len(frames)), key=lambda i: pos[i]):
        if pos[i] - anchor > POSITION_TOL_MM:
            groups.append([])
            anchor = pos[i]
        groups[-1].append(i)

    by_slice = [[frames[i] for i in g] for g in groups]
    time_source, tkey, rel_times, fallback = _time_order(by_slice, frames)
    if time_source == "InstanceNumber":
        for sl in by_slice:
            order = [(f.instance, f.frame or 0, f.path if f.frame is not None else "") for f in sl]
            if len(sl) > 1 and (any(f.instance is None for f in sl) or len(set(o[:2] for o in order)) < len(sl)):
                raise _Problem(
                    "inconsistent-series",
                    f"{len(sl)} images at one slice position cannot be ordered in time (TriggerTime, "
                    f"AcquisitionTime and InstanceNumber missing or repeated; often the same image saved "
                    f"several times); pass the files one at a time or only one of them",
                )
    if fallback:
        notes.append(f"series {key}: frames ordered by {time_source} ({fallback})")

    slices = []
    for index, g in enumerate(groups):
        members = sorted(g, key=lambda i: (tkey(i), frames[i].instance if frames[i].instance is not None
                                           else math.inf, frames[i].frame or 0, frames[i].path))
        fs = [frames[i] for i in members]
        shapes = sorted({f.shape for f in fs})
        position = float(np.mean([pos[i] for i in g]))
        if len(shapes) > 1:
            sizes = ", ".join(f"{r}x{c}" for r, c in shapes)
            raise _Problem("inconsistent-series",
                           f"the frames of the slice at {position:.2f} mm differ in size ({sizes})")
        slices.append(SliceInfo(
            index=index, position_mm=position,
            frames=tuple(FrameRef(f.path, f.frame, f.name) for f in fs),
            times_ms=None if rel_times is None else tuple(rel_times[i] for i in members),
            shape=fs[0].shape, pixel_spacing_mm=fs[0].spacing, slice_thickness_mm=fs[0].thickness,
            acquisition_matrix=fs[0].acq_matrix,
        ))
    counts = sorted({s.n_frames for s in slices})
    if len(counts) > 1:
        notes.append(f"series {key}: slices have different frame counts ({', '.join(map(str, counts))})")
    shapes = sorted({s.shape for s in slices})
    if len(shapes) > 1:
        notes.append(f"series {key}: slices have different matrix sizes "
                     f"({', '.join(f'{r}x{c}' for r, c in shapes)}); each slice keeps its own")
    info = SeriesInfo(key=key, study_key=study_key, patient_key=patient_key, normal=normal_t,
                      position_source=position_source, time_source=time_source, slices=tuple(slices))
    return info, notes


def _dedupe(frames: list[_Frame]) -> tuple[list[_Frame], int]:
    """Drop a frame whose (SOPInstanceUID, frame) was already seen (the same image twice)."""
    seen, out = set(), []
    for f in sorted(frames, key=lambda f: (f.path, f.frame or 0)):
        ident = (f.instance_uid, f.frame)
        if f.instance_uid and ident in seen:
            continue
        seen.add(ident)
        out.append(f)
    return out, len(frames) - len(out)


def _time_order(by_slice: list[list[_Frame]], frames: list[_Frame]):
    """Pick the series' time key: (name, key(frame index), relative times or None, fallback note)."""
    enhanced = all(f.enhanced for f in frames)
    index_of = {id(f): i for i, f in enumerate(frames)}
    clock = _clock_ms(frames)
    candidates = [
        ("NominalCardiacTriggerDelayTime" if enhanced else "TriggerTime",
         [f.trigger_ms for f in frames], True),
        ("FrameAcquisitionDateTime" if enhanced else "AcquisitionTime", clock, True),
        ("TemporalPositionIndex", [f.temporal_index for f in frames], False),
    ]
    multi = any(len(s) > 1 for s in by_slice)
    rejected = []
    for name, values, is_time in candidates:
        usable = all(v is not None for v in values) and (
            not multi or all(_distinct([values[index_of[id(f)]] for f in s]) for s in by_slice))
        if usable:
            fallback = ""
            if rejected and multi:
                fallback = f"{' and '.join(rejected)} missing or not distinct within a slice"
            return name, (lambda i, v=values: v[i]), (list(values) if is_time else None), fallback
        if name != "TemporalPositionIndex" or enhanced:
            rejected.append(name)
    fallback = f"{', '.join(rejected)} missing or not distinct within a slice" if multi else ""
    return "InstanceNumber", (lambda i: 0), None, fallback


def _distinct(values: list[float]) -> bool:
    v = sorted(values)
    return all(b - a > 1e-6 for a, b in zip(v, v[1:]))


def _clock_ms(frames: list[_Frame]) -> list[float | None]:
    """Acquisition clock per frame, ms relative to the earliest; None for all if any is missing."""
    if any(f.tod_ms is None for f in frames):
        return [None] * len(frames)
    if all(f.date_ord is not None for f in frames):
        t = [f.date_ord * 86_400_000.0 + f.tod_ms for f in frames]
    else:
        t = [f.tod_ms for f in frames]
        if max(t) - min(t) > 43_200_000:  # a series spanning midnight without dates
            t = [v + 86_400_000.0 if v < 43_200_000 else v for v in t]
    t0 = min(t)
    return [round(v - t0, 3) for v in t]
