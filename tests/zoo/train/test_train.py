"""zoo.train: normalisation, crop, splits, the loop, resume, fine-tuning, resume state."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from synth.errors import ConfigError
from synth.dataset.store import Store
from zoo import physics as P
from zoo import train as T
from zoo.checkpoint import load_checkpoint, read_metadata
from zoo.data import DataConfig, SmsDataset
from tests.conftest import phantom_store
from tests.zoo.train.conftest import TINY, run_config


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = phantom_store(tmp_path_factory.mktemp("train"), frames=6, shape=(31, 27), coils=3, seed=5,
                        salt=b"train-tests")
    return str(out)


def batch_of(store, coil_mode="virtual", n=2):
    ds = SmsDataset(store, DataConfig(coil_mode=coil_mode))
    items = [ds[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def strip_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# --- normalisation and crop -------------------------------------------------------------------


@pytest.mark.parametrize("coil_mode", ["virtual", "per-coil"])
def test_normalize_roundtrip_and_consistency(store, coil_mode):
    b = batch_of(store, coil_mode)
    nb, scale = T.normalize_batch(b)
    assert scale.shape == (2,) and (scale > 0).all()
    mag = b["x0"].abs().flatten(1)
    expect = torch.sort(mag, dim=1).values[:, int(np.ceil(0.99 * mag.shape[1])) - 1]
    torch.testing.assert_close(scale, expect)
    for key in ("x0", "k3", "truth", "target"):
        torch.testing.assert_close(T.denormalize(nb[key], scale), b[key], rtol=1e-6, atol=1e-7)
    # the data stay consistent with the truth after scaling (noiseless store): P F3 truth = k3
    mask3 = nb["mask3"][:, None] if coil_mode == "per-coil" else nb["mask3"]
    torch.testing.assert_close(P.fft3(nb["truth"]) * mask3, nb["k3"], rtol=1e-4, atol=1e-5)
    assert nb["mask3"] is b["mask3"] and torch.equal(nb["index"], b["index"])


@pytest.mark.parametrize("coil_mode", ["virtual", "per-coil"])
def test_crop_readout_is_an_exact_example(store, coil_mode):
    b, _ = T.normalize_batch(batch_of(store, coil_mode))
    g = torch.Generator().manual_seed(3)
    c = T.crop_readout(b, 16, g)
    assert c["x0"].shape[-1] == c["truth"].shape[-1] == c["target"].shape[-1] == c["k3"].shape[-1] == 16
    mask3 = c["mask3"][:, None] if coil_mode == "per-coil" else c["mask3"]
    # k3 holds the measured data of the cropped truth, zero off the mask, and x0 = ifft3(k3)
    torch.testing.assert_close(P.fft3(c["truth"]) * mask3, c["k3"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(P.ifft3(c["k3"]), c["x0"], rtol=1e-4, atol=1e-5)
    # the window is a crop of the full image at some offset
    for i in range(2):
        offs = [s for s in range(b["x0"].shape[-1] - 15)
                if torch.allclose(b["truth"][i, ..., s:s + 16], c["truth"][i])]
        assert offs
    assert T.crop_readout(b, 1000, g) is b


def test_example_scale_handles_zero():
    assert T.example_scale(torch.zeros(2, 3, 4, dtype=torch.complex64)).tolist() == [1.0, 1.0]


# --- configuration ----------------------------------------------------------------------------


def test_precedence_flag_over_yaml_over_default(store, tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: {name: sms-crnn, config: {n_filters: 4}}\noptimizer: {lr: 3.0e-4}\n"
                 "data: {batch_size: 2, coil_mode: per-coil}\nloss: {w_ssim: 0.5}\ntrain: {epochs: 4}\n")
    run = T.resolve_run_config(store, yaml_sections=T.load_yaml_config(y), overrides={"epochs": 2})
    assert run.train.epochs == 2  # flag
    assert run.train.lr == 3e-4 and run.train.batch_size == 2 and run.data.coil_mode == "per-coil"  # YAML
    assert run.loss.w_ssim == 0.5 and run.model_config["n_filters"] == 4
    assert run.train.weight_decay == 0 and run.model_config["n_iterations"] == 5  # defaults
    assert T.RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run


@pytest.mark.parametrize("text, needle", [
    ("optimizer: {learning_rate: 1}\n", "learning_rate"),
    ("trainer: {}\n", "trainer"),
    ("data: [1]\n", "'data'"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_yaml_names_file_and_key(tmp_path, text, needle):
    y = tmp_path / "bad.yaml"
    y.write_text(text)
    with pytest.raises(ConfigError, match="bad.yaml") as e:
        T.load_yaml_config(y)
    assert needle in str(e.value)


def test_bad_values_are_config_errors(store):
    with pytest.raises(ConfigError, match="lr"):
        run_config(store, lr=-1.0)
    with pytest.raises(ConfigError, match="unknown model"):
        T.resolve_run_config(store, overrides={"model": "nope"})
    with pytest.raises(ConfigError, match="n_filterz"):
        T.resolve_run_config(store, yaml_sections={"model": {"name": "sms-crnn", "config": {"n_filterz": 3}}})
    with pytest.raises(ConfigError, match="amp"):
        T.fit(run_config(store, amp=True, device="cpu"), "/nonexistent/never-written")
    with pytest.raises(ConfigError, match="train.precision.*float32, bfloat16"):
        run_config(store, precision="float16")
    with pytest.raises(ConfigError, match="train.precision.*amp"):
        run_config(store, precision="bfloat16", amp=True)


# --- splits -----------------------------------------------------------------------------------


def test_held_out_split_is_deterministic_and_disjoint(store):
    st = Store.open(store)
    complete = list(range(len(st)))
    a = T.split_examples(st, complete, 0.34, seed=0)
    assert a == T.split_examples(st, complete, 0.34, seed=0)
    train, val, how = a
    assert len(val) == 3 and sorted(train + val) == complete and not set(train) & set(val)
    assert "by example" in how  # a single phantom patient: examples are held out
    assert T.split_examples(st, complete, 0.0, seed=0)[1] == []


def test_store_val_split_wins(tmp_path):
    from tests.zoo.test_data import make_store

    path, _ = make_store(tmp_path / "s.zarr", n=5, splits=["train", "val", "test", "train", "val"])
    st = Store.open(path)
    train, val, how = T.split_examples(st, list(range(5)), 0.5, seed=0)
    assert (train, val) == ([0, 3], [1, 4]) and "split" in how


def test_test_split_never_trains(tmp_path):
    from tests.zoo.test_data import make_store

    path, _ = make_store(tmp_path / "s.zarr", n=6, splits=["train", "test", "train", "test", "train", "train"])
    train, val, how = T.split_examples(Store.open(path), list(range(6)), 0.25, seed=0)
    assert sorted(train + val) == [0, 2, 4, 5] and len(val) == 1 and "held out" in how


def test_split_by_patient(tmp_path):
    from tests.zoo.test_data import make_store

    path, _ = make_store(tmp_path / "s.zarr", n=6)
    st = Store.open(path)
    # provenance as the simulator writes it: patient keys in the sources
    import zarr

    root = zarr.open_group(str(path), mode="r+")
    root.attrs["examples"] = [{"index": i, "sources": [{"patient": f"pt-{i // 2}"}]} for i in range(6)]
    train, val, how = T.split_examples(Store.open(path), list(range(6)), 0.3, seed=1)
    assert "by patient" in how and len(val) == 2 and val[0] // 2 == val[1] // 2
    assert {i // 2 for i in train}.isdisjoint({i // 2 for i in val})


# --- the loop ---------------------------------------------------------------------------------


def test_one_epoch_writes_run(store, tmp_path):
    out = tmp_path / "run"
    r = T.fit(run_config(store), out, quiet=True)
    assert (r.epoch, r.step, r.n_train, r.n_val) == (1, 3, 3, 3)
    for name in ("config.json", "log.csv", "baseline.json", "checkpoints/epoch-001.safetensors",
                 "checkpoints/epoch-001.json", "checkpoints/last.safetensors", "checkpoints/best.json",
                 "checkpoints/last.state.safetensors", "checkpoints/last.state.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == {"name": "sms-crnn", "config": T.model_config_dict_of("sms-crnn", TINY)}
    assert cfg["train"]["lr"] == 1e-4 and cfg["n_train"] == 3 and cfg["store"] == store
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 1
    assert {"epoch", "step", "train_loss", "train_mse", "val_nmse", "val_psnr", "val_ssim", "seconds"} <= set(rows[0])
    assert np.isfinite(float(rows[0]["val_psnr"])) and float(rows[0]["train_loss"]) > 0
    model, meta = load_checkpoint(out / "checkpoints" / "last")
    assert meta["training"]["epoch"] == 1 and meta["training"]["step"] == 3
    assert meta["metrics"]["val"]["psnr"]["n"] == 3 and meta["metrics"]["zero_filled"]["psnr"]["n"] == 3
    assert meta["data"]["store"] == "s.zarr" and meta["data"]["n_examples"] == 3
    for k, v in r.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert read_metadata(out / "checkpoints" / "best")["sha256"] == meta["sha256"]
    with pytest.raises(ConfigError, match="--resume"):  # never clobber a run
        T.fit(run_config(store), out, quiet=True)


def test_resume_matches_uninterrupted(store, tmp_path):
    full = T.fit(run_config(store, epochs=2), tmp_path / "a", quiet=True)
    T.fit(run_config(store, epochs=1), tmp_path / "b", quiet=True)
    resumed = T.fit(run_config(store, epochs=2), tmp_path / "b", resume=True, quiet=True)
    assert (resumed.epoch, resumed.step) == (2, 6)
    # the recorded training time counts the first run's too
    first = read_metadata(tmp_path / "b" / "checkpoints" / "epoch-001")["training"]["seconds"]
    assert read_metadata(tmp_path / "b" / "checkpoints" / "last")["training"]["seconds"] > first > 0
    assert resumed.seconds > first
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k
    assert strip_seconds(resumed.history) == strip_seconds(full.history)
    # stopped mid-epoch by max_steps, resumed: the epoch's remaining batches are replayed
    T.fit(run_config(store, epochs=2, max_steps=4), tmp_path / "c", quiet=True)
    mid = T.fit(run_config(store, epochs=2), tmp_path / "c", resume=True, quiet=True)
    for k, v in full.model.state_dict().items():
        assert torch.equal(mid.model.state_dict()[k], v), k
    # nothing left to do
    again = T.fit(run_config(store, epochs=2), tmp_path / "b", resume=True, quiet=True)
    assert again.step == 6


def test_loss_decreases_when_overfitting(store, tmp_path):
    r = T.fit(run_config(store, epochs=3, lr=3e-3, val_fraction=0.0), tmp_path / "o", quiet=True)
    losses = [float(row["train_loss"]) for row in r.history]
    assert r.n_val == 0 and r.best is None and len(losses) == 3
    assert losses[-1] < 0.8 * losses[0], losses
    assert not (tmp_path / "o" / "checkpoints" / "best.json").exists()


def test_bfloat16_precision_learns_and_saves_float32_weights(store, tmp_path):
    r = T.fit(run_config(store, epochs=3, lr=3e-3, val_fraction=0.0, precision="bfloat16"), tmp_path / "b",
              quiet=True)
    losses = [float(row["train_loss"]) for row in r.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert json.loads((tmp_path / "b" / "config.json").read_text())["train"]["precision"] == "bfloat16"
    model, meta = load_checkpoint(tmp_path / "b" / "checkpoints" / "last")
    assert meta["training"]["train"]["precision"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the loaded model runs in float32 (the precision was the training's, not the weights')
    assert all(getattr(m, "compute_dtype", None) is None for m in model.modules())


def test_bfloat16_training_validates_in_float32(store, tmp_path, monkeypatch):
    from zoo.train import loop

    seen = []
    real = loop.evaluate_examples

    def spy(model, *args, **kwargs):
        if model is not None:
            seen.append({getattr(m, "compute_dtype", None) for m in model.modules() if hasattr(m, "compute_dtype")})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate_examples", spy)
    steps = []
    real_step = loop._train_epoch

    def step_spy(net, *args, **kwargs):
        steps.append({m.compute_dtype for m in net.modules() if hasattr(m, "compute_dtype")})
        return real_step(net, *args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", step_spy)
    r = T.fit(run_config(store, epochs=2, precision="bfloat16"), tmp_path / "v", quiet=True)
    assert seen == [{None}, {None}] and steps == [{torch.bfloat16}, {torch.bfloat16}]
    assert np.isfinite(float(r.history[-1]["val_psnr"]))


def test_per_coil_crop_batch(store, tmp_path):
    r = T.fit(run_config(store, coil_mode="per-coil", crop=16, batch_size=2), tmp_path / "p", quiet=True)
    assert r.step == 2 and np.isfinite(float(r.history[0]["val_psnr"]))


def test_finetune_freeze_keeps_frozen_params(store, tmp_path):
    T.fit(run_config(store), tmp_path / "parent", quiet=True)
    src = tmp_path / "parent" / "checkpoints" / "last"
    model, parent = T.load_parent(str(src))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = T.resolve_run_config(store, model=model.name, model_config=T.model_config_dict(model),
                               overrides={"freeze": ("crnn.*",), "val_fraction": 0.34, "lr": 1e-2},
                               command="finetune", parent=parent)
    r = T.fit(run, tmp_path / "ft", init_model=model, quiet=True)
    after = r.model.state_dict()
    frozen = [k for k in before if k.startswith("crnn.")]
    assert frozen and all(torch.equal(after[k], before[k]) for k in frozen)
    assert any(not torch.equal(after[k], before[k]) for k in before if not k.startswith("crnn."))
    meta = read_metadata(tmp_path / "ft" / "checkpoints" / "last")
    assert meta["training"]["parent"]["sha256"] == read_metadata(src)["sha256"]
    assert meta["training"]["parent"]["name"] == "last" and meta["training"]["frozen"] == frozen
    # the fine-tuned checkpoint loads (frozen parameters are parameters of the architecture)
    load_checkpoint(tmp_path / "ft" / "checkpoints" / "last")


def test_freeze_patterns_are_checked():
    from zoo.models import build_model

    net = build_model("sms-crnn", TINY)
    with pytest.raises(ConfigError, match="matches no parameter"):
        T.freeze_parameters(net, ["cell.*"])
    with pytest.raises(ConfigError, match="every parameter"):
        T.freeze_parameters(net, ["*"])


def test_resume_state_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.8, 0.9))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    T.save_state(tmp_path / "last", opt, None, {"step": 3})
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    opt2 = torch.optim.Adam(net.parameters(), lr=5.0)
    rng = torch.get_rng_state()
    torch.randn(10)
    assert T.load_state(tmp_path / "last", opt2, None) == {"step": 3}
    assert torch.equal(torch.get_rng_state(), rng)
    a, b = opt.state_dict(), opt2.state_dict()
    assert b["param_groups"][0]["lr"] == 1e-3 and tuple(b["param_groups"][0]["betas"]) == (0.8, 0.9)
    for pid in a["state"]:
        for k in a["state"][pid]:
            assert torch.equal(a["state"][pid][k], b["state"][pid][k])
    st = tmp_path / "last.state.safetensors"
    raw = st.read_bytes()
    st.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    from zoo.errors import CheckpointError

    with pytest.raises(CheckpointError, match="SHA-256"):
        T.load_state(tmp_path / "last", opt2, None)


def test_dataclass_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        T.TrainConfig().lr = 1.0


# --- coil modes: the truth is the image -------------------------------------------------------


def test_k2_training_step_end_to_end(store, tmp_path, monkeypatch):
    """K = 2 virtual coils: the model sees 2 coil images per example, the loss and the metrics get
    their RSS and compare it with the store's target."""
    seen = {}
    forward = T.SmsLoss.forward

    def spy(self, pred, target):
        seen.setdefault("pred", pred.shape)
        seen.setdefault("target", target.detach().clone())
        return forward(self, pred, target)

    monkeypatch.setattr(T.SmsLoss, "forward", spy)
    r = T.fit(run_config(store, coil_mode="compressed", coils=2, crop=16, batch_size=2, max_steps=1), tmp_path / "k2",
              quiet=True)
    assert r.step == 1 and np.isfinite(float(r.history[0]["val_psnr"]))
    assert seen["pred"][:2] == (2, 2) and seen["pred"][-1] == 16  # (B, K, M, T, Y, crop)
    cfg = json.loads((tmp_path / "k2" / "config.json").read_text())
    assert (cfg["data"]["coil_mode"], cfg["data"]["coils"]) == ("compressed", 2)
    meta = read_metadata(tmp_path / "k2" / "checkpoints" / "last")
    assert meta["data"]["data_config"]["coils"] == 2
    # the validation metrics are those of the RSS over the 2 coils against the store's target
    val_ds = SmsDataset(store, DataConfig(coil_mode="compressed", coils=2))
    ids = json.loads((tmp_path / "k2" / "baseline.json").read_text())["val_indices"]
    root = Store.open(store).root
    for i in ids:
        item = val_ds[val_ds.indices.index(i)]
        np.testing.assert_array_equal(item["target"].numpy(), root["target"][i])
    rows = T.evaluate_examples(None, val_ds, [val_ds.indices.index(i) for i in ids], torch.device("cpu"), 1, 0)
    for idx, n, p, s in rows:
        zf = torch.linalg.vector_norm(val_ds[val_ds.indices.index(idx)]["x0"], dim=0)[None]
        ref = torch.from_numpy(root["target"][idx])[None]
        assert p == pytest.approx(float(T.psnr(zf, ref)), rel=1e-6)


def test_rss_magnitude():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 2, 4, 5, 6, dtype=torch.complex64, generator=g)
    torch.testing.assert_close(T.rss_magnitude(x), x.abs().pow(2).sum(1).sqrt())
    torch.testing.assert_close(T.rss_magnitude(x[:, 0]), x[:, 0].abs())


def test_old_virtual_and_per_coil_configs_still_load(store, tmp_path):
    # the shipped checkpoint's training YAML (coil_mode virtual, no coils key)
    sections = T.load_yaml_config("zoo/configs/sms-crnn-cine-cpu.yaml")
    run = T.resolve_run_config(store, yaml_sections=sections)
    assert (run.data.coil_mode, run.data.coils) == ("virtual", None)
    # a config.json written before coil compression: no data.coils, loss without 'on'
    saved = run_config(store, coil_mode="per-coil").to_dict()
    del saved["data"]["coils"]
    del saved["loss"]["on"]
    back = T.RunConfig.from_dict(saved)
    assert (back.data.coil_mode, back.data.coils, back.loss.on) == ("per-coil", None, "magnitude")
    assert SmsDataset(store, back.data).n_coils == 3
    # ... but one trained with the complex MSE is not silently resumed with another loss
    saved["loss"]["on"] = "complex"
    with pytest.raises(ConfigError, match="fine-tune from its checkpoint"):
        T.RunConfig.from_dict(saved)
    # flags over YAML: a mode without K drops the YAML's K; K needs the compressed mode
    y = {"model": {"name": "sms-crnn", "config": TINY}, "data": {"coil_mode": "compressed", "coils": 2}}
    assert T.resolve_run_config(store, yaml_sections=y).data.coils == 2
    assert T.resolve_run_config(store, yaml_sections=y, overrides={"coil_mode": "per-coil"}).data.coils is None
    with pytest.raises(ConfigError, match="coils"):
        T.resolve_run_config(store, yaml_sections={**y, "data": {"coil_mode": "compressed"}})


def test_shipped_checkpoint_loads_as_virtual():
    from zoo.eval.recon import load_method

    m = load_method("sms-crnn-cine-cpu")
    assert (m.coil_mode, m.coils) == ("virtual", None)


@pytest.mark.parametrize("flags, expected", [("fpu vme avx512f avx512_bf16 sse", True), ("fpu amx_bf16 amx_tile", True),
                                             ("fpu avx512f avx512bw", False)])
def test_cpu_has_native_bf16_reads_the_cpu_flags(tmp_path, flags, expected):
    from zoo.train.params import cpu_has_native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_has_native_bf16(info) is expected
    assert cpu_has_native_bf16(tmp_path / "missing") is None


@pytest.mark.parametrize("native, warned", [(False, True), (True, False), (None, False)])
def test_bfloat16_on_a_cpu_without_native_bf16_warns(store, tmp_path, monkeypatch, capsys, native, warned):
    from zoo.train import loop

    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native)
    T.fit(run_config(store, epochs=1, val_fraction=0.0, precision="bfloat16"), tmp_path / "w", quiet=True)
    said = capsys.readouterr()
    assert ("--precision float32" in said.out + said.err) is warned
    capsys.readouterr()
    T.fit(run_config(store, epochs=1, val_fraction=0.0), tmp_path / "f", quiet=True)  # float32: never
    said = capsys.readouterr()
    assert "AVX512-BF16" not in said.out + said.err
