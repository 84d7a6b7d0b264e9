"""The smssynth store: a Zarr v3 group, the contract between ``synth`` and ``zoo``.

The format is documented in ``docs/store-format.md`` (keep the two in step) and is readable with
plain ``zarr.open`` and no project code.  One row per SMS example ``n``:

========== ============================ ========= =====================================
array      dims                         dtype     meaning
========== ============================ ========= =====================================
kspace     (N, C, T, Ky, Kx)            complex64 CAIPI-collapsed multi-coil k-space, every
                                                  ky row present (+ noise if ``snr``)
mask       (N, T, Ky)                   bool      in-plane sampled rows
kz         (N, T, Ky)                   int8      kz (CAIPI phase index) of every row (1.1+)
target     (N, M, T, Ky, Kx)            float32   magnitude of each SMS slice, max 1 per example
csm        (N, C, M, Ky, Kx)            complex64 coil maps, sum_c |csm|^2 = 1
phase      (N, C, M, T, Ky, Kx)         float32   synthetic phase, radians (optional)
scale      (N,)                         float32   DICOM units per target unit
noise_sigma(N,)                         float32   sigma of the added noise (0: none)
offsets    (N, M)                       float64   slice positions relative to their mean, in units
                                                  of the FOV (what the coil maps depend on) (1.2+)
complete   (N,)                         bool      completion marker, written last
========== ============================ ========= =====================================

Every store of 1.4+ (either kind) also holds the **per-example facts** (:data:`FACT_ARRAYS`,
:func:`example_facts`): ``split``, ``patient``, ``study``, ``series`` (pseudonyms; fixed-length
unicode), ``draw``, ``source_slice`` (N, M), ``slice_position_mm`` (N, M), ``frame_time_ms``
(N, T), ``pixel_spacing_mm`` and ``fov_mm`` (N, 2), ``slice_thickness_mm`` (N,), all derived from
``attrs["examples"]`` and written once by :func:`create`, so ``xarray.open_zarr`` sees them as
variables along ``example``.  The metadata is consolidated (:func:`consolidate`) once it is
final, at the end of :func:`create`.

A **targets** store (``attrs["kind"] == "targets"``, ``--targets-only``, 1.2+) holds only what
cannot be redrawn, each slice once: ``slices`` float32 (S, T, Y, X) working magnitudes in DICOM
units, ``labels`` uint8 (S, T, Y, X) their k-means clusters (with ``phase: kmeans``), and per
example ``example_slices`` int32 (N, M), ``offsets``, ``scale`` and ``complete``.  An example's
``target`` is ``slices[example_slices[n]] / scale[n]``; ``zoo`` simulates the rest.

Chunks never straddle two examples (writers never share a chunk), and are one coil (or one
example for the small arrays) so a per-example read touches C + few chunks.  Only ``mask`` and ``kz`` are
compressed (see :func:`_codecs`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from synth.dataset.output import recognise, register_format
from synth.errors import StoreError, StoreExistsError

FORMAT_NAME = "smssynth.sms-kspace"
FORMAT_VERSION = "1.4"  # 1.4: per-example fact arrays (FACT_ARRAYS) and consolidated metadata
KINDS = ("kspace", "targets")  # attrs["kind"]; stores before 1.2 are "kspace"
# readers accept any 1.x store; a major bump means an incompatible change
SUPPORTED_MAJOR = 1

CONVENTIONS = {
    "fft": "centred orthonormal: fftshift(fft2(ifftshift(x, (-2,-1)), norm='ortho'), (-2,-1)); DC at (Ky//2, Kx//2)",
    "caipi_sign": -1,
    "caipi_model": "kspace[c,t,n,:] = sum_i exp(caipi_sign*2j*pi*i*kz[t,n]/M) * fft2c(x[c,i,t])[n,:] (+ noise)",
    "caipi_row_index": "n = array index 0..Ky-1 of the centred k-space row (not the signed frequency)",
    "caipi_kz": ("kz[t,n] in 0..M-1, stored for every row; params.caipi 'row': kz = n % M; 'acquired': a sampled "
                 "row carries (its rank among frame t's sampled rows, ascending n, ACS included) % M, an "
                 "unsampled row n % M. Stores of format 1.0 have no kz array and mean 'row'"),
    "sms_3d": "kspace[...,t,n,:] = sqrt(M) * fft(fft2c(x), axis=slice, norm='ortho')[..., kz[t,n], t, n, :]",
    "coil_image": "x[c,i,t] = target[i,t] * csm[c,i] * exp(1j*phase[c,i,t])",
    "target_normalisation": "per example: magnitudes / max over (M,T,Ky,Kx); scale holds that max in DICOM units",
    "noise": "complex circular Gaussian, E|n|^2 = noise_sigma^2, sigma = rms(clean kspace)/snr, i.i.d. over coils",
    "mask": "mask[t, n] true where ky row n of frame t is sampled; kspace itself holds every row",
    "mask_3d": "3D sampling pattern: mask3[kz, t, n] = mask[t, n] & (kz == kz[t, n])",
    "slice_order": "SMS slice i = 0..M-1 in ascending position along the series' slice normal",
}

ARRAYS: dict[str, dict[str, Any]] = {
    "kspace": {"dims": ["example", "coil", "time", "ky", "kx"], "dtype": "complex64"},
    "mask": {"dims": ["example", "time", "ky"], "dtype": "bool"},
    "kz": {"dims": ["example", "time", "ky"], "dtype": "int8"},
    "target": {"dims": ["example", "slice", "time", "y", "x"], "dtype": "float32"},
    "csm": {"dims": ["example", "coil", "slice", "y", "x"], "dtype": "complex64"},
    "phase": {"dims": ["example", "coil", "slice", "time", "y", "x"], "dtype": "float32"},
    "scale": {"dims": ["example"], "dtype": "float32"},
    "noise_sigma": {"dims": ["example"], "dtype": "float32"},
    "offsets": {"dims": ["example", "slice"], "dtype": "float64"},
    "complete": {"dims": ["example"], "dtype": "bool"},
    # targets stores only
    "slices": {"dims": ["slice_id", "time", "y", "x"], "dtype": "float32"},
    "labels": {"dims": ["slice_id", "time", "y", "x"], "dtype": "uint8"},
    "example_slices": {"dims": ["example", "slice"], "dtype": "int32"},
    # per-example facts (1.4+, both kinds; example_facts): "str" is fixed-length unicode (numpy <U)
    "split": {"dims": ["example"], "dtype": "str"},
    "patient": {"dims": ["example"], "dtype": "str"},
    "study": {"dims": ["example"], "dtype": "str"},
    "series": {"dims": ["example"], "dtype": "str"},
    "draw": {"dims": ["example"], "dtype": "int32"},
    "source_slice": {"dims": ["example", "slice"], "dtype": "int32"},
    "slice_position_mm": {"dims": ["example", "slice"], "dtype": "float64"},
    "frame_time_ms": {"dims": ["example", "time"], "dtype": "float64"},
    "pixel_spacing_mm": {"dims": ["example", "yx"], "dtype": "float64"},
    "fov_mm": {"dims": ["example", "yx"], "dtype": "float64"},
    "slice_thickness_mm": {"dims": ["example"], "dtype": "float64"},
}
DATA_ARRAYS = ("kspace", "mask", "kz", "target", "csm", "phase", "scale", "noise_sigma", "offsets")
TARGET_ARRAYS = ("example_slices", "offsets", "scale")  # per-example arrays of a targets store
FACT_ARRAYS = ("split", "patient", "study", "series", "draw", "source_slice", "slice_position_mm", "frame_time_ms",
               "pixel_spacing_mm", "fov_mm", "slice_thickness_mm")
FACT_CHUNK = 4096  # examples per chunk of a fact array (written once, by create: chunks may span examples)
# arrays a store of an older 1.x minor version may lack: name -> the version that added it
ADDED_IN = {"kz": (1, 1), "offsets": (1, 2), **{name: (1, 4) for name in FACT_ARRAYS}}
COIL_ARRAYS = ("kspace", "phase")  # chunked one coil per chunk; written coil by coil
register_format(FORMAT_NAME, ARRAYS)  # what --overwrite may replace (synth.dataset.output)


def _codecs(name: str):
    """Compression per array.

    The large arrays are stored uncompressed: complex k-space and the float32 phase, target and
    coil maps look like noise to a lossless compressor.  Blosc-zstd (level 1, byte shuffle) saved
    8 % of the bytes; without it ``generate`` ran 1.42x faster on Sunnybrook (see
    docs/store-format.md).  The boolean mask and the small kz table compress well.
    """
    if name in ("mask", "kz", "labels"):
        return [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")]
    return None


def array_shapes(n: int, c: int, m: int, t: int, ny: int, nx: int, with_phase: bool = True):
    """name -> (shape, chunks) for a store of ``n`` examples."""
    out = {
        "kspace": ((n, c, t, ny, nx), (1, 1, t, ny, nx)),
        "mask": ((n, t, ny), (1, t, ny)),
        "kz": ((n, t, ny), (1, t, ny)),
        "target": ((n, m, t, ny, nx), (1, 1, t, ny, nx)),
        "csm": ((n, c, m, ny, nx), (1, c, m, ny, nx)),
        "phase": ((n, c, m, t, ny, nx), (1, 1, m, t, ny, nx)),
        "scale": ((n,), (1,)),
        "noise_sigma": ((n,), (1,)),
        "offsets": ((n, m), (1, m)),
        "complete": ((n,), (1,)),
    }
    if not with_phase:
        del out["phase"]
    return out


def target_array_shapes(n: int, s: int, m: int, t: int, ny: int, nx: int, with_labels: bool):
    """name -> (shape, chunks) for a targets store of ``n`` examples over ``s`` distinct slices."""
    out = {
        "slices": ((s, t, ny, nx), (1, t, ny, nx)),
        "labels": ((s, t, ny, nx), (1, t, ny, nx)),
        "example_slices": ((n, m), (1, m)),
        "offsets": ((n, m), (1, m)),
        "scale": ((n,), (1,)),
        "complete": ((n,), (1,)),
    }
    if not with_labels:
        del out["labels"]
    return out


def fact_shapes(n: int, m: int, t: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """name -> (shape, chunks) of the per-example fact arrays (1.4+) of a store of ``n`` examples."""
    rows = max(1, min(n, FACT_CHUNK))
    shapes = {"split": (n,), "patient": (n,), "study": (n,), "series": (n,), "draw": (n,), "source_slice": (n, m),
              "slice_position_mm": (n, m), "frame_time_ms": (n, t), "pixel_spacing_mm": (n, 2), "fov_mm": (n, 2),
              "slice_thickness_mm": (n,)}
    return {k: (v, (rows, *v[1:])) for k, v in shapes.items()}


def _joined(values) -> str:
    """Distinct non-empty values in first-seen order, joined by '+' (an across-series example's patients)."""
    return "+".join(dict.fromkeys(str(v) for v in values if v))


def _working_times(times, params: dict, t: int) -> np.ndarray:
    """A source's frame times (ms, as recorded) mapped onto the store's ``t`` frames, as
    :func:`synth.io.resolution.fit_frames` maps the frames themselves (first ``t``, or linear
    interpolation over the same span); NaN where unknown."""
    out = np.full(t, np.nan)
    if not times:
        return out
    v = np.asarray(times, dtype=float)
    frames = params.get("frames")
    if frames is None or int(frames) == len(v):
        if len(v) == t:
            out[:] = v
        return out
    if int(frames) != t:
        return out
    if params.get("frames_mode", "crop") == "crop":
        if len(v) >= t:
            out[:] = v[:t]
        return out
    if len(v) == 1:
        out[:] = v[0]
    else:
        out[:] = np.interp(np.linspace(0, len(v) - 1, t), np.arange(len(v)), v)
    return out


def example_facts(examples: list[dict], dims: dict[str, int], params: dict) -> dict[str, np.ndarray]:
    """The per-example fact arrays (format 1.4) of a store, from its ``attrs["examples"]``.

    Parameters
    ----------
    examples : ``attrs["examples"]``: per example its ``index``, ``draw``, ``split`` (optional) and
        ``sources`` (one per SMS slice, in slice order: pseudonymous ``patient``/``study``/``series``
        keys, ``slice`` index, ``position_mm``, ``position_source``, ``stored_shape``,
        ``acquisition_matrix``, ``pixel_spacing_mm``, ``times_ms`` and ``slice_thickness_mm``; the
        last four may be absent or null).
    dims : the store's ``N``, ``M``, ``T``, ``Ky``, ``Kx``.
    params : the store's ``params`` (``resolution``, ``frames``, ``frames_mode`` say how the
        stored frames and pixels relate to the input's).

    Returns
    -------
    ``split``, ``patient``, ``study``, ``series`` : unicode (N,); ``""`` where unknown (no split).
        An example whose slices come from several series/patients (``--combine across-series``)
        lists their distinct keys in slice order joined by ``+``.
    ``draw`` : int32 (N,), the draw index; ``source_slice`` int32 (N, M), each SMS slice's index
        within its series (-1 unknown).
    ``slice_position_mm`` : float64 (N, M), each SMS slice's position along its series' slice
        normal, mm, as the input recorded it (NaN when the input has no geometry: fastMRI-style
        and CMRxRecon raw k-space record slice indices).
    ``frame_time_ms`` : float64 (N, T), each stored frame's time, ms (trigger delay, or the
        acquisition clock relative to the series' first frame), after ``--frames``; the mean over
        the SMS slices, which an SMS acquisition excites at once; NaN when unknown.
    ``pixel_spacing_mm`` : float64 (N, 2), (row, column) size of a stored pixel, mm: the input's
        spacing times stored size over the acquired matrix kept by ``--resolution acquired``
        (``--matrix`` changes the FOV, not the pixel size); of the example's first slice.
    ``fov_mm`` : float64 (N, 2), ``(Ky, Kx) * pixel_spacing_mm``: the field of view of the stored grid.
    ``slice_thickness_mm`` : float64 (N,), the input's slice thickness (of the first slice), NaN unknown.
    """
    from synth.io.resolution import acquired_shape

    n, m, t, ny, nx = (int(dims[k]) for k in ("N", "M", "T", "Ky", "Kx"))
    text = {k: [""] * n for k in ("split", "patient", "study", "series")}
    draw = np.full(n, -1, np.int32)
    source_slice = np.full((n, m), -1, np.int32)
    position = np.full((n, m), np.nan)
    times = np.full((n, t), np.nan)
    spacing = np.full((n, 2), np.nan)
    thickness = np.full(n, np.nan)
    for row, ex in enumerate(examples or []):
        i = int(ex.get("index", row))
        if not 0 <= i < n:
            continue
        src = list(ex.get("sources") or [])
        text["split"][i] = str(ex.get("split") or "")
        for key in ("patient", "study", "series"):
            text[key][i] = _joined(s.get(key) for s in src)
        if ex.get("draw") is not None:
            draw[i] = int(ex["draw"])
        for j, s in enumerate(src[:m]):
            if s.get("slice") is not None:
                source_slice[i, j] = int(s["slice"])
            known = not str(s.get("position_source", "")).startswith("slice index")
            if known and s.get("position_mm") is not None:
                position[i, j] = float(s["position_mm"])
        if src:
            per = np.stack([_working_times(s.get("times_ms"), params, t) for s in src])
            times[i] = per.mean(axis=0)  # NaN where any slice's time is unknown
            s0 = src[0]
            if s0.get("slice_thickness_mm") is not None:
                thickness[i] = float(s0["slice_thickness_mm"])
            if s0.get("pixel_spacing_mm") and s0.get("stored_shape"):
                stored = tuple(int(v) for v in s0["stored_shape"])
                acq = s0.get("acquisition_matrix")
                kept = acquired_shape(stored, None if acq is None else tuple(acq), params.get("resolution", "acquired"))
                spacing[i] = [float(d) * st / max(k, 1) for d, st, k in zip(s0["pixel_spacing_mm"], stored, kept)]
    out = {k: np.array(v, dtype=f"<U{max([1, *map(len, v)])}") for k, v in text.items()}
    out.update(draw=draw, source_slice=source_slice, slice_position_mm=position, frame_time_ms=times,
               pixel_spacing_mm=spacing, fov_mm=spacing * np.array([ny, nx], float), slice_thickness_mm=thickness)
    return out


@contextmanager
def _quiet_zarr():
    """Silence the two notes zarr-python makes whenever it writes this format's metadata.

    * Consolidated metadata is not (yet) in the Zarr v3 spec: zarr-python and xarray read it, and
      a reader without it reads the per-array metadata, which is the same.
    * zarr-python's fixed-length unicode (``fixed_length_utf32``, numpy ``<U``) has no v3 spec
      yet: chosen for the string facts over variable-length strings because xarray's ``where``
      cannot fill numpy's StringDType with NaN (docs/store-format.md).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        yield


def _write_facts(root: zarr.Group, facts: dict[str, np.ndarray]) -> None:
    """Create and fill the fact arrays (one writer, at creation)."""
    n = next(iter(facts.values())).shape[0]
    shapes = fact_shapes(n, facts["source_slice"].shape[1], facts["frame_time_ms"].shape[1])
    with _quiet_zarr():
        for name, value in facts.items():
            shape, chunks = shapes[name]
            kind = value.dtype.kind
            arr = root.create_array(
                name, shape=shape, chunks=chunks, dtype=value.dtype, compressors=None,
                fill_value="" if kind == "U" else (np.nan if kind == "f" else -1),
                dimension_names=ARRAYS[name]["dims"],
            )
            if n:
                arr[...] = value


def consolidate(root: zarr.Group | str | Path, storage_options: dict | None = None) -> zarr.Group | None:
    """Write the store's consolidated metadata (every array's metadata in the root ``zarr.json``).

    ``xarray.open_zarr`` and ``zarr.open_group`` then read one document instead of one per array,
    and xarray opens the store without its "not consolidated" warning.  zarr-python 3 never updates
    consolidated metadata by itself when arrays are created, resized or deleted later; smssynth
    writers change no metadata after :func:`create` (examples only fill chunks), so calling this once
    the metadata is final keeps it correct for every reader, mid-write included.

    ``root``: the group :func:`create` made, or the path of an existing store (resumed runs: its
    consolidated metadata is compared with the per-array metadata and rewritten only if missing or
    different, so resuming a complete store changes no file).  Returns the group opened with the
    consolidated metadata, or None where the store cannot hold any.
    """
    if isinstance(root, zarr.Group):
        store, path = root.store, root.path
    else:
        fresh = zarr.open_group(location(root), mode="r+", storage_options=storage_options, use_consolidated=False)
        store, path = fresh.store, ""
        if getattr(store, "supports_consolidated_metadata", True):
            with _quiet_zarr():
                now = zarr.open_group(store, mode="r+", zarr_format=3)
                held = now.metadata.consolidated_metadata
                if held is not None and held.metadata is not None:
                    want = {k: v.metadata.to_dict() for k, v in fresh.members()}
                    if want == {k: v.to_dict() for k, v in held.metadata.items()}:
                        return now
    if not getattr(store, "supports_consolidated_metadata", True):
        return None
    with _quiet_zarr():
        return zarr.consolidate_metadata(store, path=path or None, zarr_format=3)


def _shapes_of(dims: dict, kind: str, with_phase: bool, with_labels: bool):
    if kind == "targets":
        return target_array_shapes(dims["N"], dims["S"], dims["M"], dims["T"], dims["Ky"], dims["Kx"], with_labels)
    return array_shapes(dims["N"], dims["C"], dims["M"], dims["T"], dims["Ky"], dims["Kx"], with_phase)


def location(path: str | Path) -> str:
    """A local path for ``file://`` URLs (zarr's LocalStore creates folders), else the URL as given."""
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def create(
    path: str | Path,
    dims: dict[str, int],
    attrs: dict[str, Any],
    *,
    with_phase: bool = True,
    overwrite: bool = False,
    storage_options: dict | None = None,
    kind: str = "kspace",
    with_labels: bool = False,
) -> zarr.Group:
    """Create an empty store with every array (all examples incomplete) and the root attributes.

    ``dims`` has keys N, C, M, T, Ky, Kx (and S, the distinct slices, for ``kind="targets"``,
    whose ``labels`` array exists when ``with_labels``).  ``attrs`` must be JSON-serialisable;
    format name, version and kind are added here.
    """
    if kind not in KINDS:
        raise StoreError(f"store kind must be one of {KINDS}, got {kind!r}")
    path = location(path)
    if _exists(path, storage_options):
        if not overwrite:
            raise StoreExistsError(f"{path} already exists; pass --overwrite to replace it, or choose another --out")
        # zarr's mode="w" deletes whatever is there: only ever an smssynth store (synth.dataset.output)
        recognise(path, [FORMAT_NAME], storage_options)
    root = zarr.open_group(path, mode="w", zarr_format=3, storage_options=storage_options)
    shapes = _shapes_of(dims, kind, with_phase, with_labels)
    for name, (shape, chunks) in shapes.items():
        spec = ARRAYS[name]
        small = len(shape) == 1
        root.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=spec["dtype"],
            fill_value=False if spec["dtype"] == "bool" else 0,
            compressors=None if small else _codecs(name),
            dimension_names=spec["dims"],
        )
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "dims": dict(dims),
        "arrays": {k: ARRAYS[k] for k in (*shapes, *FACT_ARRAYS)},
        "conventions": CONVENTIONS,
    }
    meta.update(attrs)
    json.dumps(meta)  # fail early, not half-way, on anything non-serialisable
    _write_facts(root, example_facts(meta.get("examples") or [], dims, meta.get("params") or {}))
    root.attrs.update(meta)
    # the metadata is final now (examples only fill chunks): consolidate it before any example
    return consolidate(root) or root


def _exists(path: str, storage_options=None) -> bool:
    from synth.dataset.output import exists

    return exists(path, storage_options)


class Writer:
    """Writes examples into an open store; holds the array handles (opening one reads its metadata).

    Thread-safe: threads may write different coils or examples at once.
    """

    def __init__(self, root: zarr.Group):
        self.root = root
        self.arrays = {name: root[name] for name in (*DATA_ARRAYS, "complete") if name in root}
        for name in ("slices", "labels", "example_slices"):
            if name in root:
                self.arrays[name] = root[name]

    def targets_example(self, index: int, slice_ids, slices: dict[int, tuple[np.ndarray, np.ndarray | None]],
                        offsets: np.ndarray, scale: float) -> None:
        """Write example ``index`` of a targets store: its slices (``slice id -> (magnitudes (T, Y, X),
        labels or None)``, rewritten with the same bytes when several examples share one), then
        its small arrays and its completion marker."""
        for sid, (mags, labels) in slices.items():
            write_row(self.arrays["slices"], sid, mags)
            if "labels" in self.arrays:
                write_row(self.arrays["labels"], sid, labels)
        write_row(self.arrays["example_slices"], index, np.asarray(slice_ids, np.int32))
        write_row(self.arrays["offsets"], index, np.asarray(offsets, np.float64))
        write_row(self.arrays["scale"], index, np.float32(scale))
        write_row(self.arrays["complete"], index, np.True_)

    def coil(self, index: int, coil: int, kspace: np.ndarray, phase: np.ndarray | None) -> None:
        """Write coil ``coil`` of example ``index``: ``kspace`` (T, Ky, Kx) and ``phase``
        (M, T, Y, X), one chunk each (``phase`` is ignored by a store without it).  The example
        stays incomplete until :meth:`example` (``coils_written=True``) writes the rest."""
        write_block(self.arrays["kspace"], (index, coil), kspace)
        if "phase" in self.arrays:
            write_block(self.arrays["phase"], (index, coil), phase)

    @contextmanager
    def coil_chunks(self, index: int, coil: int, *, phase: bool = True):
        """Block-writable ``(kspace, phase)`` targets for coil ``coil`` of example ``index``.

        Each target takes ``kspace[t0:t1] = block`` / ``phase[i, t0:t1] = block`` assignments;
        for local uncompressed stores it is a :class:`ChunkFile` that writes each block into the
        chunk file at once (no whole-chunk buffer), elsewhere an array written through zarr when
        the block exits.  A chunk is stored only if the block exits normally.  With
        ``phase=False`` (a store without ``phase``, or an all-zero phase, which zarr would not
        store either) the phase target is a scratch array that is not written.
        """
        targets = {}
        kshape = tuple(self.arrays["kspace"].shape[2:])
        names = [("kspace", kshape)]
        if "phase" in self.arrays:
            pshape = tuple(self.arrays["phase"].shape[2:])
            if phase:
                names.append(("phase", pshape))
            else:
                targets["phase"] = np.empty(pshape, np.float32)
        else:
            targets["phase"] = _Scratch()
        done = False
        try:
            for name, shape in names:
                arr = self.arrays[name]
                folder = direct_chunk_folder(arr)
                if folder is not None and tuple(arr.chunks[2:]) == shape:
                    key = arr.metadata.encode_chunk_key((index, coil) + (0,) * len(shape))
                    targets[name] = ChunkFile(folder / key, shape, arr.dtype)
                else:
                    targets[name] = np.empty(shape, arr.dtype)
            yield targets["kspace"], targets["phase"]
            for name, _ in names:
                tgt = targets[name]
                if isinstance(tgt, ChunkFile):
                    tgt.commit()
                else:
                    write_block(self.arrays[name], (index, coil), tgt)
            done = True
        finally:
            if not done:
                for name, _ in names:
                    if isinstance(targets.get(name), ChunkFile):
                        targets[name].abort()  # a no-op for one already committed

    def example(self, index: int, arrays: dict[str, np.ndarray], *, coils_written: bool = False) -> None:
        """Write one example's arrays, then its completion marker (so readers never see half an
        example).  ``coils_written``: ``kspace`` and ``phase`` were already written coil by coil
        (:meth:`coil`) and are not in ``arrays``."""
        for name in DATA_ARRAYS:
            if name not in self.arrays or (coils_written and name in COIL_ARRAYS):
                continue
            if name not in arrays:
                raise StoreError(f"example {index}: array {name!r} missing from the simulation output")
            write_row(self.arrays[name], index, arrays[name])
        write_row(self.arrays["complete"], index, np.True_)


def write_example(root: zarr.Group, index: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one whole example and its completion marker (see :class:`Writer` for many)."""
    Writer(root).example(index, arrays)


def write_row(arr: zarr.Array, index: int, value) -> None:
    """``arr[index] = value``, chunk by chunk (see :func:`write_block`)."""
    write_block(arr, (index,), value)


def write_block(arr: zarr.Array, prefix: tuple[int, ...], value) -> None:
    """Write ``arr[prefix] = value`` one chunk at a time, each as a value of exactly the chunk's shape.

    ``prefix`` indexes leading axes whose chunks are 1 long (example, and coil for ``kspace`` and
    ``phase``).  Same stored bytes as plain assignment, at about half the cost for the big arrays:
    zarr stores a value that has exactly the chunk's shape as it is, whereas a larger value is
    first copied into a freshly filled chunk buffer; and a chunk whose first element differs from
    the fill value cannot be empty, so zarr's whole-chunk emptiness test (a full pass over the
    data) is skipped for it.  All-zero chunks (e.g. ``phase`` with ``--phase none``) are still
    left unwritten, as zarr does by default; they read back as zeros.
    """
    value = np.asarray(value, dtype=arr.dtype)
    if not value.flags.c_contiguous:
        value = value.copy()
    k = len(prefix)
    block_shape = tuple(arr.shape[k:])
    if value.shape != block_shape:
        raise StoreError(f"array {arr.basename!r}{list(prefix)}: shape {value.shape}, expected {block_shape}")
    if any(c != 1 for c in arr.chunks[:k]):
        raise StoreError(f"array {arr.basename!r}: chunks {arr.chunks} are not 1 long on the first {k} axes")
    lead = tuple(slice(i, i + 1) for i in prefix)
    folder = direct_chunk_folder(arr)
    if not block_shape:
        if folder is None:
            arr[lead] = value.reshape((1,) * k)
            return
        # one element per chunk (scale, noise_sigma, the completion marker): what zarr would do,
        # without its event loop -- store the element, or remove the chunk if it is the fill value
        path = folder / arr.metadata.encode_chunk_key(tuple(prefix))
        if value == np.asarray(arr.fill_value, arr.dtype):
            path.unlink(missing_ok=True)
        else:
            _put_chunk(path, value.reshape(1))
        return
    chunks = tuple(arr.chunks[k:])
    fill = np.zeros((), arr.dtype)
    grid = [range(0, n, c) for n, c in zip(block_shape, chunks)]
    for starts in itertools.product(*grid):
        sel = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, block_shape))
        block = value[sel]
        maybe_empty = block.size == 0 or block.flat[0] == fill
        if folder is not None and not maybe_empty and block.shape == chunks:
            coords = tuple(prefix) + tuple(s // c for s, c in zip(starts, chunks))
            _put_chunk(folder / arr.metadata.encode_chunk_key(coords), np.ascontiguousarray(block))
        else:
            dest = arr if maybe_empty else arr.with_config({"write_empty_chunks": True})
            dest[lead + sel] = block.reshape((1,) * k + block.shape)


def direct_chunk_folder(arr: zarr.Array) -> Path | None:
    """The folder of ``arr``'s chunk files when they can be written without zarr, else None.

    That is a Zarr v3 array in a local folder whose only codec is ``bytes`` in this machine's
    byte order: its chunk file is then exactly the chunk's bytes in C order, named by the
    array's own chunk-key encoding.  Writing those files directly gives the same bytes as zarr
    does, at a fraction of its cost per chunk (zarr routes every write through its event loop,
    which also keeps writes from several threads from running in parallel).  Anything else --
    compressors, other stores, URLs -- goes through zarr.
    """
    store = arr.store_path.store
    meta = arr.metadata
    if not isinstance(store, LocalStore) or store.read_only or meta.zarr_format != 3:
        return None
    codecs = meta.codecs
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    if arr.dtype.itemsize > 1 and (codecs[0].endian is None or codecs[0].endian.value != sys.byteorder):
        return None
    return Path(store.root) / arr.store_path.path


def _plain_chunk_folder(arr: zarr.Array) -> Path | None:
    """The chunk folder of an uncompressed local array in either byte order (for size checks)."""
    store = arr.store_path.store
    codecs = arr.metadata.codecs
    if not isinstance(store, LocalStore) or arr.metadata.zarr_format != 3:
        return None
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    return Path(store.root) / arr.store_path.path


class _Scratch:
    """Accepts and drops block assignments (the phase of a store without a ``phase`` array)."""

    def __setitem__(self, key, value) -> None:
        pass


class ChunkFile:
    """One uncompressed chunk file written block by block, then renamed into place.

    ``chunk[t0:t1] = block`` or ``chunk[i, t0:t1] = block`` writes a C-contiguous region of the
    chunk (leading-axis indices, the last one a slice) at its byte offset, so a producer can hand
    over each block while it is in cache.  :meth:`commit` renames the temporary file to the chunk
    key (as zarr's own local writes do); :meth:`abort` removes it.  Every byte must have been
    assigned before :meth:`commit`, which checks it.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        self._f = _open_new(self.tmp)
        self._spans: list[tuple[int, int]] = []  # byte ranges written

    def __setitem__(self, key, value) -> None:
        key = key if isinstance(key, tuple) else (key,)
        *lead, last = key
        if not isinstance(last, slice) or last.step not in (None, 1) or len(key) > len(self.shape):
            raise IndexError(f"ChunkFile takes leading indices ending in a unit-step slice, got {key!r}")
        start, stop, _ = last.indices(self.shape[len(lead)])
        inner = self.shape[len(key):]
        expect = (stop - start, *inner)
        value = np.ascontiguousarray(value, dtype=self.dtype)
        if value.shape != expect:
            raise ValueError(f"block for {key!r} has shape {value.shape}, expected {expect}")
        row = int(np.prod(inner, dtype=np.int64)) * self.dtype.itemsize
        pos = 0  # in rows of the sliced axis
        for idx, n in zip(lead, self.shape):
            if not 0 <= idx < n:
                raise IndexError(f"index {idx} out of range for axis of length {n}")
            pos = pos * n + idx
        pos = pos * self.shape[len(lead)] + start
        self._f.seek(pos * row)
        _write_all(self._f, memoryview(value).cast("B"))
        self._spans.append((pos * row, pos * row + value.nbytes))

    def commit(self) -> None:
        self._f.close()
        size = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        covered = 0  # bytes from 0 on that some assignment wrote
        for a, b in sorted(self._spans):
            if a > covered:
                break
            covered = max(covered, b)
        if covered < size:
            self.tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: bytes {covered}..{size} were never written; chunk not stored")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)  # gone already after a commit


def remove_partials(path: str | Path) -> int:
    """Delete the temporary chunk files (``*.partial``) that killed writers left in a local store.

    Call only while nobody writes to the store (``generate`` does, before resuming).  Readers
    never see these files; removing them makes a resumed store the same, file for file, as one
    written in one go.  Returns how many were removed (0 for URLs).
    """
    path = location(path)
    if "://" in path:
        return 0
    stale = list(Path(path).rglob("*.partial"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _open_new(path: Path):
    """``open(path, "wb", buffering=0)``, creating the parent folders only when missing (a
    ``mkdir`` per chunk cost as much Python time as the rest of a chunk write)."""
    try:
        return open(path, "wb", buffering=0)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb", buffering=0)


def _write_all(f, data: memoryview) -> None:
    """Write every byte to an unbuffered file: a raw ``write`` may take fewer than asked (Linux
    caps one call at about 2 GB), and a short chunk must never pass for a whole one."""
    while data:
        n = f.write(data)
        if not n:
            raise OSError(f"could not write to {f.name}")
        data = data[n:]


def _put_chunk(path: Path, data: np.ndarray) -> None:
    """Write one chunk file atomically (a temporary file renamed into place, as zarr does)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with _open_new(tmp) as f:
            _write_all(f, memoryview(data).cast("B"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class Store:
    """Read access to a store, validating its format.  ``Store.open(path)``."""

    root: zarr.Group
    path: str

    @classmethod
    def open(cls, path: str | Path, storage_options: dict | None = None) -> "Store":
        path = location(path)
        if "://" not in path and not Path(path).exists():
            raise StoreError(f"{path}: no such store; create one with `smssynth dicom2kspace ... --out {path}`")
        try:
            # the per-array metadata, not the consolidated copy: zarr-python does not refresh that
            # copy when arrays change, and smssynth's own readers must never see a stale one
            root = zarr.open_group(path, mode="r", storage_options=storage_options, use_consolidated=False)
        except Exception as e:  # zarr raises several types for "not a group"
            raise StoreError(f"{path}: not a Zarr group ({type(e).__name__}); is this an smssynth store?") from None
        store = cls(root, path)
        store.validate()
        return store

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.root.attrs["dims"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.root.attrs.get("params", {}))

    def __len__(self) -> int:
        return int(self.dims["N"])

    def complete(self) -> np.ndarray:
        return np.asarray(self.root["complete"][:], dtype=bool)

    def validate(self) -> None:
        a = self.root.attrs
        if a.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path}: format {a.get('format')!r}, expected {FORMAT_NAME!r}")
        version = str(a.get("format_version", ""))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise StoreError(f"{self.path}: unreadable format_version {version!r}") from None
        if major != SUPPORTED_MAJOR:
            raise StoreError(
                f"{self.path}: format version {version}, this smssynth reads {SUPPORTED_MAJOR}.x; "
                f"upgrade smssynth or regenerate the store"
            )
        kind = self.kind
        if kind not in KINDS:
            raise StoreError(f"{self.path}: store kind {kind!r}, this smssynth reads {KINDS}; upgrade smssynth")
        d = self.dims
        if kind == "targets" and "S" not in d:
            raise StoreError(f"{self.path}: a targets store without dims['S'] (the number of distinct slices)")
        expect = _shapes_of(d, kind, "phase" in self.root, "labels" in self.root)
        expect.update(fact_shapes(d["N"], d["M"], d["T"]))
        for name, (shape, _) in expect.items():
            if name not in self.root and self.version < ADDED_IN.get(name, (0, 0)):
                continue  # an older minor version, without the array: readers fall back (see example)
            if name not in self.root:
                raise StoreError(f"{self.path}: array {name!r} missing (format version {version} has it)")
            arr = self.root[name]
            dtype = "str" if arr.dtype.kind == "U" else str(arr.dtype)
            if tuple(arr.shape) != shape or dtype != ARRAYS[name]["dtype"]:
                raise StoreError(
                    f"{self.path}: array {name!r} is {arr.dtype}{tuple(arr.shape)}, expected "
                    f"{ARRAYS[name]['dtype']}{shape}"
                )

    @property
    def source(self) -> str:
        """``synthetic`` (simulated from magnitudes) or ``measured`` (``kspace2sms``: real coil data,
        no ``phase`` array, ESPIRiT ``csm``); stores before 1.3 are synthetic."""
        return str(self.root.attrs.get("source", "synthetic"))

    @property
    def kind(self) -> str:
        """``kspace`` (simulated or measured k-space) or ``targets`` (images only; module doc)."""
        return str(self.root.attrs.get("kind", "kspace"))

    def targets(self, index: int) -> dict[str, np.ndarray]:
        """What a simulation of example ``index`` starts from, for either kind of store.

        Returns ``magnitudes`` float32 (M, T, Y, X), ``labels`` uint8 (M, T, Y, X) or None,
        ``offsets`` float64 (M,) and ``scale`` float32 ().  From a targets store the magnitudes are
        the slices' working magnitudes in DICOM units, exactly what ``dicom2kspace`` simulated
        from; from a k-space store they are its ``target`` (max 1) and there are no labels (the
        caller computes them).  Raises StoreError for an incomplete example, or a k-space store
        older than 1.2 (no ``offsets``).
        """
        self._check_complete(index)
        if self.kind == "targets":
            ids = self._read("example_slices", index)
            mags = np.stack([self._read("slices", int(i)) for i in ids])
            labels = np.stack([self._read("labels", int(i)) for i in ids]) if "labels" in self.root else None
        else:
            if "offsets" not in self.root:
                raise StoreError(
                    f"{self.path}: format {self.root.attrs.get('format_version')} stores do not record the slice "
                    f"offsets that coil maps depend on; regenerate the store (or make a --targets-only one) to "
                    f"simulate from it"
                )
            mags, labels = self._read("target", index), None
        return {"magnitudes": mags, "labels": labels, "offsets": self._read("offsets", index),
                "scale": self._read("scale", index)}

    @property
    def version(self) -> tuple[int, int]:
        """``format_version`` as (major, minor)."""
        parts = str(self.root.attrs.get("format_version", "")).split(".")
        try:
            return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            version = self.root.attrs.get("format_version")
            raise StoreError(f"{self.path}: unreadable format_version {version!r}") from None

    @property
    def caipi(self) -> str:
        """The CAIPI ordering of the store's ``kz`` (``params.caipi``; ``row`` for 1.0 stores)."""
        return str(self.params.get("caipi", "row"))

    def example(self, index: int, names=None) -> dict[str, np.ndarray]:
        """Arrays of one complete example (refuses an incomplete one).

        ``kz`` is read from the store when it has one (validated: values in 0..M-1, and equal to
        :func:`synth.physics.sms.kz_table` of the example's mask under the recorded ``params.caipi``);
        for a 1.0 store, which has none, asking for ``kz`` gives the ``row`` ordering that its
        k-space was made with, ``n mod M``.
        """
        self._check_complete(index)
        if self.kind == "targets":
            t = self.targets(index)
            target = np.divide(t["magnitudes"], np.float32(t["scale"]), dtype=np.float32)
            full = {"target": target, "scale": t["scale"], "offsets": t["offsets"],
                    "example_slices": self._read("example_slices", index)}
            if t["labels"] is not None:
                full["labels"] = t["labels"]
            unknown = sorted(set(names or ()) - set(full))
            if unknown:
                raise StoreError(f"{self.path}: a targets store has no {unknown} (it holds only the images); "
                                 f"simulate them with zoo's on-the-fly synthesis, or make a k-space store")
            return {k: full[k] for k in (names or full)}
        names = names or [k for k in DATA_ARRAYS if k in self.root]
        out = {k: self._read(k, index) for k in names if k != "kz"}
        if "kz" in names:
            out["kz"] = self._kz(index, out.get("mask"))
        return out

    def _check_complete(self, index: int) -> None:
        """IndexError out of range; StoreError for an example whose writer did not finish."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"example {index} out of range [0, {n})")
        if not bool(self.root["complete"][index]):
            raise StoreError(
                f"{self.path}: example {index} is incomplete (its writer did not finish); "
                f"re-run the generating command to complete the store"
            )

    def _read(self, name: str, index: int) -> np.ndarray:
        """``root[name][index]``, naming the example and array when a chunk cannot be decoded."""
        try:
            return np.asarray(self.root[name][index])
        except Exception as e:  # zarr/numcodecs raise many types for a truncated or garbled chunk
            raise StoreError(
                f"{self.path}: example {index}, array {name!r}: a chunk cannot be read ({type(e).__name__}); "
                f"the store is damaged: `smssynth inspect {self.path} --verify` lists every damaged example, and "
                f"re-running the generating command recomputes them"
            ) from None

    def verify(self, indices=None, *, deep: bool = False) -> dict[int, list[str]]:
        """Damaged examples among the complete ones: ``{index: [problem, ...]}`` ({} if none).

        Cheap check (always): every chunk file of an uncompressed array that exists has exactly
        the chunk's byte size (local stores; a missing chunk is legal, zarr does not store chunks
        that equal the fill value).  ``deep``: every array of the example is also read and decoded,
        which catches damage in compressed chunks and works for any store, at the cost of reading it.
        """
        done = self.complete()
        indices = np.flatnonzero(done) if indices is None else [i for i in indices if done[i]]
        names = [k for k in (*DATA_ARRAYS, "kz", "example_slices") if k in self.root]
        by_slice = [k for k in ("slices", "labels") if k in self.root]  # targets stores: rows by slice id
        sized = {}
        for k in names + by_slice:
            arr = self.root[k]
            folder = _plain_chunk_folder(arr)
            if folder is not None:
                sized[k] = (arr, folder, int(np.prod(arr.chunks)) * arr.dtype.itemsize)
        bad: dict[int, list[str]] = {}
        for i in indices:
            i = int(i)
            for k, (arr, folder, nbytes) in sized.items():
                if k in by_slice:
                    try:
                        rows = [int(r) for r in self.root["example_slices"][i]]
                    except Exception:
                        continue  # reported as example_slices' own damage
                else:
                    rows = [i]
                grid = [range(0, n, c) for n, c in zip(arr.shape[1:], arr.chunks[1:])]
                for row, starts in itertools.product(rows, itertools.product(*grid)):
                    coords = (row,) + tuple(st // c for st, c in zip(starts, arr.chunks[1:]))
                    f = folder / arr.metadata.encode_chunk_key(coords)
                    try:
                        size = f.stat().st_size
                    except FileNotFoundError:
                        continue
                    if size != nbytes:
                        bad.setdefault(i, []).append(f"array {k!r} chunk {list(coords)}: {size} bytes, expected {nbytes}")
                        break
            if deep and by_slice:
                try:
                    v = self.targets(i)
                    if not np.isfinite(v["magnitudes"]).all():
                        bad.setdefault(i, []).append("array 'slices': holds NaN or infinite values")
                except StoreError as e:
                    bad.setdefault(i, []).append(str(e).split(": ", 1)[-1])
            if deep:
                for k in names:
                    try:
                        v = np.asarray(self.root[k][i])
                    except Exception as e:
                        bad.setdefault(i, []).append(f"array {k!r}: unreadable ({type(e).__name__})")
                        continue
                    if v.dtype.kind in "fc" and not np.isfinite(v).all():
                        bad.setdefault(i, []).append(f"array {k!r}: holds NaN or infinite values")
        return bad

    def _kz(self, index: int, mask: np.ndarray | None) -> np.ndarray:
        from synth.physics.sms import kz_index, kz_table

        d = self.dims
        m, t, ny = int(d["M"]), int(d["T"]), int(d["Ky"])
        if "kz" not in self.root:
            return np.broadcast_to(kz_index(m, ny), (t, ny)).astype(np.int8)
        kz = self._read("kz", index)
        if kz.size and (kz.min() < 0 or kz.max() >= m):
            raise StoreError(f"{self.path}: example {index}: kz values {kz.min()}..{kz.max()} outside "
                             f"0..{m - 1} (M = {m}); the example is corrupt: regenerate it")
        if "caipi" in self.params:
            mask = self._read("mask", index) if mask is None else mask
            expect = kz_table(self.caipi, mask, m)
            if not np.array_equal(kz, expect):
                bad = np.argwhere(kz != expect)[0]
                raise StoreError(
                    f"{self.path}: example {index}: kz[{bad[0]}, {bad[1]}] = {kz[tuple(bad)]}, but the "
                    f"store's CAIPI ordering {self.caipi!r} gives {expect[tuple(bad)]} for its mask; the "
                    f"example is corrupt: regenerate it"
                )
        return kz

    def provenance(self, index: int) -> dict[str, Any]:
        return self.root.attrs["examples"][index]

    def facts(self) -> dict[str, np.ndarray]:
        """The per-example fact arrays (:func:`example_facts`): read from a 1.4+ store, derived
        from ``attrs["examples"]`` for an older one (whose examples do not record pixel spacing or
        frame times: NaN there)."""
        if all(name in self.root for name in FACT_ARRAYS):
            return {name: np.asarray(self.root[name][...]) for name in FACT_ARRAYS}
        return example_facts(self.root.attrs.get("examples") or [], self.dims, self.params)
