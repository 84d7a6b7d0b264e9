r"""Measured raw k-space files: their layout from the headers (:func:`open_raw`), one slice at a time
(:meth:`RawFile.read_slice`), and one series per file (:func:`catalog`), for ``smssynth kspace2sms``
(:mod:`synth.dataset.raw`).

Inputs (one file = one series; each file's slices are combined with each other, as the slices of
a DICOM series are):

``ismrmrd``  (``.h5``/``.mrd`` with ``/dataset/data``)
    ISMRMRD acquisitions (read with the ``ismrmrd`` package's layout): one readout per line,
    placed at ``idx.slice``, ``idx.phase`` (frame), ``idx.kspace_encode_step_1`` (ky); noise,
    navigator, phase-correction and dummy-scan lines are left out.  Kx = ``number_of_samples``
    (readout oversampling kept), Ky = the largest encode step + 1.  Slice positions are
    ``position . slice_dir`` of each slice's first line.
``fastmri``  (``.h5`` with a ``kspace`` dataset)
    ``kspace`` complex, dims (slice, time, coil, ky, kx), or as named by its ``dims`` attribute
    (e.g. ``"time,slice,coil,ky,kx"``).  No slice geometry: positions are the slice index (mm
    unknown).
``cmrxrecon``  (MATLAB v7.3 ``.mat``, i.e. HDF5, read with h5py)
    the variable ``kspace_full`` (or ``kspace``), MATLAB size (kx, ky, coil, slice, time), which
    HDF5 stores as (time, slice, coil, ky, kx); complex as a (real, imag) compound.  Positions are
    the slice index.

All k-space is taken as centred (``synth.physics.fft.fft2c``: DC at ``(Ky//2, Kx//2)``), as fastMRI,
CMRxRecon and ISMRMRD raw data are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from synth.errors import NoInputError, RawDataError
from synth.io.deid import PathNames, pseudonym
from synth.io.dicom import Catalog, FrameRef, SeriesInfo, SliceInfo

FORMATS = ("ismrmrd", "fastmri", "cmrxrecon")
CMRX_VARIABLES = ("kspace_full", "kspace")
# ISMRMRD flags (1-based bit numbers, as the ismrmrd package's ACQ_* constants) of lines that are
# not image data
_SKIP_FLAGS = {"ACQ_IS_NOISE_MEASUREMENT": 19, "ACQ_IS_PARALLEL_CALIBRATION": 20, "ACQ_IS_NAVIGATION_DATA": 23,
               "ACQ_IS_PHASECORR_DATA": 24, "ACQ_IS_HPFEEDBACK_DATA": 26, "ACQ_IS_DUMMYSCAN_DATA": 27,
               "ACQ_IS_RTFEEDBACK_DATA": 28}


def _why(e: BaseException) -> str:
    """``Type: first line`` of an exception, any path in it replaced."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    words = [("<file>" if (os.sep in w or w.strip("'\",.:()").lower().endswith((".h5", ".mat", ".mrd", ".hdf5")))
              else w) for w in text.split()]
    text = " ".join(words)[:160]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# ----------------------------------------------------------------------------- readers


@dataclass(frozen=True)
class RawFile:
    """One raw file's layout (from its headers): ``read_slice(s)`` gives complex64 (C, T, Ky, Kx)."""

    path: str
    name: str
    fmt: str
    n_slices: int
    coils: int
    frames: int
    ky: int
    kx: int
    positions_mm: tuple[float, ...]
    position_source: str
    dataset: str = ""  # fastmri / cmrxrecon: the dataset; ismrmrd: the group
    axes: tuple[int, ...] = ()  # fastmri/cmrxrecon: the array's axis of (slice, time, coil, ky, kx)
    spacing_mm: tuple[float, float] | None = None
    lines: tuple = field(default=(), repr=False)  # ismrmrd: per slice, (rows, frames, steps) of its lines

    def read_slice(self, s: int) -> np.ndarray:
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                if self.fmt == "ismrmrd":
                    return self._ismrmrd_slice(f, s)
                ds = f[self.dataset]
                index = [slice(None)] * 5
                index[self.axes[0]] = s
                data = ds[tuple(index)]
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            raise RawDataError(f"{self.name}: cannot read slice {s} ({_why(e)}); the file may be truncated or "
                               f"changed since it was opened") from None
        kept = [a for a in range(5) if a != self.axes[0]]  # the remaining axes, in array order
        order = [kept.index(self.axes[k]) for k in (2, 1, 3, 4)]  # -> (coil, time, ky, kx)
        return np.ascontiguousarray(np.transpose(_complex(data, self.name), order), dtype=np.complex64)

    def _ismrmrd_slice(self, f, s: int) -> np.ndarray:
        rows, frames, steps = self.lines[s]
        out = np.zeros((self.coils, self.frames, self.ky, self.kx), np.complex64)
        data = f[self.dataset]["data"]
        for start in range(0, len(rows), 512):  # bounded reads (rows ascending, as h5py needs)
            chunk = data.fields("data")[rows[start] : rows[min(start + 512, len(rows)) - 1] + 1]
            for r, t, n in zip(rows[start : start + 512], frames[start : start + 512], steps[start : start + 512]):
                line = chunk[r - rows[start]].view(np.complex64).reshape(self.coils, -1)
                if line.shape[1] != self.kx:
                    raise RawDataError(f"{self.name}: line {r} has {line.shape[1]} samples, expected {self.kx}")
                out[:, t, n] = line
        return out


def _complex(data: np.ndarray, name: str) -> np.ndarray:
    if data.dtype.kind == "c":
        return data
    if data.dtype.names and {"real", "imag"} <= set(data.dtype.names):
        return data["real"] + 1j * data["imag"]
    raise RawDataError(f"{name}: k-space of type {data.dtype}, expected complex (or a real/imag compound)")


def open_raw(path: str, name: str, dataset: str | None = None) -> RawFile:
    """The layout of a raw file; RawDataError (one line, naming the file as ``name``) if unusable."""
    import h5py

    if not os.path.isfile(path):
        raise RawDataError(f"{name}: not a file")
    with open(path, "rb") as fh:
        head = fh.read(128)
    if head.startswith(b"MATLAB 5.0 MAT-file") and not h5py.is_hdf5(path):
        raise RawDataError(f"{name}: a MATLAB v5 .mat file; CMRxRecon k-space must be MATLAB v7.3 (HDF5): re-save it "
                           f"with save(..., '-v7.3')")
    try:
        f = h5py.File(path, "r")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        raise RawDataError(f"{name}: not a readable HDF5 file ({_why(e)}); a truncated or damaged download? "
                           f"expected ISMRMRD, fastMRI-style HDF5 or a MATLAB v7.3 .mat") from None
    with f:
        try:
            if dataset is None and "dataset" in f and isinstance(f["dataset"], h5py.Group) and "data" in f["dataset"]:
                return _open_ismrmrd(f, path, name, "dataset")
            if dataset is not None and isinstance(f.get(dataset), h5py.Group):
                return _open_ismrmrd(f, path, name, dataset)
            if path.lower().endswith(".mat"):
                return _open_array(f, path, name, "cmrxrecon", dataset, CMRX_VARIABLES, (1, 0, 2, 3, 4))
            return _open_array(f, path, name, "fastmri", dataset, ("kspace",), (0, 1, 2, 3, 4))
        except (RawDataError, KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            raise RawDataError(f"{name}: cannot read its headers ({_why(e)}); the file may be truncated") from None


def _open_array(f, path, name, fmt, dataset, names, default_axes) -> RawFile:
    import h5py

    found = [k for k in (names if dataset is None else (dataset,)) if isinstance(f.get(k), h5py.Dataset)]
    if not found:
        have = sorted(k for k in f.keys() if not k.startswith("#"))[:8]
        want = " or ".join(repr(k) for k in (names if dataset is None else (dataset,)))
        raise RawDataError(f"{name}: no {want} dataset (found {have}); expected {fmt} k-space "
                           f"(pass --dataset NAME for another name)")
    ds = f[found[0]]
    if len(ds.shape) != 5:
        raise RawDataError(f"{name}: {found[0]!r} has {len(ds.shape)} dims {tuple(ds.shape)}, expected 5 "
                           f"(slice, time, coil, ky, kx{' in MATLAB order kx, ky, coil, slice, time' if fmt == 'cmrxrecon' else ''})")
    axes = default_axes  # position in the array of (slice, time, coil, ky, kx)
    dims = ds.attrs.get("dims")
    if dims is not None:
        text = dims.decode() if isinstance(dims, bytes) else str(dims)
        parts = [p.strip() for p in text.split(",")]
        if sorted(parts) != sorted(["slice", "time", "coil", "ky", "kx"]):
            raise RawDataError(f"{name}: dims attribute {text!r}, expected a permutation of slice,time,coil,ky,kx")
        axes = tuple(parts.index(d) for d in ("slice", "time", "coil", "ky", "kx"))
    if ds.dtype.kind != "c" and not (ds.dtype.names and {"real", "imag"} <= set(ds.dtype.names)):
        raise RawDataError(f"{name}: {found[0]!r} is {ds.dtype}, expected complex k-space")
    s, t, c, ky, kx = (int(ds.shape[a]) for a in axes)
    return RawFile(path, name, fmt, s, c, t, ky, kx, tuple(float(i) for i in range(s)), "slice index (mm unknown)",
                   dataset=found[0], axes=axes)


def _open_ismrmrd(f, path, name, group) -> RawFile:
    heads = f[group]["data"].fields("head")[:]
    if not len(heads):
        raise RawDataError(f"{name}: an ISMRMRD file without acquisitions")
    flags = heads["flags"].astype(np.uint64)
    skip = np.zeros(len(heads), bool)
    for bit in _SKIP_FLAGS.values():
        skip |= (flags >> np.uint64(bit - 1)) & np.uint64(1) == 1
    keep = np.flatnonzero(~skip)
    if not len(keep):
        raise RawDataError(f"{name}: every acquisition is a noise/navigator/calibration line; no image data")
    h = heads[keep]
    idx = h["idx"]
    coils = sorted(set(h["active_channels"].tolist()))
    samples = sorted(set(h["number_of_samples"].tolist()))
    if len(coils) != 1 or len(samples) != 1:
        raise RawDataError(f"{name}: lines differ in coils {coils} or samples {samples}; one matrix per file expected")
    slices = np.asarray(idx["slice"], int)
    frames = np.asarray(idx["phase"], int)
    steps = np.asarray(idx["kspace_encode_step_1"], int)
    ky, t = int(steps.max()) + 1, int(frames.max()) + 1
    lines, positions = [], []
    for s in sorted(set(slices.tolist())):
        sel = np.flatnonzero(slices == s)
        have = np.zeros((t, ky), bool)
        have[frames[sel], steps[sel]] = True
        if not have.all():
            raise RawDataError(f"{name}: slice {s} is not fully sampled ({int(have.sum())} of {t * ky} frame/ky lines); "
                               f"kspace2sms needs fully sampled k-space")
        lines.append((keep[sel].tolist(), frames[sel].tolist(), steps[sel].tolist()))
        first = h[sel[0]]
        positions.append(float(np.dot(first["position"], first["slice_dir"])))
    order = np.argsort(positions, kind="stable")
    spacing = _ismrmrd_spacing(f, group, ky, int(samples[0]))
    return RawFile(path, name, "ismrmrd", len(lines), int(coils[0]), t, ky, int(samples[0]),
                   tuple(positions[i] for i in order), "position . slice_dir", dataset=group,
                   spacing_mm=spacing, lines=tuple(lines[i] for i in order))


def _ismrmrd_spacing(f, group, ky, kx) -> tuple[float, float] | None:
    """(row, column) pixel size, mm, from the XML header's encoded field of view (None if absent)."""
    if "xml" not in f[group]:
        return None
    try:
        import ismrmrd.xsd

        raw = f[group]["xml"][0]
        hdr = ismrmrd.xsd.CreateFromDocument(raw.decode() if isinstance(raw, bytes) else str(raw))
        fov = hdr.encoding[0].encodedSpace.fieldOfView_mm
        return float(fov.y) / ky, float(fov.x) / kx
    except Exception:  # a header without the field of view: spacing unknown, as for the others
        return None


# ----------------------------------------------------------------------------- catalog


@dataclass(frozen=True)
class RawSliceInfo(SliceInfo):
    """A slice of a raw file (``frames`` name the file; the pixels are complex k-space)."""

    raw: RawFile | None = None


def catalog(inputs: Sequence[str | os.PathLike], *, salt: bytes, show_paths: bool = False,
            dataset: str | None = None, on_error: str = "skip") -> Catalog:
    """One series per raw file under ``inputs`` (files ``.h5``, ``.hdf5``, ``.mrd``, ``.mat``).

    A file that cannot be used (truncated, not HDF5, no k-space dataset, not fully sampled...)
    stops the scan with its :class:`RawDataError` under ``on_error="fail"``; under ``"skip"`` it
    is left out and listed in ``Catalog.skipped`` (category ``unreadable``), and the error is
    raised only when no file is usable (the first file's error; with a count when there were
    several).
    """
    from synth.io.dicom.scan import Skip
    from synth.io.nifti import patient_folder

    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")

    inputs = [os.fspath(p) for p in inputs]
    names = PathNames(inputs, salt, show_paths)
    if not inputs:
        raise NoInputError("no input given: pass raw k-space files or folders")
    missing = [p for p in inputs if not os.path.exists(p)]
    if missing:
        raise NoInputError(f"input not found: {', '.join(map(names, missing))}")
    paths = []
    for p in inputs:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs.sort()
                paths += [os.path.join(root, n) for n in sorted(files)
                          if n.lower().endswith((".h5", ".hdf5", ".mrd", ".mat"))]
        else:
            paths.append(p)
    if not paths:
        raise NoInputError(f"no .h5/.hdf5/.mrd/.mat files in {', '.join(map(names, inputs))}")
    series, skipped, errors = [], [], []
    for path in paths:
        try:
            raw = open_raw(path, names(path), dataset)
        except RawDataError as e:
            if on_error == "fail":
                raise
            msg, name = str(e), names(path)
            errors.append(msg)
            reason = msg[len(name) + 2:] if msg.startswith(name + ": ") else msg
            skipped.append(Skip(path, reason, "unreadable", name))
            continue
        patient, rel = patient_folder(path, inputs)
        key = pseudonym(f"raw-series:{patient}/{rel}", salt, "se-")
        slices = tuple(
            RawSliceInfo(index=i, position_mm=raw.positions_mm[i],
                         frames=tuple(FrameRef(path, t, raw.name) for t in range(raw.frames)), times_ms=None,
                         shape=(raw.ky, raw.kx), pixel_spacing_mm=raw.spacing_mm, slice_thickness_mm=None,
                         acquisition_matrix=None, raw=raw)
            for i in range(raw.n_slices))
        series.append(SeriesInfo(key=key, study_key=pseudonym(f"raw-study:{patient}", salt, "st-"),
                                 patient_key=pseudonym(f"raw-patient:{patient}", salt, "pt-"), normal=None,
                                 position_source=raw.position_source, time_source=f"{raw.fmt} frame index",
                                 slices=slices))
    if not series:
        if len(errors) == 1:
            raise RawDataError(errors[0])
        raise RawDataError(f"none of the {len(errors)} raw k-space files is usable; the first: {errors[0]}")
    series.sort(key=lambda s: s.key)
    return Catalog(series=series, skipped=skipped, warnings=[], n_files=len(paths))
