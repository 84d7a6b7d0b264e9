"""smssynth export: fastMRI-style HDF5 and ISMRMRD files read back with h5py / ismrmrd equal the store;
single-band files go back through kspace2sms to the same store."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from synth.dataset import store as zstore
from synth.dataset.config import SimConfig
from synth.dataset.export import MANIFEST, export, file_name
from synth.dataset.pipeline import dicom2kspace
from synth.errors import ConfigError, StoreExistsError
from synth.physics.sms import collapse

SALT = b"export-tests"


@pytest.fixture(scope="module")
def acquired_store(phantom_cine, tmp_path_factory):
    """vd mask with the 'acquired' CAIPI ordering (kz varies within a frame), with noise."""
    out = tmp_path_factory.mktemp("exp") / "acq.zarr"
    cfg = SimConfig(sms=2, coils=3, accel=2, acs=4, mask="vd", caipi="acquired", snr=30.0, combos=2, seed=5)
    dicom2kspace([phantom_cine], out, cfg, salt=SALT, threads=1)
    return out


@pytest.fixture(scope="module")
def row_store(phantom_cine, tmp_path_factory):
    """The 'row' ordering, noise-free: single-band export and kspace2sms give it back."""
    out = tmp_path_factory.mktemp("exp") / "row.zarr"
    cfg = SimConfig(sms=2, coils=3, accel=2, acs=4, mask="uniform", caipi="row", combos=2, seed=6)
    dicom2kspace([phantom_cine], out, cfg, salt=SALT, threads=1)
    return out


def _header(xml):
    import ismrmrd.xsd

    return ismrmrd.xsd.CreateFromDocument(xml)


def _check_header(hdr, st, i, collapsed):
    d, f = st.dims, st.facts()
    enc = hdr.encoding[0]
    m = d["M"]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (d["Kx"], d["Ky"])
    assert enc.encodedSpace.matrixSize.z == (m if collapsed else 1)
    np.testing.assert_allclose([enc.encodedSpace.fieldOfView_mm.y, enc.encodedSpace.fieldOfView_mm.x], f["fov_mm"][i],
                               rtol=1e-6)
    assert enc.encodedSpace.fieldOfView_mm.z == pytest.approx(f["slice_thickness_mm"][i])
    lim = enc.encodingLimits
    assert (lim.kspace_encoding_step_1.maximum, lim.kspace_encoding_step_1.center) == (d["Ky"] - 1, d["Ky"] // 2)
    assert lim.phase.maximum == d["T"] - 1
    assert (lim.kspace_encoding_step_2.maximum, lim.slice.maximum) == ((m - 1, 0) if collapsed else (0, m - 1))
    assert hdr.acquisitionSystemInformation.receiverChannels == d["C"]
    assert enc.parallelImaging.multiband.multiband_factor == m
    assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == st.params["accel"]
    np.testing.assert_allclose(enc.parallelImaging.multiband.spacing[0].dZ, np.diff(f["slice_position_mm"][i]),
                               rtol=1e-5)
    assert hdr.subjectInformation.patientID == f["patient"][i] and hdr.subjectInformation.patientID.startswith("pt-")
    longs = {p.name: p.value for p in hdr.userParameters.userParameterLong}
    assert longs["smssynth_example"] == i and longs["sms_factor"] == m and longs["caipi_sign"] == -1


def test_fastmri_collapsed(acquired_store, tmp_path):
    st = zstore.Store.open(acquired_store)
    s = export(acquired_store, tmp_path / "fm", "fastmri-h5")
    assert s.written == len(st) == 2 and s.files == [file_name(0), file_name(1)]
    manifest = json.loads((tmp_path / "fm" / MANIFEST).read_text())
    assert manifest["layout"] == "fastmri-h5" and manifest["kspace"] == "collapsed"
    assert [e["example"] for e in manifest["files"]] == [0, 1]
    for i in range(len(st)):
        ex = st.example(i, ["kspace", "mask", "kz", "target", "scale"])
        with h5py.File(tmp_path / "fm" / file_name(i), "r") as f:
            k = f["kspace"][()]
            assert k.dtype == np.complex64 and f["kspace"].attrs["dims"] == "time,coil,ky,kx"
            want = ex["kspace"].transpose(1, 0, 2, 3) * ex["mask"][:, None, :, None]  # the acquired rows
            np.testing.assert_array_equal(k, want)
            np.testing.assert_array_equal(f["mask"][()], ex["mask"])
            np.testing.assert_array_equal(f["kz"][()], ex["kz"])
            assert len(set(ex["kz"][ex["mask"]].tolist())) == 2  # 'acquired': both kz planes in the data
            rss = f["reconstruction_rss"][()]
            np.testing.assert_array_equal(rss, ex["target"].transpose(1, 0, 2, 3))
            assert f.attrs["max"] == pytest.approx(float(rss.max()))
            assert f.attrs["norm"] == pytest.approx(float(np.linalg.norm(rss.astype(np.float64))))
            assert f.attrs["acquisition"] == "SMS2_acquired" and f.attrs["sms"] == 2
            assert f.attrs["acceleration"] == 2 and f.attrs["num_low_frequency"] == 4
            assert f.attrs["scale"] == pytest.approx(float(ex["scale"])) and f.attrs["noise_sigma"] > 0
            assert f.attrs["patient_id"] == st.facts()["patient"][i]
            np.testing.assert_allclose(f["frame_time_ms"][()], st.facts()["frame_time_ms"][i])
            _check_header(_header(f["ismrmrd_header"][()]), st, i, collapsed=True)


def test_ismrmrd_collapsed(acquired_store, tmp_path):
    import ismrmrd

    st = zstore.Store.open(acquired_store)
    export(acquired_store, tmp_path / "mrd", "ismrmrd")
    d = st.dims
    for i in range(len(st)):
        ex = st.example(i, ["kspace", "mask", "kz", "target"])
        ds = ismrmrd.Dataset(str(tmp_path / "mrd" / file_name(i)), "dataset", create_if_needed=False)
        try:
            _check_header(_header(ds.read_xml_header()), st, i, collapsed=True)
            n = ds.number_of_acquisitions()
            assert n == int(ex["mask"].sum())  # one acquisition per acquired line
            got = np.zeros_like(ex["kspace"])
            seen = np.zeros_like(ex["mask"])
            for a in range(n):
                acq = ds.read_acquisition(a)
                t, row = acq.idx.phase, acq.idx.kspace_encode_step_1
                assert acq.idx.kspace_encode_step_2 == ex["kz"][t, row] == acq.user_int[0] and acq.idx.slice == 0
                assert acq.data.shape == (d["C"], d["Kx"]) and acq.center_sample == d["Kx"] // 2
                acs = abs(row - d["Ky"] // 2) <= 1 or row == d["Ky"] // 2 - 2  # the 4 centre rows
                assert acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) == acs
                got[:, t, row] = acq.data
                seen[t, row] = True
            assert acq.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
            np.testing.assert_array_equal(seen, ex["mask"])
            np.testing.assert_array_equal(got, ex["kspace"] * ex["mask"][None, :, :, None])
            assert ds.number_of_images("reference") == d["M"] * d["T"]
            for j in range(d["M"] * d["T"]):
                img = ds.read_image("reference", j)
                sl, ph = img.slice, img.phase
                assert img.image_index == sl * d["T"] + ph and img.image_type == ismrmrd.IMTYPE_MAGNITUDE
                np.testing.assert_array_equal(img.data[0, 0], ex["target"][sl, ph])
        finally:
            ds.close()
        with h5py.File(tmp_path / "mrd" / file_name(i), "r") as f:
            np.testing.assert_array_equal(f["smssynth/mask"][()], ex["mask"])
            np.testing.assert_array_equal(f["smssynth/kz"][()], ex["kz"])


@pytest.mark.parametrize("layout", ["ismrmrd", "fastmri-h5"])
def test_single_band_round_trip_through_kspace2sms(layout, row_store, tmp_path):
    """Single-band files are what kspace2sms reads: converted back with the store's M and CAIPI
    ordering, they give the same k-space (every row), targets and geometry."""
    pytest.importorskip("sigpy")
    from synth.dataset.raw import kspace2sms

    st = zstore.Store.open(row_store)
    out = tmp_path / "sb"
    export(row_store, out, layout, kspace="single-band")
    for i in range(len(st)):
        ex = st.example(i)
        with h5py.File(out / file_name(i), "r") as f:
            if layout == "fastmri-h5":
                k = f["kspace"][()]  # (M, T, C, Ky, Kx)
                assert f["kspace"].attrs["dims"] == "slice,time,coil,ky,kx"
                k = k.transpose(0, 2, 1, 3, 4)
            else:
                k = None
        if k is not None:  # the collapse of the single-band data is the store's k-space (noise-free store)
            want = collapse(k.transpose(1, 2, 0, 3, 4).astype(np.complex128), ex["kz"])
            np.testing.assert_allclose(ex["kspace"], want, rtol=0, atol=2e-6 * np.abs(want).max())
        back = tmp_path / f"back{i}.zarr"
        cfg = SimConfig(sms=2, accel=2, acs=4, mask="uniform", caipi="row", phase="none", resolution="dicom", seed=1)
        s = kspace2sms([out / file_name(i)], back, cfg, salt=SALT)
        assert s.written == 1
        b = zstore.Store.open(back)
        got = b.example(0)
        assert b.source == "measured" and float(got["scale"]) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(got["kspace"], ex["kspace"], rtol=0, atol=2e-5 * np.abs(ex["kspace"]).max())
        np.testing.assert_allclose(got["target"], ex["target"], rtol=0, atol=2e-5)
        if layout == "ismrmrd":  # geometry travels in the ISMRMRD header and acquisitions
            fb, fa = b.facts(), st.facts()
            np.testing.assert_allclose(fb["slice_position_mm"][0], fa["slice_position_mm"][i], atol=1e-4)
            np.testing.assert_allclose(fb["pixel_spacing_mm"][0], fa["pixel_spacing_mm"][i], rtol=1e-6)


def test_single_band_ismrmrd_lines(row_store, tmp_path):
    import ismrmrd

    st = zstore.Store.open(row_store)
    export(row_store, tmp_path / "sb", "ismrmrd", kspace="single-band")
    d = st.dims
    ex = st.example(0, ["mask", "kz"])
    ds = ismrmrd.Dataset(str(tmp_path / "sb" / file_name(0)), "dataset", create_if_needed=False)
    try:
        _check_header(_header(ds.read_xml_header()), st, 0, collapsed=False)
        assert ds.number_of_acquisitions() == d["M"] * d["T"] * d["Ky"]  # fully sampled, every slice
        for a in (0, 7, d["T"] * d["Ky"] + 3):
            acq = ds.read_acquisition(a)
            t, row = acq.idx.phase, acq.idx.kspace_encode_step_1
            assert acq.is_flag_set(ismrmrd.ACQ_USER1) == bool(ex["mask"][t, row]) and acq.user_int[0] == ex["kz"][t, row]
            assert acq.position[2] == pytest.approx(st.facts()["slice_position_mm"][0][acq.idx.slice], abs=1e-4)
    finally:
        ds.close()


def test_split_incomplete_and_overwrite(row_store, tmp_path):
    path = tmp_path / "s.zarr"
    shutil.copytree(row_store, path)
    zstore.write_row(__import__("zarr").open_group(str(path), mode="r+")["complete"], 1, np.False_)
    s = export(path, tmp_path / "o", "fastmri-h5")
    assert s.written == 1 and s.incomplete == [1] and s.files == [file_name(0)]
    assert json.loads((tmp_path / "o" / MANIFEST).read_text())["incomplete_examples"] == [1]
    with pytest.raises(StoreExistsError, match="--out .* already exists; pass --overwrite"):
        export(path, tmp_path / "o", "fastmri-h5")
    s = export(path, tmp_path / "o", "ismrmrd", overwrite=True)  # an earlier export: replaced
    assert json.loads((tmp_path / "o" / MANIFEST).read_text())["layout"] == "ismrmrd"
    assert s.notes and not list(tmp_path.glob(".o.smssynth-*"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(StoreExistsError, match="only replaces an earlier smssynth export"):
        export(path, mine, "ismrmrd", overwrite=True)
    assert (mine / "notes.txt").read_text() == "mine"
    with pytest.raises(ConfigError, match="input of this command"):
        export(path, path / "inside", "ismrmrd")
    with pytest.raises(ConfigError, match="--split test: no example"):
        export(path, tmp_path / "none", "ismrmrd", split="test")


def test_refused_stores(phantom_cine, tmp_path):
    targets = tmp_path / "t.zarr"
    dicom2kspace([phantom_cine], targets, SimConfig(sms=2, coils=2, targets_only=True, combos=1), salt=SALT, threads=1)
    with pytest.raises(ConfigError, match="targets store has no k-space"):
        export(targets, tmp_path / "o", "ismrmrd")
    with pytest.raises(ConfigError, match="no such store"):
        export(tmp_path / "missing.zarr", tmp_path / "o", "ismrmrd")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="smssynth k-space stores"):
        export(tmp_path / "plain", tmp_path / "o", "ismrmrd")
    measured = tmp_path / "m.zarr"
    dims = {"N": 1, "C": 2, "M": 2, "T": 2, "Ky": 4, "Kx": 4}
    zstore.create(measured, dims, {"source": "measured", "params": {"phase": "none"}}, with_phase=False)
    with pytest.raises(ConfigError, match="measured store .* holds no phase"):
        export(measured, tmp_path / "o", "fastmri-h5", kspace="single-band")
    assert not (tmp_path / "o").exists()


def test_failed_export_leaves_no_folder_and_keeps_an_earlier_one(row_store, tmp_path, monkeypatch):
    import synth.dataset.export as sx

    calls = []

    def dies(path, ex):
        calls.append(ex.index)
        if len(calls) == 2:
            raise OSError("disk full")
        sx.write_fastmri(path, ex)

    monkeypatch.setitem(sx.WRITERS, "fastmri-h5", dies)
    with pytest.raises(OSError, match="disk full"):
        export(row_store, tmp_path / "o", "fastmri-h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither --out nor a staging folder
    monkeypatch.setitem(sx.WRITERS, "fastmri-h5", sx.write_fastmri)
    export(row_store, tmp_path / "o", "fastmri-h5")
    before = {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()}
    calls.clear()
    monkeypatch.setitem(sx.WRITERS, "fastmri-h5", dies)
    with pytest.raises(OSError, match="disk full"):
        export(row_store, tmp_path / "o", "fastmri-h5", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
