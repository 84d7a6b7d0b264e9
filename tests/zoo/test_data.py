"""zoo.data: SmsDataset over small stores the tests write through the documented forward model."""

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synth.dataset import store as sstore
from synth.errors import ConfigError, StoreError
from synth.physics.fft import fft2c
from synth.physics.masks import row_mask
from synth.physics.sms import collapse, collapse_images, kz_table
from zoo import physics as P
from zoo.data import DataConfig, SmsDataset, coil_compression_weights, simulate_kspace, virtual_coil_weights

C, T, NY, NX = 3, 4, 37, 31  # odd image sizes catch axis mix-ups


def smooth_phase(rng, lead, ny, nx):
    """Random smooth phase (radians), float32 (*lead, Y, X): a ramp plus one low-frequency cosine."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    a = rng.uniform(-2, 2, lead + (4,))[..., None, None]
    return (a[..., 0, :, :] + a[..., 1, :, :] * yy + a[..., 2, :, :] * xx
            + a[..., 3, :, :] * np.cos(np.pi * (xx + yy))).astype(np.float32)


def simulate(rng, m, *, kind="uniform", accel=3, acs=6, zero_phase=False, sigma=0.0, caipi="row"):
    """One example through the store's forward model (docs/store-format.md), rows at their ``kz``."""
    target = rng.random((m, T, NY, NX)).astype(np.float32)
    target /= target.max()
    csm = rng.standard_normal((C, m, NY, NX)) + 1j * rng.standard_normal((C, m, NY, NX))
    csm = (csm / np.sqrt((np.abs(csm) ** 2).sum(0))).astype(np.complex64)
    phase = np.zeros((C, m, T, NY, NX), np.float32) if zero_phase else smooth_phase(rng, (C, m, T), NY, NX)
    x = target.astype(np.float64) * csm[:, :, None] * np.exp(1j * phase.astype(np.float64))  # (C, M, T, Y, X)
    kspace = fft2c(collapse_images(np.moveaxis(x, 1, -3)))  # (C, T, Ky, Kx), kz = n mod M
    if sigma:
        shape = kspace.shape
        kspace = kspace + sigma / np.sqrt(2) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
    mask = row_mask(kind, T, NY, accel, acs, rng)
    kz = kz_table(caipi, mask, m)
    if caipi != "row":  # the same noise, on the k-space of the rows' own kz
        kspace = kspace - fft2c(collapse_images(np.moveaxis(x, 1, -3))) + collapse(np.moveaxis(fft2c(x), 1, 2), kz)
    return {
        "kspace": kspace.astype(np.complex64),
        "mask": mask,
        "kz": kz,
        "target": target,
        "csm": csm,
        "phase": phase,
        "scale": np.float32(1.0),
        "offsets": np.linspace(-0.1, 0.1, m),
        "noise_sigma": np.float32(sigma),
    }


def make_store(path, *, n=4, m=2, written=None, partial=(), with_phase=True, phase_kind="kmeans",
               splits=None, accel=3, acs=6, kind="uniform", sigma=0.0, seed=0, caipi="row"):
    rng = np.random.default_rng(seed)
    params = {"sms": m, "coils": C, "accel": accel, "acs": acs, "mask": kind, "caipi": caipi, "phase": phase_kind,
              "seed": seed}
    examples = [{"index": i, **({"split": splits[i]} if splits else {})} for i in range(n)]
    root = sstore.create(path, {"N": n, "C": C, "M": m, "T": T, "Ky": NY, "Kx": NX},
                         {"params": params, "examples": examples}, with_phase=with_phase)
    sims = {}
    for i in range(n):
        sims[i] = simulate(rng, m, kind=kind, accel=accel, acs=acs, zero_phase=phase_kind == "none", sigma=sigma,
                           caipi=caipi)
        if written is None or i in written:
            sstore.write_example(root, i, sims[i])
        elif i in partial:  # data written, completion marker not: an interrupted writer
            for name in ("kspace", "mask", "target"):
                root[name][i] = sims[i][name]
    return path, sims


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda m: f"M{m}")
def store(request, tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("s") / "s.zarr", m=request.param, seed=request.param)


def rel(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


# --- indexing ---------------------------------------------------------------------------------


def test_incomplete_examples_are_excluded(tmp_path):
    path, _ = make_store(tmp_path / "s.zarr", n=5, written=[0, 1, 3], partial=[2])
    ds = SmsDataset(path)
    assert len(ds) == 3 and ds.indices == [0, 1, 3]
    assert [int(ds[i]["index"]) for i in range(len(ds))] == [0, 1, 3]


def test_split_filter(tmp_path):
    path, _ = make_store(tmp_path / "s.zarr", n=4, written=[0, 1, 3], splits=["train", "val", "train", "train"])
    assert SmsDataset(path, DataConfig(split="train")).indices == [0, 3]  # 2 is incomplete
    assert SmsDataset(path, DataConfig(split="val")).indices == [1]
    assert SmsDataset(path).indices == [0, 1, 3]
    with pytest.raises(ConfigError, match="splits present"):
        SmsDataset(path, DataConfig(split="test"))
    plain, _ = make_store(tmp_path / "plain.zarr", n=2)
    with pytest.raises(ConfigError, match="record no 'split'"):
        SmsDataset(plain, DataConfig(split="train"))


def test_config_is_validated():
    for bad in ({"coil_mode": "sense"}, {"mask": "new"}, {"accel": 2}, {"mask": "fresh", "accel": 0},
                {"mask": "fresh", "mask_kind": "poisson"}, {"mask": "fresh", "acs": -1}, {"seed": -1},
                {"coil_mode": "compressed"}, {"coil_mode": "compressed", "coils": 0},
                {"coil_mode": "compressed", "coils": 2.0}, {"coil_mode": "compressed", "coils": True},
                {"coil_mode": "virtual", "coils": 2}, {"coil_mode": "per-coil", "coils": 3}):
        with pytest.raises(ConfigError):
            DataConfig(**bad)
    with pytest.raises(ConfigError, match="needs coils=K.*--virtual-coils"):
        DataConfig(coil_mode="compressed")
    assert DataConfig(coil_mode="virtual", coils=1).coils == 1  # the alias may say its K
    with pytest.raises(ValueError):  # ConfigError is a ValueError too
        DataConfig(coil_mode="sense")


# --- items ------------------------------------------------------------------------------------


MODES = {"virtual": {"coil_mode": "virtual"}, "per-coil": {"coil_mode": "per-coil"},
         **{f"compressed-{k}": {"coil_mode": "compressed", "coils": k} for k in range(1, C + 1)}}


@pytest.mark.parametrize("mode", list(MODES))
def test_shapes_and_dtypes(store, mode):
    path, _ = store
    ds = SmsDataset(path, DataConfig(**MODES[mode]))
    m = ds.m
    lead = {"virtual": (), "per-coil": (C,)}.get(mode, (MODES[mode].get("coils"),))
    assert ds.n_coils == (lead[0] if lead else 1)
    item = ds[1]
    expect = {
        "k3": (lead + (m, T, NY, NX), torch.complex64),
        "mask3": ((m, T, NY, 1), torch.bool),
        "kz": ((T, NY), torch.int64),
        "x0": (lead + (m, T, NY, NX), torch.complex64),
        "truth": (lead + (m, T, NY, NX), torch.complex64),
        "target": ((m, T, NY, NX), torch.float32),
        "index": ((), torch.int64),
    }
    assert set(item) == set(expect)
    for key, (shape, dtype) in expect.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key


@pytest.mark.parametrize("mode", list(MODES))
def test_dc_is_exact_and_x0_is_zero_filled(store, mode):
    """Noiseless store: the truth's 3D k-space on the mask is the measured data (float32 precision)."""
    path, sims = store
    ds = SmsDataset(path, DataConfig(**MODES[mode]))
    for i in range(len(ds)):
        item = ds[i]
        k3, mask3 = item["k3"], item["mask3"]
        assert rel(P.fft3(item["truth"]) * mask3, k3) < 1e-5
        assert rel(item["x0"], P.ifft3(k3)) < 1e-6
        assert not k3[~mask3.expand_as(k3)].any()
        row = torch.from_numpy(sims[int(item["index"])]["mask"])
        assert torch.equal(mask3, P.kz_mask(ds.m, row))


def test_per_coil_truth_and_target(store):
    path, sims = store
    item = SmsDataset(path, DataConfig(coil_mode="per-coil"))[2]
    sim = sims[2]
    assert torch.equal(item["target"], torch.from_numpy(sim["target"]))
    x = sim["target"] * sim["csm"][:, :, None] * np.exp(1j * sim["phase"].astype(np.float64))
    assert rel(item["truth"], x) < 1e-6
    rss = item["truth"].abs().pow(2).sum(0).sqrt()
    assert rel(rss, item["target"]) < 1e-6
    # measured data: the store's collapsed k-space, masked, divided by sqrt(M) into 3D
    y = torch.from_numpy(sim["kspace"]) * torch.from_numpy(sim["mask"])[..., None]
    assert rel(P.from_3d_data(item["k3"]), y) < 1e-6


@pytest.mark.parametrize("mode", list(MODES))
def test_target_is_the_stores_target_in_every_coil_mode(store, mode):
    path, sims = store
    ds = SmsDataset(path, DataConfig(**MODES[mode]))
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(item["target"], torch.from_numpy(sims[int(item["index"])]["target"]))


def test_virtual_coil(store):
    path, sims = store
    item = SmsDataset(path, DataConfig(coil_mode="virtual"))[0]
    sim = sims[0]
    w = virtual_coil_weights(sim["kspace"], sim["mask"])
    assert w.shape == (C,) and w.dtype == np.complex64
    assert np.linalg.norm(w) == pytest.approx(1, abs=1e-6)
    big = np.argmax(np.abs(w))
    assert w[big].imag == 0 and w[big].real > 0
    # the same projection on data and truth
    yv = np.tensordot(w.conj(), sim["kspace"], axes=1) * sim["mask"][..., None]
    assert rel(P.from_3d_data(item["k3"]), yv) < 1e-6
    x = sim["target"] * sim["csm"][:, :, None] * np.exp(1j * sim["phase"].astype(np.float64))
    assert rel(item["truth"], np.tensordot(w.conj(), x, axes=1)) < 1e-6
    # the target is the image, not the shaded virtual coil: |truth| <= target (Cauchy-Schwarz), and < somewhere
    assert torch.equal(item["target"], torch.from_numpy(sim["target"]))
    assert (item["truth"].abs() <= item["target"] * (1 + 1e-5) + 1e-7).all()
    assert rel(item["truth"].abs(), item["target"]) > 0.05
    # virtual is compressed with K = 1, without the coil axis
    one = SmsDataset(path, DataConfig(coil_mode="compressed", coils=1))[0]
    for key in ("k3", "x0", "truth"):
        torch.testing.assert_close(one[key][0], item[key], rtol=0, atol=0)


def test_compression_weights_are_orthonormal_and_nested(store):
    _, sims = store
    sim = sims[1]
    full = coil_compression_weights(sim["kspace"], sim["mask"], C)
    assert full.shape == (C, C) and full.dtype == np.complex64
    np.testing.assert_allclose(full.conj().T @ full, np.eye(C), atol=1e-6)  # W^H W = I (unitary at K = C)
    for k in range(1, C + 1):
        w = coil_compression_weights(sim["kspace"], sim["mask"], k)
        np.testing.assert_allclose(w.conj().T @ w, np.eye(k), atol=1e-6)
        np.testing.assert_allclose(w, full[:, :k], atol=1e-6)  # the K dominant directions
        big = np.abs(w).argmax(axis=0)
        assert np.all(w[big, np.arange(k)].imag == 0) and np.all(w[big, np.arange(k)].real > 0)
    np.testing.assert_array_equal(full[:, 0], virtual_coil_weights(sim["kspace"], sim["mask"]))
    # ordered by the calibration energy they capture
    acs = sim["kspace"][:, :, NY // 2 - 3: NY // 2 + 3].reshape(C, -1)
    energy = np.linalg.norm(full.conj().T @ acs, axis=1)
    assert np.all(np.diff(energy) <= 1e-4 * energy[0])
    for bad in (0, C + 1, 1.5):
        with pytest.raises(ConfigError, match="virtual coils"):
            coil_compression_weights(sim["kspace"], sim["mask"], bad)


def test_compressed_coils_equal_the_projected_coil_images(store):
    path, sims = store
    k = 2
    item = SmsDataset(path, DataConfig(coil_mode="compressed", coils=k))[1]
    sim = sims[1]
    w = coil_compression_weights(sim["kspace"], sim["mask"], k)
    x = sim["target"] * sim["csm"][:, :, None] * np.exp(1j * sim["phase"].astype(np.float64))
    assert rel(item["truth"], np.tensordot(w.conj().T, x, axes=1)) < 1e-6
    y = np.tensordot(w.conj().T, sim["kspace"], axes=1) * sim["mask"][..., None]
    assert rel(P.from_3d_data(item["k3"]), y) < 1e-6
    # the RSS of fewer coils than C is shaded, never brighter than the target
    rss = torch.linalg.vector_norm(item["truth"], dim=0)
    assert (rss <= item["target"] * (1 + 1e-5) + 1e-7).all() and rel(rss, item["target"]) > 1e-3


def test_rss_of_all_coils_is_the_target(store):
    """K = C: W is unitary, so the RSS of the compressed coil images is the store's target."""
    path, sims = store
    for cfg in (DataConfig(coil_mode="compressed", coils=C), DataConfig(coil_mode="per-coil")):
        for i in (0, 3):
            item = SmsDataset(path, cfg)[i]
            rss = torch.linalg.vector_norm(item["truth"], dim=0)
            torch.testing.assert_close(rss, item["target"], rtol=1e-5, atol=2e-6)


def test_more_virtual_coils_than_the_store_has_is_refused(store):
    path, _ = store
    with pytest.raises(ConfigError, match=f"coils={C + 1}.*has {C} coils"):
        SmsDataset(path, DataConfig(coil_mode="compressed", coils=C + 1))


def test_virtual_weights_use_acquired_data_only(tmp_path):
    path, sims = make_store(tmp_path / "a.zarr", n=1, seed=7)
    sim = sims[0]
    other = dict(sim)
    noise = np.random.default_rng(1).standard_normal(sim["kspace"].shape).astype(np.complex64)
    other["kspace"] = np.where(sim["mask"][..., None], sim["kspace"], noise)  # change unsampled rows only
    assert not np.array_equal(other["kspace"], sim["kspace"])
    np.testing.assert_array_equal(virtual_coil_weights(other["kspace"], sim["mask"]),
                                  virtual_coil_weights(sim["kspace"], sim["mask"]))
    # the weights equal the dominant singular vector of the ACS block (up to the fixed phase)
    acs = sim["kspace"][:, :, NY // 2 - 3: NY // 2 + 3].reshape(C, -1)
    u = np.linalg.svd(acs, full_matrices=False)[0][:, 0]
    w = virtual_coil_weights(sim["kspace"], sim["mask"])
    assert abs(abs(np.vdot(u, w)) - 1) < 1e-5
    # no ACS: falls back to every sampled row
    mask = np.zeros((T, NY), bool)
    mask[np.arange(T), np.arange(T) * 5] = True
    assert np.linalg.norm(virtual_coil_weights(sim["kspace"], mask)) == pytest.approx(1, abs=1e-6)


def test_phase_required(tmp_path):
    path, _ = make_store(tmp_path / "nophase.zarr", n=1, with_phase=False)
    with pytest.raises(StoreError, match="--no-phase"):
        SmsDataset(path)
    # the zero-phase model needs no phase array
    path, sims = make_store(tmp_path / "zero.zarr", n=1, with_phase=False, phase_kind="none")
    item = SmsDataset(path, DataConfig(coil_mode="per-coil"))[0]
    assert rel(item["truth"], sims[0]["target"] * sims[0]["csm"][:, :, None]) < 1e-6
    assert rel(P.fft3(item["truth"]) * item["mask3"], item["k3"]) < 1e-5


def test_noisy_store_keeps_noise_level(tmp_path):
    """With i.i.d. noise of σ, the unit-norm virtual coil carries noise of the same σ."""
    sigma = 0.05
    path, sims = make_store(tmp_path / "noisy.zarr", n=1, sigma=sigma, seed=3)
    ds = SmsDataset(path)
    item = ds[0]
    clean = P.fft3(item["truth"]) * item["mask3"]
    resid = (item["k3"] - clean)[item["mask3"].expand_as(clean)] * np.sqrt(ds.m)
    assert resid.abs().pow(2).mean().sqrt().item() == pytest.approx(sigma, rel=0.1)


# --- masks and workers ------------------------------------------------------------------------


def test_fresh_masks(tmp_path):
    path, sims = make_store(tmp_path / "s.zarr", n=3, accel=3, acs=6)
    cfg = DataConfig(mask="fresh", accel=2, mask_kind="random", seed=11)
    a, b = SmsDataset(path, cfg), SmsDataset(path, cfg)
    m0 = [a[i]["mask3"] for i in range(3)]
    assert all(torch.equal(x, b[i]["mask3"]) for i, x in enumerate(m0))  # deterministic
    assert not torch.equal(m0[0], m0[1])  # per example
    a.set_epoch(1)
    m1 = [a[i]["mask3"] for i in range(3)]
    assert all(not torch.equal(x, y) for x, y in zip(m0, m1))  # per epoch
    expect = row_mask("random", T, NY, 2, 6, np.random.default_rng([11, 1, 2]))
    assert torch.equal(m1[2], P.kz_mask(2, torch.from_numpy(expect)))
    rows = m1[0].any(0)[..., 0]  # (T, Ky) in-plane mask
    assert rows[:, NY // 2 - 3: NY // 2 + 3].all()  # acs from the store
    assert (rows.sum(1) == max(int(NY / 2 + 0.5), 6)).all()  # accel from the config (round half up)
    # DC still exact under a fresh mask
    item = a[0]
    assert rel(P.fft3(item["truth"]) * item["mask3"], item["k3"]) < 1e-5
    # stored masks ignore the epoch
    s = SmsDataset(path)
    before = s[0]["mask3"]
    s.set_epoch(5)
    assert torch.equal(s[0]["mask3"], before)
    with pytest.raises(ConfigError, match="--accel"):
        SmsDataset(path, DataConfig(mask="fresh", accel=NY + 1))


def collect(ds, **kw):
    return list(DataLoader(ds, batch_size=2, shuffle=False, **kw))


@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])  # spawn: ~9 s of imports
def test_dataloader_workers_match_single_process(tmp_path, context):
    path, _ = make_store(tmp_path / "s.zarr", n=5, m=2)
    ds = SmsDataset(path, DataConfig(mask="fresh", seed=3))
    ds.set_epoch(2)
    ds[0]  # an open handle in the parent must not leak into the workers
    ref = collect(ds)
    got = collect(ds, num_workers=2, multiprocessing_context=context)
    assert len(ref) == len(got) == 3
    for r, g in zip(ref, got):
        assert set(r) == set(g)
        for key in r:
            assert torch.equal(r[key], g[key]), key


def test_pickle_drops_the_store_handle(store):
    ds = SmsDataset(store[0])
    ds[0]
    assert ds._store is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._store is None
    assert torch.equal(clone[0]["k3"], ds[0]["k3"])


# --- CAIPI orderings: kz per row (store format 1.1), 1.0 stores, fresh masks that re-simulate ----


def downgrade_to_1_0(path):
    """Make ``path`` what a 1.0 writer left: no ``kz`` array, ``format_version`` "1.0", no params.caipi."""
    import shutil

    import zarr

    shutil.rmtree(path / "kz")
    shutil.rmtree(path / "offsets", ignore_errors=True)
    root = zarr.open_group(str(path), mode="r+")
    arrays = {k: v for k, v in root.attrs["arrays"].items() if k not in ("kz", "offsets")}
    params = {k: v for k, v in root.attrs["params"].items() if k != "caipi"}
    root.attrs.update({"format_version": "1.0", "arrays": arrays, "params": params})
    root.attrs.pop("kind", None)


@pytest.mark.parametrize("mode", ["virtual", "per-coil"])
def test_acquired_store_items_carry_its_kz(tmp_path, mode):
    path, sims = make_store(tmp_path / "s.zarr", n=2, m=2, caipi="acquired", kind="vd", accel=2, acs=4)
    ds = SmsDataset(path, DataConfig(coil_mode=mode))
    for i in range(2):
        item = ds[i]
        np.testing.assert_array_equal(item["kz"].numpy(), sims[i]["kz"])
        assert not np.array_equal(sims[i]["kz"], kz_table("row", sims[i]["mask"], 2))  # not n mod M
        mask = torch.from_numpy(sims[i]["mask"])
        assert torch.equal(item["mask3"], P.kz_mask(2, mask, item["kz"]))
        # data consistency stays exact: the truth's 3D k-space on the kz-aware mask is the data
        assert rel(P.fft3(item["truth"]) * item["mask3"], item["k3"]) < 1e-5


def test_1_0_store_loads_as_row_ordering(tmp_path):
    new, _ = make_store(tmp_path / "new.zarr", n=3, m=3)
    old, _ = make_store(tmp_path / "old.zarr", n=3, m=3)
    downgrade_to_1_0(old)
    st = sstore.Store.open(old)
    assert st.version == (1, 0) and st.caipi == "row" and "kz" not in st.root
    for cfg in (DataConfig(), DataConfig(coil_mode="per-coil"), DataConfig(mask="fresh", seed=2)):
        a, b = SmsDataset(old, cfg), SmsDataset(new, cfg)
        assert a.store_caipi == "row" and not a.resimulates
        for i in range(3):
            x, y = a[i], b[i]
            np.testing.assert_array_equal(x["kz"].numpy(), np.tile(np.arange(NY) % 3, (T, 1)))
            for key in x:
                assert torch.equal(x[key], y[key]), key


def test_simulate_kspace_is_the_stores_forward_model(tmp_path):
    """The re-simulation reproduces a noise-free store's own k-space for its own mask and kz."""
    path, sims = make_store(tmp_path / "s.zarr", n=2, m=3, caipi="acquired", kind="random", accel=2, acs=4)
    st = sstore.Store.open(path)
    for i in range(2):
        ex = st.example(i)
        y = simulate_kspace(ex["target"], ex["csm"], ex["phase"], ex["kz"])
        assert y.dtype == np.complex64 and y.shape == ex["kspace"].shape
        assert rel(y, ex["kspace"]) < 2e-6
        # and with another kz it is that kz's k-space, not the stored one
        other = simulate_kspace(ex["target"], ex["csm"], ex["phase"], kz_table("row", ex["mask"], 3))
        assert rel(other, ex["kspace"]) > 0.1
    with pytest.raises(TypeError, match="Generator"):
        simulate_kspace(ex["target"], ex["csm"], ex["phase"], ex["kz"], sigma=0.1)


def test_fresh_acquired_masks_resimulate_the_measurement(tmp_path, monkeypatch):
    path, sims = make_store(tmp_path / "s.zarr", n=3, m=2, kind="uniform", accel=2, acs=4)  # a row store
    cfg = DataConfig(mask="fresh", caipi="acquired", seed=5)
    ds = SmsDataset(path, cfg)
    assert ds.resimulates and ds._fresh == ("vd", 2, 4, "acquired")  # vd by default, R/ACS of the store
    item = ds[0]
    mask = ds.fresh_mask(0)
    np.testing.assert_array_equal(mask, row_mask("vd", T, NY, 2, 4, np.random.default_rng([5, 0, 0])))
    np.testing.assert_array_equal(item["kz"].numpy(), kz_table("acquired", mask, 2))
    counts = np.stack([(mask & (item["kz"].numpy() == z)).sum(1) for z in range(2)], axis=1)
    assert (np.abs(counts[:, 0] - counts[:, 1]) <= 1).all()
    assert rel(P.fft3(item["truth"]) * item["mask3"], item["k3"]) < 1e-5  # DC exact on re-simulated data
    # with the stored mask, the fresh route gives the stored route's item of an acquired store
    acq, _ = make_store(tmp_path / "acq.zarr", n=3, m=2, kind="uniform", accel=2, acs=4, caipi="acquired")
    stored = SmsDataset(acq)
    fresh = SmsDataset(acq, DataConfig(mask="fresh", seed=5))  # the store's ordering: acquired
    assert fresh._fresh[3] == "acquired" and fresh.resimulates
    st = sstore.Store.open(acq)
    monkeypatch.setattr(fresh, "fresh_mask", lambda index: st.example(index, ["mask"])["mask"])
    for i in range(3):
        a, b = fresh[i], stored[i]
        assert torch.equal(a["kz"], b["kz"]) and torch.equal(a["mask3"], b["mask3"])
        assert rel(a["k3"], b["k3"]) < 2e-6 and rel(a["x0"], b["x0"]) < 2e-6


def test_fresh_row_masks_on_an_acquired_store_resimulate(tmp_path):
    """A row-ordered fresh mask cannot reuse k-space made with acquired kz: it is re-simulated too."""
    path, _ = make_store(tmp_path / "s.zarr", n=2, m=2, caipi="acquired", accel=2, acs=4)
    ds = SmsDataset(path, DataConfig(mask="fresh", caipi="row", mask_kind="uniform", seed=1))
    assert ds.resimulates
    item = ds[1]
    np.testing.assert_array_equal(item["kz"].numpy(), np.tile(np.arange(NY) % 2, (T, 1)))
    assert rel(P.fft3(item["truth"]) * item["mask3"], item["k3"]) < 1e-5


def test_resimulated_noise_has_the_stores_level_and_is_seeded(tmp_path):
    sigma = 0.02
    path, _ = make_store(tmp_path / "s.zarr", n=2, m=2, sigma=sigma, accel=2, acs=4)
    ds = SmsDataset(path, DataConfig(mask="fresh", caipi="acquired", coil_mode="per-coil", seed=3))
    a, b = ds[0], SmsDataset(path, ds.config)[0]
    assert torch.equal(a["k3"], b["k3"])  # a function of (seed, epoch, example)
    clean = P.fft3(a["truth"]) * a["mask3"]
    resid = (a["k3"] - clean)[a["mask3"].expand_as(clean)] * np.sqrt(ds.m)
    assert resid.abs().pow(2).mean().sqrt().item() == pytest.approx(sigma, rel=0.1)
    ds.set_epoch(1)
    c = ds[0]
    assert not torch.equal(c["mask3"], a["mask3"])


def test_fresh_caipi_is_validated():
    with pytest.raises(ConfigError, match="caipi must be one of"):
        DataConfig(mask="fresh", caipi="rank")
    with pytest.raises(ConfigError, match="only apply to mask='fresh'"):
        DataConfig(caipi="acquired")
    assert DataConfig(mask="fresh", mask_kind="vd").mask_kind == "vd"
