"""Synthesis on the fly (issue 12): targets-only stores, and a dataset that simulates phase, coils,
masks and noise anew per (seed, epoch, example) with the simulator's own code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synth.dataset.config import SimConfig
from synth.dataset.pipeline import dicom2kspace
from synth.dataset.store import Store
from synth.errors import ConfigError, StoreError
from zoo.data import DataConfig, SmsDataset

SALT = b"synthesis-tests"
CFG = SimConfig(sms=2, coils=3, accel=2, acs=4, mask="vd", caipi="acquired", snr=30.0, seed=7)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def stores(phantom_cine, tmp_path_factory):
    root = tmp_path_factory.mktemp("synthesis")
    full, targets = root / "full.zarr", root / "targets.zarr"
    dicom2kspace([phantom_cine], full, CFG, salt=SALT)
    dicom2kspace([phantom_cine], targets, CFG.replace(targets_only=True), salt=SALT)
    return full, targets


def test_targets_store_layout(stores):
    full, targets = stores
    st, fs = Store.open(targets), Store.open(full)
    assert st.kind == "targets" and fs.kind == "kspace"
    assert st.dims["S"] == 4 and len(st) == len(fs) == 6  # 4 slices, every pair
    assert "kspace" not in st.root and "phase" not in st.root and "labels" in st.root
    for i in range(len(st)):
        a, b = st.example(i), fs.example(i, ["target", "scale", "offsets"])
        np.testing.assert_array_equal(a["target"], b["target"])
        assert a["scale"] == b["scale"]
        np.testing.assert_array_equal(a["offsets"], b["offsets"])
    with pytest.raises(StoreError, match="targets store has no"):
        st.example(0, ["kspace"])
    # each slice stored once: far smaller than the k-space store (the benchmark measures real sizes)
    assert size(targets) * 8 < size(full)


def test_on_the_fly_epoch_zero_is_exactly_the_stored_example(stores):
    """The same (seed, example) gives the same k-space as dicom2kspace writes for it."""
    full, targets = stores
    fs = Store.open(full)
    ds = SmsDataset(targets, DataConfig(coil_mode="per-coil"))
    assert ds.synthesis == "on-the-fly"
    for index in range(len(fs)):
        sim = ds.simulate(index)
        ref = fs.example(index)
        for name in ("kspace", "mask", "kz", "target", "csm", "phase", "noise_sigma"):
            np.testing.assert_array_equal(sim[name], ref[name], err_msg=f"example {index}, {name}")
    # and the training items are the stored dataset's
    stored = SmsDataset(full, DataConfig(coil_mode="per-coil"))
    a, b = ds[2], stored[2]
    for key in ("k3", "mask3", "kz", "x0", "target"):
        assert torch.equal(a[key], b[key]), key


def test_fresh_draws_per_epoch_and_seed_independent_of_workers(stores):
    _, targets = stores
    ds = SmsDataset(targets, DataConfig(coil_mode="virtual", seed=3))
    first = ds.simulate(1)
    ds.set_epoch(1)
    one = ds.simulate(1)
    assert not np.array_equal(one["kspace"], first["kspace"])
    assert not np.array_equal(one["mask"], first["mask"])  # vd masks drawn anew
    assert not np.allclose(one["csm"], first["csm"])
    np.testing.assert_array_equal(one["target"], first["target"])  # the images never change
    # depends only on (seed, epoch, example): a new dataset, another order, DataLoader workers
    again = SmsDataset(targets, DataConfig(coil_mode="virtual", seed=3))
    again.set_epoch(1)
    np.testing.assert_array_equal(again.simulate(1)["kspace"], one["kspace"])
    loaders = [torch.utils.data.DataLoader(again, batch_size=2, num_workers=w) for w in (0, 2)]
    b0, b2 = (list(ld) for ld in loaders)
    for x, y in zip(b0, b2):
        assert torch.equal(x["k3"], y["k3"]) and torch.equal(x["target"], y["target"])
    other_seed = SmsDataset(targets, DataConfig(coil_mode="virtual", seed=4))
    other_seed.set_epoch(1)
    assert not np.array_equal(other_seed.simulate(1)["kspace"], one["kspace"])


def test_on_the_fly_over_a_kspace_store_ignores_its_kspace(stores):
    full, _ = stores
    ds = SmsDataset(full, DataConfig(coil_mode="virtual", synthesis="on-the-fly"))
    ds.set_epoch(2)
    sim = ds.simulate(0)
    ref = Store.open(full).example(0)
    np.testing.assert_array_equal(sim["target"], ref["target"])
    assert not np.array_equal(sim["kspace"], ref["kspace"])
    item = ds[0]
    assert item["k3"].shape[-4:] == (2, *ref["kspace"].shape[1:])


def test_augmented_draws_are_simulated_from_the_augmented_image(stores):
    """An augmented draw is an ordinary on-the-fly draw of the moved image: its target is the
    stored image flipped/transposed/rolled/gamma'd as recorded, its k-space comes from that target
    (DC data = the forward model of its truth), and with no augmentation nothing changes."""
    from synth.dataset.augment import augment_images, augment_rng
    from synth.dataset.simulate import draw_seed
    from zoo import physics

    _, targets = stores
    plain = SmsDataset(targets, DataConfig(coil_mode="per-coil", seed=3))
    aug = SmsDataset(targets, DataConfig(coil_mode="per-coil", seed=3, augment=("flip", "roll", "gamma")))
    st = Store.open(targets)
    changed = 0
    for epoch in (1, 2, 3):
        plain.set_epoch(epoch)
        aug.set_epoch(epoch)
        for index in (0, 3):
            a, p = aug.simulate(index), plain.simulate(index)
            t = st.targets(index)
            seed = draw_seed(st.attrs["examples"][index]["seed"], epoch, 3)
            want, _, applied = augment_images(t["magnitudes"], None, ("flip", "roll", "gamma"), augment_rng(seed))
            np.testing.assert_allclose(a["target"], want / want.max(), rtol=1e-5, atol=1e-7)
            # coil maps, mask and kz are the same draw as without augmentation (own stream)
            np.testing.assert_array_equal(a["mask"], p["mask"])
            np.testing.assert_array_equal(a["csm"], p["csm"])
            differs = not np.allclose(a["target"], p["target"])
            changed += differs
            item, other = aug[index], plain[index]

            def misfit(truth):  # the data against the forward model of a truth (noise only when it is theirs)
                k = physics.fft3(truth) * item["mask3"]
                return float((k - item["k3"]).norm() / item["k3"].norm())

            assert misfit(item["truth"]) < 0.1 and (not differs or misfit(other["truth"]) > 2 * misfit(item["truth"]))
            assert torch.allclose(item["target"], item["truth"].abs().pow(2).sum(0).sqrt(), atol=1e-5)
    assert changed >= 5  # gamma alone changes every draw
    with pytest.raises(ConfigError, match="augment .* needs synthesis='on-the-fly'"):
        DataConfig(synthesis="stored", augment=("flip",))
    with pytest.raises(ConfigError, match="unknown augmentation 'spin'"):
        DataConfig(augment=("spin",))
    full, _ = stores
    with pytest.raises(ConfigError, match="read as stored k-space"):
        SmsDataset(full, DataConfig(augment=("flip",)))


def test_bad_combinations_are_refused(stores):
    full, targets = stores
    with pytest.raises(ConfigError, match="targets store holds only images"):
        SmsDataset(targets, DataConfig(synthesis="stored"))
    with pytest.raises(ConfigError, match="draws its own mask"):
        DataConfig(synthesis="on-the-fly", mask="fresh")
    with pytest.raises(ConfigError, match="synthesis must be one of"):
        DataConfig(synthesis="sometimes")


def test_cli_targets_only_generate_inspect_and_train(phantom_cine, stores, tmp_path):
    import json

    from cli.main import cli
    from tests.conftest import invoke

    _, targets = stores
    out = tmp_path / "g.zarr"
    r = invoke(cli, "generate", phantom_cine, "--out", out, "--targets-only", "--sms", 2, "--coils", 3,
               "--mask", "vd", "--caipi", "acquired", "--snr", 30, "--seed", 7, "--salt", SALT.decode(),
               "--workers", 1, "-q")
    assert r.exit_code == 0, r.output
    g, d = Store.open(out), Store.open(targets)
    assert g.kind == "targets" and len(g) == len(d)
    for i in range(len(g)):  # the same images, slice table and offsets as dicom2kspace's
        a, b = g.targets(i), d.targets(i)
        for k in ("magnitudes", "labels", "offsets", "scale"):
            np.testing.assert_array_equal(a[k], b[k])
    r = invoke(cli, "inspect", out)
    assert r.exit_code == 0 and "kind: targets" in r.output and "4 distinct slices" in r.output

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: sms-crnn, config: {n_filters: 4, n_iterations: 1}}\ntrain: {epochs: 2}\n"
                   "data: {val_fraction: 0.34}\n")
    run = tmp_path / "run"
    r = invoke(cli, "train", "--data", out, "--config", cfg, "--out", tmp_path / "bad", "--augment", "flip,spin")
    assert r.exit_code == 2 and "--augment" in r.output and "unknown augmentation 'spin'" in r.output
    r = invoke(cli, "train", "--data", out, "--config", cfg, "--out", run, "--max-steps", 5, "-q",
               "--augment", "gamma,flip")
    assert r.exit_code == 0, r.output
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    assert meta["data"]["data_config"]["augment"] == ["flip", "gamma"]
    assert meta["data"]["kind"] == "targets" and meta["data"]["data_config"]["synthesis"] == "on-the-fly"
    assert meta["data"]["params"]["caipi"] == "acquired" and meta["data"]["models"]["phase"]
