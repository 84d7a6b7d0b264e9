"""dicom2kspace end to end on the phantom: store contents reproduce through the documented model."""


import numpy as np
import pytest
import zarr

from synth.dataset.config import SimConfig
from synth.dataset.pipeline import dicom2kspace
from synth.dataset.store import FORMAT_VERSION, Store
from synth.errors import ConfigError, NoInputError, StoreError, StoreExistsError
from synth.physics.fft import fft2c
from synth.physics.sms import kz_table

SALT = b"pipeline-tests"


def run(inputs, out, **cfg):
    return dicom2kspace(inputs if isinstance(inputs, list) else [inputs], out, SimConfig(**cfg), salt=SALT)


def reproduce(ex):
    """k-space from target, csm and phase through the documented model (explicit 3D-FFT route):
    ``kspace[c, t, n] = sqrt(M) * F_z(fft2c(x))[c, kz[t, n], t, n]``."""
    target, csm, phase, kz = ex["target"], ex["csm"], ex["phase"], ex["kz"]
    x = target[None].astype(np.complex128) * csm[:, :, None] * np.exp(1j * phase.astype(np.float64))
    k = fft2c(x)  # (C, M, T, Ky, Kx)
    m, t, ny = k.shape[1], k.shape[2], k.shape[3]
    k3 = np.fft.fft(k, axis=1, norm="ortho")
    out = np.empty(k.shape[:1] + k.shape[2:], np.complex128)  # (C, T, Ky, Kx)
    for f in range(t):
        for n in range(ny):
            out[:, f, n] = np.sqrt(m) * k3[:, kz[f, n], f, n, :]
    return out


@pytest.fixture(scope="module")
def store_sms2(phantom_cine, tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "sms2.zarr"
    summary = dicom2kspace([phantom_cine], out, SimConfig(sms=2, coils=4, accel=2, acs=4, seed=5), salt=SALT)
    return out, summary


def test_store_shape_and_schema(store_sms2):
    out, summary = store_sms2
    st = Store.open(out)
    assert summary.written == 6 == len(st)  # C(4, 2) slice pairs
    # k-space cropped to the acquired 40x34 matrix, 8 frames
    assert st.dims == {"N": 6, "C": 4, "M": 2, "T": 8, "Ky": 40, "Kx": 34}
    assert st.complete().all()
    ex = st.example(0)
    assert ex["kspace"].dtype == np.complex64 and ex["kspace"].shape == (4, 8, 40, 34)
    assert ex["mask"].dtype == bool and ex["mask"].shape == (8, 40)
    np.testing.assert_array_equal(ex["kz"], np.tile(np.arange(40) % 2, (8, 1)))  # --caipi row (default)
    assert ex["target"].dtype == np.float32 and ex["target"].shape == (2, 8, 40, 34)
    assert ex["csm"].shape == (4, 2, 40, 34) and ex["phase"].shape == (4, 2, 8, 40, 34)
    assert ex["target"].max() == pytest.approx(1.0)
    np.testing.assert_allclose((np.abs(ex["csm"]) ** 2).sum(0), 1, atol=1e-5)
    # plain zarr, no project code
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["format"] == "smssynth.sms-kspace"
    assert root["kspace"].shape == (6, 4, 8, 40, 34)
    assert root.attrs["params"]["sms"] == 2
    assert root.attrs["conventions"]["caipi_sign"] == -1


@pytest.mark.parametrize("index", [0, 3, 5])
def test_kspace_reproduces_from_truth(store_sms2, index):
    st = Store.open(store_sms2[0])
    ex = st.example(index)
    ref = reproduce(ex)
    err = np.linalg.norm(ex["kspace"] - ref) / np.linalg.norm(ref)
    assert err < 2e-6, err


def test_provenance_and_seeds(store_sms2):
    st = Store.open(store_sms2[0])
    prov = st.provenance(2)
    assert prov["index"] == 2 and len(prov["sources"]) == 2
    pos = [s["position_mm"] for s in prov["sources"]]
    assert pos == sorted(pos)
    assert prov["seed"]["entropy"] == 5 and len(prov["seed"]["spawn_key"]) == 4
    assert all(s["series"].startswith("se-") for s in prov["sources"])


def test_identity_seeds_independent_of_other_examples(phantom_cine, store_sms2, tmp_path):
    """An example's arrays depend on its identity, not on which other examples were planned."""
    full = Store.open(store_sms2[0])
    sub = tmp_path / "combos.zarr"
    run(phantom_cine, sub, sms=2, coils=4, accel=2, acs=4, seed=5, combos=2)
    part = Store.open(sub)
    assert len(part) == 2
    ids = {p["identity"]: p["index"] for p in full.attrs["examples"]}
    for i in range(2):
        j = ids[part.provenance(i)["identity"]]
        a, b = part.example(i), full.example(j)
        for k in ("kspace", "mask", "csm", "phase", "target"):
            np.testing.assert_array_equal(a[k], b[k])


def test_rerun_is_bytewise_identical(phantom_cine, tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    run(phantom_cine, a, sms=2, coils=2, seed=1, combos=1)
    run(phantom_cine, b, sms=2, coils=2, seed=1, combos=1)
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for rel in fa:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize("m", [1, 3])
def test_any_m(phantom_cine, tmp_path, m):
    out = tmp_path / f"m{m}.zarr"
    run(phantom_cine, out, sms=m, coils=3, accel=3, acs=2, combos=2)
    st = Store.open(out)
    ex = st.example(0)
    assert ex["target"].shape[0] == m
    np.testing.assert_allclose(ex["kspace"], reproduce(ex), rtol=0, atol=3e-6 * np.abs(ex["kspace"]).max())


def test_vd_mask_with_acquired_caipi(phantom_cine, tmp_path):
    out = tmp_path / "vd.zarr"
    run(phantom_cine, out, sms=2, coils=2, accel=2, acs=4, mask="vd", caipi="acquired", combos=2, seed=1)
    st = Store.open(out)
    assert st.root.attrs["format_version"] == FORMAT_VERSION and st.caipi == "acquired"
    assert st.root.attrs["params"]["mask"] == "vd"
    for index in range(len(st)):
        ex = st.example(index)
        assert ex["kz"].dtype == np.int8 and ex["kz"].shape == ex["mask"].shape == (8, 40)
        np.testing.assert_array_equal(ex["kz"], kz_table("acquired", ex["mask"], 2))
        assert (ex["mask"].sum(1) == 20).all()  # the exact budget round(40 / 2)
        per_plane = np.stack([(ex["mask"] & (ex["kz"] == z)).sum(1) for z in range(2)], axis=1)
        assert (per_plane == 10).all()  # 20 acquired rows alternate over the two kz planes
        np.testing.assert_allclose(ex["kspace"], reproduce(ex), rtol=0, atol=3e-6 * np.abs(ex["kspace"]).max())


def test_mask_acceleration(store_sms2):
    mask = Store.open(store_sms2[0]).example(1)["mask"]
    per_frame = mask.sum(1)
    assert np.all(per_frame >= 40 // 2) and np.all(per_frame <= 40 // 2 + 4)
    assert mask[:, 40 // 2 - 2 : 40 // 2 + 2].all()  # ACS rows


def test_no_phase_and_noise(phantom_cine, tmp_path):
    out = tmp_path / "np.zarr"
    run(phantom_cine, out, sms=2, coils=2, combos=1, store_phase=False, snr=20.0)
    st = Store.open(out)
    assert "phase" not in st.root
    ex = st.example(0)
    assert "phase" not in ex and ex["noise_sigma"] > 0
    # regenerate the clean data: the same seed without noise differs only by the noise
    clean_out = tmp_path / "clean.zarr"
    run(phantom_cine, clean_out, sms=2, coils=2, combos=1, store_phase=False)
    clean = Store.open(clean_out).example(0)["kspace"]
    noise = ex["kspace"] - clean
    rms = np.sqrt(np.mean(np.abs(clean) ** 2))
    assert float(ex["noise_sigma"]) == pytest.approx(rms / 20.0, rel=1e-4)
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(float(ex["noise_sigma"]), rel=0.05)


def test_refuses_existing_store(store_sms2, phantom_cine):
    with pytest.raises(StoreExistsError, match="--overwrite"):
        run(phantom_cine, store_sms2[0], sms=2, coils=2)


def test_sizes_must_agree(phantom_cine, phantom_perfusion, tmp_path):
    with pytest.raises(ConfigError, match="--matrix"):
        run([phantom_cine, phantom_perfusion], tmp_path / "x.zarr", sms=2, coils=2)
    out = tmp_path / "ok.zarr"
    s = run([phantom_cine, phantom_perfusion], out, sms=2, coils=2, matrix=(32, 32), frames=8, combos=1)
    assert s.written == 2 and Store.open(out).dims["Ky"] == 32


def test_not_enough_slices(phantom_cine, tmp_path):
    with pytest.raises(NoInputError, match="--sms 5"):
        run(phantom_cine, tmp_path / "x.zarr", sms=5)


def test_reader_refuses_incomplete(store_sms2, tmp_path):
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(store_sms2[0], copy)
    root = zarr.open_group(str(copy), mode="r+")
    root["complete"][3] = False
    st = Store.open(copy)
    with pytest.raises(StoreError, match="incomplete"):
        st.example(3)
    st.example(2)


def test_reader_validates_format(tmp_path):
    root = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w")
    root.attrs["format"] = "something-else"
    with pytest.raises(StoreError, match="expected 'smssynth.sms-kspace'"):
        Store.open(tmp_path / "bad.zarr")
    with pytest.raises(StoreError, match="no such store"):
        Store.open(tmp_path / "missing.zarr")


def test_slice_labels_depend_on_slice_identity_only():
    from synth.dataset.simulate import slice_labels

    img = np.random.default_rng(0).random((4, 13, 11)).astype(np.float32)
    cfg = SimConfig(clusters=5, seed=2)
    a = slice_labels(img, cfg, "se-1:0")
    np.testing.assert_array_equal(a, slice_labels(img * 3.0, cfg, "se-1:0"))  # scale-free features
    assert a.shape == img.shape and a.max() < 5
    assert slice_labels(img, cfg.replace(phase="grating"), "se-1:0") is None


def test_threads_give_identical_stores(phantom_cine, tmp_path):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    cfg = SimConfig(sms=2, coils=3, seed=4, combos=2)
    dicom2kspace([phantom_cine], a, cfg, salt=SALT, threads=1)
    dicom2kspace([phantom_cine], b, cfg, salt=SALT, threads=3)
    fa = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    fb = {p.relative_to(b): p.read_bytes() for p in b.rglob("*") if p.is_file()}
    assert fa == fb


def test_write_failure_in_a_coil_thread_surfaces(phantom_cine, tmp_path, monkeypatch):
    from synth.dataset import store as zstore

    real = zstore.ChunkFile.__setitem__

    def flaky(self, key, value):
        if "kspace/c/1/1/" in self.path.as_posix():
            raise OSError(28, "No space left on device")
        real(self, key, value)

    monkeypatch.setattr(zstore.ChunkFile, "__setitem__", flaky)
    out = tmp_path / "s.zarr"
    with pytest.raises(OSError, match="No space"):
        dicom2kspace([phantom_cine], out, SimConfig(sms=2, coils=2, combos=2), salt=SALT, threads=2)
    st = Store.open(out)
    assert st.complete().tolist()[:2] == [True, False]
    with pytest.raises(StoreError, match="incomplete"):
        st.example(1)
    assert not list(out.rglob("*.partial"))  # the failed chunk's temporary file is gone
    assert not [p for p in (out / "kspace" / "c" / "1" / "1").rglob("*") if p.is_file()]


def test_progress_counts_finished_examples(phantom_cine, tmp_path):
    calls = []
    s = dicom2kspace([phantom_cine], tmp_path / "p.zarr", SimConfig(sms=2, coils=2, combos=3), salt=SALT,
                     threads=2, progress=lambda done, total: calls.append((done, total)))
    assert s.written == 3
    assert calls == [(1, 3), (2, 3), (3, 3)]
