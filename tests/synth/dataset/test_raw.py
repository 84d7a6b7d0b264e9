"""kspace2sms: measured multi-coil k-space in three file layouts -> the same SMS store.

The tests make "measured" data from the project's own phantom (coil maps and a smooth phase from
the simulator), write it as ISMRMRD, fastMRI-style HDF5 and CMRxRecon MATLAB v7.3 files, and
check the store against the CAIPI collapse of the file's slices.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from synth.dataset.config import SimConfig
from synth.dataset.raw import kspace2sms
from synth.dataset.store import FORMAT_VERSION, Store
from synth.errors import ConfigError, NoInputError, RawDataError
from synth.io.raw import open_raw
from synth.physics.fft import fft2c, ifft2c
from synth.physics.sms import collapse

SALT = b"raw-tests"
S, T, C, NY, NX = 3, 4, 3, 29, 25
CFG = SimConfig(sms=2, accel=2, acs=4, phase="none", resolution="dicom", seed=7, mask="vd")


@pytest.fixture(scope="module")
def measured() -> np.ndarray:
    """complex64 (S, C, T, Ky, Kx): phantom slices x coil maps x a smooth per-coil phase, in k-space."""
    from synth.io.phantom import PhantomSpec, phantom_images
    from synth.physics.coils import coil_maps

    img = phantom_images(PhantomSpec(n_slices=S, n_frames=T, acquired=(NY, NX), matrix=(NY, NX), seed=5))
    rng = np.random.default_rng(0)
    csm = coil_maps("circle", C, (NY, NX), np.linspace(-0.05, 0.05, S), rng)  # (C, S, Y, X)
    yy, xx = np.mgrid[:NY, :NX] / max(NY, NX)
    phase = np.exp(1j * (2.0 * xx + 1.0 * yy + rng.uniform(0, 6.28, (C, 1, 1, 1, 1))))  # (C, 1, 1, Y, X)
    x = img[None] * csm[:, :, None] * phase[:, 0][:, None]  # (C, S, T, Y, X)
    return np.ascontiguousarray(np.moveaxis(fft2c(x.astype(np.complex64)), 1, 0), np.complex64)


def write_fastmri(k, path, dims=None):
    with h5py.File(path, "w") as f:
        if dims is None:
            f["kspace"] = np.transpose(k, (0, 2, 1, 3, 4))  # (slice, time, coil, ky, kx)
        else:
            order = {"slice": 0, "coil": 1, "time": 2, "ky": 3, "kx": 4}
            f["kspace"] = np.transpose(k, [order[d] for d in dims.split(",")])
            f["kspace"].attrs["dims"] = dims
    return path


def write_cmrx(k, path, name="kspace_full"):
    data = np.transpose(k, (2, 0, 1, 3, 4))  # MATLAB (kx, ky, coil, slice, time) -> HDF5 (time, slice, coil, ky, kx)
    comp = np.empty(data.shape, [("real", "<f4"), ("imag", "<f4")])
    comp["real"], comp["imag"] = data.real, data.imag
    with h5py.File(path, "w", userblock_size=512) as f:
        f[name] = comp
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    return path


def write_ismrmrd(k, path, positions=(0.0, 8.0, 16.0)):
    import ismrmrd

    d = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    noise = ismrmrd.Acquisition.from_array(np.ones((C, NX), np.complex64))
    noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    d.append_acquisition(noise)
    for s in (2, 0, 1):  # acquisition order says nothing about the slice order
        for t in range(T):
            for n in range(NY):
                a = ismrmrd.Acquisition.from_array(np.ascontiguousarray(k[s, :, t, n]))
                a.idx.slice, a.idx.phase, a.idx.kspace_encode_step_1 = s, t, n
                a.position[:] = (0.0, 0.0, positions[s])
                a.slice_dir[:] = (0.0, 0.0, 1.0)
                d.append_acquisition(a)
    d.close()
    return path


def check_store(out, k):
    """kspace = the CAIPI collapse of the file's slices (scaled), target = their RSS, csm unit norm."""
    st = Store.open(out)
    a = st.attrs
    assert a["format_version"] == FORMAT_VERSION == "1.4" and st.source == "measured" and "phase" not in st.root
    assert a["measured"]["csm"]["method"] == "espirit" and st.dims["C"] == C and len(st) == 3
    for i in range(len(st)):
        ex = st.example(i, ["kspace", "target", "csm", "scale", "mask", "kz", "noise_sigma"])
        idx = [s["slice"] for s in st.provenance(i)["sources"]]
        ks = k[idx].transpose(1, 2, 0, 3, 4)  # (C, T, M, Ky, Kx)
        want = collapse(ks.astype(np.complex128), ex["kz"]) / float(ex["scale"])
        np.testing.assert_allclose(ex["kspace"], want, rtol=0, atol=2e-6 * np.abs(want).max())
        rss = np.sqrt((np.abs(ifft2c(k[idx].astype(np.complex128))) ** 2).sum(axis=1))  # (M, T, Y, X)
        np.testing.assert_allclose(ex["target"], rss / float(ex["scale"]), rtol=0, atol=1e-6)
        assert ex["target"].max() == pytest.approx(1.0) and float(ex["noise_sigma"]) == 0
        np.testing.assert_allclose((np.abs(ex["csm"]) ** 2).sum(axis=0), 1.0, atol=1e-5)
    return st


@pytest.mark.parametrize("layout", ["fastmri", "fastmri-dims", "cmrxrecon", "ismrmrd"])
def test_layouts_collapse_the_measured_slices(layout, measured, tmp_path):
    folder = tmp_path / "DOE_JOHN"
    folder.mkdir()
    if layout == "fastmri":
        path = write_fastmri(measured, folder / "DOE_file.h5")
    elif layout == "fastmri-dims":
        path = write_fastmri(measured, folder / "DOE_file.h5", dims="time,slice,coil,ky,kx")
    elif layout == "cmrxrecon":
        path = write_cmrx(measured, folder / "DOE_cine_sax.mat")
    else:
        path = write_ismrmrd(measured, folder / "DOE_raw.h5")
    s = kspace2sms([folder], tmp_path / "s.zarr", CFG, salt=SALT)
    assert s.written == 3 and s.shape == (T, NY, NX)
    st = check_store(tmp_path / "s.zarr", measured)
    text = (tmp_path / "s.zarr" / "zarr.json").read_text()
    assert "DOE" not in text and str(tmp_path) not in text
    if layout == "ismrmrd":
        assert [x["position_mm"] for x in st.provenance(0)["sources"]] == [0.0, 8.0]
    # resuming a complete store does nothing; the same examples again
    again = kspace2sms([folder], tmp_path / "s.zarr", CFG, salt=SALT)
    assert again.written == 0 and again.already == 3
    del path


def test_options_frames_matrix_noise(measured, tmp_path):
    path = write_fastmri(measured, tmp_path / "f.h5")
    cfg = CFG.replace(frames=3, matrix=(24, 20), snr=10.0, sms=3)
    kspace2sms([path], tmp_path / "s.zarr", cfg, salt=SALT)
    st = Store.open(tmp_path / "s.zarr")
    assert len(st) == 1 and (st.dims["T"], st.dims["Ky"], st.dims["Kx"]) == (3, 24, 20)
    ex = st.example(0)
    assert float(ex["noise_sigma"]) > 0 and ex["kspace"].shape == (C, 3, 24, 20)


def test_errors_are_one_line_and_masked(measured, tmp_path):
    folder = tmp_path / "SMITH_JANE"
    folder.mkdir()
    good = write_fastmri(measured, folder / "SMITH_a.h5")
    trunc = folder / "SMITH_trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    wrong = folder / "SMITH_wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["image"] = np.zeros((2, 2))
    v5 = folder / "SMITH_v5.mat"
    v5.write_bytes(b"MATLAB 5.0 MAT-file, Platform: PCWIN64".ljust(128, b" ") + b"\0" * 64)
    cases = {trunc: "not a readable HDF5 file", wrong: "no 'kspace' dataset", v5: "MATLAB v5"}
    for path, what in cases.items():
        with pytest.raises(RawDataError, match=what) as e:
            kspace2sms([path], tmp_path / f"{path.stem}.zarr", CFG, salt=SALT)
        msg = str(e.value)
        assert "SMITH" not in msg and "\n" not in msg and msg.startswith("#"), msg
        assert not (tmp_path / f"{path.stem}.zarr").exists()
    with pytest.raises(RawDataError, match="'kspace_full' or 'kspace'"):
        open_raw(str(write_cmrx(measured, tmp_path / "x.mat", name="other")), "x.mat")
    with pytest.raises(NoInputError):
        kspace2sms([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [], tmp_path / "e.zarr", CFG,
                   salt=SALT)
    with pytest.raises(ConfigError, match="phase"):
        kspace2sms([good], tmp_path / "p.zarr", CFG.replace(phase="kmeans"), salt=SALT)


def test_unreadable_files_are_skipped_or_stop_the_run(measured, tmp_path):
    folder = tmp_path / "SMITH_JANE"
    folder.mkdir()
    good = write_fastmri(measured, folder / "SMITH_b.h5")
    (folder / "SMITH_a_trunc.h5").write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with h5py.File(folder / "SMITH_c_wrong.h5", "w") as f:
        f["image"] = np.zeros((2, 2))
    s = kspace2sms([folder], tmp_path / "s.zarr", CFG, salt=SALT)  # default: skip
    assert s.written == 3 and not s.failed and len(s.skipped_inputs) == 2
    assert any("not a readable HDF5 file" in r for r in s.skipped_inputs)
    assert any("no 'kspace' dataset" in r for r in s.skipped_inputs)
    assert all("SMITH" not in r and r.startswith("#") for r in s.skipped_inputs), s.skipped_inputs
    st = check_store(tmp_path / "s.zarr", measured)
    assert st.attrs["inputs"]["skipped"] == {"unreadable": 2} and st.attrs["inputs"]["files"] == 3
    # --on-error fail: the first unusable file (sorted order) stops the run, nothing is left behind
    with pytest.raises(RawDataError, match="not a readable HDF5 file") as e:
        kspace2sms([folder], tmp_path / "f.zarr", CFG, salt=SALT, on_error="fail")
    assert "SMITH" not in str(e.value) and not (tmp_path / "f.zarr").exists()
    # nothing usable: the error says how many files were tried, and names the first
    good.unlink()
    with pytest.raises(RawDataError, match="none of the 2 raw k-space files is usable; the first: #"):
        kspace2sms([folder], tmp_path / "n.zarr", CFG, salt=SALT)
    assert not (tmp_path / "n.zarr").exists()


def test_a_slice_unreadable_mid_way_leaves_its_examples_for_a_rerun(measured, tmp_path, monkeypatch):
    from cli.main import cli
    from synth.io.raw import RawFile
    from tests.conftest import invoke

    path = write_fastmri(measured, tmp_path / "SMITH.h5")
    read = RawFile.read_slice

    def broken(self, s):
        if s == 1:
            raise RawDataError(f"{self.name}: cannot read slice 1 (test); the file may be truncated")
        return read(self, s)

    monkeypatch.setattr(RawFile, "read_slice", broken)
    with pytest.raises(RawDataError, match="stopped at example .*--on-error fail"):
        kspace2sms([path], tmp_path / "f.zarr", CFG, salt=SALT, on_error="fail")
    s = kspace2sms([path], tmp_path / "s.zarr", CFG, salt=SALT)
    assert s.written == 1 and len(s.failed) == 2 and all("slice 1" in why for _, why in s.failed)
    r = invoke(cli, "kspace2sms", path, "--out", tmp_path / "c.zarr", "--sms", "2", "--acs", "4", "--mask", "vd",
               "--seed", "7", "--salt", "x")
    assert r.exit_code == 1 and "2 of 3 examples failed" in r.output and "left incomplete" in r.output
    assert "SMITH" not in r.output and "Traceback" not in r.output
    monkeypatch.setattr(RawFile, "read_slice", read)  # the file readable again: the rerun does only those two
    s = kspace2sms([path], tmp_path / "s.zarr", CFG, salt=SALT)
    assert (s.written, s.already, s.failed) == (2, 1, [])
    check_store(tmp_path / "s.zarr", measured)


def test_cli_and_training_on_measured(measured, tmp_path, torch_one_thread):
    from cli.main import cli
    from cli.train import train
    from tests.conftest import invoke

    path = write_cmrx(measured, tmp_path / "cine_sax.mat")
    r = invoke(cli, "kspace2sms", path, "--out", tmp_path / "s.zarr", "--sms", "2", "--acs", "4", "--quiet")
    assert r.exit_code == 0, r.output
    assert "3 of 3 examples written" in r.output
    r = invoke(cli, "kspace2sms", tmp_path / "cine_sax.mat", "--out", tmp_path / "t.zarr", "--dataset", "nope")
    assert r.exit_code == 1 and "no 'nope' dataset" in r.output and "cine_sax" not in r.output
    r = invoke(cli, "inspect", tmp_path / "s.zarr", "--png", tmp_path / "x.png")
    assert r.exit_code == 0, r.output
    assert "measured (kspace2sms from {'cmrxrecon': 1}" in r.output and (tmp_path / "x.png").stat().st_size > 0

    from zoo.data import DataConfig, SmsDataset

    ds = SmsDataset(tmp_path / "s.zarr", DataConfig())
    item = ds[0]
    assert item["truth"].shape == (C, 2, T, NY, NX) and item["target"].shape == (2, T, NY, NX)
    with pytest.raises(ConfigError, match="measured"):
        SmsDataset(tmp_path / "s.zarr", DataConfig(synthesis="on-the-fly"))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: sms-crnn, config: {n_filters: 4, n_iterations: 1}}\ndata: {val_fraction: 0.34}\n"
                   "train: {epochs: 1}\n")
    r = invoke(train, "--data", tmp_path / "s.zarr", "--config", cfg, "--out", tmp_path / "run", "-q")
    assert r.exit_code == 0, r.output
    assert "done: epoch 1" in r.output
    # measured data have no true coil maps: sense-oracle is refused by name and left out by default
    r = invoke(cli, "evaluate", tmp_path / "s.zarr", "--baselines", "zero-filled,sense-oracle", "--examples", "0")
    assert r.exit_code == 2 and "sense-espirit" in r.output and "Traceback" not in r.output
    r = invoke(cli, "evaluate", tmp_path / "s.zarr", "--examples", "0", "--sense-iters", "2", "--cs-iters", "2")
    assert r.exit_code == 0, r.output
    assert "sense-espirit" in r.output and "sense-oracle" not in r.output and "ORACLE" not in r.output
