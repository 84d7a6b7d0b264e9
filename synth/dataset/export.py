r"""``smssynth export``: a k-space store's examples as fastMRI-style HDF5 or ISMRMRD files.

One file per complete example (``ex00042.h5`` for example 42), and ``export.json`` beside them
(the layout, and per file its example, split and pseudonyms).  Each file holds the example's
multi-coil k-space, its sampling (mask and CAIPI kz) and the reference image, in one of two
**k-space modes**; how the SMS data map onto layouts that know nothing of SMS is this:

``collapsed`` (default): the data an SMS acquisition records
    the store's CAIPI-collapsed k-space ``kspace[c, t, n, :] = sum_i exp(-2j pi i kz[t,n]/M) K_i[c, t, n, :]``
    on the **sampled** rows only (``mask[t, n]``), i.e. one readout per coil for each acquired
    line, carrying the M slices at once.  The CAIPI phase of each line is its ``kz[t, n]``
    (0..M-1), recorded per line.  In the 3D view of docs/store-format.md the line is row ``n``
    of plane ``kz[t, n]`` of ``sqrt(M) * F_z(K)`` (``F_z`` the orthonormal, unshifted DFT over
    the slice index), so ISMRMRD records it as ``kspace_encode_step_2 = kz``, an encoding of
    ``z = M`` planes: a 3D Cartesian reconstruction of the (zero-filled) planes, scaled by
    ``1/sqrt(M)`` and transformed with the unshifted inverse DFT along z, gives the M slices.
    With noise (``--snr``) the noise is in these data, as in the store.
``single-band``: the slices before the collapse (synthetic stores only)
    each SMS slice's own fully sampled coil k-space ``K_i = fft2c(target_i * csm_i * exp(1j phase_i))``
    (docs/store-format.md's forward model, noise-free), every row, with the mask and kz saying
    which rows, with which CAIPI phase, the store's collapsed data sample.  ``collapse(K, kz)``
    (:func:`synth.physics.sms.collapse`) of these is the store's ``kspace`` up to float32 rounding (and
    its noise).  A measured store (``kspace2sms``) has no phase array and a synthetic one made
    with ``--no-phase`` (and a non-zero phase) lost it: neither can give single-band data, and
    exporting them so is refused.  This is what ``kspace2sms`` reads: exporting a synthetic store
    ``--kspace single-band`` and converting the files back with the store's ``--sms``,
    ``--mask uniform``, ``--caipi row`` gives its k-space and targets again (a test does this).

All data are in the store's units (``target`` max 1 per example; ``attrs``/header hold
``scale``, the DICOM units per unit).  No patient identifier is written: the patient, study and
series appear as the store's pseudonyms only.

**fastMRI-style HDF5** (``--to fastmri-h5``; as fastMRI's multi-coil files, with a time axis and
the SMS slices; each dataset's axes are in its ``dims`` attribute, which ``kspace2sms`` reads)

=====================  ===========================  =========  ====================================
dataset                collapsed                    dtype      single-band
=====================  ===========================  =========  ====================================
``kspace``             (T, C, Ky, Kx), zero where   complex64  (M, T, C, Ky, Kx), every row
                       a row is not sampled (as
                       fastMRI's test files)
``mask``               (T, Ky)                      bool       the same (not applied)
``kz``                 (T, Ky)                      int8       the same
``reconstruction_rss`` (T, M, Y, X): each frame's   float32    (M, T, Y, X)
                       M slices
``frame_time_ms``      (T,)                         float64    the same (NaN unknown)
``ismrmrd_header``     the ISMRMRD XML header below (a scalar string dataset, as fastMRI's)
=====================  ===========================  =========  ====================================

``reconstruction_rss`` is the store's ``target``: for a synthetic store exactly the root-sum-of-
squares of the single-band coil images (the coil maps have unit sum of squares), for a measured
one the RSS of its measured slices; it is not cropped (fastMRI crops to 320²).  File attributes
as fastMRI's: ``max`` (of ``reconstruction_rss``), ``norm`` (its Euclidean norm),
``acquisition`` (``"SMS{M}_{caipi}"``), ``patient_id`` (the pseudonym), ``acceleration`` (R) and
``num_low_frequency`` (the ACS rows); and smssynth's: ``sms`` (M), ``kspace_mode``, ``caipi``,
``caipi_sign`` (-1), ``example``, ``identity``, ``split``, ``scale``, ``noise_sigma``, ``source``.

**ISMRMRD** (``--to ismrmrd``; written with the ``ismrmrd`` package's HDF5 layout, group ``dataset``)

* ``/dataset/xml``: header from the example's facts: encoded and recon space ``matrixSize``
  (x = Kx readout, y = Ky, z = M collapsed / 1 single-band), ``fieldOfView_mm`` (x, y from
  ``fov_mm``; z the slice thickness, 0 when unknown), ``encodingLimits`` (``kspace_encoding_step_1``
  0..Ky-1 centre Ky//2, ``kspace_encoding_step_2`` 0..M-1 collapsed, ``slice`` 0..M-1 single-band,
  ``phase`` 0..T-1: frames are cardiac **phases**), Cartesian trajectory, ``parallelImaging``
  (acceleration R along step 1, embedded calibration, ``multiband``: factor M, ``dZ`` the
  distances between consecutive SMS slices in mm, ``deltaKz`` = 1/M: the fraction of a CAIPI
  cycle per slice index and kz step, calibration ``other``), ``receiverChannels`` = C, the
  patient pseudonym as ``patientID``, and ``userParameters`` (example, M, R, ACS, CAIPI ordering
  and sign, k-space mode, source, split, scale, noise sigma).  Unknown pixel spacing is written
  as 1 mm (``userParameterLong pixel_spacing_known`` = 0).
* ``/dataset/data``: one acquisition per line, frame-major then ascending ky (single-band:
  slice-major): ``data`` (C, Kx); ``idx.kspace_encode_step_1`` = ky row, ``idx.phase`` = frame,
  ``idx.kspace_encode_step_2`` = kz (collapsed) or ``idx.slice`` = SMS slice (single-band);
  ``user_int[0]`` = the line's kz, flag ``ACQ_USER1`` on single-band lines the mask samples,
  ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING`` on ACS rows, first/last-in-phase and
  last-in-measurement flags; ``position`` = (0, 0, the slice position mm) along ``slice_dir``
  (0, 0, 1) (collapsed: the SMS slices' mean; unknown positions: the slice index),
  ``read_dir`` (1, 0, 0), ``phase_dir`` (0, 1, 0), ``center_sample`` = Kx//2.
* ``/dataset/reference``: the reference images, one ISMRMRD magnitude image (float32, matrix
  Kx × Ky) per SMS slice and frame (``slice``, ``phase``, ``image_index`` = i·T + t).
* ``/smssynth``: ``mask`` (T, Ky) bool, ``kz`` (T, Ky) int8 and ``frame_time_ms`` (T,), with the
  same attributes as the fastMRI file (ISMRMRD readers ignore it).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np

import synth
from synth.dataset import output
from synth.dataset import store as zstore
from synth.errors import ConfigError, StoreError, StoreExistsError

log = logging.getLogger("smssynth.export")

LAYOUTS = ("fastmri-h5", "ismrmrd")
KSPACE_MODES = ("collapsed", "single-band")
EXPORT_FORMAT = "smssynth.export"
EXPORT_VERSION = "1.0"
MANIFEST = "export.json"


def file_name(index: int) -> str:
    return f"ex{index:05d}.h5"


@dataclass
class ExportSummary:
    written: int = 0
    incomplete: list[int] = field(default_factory=list)  # examples left out: their writer did not finish
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0


# ----------------------------------------------------------------------------- checks


def open_source(path: str, kspace: str) -> zstore.Store:
    """The store to export; StoreError/ConfigError (one line naming it) when it cannot be."""
    try:
        st = zstore.Store.open(path)
    except StoreError as e:  # not a store, another format or version: a usage problem here
        raise ConfigError(f"{e} (export reads smssynth k-space stores)") from None
    if st.kind != "kspace":
        raise ConfigError(f"STORE {path}: a {st.kind} store has no k-space to export (it holds only the images); "
                          f"make a k-space store (dicom2kspace/generate without --targets-only) and export that")
    if kspace == "single-band" and not single_band_possible(st):
        why = ("a measured store (kspace2sms) holds no phase: its slices' own k-space cannot be recovered"
               if st.source == "measured" else "the store was made with --no-phase, so the slices' phase is lost")
        raise ConfigError(f"--kspace single-band: {path}: {why}; export --kspace collapsed")
    return st


def single_band_possible(st: zstore.Store) -> bool:
    return st.source != "measured" and ("phase" in st.root or st.params.get("phase") == "none")


def _is_export(path: Path) -> str | None:
    """Why ``path`` is not a previous export that --overwrite may replace (None if it is one)."""
    if path.is_symlink() or not path.is_dir():
        return "it is not a folder" if not path.is_symlink() else "it is a symbolic link"
    try:
        meta = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"it has no readable {MANIFEST}"
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        return f"its {MANIFEST} is not an {EXPORT_FORMAT} manifest"
    foreign = sorted(p.name for p in path.iterdir()
                     if p.name != MANIFEST and not (p.is_file() and p.name.startswith("ex") and p.name.endswith(".h5")))
    if foreign:
        return f"it also holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}"
    return None


def prepare_out(out: str, store: str, overwrite: bool) -> tuple[Path, str | None]:
    """Check ``--out``: ``(out, None)`` for a new folder, ``(out, "export")`` to replace an
    earlier export; ConfigError / StoreExistsError otherwise (one line naming ``--out``)."""
    out = output._local(out)
    if "://" in out:
        raise ConfigError(f"--out {out}: export writes to a local folder")
    output.check_not_input(out, [store])
    p = Path(out)
    if "://" not in store and output._inside(output._resolved(out), output._resolved(store)):
        raise ConfigError(f"--out {out} is inside the store {store} (an input of this command); choose a folder "
                          f"outside it")
    if not output.exists(out):
        return p, None
    if not overwrite:
        raise StoreExistsError(f"--out {out} already exists; pass --overwrite to replace it, or choose another --out")
    why = _is_export(p)
    if why:
        raise StoreExistsError(f"--overwrite only replaces an earlier smssynth export, and --out {out} is not one: "
                               f"{why}. Nothing was changed; move it away or choose another --out")
    return p, "export"


# ----------------------------------------------------------------------------- per example


@dataclass
class Example:
    """What one exported file holds, in the store's axis order, with the example's facts."""

    index: int
    kspace: np.ndarray  # collapsed (C, T, Ky, Kx) or single-band (M, C, T, Ky, Kx), complex64
    mask: np.ndarray  # (T, Ky) bool
    kz: np.ndarray  # (T, Ky) int8
    target: np.ndarray  # (M, T, Y, X) float32
    facts: dict
    attrs: dict
    mode: str


def single_band(ex: dict, st: zstore.Store) -> np.ndarray:
    """Each SMS slice's noise-free coil k-space complex64 (M, C, T, Ky, Kx) from the store's
    ``target``, ``csm`` and ``phase`` (docs/store-format.md's forward model)."""
    from synth.physics.fft import fft2c

    target, csm = ex["target"], ex["csm"]  # (M, T, Y, X), (C, M, Y, X)
    m, t = target.shape[:2]
    c = csm.shape[0]
    out = np.empty((m, c, t, *target.shape[2:]), np.complex64)
    for i in range(m):
        for ci in range(c):
            x = target[i] * csm[ci, i]  # (T, Y, X)
            if "phase" in ex:
                x = x * np.exp(1j * ex["phase"][ci, i])
            out[i, ci] = fft2c(x.astype(np.complex64))
    return out


def load_example(st: zstore.Store, index: int, mode: str, facts: dict) -> Example:
    names = ["kspace", "mask", "kz", "target", "scale", "noise_sigma"]
    if mode == "single-band":
        names = ["mask", "kz", "target", "scale", "noise_sigma", "csm"] + (["phase"] if "phase" in st.root else [])
    ex = st.example(index, names)
    kspace = single_band(ex, st) if mode == "single-band" else ex["kspace"]
    p, d = st.params, st.dims
    prov = st.provenance(index) if "examples" in st.root.attrs else {}
    f = {k: v[index] for k, v in facts.items()}
    attrs = {
        "example": index, "identity": str(prov.get("identity", "")), "split": str(f["split"]),
        "patient_id": str(f["patient"]), "study": str(f["study"]), "series": str(f["series"]),
        "sms": int(d["M"]), "acceleration": int(p.get("accel", 1)), "num_low_frequency": int(p.get("acs", 0)),
        "caipi": str(st.caipi), "caipi_sign": -1, "kspace_mode": mode, "source": st.source,
        "scale": float(ex["scale"]), "noise_sigma": float(ex["noise_sigma"]),
        "acquisition": f"SMS{int(d['M'])}_{st.caipi}",
        "store_format": f"{zstore.FORMAT_NAME} {st.root.attrs.get('format_version')}",
        "generator": f"smssynth {synth.__version__}",
    }
    return Example(index, kspace, np.asarray(ex["mask"], bool), np.asarray(ex["kz"], np.int8),
                   np.asarray(ex["target"], np.float32), f, attrs, mode)


# ----------------------------------------------------------------------------- ISMRMRD header


def _finite(v, default: float) -> float:
    v = float(v)
    return v if np.isfinite(v) else default


def ismrmrd_header(ex: Example) -> str:
    """The ISMRMRD XML header of one exported example (module doc)."""
    import ismrmrd.xsd as X

    m, t = ex.target.shape[:2]
    c = ex.kspace.shape[-4]
    ny, nx = ex.kspace.shape[-2:]
    collapsed = ex.mode == "collapsed"
    spacing = np.asarray(ex.facts["pixel_spacing_mm"], float)
    known = bool(np.isfinite(spacing).all())
    fov = (ny * spacing[0], nx * spacing[1]) if known else (float(ny), float(nx))
    thick = _finite(ex.facts["slice_thickness_mm"], 0.0)

    def space():
        return X.encodingSpaceType(matrixSize=X.matrixSizeType(x=nx, y=ny, z=m if collapsed else 1),
                                   fieldOfView_mm=X.fieldOfViewMm(x=float(fov[1]), y=float(fov[0]), z=thick))

    def lim(top, centre=0):
        return X.limitType(minimum=0, maximum=int(top), center=int(centre))

    zero = lim(0)
    limits = X.encodingLimitsType(
        kspace_encoding_step_0=lim(nx - 1, nx // 2), kspace_encoding_step_1=lim(ny - 1, ny // 2),
        kspace_encoding_step_2=lim(m - 1 if collapsed else 0), average=zero, slice=lim(0 if collapsed else m - 1),
        contrast=zero, phase=lim(t - 1), repetition=zero, set=zero, segment=zero)
    pos = np.asarray(ex.facts["slice_position_mm"], float)
    dz = [abs(float(b - a)) for a, b in pairwise(pos)] if np.isfinite(pos).all() else []
    parallel = X.parallelImagingType(
        accelerationFactor=X.accelerationFactorType(kspace_encoding_step_1=int(ex.attrs["acceleration"]),
                                                    kspace_encoding_step_2=1),
        calibrationMode=X.calibrationModeType.EMBEDDED if ex.attrs["num_low_frequency"] else X.calibrationModeType.OTHER,
        multiband=X.multibandType(spacing=[X.multibandSpacingType(dZ=dz or [0.0])], deltaKz=1.0 / m,
                                  multiband_factor=m, calibration=X.multibandCalibrationType.OTHER,
                                  calibration_encoding=0))
    enc = X.encodingType(encodedSpace=space(), reconSpace=space(), encodingLimits=limits,
                         trajectory=X.trajectoryType.CARTESIAN, parallelImaging=parallel)
    a = ex.attrs
    longs = {"smssynth_example": a["example"], "sms_factor": m, "acceleration": a["acceleration"],
             "acs_lines": a["num_low_frequency"], "caipi_sign": -1, "pixel_spacing_known": int(known), "frames": t}
    strings = {"protocol": a["acquisition"], "smssynth_kspace_mode": ex.mode, "caipi_ordering": a["caipi"], "source": a["source"],
               "split": a["split"], "identity": a["identity"], "store_format": a["store_format"],
               "caipi_model": "line(t,n) = sum_i exp(-2j*pi*i*kz[t,n]/M) * fft2c(x_i)[t,n,:]; kz = user_int[0]"}
    doubles = {"scale": a["scale"], "noise_sigma": a["noise_sigma"]}
    user = X.userParametersType(
        userParameterLong=[X.userParameterLongType(name=k, value=int(v)) for k, v in longs.items()],
        userParameterDouble=[X.userParameterDoubleType(name=k, value=float(v)) for k, v in doubles.items()],
        userParameterString=[X.userParameterStringType(name=k, value=str(v)) for k, v in strings.items() if str(v)])
    hdr = X.ismrmrdHeader(
        subjectInformation=X.subjectInformationType(patientID=a["patient_id"]) if a["patient_id"] else None,
        acquisitionSystemInformation=X.acquisitionSystemInformationType(
            systemVendor="smssynth", systemModel=a["source"], receiverChannels=c),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=0),  # unknown
        encoding=[enc], userParameters=user)
    return X.ToXML(hdr)


# ----------------------------------------------------------------------------- writers


def _flag(bit: int) -> np.uint64:
    return np.uint64(1) << np.uint64(bit - 1)  # ISMRMRD flags are 1-based bit numbers


def _acs_rows(mask: np.ndarray, acs: int) -> np.ndarray:
    """Which ky rows are the mask's fully sampled centre (:func:`synth.physics.masks.acs_rows`)."""
    from synth.physics.masks import acs_rows

    rows = np.zeros(mask.shape[-1], bool)
    rows[acs_rows(mask.shape[-1], acs)] = True
    return rows


def write_ismrmrd(path: Path, ex: Example) -> None:
    import h5py
    import ismrmrd
    from ismrmrd.hdf5 import acquisition_dtype

    collapsed = ex.mode == "collapsed"
    m, t, ny, nx = ex.target.shape
    c = ex.kspace.shape[-4]
    pos = np.asarray(ex.facts["slice_position_mm"], float)
    pos = pos if np.isfinite(pos).all() else np.arange(m, dtype=float)
    acs = _acs_rows(ex.mask, ex.attrs["num_low_frequency"])
    if collapsed:  # frame-major, then ascending ky: the sampled rows only
        tt, nn = np.nonzero(ex.mask)
        ii = np.zeros_like(tt)
        lines = ex.kspace[:, tt, nn, :]  # (C, L, Kx)
    else:  # slice-major, frame, ky: every row
        ii, tt, nn = (a.ravel() for a in np.meshgrid(np.arange(m), np.arange(t), np.arange(ny), indexing="ij"))
        lines = ex.kspace[ii, :, tt, nn, :].transpose(1, 0, 2)  # (C, L, Kx)
    n_lines = len(tt)
    rec = np.zeros(n_lines, acquisition_dtype)
    h = rec["head"]
    h["version"] = 1
    h["scan_counter"] = np.arange(n_lines)
    h["number_of_samples"], h["available_channels"], h["active_channels"] = nx, c, c
    h["channel_mask"][:, 0] = (1 << c) - 1 if c < 64 else np.iinfo(np.uint64).max
    h["center_sample"] = nx // 2
    h["read_dir"] = (1.0, 0.0, 0.0)
    h["phase_dir"] = (0.0, 1.0, 0.0)
    h["slice_dir"] = (0.0, 0.0, 1.0)
    h["position"][:, 2] = pos.mean() if collapsed else pos[ii]
    kz = ex.kz[tt, nn]
    idx = h["idx"]
    idx["kspace_encode_step_1"], idx["phase"] = nn, tt
    if collapsed:
        idx["kspace_encode_step_2"] = kz
    else:
        idx["slice"] = ii
    h["user_int"][:, 0] = kz
    flags = np.zeros(n_lines, np.uint64)
    flags[acs[nn]] |= _flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    if not collapsed:
        flags[ex.mask[tt, nn]] |= _flag(ismrmrd.ACQ_USER1)
    group = ii * t + tt  # one (slice, frame) after another
    starts = np.r_[True, group[1:] != group[:-1]]
    ends = np.r_[group[1:] != group[:-1], True]
    flags[starts] |= _flag(ismrmrd.ACQ_FIRST_IN_PHASE)
    flags[ends] |= _flag(ismrmrd.ACQ_LAST_IN_PHASE)
    if n_lines:
        flags[-1] |= _flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
    h["flags"] = flags
    rec["head"] = h
    data = np.ascontiguousarray(lines.transpose(1, 0, 2), np.complex64)  # (L, C, Kx)
    empty = np.zeros(0, np.float32)
    for k in range(n_lines):
        rec["data"][k] = data[k].reshape(-1).view(np.float32)
        rec["traj"][k] = empty
    d = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    try:
        d.write_xml_header(ismrmrd_header(ex).encode())
        spacing = np.asarray(ex.facts["pixel_spacing_mm"], float)
        fov = [float(nx * spacing[1]), float(ny * spacing[0]), _finite(ex.facts["slice_thickness_mm"], 0.0)] \
            if np.isfinite(spacing).all() else [float(nx), float(ny), 0.0]
        for i in range(m):
            for f in range(t):
                img = ismrmrd.Image.from_array(
                    ex.target[i, f], image_type=ismrmrd.IMTYPE_MAGNITUDE, image_index=i * t + f, image_series_index=0,
                    slice=i, phase=f, field_of_view=tuple(fov), position=(0.0, 0.0, float(pos[i])),
                    read_dir=(1.0, 0.0, 0.0), phase_dir=(0.0, 1.0, 0.0), slice_dir=(0.0, 0.0, 1.0))
                d.append_image("reference", img)
    finally:
        d.close()
    with h5py.File(path, "a") as fh:
        # every line at once, in the layout (dtype, resizable) of ismrmrd's append_acquisition
        fh["dataset"].create_dataset("data", data=rec, maxshape=(None,), chunks=True)
        _small_arrays(fh.create_group("smssynth"), ex)


def _small_arrays(g, ex: Example) -> None:
    g["mask"] = ex.mask
    g["mask"].attrs["dims"] = "time,ky"
    g["kz"] = ex.kz
    g["kz"].attrs["dims"] = "time,ky"
    g["frame_time_ms"] = np.asarray(ex.facts["frame_time_ms"], np.float64)
    g["frame_time_ms"].attrs["dims"] = "time"
    for k, v in ex.attrs.items():
        g.attrs[k] = v


def write_fastmri(path: Path, ex: Example) -> None:
    import h5py

    with h5py.File(path, "w") as fh:
        if ex.mode == "collapsed":
            k = np.ascontiguousarray(ex.kspace.transpose(1, 0, 2, 3))  # (T, C, Ky, Kx)
            k *= ex.mask[:, None, :, None]  # the acquired rows only, as a fastMRI test file
            fh["kspace"] = k
            fh["kspace"].attrs["dims"] = "time,coil,ky,kx"
            rss = np.ascontiguousarray(ex.target.transpose(1, 0, 2, 3))  # (T, M, Y, X)
            fh["reconstruction_rss"] = rss
            fh["reconstruction_rss"].attrs["dims"] = "time,slice,y,x"
        else:
            fh["kspace"] = np.ascontiguousarray(ex.kspace.transpose(0, 2, 1, 3, 4))  # (M, T, C, Ky, Kx)
            fh["kspace"].attrs["dims"] = "slice,time,coil,ky,kx"
            fh["reconstruction_rss"] = ex.target
            fh["reconstruction_rss"].attrs["dims"] = "slice,time,y,x"
        fh["ismrmrd_header"] = ismrmrd_header(ex).encode()
        _small_arrays(fh, ex)
        fh.attrs["max"] = float(ex.target.max())
        fh.attrs["norm"] = float(np.linalg.norm(ex.target.astype(np.float64)))


WRITERS = {"fastmri-h5": write_fastmri, "ismrmrd": write_ismrmrd}


# ----------------------------------------------------------------------------- the command


def export(store: str | Path, out: str | Path, layout: str, *, kspace: str = "collapsed", overwrite: bool = False,
           split: str | None = None, progress: Callable[[int, int], None] | None = None) -> ExportSummary:
    """Write every complete example of ``store`` (of ``split`` if given) into the folder ``out``.

    Raises ConfigError / StoreExistsError (usage: the CLI exits 2) for a store that cannot be
    exported (not an smssynth store, a targets store, single-band from a measured store), an
    existing ``out`` without ``overwrite`` (or one that is not an earlier export), or a split that
    no example has.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"--to {layout!r}: choose one of {', '.join(LAYOUTS)}")
    if kspace not in KSPACE_MODES:
        raise ConfigError(f"--kspace {kspace!r}: choose one of {', '.join(KSPACE_MODES)}")
    t0 = time.perf_counter()
    store, out = zstore.location(store), str(out)
    st = open_source(store, kspace)
    out_path, replaced = prepare_out(out, store, overwrite)
    facts = st.facts()
    done = st.complete()
    chosen = np.arange(len(st)) if split is None else np.flatnonzero(facts["split"] == split)
    if split is not None and not len(chosen):
        have = sorted(set(facts["split"].tolist()) - {""})
        raise ConfigError(f"--split {split}: no example of {store} is in it (splits: {', '.join(have) or 'none'})")
    summary = ExportSummary(incomplete=[int(i) for i in chosen if not done[i]])
    todo = [int(i) for i in chosen if done[i]]
    # written beside --out and moved into place at the end: an interrupted export leaves no
    # half-written folder, and an earlier one is replaced only by a finished one
    staging = output.staging_path(out_path)
    replacement = output.Replacement(str(out_path), str(staging), replaced)
    try:
        staging.mkdir(parents=True)
        entries = []
        for n, i in enumerate(todo):
            ex = load_example(st, i, kspace, facts)
            name = file_name(i)
            WRITERS[layout](staging / name, ex)
            entries.append({"file": name, "example": i, "split": ex.attrs["split"], "patient": ex.attrs["patient_id"],
                            "study": ex.attrs["study"], "series": ex.attrs["series"], "identity": ex.attrs["identity"]})
            summary.files.append(name)
            summary.written += 1
            if progress:
                progress(n + 1, len(todo))
        manifest = {
            "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "layout": layout, "kspace": kspace,
            "store": {"format": zstore.FORMAT_NAME,  # not its path or name: users name folders after patients
                      "format_version": st.root.attrs.get("format_version"), "source": st.source,
                      "dims": st.dims},
            "generator": {"name": "smssynth", "version": synth.__version__, "command": "export",
                          "python": platform.python_version()},
            "incomplete_examples": summary.incomplete,
            "files": entries,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if replaced:
            replacement.commit()
        else:
            os.replace(staging, out_path)  # also onto an empty folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    summary.notes = list(replacement.notes)
    summary.wall_seconds = time.perf_counter() - t0
    return summary


__all__ = ["KSPACE_MODES", "LAYOUTS", "MANIFEST", "export", "file_name", "ismrmrd_header", "single_band"]
