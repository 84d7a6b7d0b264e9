"""``smssynth recon`` / ``smssynth evaluate`` through click: outputs, and one-line usage errors (exit 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import zarr

from cli.evaluate import evaluate
from cli.recon import recon
from tests.zoo.test_data import make_store
from tests.zoo.eval.test_recon import SPLITS, save_tiny
from tests.conftest import invoke, one_line_error


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path, _ = make_store(tmp_path_factory.mktemp("cli-eval") / "s.zarr", n=6, m=2, splits=SPLITS, seed=11)
    return str(path)


@pytest.fixture(scope="module")
def ckpt(store, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ck") / "tiny", store)


def test_help():
    r = invoke(recon, "--help")
    assert r.exit_code == 0
    for opt in ("--model", "--out", "--examples", "--split", "--device", "--png", "--gif", "--overwrite",
                "--coil-mode", "--cs-iters", "--complex"):
        assert opt in r.output, opt
    r = invoke(evaluate, "--help")
    assert r.exit_code == 0
    for opt in ("--model", "--json", "--baselines", "--no-baselines", "--cs-iters", "--coil-mode", "--split",
                "--sense-iters", "--sense-lam", "--ssim", "--fail-nmse", "sense-oracle", "sense-espirit"):
        assert opt in r.output, opt
    r = invoke(recon, "--help")
    for opt in ("--sense-iters", "--sense-lam", "--ssim", "--fail-nmse", "sense-oracle", "ORACLE"):
        assert opt in r.output, opt


def test_evaluate_sense_fastmri_and_failure_rule(store):
    """SENSE baselines by name beside zero-filled, fastMRI SSIM, and a failure threshold that
    fails every example: counted in the table and the JSON, means without them n/a."""
    args = [store, "--examples", "0,2", "--baselines", "zero-filled,sense-oracle,sense-espirit", "--sense-iters", "3",
            "--sense-lam", "0.05", "--ssim", "fastmri"]
    r = invoke(evaluate, *args)
    assert r.exit_code == 0, r.output
    assert "sense-oracle (ORACLE)" in r.output and "ORACLE: sense-oracle" in r.output
    assert "SSIM (fastMRI 7x7 uniform)" in r.output and "NMSE (x10^-3)" in r.output
    assert "failed: NMSE > 1000 x 10^-3" in r.output
    doc = json.loads(invoke(evaluate, *args, "--fail-nmse", "1e-9", "--json").output)
    assert doc["metrics"]["ssim_kind"] == "fastmri" and doc["failure_threshold_nmse"] == 1e-9
    by = {m["label"]: m for m in doc["methods"]}
    assert by["sense-oracle"]["oracle"] is True and by["sense-oracle"]["coil_mode"] == "per-coil"
    assert by["sense-espirit"]["config"]["n_iter"] == 3 and by["sense-espirit"]["config"]["lam"] == 0.05
    for m in doc["methods"]:
        assert m["summary"]["failed"]["count"] == 2 and m["summary"]["excluding_failed"]["psnr"]["mean"] is None
    r = invoke(evaluate, *args, "--fail-nmse", "1e-9")
    assert "2/2 (100.0%)" in r.output and "n/a" in r.output


def test_recon_sense_and_metric_options(store, tmp_path):
    out = tmp_path / "s.zarr"
    r = invoke(recon, "--model", "sense-espirit", store, "--out", out, "--examples", "1", "--sense-iters", "2",
               "--ssim", "fastmri", "--fail-nmse", "0.5", "--complex", "-q")
    assert r.exit_code == 0, r.output
    assert "(per-coil)" in r.output and "x10^-3" in r.output and "SSIM (fastmri)" in r.output
    root = zarr.open_group(str(out), mode="r")
    assert root["recon_complex"].shape == (1, 2, 4, 37, 31)
    met = root.attrs["metrics"]
    assert met["ssim_kind"] == "fastmri" and met["failure_threshold_nmse"] == 0.5 and met["failed"]["n"] == 1
    assert root.attrs["method"]["config"]["n_iter"] == 2


def test_metric_and_sense_options_are_validated(store, tmp_path):
    for cmd, extra in ((evaluate, []), (recon, ["--model", "zero-filled", "--out", tmp_path / "x.zarr"])):
        for bad in ("0", "-1", "nan", "inf", "abc"):
            one_line_error(invoke(cmd, *extra, store, "--fail-nmse", bad), "--fail-nmse")
        one_line_error(invoke(cmd, *extra, store, "--ssim", "ms-ssim"), "--ssim")
        for bad in ("-0.1", "nan", "inf"):
            one_line_error(invoke(cmd, *extra, store, "--sense-lam", bad), "--sense-lam")
        one_line_error(invoke(cmd, *extra, store, "--sense-iters", "-1"), "--sense-iters")


def test_recon_checkpoint_with_figures(store, ckpt, tmp_path):
    out = tmp_path / "r.zarr"
    r = invoke(recon, "--model", ckpt, store, "--out", out, "--examples", "4", "--png", tmp_path / "png",
               "--gif", tmp_path / "gif", "-q")
    assert r.exit_code == 0, r.output
    assert "on 1 example ->" in r.output and "PSNR" in r.output and "cpu" in r.output
    root = zarr.open_group(str(out), mode="r")
    assert list(root["index"][:]) == [4] and root["recon"].shape == (1, 2, 4, 37, 31)
    assert root.attrs["method"]["sha256"] == json.loads(open(ckpt + ".json").read())["sha256"]
    assert len(list((tmp_path / "png").glob("*.png"))) == 2 and len(list((tmp_path / "gif").glob("*.gif"))) == 2
    # never clobbered without --overwrite; replaced with it
    one_line_error(invoke(recon, "--model", "zero-filled", store, "--out", out), "--out", "--overwrite")
    r = invoke(recon, "--model", "zero-filled", store, "--out", out, "--overwrite", "--split", "test",
               "--coil-mode", "per-coil", "--complex")
    assert r.exit_code == 0, r.output
    root = zarr.open_group(str(out), mode="r")
    assert list(root["index"][:]) == [4, 5] and root["recon_complex"].shape == (2, 3, 2, 4, 37, 31)


def test_evaluate_table_and_json(store, ckpt):
    r = invoke(evaluate, "--model", ckpt, store, "--split", "test", "--cs-iters", "2")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    for label in (ckpt, "zero-filled", "cs-tfft", "cs-ttv"):
        assert any(x.startswith(label + " ") for x in lines), label
    assert "paired t-tests" in r.output and any(x.split()[:2] == [ckpt, "zero-filled"] for x in lines)

    r = invoke(evaluate, "--model", ckpt, "--model", "cs-ttv", store, "--examples", "0,3,5", "--json",
               "--baselines", "zero-filled", "--cs-iters", "2")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)  # nothing but the document on stdout
    assert [m["label"] for m in doc["methods"]] == [ckpt, "cs-ttv", "zero-filled"]
    assert doc["indices"] == [0, 3, 5] and doc["store"] == store and doc["device"].startswith("cpu")
    assert {(t["a"], t["b"]) for t in doc["tests"]} == {(ckpt, "cs-ttv"), (ckpt, "zero-filled"),
                                                        ("cs-ttv", "zero-filled")}
    assert doc["methods"][1]["config"]["n_iter"] == 2
    assert all(np.isfinite(m["summary"]["psnr"]["mean"]) for m in doc["methods"])

    r = invoke(evaluate, "--model", ckpt, store, "--examples", "1", "--no-baselines", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [m["label"] for m in doc["methods"]] == [ckpt] and doc["tests"] == []


def test_baselines_follow_the_models_coil_mode(store, tmp_path):
    pc = save_tiny(tmp_path / "pc", store, coil_mode="per-coil")
    doc = json.loads(invoke(evaluate, "--model", pc, store, "--examples", "0", "--baselines", "zero-filled",
                            "--json").output)
    assert [m["coil_mode"] for m in doc["methods"]] == ["per-coil", "per-coil"] and not doc["warnings"]
    # mixed coil modes are scored against the same reference (the store's target): nothing to warn about
    doc = json.loads(invoke(evaluate, "--model", pc, store, "--examples", "0", "--baselines", "zero-filled",
                            "--coil-mode", "virtual", "--json").output)
    assert [m["coil_mode"] for m in doc["methods"]] == ["per-coil", "virtual"] and not doc["warnings"]
    k2 = save_tiny(tmp_path / "k2", store, coil_mode="compressed", coils=2)
    r = invoke(evaluate, "--model", k2, store, "--examples", "0", "--baselines", "zero-filled", "--json")
    doc = json.loads(r.output)
    assert [(m["coil_mode"], m["coils"]) for m in doc["methods"]] == [("compressed", 2)] * 2
    r = invoke(evaluate, store, "--examples", "0", "--baselines", "zero-filled", "--virtual-coils", "3")
    assert r.exit_code == 0 and "compressed K=3" in r.output, r.output


def test_virtual_coils_are_validated(store, tmp_path):
    out = tmp_path / "o"
    one_line_error(invoke(evaluate, store, "--virtual-coils", "4"), "--virtual-coils", "has 3 coils")
    one_line_error(invoke(evaluate, store, "--coil-mode", "virtual", "--virtual-coils", "2"), "--virtual-coils",
                   "--coil-mode virtual")
    one_line_error(invoke(recon, "--model", "zero-filled", store, "--out", out, "--coil-mode", "compressed"),
                   "--virtual-coils", "needs")
    one_line_error(invoke(recon, "--model", "zero-filled", store, "--out", out, "--virtual-coils", "0"),
                   "--virtual-coils")
    assert not out.exists()
    r = invoke(recon, "--model", "zero-filled", store, "--out", out, "--virtual-coils", "2", "--examples", "1",
               "--complex", "-q")
    assert r.exit_code == 0 and "compressed K=2" in r.output, r.output
    assert zarr.open_group(str(out), mode="r")["recon_complex"].shape[1] == 2


def test_clean_errors(store, ckpt, tmp_path):
    missing = tmp_path / "nope.zarr"
    one_line_error(invoke(recon, "--model", "zero-filled", missing, "--out", tmp_path / "o"), "STORE", "no such store")
    one_line_error(invoke(evaluate, missing), "STORE", "no such store")
    r = invoke(evaluate, "--model", "no-such-model", store)
    one_line_error(r, "--model", "no-such-model", "zero-filled", "cs-tfft", "cs-ttv", "registered")
    one_line_error(invoke(recon, "--model", "sms-crnn", store, "--out", tmp_path / "o"), "architecture")
    one_line_error(invoke(evaluate, store, "--examples", "0,99"), "--examples", "out of range", "0..5")
    one_line_error(invoke(evaluate, store, "--examples", "a,b"), "--examples")
    one_line_error(invoke(recon, "--model", "zero-filled", store, "--out", tmp_path / "o", "--split", "nosuch"),
                   "--split", "nosuch", "splits present")
    one_line_error(invoke(evaluate, store, "--split", "test", "--examples", "1"), "--examples", "--split")
    one_line_error(invoke(evaluate, store, "--baselines", "zero-filled,magic"), "--baselines", "magic")
    one_line_error(invoke(evaluate, store, "--no-baselines"), "nothing to evaluate")
    one_line_error(invoke(evaluate, "--model", ckpt, "--model", ckpt, store), "--model", "more than once")
    one_line_error(invoke(recon, "--model", "zero-filled", store, "--out", store, "--overwrite"), "source store")
    if not torch.cuda.is_available():
        one_line_error(invoke(evaluate, store, "--device", "cuda"), "--device", "CUDA is not available")
    one_line_error(invoke(evaluate, store, "--device", "tpu"), "--device")

    # a checkpoint whose weights no longer match the SHA-256 recorded beside them
    for suffix in (".safetensors", ".json"):
        shutil.copy(ckpt + suffix, tmp_path / f"bad{suffix}")
    raw = bytearray((tmp_path / "bad.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    one_line_error(invoke(evaluate, "--model", tmp_path / "bad", store), "--model", "SHA-256 mismatch")
    assert not (tmp_path / "o").exists()  # nothing written by a refused command
