"""synth.io.dicom: grouping into series/slices/frames, decoding, damaged inputs, privacy.

Small DICOM series are written here with pydicom (odd 37x31 matrices catch axis mix-ups; pixel
values encode slice and frame so the order can be checked); the real scanner data under
../shared/data covers Sunnybrook cine, GE perfusion, 9 transfer syntaxes and Enhanced MR.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    generate_uid,
)

from synth.errors import ConfigError, DicomError, MissingDecoderError, NoInputError
from synth.io.dicom import (
    POSITION_TOL_MM,
    Catalog,
    FrameRef,
    SliceInfo,
    load_slice,
    scan,
)

SALT = b"test-salt"
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
IOP_TILTED = [0.8, 0.6, 0.0, 0.0, 0.0, -1.0]  # normal = row x col = (-0.6, 0.8, 0)


def shared(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data {p} not present (expected ../shared/data beside the checkout)")
    return p


# ----------------------------------------------------------------------------- writers


def write_mr(path: Path, pixels: np.ndarray, **attrs) -> Path:
    """Write one single-frame MR image; ``attrs`` override the defaults, None deletes."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.9.1111.1"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.9.1111.2"
    ds.PatientID = "PID-TEST"
    ds.PatientName = "TEST^PATIENT"
    ds.InstanceNumber = 1
    ds.ImageOrientationPatient = IOP_TILTED
    ds.ImagePositionPatient = [0.0, 0.0, 0.0]
    ds.PixelSpacing = [1.5, 1.25]
    ds.SliceThickness = 8
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    for key, value in attrs.items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def slice_position(s: int, spacing: float = 8.0) -> list[float]:
    """IPP of slice ``s``: ``s * spacing`` mm along the IOP_TILTED normal, plus in-plane offsets."""
    n = np.array([-0.6, 0.8, 0.0])
    return list(s * spacing * n + np.array([3.0, 4.0, 5.0]))


def write_series(root: Path, n_slices=3, n_frames=5, shape=(37, 31), *, per_slice=None, per_frame=None,
                 ext=".dcm", **attrs) -> list[Path]:
    """A cine series: files named in scrambled order, trigger times that differ per slice.

    Pixel value = 100 * slice + frame, so order checks need no header.  ``per_slice(s)`` and
    ``per_frame(s, t)`` return attribute overrides.
    """
    paths = []
    n = n_slices * n_frames
    for s in range(n_slices):
        for t in range(n_frames):
            k = s * n_frames + t
            extra = dict(ImagePositionPatient=slice_position(s), TriggerTime=f"{t * 40.0 + 1.5 * s:.1f}",
                         InstanceNumber=n - k, AcquisitionTime=f"1200{t:02d}.5{s}")
            extra.update(per_slice(s) if per_slice else {})
            extra.update(per_frame(s, t) if per_frame else {})
            extra.update(attrs)
            rows, cols = extra.pop("shape", shape)
            pixels = np.full((rows, cols), 100 * s + t, dtype=np.int16)
            name = f"img{(k * 7) % n:03d}{ext}"  # file order != slice/frame order
            paths.append(write_mr(root / f"sub{s % 2}" / name, pixels, **extra))
    return paths


def frame_ids(data: np.ndarray) -> list[int]:
    return [int(v) for v in data[:, 0, 0]]


# ----------------------------------------------------------------------------- grouping


def test_series_slices_frames_are_grouped_and_ordered(tmp_path):
    write_series(tmp_path, n_slices=3, n_frames=5, ext="")  # no extensions, two sub-folders
    cat = scan([tmp_path], salt=SALT)
    assert isinstance(cat, Catalog) and cat.n_files == 15 and not cat.skipped and not cat.warnings
    (se,) = cat.series
    assert se.key.startswith("se-") and se.study_key.startswith("st-") and se.patient_key.startswith("pt-")
    assert se.position_source == "ImagePositionPatient" and se.time_source == "TriggerTime"
    assert np.allclose(se.normal, (-0.6, 0.8, 0.0))
    assert [s.index for s in se.slices] == [0, 1, 2]
    assert np.allclose([s.position_mm for s in se.slices], np.array([0, 8, 16]) + (-0.6 * 3 + 0.8 * 4))
    for s, sl in enumerate(se.slices):
        assert isinstance(sl, SliceInfo) and sl.n_frames == 5 and sl.shape == (37, 31)
        assert sl.pixel_spacing_mm == (1.5, 1.25) and sl.slice_thickness_mm == 8.0
        assert sl.acquisition_matrix is None
        assert sl.times_ms == pytest.approx([t * 40.0 + 1.5 * s for t in range(5)])
        assert all(isinstance(f, FrameRef) and f.frame is None for f in sl.frames)
        data = load_slice(sl)
        assert data.dtype == np.float32 and data.shape == (5, 37, 31)
        assert frame_ids(data) == [100 * s + t for t in range(5)]


def test_scan_accepts_mixed_files_and_folders_and_counts_each_file_once(tmp_path):
    paths = write_series(tmp_path / "a", n_slices=2, n_frames=2)
    cat = scan([tmp_path / "a", paths[0], str(paths[1]), tmp_path / "a" / "sub0"], salt=SALT)
    assert cat.n_files == 4 and sum(s.n_frames for s in cat.series[0].slices) == 4


def test_rescale_is_applied_as_float32(tmp_path):
    write_series(tmp_path, n_slices=1, n_frames=2, RescaleSlope="2.5", RescaleIntercept="-10")
    (sl,) = scan([tmp_path], salt=SALT).series[0].slices
    data = load_slice(sl)
    assert data.dtype == np.float32
    assert np.array_equal(data[:, 0, 0], np.array([0, 1]) * 2.5 - 10)


def test_slice_location_fallback(tmp_path):
    write_series(tmp_path, n_slices=3, n_frames=2, ImagePositionPatient=None, ImageOrientationPatient=None,
                 per_slice=lambda s: dict(SliceLocation=f"{20.0 - 6 * s}"))
    cat = scan([tmp_path], salt=SALT)
    (se,) = cat.series
    assert se.position_source == "SliceLocation" and se.normal is None
    assert [s.position_mm for s in se.slices] == [8.0, 14.0, 20.0]
    assert [frame_ids(load_slice(s))[0] for s in se.slices] == [200, 100, 0]
    assert any("SliceLocation" in w and se.key in w for w in cat.warnings)


def test_no_geometry_at_all_is_an_inconsistent_series(tmp_path):
    write_series(tmp_path, n_slices=2, n_frames=2, ImagePositionPatient=None)
    with pytest.raises(NoInputError, match="inconsistent-series"):
        scan([tmp_path], salt=SALT)


@pytest.mark.parametrize(
    "attrs,source,times",
    [
        # TriggerTime absent: AcquisitionTime orders, reported relative to the earliest frame.
        (dict(TriggerTime=None), "AcquisitionTime", True),
        # Trigger times all equal (ungated) and acquisition times equal: InstanceNumber.
        (dict(TriggerTime="0", AcquisitionTime="120000"), "InstanceNumber", False),
    ],
)
def test_time_ordering_fallbacks_are_warned(tmp_path, attrs, source, times):
    write_series(tmp_path, n_slices=2, n_frames=4, **attrs)
    cat = scan([tmp_path], salt=SALT)
    (se,) = cat.series
    assert se.time_source == source
    assert any(source in w and se.key in w for w in cat.warnings)
    for s, sl in enumerate(se.slices):
        if times:
            assert sl.times_ms == pytest.approx([1000.0 * t + 10.0 * s for t in range(4)])
        else:
            assert sl.times_ms is None
        # write_series numbers instances backwards, so InstanceNumber order reverses time.
        expected = [100 * s + t for t in range(4)]
        assert frame_ids(load_slice(sl)) == (expected if times else expected[::-1])


def test_acquisition_time_across_midnight_without_dates(tmp_path):
    clock = ["235959.0", "000000.5", "000001.0"]
    write_series(tmp_path, n_slices=1, n_frames=3, TriggerTime=None,
                 per_frame=lambda s, t: dict(AcquisitionTime=clock[t]))
    (sl,) = scan([tmp_path], salt=SALT).series[0].slices
    assert sl.times_ms == pytest.approx([0.0, 1500.0, 2000.0])


@pytest.mark.parametrize("jitter,n_slices", [(0.4 * POSITION_TOL_MM, 2), (5 * POSITION_TOL_MM, 4)])
def test_position_tolerance(tmp_path, jitter, n_slices):
    n = np.array([-0.6, 0.8, 0.0])
    write_series(tmp_path, n_slices=2, n_frames=2,
                 per_frame=lambda s, t: dict(ImagePositionPatient=list(np.array(slice_position(s)) + t * jitter * n)))
    assert len(scan([tmp_path], salt=SALT).series[0].slices) == n_slices


def test_slices_of_different_size_and_frame_count_stay_separate(tmp_path):
    write_series(tmp_path / "a", n_slices=1, n_frames=3, shape=(37, 31))
    write_series(tmp_path / "b", n_slices=2, n_frames=2, shape=(33, 29),
                 per_slice=lambda s: dict(ImagePositionPatient=slice_position(s + 1)))
    cat = scan([tmp_path], salt=SALT)
    shapes = [(s.shape, s.n_frames) for s in cat.series[0].slices]
    assert shapes == [((37, 31), 3), ((33, 29), 2), ((33, 29), 2)]
    assert [load_slice(s).shape for s in cat.series[0].slices] == [(3, 37, 31), (2, 33, 29), (2, 33, 29)]
    assert any("different frame counts" in w for w in cat.warnings)
    assert any("different matrix sizes" in w for w in cat.warnings)


def test_frames_of_one_slice_with_different_sizes_refuse_the_series(tmp_path):
    write_series(tmp_path / "bad", n_slices=2, n_frames=2,
                 per_frame=lambda s, t: dict(shape=(37, 31) if t == 0 else (36, 31)))
    write_series(tmp_path / "good", n_slices=1, n_frames=2, SeriesInstanceUID="1.2.826.0.1.3680043.9.1111.3")
    cat = scan([tmp_path], salt=SALT)
    assert len(cat.series) == 1
    (skip,) = cat.skipped
    assert skip.category == "inconsistent-series" and skip.path == str(tmp_path / "bad")
    assert "37x31" in skip.reason and "36x31" in skip.reason
    with pytest.raises(DicomError, match="--on-error skip") as e:
        scan([tmp_path], salt=SALT, on_error="fail", show_paths=True)
    assert str(tmp_path / "bad") in str(e.value)


def test_mixed_orientations_refuse_the_series(tmp_path):
    write_series(tmp_path, n_slices=2, n_frames=1,
                 per_slice=lambda s: dict(ImageOrientationPatient=IOP_TILTED if s else [1, 0, 0, 0, 1, 0]))
    with pytest.raises(NoInputError, match="orientation"):
        scan([tmp_path], salt=SALT)


def test_duplicate_instances_are_counted_once(tmp_path):
    paths = write_series(tmp_path / "a", n_slices=1, n_frames=3)
    shutil.copy(paths[0], tmp_path / "copy.dcm")
    cat = scan([tmp_path], salt=SALT)
    assert cat.n_files == 4 and cat.series[0].slices[0].n_frames == 3
    assert any("duplicate" in w for w in cat.warnings)


def test_keys_are_deterministic_and_salted(tmp_path):
    write_series(tmp_path, n_slices=2, n_frames=2)
    a, b = scan([tmp_path], salt=SALT), scan([tmp_path], salt=SALT)
    c = scan([tmp_path], salt=b"another salt")
    assert a == b
    assert a.series[0].key != c.series[0].key and a.series[0].patient_key != c.series[0].patient_key


def test_phase_images_are_skipped_as_non_image(tmp_path):
    write_series(tmp_path / "mag", n_slices=1, n_frames=2)
    write_series(tmp_path / "phase", n_slices=1, n_frames=2, SeriesInstanceUID="1.2.826.0.1.3680043.9.1111.4",
                 ImageType=["ORIGINAL", "PRIMARY", "P", "ND"])
    cat = scan([tmp_path], salt=SALT, on_error="fail")
    assert len(cat.series) == 1
    assert [s.category for s in cat.skipped] == ["non-image"] * 2
    assert all("PHASE" in s.reason for s in cat.skipped)


# ----------------------------------------------------------------------------- bad inputs


def copy_testdata(name: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(get_testdata_file(name), dest / name))


def test_non_dicom_and_non_image_files_are_skipped_and_counted(tmp_path, caplog):
    write_series(tmp_path / "series", n_slices=1, n_frames=2)
    other = tmp_path / "other"
    copy_testdata("test-SR.dcm", other)  # structured report
    copy_testdata("rtplan.dcm", other)
    copy_testdata("ExplVR_LitEndNoMeta.dcm", other)  # RT plan without file meta
    shutil.copy(Path(get_testdata_file("CT_small.dcm")).parent / "dicomdirtests" / "DICOMDIR", other / "DICOMDIR")
    (other / "notes.txt").write_text("not dicom")
    (other / "noise.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    (other / "empty").write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="smssynth.dicom"):
        cat = scan([tmp_path], salt=SALT, on_error="fail")  # never fatal, even under fail
    assert cat.n_files == 9 and len(cat.series) == 1
    cats = {Path(s.path).name: s.category for s in cat.skipped}
    assert cats == {"test-SR.dcm": "non-image", "rtplan.dcm": "non-image", "ExplVR_LitEndNoMeta.dcm": "non-image",
                    "DICOMDIR": "non-image", "notes.txt": "not-dicom", "noise.bin": "not-dicom",
                    "empty": "not-dicom"}
    assert all("\n" not in s.reason for s in cat.skipped)
    assert all(s.name in caplog.text and s.name.startswith("#") for s in cat.skipped)


def _truncate(src: Path, dest: Path, keep: int) -> Path:
    data = src.read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data[: keep if keep > 0 else len(data) + keep])
    return dest


def _no_meta_mr(dest: Path) -> Path:
    """A valid MR data set written bare: no preamble, no 'DICM', no file meta."""
    src = write_mr(dest.with_suffix(".tmp"), np.zeros((5, 4), np.int16))
    bare = Dataset()
    bare.update(pydicom.dcmread(src))
    src.unlink()
    bare.save_as(dest, implicit_vr=True, little_endian=True)
    return dest


J2K = Path(get_testdata_file("MR_small_jp2klossless.dcm"))
DAMAGED = {
    "MR_truncated.dcm": (lambda d: copy_testdata("MR_truncated.dcm", d), "truncated"),
    "header-only": (lambda d: _truncate(Path(get_testdata_file("MR_small.dcm")), d / "header-only", 1200),
                    "truncated"),
    "pixels-cut": (lambda d: _truncate(Path(get_testdata_file("MR_small.dcm")), d / "pixels-cut", -400), "truncated"),
    "j2k-cut": (lambda d: _truncate(J2K, d / "j2k-cut", J2K.read_bytes().rfind(b"\xfe\xff\xdd\xe0")),
                "sequence delimiter"),  # everything but the sequence delimiter
    "j2k-half": (lambda d: _truncate(J2K, d / "j2k-half", -1500),
                 "truncated"),
    "no-meta-mr": (lambda d: _no_meta_mr(d / "no-meta-mr"), "Part 10"),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_files_are_reported_by_name(tmp_path, name):
    make, needle = DAMAGED[name]
    bad = make(tmp_path / "in")
    write_series(tmp_path / "in" / "good", n_slices=1, n_frames=2)
    cat = scan([tmp_path / "in"], salt=SALT)
    (skip,) = cat.skipped
    assert skip.path == str(bad) and skip.category == "corrupt" and needle in skip.reason
    assert len(cat.series) == 1 and cat.series[0].slices[0].n_frames == 2  # the good series is intact
    with pytest.raises(DicomError) as e:
        scan([tmp_path / "in"], salt=SALT, on_error="fail")
    assert type(e.value) is DicomError
    assert str(skip) in str(e.value) and "--on-error skip" in str(e.value)
    assert bad.name not in str(e.value) and skip.name.startswith("#")  # masked by default
    with pytest.raises(DicomError) as e:
        scan([tmp_path / "in"], salt=SALT, on_error="fail", show_paths=True)
    assert str(bad) in str(e.value)


def test_only_damaged_files_means_no_input(tmp_path):
    copy_testdata("MR_truncated.dcm", tmp_path)
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(NoInputError) as e:
        scan([tmp_path], salt=SALT, show_paths=True)
    msg = str(e.value)
    assert str(tmp_path) in msg and "1 corrupt" in msg and "1 not-dicom" in msg and "MR_truncated.dcm" in msg


def test_missing_input_is_named(tmp_path):
    with pytest.raises(NoInputError, match="nope"):
        scan([tmp_path / "nope"], salt=SALT, show_paths=True)
    with pytest.raises(NoInputError, match="input not found: #") as e:
        scan([tmp_path / "nope"], salt=SALT)
    assert "nope" not in str(e.value)
    with pytest.raises(NoInputError):
        scan([], salt=SALT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoInputError, match="no files"):
        scan([tmp_path / "empty"], salt=SALT)


def test_bad_on_error_value(tmp_path):
    with pytest.raises(ConfigError, match="--on-error"):
        scan([tmp_path], salt=SALT, on_error="ignore")


def test_file_damaged_after_scan_fails_loudly(tmp_path):
    paths = write_series(tmp_path, n_slices=1, n_frames=2)
    (sl,) = scan([tmp_path], salt=SALT, show_paths=True).series[0].slices
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-200])
    with pytest.raises(DicomError, match=str(paths[1].name)):
        load_slice(sl)
    paths[1].unlink()
    with pytest.raises(DicomError, match=str(paths[1].name)):
        load_slice(sl)


# ----------------------------------------------------------------------------- decoders


@pytest.fixture
def no_j2k_decoder(monkeypatch):
    """Make JPEG 2000 look as it does when pylibjpeg-openjpeg is not installed."""
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("numpy", "pylibjpeg", "pylibjpeg-openjpeg")})
    with pytest.raises(RuntimeError, match="missing dependencies"):  # pydicom's own report
        pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm")).pixel_array


def _assert_names_decoder(msg: str):
    assert "JPEG 2000" in msg and str(JPEG2000Lossless) in msg
    assert 'pip install "smssynth[decoders]"' in msg and "pylibjpeg-openjpeg" in msg


def test_missing_decoder_in_scan(tmp_path, no_j2k_decoder):
    src = copy_testdata("MR_small_jp2klossless.dcm", tmp_path / "in")
    write_series(tmp_path / "in" / "good", n_slices=1, n_frames=1)
    (skip,) = scan([tmp_path / "in"], salt=SALT).skipped
    assert skip.category == "unsupported" and skip.path == str(src)
    _assert_names_decoder(skip.reason)
    with pytest.raises(MissingDecoderError) as e:
        scan([tmp_path / "in"], salt=SALT, on_error="fail", show_paths=True)
    _assert_names_decoder(str(e.value))
    assert isinstance(e.value, ImportError) and str(src) in str(e.value)


def test_missing_decoder_in_load_slice(tmp_path, monkeypatch):
    src = copy_testdata("MR_small_jp2klossless.dcm", tmp_path)
    (sl,) = scan([src], salt=SALT).series[0].slices
    reference = load_slice(sl)
    expected = pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array
    assert np.array_equal(reference[0], expected)

    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("numpy", "pylibjpeg", "pylibjpeg-openjpeg")})
    with pytest.raises(MissingDecoderError) as e:
        load_slice(sl)
    _assert_names_decoder(str(e.value))
    monkeypatch.undo()

    # A decoder that reports itself available but then fails for lack of a dependency.
    def missing(*args, **kwargs):
        raise RuntimeError("Unable to decompress 'JPEG 2000 Image Compression (Lossless Only)' pixel data "
                           "because all plugins are missing dependencies:\n\tpylibjpeg - requires pylibjpeg")

    monkeypatch.setattr(decoder, "as_array", missing)
    with pytest.raises(MissingDecoderError) as e:
        load_slice(sl)
    _assert_names_decoder(str(e.value))


def test_corrupt_codestream_is_a_dicom_error(tmp_path):
    src = copy_testdata("MR_small_jp2klossless.dcm", tmp_path)
    data = bytearray(src.read_bytes())
    data[-900:-400] = bytes(500)  # garble the codestream, keep the fragment structure
    src.write_bytes(bytes(data))
    (sl,) = scan([src], salt=SALT, show_paths=True).series[0].slices
    try:
        out = load_slice(sl)
    except DicomError as e:
        assert str(src) in str(e) and "--on-error skip" in str(e)
    else:  # some decoders decode garbage without complaint: then it must at least be whole
        assert out.shape == (1, 64, 64)


# ----------------------------------------------------------------------------- privacy

CANARIES = dict(
    PatientName="CANARYNAME^QX", PatientID="CANARYPID77", PatientBirthDate="19451117",
    StudyDate="19990228", SeriesDate="19990228", AcquisitionDate="19990228", ContentDate="19990228",
    InstitutionName="CANARY INSTITUTE", ReferringPhysicianName="CANARYDOC^ZZ", AccessionNumber="CANARYACC5",
    StudyID="CANARYSTUDY", StationName="CANARYSTATION", DeviceSerialNumber="CANARYSERIAL",
    StudyInstanceUID="1.2.826.0.1.3680043.9.7777.1", SeriesInstanceUID="1.2.826.0.1.3680043.9.7777.2",
    FrameOfReferenceUID="1.2.826.0.1.3680043.9.7777.3",
)


def test_no_identifier_reaches_the_catalog_logs_or_errors(tmp_path, caplog):
    paths = write_series(tmp_path / "ok", n_slices=2, n_frames=3, **CANARIES)
    # an invalid UID makes pydicom warn (quoting it) while reading: that must not reach our logs
    bad_uid = "1.2.826.0.1.3680043.9.7777.04"
    write_series(tmp_path / "odd", n_slices=1, n_frames=2, **{**CANARIES, "SeriesInstanceUID": bad_uid},
                 per_frame=lambda s, t: dict(shape=(37, 31) if t else (30, 31)))
    copy_testdata("MR_truncated.dcm", tmp_path / "bad")
    sop_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    caplog.clear()  # pydicom warned about the invalid UID while *writing* it
    texts = []
    with caplog.at_level(logging.DEBUG):
        cat = scan([tmp_path], salt=SALT)
        texts += [repr(cat), str(cat)]
        for s in cat.series[0].slices:
            load_slice(s)
        with pytest.raises(DicomError) as e:
            scan([tmp_path], salt=SALT, on_error="fail")
        texts.append(str(e.value))
        with pytest.raises(NoInputError) as e:
            scan([tmp_path / "bad"], salt=SALT)
        texts.append(str(e.value))
    texts.append(caplog.text)
    assert len(cat.series) == 1 and len(cat.skipped) == 2 and "se-" in caplog.text
    needles = set(CANARIES.values()) | sop_uids | {bad_uid, "CANARY", "1945-11-17", "1999-02-28"}
    for needle in needles:
        for text in texts:
            assert needle not in text, needle


# ----------------------------------------------------------------------------- real data


SUNNYBROOK = {"SCD0000101": (12, (224, 224)), "SCD0000201": (13, (224, 224)), "SCD0000301": (10, (256, 213))}  # 192 phase steps at 90 % phase FOV on a square image


@pytest.mark.shared_data
@pytest.mark.parametrize("patient", sorted(SUNNYBROOK))
def test_sunnybrook(patient):
    n_slices, acq = SUNNYBROOK[patient]
    cat = scan([shared("sunnybrook-cine", patient)], salt=SALT)
    assert not cat.skipped and not cat.warnings and len(cat.series) == 1
    (se,) = cat.series
    assert se.time_source == "TriggerTime" and se.position_source == "ImagePositionPatient"
    assert len(se.slices) == n_slices
    positions = [s.position_mm for s in se.slices]
    assert all(b > a for a, b in zip(positions, positions[1:]))
    firsts = set()
    for sl in se.slices:
        assert sl.n_frames == 20 and sl.shape == (256, 256) and sl.acquisition_matrix == acq
        assert all(b > a for a, b in zip(sl.times_ms, sl.times_ms[1:]))
        firsts.add(sl.times_ms[0])
    assert len(firsts) > 1 or patient == "SCD0000301"  # trigger times differ between slices
    data = load_slice(se.slices[n_slices // 2])
    assert data.shape == (20, 256, 256) and data.dtype == np.float32 and data.max() > 100


@pytest.mark.shared_data
def test_sunnybrook_invalid_uids_do_not_leak(caplog):
    with caplog.at_level(logging.DEBUG):
        scan([shared("sunnybrook-cine", "SCD0000101")], salt=SALT)
    assert "2.16.124.113543" not in caplog.text  # pydicom warns about Sunnybrook's invalid UIDs


@pytest.mark.shared_data
def test_ge_perfusion():
    root = shared("fpp-ge", "series")
    cat = scan([root], salt=SALT)
    (se,) = cat.series
    (sl,) = se.slices
    assert sl.n_frames == 79 and sl.shape == (256, 256)
    # InstanceNumber runs 2..80 over files I01..I79; trigger times order them the same way.
    assert [Path(f.path).name for f in sl.frames] == [f"I{i:02d}" for i in range(1, 80)]
    assert se.time_source == "TriggerTime" and all(b > a for a, b in zip(sl.times_ms, sl.times_ms[1:]))
    # AcquisitionMatrix [0, 128, 96, 0], phase ROW: 128 frequency samples down the columns,
    # 96 phase steps along the rows at PercentPhaseFieldOfView 75 on a square 256x256 image:
    # the acquired samples span 96 / 0.75 = 128 points of the stored k-space grid.
    assert sl.acquisition_matrix == (128, 128)
    assert sl.pixel_spacing_mm == pytest.approx((1.406246185, 1.40622413)) and sl.slice_thickness_mm == 8.0
    data = load_slice(sl)
    assert data.shape == (79, 256, 256) and data.dtype == np.float32


TS_FILES = [f"{i}.dcm" for i in range(1, 10)]
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
         "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}


@pytest.fixture(scope="module")
def ts_reference():
    ref = shared("dicom-edge", "transfer-syntaxes", "In", "1.dcm")
    return load_slice(scan([ref], salt=SALT).series[0].slices[0])


@pytest.mark.shared_data
@pytest.mark.parametrize("name", TS_FILES)
def test_transfer_syntaxes_decode_to_the_same_image(name, ts_reference):
    path = shared("dicom-edge", "transfer-syntaxes", "In", name)
    ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    (sl,) = scan([path], salt=SALT).series[0].slices
    data = load_slice(sl)
    assert data.shape == (1, 384, 384) and data.dtype == np.float32
    if ts not in LOSSY:
        assert np.array_equal(data, ts_reference), ts.name
    else:  # none of the 9 is lossy today; keep a bound should one be added
        assert np.abs(data - ts_reference).mean() < 0.02 * ts_reference.mean(), ts.name


def _single_frame_copies(src_files: list[Path], dest: Path) -> None:
    """Rewrite every frame of Enhanced MR files as a classic single-frame MR image."""
    for path in src_files:
        ds = pydicom.dcmread(path)
        shared_fg = ds.SharedFunctionalGroupsSequence[0]
        pixels = ds.pixel_array
        for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
            def item(kw):
                return (fg if kw in fg else shared_fg)[kw][0]

            dt = item("FrameContentSequence").FrameAcquisitionDateTime
            pvt = item("PixelValueTransformationSequence")
            write_mr(
                dest / f"{path.stem}_{i}", pixels[i].astype(np.int16),
                StudyInstanceUID=ds.StudyInstanceUID, SeriesInstanceUID=ds.SeriesInstanceUID,
                InstanceNumber=int(ds.InstanceNumber) * 100 + i,
                ImagePositionPatient=item("PlanePositionSequence").ImagePositionPatient,
                ImageOrientationPatient=item("PlaneOrientationSequence").ImageOrientationPatient,
                PixelSpacing=item("PixelMeasuresSequence").PixelSpacing,
                SliceThickness=item("PixelMeasuresSequence").SliceThickness,
                AcquisitionDate=dt[:8], AcquisitionTime=dt[8:],
                RescaleSlope=pvt.RescaleSlope, RescaleIntercept=pvt.RescaleIntercept,
            )


@pytest.mark.shared_data
def test_enhanced_siemens_equals_single_frame_copies(tmp_path):
    files = sorted(shared("dicom-edge", "enhanced-multiframe", "In", "Siemens", "XA10").glob("*.dcm"))
    multi = scan(files, salt=SALT)
    (se,) = multi.series
    assert len(se.slices) == 6 and {s.n_frames for s in se.slices} == {4}
    assert se.time_source == "FrameAcquisitionDateTime" and any("FrameAcquisitionDateTime" in w for w in multi.warnings)
    for k, sl in enumerate(se.slices):
        # the 4 files are 4 time points: each slice takes frame k... of 6_1, 6_2, 6_3, 6_4 in turn
        assert [(Path(f.path).name, f.frame) for f in sl.frames] == [(f.name, k) for f in files]
        assert sl.shape == (64, 64) and sl.acquisition_matrix == (64, 64) and sl.pixel_spacing_mm == (3.375, 3.375)
    assert [s.position_mm for s in se.slices] == pytest.approx([-5.4036 + 2.4 * k for k in range(6)], abs=1e-3)

    _single_frame_copies(files, tmp_path)
    single = scan([tmp_path], salt=SALT)
    (se1,) = single.series
    assert se1.key == se.key and se1.time_source == "AcquisitionTime"
    assert [s.position_mm for s in se1.slices] == pytest.approx([s.position_mm for s in se.slices])
    for a, b in zip(se.slices, se1.slices):
        assert a.times_ms == pytest.approx(b.times_ms)
        assert np.array_equal(load_slice(a), load_slice(b))


@pytest.mark.shared_data
def test_enhanced_philips_field_map_frames_are_left_out():
    path = shared("dicom-edge", "enhanced-multiframe", "In", "Philips", "IM_0027_fMAP.dcm")
    cat = scan([path], salt=SALT)
    (se,) = cat.series
    assert any("32 real frame(s) of 64 left out" in w for w in cat.warnings)
    # 64 frames = 32 slice positions x (magnitude, B0 map): one magnitude frame per slice
    assert len(se.slices) == 32 and {s.n_frames for s in se.slices} == {1}
    assert np.allclose(np.diff([s.position_mm for s in se.slices]), 4.0, atol=1e-3)
    ds = pydicom.dcmread(path)
    raw = ds.pixel_array
    for k in (0, 17, 31):
        sl = se.slices[k]
        assert sl.frames == (FrameRef(str(path), k),)
        assert sl.acquisition_matrix == (64, 64) and sl.pixel_spacing_mm == (4.0, 4.0) and sl.slice_thickness_mm == 4.0
        pvt = ds.PerFrameFunctionalGroupsSequence[k].PixelValueTransformationSequence[0]
        expected = raw[k] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
        assert np.allclose(load_slice(sl)[0], expected, rtol=1e-6)


@pytest.mark.shared_data
def test_all_real_data_in_one_scan():
    root = shared()
    cat = scan([root], salt=SALT)
    # 3 Sunnybrook + perfusion + Siemens + Philips; the 9 transfer-syntax copies of one image
    # (same position, no time, all InstanceNumber 1) cannot be ordered in time: refused as a series
    assert len(cat.series) == 6
    assert {s.category for s in cat.skipped} == {"not-dicom", "inconsistent-series"}  # + .mat, .csv, contours, licences
    bad = [s for s in cat.skipped if s.category == "inconsistent-series"]
    assert len(bad) == 1 and "cannot be ordered in time" in bad[0].reason
    assert all(s.path.startswith(os.fspath(root)) for s in cat.skipped)


@pytest.mark.parametrize(
    "pct,rows,cols,spacing,expect",
    [
        (100, 256, 256, (1.0, 1.0), (128, 96)),  # full phase FOV: the raw matrix
        (75, 256, 256, (1.0, 1.0), (128, 128)),  # reduced phase FOV shown on a square image
        (75, 256, 192, (1.0, 1.0), (128, 96)),  # the stored image already has the reduced FOV
    ],
)
def test_acquisition_matrix_accounts_for_phase_fov(pct, rows, cols, spacing, expect):
    from pydicom.dataset import Dataset

    from synth.io.dicom.values import _acq_matrix_classic

    ds = Dataset()
    ds.AcquisitionMatrix = [0, 128, 96, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.PercentPhaseFieldOfView = pct
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = list(spacing)
    assert _acq_matrix_classic(ds) == expect


def test_decoder_panic_is_a_dicom_error(tmp_path):
    """A corrupt RLE stream makes the Rust decoder panic (a BaseException): still a DicomError."""
    pytest.importorskip("rle")
    from pydicom.uid import RLELossless

    from synth.io.phantom import PhantomSpec, write_phantom

    src = write_phantom(tmp_path / "p", PhantomSpec(n_slices=1, n_frames=1, acquired=(40, 40), matrix=(40, 40)))[0]
    ds = pydicom.dcmread(src)
    ds.compress(RLELossless)
    frag = bytearray(ds.PixelData)
    frag[84:len(frag) - 8] = b"\x81" * (len(frag) - 92)  # replicate runs that overflow the frame
    ds.PixelData = bytes(frag)
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    cat = scan([bad], salt=SALT, show_paths=True)
    with pytest.raises(DicomError, match="bad.dcm"):
        load_slice(cat.series[0].slices[0])


# ----------------------------------------------------------------------------- file names (issue 9.2)

PATIENT_DIR, PATIENT_FILE = "DOE_JOHN_12345", "IM_DOE_JOHN"
NAME_NEEDLES = ("DOE_JOHN", "JOHN", "DOE")  # letters outside [0-9a-f]: no hash or number can contain them


def write_patient_export(root: Path) -> dict[str, Path]:
    """An export named after the patient: a good series, a corrupt image and a non-DICOM file."""
    folder = root / PATIENT_DIR
    paths = write_series(folder / "CINE_DOE", n_slices=2, n_frames=3)
    for i, p in enumerate(sorted(paths)):
        p.rename(p.with_name(f"{PATIENT_FILE}_{i:04d}.dcm"))
    corrupt = copy_testdata("MR_truncated.dcm", folder)
    corrupt = corrupt.rename(folder / f"{PATIENT_FILE}.dcm")
    notes = folder / "DOE_JOHN_notes.txt"
    notes.write_text("not dicom")
    return {"folder": folder, "corrupt": corrupt, "notes": notes}


def assert_no_name(*texts: str) -> None:
    for text in texts:
        for needle in NAME_NEEDLES:
            assert needle not in text, (needle, text)


def test_file_names_never_reach_messages_unless_show_paths(tmp_path, caplog):
    ex = write_patient_export(tmp_path / "export")
    texts = []
    with caplog.at_level(logging.DEBUG):
        cat = scan([tmp_path / "export"], salt=SALT)
        texts += [str(s) for s in cat.skipped] + [s.name for s in cat.skipped] + cat.warnings
        for inputs in ([tmp_path / "export"], [ex["folder"]], [ex["corrupt"]]):  # every way in: fatal errors
            with pytest.raises((DicomError, NoInputError)) as e:
                scan(inputs, salt=SALT, on_error="fail")
            texts.append(str(e.value))
        with pytest.raises(NoInputError) as e:
            scan([ex["folder"] / "DOE_JOHN_missing"], salt=SALT)
        texts.append(str(e.value))
        # a file damaged after the scan: load_slice names it as the scan did
        se = cat.series[0]
        victim = Path(se.slices[0].frames[1].path)
        victim.write_bytes(victim.read_bytes()[:-100])
        with pytest.raises(DicomError) as e:
            load_slice(se.slices[0])
        texts.append(str(e.value))
    texts.append(caplog.text)
    assert {s.category for s in cat.skipped} == {"corrupt", "not-dicom"}
    assert all(s.name.startswith("#") and s.name.count("/") == 2 for s in cat.skipped)  # export/patient/file
    by_cat = {s.category: s.name for s in cat.skipped}
    assert by_cat["corrupt"].endswith(".dcm") and by_cat["not-dicom"].endswith(".txt")  # extensions kept
    assert se.slices[0].frames[1].name in texts[-2]  # the masked name, so the user can still match it up
    assert_no_name(*texts)

    shown = scan([tmp_path / "export"], salt=SALT, show_paths=True)
    assert {s.name for s in shown.skipped} == {str(ex["corrupt"]), str(ex["notes"]), str(victim)}
    with pytest.raises(DicomError, match=f"{PATIENT_FILE}.dcm"):
        scan([tmp_path / "export"], salt=SALT, on_error="fail", show_paths=True)


def test_masked_names_are_stable_and_salted(tmp_path):
    ex = write_patient_export(tmp_path / "export")
    a = {s.path: s.name for s in scan([tmp_path / "export"], salt=SALT).skipped}
    b = {s.path: s.name for s in scan([tmp_path / "export"], salt=SALT).skipped}
    c = {s.path: s.name for s in scan([tmp_path / "export"], salt=b"other").skipped}
    assert a == b and a[str(ex["corrupt"])] != c[str(ex["corrupt"])]
    folder = a[str(ex["corrupt"])].rsplit("/", 1)[0]
    assert folder.count("#") == 2 and a[str(ex["notes"])].startswith(folder + "/")  # one folder, one hash


# ----------------------------------------------------------------------------- burned-in (issue 9.3)

BURNED_IN = {
    "annotation-yes": dict(BurnedInAnnotation="YES"),
    "screen-shot": dict(ImageType=["DERIVED", "SECONDARY", "SCREEN SHOT"]),
    "sc-value": dict(ImageType=["DERIVED", "SECONDARY", "OTHER", "SC"]),
    "sc-sop-class": dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.7", Modality="OT"),
}
KEPT = {
    "annotation-no": dict(BurnedInAnnotation="NO"),
    "reformat": dict(ImageType=["DERIVED", "SECONDARY", "MPR"]),  # a legitimate derived series
    "derived-secondary": dict(ImageType=["DERIVED", "SECONDARY"]),
    "screen-word-but-primary": dict(ImageType=["ORIGINAL", "PRIMARY", "M", "SCREEN SHOT"]),
}


@pytest.mark.parametrize("case", list(BURNED_IN))
def test_burned_in_images_are_skipped_or_refused(tmp_path, case):
    write_series(tmp_path / "good", n_slices=1, n_frames=2)
    (bad,) = write_series(tmp_path / "shot", n_slices=1, n_frames=1, SeriesInstanceUID="1.2.826.0.1.3680043.9.1111.9",
                          **BURNED_IN[case])
    cat = scan([tmp_path], salt=SALT)
    (skip,) = cat.skipped
    assert skip.category == "burned-in" and skip.path == str(bad) and "identifiers" in skip.reason
    assert len(cat.series) == 1 and cat.series[0].slices[0].n_frames == 2
    with pytest.raises(DicomError, match="never used") as e:
        scan([tmp_path], salt=SALT, on_error="fail")
    assert skip.name in str(e.value) and "--on-error skip" in str(e.value)


@pytest.mark.parametrize("case", list(KEPT))
def test_ordinary_derived_images_are_kept(tmp_path, case):
    write_series(tmp_path, n_slices=1, n_frames=2, **KEPT[case])
    cat = scan([tmp_path], salt=SALT, on_error="fail")
    assert not cat.skipped and cat.series[0].slices[0].n_frames == 2


def test_pydicom_deflated_secondary_capture_is_burned_in_not_truncated(tmp_path):
    copy_testdata("image_dfl.dcm", tmp_path)  # a valid deflated file, Secondary Capture
    write_series(tmp_path / "good", n_slices=1, n_frames=1)
    (skip,) = scan([tmp_path], salt=SALT).skipped
    assert skip.category == "burned-in" and "Secondary Capture" in skip.reason


# ----------------------------------------------------------------------------- deflated (issue 9.5)


def _deflated_copy(src: Path, dest: Path) -> Path:
    """``src`` re-saved in Deflated Explicit VR Little Endian (pydicom deflates on writing)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dest.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dest, enforce_file_format=True)
    return dest


def _split_deflated(path: Path) -> tuple[bytes, bytes]:
    """(preamble + file meta bytes, inflated data set bytes) of a deflated file."""
    import io
    import zlib

    from pydicom.filereader import _read_file_meta_info, read_preamble

    raw = path.read_bytes()
    fp = io.BytesIO(raw)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return raw[: fp.tell()], zlib.decompress(raw[fp.tell():], -15)


def _deflate_bomb(template: Path, dest: Path, *, extra: int, pixel_length: int | None = None) -> Path:
    """A valid deflated file whose data set is followed by ``extra`` zero bytes of trailing
    padding (FFFC,FFFC) (or whose Pixel Data claims ``pixel_length`` bytes): a few hundred kB that
    inflate to ``extra`` bytes more than the header implies.  Built from flushed copies of one
    compressed 16 MiB block of zeros, so making it takes milliseconds."""
    import struct
    import zlib

    meta, dataset = _split_deflated(template)
    if pixel_length is not None:
        at = dataset.rfind(b"\xe0\x7f\x10\x00OW\x00\x00")
        dataset = dataset[: at + 8] + struct.pack("<I", pixel_length)
        tail = pixel_length
    else:
        dataset += struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, extra)
        tail = extra
    block = 16 << 20
    assert tail % block == 0
    head = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = head.compress(dataset) + head.flush(zlib.Z_FULL_FLUSH)
    body += (zeros.compress(bytes(block)) + zeros.flush(zlib.Z_FULL_FLUSH)) * (tail // block)
    body += zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # the final (empty) block
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(meta + body)
    return dest


def test_deflated_mr_is_read_like_the_original(tmp_path):
    (src,) = write_series(tmp_path / "plain", n_slices=1, n_frames=1)
    dfl = _deflated_copy(src, tmp_path / "dfl" / "img.dcm")
    assert pydicom.dcmread(dfl).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1.99"
    cat = scan([dfl], salt=SALT, on_error="fail")
    (sl,) = cat.series[0].slices
    plain = scan([src], salt=SALT).series[0].slices[0]
    assert np.array_equal(load_slice(sl), load_slice(plain))
    odd = _deflated_copy(get_testdata_file("MR_small.dcm"), tmp_path / "small" / "mr.dcm")  # 64x64 real MR
    (sl,) = scan([odd], salt=SALT, on_error="fail").series[0].slices
    assert np.array_equal(load_slice(sl)[0], pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array)


@pytest.mark.parametrize("kind", ["trailing", "pixel-length"])
def test_deflate_bomb_is_refused_before_inflating(tmp_path, kind):
    import time

    (src,) = write_series(tmp_path / "plain", n_slices=1, n_frames=1)
    template = _deflated_copy(src, tmp_path / "t.dcm")
    one_gib = 64 * (16 << 20)
    bomb = _deflate_bomb(template, tmp_path / "in" / "bomb.dcm", extra=one_gib,
                         pixel_length=one_gib if kind == "pixel-length" else None)
    assert bomb.stat().st_size < 2 << 20  # < 2 MB on disk, 1 GiB inflated
    write_series(tmp_path / "in" / "good", n_slices=1, n_frames=2)
    t0 = time.perf_counter()
    cat = scan([tmp_path / "in"], salt=SALT)
    (skip,) = cat.skipped
    assert time.perf_counter() - t0 < 5  # inflating the whole GiB alone takes longer on this machine
    assert skip.category == "corrupt" and "inflates to more than" in skip.reason and "header" in skip.reason
    with pytest.raises(DicomError, match="deflate bomb") as e:
        scan([tmp_path / "in"], salt=SALT, on_error="fail")
    assert skip.name in str(e.value) and "bomb" not in skip.name


def test_deflated_file_turned_into_a_bomb_after_the_scan_fails_in_load(tmp_path):
    (src,) = write_series(tmp_path / "plain", n_slices=1, n_frames=1)
    dfl = _deflated_copy(src, tmp_path / "in" / "img.dcm")
    (sl,) = scan([dfl], salt=SALT).series[0].slices
    _deflate_bomb(_deflated_copy(src, tmp_path / "t.dcm"), dfl, extra=16 * (16 << 20))
    with pytest.raises(DicomError, match="inflates to more than") as e:
        load_slice(sl)
    assert sl.frames[0].name in str(e.value) and "img" not in str(e.value)


def test_damaged_deflated_streams_are_corrupt(tmp_path):
    (src,) = write_series(tmp_path / "plain", n_slices=1, n_frames=1)
    dfl = _deflated_copy(src, tmp_path / "t.dcm")
    data = dfl.read_bytes()
    _truncate(dfl, tmp_path / "in" / "cut.dcm", -40)
    junk = bytearray(data)
    junk[-200:-100] = bytes(range(100))
    (tmp_path / "in" / "junk.dcm").write_bytes(bytes(junk))
    write_series(tmp_path / "in" / "good", n_slices=1, n_frames=1)
    cat = scan([tmp_path / "in"], salt=SALT, show_paths=True)
    assert {Path(s.path).name: s.category for s in cat.skipped} == {"cut.dcm": "corrupt", "junk.dcm": "corrupt"}


# ----------------------------------------------------------------------------- geometry and pixel length (9.8)

GEOMETRY = {
    "missing": (dict(ImagePositionPatient=None), "ImagePositionPatient missing"),
    "two-values": (dict(ImagePositionPatient=[1.0, 2.0]), "ImagePositionPatient malformed (2 values"),
    # written as 1.25\\2.5\\3.75, then patched to 1.25\\2.x\\3.75 (pydicom refuses to write it)
    "not-numbers": (dict(ImagePositionPatient=[1.25, 2.5, 3.75]), "ImagePositionPatient malformed (3 values"),
    "orientation-flat": (dict(ImageOrientationPatient=[1, 0, 0, 1, 0, 0]), "ImageOrientationPatient malformed"),
}


@pytest.mark.parametrize("case", list(GEOMETRY))
def test_missing_or_malformed_position_is_fatal_under_fail(tmp_path, case, caplog):
    attrs, needle = GEOMETRY[case]
    def per_frame(s, t):
        if (s, t) == (1, 1):  # one image of one slice: the whole series would fall back
            return dict(attrs, SliceLocation=f"{8.0 * s}")
        return dict(SliceLocation=f"{8.0 * s}")

    paths = write_series(tmp_path, n_slices=2, n_frames=2, per_frame=per_frame)
    broken = paths[3]
    if case == "not-numbers":
        data = broken.read_bytes()
        assert data.count(b"2.5\\3.75") == 1
        broken.write_bytes(data.replace(b"2.5\\3.75", b"2.x\\3.75"))
    with pytest.raises(DicomError) as e:
        scan([tmp_path], salt=SALT, on_error="fail")
    msg = str(e.value)
    assert needle in msg and "SliceLocation" in msg and "--on-error skip" in msg and "Traceback" not in msg
    named = scan([tmp_path], salt=SALT)
    (frame,) = [f for s in named.series[0].slices for f in s.frames if f.path == str(broken)]
    assert msg.startswith(frame.name + ":")  # names the (masked) file

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="smssynth.dicom"):
        cat = scan([tmp_path], salt=SALT)  # skip: the documented fallback, counted and warned once
    (se,) = cat.series
    assert se.position_source == "SliceLocation" and cat.fallbacks == {"SliceLocation": 1}
    (warning,) = [w for w in cat.warnings if "SliceLocation" in w]
    assert se.key in warning and "1 of 4 image(s)" in warning and needle in warning
    assert caplog.text.count("separated by SliceLocation") == 1


def test_geometry_and_slice_location_both_missing_names_an_example(tmp_path):
    write_series(tmp_path, n_slices=2, n_frames=2, ImagePositionPatient=None)
    with pytest.raises(DicomError, match="ImagePositionPatient missing, SliceLocation missing"):
        scan([tmp_path], salt=SALT, on_error="fail")


def _with_pixel_bytes(path: Path, data: bytes) -> Path:
    ds = pydicom.dcmread(path)
    ds.PixelData = data
    ds.save_as(path)
    return path


@pytest.mark.parametrize("factor,category", [(3, "corrupt"), (1, None)])
def test_pixel_data_longer_than_the_header_says_is_corrupt(tmp_path, factor, category):
    (bad,) = write_series(tmp_path / "x", n_slices=1, n_frames=1, SeriesInstanceUID="1.2.826.0.1.3680043.9.1111.9")
    _with_pixel_bytes(bad, pydicom.dcmread(bad).PixelData * factor)
    write_series(tmp_path / "good", n_slices=1, n_frames=2)
    cat = scan([tmp_path], salt=SALT)
    if category is None:
        assert not cat.skipped and len(cat.series) == 2
        return
    (skip,) = cat.skipped
    assert skip.category == category and f"{37 * 31 * 2 * 3} bytes" in skip.reason and str(37 * 31 * 2) in skip.reason
    with pytest.raises(DicomError, match="header and the pixels disagree"):
        scan([tmp_path], salt=SALT, on_error="fail")


def test_odd_length_pixel_data_may_carry_one_padding_byte(tmp_path):
    """8-bit 37x31 = 1147 bytes: written padded to 1148 (DICOM's even length) - accepted; 1149 is not."""
    def eight_bit(path: Path, n: int) -> Path:
        ds = pydicom.dcmread(path)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.PixelData = bytes(range(256)) * 4 + bytes(n - 1024)
        ds.save_as(path)
        return path

    (ok,) = write_series(tmp_path / "ok", n_slices=1, n_frames=1)
    eight_bit(ok, 1147)
    assert len(pydicom.dcmread(ok).PixelData) == 1148  # pydicom pads on writing
    (sl,) = scan([ok], salt=SALT, on_error="fail").series[0].slices
    assert load_slice(sl).shape == (1, 37, 31)
    (bad,) = write_series(tmp_path / "bad", n_slices=1, n_frames=1)
    eight_bit(bad, 1150)
    with pytest.raises(DicomError, match="1150 bytes"):
        scan([bad], salt=SALT, on_error="fail")
