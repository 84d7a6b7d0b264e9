"""The phantom as DICOM: :func:`write_phantom` writes what a scanner would (zero-filled, quantised,
one MR Image Storage file per slice and frame, with a plausible but fictitious identity); see
:mod:`synth.io.phantom` for the tags and geometry conventions."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from synth.errors import ConfigError
from synth.io.phantom.render import (RESCALE_INTERCEPT, RESCALE_SLOPE, SIGNAL_SCALE, PhantomSpec, _anatomy, _timing,
                                     acquired_images, zero_fill)

_MANUFACTURER = "smssynth phantom"

_SURNAMES = ("HARTLEY", "OKAFOR", "LINDQVIST", "MORENO", "TANAKA", "DUBOIS", "KOWALSKI", "NAVARRO",
             "PETERSEN", "ABERNATHY", "SANTORO", "WEBER")
_GIVEN = {"F": ("ANNA", "MARTA", "GRACE", "LEILA", "SOFIA", "INGRID"),
          "M": ("JONAS", "PAUL", "TOMAS", "HUGO", "OMAR", "VIKTOR")}


def _patient_rng(spec: PhantomSpec, patient: str) -> np.random.Generator:
    key = int.from_bytes(hashlib.sha256(patient.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([spec.seed, key, 0xD1C0]))


# PhantomSpec fields added after its first release, with their defaults: left out of the Series
# UID's key while at the default, so a phantom that does not use them keeps the Series UID (and the
# simulation draws seeded from the series identity) it had before they existed
_LATER_FIELDS = {"snr": None}


def _series_key(spec: PhantomSpec) -> str:
    """``repr(spec)`` without the later fields that are at their default."""
    items = [f"{f.name}={getattr(spec, f.name)!r}" for f in dataclasses.fields(spec)
             if not (f.name in _LATER_FIELDS and getattr(spec, f.name) == _LATER_FIELDS[f.name])]
    return f"{type(spec).__qualname__}({', '.join(items)})"


def _ds(v: float, nd: int = 6) -> str:
    """DS text (<= 16 chars) of ``v`` rounded to ``nd`` decimals."""
    s = f"{round(float(v), nd):.{nd}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _tm(t: _dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")


def write_phantom(
    out_dir: str | Path,
    spec: PhantomSpec,
    *,
    extension: str = ".dcm",
    extra_tags: Mapping[str, Any] | None = None,
    patient: str = "PHANTOM",
) -> list[Path]:
    """Write the phantom as one MR Image Storage file per (slice, frame).

    Parameters
    ----------
    out_dir : directory (created if missing); files go directly into it.
    spec : the phantom.
    extension : file name suffix, ``".dcm"`` or ``""``.
    extra_tags : DICOM keyword -> value, set on every file after the generated tags (e.g. canary
        strings for de-identification tests).  A value ``None`` deletes the tag; a callable is
        called as ``value(slice, frame)`` per file.  Setting ``SOPInstanceUID`` also sets the
        file meta's ``MediaStorageSOPInstanceUID``.
    patient : pseudonymous patient key; Patient ID/name, dates and every UID derive from
        ``(spec.seed, patient)`` (the Series UID also from the whole spec), so distinct keys give
        distinct patients that can be written side by side (even into one directory: file names
        are hashes of the generated SOP Instance UIDs).

    Returns
    -------
    The S*T paths, in (slice, frame) order.  The stored pixel ``p`` satisfies
    ``p * RescaleSlope + RescaleIntercept = SIGNAL_SCALE * zero_fill(acquired_images(spec), matrix)``
    up to quantisation.
    """
    import pydicom
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid

    extra = dict(extra_tags or {})
    for kw in extra:
        if tag_for_keyword(kw) is None:
            raise ConfigError(f"extra_tags: {kw!r} is not a DICOM keyword (e.g. 'PatientName')")
    if extension not in ("", ".dcm"):
        raise ConfigError(f"extension must be '.dcm' or '', got {extension!r}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    anat = _anatomy(spec.seed)
    timing = _timing(spec, anat)
    stored_img = zero_fill(acquired_images(spec), spec.matrix) * (SIGNAL_SCALE / RESCALE_SLOPE)

    perf = spec.kind == "perfusion"
    # cine: unsigned 12-bit like many scanners; perfusion: signed 16-bit like the GE series
    dtype, bits_stored = (np.int16, 16) if perf else (np.uint16, 12)
    top = 2 ** (bits_stored - 1) - 1 if perf else 2**bits_stored - 1
    stored = np.clip(np.rint(stored_img - RESCALE_INTERCEPT / RESCALE_SLOPE), 0, top).astype(dtype)

    # identity: everything derives from (seed, patient)
    prng = _patient_rng(spec, patient)
    sex = "F" if prng.random() < 0.5 else "M"
    name = f"{_SURNAMES[prng.integers(len(_SURNAMES))]}^{_GIVEN[sex][prng.integers(6)]}"
    patient_id = f"{prng.integers(10**7, 10**8)}"
    study_dt = _dt.datetime(2019, 1, 7, 8, 0) + _dt.timedelta(days=int(prng.integers(0, 1800)),
                                                              minutes=int(prng.integers(0, 540)))
    birth = study_dt.date() - _dt.timedelta(days=int(prng.integers(35 * 365, 80 * 365)))
    age = (study_dt.date() - birth).days // 365
    accession = f"A{prng.integers(10**7, 10**8)}"
    weight = round(float(prng.uniform(55, 105)), 1)
    root = ["smssynth-phantom", str(spec.seed), patient]
    study_uid = generate_uid(entropy_srcs=[*root, "study"])
    series_uid = generate_uid(entropy_srcs=[*root, "series", _series_key(spec)])
    for_uid = generate_uid(entropy_srcs=[*root, "frame-of-reference"])
    series_dt = study_dt + _dt.timedelta(minutes=(4 if not perf else 21) + int(prng.integers(0, 6)))

    # geometry
    row_dir = np.array(anat.orientation[:3])
    col_dir = np.array(anat.orientation[3:])
    normal = np.cross(row_dir, col_dir)
    ps = spec.pixel_mm
    my, mx = spec.matrix
    ar, ac = spec.acquired
    phase_dir = "ROW" if ac < ar else "COL"
    # (frequency rows, frequency columns, phase rows, phase columns)
    acq_matrix = [0, ar, ac, 0] if phase_dir == "ROW" else [ac, 0, 0, ar]
    n_phase, n_freq = (ac, ar) if phase_dir == "ROW" else (ar, ac)
    rr = timing["rr"]
    S, T = spec.n_slices, spec.n_frames

    vmax = float(np.percentile(stored_img, 99.5)) * RESCALE_SLOPE + RESCALE_INTERCEPT
    common: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["ORIGINAL", "PRIMARY", "M", "NONE"],
        "SOPClassUID": MRImageStorage,
        "StudyDate": study_dt.strftime("%Y%m%d"), "SeriesDate": series_dt.strftime("%Y%m%d"),
        "AcquisitionDate": series_dt.strftime("%Y%m%d"), "ContentDate": series_dt.strftime("%Y%m%d"),
        "StudyTime": study_dt.strftime("%H%M%S"), "SeriesTime": series_dt.strftime("%H%M%S"),
        "AccessionNumber": accession,
        "Modality": "MR",
        "Manufacturer": _MANUFACTURER,
        "InstitutionName": "Lakeside General Hospital",
        "InstitutionAddress": "12 Harbour Road, Springfield",
        "ReferringPhysicianName": "MARSH^ELEANOR",
        "StationName": "SMSMR01",
        "StudyDescription": "CARDIAC^MR HEART",
        "SeriesDescription": "SAX CINE SSFP" if not perf else "FIRST PASS PERFUSION SAX",
        "OperatorsName": "TECH^ROBIN",
        "ManufacturerModelName": "smssynth",
        "PatientName": name, "PatientID": patient_id, "PatientBirthDate": birth.strftime("%Y%m%d"),
        "PatientSex": sex, "PatientAge": f"{age:03d}Y", "PatientWeight": _ds(weight, 1),
        "BodyPartExamined": "HEART",
        "ScanningSequence": "GR",
        "SequenceVariant": "SS" if not perf else ["SP", "MP"],
        "ScanOptions": "CG" if not perf else ["CG", "SAT1"],
        "MRAcquisitionType": "2D",
        "SequenceName": "*tfi2d1" if not perf else "*tfl2d1",
        "SliceThickness": _ds(min(8.0, spec.slice_spacing_mm)),
        "RepetitionTime": "2.9" if not perf else "2.5",
        "EchoTime": "1.45" if not perf else "1.1",
        "NumberOfAverages": "1",
        "ImagingFrequency": "63.676",
        "ImagedNucleus": "1H",
        "EchoNumbers": "1",
        "MagneticFieldStrength": "1.5",
        "SpacingBetweenSlices": _ds(spec.slice_spacing_mm),
        "EchoTrainLength": "1",
        "PercentSampling": _ds(100.0 * n_phase / n_freq, 4),
        "PercentPhaseFieldOfView": "100",
        "PixelBandwidth": "930" if not perf else "1085",
        "DeviceSerialNumber": "SMS0042",
        "SoftwareVersions": "smssynth phantom 1",
        "ProtocolName": "cine_sax" if not perf else "perfusion_sax",
        "HeartRate": str(int(round(anat.heart_rate))),
        "NominalInterval": str(int(round(rr))),
        "CardiacNumberOfImages": str(T) if not perf else "1",
        "ReconstructionDiameter": _ds(spec.fov_mm),
        "ReceiveCoilName": "BODY18",
        "TransmitCoilName": "Body",
        "AcquisitionMatrix": acq_matrix,
        "InPlanePhaseEncodingDirection": phase_dir,
        "FlipAngle": "50" if not perf else "12",
        "VariableFlipAngleFlag": "N",
        "SAR": "1.9" if not perf else "0.8",
        "PatientPosition": "HFS",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "StudyID": "1",
        "SeriesNumber": "5" if not perf else "12",
        "AcquisitionNumber": "1",
        "ImageOrientationPatient": [_ds(v) for v in anat.orientation],
        "FrameOfReferenceUID": for_uid,
        "PositionReferenceIndicator": "",
        "ImagesInAcquisition": str(S * T),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": my, "Columns": mx,
        "PixelSpacing": [_ds(ps), _ds(ps)],
        "BitsAllocated": 16, "BitsStored": bits_stored, "HighBit": bits_stored - 1,
        "PixelRepresentation": 1 if perf else 0,
        "WindowCenter": _ds(vmax / 2, 1), "WindowWidth": _ds(vmax, 1),
        "RescaleIntercept": _ds(RESCALE_INTERCEPT), "RescaleSlope": _ds(RESCALE_SLOPE), "RescaleType": "US",
    }
    if perf:
        common["InversionTime"] = "100"  # saturation-recovery delay
        common["NumberOfTemporalPositions"] = str(T)

    paths = []
    for s in range(S):
        centre = np.array(anat.centre_patient) + (s - (S - 1) / 2) * spec.slice_spacing_mm * normal
        ipp = centre - row_dir * (mx // 2) * ps - col_dir * (my // 2) * ps
        for t in range(T):
            trig = float(timing["trigger"][s, t])
            if perf:
                instance = t * S + s + 1  # heartbeat-major, the acquisition order
                acq = series_dt + _dt.timedelta(milliseconds=t * rr + trig)
            else:
                instance = s * T + t + 1  # one breath-hold per slice
                acq = series_dt + _dt.timedelta(seconds=18 * s, milliseconds=trig)
            sop_uid = generate_uid(entropy_srcs=[*root, "instance", series_uid, str(s), str(t)])
            ds = pydicom.Dataset()
            for kw, v in common.items():
                setattr(ds, kw, v)
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = str(instance)
            ds.AcquisitionTime = _tm(acq)
            ds.ContentTime = _tm(acq + _dt.timedelta(seconds=9))
            ds.TriggerTime = _ds(trig, 2)
            ds.ImagePositionPatient = [_ds(v, 4) for v in ipp]
            ds.SliceLocation = _ds(float(centre @ normal), 4)
            if perf:
                ds.TemporalPositionIdentifier = str(t + 1)
            px = stored[s, t]
            ds.SmallestImagePixelValue = int(px.min())
            ds.LargestImagePixelValue = int(px.max())
            ds.PixelData = px.tobytes()
            ds["PixelData"].VR = "OW"
            for kw, v in extra.items():
                if v is None:
                    if kw in ds:
                        delattr(ds, kw)
                    continue
                setattr(ds, kw, v(s, t) if callable(v) else v)

            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", MRImageStorage)
            meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", sop_uid)
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            meta.ImplementationVersionName = "SMSSYNTH_PHANTOM"
            ds.file_meta = meta
            ds.preamble = b"\x00" * 128
            # names carry no order: a hash of the generated (unique) SOP Instance UID
            fname = "MR" + hashlib.sha1(sop_uid.encode()).hexdigest()[:14].upper() + extension
            path = out_dir / fname
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def describe(spec: PhantomSpec) -> str:
    """One line, no identifiers: what :func:`write_phantom` writes for ``spec``."""
    return (f"{spec.kind}, {spec.n_slices} slices x {spec.n_frames} frames, acquired "
            f"{spec.acquired[0]}x{spec.acquired[1]} stored {spec.matrix[0]}x{spec.matrix[1]}, "
            f"{spec.fov_mm:g} mm FOV, seed {spec.seed}" + ("" if spec.snr is None else f", SNR {spec.snr:.3g}"))
