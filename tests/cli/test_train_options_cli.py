"""``smssynth train`` options for the schedule, accumulation and early stopping; configuration
errors as one line with exit code 2."""

from __future__ import annotations

import csv
import json

import pytest

from cli.finetune import finetune
from cli.train import train
from tests.conftest import invoke, one_line_error, phantom_store

CFG = "model: {name: sms-crnn, config: {n_filters: 4, n_iterations: 1}}\ndata: {val_fraction: 0.34}\ntrain: {epochs: 1}\n"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return phantom_store(tmp_path_factory.mktemp("cli-train-opts"), frames=4, shape=(29, 25), coils=2, seed=4,
                         salt=b"cli-train-options")


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CFG)
    return p


def test_help_names_the_new_options():
    for cmd in (train, finetune):
        out = invoke(cmd, "--help").output
        for opt in ("--lr-schedule", "[constant|cosine|step]", "--warmup-steps", "--min-lr", "--lr-step-size",
                    "--lr-gamma", "--accumulate", "--early-stop", "PATIENCE", "steps.csv"):
            assert opt in out, (cmd.name, opt)


def test_schedule_accumulation_early_stop_run_and_resume(store, config, tmp_path):
    out = tmp_path / "run"
    r = invoke(train, "--data", store, "--config", config, "--lr-schedule", "cosine", "--warmup-steps", "1",
               "--min-lr", "1e-6", "--accumulate", "2", "--early-stop", "3", "--epochs", "2", "--max-steps", "3",
               "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert "done: epoch 2, step 3" in r.output  # 3 train examples: 2 steps per epoch, stopped by --max-steps
    cfg = json.loads((out / "config.json").read_text())
    t = cfg["train"]
    assert (t["schedule"], t["warmup_steps"], t["min_lr"], t["accumulate"], t["early_stop"]) == \
        ("cosine", 1, 1e-6, 2, 3)
    assert cfg["lr_schedule"]["total_steps"] == 3
    with open(out / "steps.csv", newline="") as fh:
        steps = list(csv.DictReader(fh))
    assert [s["step"] for s in steps] == ["1", "2", "3"] and [s["epoch"] for s in steps] == ["1", "1", "2"]

    one_line_error(invoke(train, "--out", out, "--resume", "--lr-schedule", "step"), "--lr-schedule",
                   "cannot change", "--early-stop")
    one_line_error(invoke(train, "--out", out, "--resume", "--accumulate", "1"), "--accumulate", "cannot change")
    r = invoke(train, "--out", out, "--resume", "--early-stop", "0", "--max-steps", "4", "-q")  # 0 = off
    assert r.exit_code == 0, r.output
    assert "done: epoch 2, step 4" in r.output and "lr_schedule" not in r.output
    assert "now spans 4 optimizer steps (was 3)" in r.output
    assert json.loads((out / "config.json").read_text())["train"]["early_stop"] is None


@pytest.mark.parametrize("yaml_text, needle", [
    ("optimizer: {lr: fast}\n", "optimizer.lr: expected a number, got 'fast'"),
    ("train: {epochs: two}\n", "train.epochs: expected an integer, got 'two'"),
    ("train: {accumulate: 0}\n", "train.accumulate: expected an integer >= 1, got 0"),
    ("optimizer: {schedule: linear}\n", "optimizer.schedule: expected one of constant, cosine, step, got 'linear'"),
    ("optimizer: {step: 3}\n", "unknown key(s) optimizer.step; known in section 'optimizer'"),
])
def test_config_errors_are_one_line_exit_2(store, tmp_path, yaml_text, needle):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CFG + yaml_text)
    out = tmp_path / "run"
    r = invoke(train, "--data", store, "--config", bad, "--out", out)
    one_line_error(r, "bad.yaml", needle)
    assert len(r.output.strip().splitlines()) == 1, r.output  # no usage block: the message alone
    assert not out.exists()


def test_option_combinations_are_refused(store, config, tmp_path):
    out = tmp_path / "run"
    one_line_error(invoke(train, "--data", store, "--config", config, "--lr-schedule", "step", "--out", out),
                   "optimizer.step_size", "--lr-step-size")
    one_line_error(invoke(train, "--data", store, "--config", config, "--lr-gamma", "0.5", "--out", out),
                   "optimizer.gamma", "schedule 'step'")
    one_line_error(invoke(train, "--data", store, "--config", config, "--early-stop", "2", "--val-fraction", "0",
                          "--out", out), "--early-stop 2", "--val-fraction")
    one_line_error(invoke(train, "--data", store, "--config", config, "--accumulate", "0", "--out", out),
                   "--accumulate")
    assert not out.exists()
