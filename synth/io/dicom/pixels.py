"""Decoding: one scanned slice's frames -> float32 ``(T, rows, cols)`` magnitudes, rescale applied."""

from __future__ import annotations

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from synth.errors import DicomError, MissingDecoderError
from synth.io.dicom.probe import (_SKIP_HINT, _check_decoder, _deflated_meta, _missing_decoder_message, _Problem,
                                  _quiet_pydicom, _read_deflated, _scrub)
from synth.io.dicom.scan import FrameRef, SliceInfo
from synth.io.dicom.values import _fg_item, _float, _get


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
