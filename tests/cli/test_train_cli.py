"""``smssynth train`` / ``smssynth finetune`` through click: runs, resume, and one-line usage errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cli.finetune import finetune
from cli.train import train
from tests.conftest import phantom_store, invoke, one_line_error

CFG = "model: {name: sms-crnn, config: {n_filters: 4, n_iterations: 1}}\ndata: {val_fraction: 0.34}\ntrain: {epochs: 1}\n"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = phantom_store(tmp_path_factory.mktemp("cli-train"), frames=4, shape=(29, 25), coils=2, seed=3,
                        salt=b"cli-train")
    return out


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(CFG)
    return p


def test_help():
    r = invoke(train, "--help")
    assert r.exit_code == 0
    for opt in ("--data", "--model", "--config", "--epochs", "--resume", "--crop", "--amp", "--precision", "--coil-mode",
                "--mask", "--max-steps", "--val-fraction", "--device", "torchrun"):
        assert opt in r.output, opt
    r = invoke(finetune, "--help")
    assert r.exit_code == 0 and "--from" in r.output and "--freeze" in r.output


def test_train_resume_and_finetune(store, config, tmp_path):
    out = tmp_path / "run"
    r = invoke(train, "--data", store, "--config", config, "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert "done: epoch 1, step 3" in r.output and "zero-filled" in r.output
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1

    # the run exists: continuing needs --resume, which may raise --epochs but not change --lr
    one_line_error(invoke(train, "--data", store, "--config", config, "--out", out), "--resume")
    one_line_error(invoke(train, "--out", out, "--resume", "--lr", "0.1"), "--lr", "cannot change")
    r = invoke(train, "--out", out, "--resume", "--epochs", "2", "-q")
    assert r.exit_code == 0, r.output
    assert "done: epoch 2, step 6" in r.output
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 2

    ft = tmp_path / "ft"
    r = invoke(finetune, "--from", out / "checkpoints" / "best", "--data", store, "--freeze", "crnn.*",
               "--epochs", "1", "--val-fraction", "0.34", "--out", ft, "-q")
    assert r.exit_code == 0, r.output
    cfg = json.loads((ft / "config.json").read_text())
    assert cfg["command"] == "finetune" and cfg["train"]["freeze"] == ["crnn.*"]
    assert cfg["parent"]["sha256"] == json.loads((out / "checkpoints" / "best.json").read_text())["sha256"]
    one_line_error(invoke(finetune, "--out", ft, "--resume", "--freeze", "dc.*"), "--freeze")
    one_line_error(invoke(train, "--out", ft, "--resume"), "smssynth finetune")


def test_bad_inputs_are_one_line(store, config, tmp_path):
    out = tmp_path / "run"
    one_line_error(invoke(train, "--data", tmp_path / "missing.zarr", "--model", "sms-crnn", "--out", out),
                   "--data", "missing.zarr")
    one_line_error(invoke(train, "--data", store, "--model", "nope", "--out", out), "--model", "sms-crnn")
    one_line_error(invoke(train, "--model", "sms-crnn", "--out", out), "--data")
    one_line_error(invoke(train, "--data", store, "--out", out), "--model")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {learning_rate: 1}\n")
    one_line_error(invoke(train, "--data", store, "--config", bad, "--out", out), "--config", "bad.yaml",
                   "learning_rate")
    bad.write_text("model: {name: sms-crnn, config: {n_filterz: 4}}\n")
    one_line_error(invoke(train, "--data", store, "--config", bad, "--out", out), "n_filterz")
    one_line_error(invoke(train, "--data", store, "--config", config, "--epochs", "0", "--out", out), "--epochs")
    one_line_error(invoke(train, "--data", store, "--config", config, "--crop", "1000", "--out", out), "--crop")
    one_line_error(invoke(train, "--out", tmp_path / "nothing", "--resume"), "--out", "no run to resume")
    one_line_error(invoke(finetune, "--data", store, "--out", out), "--from")
    one_line_error(invoke(finetune, "--from", tmp_path / "nope", "--data", store, "--out", out), "--from", "nope")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of --amp")
def test_amp_on_cpu_is_refused(store, config, tmp_path):
    one_line_error(invoke(train, "--data", store, "--config", config, "--amp", "--out", tmp_path / "r"),
                   "--amp", "CUDA")


def test_bad_freeze_pattern(store, config, tmp_path):
    invoke(train, "--data", store, "--config", config, "--max-steps", "1", "--out", tmp_path / "p", "-q")
    r = invoke(finetune, "--from", tmp_path / "p" / "checkpoints" / "last", "--data", store,
               "--freeze", "cell.*", "--out", tmp_path / "ft")
    one_line_error(r, "--freeze", "cell.*", "matches no parameter")


def test_mostly_incomplete_store_is_refused_unless_allowed(store, config, tmp_path):
    """A store left by an interrupted generation (here 2 of 6 examples complete) is not trained on
    silently: refused below 90 % complete, or trained on with the count reported when allowed."""
    import shutil

    part = tmp_path / "part.zarr"
    shutil.copytree(store, part)
    chunks = sorted((part / "complete" / "c").iterdir())
    for f in chunks[2:]:
        f.unlink()  # completion markers of examples 2.. gone: what an interrupted writer leaves
    out = tmp_path / "run"
    one_line_error(invoke(train, "--data", part, "--config", config, "--max-steps", 1, "--out", out, "-q"),
                   "only 2 of 6 examples are complete", "--allow-incomplete")
    assert not out.exists()
    r = invoke(train, "--data", part, "--config", config, "--max-steps", 1, "--val-fraction", 0.5,
               "--allow-incomplete", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "only 2 of 6 examples are complete" in r.output


def test_virtual_coils(store, config, tmp_path):
    """--virtual-coils K trains compressed to K coils; it is validated against --coil-mode and the store."""
    assert "--virtual-coils" in invoke(train, "--help").output
    out = tmp_path / "k2"
    r = invoke(train, "--data", store, "--config", config, "--virtual-coils", "2", "--max-steps", "1", "--out", out,
               "-q")
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["data"]["coil_mode"], cfg["data"]["coils"]) == ("compressed", 2)
    one_line_error(invoke(train, "--out", out, "--resume", "--virtual-coils", "1"), "--virtual-coils",
                   "cannot change")
    bad = tmp_path / "bad"
    one_line_error(invoke(train, "--data", store, "--config", config, "--virtual-coils", "3", "--out", bad),
                   "--virtual-coils", "has 2 coils")
    one_line_error(invoke(train, "--data", store, "--config", config, "--coil-mode", "per-coil", "--virtual-coils",
                          "2", "--out", bad), "--virtual-coils", "--coil-mode per-coil")
    one_line_error(invoke(train, "--data", store, "--config", config, "--coil-mode", "compressed", "--out", bad),
                   "coils=K", "--virtual-coils")
    one_line_error(invoke(train, "--data", store, "--config", config, "--virtual-coils", "0", "--out", bad),
                   "--virtual-coils")
    assert not bad.exists()
