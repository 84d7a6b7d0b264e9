"""zoo.train: learning-rate schedules, gradient accumulation, early stopping, steps.csv and
TensorBoard, and configuration values named by key and type."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import pytest
import torch

from synth.errors import ConfigError
from zoo import train as T
from zoo.checkpoint import read_metadata
from tests.conftest import phantom_store
from tests.zoo.train.conftest import TINY, run_config


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 6 examples, val_fraction 0.34: 3 train (3 steps per epoch at batch 1), 3 val
    out = phantom_store(tmp_path_factory.mktemp("train-opts"), frames=4, shape=(29, 25), coils=2, seed=7,
                        salt=b"train-options")
    return str(out)


def rows(path, drop=("seconds",)):
    with open(path, newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh)]


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the schedule -----------------------------------------------------------------------------


def test_schedule_formulas():
    const = T.LrSchedule("constant", 1.0, total_steps=10, warmup_steps=4)
    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert T.LrSchedule("constant", 0.1, total_steps=5)(0) == 0.1  # no warm-up: today's behaviour

    cos = T.LrSchedule("cosine", 1.0, total_steps=12, warmup_steps=2, min_lr=0.1)
    lrs = [cos(s) for s in range(12)]
    assert lrs[:3] == [0.5, 1.0, 1.0]  # warm-up, then the cosine starts at lr
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:]))  # strictly decreasing after the warm-up
    assert cos(7) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert cos(12) == pytest.approx(0.1) and cos(100) == pytest.approx(0.1)  # min_lr at the horizon and after
    assert 0.1 < lrs[-1] < 0.15

    step = T.LrSchedule("step", 1.0, total_steps=100, warmup_steps=1, step_size=3, gamma=0.5)
    assert [step(s) for s in range(8)] == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_schedule_horizon_is_the_runs_steps():
    cfg = T.TrainConfig(epochs=4, schedule="cosine")
    assert T.LrSchedule.from_config(cfg, steps_per_epoch=3).total_steps == 12
    cfg = T.TrainConfig(epochs=4, schedule="cosine", max_steps=5)
    assert T.LrSchedule.from_config(cfg, steps_per_epoch=3).total_steps == 5
    cfg = T.TrainConfig(epochs=1, schedule="cosine", max_steps=50)  # max_steps beyond the epochs: the epochs end it
    assert T.LrSchedule.from_config(cfg, steps_per_epoch=3).total_steps == 3


def test_cosine_warmup_run_resumes_exactly(store, tmp_path, monkeypatch):
    """A run killed in its second epoch and resumed with the same settings takes the same
    learning rates and ends with the same weights as an uninterrupted one."""
    opts = dict(epochs=3, schedule="cosine", warmup_steps=2, min_lr=1e-5, lr=1e-3)
    full = T.fit(run_config(store, **opts), tmp_path / "a", quiet=True)
    steps = rows(tmp_path / "a" / "steps.csv")
    sched = T.LrSchedule("cosine", 1e-3, total_steps=9, warmup_steps=2, min_lr=1e-5)
    assert [int(r["step"]) for r in steps] == list(range(1, 10))
    assert [float(r["lr"]) for r in steps] == pytest.approx([sched(s) for s in range(9)], rel=1e-5)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["lr_schedule"]["total_steps"] == 9

    call = T.LrSchedule.__call__

    def crash(self, s):
        if s == 4:  # the second step of epoch 2: after its backward, before its optimizer step
            raise RuntimeError("simulated crash")
        return call(self, s)

    monkeypatch.setattr(T.LrSchedule, "__call__", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        T.fit(run_config(store, **opts), tmp_path / "b", quiet=True)
    monkeypatch.undo()
    assert len(rows(tmp_path / "b" / "steps.csv")) == 4  # steps 1-4 were logged before the crash
    resumed = T.fit(run_config(store, **opts), tmp_path / "b", resume=True, quiet=True)
    assert (resumed.epoch, resumed.step) == (3, 9)
    assert same_weights(resumed.model, full.model)
    assert rows(tmp_path / "b" / "steps.csv") == steps  # the crashed epoch's rows were dropped and replayed
    assert rows(tmp_path / "b" / "log.csv") == rows(tmp_path / "a" / "log.csv")
    state = json.loads((tmp_path / "b" / "checkpoints" / "last.state.json").read_text())
    assert state["progress"]["schedule"]["kind"] == "cosine" and state["progress"]["schedule"]["total_steps"] == 9
    meta = read_metadata(tmp_path / "b" / "checkpoints" / "last")
    assert meta["training"]["optimizer"]["schedule"] == sched.state_dict()
    assert meta["training"]["train"]["warmup_steps"] == 2


def test_longer_cosine_on_resume_is_said(store, tmp_path):
    T.fit(run_config(store, schedule="cosine", max_steps=2, epochs=2), tmp_path / "r", quiet=True)
    said = []
    T.fit(run_config(store, schedule="cosine", epochs=2), tmp_path / "r", resume=True, quiet=True, echo=said.append)
    assert any("now spans 6 optimizer steps (was 2)" in s for s in said), said


def test_step_schedule_in_the_logs(store, tmp_path):
    r = T.fit(run_config(store, schedule="step", step_size=2, gamma=0.5, lr=1e-3), tmp_path / "s", quiet=True)
    assert [float(x["lr"]) for x in rows(tmp_path / "s" / "steps.csv")] == [1e-3, 1e-3, 5e-4]
    assert float(r.history[-1]["lr"]) == 5e-4  # log.csv: the epoch's last rate


# --- accumulation -----------------------------------------------------------------------------


def _fit_recording_grads(run, out):
    """fit, and the gradients each optimizer step applied."""
    grads = []

    def hook(optimizer, args, kwargs):
        grads.append([p.grad.detach().clone() for g in optimizer.param_groups for p in g["params"]])

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        return T.fit(run, out, quiet=True), grads
    finally:
        handle.remove()


def test_accumulated_micro_batches_equal_one_batch(store, tmp_path):
    """2 micro-batches of 1 example accumulated give the gradient of one batch of the same 2
    examples (the loss is their mean), step by step, to float tolerance."""
    big, g_big = _fit_recording_grads(run_config(store, batch_size=2, lr=1e-3), tmp_path / "big")
    acc, g_acc = _fit_recording_grads(run_config(store, batch_size=1, accumulate=2, lr=1e-3), tmp_path / "acc")
    # 3 training examples: steps of 2 + 1 examples either way
    assert big.step == acc.step == 2 and len(g_big) == len(g_acc) == 2
    for step_big, step_acc in zip(g_big, g_acc):
        for a, b in zip(step_big, step_acc):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    # (the weights are not compared: Adam divides by sqrt(v), so a gradient near 0 that agrees to float
    # tolerance can still move its weight by anything up to lr)
    # the logged step losses are the means over the same examples
    lb, la = rows(tmp_path / "big" / "steps.csv"), rows(tmp_path / "acc" / "steps.csv")
    assert [float(r["loss"]) for r in la] == pytest.approx([float(r["loss"]) for r in lb], rel=1e-4)
    cfg = json.loads((tmp_path / "acc" / "config.json").read_text())
    assert cfg["train"]["accumulate"] == 2 and cfg["effective_batch_size"] == 2


def test_accumulation_resumes_mid_epoch(store, tmp_path):
    full = T.fit(run_config(store, batch_size=1, accumulate=2, epochs=2), tmp_path / "f", quiet=True)
    T.fit(run_config(store, batch_size=1, accumulate=2, epochs=2, max_steps=3), tmp_path / "m", quiet=True)
    mid = T.fit(run_config(store, batch_size=1, accumulate=2, epochs=2), tmp_path / "m", resume=True, quiet=True)
    assert (full.step, mid.step) == (4, 4)
    assert same_weights(mid.model, full.model)
    assert rows(tmp_path / "m" / "steps.csv") == rows(tmp_path / "f" / "steps.csv")


# --- early stopping ---------------------------------------------------------------------------


def _scripted_val(monkeypatch, psnrs):
    """Make the model's val PSNR follow ``psnrs``, one value per validation."""
    evaluate = T.loop.evaluate_examples
    it = iter(psnrs)

    def scripted(model, *args, **kwargs):
        out = evaluate(model, *args, **kwargs)
        if model is None:  # the zero-filled baseline
            return out
        p = next(it)
        return [(i, n, p, s) for i, n, _, s in out]

    monkeypatch.setattr(T.loop, "evaluate_examples", scripted)


def test_early_stop_keeps_the_best(store, tmp_path, monkeypatch):
    _scripted_val(monkeypatch, [30.0, 29.0, 29.5, 31.0, 32.0])
    said = []
    r = T.fit(run_config(store, epochs=5, early_stop=2), tmp_path / "e", quiet=True, echo=said.append)
    assert r.epoch == 3 and r.stopped_early == {"epoch": 3, "patience": 2, "best_epoch": 1, "best_psnr": 30.0}
    assert any(s.startswith("early stop after epoch 3: no better val PSNR for 2 epochs") for s in said), said
    ck = tmp_path / "e" / "checkpoints"
    assert read_metadata(ck / "best")["training"]["epoch"] == 1
    assert read_metadata(ck / "last")["training"]["stopped_early"]["best_epoch"] == 1
    assert [row["epoch"] for row in r.history] == ["1", "2", "3"]
    # resumed with the same patience: nothing to do; with early stopping off: on to --epochs
    said.clear()
    again = T.fit(run_config(store, epochs=5, early_stop=2), tmp_path / "e", resume=True, quiet=True,
                  echo=said.append)
    assert again.epoch == 3 and again.stopped_early and any("nothing left to do" in s for s in said)
    more = T.fit(run_config(store, epochs=4, early_stop=None), tmp_path / "e", resume=True, quiet=True)
    assert more.epoch == 4 and more.stopped_early is None and more.best["epoch"] == 4


def test_early_stop_needs_validation(store, tmp_path):
    with pytest.raises(ConfigError, match="--early-stop 2 watches the val PSNR"):
        T.fit(run_config(store, early_stop=2, val_fraction=0.0), tmp_path / "n", quiet=True)
    assert not (tmp_path / "n").exists()


# --- logs -------------------------------------------------------------------------------------


def test_steps_csv_and_optional_tensorboard(store, tmp_path, monkeypatch):
    written = []

    class Writer:  # stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is optional)
        def __init__(self, logdir):
            written.append(("dir", logdir))

        def add_scalar(self, tag, value, step):
            written.append((tag, step))

        def flush(self):
            pass

        def close(self):
            written.append(("closed", None))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    T.fit(run_config(store), tmp_path / "t", quiet=True)
    with open(tmp_path / "t" / "steps.csv", newline="") as fh:
        steps = list(csv.DictReader(fh))
    assert list(steps[0]) == ["step", "epoch", "lr", "mse", "ssim", "tv", "loss", "seconds"]
    assert [r["step"] for r in steps] == ["1", "2", "3"] and {r["epoch"] for r in steps} == {"1"}
    assert all(float(r["loss"]) > 0 and float(r["seconds"]) > 0 for r in steps)
    assert written[0] == ("dir", str(tmp_path / "t" / "tensorboard")) and written[-1] == ("closed", None)
    assert {("train/lr", 3), ("train/loss", 3), ("val/psnr", 3)} <= set(written)


# --- configuration values ---------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("optimizer: {lr: fast}\n", "optimizer.lr: expected a number, got 'fast'"),
    ("train: {epochs: two}\n", "train.epochs: expected an integer, got 'two'"),
    ("train: {epochs: 2.5}\n", "train.epochs: expected an integer, got 2.5"),
    ("train: {amp: maybe}\n", "train.amp: expected true or false, got 'maybe'"),
    ("train: {freeze: 'crnn.*'}\n", "train.freeze: expected a list of strings, got 'crnn.*'"),
    ("train: {accumulate: [2]}\n", "train.accumulate: expected an integer, got [2]"),
    ("train: {early_stop: soon}\n", "train.early_stop: expected an integer or null, got 'soon'"),
    ("optimizer: {schedule: 1}\n", "optimizer.schedule: expected a string, got 1"),
    ("optimizer: {warmup_steps: ten}\n", "optimizer.warmup_steps: expected an integer, got 'ten'"),
    ("optimizer: {grad_clip: big}\n", "optimizer.grad_clip: expected a number or null, got 'big'"),
    ("data: {batch_size: 1.5}\n", "data.batch_size: expected an integer, got 1.5"),
    ("data: {accel: four}\n", "data.accel: expected an integer or null, got 'four'"),
    ("loss: {w_ssim: high}\n", "loss.w_ssim: expected a number, got 'high'"),
    ("model: {name: 3}\n", "model.name: expected a string, got 3"),
    ("optimizer: {warmup: 3}\n", "unknown key(s) optimizer.warmup; known in section 'optimizer'"),
])
def test_yaml_values_are_named_by_key_and_type(tmp_path, text, message):
    y = tmp_path / "c.yaml"
    y.write_text(text)
    with pytest.raises(ConfigError) as e:
        T.load_yaml_config(y)
    assert str(e.value) == f"--config {y}: {message}" or str(e.value).startswith(f"--config {y}: {message}"), e.value
    if "unknown" in message:
        assert "warmup_steps" in str(e.value)  # the known keys are listed


def test_yaml_new_keys_and_yaml11_exponents(store, tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: {name: sms-crnn, config: {n_filters: 4}}\n"
                 "optimizer: {lr: 3e-4, schedule: step, step_size: 10, gamma: 0.5, warmup_steps: 5}\n"
                 "train: {accumulate: 4, early_stop: 3}\n")
    run = T.resolve_run_config(store, yaml_sections=T.load_yaml_config(y), overrides={"warmup_steps": 2})
    t = run.train
    assert (t.lr, t.schedule, t.step_size, t.gamma, t.warmup_steps, t.accumulate, t.early_stop) == \
        (3e-4, "step", 10, 0.5, 2, 4, 3)
    assert T.RunConfig.from_dict(json.loads(json.dumps(run.to_dict()))) == run


@pytest.mark.parametrize("over, message", [
    ({"schedule": "linear"}, "optimizer.schedule: expected one of constant, cosine, step, got 'linear'"),
    ({"schedule": "step"}, "optimizer.step_size: expected the optimizer steps between decays"),
    ({"min_lr": 1e-5}, "optimizer.min_lr: expected 0: it is where schedule 'cosine' ends"),
    ({"schedule": "cosine", "min_lr": 1.0}, "optimizer.min_lr: expected a number >= 0 and below lr (0.0001)"),
    ({"gamma": 0.5}, "optimizer.gamma: expected null: it applies to schedule 'step'"),
    ({"accumulate": 0}, "train.accumulate: expected an integer >= 1, got 0"),
    ({"early_stop": 0}, "train.early_stop: expected null (off) or an integer >= 1"),
    ({"warmup_steps": -1}, "optimizer.warmup_steps: expected an integer >= 0, got -1"),
    ({"lr": "fast"}, "optimizer.lr: expected a number, got 'fast'"),
    ({"epochs": "two"}, "train.epochs: expected an integer, got 'two'"),
    ({"learning_rate": 1}, "unknown training option 'learning_rate'; known: ["),
])
def test_run_config_values_are_named(store, over, message):
    with pytest.raises(ConfigError) as e:
        run_config(store, **over)
    assert str(e.value).startswith(message), e.value


def test_config_json_values_are_named(store):
    d = run_config(store).to_dict()
    d["train"]["lr"] = "fast"
    with pytest.raises(ConfigError, match=r"^config.json: train.lr: expected a number, got 'fast'$"):
        T.RunConfig.from_dict(d)
    d["train"]["lr"] = 1e-4
    d["train"]["speed"] = 3
    with pytest.raises(ConfigError, match=r"unknown key\(s\) train.speed .*known: \["):
        T.RunConfig.from_dict(d)
    # a config.json from before these settings still loads, with their defaults
    d = run_config(store).to_dict()
    for k in ("schedule", "warmup_steps", "min_lr", "step_size", "gamma", "accumulate", "early_stop"):
        del d["train"][k]
    assert T.RunConfig.from_dict(d).train == run_config(store).train


def test_fit_trains_whatever_grad_mode_the_caller_left(store, tmp_path):
    torch.set_grad_enabled(False)
    try:
        r = T.fit(run_config(store, max_steps=1), tmp_path / "g", quiet=True)
        assert r.step == 1 and not torch.is_grad_enabled()  # trained, and the caller's mode is given back
    finally:
        torch.set_grad_enabled(True)
