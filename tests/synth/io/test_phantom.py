"""The cardiac phantom: its images behave like the anatomy/physiology it claims, its DICOM like a scanner's."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from synth.errors import ConfigError
from synth.io.phantom import (
    LABELS,
    SIGNAL_SCALE,
    PhantomSpec,
    acquired_images,
    draw_snr,
    phantom_images,
    phantom_labels,
    write_phantom,
    zero_fill,
)
from synth.physics.fft import fft2c

# odd, unequal sizes catch axis mix-ups
CINE = PhantomSpec(kind="cine", n_slices=3, n_frames=10, acquired=(37, 31), matrix=(45, 40), seed=4)
PERF = PhantomSpec(kind="perfusion", n_slices=3, n_frames=30, acquired=(96, 84), matrix=(112, 112), seed=5)


@pytest.fixture(scope="module")
def perf():
    """PERF's images and labels, rendered once for the perfusion tests."""
    return phantom_images(PERF), phantom_labels(PERF)


def read_all(paths):
    return [pydicom.dcmread(p) for p in paths]  # no force: the files must be valid Part 10


def by_slice_frame(dss):
    """Group by position along the normal, order frames by trigger/acquisition time (never by name)."""
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    pos = {}
    for ds in dss:
        d = round(float(np.array(ds.ImagePositionPatient, dtype=float) @ normal), 2)
        pos.setdefault(d, []).append(ds)
    return normal, [sorted(pos[d], key=lambda ds: (str(ds.AcquisitionTime), float(ds.TriggerTime)))
                    for d in sorted(pos)]


def rows_cols_from_acquisition_matrix(ds):
    f_rows, f_cols, p_rows, p_cols = (int(v) for v in ds.AcquisitionMatrix)
    if ds.InPlanePhaseEncodingDirection == "ROW":
        return f_cols, p_rows  # frequency samples down the rows, phase lines across the columns
    return p_cols, f_rows


# -------------------------------------------------------------------------------------------- images


def test_shapes_dtypes_and_range():
    x, lab = phantom_images(CINE), phantom_labels(CINE)
    assert x.shape == lab.shape == (3, 10, 37, 31)
    assert x.dtype == np.float32 and lab.dtype == np.uint8
    assert x.min() >= 0 and 0.8 < x.max() < 1.2
    assert set(np.unique(lab)) <= set(LABELS.values())
    for name in ("fat", "lung", "liver", "lv_blood", "myocardium", "rv_blood"):
        assert (lab == LABELS[name]).any(), name
    # not piecewise flat: blood varies smoothly (bias field), soft edges give intermediate values
    blood = x[lab == LABELS["lv_blood"]]
    assert blood.std() > 0.005
    assert len(np.unique(np.round(x, 3))) > 200


def test_deterministic_and_seeded():
    a, b = phantom_images(CINE), phantom_images(CINE)
    np.testing.assert_array_equal(a, b)
    c = phantom_images(PhantomSpec(**{**CINE.to_dict(), "seed": 9}))
    assert np.abs(a - c).mean() > 0.01


def test_cine_motion_is_periodic_and_slices_shrink_to_apex():
    spec = PhantomSpec(kind="cine", n_slices=4, n_frames=16, seed=1)
    x, lab = phantom_images(spec), phantom_labels(spec)
    area = (lab == LABELS["lv_blood"]).sum(axis=(-2, -1))  # (S, T)
    for s in range(4):
        assert area[s, 0] == area[s].max() or area[s, 0] >= 0.95 * area[s].max()  # end-diastole first
        assert area[s].min() < 0.7 * area[s, 0]  # ejection
        assert 3 <= int(np.argmin(area[s])) <= 8  # end-systole about a third into the cycle
    assert (np.diff(area[:, 0]) < 0).all()  # base -> apex
    # one cycle: the last frame leads smoothly back to the first (no jump at the wrap)
    step = np.abs(np.diff(x, axis=1)).mean(axis=(0, 2, 3))
    wrap = np.abs(x[:, 0] - x[:, -1]).mean()
    assert wrap <= 1.5 * step.max()
    # the static anatomy does not move in cine (breath-hold)
    far = lab[:, 0] == LABELS["liver"]
    assert np.abs(x[:, 0] - x[:, 8])[far].max() < 0.05


def test_perfusion_first_pass_order(perf):
    x, lab = perf
    peaks = {}
    for name in ("rv_blood", "lv_blood", "myocardium"):
        curves = []
        for s in range(PERF.n_slices):
            roi = [ndimage.binary_erosion(lab[s, t] == LABELS[name], iterations=1) for t in range(PERF.n_frames)]
            curves.append([x[s, t][roi[t]].mean() for t in range(PERF.n_frames)])
        curve = np.mean(curves, axis=0)
        peaks[name] = (int(np.argmax(curve)), curve.max(), curve[0])
    rv, lv, myo = peaks["rv_blood"], peaks["lv_blood"], peaks["myocardium"]
    assert rv[0] < lv[0] < myo[0], peaks  # RV, then LV, then myocardium
    assert myo[1] < 0.7 * lv[1]  # myocardium enhances less
    assert lv[2] < 0.15 and lv[1] > 4 * lv[2]  # dark blood before contrast (saturation recovery)


def test_perfusion_defect_on_apical_slices(perf):
    x, lab = perf
    t = 11  # around the myocardial peak
    dip = []  # how far the darkest myocardium falls below the typical one
    for s in range(PERF.n_slices):
        roi = ndimage.binary_erosion(lab[s, t] == LABELS["myocardium"], iterations=1)
        v = x[s, t][roi]
        dip.append(np.percentile(v, 5) / np.median(v))
    # the apical half (slices 1, 2 of 3) has a hypo-enhancing subendocardial sector, the base none
    assert max(dip[1:]) < dip[0] - 0.08, dip


def test_perfusion_breathing_moves_the_heart(perf):
    lab = perf[1]
    cy = [np.nonzero(lab[0, t] == LABELS["lv_blood"])[0].mean() for t in range(PERF.n_frames)]
    assert np.ptp(cy) > 0.5  # pixels


@pytest.mark.parametrize(
    "change, needle",
    [({"matrix": (30, 45)}, "matrix"), ({"kind": "t1map"}, "kind"), ({"n_slices": 0}, "n_slices"),
     ({"acquired": (64,)}, "acquired"), ({"seed": -1}, "seed"), ({"snr": 0}, "snr"), ({"snr": "x"}, "snr"),
     ({"snr": float("inf")}, "snr")],
)
def test_spec_is_validated(change, needle):
    with pytest.raises(ConfigError, match=needle):
        PhantomSpec(**{**CINE.to_dict(), **change})


def test_zero_fill_is_inverted_by_the_acquired_crop():
    from synth.io.resolution import crop_kspace

    x = phantom_images(CINE)[0]
    up = zero_fill(x, CINE.matrix)
    assert up.shape == (10, 45, 40) and up.dtype == np.float32
    # crop_kspace keeps the orthonormal FFT's scaling (x sqrt(My*Mx / (Ny*Nx))), zero_fill undoes it
    (ny, nx), (my, mx) = CINE.acquired, CINE.matrix
    np.testing.assert_allclose(crop_kspace(up, CINE.acquired) * np.sqrt(ny * nx / (my * mx)), x, atol=1e-2)


def test_noise_is_complex_gaussian_at_the_acquired_resolution():
    clean = phantom_images(PERF)
    assert acquired_images(PERF) is not None and np.array_equal(acquired_images(PERF), clean)  # snr None
    spec = PhantomSpec(**{**PERF.to_dict(), "snr": 25.0})
    noisy = acquired_images(spec)
    assert noisy.dtype == np.complex64 and noisy.shape == clean.shape
    np.testing.assert_array_equal(noisy, acquired_images(spec))  # deterministic in the spec
    d = noisy - clean
    for part in (d.real, d.imag):  # sd 1/snr per part, zero mean, white (no neighbour correlation)
        assert abs(part.std() - 1 / 25) < 0.02 / 25 and abs(part.mean()) < 1e-3
        r = np.corrcoef(part[..., :-1].ravel(), part[..., 1:].ravel())[0, 1]
        assert abs(r) < 0.01
    assert abs(np.corrcoef(d.real.ravel(), d.imag.ravel())[0, 1]) < 0.01
    other = acquired_images(PhantomSpec(**{**PERF.to_dict(), "snr": 25.0, "seed": 6})) - phantom_images(
        PhantomSpec(**{**PERF.to_dict(), "seed": 6}))
    assert abs(np.corrcoef(d.real.ravel(), other.real.ravel())[0, 1]) < 0.01  # each patient its own noise


def test_noisy_background_is_rician():
    # air (label 0) far from the body: the magnitude of complex Gaussian noise, mean sigma*sqrt(pi/2)
    spec = PhantomSpec(**{**PERF.to_dict(), "snr": 20.0})
    air = phantom_labels(PERF) == LABELS["air"]
    mag = np.abs(acquired_images(spec))[air & (phantom_images(PERF) < 1e-4)]
    assert mag.size > 10_000
    assert mag.mean() == pytest.approx(np.sqrt(np.pi / 2) / 20, rel=0.02)


def test_draw_snr_is_per_seed_and_log_uniform():
    draws = np.array([draw_snr(s, 15, 60) for s in range(2000)])
    assert draws.min() >= 15 and draws.max() <= 60
    assert draw_snr(7, 15, 60) == draw_snr(7, 15, 60) and draw_snr(7, 15, 60) != draw_snr(8, 15, 60)
    # log-uniform: half below the geometric mean 30
    assert np.mean(draws < 30) == pytest.approx(0.5, abs=0.04)
    assert draw_snr(3, 40, 40) == 40.0
    with pytest.raises(ConfigError, match="snr"):
        draw_snr(0, 60, 15)


# -------------------------------------------------------------------------------------------- DICOM


@pytest.fixture(scope="module")
def cine_files(tmp_path_factory):
    paths = write_phantom(tmp_path_factory.mktemp("cine"), CINE)
    return paths, read_all(paths)


def test_files_are_mr_image_storage(cine_files):
    paths, dss = cine_files
    assert len(paths) == len(set(paths)) == 30 and all(p.suffix == ".dcm" for p in paths)
    assert {ds.SOPClassUID for ds in dss} == {pydicom.uid.MRImageStorage}
    assert {ds.file_meta.TransferSyntaxUID for ds in dss} == {pydicom.uid.ExplicitVRLittleEndian}
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in dss)
    assert len({ds.SOPInstanceUID for ds in dss}) == 30
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName",
               "StudyDate", "PatientBirthDate", "AccessionNumber", "InstitutionName", "ReferringPhysicianName"):
        values = {str(ds.data_element(kw).value) for ds in dss}
        assert len(values) == 1 and values != {""}, kw
    ds = dss[0]
    assert ds.Modality == "MR" and ds.Manufacturer == "smssynth phantom"
    assert (ds.Rows, ds.Columns) == CINE.matrix and ds.BitsAllocated == 16
    assert sorted(int(d.InstanceNumber) for d in dss) == list(range(1, 31))
    assert int(ds.CardiacNumberOfImages) == CINE.n_frames
    assert rows_cols_from_acquisition_matrix(ds) == CINE.acquired
    assert float(ds.RescaleSlope) != 1.0
    # file names carry no order
    names = [p.name for p in sorted(paths, key=lambda p: p.name)]
    by_instance = [p.name for _, p in sorted(zip([int(d.InstanceNumber) for d in dss], paths))]
    assert names != by_instance


def test_geometry_and_timing(cine_files):
    _, dss = cine_files
    normal, slices = by_slice_frame(dss)
    iop = np.array(dss[0].ImageOrientationPatient, dtype=float)
    np.testing.assert_allclose([iop[:3] @ iop[:3], iop[3:] @ iop[3:], iop[:3] @ iop[3:]], [1, 1, 0], atol=1e-5)
    assert max(abs(iop)) < 0.99  # oblique
    assert [len(s) for s in slices] == [CINE.n_frames] * CINE.n_slices
    ipp = np.array([np.array(s[0].ImagePositionPatient, dtype=float) for s in slices])
    steps = np.diff(ipp, axis=0)
    np.testing.assert_allclose(steps, np.outer(np.ones(len(steps)), normal) * CINE.slice_spacing_mm, atol=1e-3)
    assert float(dss[0].SpacingBetweenSlices) == CINE.slice_spacing_mm
    np.testing.assert_allclose(np.diff([float(s[0].SliceLocation) for s in slices]), CINE.slice_spacing_mm, atol=1e-3)
    for s in slices:
        assert len({tuple(d.ImagePositionPatient) for d in s}) == 1
        tt = [float(d.TriggerTime) for d in s]
        assert (np.diff(tt) > 0).all() and tt[-1] < float(s[0].NominalInterval)


def test_pixels_reproduce_the_phantom_after_rescale(cine_files):
    _, dss = cine_files
    _, slices = by_slice_frame(dss)
    stored = np.array([[d.pixel_array for d in s] for s in slices])
    assert stored.shape == (CINE.n_slices, CINE.n_frames, *CINE.matrix)
    slope, icpt = float(dss[0].RescaleSlope), float(dss[0].RescaleIntercept)
    physical = stored * slope + icpt
    expected = SIGNAL_SCALE * zero_fill(phantom_images(CINE), CINE.matrix)
    assert np.abs(physical - expected).max() <= slope / 2 + 1e-3 * SIGNAL_SCALE
    # the outer k-space (beyond the acquired matrix) of the stored images is ~empty
    k = np.abs(fft2c(physical)) ** 2
    my, mx = CINE.matrix
    ny, nx = CINE.acquired
    inner = np.zeros((my, mx), bool)
    inner[my // 2 - ny // 2 : my // 2 - ny // 2 + ny, mx // 2 - nx // 2 : mx // 2 - nx // 2 + nx] = True
    assert k[..., ~inner].sum() / k.sum() < 1e-4


def test_perfusion_files(tmp_path):
    spec = PhantomSpec(kind="perfusion", n_slices=3, n_frames=5, acquired=(40, 48), matrix=(48, 56), seed=2)
    paths = write_phantom(tmp_path, spec, extension="")
    dss = read_all(paths)
    assert all(p.suffix == "" for p in paths)
    ds = dss[0]
    assert ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
    assert ds.InPlanePhaseEncodingDirection == "COL" and rows_cols_from_acquisition_matrix(ds) == spec.acquired
    _, slices = by_slice_frame(dss)
    assert [len(s) for s in slices] == [5, 5, 5]
    delays = [float(s[0].TriggerTime) for s in slices]
    assert (np.diff(delays) > 0).all()  # slices read one after another within each beat
    for s in slices:
        assert len({float(d.TriggerTime) for d in s}) == 1  # one frame per beat, same delay
        assert [int(d.TemporalPositionIdentifier) for d in s] == [1, 2, 3, 4, 5]
        assert list(map(str, sorted(d.AcquisitionTime for d in s))) == [str(d.AcquisitionTime) for d in s]
    physical = np.array([[d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in s]
                         for s in slices])
    expected = SIGNAL_SCALE * zero_fill(phantom_images(spec), spec.matrix)
    assert np.abs(physical - expected).max() <= 0.5 * float(ds.RescaleSlope) + 1.0


def test_series_uid_of_a_noise_free_phantom_is_unchanged(tmp_path):
    """``snr`` came later; a noise-free phantom keeps the Series UID derived before it existed (the
    spec's repr without the field), so stores seeded from the series identity do not change."""
    from pydicom.uid import generate_uid

    spec = PhantomSpec(n_slices=1, n_frames=2, acquired=(24, 20), matrix=(32, 32), seed=3)
    before = repr(spec).replace(", snr=None", "")
    assert "snr" not in before
    ds = pydicom.dcmread(write_phantom(tmp_path / "a", spec, patient="P")[0])
    assert ds.SeriesInstanceUID == generate_uid(entropy_srcs=["smssynth-phantom", "3", "P", "series", before])
    noisy = pydicom.dcmread(write_phantom(tmp_path / "b", PhantomSpec(**{**spec.to_dict(), "snr": 20}),
                                          patient="P")[0])
    assert noisy.SeriesInstanceUID != ds.SeriesInstanceUID


def test_noisy_files_store_the_noisy_magnitude(tmp_path):
    spec = PhantomSpec(kind="perfusion", n_slices=2, n_frames=4, acquired=(40, 48), matrix=(48, 56), seed=2, snr=30)
    dss = read_all(write_phantom(tmp_path, spec))
    _, slices = by_slice_frame(dss)
    physical = np.array([[d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in s]
                         for s in slices])
    expected = SIGNAL_SCALE * zero_fill(acquired_images(spec), spec.matrix)
    assert np.abs(physical - expected).max() <= 0.5 * float(dss[0].RescaleSlope) + 1.0
    clean = SIGNAL_SCALE * zero_fill(phantom_images(spec), spec.matrix)
    assert np.abs(physical - clean).mean() > 0.3 * SIGNAL_SCALE / 30  # the noise is there


def test_extra_tags_are_planted(tmp_path):
    spec = PhantomSpec(n_slices=2, n_frames=2, acquired=(24, 20), matrix=(32, 32))
    extra = {"PatientName": "CANARY^NAME", "PatientID": "CANARY01", "StudyInstanceUID": "1.2.3.4",
             "InstitutionAddress": "CANARY ROAD", "AccessionNumber": None,
             "ImageComments": lambda s, t: f"slice {s} frame {t}"}
    dss = read_all(write_phantom(tmp_path, spec, extra_tags=extra))
    for ds in dss:
        assert ds.PatientName == "CANARY^NAME" and ds.PatientID == "CANARY01"
        assert ds.StudyInstanceUID == "1.2.3.4" and ds.InstitutionAddress == "CANARY ROAD"
        assert "AccessionNumber" not in ds
    assert {ds.ImageComments for ds in dss} == {"slice 0 frame 0", "slice 0 frame 1", "slice 1 frame 0",
                                                "slice 1 frame 1"}
    with pytest.raises(ConfigError, match="NotAKeyword"):
        write_phantom(tmp_path / "x", spec, extra_tags={"NotAKeyword": 1})


def test_patients_are_distinct_and_reproducible(tmp_path):
    spec = PhantomSpec(n_slices=2, n_frames=2, acquired=(24, 20), matrix=(32, 32))
    # two patients side by side in one folder: no file collides
    a = write_phantom(tmp_path / "both", spec, patient="P1")
    b = write_phantom(tmp_path / "both", spec, patient="P2")
    assert len(set(a) | set(b)) == 8 and len(list((tmp_path / "both").iterdir())) == 8
    again = write_phantom(tmp_path / "again", spec, patient="P1")
    da, db, dg = (pydicom.dcmread(p[0], stop_before_pixels=True) for p in (a, b, again))
    for kw in ("PatientID", "PatientName", "StudyInstanceUID", "SeriesInstanceUID"):
        assert da.data_element(kw).value != db.data_element(kw).value, kw
        assert da.data_element(kw).value == dg.data_element(kw).value, kw
    assert da.SOPInstanceUID == dg.SOPInstanceUID
    assert [p.name for p in a] == [p.name for p in again]
