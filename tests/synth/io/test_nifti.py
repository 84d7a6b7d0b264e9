"""NIfTI inputs: the same series, slices, frames and store targets as the DICOM they came from.

The tests convert the phantom's DICOM into NIfTI themselves, the way dcm2niix does (LPS -> RAS
affine, rows flipped), in several layouts, and compare what smssynth makes of both.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from synth.dataset.config import SimConfig
from synth.dataset.pipeline import dicom2kspace
from synth.dataset.store import Store
from synth.errors import ConfigError, NiftiError, NoInputError
from synth.io.dicom import load_slice, scan
from synth.io.nifti import parse_axes

SALT = b"nifti-tests"
CFG = dict(sms=2, coils=3, accel=2, acs=4, seed=4, resolution="dicom", phase="grating")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def dicom_slices(folder: Path):
    """[(images float32 (T, R, C), 4x4 RAS affine of the image flipped as dcm2niix stores it)]
    per slice, in slice order."""
    cat = scan([folder], salt=SALT)
    assert len(cat.series) == 1
    out = []
    for sl in cat.series[0].slices:
        ds = pydicom.dcmread(sl.frames[0].path, stop_before_pixels=True)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        r, c = iop[:3], iop[3:]
        dr, dc = (float(v) for v in ds.PixelSpacing)
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        rows = sl.shape[0]
        a = np.eye(4)
        a[:3, 0] = LPS_TO_RAS @ (r * dc)  # voxel i: along a row (increasing column)
        a[:3, 1] = LPS_TO_RAS @ (-c * dr)  # voxel j: rows flipped, as dcm2niix
        a[:3, 3] = LPS_TO_RAS @ (ipp + c * dr * (rows - 1))
        out.append((load_slice(sl), a))
    return out


def voxels(images: np.ndarray) -> np.ndarray:
    """(T, R, C) images -> (C, R, T) voxels (x, y flipped, t), the dcm2niix layout of one slice."""
    return np.ascontiguousarray(np.transpose(images[:, ::-1, :], (2, 1, 0)))


def save(data, affine, path: Path, *, time_ms: float | None = None, intent: int | None = None) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if time_ms is not None:
        zooms = list(img.header.get_zooms())
        zooms[3] = time_ms / 1000.0
        img.header.set_zooms(zooms)
        img.header.set_xyzt_units("mm", "sec")
    if intent is not None:
        img.header.set_intent(intent)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_4d(slices, path: Path, time_ms: float | None = 40.0) -> Path:
    """All slices in one x,y,z,t file (slice k at z = k)."""
    data = np.stack([voxels(img) for img, _ in slices], axis=2)  # (x, y, z, t)
    a = slices[0][1].copy()
    if len(slices) > 1:
        a[:3, 2] = slices[1][1][:3, 3] - slices[0][1][:3, 3]
    return save(data.astype(np.float32), a, path, time_ms=time_ms)


def convert(inputs, out, *, nifti_axes=None, **extra):
    return dicom2kspace(inputs, out, SimConfig(**{**CFG, **extra}), salt=SALT, nifti_axes=nifti_axes, threads=1)


def assert_same_targets(a: Path, b: Path):
    sa, sb = Store.open(a), Store.open(b)
    assert len(sa) == len(sb) > 0 and sa.complete().all() and sb.complete().all()
    for i in range(len(sa)):
        ea, eb = sa.example(i, ["target", "scale", "offsets"]), sb.example(i, ["target", "scale", "offsets"])
        np.testing.assert_allclose(ea["target"], eb["target"], rtol=0, atol=2e-7)
        np.testing.assert_allclose(ea["scale"], eb["scale"], rtol=1e-6)
        np.testing.assert_allclose(ea["offsets"], eb["offsets"], atol=1e-6)  # the affine is float32
        pa, pb = sa.provenance(i)["sources"], sb.provenance(i)["sources"]
        assert [s["position_mm"] for s in pa] == pytest.approx([s["position_mm"] for s in pb], abs=1e-3)
        assert [s["slice"] for s in pa] == [s["slice"] for s in pb]


def test_cine_4d_gz_gives_the_dicom_targets(phantom_cine, tmp_path):
    slices = dicom_slices(phantom_cine)
    nii = write_4d(slices, tmp_path / "DOE_JOHN_12345" / "DOE_JOHN_cine.nii.gz")
    s_dcm = convert([phantom_cine], tmp_path / "dcm.zarr")
    s_nii = convert([nii.parent], tmp_path / "nii.zarr")
    assert s_nii.n_series == 1 and s_nii.n_examples == s_dcm.n_examples == 6
    assert_same_targets(tmp_path / "dcm.zarr", tmp_path / "nii.zarr")
    # the series' slices, positions, spacing and frame times from the affine and pixdim[4]
    se_d, se_n = scan([phantom_cine], salt=SALT).series[0], scan([nii], salt=SALT).series[0]
    assert [s.position_mm for s in se_n.slices] == pytest.approx([s.position_mm for s in se_d.slices], abs=1e-4)
    assert se_n.slices[0].pixel_spacing_mm == pytest.approx(se_d.slices[0].pixel_spacing_mm)
    assert se_n.normal == pytest.approx(se_d.normal, abs=1e-6)
    assert se_n.slices[0].times_ms == pytest.approx([40.0 * t for t in range(8)])
    for a, b in zip(se_d.slices, se_n.slices):
        np.testing.assert_array_equal(load_slice(a), load_slice(b))
    # nothing of the file or folder names reaches the store
    text = "".join(p.read_text(errors="ignore") for p in (tmp_path / "nii.zarr").rglob("zarr.json"))
    assert "DOE" not in text and "12345" not in text and "nii" not in json.loads(
        (tmp_path / "nii.zarr" / "zarr.json").read_text())["attributes"]["inputs"]


def test_perfusion_one_file_per_slice(phantom_perfusion, tmp_path):
    """A perfusion set stored as one 3D (x, y, t) file per slice, marked as a time series, and the
    same as x,y,1,t 4D files: one series each, slices ordered by the affine, targets = DICOM's."""
    slices = dicom_slices(phantom_perfusion)
    order = [2, 0, 1]  # file names say nothing about the order
    for n, k in enumerate(order):
        img, a = slices[k]
        # int16 with scl_slope 0.5, as the DICOM (RescaleSlope 0.5): the reader applies the scaling
        f = save(np.rint(2 * voxels(img)).astype(np.int16), a, tmp_path / "p3d" / "PAT" / f"s{n}.nii", intent=2001)
        raw = bytearray(f.read_bytes())
        raw[112:120] = np.array([0.5, 0.0], "<f4").tobytes()  # scl_slope, scl_inter
        f.write_bytes(bytes(raw))
        save(voxels(img)[:, :, None, :].astype(np.float32), a, tmp_path / "p4d" / "PAT" / f"s{n}.nii.gz",
             time_ms=900.0)
    s_dcm = convert([phantom_perfusion], tmp_path / "dcm.zarr")
    for layout in ("p3d", "p4d"):
        s = convert([tmp_path / layout / "PAT"], tmp_path / f"{layout}.zarr")
        assert s.n_series == 1 and s.n_examples == s_dcm.n_examples == 3 and not s.skipped_inputs
        assert_same_targets(tmp_path / "dcm.zarr", tmp_path / f"{layout}.zarr")
    se = scan([tmp_path / "p3d" / "PAT"], salt=SALT).series[0]
    assert se.time_source.endswith("(times unknown)") and se.slices[0].times_ms is None


def test_time_first_array_needs_axes(tmp_path):
    """A 3D array saved time first (as numpy writers do) is refused with what to pass; with
    --nifti-axes t,y,x its frames and pixels are the voxels (rows in decreasing y)."""
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 100, (5, 37, 31)).astype(np.float32)  # (t, y, x)
    path = save(data, np.eye(4), tmp_path / "pt" / "cine.nii")
    with pytest.raises(NoInputError, match=r"3D image \(5x37x31\) with no time axis.*--nifti-axes") as e:
        scan([path.parent], salt=SALT)
    assert "cine" not in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(NiftiError, match="#[0-9a-f]{10}/#[0-9a-f]{10}.nii: 3D image") as e:
        scan([path.parent], salt=SALT, on_error="fail")
    sl = scan([path.parent], salt=SALT, nifti_axes="t,y,x").series[0].slices[0]
    assert sl.shape == (37, 31) and sl.n_frames == 5  # rows along y, columns along x
    np.testing.assert_array_equal(load_slice(sl), data[:, ::-1, :])


def test_axes_spec_and_mismatch(tmp_path):
    assert parse_axes("T, Y, X") == ("t", "y", "x") and parse_axes(None) is None
    for bad in ("x,y", "x,y,z", "x,x,t", "x,y,t,w", "x,y,z,t,t"):
        with pytest.raises(ConfigError, match="--nifti-axes"):
            parse_axes(bad)
    path = save(np.ones((6, 5, 4, 3), np.float32), np.eye(4), tmp_path / "p" / "v.nii")
    with pytest.raises(NoInputError, match="names 3 axes .* the array has 4"):
        scan([path], salt=SALT, nifti_axes="x,y,t")


def test_bad_files_are_named_masked_and_one_line(tmp_path):
    good = np.ones((9, 8, 2, 4), np.float32)
    folder = tmp_path / "SMITH_JANE"
    bad_header = folder / "SMITH_hdr.nii"
    save(good, np.eye(4), bad_header)
    raw = bytearray(bad_header.read_bytes())
    raw[0:4] = (999).to_bytes(4, "little")  # sizeof_hdr must be 348
    bad_header.write_bytes(bytes(raw))
    truncated = save(good, np.eye(4), folder / "SMITH_trunc.nii")
    truncated.write_bytes(truncated.read_bytes()[:-100])
    gz = save(good, np.eye(4), folder / "SMITH_trunc.nii.gz")
    gz.write_bytes(gz.read_bytes()[:-40])
    bomb = folder / "SMITH_bomb.nii.gz"
    hdr = nib.Nifti1Image(good, np.eye(4)).header
    bomb.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * (good.nbytes + 5 * 2**20)))
    cat = None
    with pytest.raises(NoInputError) as e:
        cat = scan([folder], salt=SALT)
    msg = str(e.value)
    assert cat is None and "4 corrupt" in msg and "SMITH" not in msg and "\n" not in msg
    for path in (bad_header, truncated, gz, bomb):
        with pytest.raises(NiftiError) as e:
            scan([path], salt=SALT, on_error="fail")
        msg = str(e.value)
        assert "SMITH" not in msg and "\n" not in msg and "#" in msg, msg
        assert msg.split(":")[0].endswith(".nii.gz" if path.name.endswith(".gz") else ".nii"), msg  # kept: says what
    with pytest.raises(NiftiError, match="truncated: the header implies"):
        scan([truncated], salt=SALT, on_error="fail")
    with pytest.raises(NiftiError, match="inflates past"):
        scan([bomb], salt=SALT, on_error="fail")


def test_changed_file_is_a_one_line_error(tmp_path):
    path = save(np.ones((9, 8, 2, 4), np.float32), np.eye(4), tmp_path / "p" / "SMITH.nii")
    sl = scan([path], salt=SALT).series[0].slices[0]
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(NiftiError, match="cannot read the voxels") as e:
        load_slice(sl)
    assert "SMITH" not in str(e.value)


def test_patient_is_the_input_folder(tmp_path):
    """One folder per patient: the folder's name gives the patient key (not its path), sub-folders
    stay with it; a DICOM series and NIfTI files can be given together."""
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    for where in ("a/PAT1/cine", "a/PAT1/perf", "b/PAT1", "b/PAT2"):
        save(np.ones((9, 8, 3, 4), np.float32), affine, tmp_path / where / "x.nii.gz")
    cat = scan([tmp_path / "a" / "PAT1", tmp_path / "b" / "PAT1", tmp_path / "b" / "PAT2"], salt=SALT)
    assert len(cat.series) == 4
    patients = Counter(s.patient_key for s in cat.series)
    assert sorted(patients.values()) == [1, 3]  # a/PAT1 (cine, perf) and b/PAT1 are one patient
    assert len({s.key for s in cat.series}) == 4


def test_generate_manifest_patient_overrides(tmp_path):
    from synth.dataset.generate import discover, read_manifest

    for p in ("x1", "x2"):
        save(np.ones((9, 8, 3, 4), np.float32), np.diag([1.5, 1.5, 8.0, 1.0]), tmp_path / p / "v.nii")
    (tmp_path / "m.csv").write_text("path,patient\nx1,P9\nx2,P9\n")
    disc = discover(None, read_manifest(tmp_path / "m.csv"), salt=SALT, on_error="skip",
                    mapper=lambda f, xs: [f(x) for x in xs])
    assert len(disc.catalog.series) == 2 and len({s.patient_key for s in disc.catalog.series}) == 1


def test_cli_nifti_axes(tmp_path):
    from cli.main import cli
    from tests.conftest import invoke

    rng = np.random.default_rng(1)
    for k in range(2):
        a = np.eye(4)
        a[0, 3] = 8.0 * k  # on disk (t, y, x): the affine's 3rd column is x, so slices stack along world x
        save(rng.uniform(1, 9, (4, 12, 10)).astype(np.float32), a, tmp_path / "in" / f"s{k}.nii")
    r = invoke(cli, "dicom2kspace", tmp_path / "in", "--out", tmp_path / "s.zarr", "--sms", "2", "--coils", "2",
               "--acs", "2", "--nifti-axes", "t,y,x", "--quiet")
    assert r.exit_code == 0, r.output
    st = Store.open(tmp_path / "s.zarr")
    assert len(st) == 1 and st.dims["T"] == 4 and (st.dims["Ky"], st.dims["Kx"]) == (12, 10)
    r = invoke(cli, "dicom2kspace", tmp_path / "in", "--out", tmp_path / "t.zarr", "--nifti-axes", "x,y")
    assert r.exit_code == 2 and "--nifti-axes" in r.output
