"""One file at a time: is it a usable MR/CT magnitude image, and its frames' header facts.

:func:`_probe` reads a file's header (a deflated one inflated incrementally and never past the
size its header implies), classifies it (not DICOM, not an image, burned-in, corrupt,
unsupported: a :class:`_Problem`) and returns the :class:`_Frame` records that
:mod:`synth.io.dicom.scan` groups into series.  Also the pixel data and decoder checks, and the
pydicom hygiene (:func:`_quiet_pydicom`, :func:`_scrub`) that keeps identifiers out of messages.
Internal to :mod:`synth.io.dicom`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from synth.errors import DicomError, MissingDecoderError
from synth.io.dicom.values import (_acq_matrix_classic, _acq_matrix_enhanced, _datetime, _date_ord, _fg_item, _float,
                                   _floats, _geometry, _get, _int, _tod_ms)

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


# ----------------------------------------------------------------------------- reading quietly

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
