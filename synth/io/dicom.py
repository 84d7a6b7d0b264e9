"""DICOM ingestion: files and folders -> series -> slices -> frames in temporal order.

:func:`scan` reads headers only and returns a :class:`Catalog`; :func:`load_slice` decodes one
slice's frames to a float32 ``(T, rows, cols)`` array of magnitudes with the rescale applied.

Grouping
--------
* **Series**: (StudyInstanceUID, SeriesInstanceUID).
* **Slices**: position along the slice normal ``n = row_cosines x col_cosines`` (from
  ImageOrientationPatient), ``position = ImagePositionPatient . n`` in mm.  Positions within
  :data:`POSITION_TOL_MM` (0.01 mm) of a slice's first position belong to that slice.  When an
  image's IPP/IOP is missing or malformed, the series is refused under ``on_error="fail"`` (the
  message names the file and the attribute); under ``"skip"`` its slices are separated by
  SliceLocation instead (counted in ``Catalog.fallbacks`` and warned once per series).  All
  images of a series must share one orientation (normals within about 0.8 degrees).
* **Frames**: grouped by position first, then ordered in time, because trigger times differ
  from slice to slice (Sunnybrook).  The time key is chosen per series: TriggerTime
  (Enhanced MR: CardiacSynchronizationSequence NominalCardiacTriggerDelayTime), else
  AcquisitionDate/Time (Enhanced: FrameContentSequence FrameAcquisitionDateTime), else
  TemporalPositionIndex (Enhanced only), else InstanceNumber (then frame index); a key is used
  only if every frame has it and it separates every slice's frames.  Falling back names the
  key used in a warning.  Clock times are reported relative to the series' earliest frame,
  so no acquisition time of day leaves this module.

Enhanced (multi-frame) MR/CT files give the same slices as single-frame files: each frame's
position, orientation, pixel spacing, timing and rescale come from its per-frame functional
groups, falling back to the shared ones.  Frames that are not magnitude images (phase, real,
imaginary, e.g. the B0 field-map half of a Philips fMAP file) are left out with a warning;
so are single-frame phase/real/imaginary images (skipped as ``non-image``).

Images that may show identifiers in their pixels are never used (category ``burned-in``:
skipped and counted, or refused under ``on_error="fail"``):

* ``BurnedInAnnotation`` is ``YES``;
* the SOP class is a Secondary Capture (single- or multi-frame): screen shots and scanned
  documents, whatever their other attributes;
* an MR/CT image whose ImageType value 2 is ``SECONDARY`` *and* a later value names a screen
  capture or report (``SCREEN SHOT``, ``SCREEN SAVE``, ``SC``, ``CAPTURE``, ``REPORT``...).
  ``DERIVED\\SECONDARY`` alone is *not* refused: scanners write it for legitimate reformats,
  averages and subtractions, which are ordinary images.

Pixel data must hold exactly Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated/8
bytes (plus the one padding byte that makes an odd length even); shorter (truncated) or longer
data is ``corrupt``.  Deflated Explicit VR Little Endian files are inflated incrementally and
never past the size their header implies (plus :data:`DEFLATE_SLACK`), so a small "deflate bomb"
is refused after inflating a few MB instead of GBs.

Privacy: nothing returned, logged or raised carries a patient identifier.  Series, studies and
patients are named by :func:`synth.io.deid.pseudonym` keys; files and folders (which real exports
name after the patient) by :class:`synth.io.deid.PathNames`: salted hashes per path component
unless ``show_paths`` is set.  Messages otherwise hold only SOP class and transfer syntax names,
attribute names, numbers and keys.  pydicom's own warnings (which quote element values such as
UIDs) are silenced while reading.  The records keep the real paths (``FrameRef.path``,
``Skip.path``) for reading; their ``name`` is what messages use.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import re
import struct
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from synth.errors import ConfigError, DicomError, MissingDecoderError, NiftiError, NoInputError
from synth.io.deid import PathNames, pseudonym

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
DEFLATE_HEADER_CAP = 16 * 2**20
"""Most bytes a deflated file's data set may inflate to before its Pixel Data element (an
Enhanced MR header takes about 2.3 kB per frame: 16 MiB is some 7000 frames)."""
DEFLATE_SLACK = 4 * 2**20
"""Bytes a deflated data set may hold beyond its header and the pixel data the header implies
(elements after Pixel Data, e.g. trailing padding)."""

# Greyscale image storage classes whose pixels are magnitudes we can use.
_IMAGE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.4",  # Legacy Converted Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
    "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
})
_DICOMDIR = "1.2.840.10008.1.3.10"
_SECONDARY_CAPTURE = frozenset({
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
    "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
})
# ImageType values (3rd on) that, with SECONDARY, mark a screen capture or a report page.
_SCREEN_CAPTURE_TYPES = frozenset({
    "SCREEN SHOT", "SCREENSHOT", "SCREEN SAVE", "SCREENSAVE", "SCREEN CAPTURE", "SC", "CAPTURE",
    "REPORT", "CSA REPORT", "DOSE REPORT", "DOSE INFO",
})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_DEFLATED = "1.2.840.10008.1.2.1.99"
_NON_MAGNITUDE = frozenset({"P", "PHASE", "R", "REAL", "I", "IMAGINARY"})
_GE_IMAGE_TYPE = {1: "PHASE", 2: "REAL", 3: "IMAGINARY"}  # (0043,102F) GEMS_PARM_01

# Decoder plugin packages per compressed transfer syntax (pydicom 3 + pylibjpeg).
_PLUGINS = {
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
    **{uid: "pylibjpeg pylibjpeg-libjpeg" for uid in (
        "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")},
    **{uid: "pylibjpeg pylibjpeg-openjpeg" for uid in (
        "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")},
}
_SKIP_HINT = "use --on-error skip to leave such files out and go on"


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


# ----------------------------------------------------------------------------- per-file probe


@dataclass
class _Frame:
    """One frame's header facts (internal: holds UIDs, never leaves this module)."""

    path: str
    name: str  # how messages call the file (PathNames)
    frame: int | None
    # identifiers: only ever hashed; kept out of repr so no traceback or debug print shows them
    study: str = field(repr=False)
    series: str = field(repr=False)
    patient: str = field(repr=False)  # "patient:<ID>" / "patient-name:<name>" / "" (use the study)
    instance_uid: str = field(repr=False)
    ipp: tuple[float, ...] | None
    iop: tuple[float, ...] | None
    slice_location: float | None
    trigger_ms: float | None
    date_ord: int | None
    tod_ms: float | None
    temporal_index: int | None
    instance: int | None
    shape: tuple[int, int]
    spacing: tuple[float, float] | None
    thickness: float | None
    acq_matrix: tuple[int, int] | None
    enhanced: bool
    geometry_issue: str = ""  # why ipp/iop is None, e.g. "ImagePositionPatient missing"


@dataclass
class _Probe:
    frames: list[_Frame]
    notes: list[str]


class _Problem(Exception):
    """Why a file or series cannot be used (internal; becomes a Skip or a DicomError).

    ``where``: the file to name instead of the series' folder; ``hint``: what to do, instead of
    the generic "use --on-error skip".
    """

    def __init__(self, category: str, reason: str, exc: type[DicomError] = DicomError, *,
                 where: str | None = None, hint: str | None = None):
        super().__init__(reason)
        self.category, self.reason, self.exc, self.where, self.hint = category, reason, exc, where, hint


def _probe(path: str, name: str) -> _Probe | _Problem:
    try:
        with open(path, "rb") as fp:
            if _deflated_meta(fp) is not None:
                try:  # the data set after the file meta is one zlib stream: inflate it, bounded
                    ds, fp, offset, size = _read_deflated(fp, full=False)
                except _Problem as p:
                    return p
                except Exception as e:
                    return _Problem("corrupt", f"unreadable deflated DICOM data set ({type(e).__name__}: "
                                               f"{_scrub(e)})")
            else:
                try:
                    ds = pydicom.dcmread(fp, stop_before_pixels=True)
                except InvalidDicomError:
                    return _raw_dataset_problem(fp)
                except Exception as e:  # pydicom raises many types on damaged headers
                    return _Problem("corrupt", f"unreadable DICOM header ({type(e).__name__}: {_scrub(e)})")
                offset = fp.tell()
                size = os.fstat(fp.fileno()).st_size
            try:
                return _classify(path, name, ds, fp, offset, size)
            except _Problem as p:
                return p
            except Exception as e:  # an invalid value deep in the header
                return _Problem("corrupt", f"invalid DICOM header ({type(e).__name__}: {_scrub(e)})")
    except OSError as e:
        return _Problem("corrupt", f"cannot read the file ({e.strerror or type(e).__name__})")


# ----------------------------------------------------------------------------- deflated files


class _Inflating:
    """Read-only file object over the inflated data set of a deflated file.

    Inflates only as far as it is read, and never more than ``cap`` bytes: reading past it
    raises :class:`_Problem`.  pydicom's own reader inflates the whole stream at once
    (``zlib.decompress``), so a 2 MB file can demand GBs of memory before anything checks it.
    """

    name = "<deflated data set>"  # pydicom may quote the file's name; never the real one

    def __init__(self, fp, cap: int):
        self._fp, self.cap = fp, cap
        self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, PS3.5 A.5
        self._buf = bytearray()
        self._pos = 0
        self.complete = False  # the zlib stream ended properly
        self._exhausted = False

    def _fill(self, upto: int) -> None:
        while len(self._buf) < upto and not self._exhausted:
            room = self.cap + 1 - len(self._buf)  # one byte over the cap proves it is exceeded
            if room <= 0:
                raise _Problem("corrupt", self._too_big())
            data = self._z.unconsumed_tail or self._fp.read(1 << 16)
            if not data:
                self._exhausted = True  # input ended before the end of the stream: truncated
                break
            try:
                self._buf += self._z.decompress(data, min(room, max(upto - len(self._buf), 1 << 16)))
            except zlib.error as e:
                raise _Problem("corrupt", f"damaged deflate stream ({_scrub(e)})") from None
            if self._z.eof:
                self.complete = self._exhausted = True
        if len(self._buf) > self.cap:
            raise _Problem("corrupt", self._too_big())

    def _too_big(self) -> str:
        return (f"the deflated data set inflates to more than {self.cap} bytes, more than its header "
                f"implies (Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8 plus "
                f"{DEFLATE_SLACK // 2**20} MiB for the other elements); refused before inflating further "
                "(a deflate bomb?); if the file is genuine, re-export it uncompressed")

    def read(self, n: int = -1) -> bytes:
        end = self.cap + 1 if n is None or n < 0 else self._pos + n
        self._fill(end)
        out = bytes(self._buf[self._pos:end])
        self._pos += len(out)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            self._fill(self.cap + 1)
            offset += len(self._buf)
        elif whence == 1:
            offset += self._pos
        self._pos = max(0, offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def inflate_all(self) -> int:
        """Inflate to the end (within the cap); the inflated size in bytes."""
        self._fill(self.cap + 1)
        if not self.complete:
            raise _Problem("corrupt", "the deflated data set ends before its end of stream (truncated?)")
        return len(self._buf)

    def getvalue(self) -> bytes:
        return bytes(self._buf)


def _deflated_meta(fp):
    """The file meta of a Part 10 file in Deflated Explicit VR Little Endian, else None.

    Leaves ``fp`` at its start (None) or just after the file meta (the meta)."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        if str(meta.get("TransferSyntaxUID") or "") == _DEFLATED:
            return meta
    except Exception:
        pass
    fp.seek(0)
    return None


def _read_deflated(fp, *, full: bool):
    """Read a deflated file: ``(dataset, inflated stream, pixel data offset, inflated size)``.

    The header (up to Pixel Data) may inflate to :data:`DEFLATE_HEADER_CAP` bytes; the whole data
    set to the header plus the pixel bytes the header implies plus :data:`DEFLATE_SLACK`, else
    :class:`_Problem`.  The stream is left at the Pixel Data element, like pydicom's
    ``stop_before_pixels`` leaves a file; ``dataset`` is the header, or with ``full`` every
    element (Pixel Data too).
    """
    from pydicom.dataset import FileDataset
    from pydicom.filereader import read_dataset

    fp.seek(0)
    meta = _deflated_meta(fp)
    if meta is None:
        raise _Problem("corrupt", "the file meta information cannot be read again (did the file change?)")
    stream = _Inflating(fp, DEFLATE_HEADER_CAP)
    last = [-1]

    def at_pixels(tag, vr, length) -> bool:
        # PS3.5 7.1: a data set's elements ascend.  Checking it stops junk (a stream of zeros
        # parses as millions of tiny elements) at its second element instead of after the cap.
        if tag <= last[0]:
            raise _Problem("corrupt", f"the deflated data set is not a valid data set (element "
                                      f"({tag >> 16:04X},{tag & 0xFFFF:04X}) after ({last[0] >> 16:04X},"
                                      f"{last[0] & 0xFFFF:04X}); elements must ascend)")
        last[0] = int(tag)
        return tag in _PIXEL_TAGS

    header = read_dataset(stream, False, True, stop_when=at_pixels)
    offset = stream.tell()
    stream.cap = offset + 12 + _implied_pixel_bytes(header) + 1 + DEFLATE_SLACK
    size = stream.inflate_all()
    ds = header
    if full:
        stream.seek(0)
        ds = read_dataset(stream, False, True)
    stream.seek(offset)
    return FileDataset(_Inflating.name, ds, None, meta, False, True), stream, offset, size


def _implied_pixel_bytes(ds: Dataset) -> int:
    """Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8 from a header, 0 if unknown;
    at most 2**32 - 2 (the longest native Pixel Data element)."""
    rows, cols = _int(_get(ds, "Rows")) or 0, _int(_get(ds, "Columns")) or 0
    bits, spp = _int(_get(ds, "BitsAllocated")) or 0, _int(_get(ds, "SamplesPerPixel")) or 1
    frames = _int(_get(ds, "NumberOfFrames")) or 1
    n = max(rows, 0) * max(cols, 0) * max(spp, 1) * max(frames, 1)
    return min((n + 7) // 8 if bits == 1 else n * max(bits, 0) // 8, 0xFFFFFFFE)


def _raw_dataset_problem(fp) -> _Problem:
    """Classify a file without the Part 10 header: a bare data set, or not DICOM at all."""
    fp.seek(0)
    if _looks_like_raw_dataset(fp.read(4)):  # gate: never force-parse arbitrary binaries
        fp.seek(0)
        try:
            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=True)
        except Exception:
            ds = None
        if ds is not None and ("SOPClassUID" in ds or "StudyInstanceUID" in ds):
            if _is_image(str(_get(ds, "SOPClassUID") or ""), ds):
                return _Problem("corrupt", "DICOM data set without the Part 10 file header "
                                           "(no 128-byte preamble, 'DICM' prefix or file meta)")
            return _Problem("non-image", "not an MR/CT image (a DICOM data set without file meta)")
    return _Problem("not-dicom", "not a DICOM file")


def _is_image(sop: str, ds: Dataset) -> bool:
    """An MR/CT image storage class; without a SOP class, Modality MR/CT plus Rows."""
    if sop:
        return sop in _IMAGE_SOP_CLASSES
    return str(_get(ds, "Modality") or "") in ("MR", "CT") and _get(ds, "Rows") is not None


def _looks_like_raw_dataset(head: bytes) -> bool:
    """A bare data set (no preamble/meta) starts with a group 0x0002 or 0x0008 tag."""
    if len(head) < 4:
        return False
    le, be = struct.unpack("<H", head[:2])[0], struct.unpack(">H", head[:2])[0]
    return le in (0x0002, 0x0008) or be in (0x0002, 0x0008)


def _classify(path: str, name: str, ds: Dataset, fp, offset: int, size: int) -> _Probe:
    meta = getattr(ds, "file_meta", None) or Dataset()
    sop = str(_get(ds, "SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    modality = str(_get(ds, "Modality") or "")
    if sop == _DICOMDIR:
        raise _Problem("non-image", "DICOMDIR (media directory, no image)")
    if sop in _SECONDARY_CAPTURE:
        raise _Problem("burned-in", f"{UID(sop).name}: screen captures and scanned pages may show patient "
                                    "identifiers in their pixels; such images are never used")
    if not _is_image(sop, ds):
        what = f"SOP class {UID(sop).name}" if sop else "no SOP class"
        raise _Problem("non-image", f"not an MR/CT image ({what}"
                                    f"{', modality ' + modality if modality else ''})")
    burned = _burned_in(ds)
    if burned:
        raise _Problem("burned-in", f"{burned}: the pixels may show patient identifiers; such images are never used")
    ts = meta.get("TransferSyntaxUID")
    if not ts:
        raise _Problem("corrupt", "file meta information has no TransferSyntaxUID; "
                                  "the pixel data cannot be decoded")
    ts = UID(str(ts))
    if offset >= size:  # an image's header is followed by its pixel data
        raise _Problem("corrupt", "the file ends before the pixel data (truncated?)")
    rows, cols = _int(_get(ds, "Rows")), _int(_get(ds, "Columns"))
    bits, spp = _int(_get(ds, "BitsAllocated")), _int(_get(ds, "SamplesPerPixel")) or 1
    if not rows or not cols or not bits:
        raise _Problem("corrupt", "image without Rows/Columns/BitsAllocated")
    if spp != 1:
        raise _Problem("unsupported", f"colour image (SamplesPerPixel={spp}); only greyscale "
                                      "magnitude images are used")
    n_frames = _int(_get(ds, "NumberOfFrames"))
    n_frames = 1 if n_frames is None else n_frames
    if n_frames < 1:
        raise _Problem("corrupt", f"NumberOfFrames is {n_frames}")

    # Sunnybrook's single-frame files carry a PerFrameFunctionalGroupsSequence of one empty item.
    if any(len(item) for item in _get(ds, "PerFrameFunctionalGroupsSequence") or []):
        frames, notes = _frames_enhanced(path, name, ds, n_frames, rows, cols)
    else:
        if sop and "Enhanced" in UID(sop).name:
            raise _Problem("unsupported", "Enhanced image without functional groups "
                                          "(no per-frame positions)")
        frames, notes = _frames_classic(path, name, ds, n_frames, rows, cols)

    _check_pixel_data(fp, offset, size, ts, rows * cols * spp * n_frames, bits, n_frames)
    if ts.is_compressed:
        _check_decoder(ts)
    return _Probe(frames, notes)


def _burned_in(ds: Dataset) -> str:
    """Why an MR/CT image may show identifiers in its pixels ('' if there is no sign of it).

    BurnedInAnnotation YES; or ImageType value 2 SECONDARY with a later value naming a screen
    capture or report (``DERIVED\\SECONDARY\\SCREEN SHOT``).  SECONDARY alone is an ordinary
    derived image (reformat, average, subtraction) and is kept.
    """
    if str(_get(ds, "BurnedInAnnotation") or "").strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    image_type = _get(ds, "ImageType")
    values = [image_type] if isinstance(image_type, str) else list(image_type or [])
    values = [str(v).strip().upper() for v in values]
    if len(values) > 1 and values[1] == "SECONDARY":
        hits = [v for v in values[2:] if v in _SCREEN_CAPTURE_TYPES]
        if hits:
            return f"ImageType SECONDARY with {hits[0]} (a screen capture or report page)"
    return ""


def _identity(ds: Dataset) -> dict:
    study, series = str(_get(ds, "StudyInstanceUID") or ""), str(_get(ds, "SeriesInstanceUID") or "")
    if not study or not series:
        raise _Problem("unsupported", "no StudyInstanceUID/SeriesInstanceUID: cannot group it into a series")
    pid, name = str(_get(ds, "PatientID") or "").strip(), str(_get(ds, "PatientName") or "").strip()
    patient = f"patient:{pid}" if pid else f"patient-name:{name}" if name else ""
    return dict(study=study, series=series, patient=patient,
                instance_uid=str(_get(ds, "SOPInstanceUID") or ""), instance=_int(_get(ds, "InstanceNumber")))


def _frames_classic(path: str, name: str, ds: Dataset, n_frames: int, rows: int,
                    cols: int) -> tuple[list[_Frame], list[str]]:
    kind = _complex_component_classic(ds)
    if kind:
        raise _Problem("non-image", f"{kind} image; only magnitude images are used")
    ident = _identity(ds)
    date = _get(ds, "AcquisitionDate")
    tm = _get(ds, "AcquisitionTime")
    date_ord, tod = _date_ord(date), _tod_ms(tm)
    if tod is None and _get(ds, "AcquisitionDateTime"):
        date_ord, tod = _datetime(_get(ds, "AcquisitionDateTime"))
    ipp, iop, issue = _geometry(ds, ds)
    common = dict(
        path=path, name=name, **ident, ipp=ipp, iop=iop, geometry_issue=issue,
        slice_location=_float(_get(ds, "SliceLocation")), trigger_ms=_float(_get(ds, "TriggerTime")),
        date_ord=date_ord, tod_ms=tod, temporal_index=None, shape=(rows, cols),
        spacing=_floats(_get(ds, "PixelSpacing"), 2), thickness=_float(_get(ds, "SliceThickness")),
        acq_matrix=_acq_matrix_classic(ds), enhanced=False,
    )
    # A classic multi-frame file has one position for all its frames: one slice over time.
    idx = [None] if n_frames == 1 else list(range(n_frames))
    return [_Frame(frame=i, **common) for i in idx], []


def _frames_enhanced(path: str, name: str, ds: Dataset, n_frames: int, rows: int,
                     cols: int) -> tuple[list[_Frame], list[str]]:
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence") or []
    shared_seq = _get(ds, "SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if len(per_frame) != n_frames:
        raise _Problem("corrupt", f"PerFrameFunctionalGroupsSequence has {len(per_frame)} items "
                                  f"for NumberOfFrames {n_frames}")
    ident = _identity(ds)
    top_acq = _acq_matrix_classic(ds)
    frames, dropped = [], Counter()
    for i in range(n_frames):
        def fg(kw: str, _item=per_frame[i]) -> Dataset | None:
            return _fg_item(_item, shared, kw)

        ftype = fg("MRImageFrameTypeSequence") or fg("CTImageFrameTypeSequence")
        comp = str(_get(ftype, "ComplexImageComponent") or "").upper()
        if comp in ("PHASE", "REAL", "IMAGINARY"):
            dropped[comp] += 1
            continue
        content, meas = fg("FrameContentSequence"), fg("PixelMeasuresSequence")
        date_ord, tod = _datetime(_get(content, "FrameAcquisitionDateTime"))
        ipp, iop, issue = _geometry(fg("PlanePositionSequence"), fg("PlaneOrientationSequence"),
                                    where=f"frame {i} ")
        frames.append(_Frame(
            path=path, name=name, frame=None if n_frames == 1 else i, **ident,
            ipp=ipp, iop=iop, geometry_issue=issue, slice_location=None,
            trigger_ms=_float(_get(fg("CardiacSynchronizationSequence"), "NominalCardiacTriggerDelayTime")),
            date_ord=date_ord, tod_ms=tod, temporal_index=_int(_get(content, "TemporalPositionIndex")),
            shape=(rows, cols),
            spacing=_floats(_get(meas, "PixelSpacing"), 2), thickness=_float(_get(meas, "SliceThickness")),
            acq_matrix=_acq_matrix_enhanced(fg("MRFOVGeometrySequence"), ds) or top_acq,
            enhanced=True,
        ))
    if not frames:
        raise _Problem("non-image", f"no magnitude frames ({', '.join(sorted(dropped))} only); "
                                    "only magnitude images are used")
    notes = []
    if dropped:
        kinds = ", ".join(f"{n} {k.lower()}" for k, n in sorted(dropped.items()))
        notes.append(f"{name}: {kinds} frame(s) of {n_frames} left out (only magnitude frames are used)")
    return frames, notes


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


def _complex_component_classic(ds: Dataset) -> str:
    """'PHASE'/'REAL'/'IMAGINARY' when a single-frame image is not a magnitude, else ''."""
    comp = str(_get(ds, "ComplexImageComponent") or "").upper()
    if comp in ("PHASE", "REAL", "IMAGINARY"):
        return comp
    if comp in ("MAGNITUDE", "MIXED"):
        return ""
    image_type = [str(v).upper() for v in (_get(ds, "ImageType") or [])][2:]
    hit = _NON_MAGNITUDE.intersection(image_type)
    if hit:
        return {"P": "PHASE", "R": "REAL", "I": "IMAGINARY"}.get(min(hit), min(hit))
    try:  # GE keeps the image kind in a private element
        return _GE_IMAGE_TYPE.get(int(ds.get_private_item(0x0043, 0x2F, "GEMS_PARM_01").value), "")
    except (KeyError, TypeError, ValueError):
        return ""


def _check_pixel_data(fp, offset, size, ts: UID, n_samples, bits, n_frames) -> None:
    """Raise _Problem unless the Pixel Data element after the header is complete and, when not
    encapsulated, exactly as long as the header implies (plus one byte of even-length padding).

    ``fp``/``offset``/``size``: the file, or a deflated file's inflated data set.
    """
    expected = (n_samples + 7) // 8 if bits == 1 else n_samples * (bits // 8)
    try:
        little, implicit = ts.is_little_endian, ts.is_implicit_VR
    except ValueError:
        raise _Problem("unsupported", f"unknown transfer syntax {ts}") from None
    endian = "<" if little else ">"
    fp.seek(offset)
    head = fp.read(8)
    if len(head) < 8:
        raise _Problem("corrupt", "no pixel data: the file ends after the header (truncated?)")
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group, elem) != (0x7FE0, 0x0010):
        if group == 0x7FE0 and elem in (0x0008, 0x0009):
            raise _Problem("unsupported", "floating-point pixel data is not supported")
        raise _Problem("corrupt", "no pixel data element after the header")
    if implicit:
        (length,) = struct.unpack(endian + "I", head[4:8])
        value_at = offset + 8
    elif head[4:6] in (b"OB", b"OW", b"UN", b"OF", b"OD", b"OL", b"OV"):
        more = fp.read(4)
        if len(more) < 4:
            raise _Problem("corrupt", "pixel data truncated inside its element header")
        (length,) = struct.unpack(endian + "I", more)
        value_at = offset + 12
    else:
        (length,) = struct.unpack(endian + "H", head[6:8])
        value_at = offset + 8
    if length == 0xFFFFFFFF:
        if not ts.is_encapsulated:
            raise _Problem("corrupt", f"undefined-length pixel data in uncompressed {ts.name}")
        _check_fragments(fp, value_at, size, n_frames)
        return
    if ts.is_encapsulated:
        raise _Problem("corrupt", f"{ts.name} pixel data is not encapsulated")
    have = min(length, size - value_at)
    if have < expected:
        raise _Problem("corrupt", f"pixel data truncated: {have} of {expected} bytes present "
                                  "(Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8)")
    if length not in (expected, expected + expected % 2):  # DICOM pads an odd length to even
        raise _Problem("corrupt", f"pixel data is {length} bytes, but the header implies {expected} "
                                  f"(Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8"
                                  f"{', plus 1 byte of padding' if expected % 2 else ''}); the header and "
                                  "the pixels disagree, so neither can be trusted")


def _check_fragments(fp, at: int, size: int, n_frames: int) -> None:
    """Walk the encapsulated item headers (8 bytes each) up to the sequence delimiter."""
    pos, items = at, 0
    while True:
        if pos + 8 > size:
            raise _Problem("corrupt", "compressed pixel data ends before its sequence delimiter (truncated?)")
        fp.seek(pos)
        group, elem, length = struct.unpack("<HHI", fp.read(8))
        if (group, elem) == (0xFFFE, 0xE0DD):
            break
        if (group, elem) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
            raise _Problem("corrupt", "damaged fragment sequence in the compressed pixel data")
        pos += 8 + length
        items += 1
    fragments = items - 1  # the first item is the basic offset table
    if fragments < n_frames:
        raise _Problem("corrupt", f"compressed pixel data holds {max(fragments, 0)} fragment(s) "
                                  f"for {n_frames} frame(s)")


def _check_decoder(ts: UID) -> None:
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise _Problem("unsupported", f"pixel data compressed with {ts.name} ({ts}), which pydicom "
                                      "cannot decode") from None
    if not decoder.is_available:
        raise _Problem("unsupported", _missing_decoder_message(ts), MissingDecoderError)


def _missing_decoder_message(ts: UID) -> str:
    pkgs = _PLUGINS.get(str(ts), "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    return (f"no decoder installed for {ts.name} ({ts}); install the decoders with "
            f'pip install "smssynth[decoders]" (or: pip install {pkgs})')


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


# ----------------------------------------------------------------------------- load


def load_slice(s: SliceInfo) -> np.ndarray:
    """Decode one slice: float32 ``(T, rows, cols)`` magnitudes, rescale applied, temporal order.

    Raises
    ------
    MissingDecoderError
        The transfer syntax needs a decoder plugin that is not installed.
    DicomError
        A frame cannot be read or decoded, or no longer matches the scanned header.  Messages
        name the file as the scan did (``FrameRef.name``), never by a path it was not given.
    """
    if hasattr(s, "read_pixels"):  # another format's slice reads itself (synth.io.nifti.NiftiSliceInfo)
        return s.read_pixels()
    out = np.empty((s.n_frames, *s.shape), dtype=np.float32)
    cache: dict[str, Dataset] = {}  # multi-frame files are read once per call
    with _quiet_pydicom():
        for t, ref in enumerate(s.frames):
            if not ref.name:  # a hand-made FrameRef: name it by its place, not its path
                ref = FrameRef(ref.path, ref.frame, f"frame {t} of slice {s.index}")
            ds = cache.get(ref.path)
            if ds is None:
                ds = _read_full(ref.path, ref.name)
                if ref.frame is not None:
                    cache[ref.path] = ds
            arr = _decode(ds, ref)
            if arr.shape != s.shape:
                raise DicomError(f"{ref.name}: decoded image is {arr.shape}, the scan found {s.shape}; "
                                 "did the file change since the scan?")
            slope, intercept = _rescale(ds, ref.frame)
            out[t] = arr.astype(np.float64) * slope + intercept
    return out


def _decode(ds: Dataset, ref: FrameRef) -> np.ndarray:
    """Stored values of one frame, (rows, cols); errors name the file and the transfer syntax."""
    from pydicom.pixels import pixel_array

    ts = _get(getattr(ds, "file_meta", None), "TransferSyntaxUID")
    if not ts:
        raise DicomError(f"{ref.name}: no TransferSyntaxUID in the file meta; {_SKIP_HINT}")
    ts = UID(str(ts))
    if ts.is_compressed:
        try:
            _check_decoder(ts)
        except _Problem as p:
            raise p.exc(f"{ref.name}: {p.reason}") from None
    try:
        return pixel_array(ds, index=ref.frame)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # also decoder panics (pyo3's PanicException is a BaseException)
        if isinstance(e, RuntimeError) and "missing" in str(e) and "dependenc" in str(e):
            raise MissingDecoderError(f"{ref.name}: {_missing_decoder_message(ts)}") from None
        where = "" if ref.frame is None else f" frame {ref.frame}"
        raise DicomError(f"{ref.name}{where}: cannot decode the {ts.name} pixel data "
                         f"({type(e).__name__}: {_scrub(e)}); the file may be corrupt; {_SKIP_HINT}") from None


def _read_full(path: str, name: str) -> Dataset:
    """The whole file (a deflated one inflated within its cap); errors call it ``name``."""
    try:
        with open(path, "rb") as fp:
            if _deflated_meta(fp) is not None:
                return _read_deflated(fp, full=True)[0]
            return pydicom.dcmread(fp)
    except _Problem as p:
        raise DicomError(f"{name}: {p.reason}; {_SKIP_HINT}") from None
    except Exception as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {_scrub(e)}"
        raise DicomError(f"{name}: cannot read the file ({detail}); {_SKIP_HINT}") from None


def _rescale(ds: Dataset, frame: int | None) -> tuple[float, float]:
    """(slope, intercept): per-frame/shared PixelValueTransformation, else top level, else (1, 0)."""
    item = None
    per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
    shared_seq = _get(ds, "SharedFunctionalGroupsSequence")
    if per_frame or shared_seq:
        pf = per_frame[frame or 0] if per_frame else None
        item = _fg_item(pf, shared_seq[0] if shared_seq else None, "PixelValueTransformationSequence")
    src = item if item is not None else ds
    slope, intercept = _float(_get(src, "RescaleSlope")), _float(_get(src, "RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


# ----------------------------------------------------------------------------- small helpers


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records: they quote element values (UIDs, names)."""
    logger = logging.getLogger("pydicom")
    logger.addFilter(_drop_all)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.removeFilter(_drop_all)


def _drop_all(record: logging.LogRecord) -> bool:
    return False


def _scrub(e: BaseException) -> str:
    """First line of an exception message with quoted values and UIDs masked, at most 160 chars."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", msg)
    msg = re.sub(r"\b\d+(?:\.\d+){3,}\b", "<uid>", msg)
    return msg[:160]


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
