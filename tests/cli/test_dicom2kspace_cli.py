"""The dicom2kspace and inspect commands through click, plus the de-identification canary test."""

import logging

import pydicom
import pytest
from click.testing import CliRunner

from cli.main import cli
from synth.dataset.store import Store


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_dicom2kspace_and_inspect(phantom_cine, tmp_path):
    out = tmp_path / "s.zarr"
    r = invoke("dicom2kspace", phantom_cine, "--out", out, "--sms", 2, "--coils", 3, "--combos", 2, "--quiet",
               "--mask", "vd", "--caipi", "acquired")
    assert r.exit_code == 0, r.output
    assert "2 of 2 examples written" in r.output
    st = Store.open(out)
    assert len(st) == 2 and st.params["mask"] == "vd" and st.caipi == "acquired"
    r = invoke("inspect", out, "--png", tmp_path / "x.png", "--example", 1, "--frame", 3)
    assert r.exit_code == 0, r.output
    assert "kspace" in r.output and "complex64" in r.output and "caipi_sign: -1" in r.output
    assert "caipi ordering: acquired" in r.output and "kz " in r.output
    assert (tmp_path / "x.png").stat().st_size > 10_000


def test_inspect_bad_example(phantom_cine, tmp_path):
    out = tmp_path / "s.zarr"
    invoke("dicom2kspace", phantom_cine, "--out", out, "--sms", 2, "--coils", 2, "--combos", 1, "-q")
    r = invoke("inspect", out, "--png", tmp_path / "x.png", "--example", 9)
    assert r.exit_code == 2 and "--example" in r.output and "store has 1 examples" in r.output


def test_refuses_existing_out_without_traceback(phantom_cine, tmp_path):
    out = tmp_path / "s.zarr"
    invoke("dicom2kspace", phantom_cine, "--out", out, "--sms", 2, "--coils", 2, "--combos", 1, "-q")
    r = invoke("dicom2kspace", phantom_cine, "--out", out, "--sms", 2, "--coils", 2, "-q")
    assert r.exit_code == 2 and "--overwrite" in r.output and "Traceback" not in r.output  # a usage error
    r = invoke("dicom2kspace", phantom_cine, "--out", out, "--sms", 2, "--coils", 2, "--combos", 1, "-q", "--overwrite")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--matrix", "12x"], "--matrix"),
        (["--matrix", "2x2"], "--matrix"),
        (["--sms", "0"], "--sms"),
        (["--mask", "poisson"], "--mask"),
        (["--caipi", "rank"], "--caipi"),
        (["--accel", "200"], "--accel"),
    ],
)
def test_bad_options_are_usage_errors(phantom_cine, tmp_path, args, needle):
    r = invoke("dicom2kspace", phantom_cine, "--out", tmp_path / "s.zarr", "-q", *args)
    assert r.exit_code != 0 and needle in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s.zarr").exists()


def test_missing_input_is_named(tmp_path):
    r = invoke("dicom2kspace", tmp_path / "nope", "--out", tmp_path / "s.zarr")
    assert r.exit_code == 2 and "nope" in r.output


def test_no_dicom_found(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    r = invoke("dicom2kspace", tmp_path / "in", "--out", tmp_path / "s.zarr")
    assert r.exit_code == 2 and "Traceback" not in r.output  # no usable input: a usage error
    assert not (tmp_path / "s.zarr").exists()


CANARIES = {
    "PatientName": "CANARYNAME^QX",
    "PatientID": "CANARYPID77",
    "PatientBirthDate": "19451117",
    "StudyDate": "19990228",
    "SeriesDate": "19990228",
    "AcquisitionDate": "19990228",
    "ContentDate": "19990228",
    "InstitutionName": "CANARY INSTITUTE",
    "InstitutionAddress": "CANARY STREET 9",
    "ReferringPhysicianName": "CANARYDOC^ZZ",
    "OperatorsName": "CANARYOP^YY",
    "AccessionNumber": "CANARYACC5",
    "StudyID": "CANARYSTUDY",
    "StationName": "CANARYSTATION",
    "DeviceSerialNumber": "CANARYSERIAL",
    "StudyInstanceUID": "1.2.826.0.1.3680043.9.7777.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.9.7777.2",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.9.7777.3",
}


def test_no_patient_identifiers_in_store_or_logs(tmp_path, caplog):
    """Plant canaries in every identifying tag; search every byte the command writes or logs."""
    from synth.io.phantom import PhantomSpec, write_phantom

    src = tmp_path / "dicom"
    paths = write_phantom(src, PhantomSpec(n_slices=2, n_frames=4, acquired=(24, 20), matrix=(32, 32)),
                          extra_tags=CANARIES)
    sop_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths}
    ds = pydicom.dcmread(paths[0], stop_before_pixels=True)
    for tag, value in CANARIES.items():
        assert str(getattr(ds, tag)) == value, tag  # the canaries really are in the input
    out = tmp_path / "s.zarr"
    with caplog.at_level(logging.DEBUG):
        r = CliRunner().invoke(cli, ["dicom2kspace", str(src), "--out", str(out), "--sms", "2", "--coils", "2"],
                               catch_exceptions=False)
        r2 = CliRunner().invoke(cli, ["inspect", str(out), "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    blobs = [r.output.encode(), r2.output.encode(), caplog.text.encode()]
    blobs += [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    needles = set(CANARIES.values()) | sop_uids | {"1945-11-17", "1999-02-28", "CANARY"}
    for needle in needles:
        for blob in blobs:
            assert needle.encode() not in blob, needle


def test_corrupt_file_skip_or_fail(phantom_cine, tmp_path):
    """pydicom's truncated MR file beside a good series: reported and skipped, or the run refuses."""
    import shutil

    from pydicom.data import get_testdata_file

    src = tmp_path / "in"
    shutil.copytree(phantom_cine, src)
    shutil.copy(get_testdata_file("MR_truncated.dcm"), src / "broken")
    out = tmp_path / "s.zarr"
    r = invoke("dicom2kspace", src, "--out", out, "--sms", 2, "--coils", 2, "--combos", 1)
    assert r.exit_code == 0, r.output
    assert "1 corrupt" in r.output and "broken" not in r.output and "--show-paths" in r.output  # names masked
    r = invoke("dicom2kspace", src, "--out", tmp_path / "f.zarr", "--on-error", "fail", "--show-paths")
    assert r.exit_code == 1 and "broken" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "f.zarr").exists()
