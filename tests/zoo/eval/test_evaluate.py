"""zoo.eval.evaluate: the numbers equal training validation and zoo.metrics, tests equal scipy, output schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from scipy.stats import ttest_rel

from tests.zoo.test_data import make_store
from tests.zoo.eval.test_recon import SPLITS, TINY, independent_zero_filled, save_tiny
from zoo.eval import evaluate as E
from zoo.eval import recon as R
from zoo import train as T
from zoo.checkpoint import read_metadata
from zoo.data import DataConfig, SmsDataset
from zoo.metrics import nmse, psnr, ssim, ssim_fastmri

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path, _ = make_store(tmp_path_factory.mktemp("eval") / "s.zarr", n=6, m=2, splits=SPLITS, seed=3)
    return str(path)


@pytest.fixture(scope="module")
def run(store, tmp_path_factory):
    """A tiny SMS-CRNN trained 2 steps by zoo.train.fit (train split: 2 examples, val split: 2)."""
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = T.resolve_run_config(store, yaml_sections={"model": {"name": "sms-crnn", "config": TINY}},
                               overrides={"epochs": 1, "lr": 1e-2})
    r = T.fit(cfg, out, quiet=True)
    assert r.step == 2 and r.n_val == 2
    return out


def by_label(result):
    return {m["label"]: m for m in result["methods"]}


def test_equals_training_validation(store, run):
    """evaluate's numbers for a checkpoint are its validation metrics on the same examples."""
    ckpt = str(run / "checkpoints" / "last")
    meta = read_metadata(ckpt)
    val_idx = json.loads((run / "baseline.json").read_text())["val_indices"]
    methods = [R.load_method(ckpt), R.load_method("zero-filled")]
    res = E.evaluate(store, methods, examples=val_idx, device=CPU)
    got = by_label(res)
    assert res["indices"] == val_idx == [2, 3]
    for metric in R.METRICS:
        for label, recorded in ((ckpt, meta["metrics"]["val"]), ("zero-filled", meta["metrics"]["zero_filled"])):
            s = got[label]["summary"][metric]
            np.testing.assert_allclose([s["mean"], s["sd"]], [recorded[metric]["mean"], recorded[metric]["sd"]],
                                       rtol=1e-5, atol=1e-9)
            assert s["n"] == recorded[metric]["n"] == 2
    # --split val selects the same examples
    assert E.evaluate(store, methods[:1], split="val", device=CPU)["methods"][0]["per_example"] == \
        [{**e, "seconds": pytest.approx(e["seconds"], abs=10)} for e in got[ckpt]["per_example"]]


@pytest.mark.parametrize("coil_mode", ["virtual", "per-coil"])
def test_zero_filled_equals_independent_metrics(store, coil_mode):
    res = E.evaluate(store, [R.load_method("zero-filled", coil_mode=coil_mode)], examples=[5, 0, 2], device=CPU)
    rows = res["methods"][0]["per_example"]
    assert [r["index"] for r in rows] == [5, 0, 2]
    ds = SmsDataset(store, DataConfig(coil_mode=coil_mode))
    for r in rows:
        zf = independent_zero_filled(store, r["index"], coil_mode)[None]
        ref = ds[r["index"]]["target"][None]
        for name, f in (("nmse", nmse), ("psnr", psnr), ("ssim", ssim)):
            np.testing.assert_allclose(r[name], float(f(zf, ref)), rtol=1e-5)


def test_per_coil_checkpoint_equals_validation_function(store, tmp_path):
    method = R.load_method(save_tiny(tmp_path / "pc", store, coil_mode="per-coil"))
    res = E.evaluate(store, [method], device=CPU)
    ds = SmsDataset(store, DataConfig(coil_mode="per-coil"))
    rows = T.evaluate_examples(method.model, ds, list(range(6)), CPU, batch_size=3, num_workers=0)
    got = res["methods"][0]["per_example"]
    assert [g["index"] for g in got] == [r[0] for r in rows]
    np.testing.assert_allclose([[g[k] for k in R.METRICS] for g in got], [r[1:] for r in rows], rtol=1e-5)
    assert res["methods"][0]["coil_mode"] == "per-coil"


def test_paired_tests_and_table(store, tmp_path):
    a = R.load_method(save_tiny(tmp_path / "a", store, seed=1))
    b = R.load_method(save_tiny(tmp_path / "b", store, seed=2))
    a.label, b.label = "A", "B"  # short labels for the table
    methods = [a, b] + [R.load_method(n, cs_iters=3) for n in R.BASELINE_NAMES]
    res = E.evaluate(store, methods, named=["A", "B"], split="test", device=CPU)
    pairs = {(t["a"], t["b"]) for t in res["tests"]}
    assert pairs == {("A", "B"), ("A", "zero-filled"), ("B", "zero-filled")}
    assert len(res["tests"]) == 3 * 3
    per = by_label(res)
    for t in res["tests"]:
        x = [e[t["metric"]] for e in per[t["a"]]["per_example"]]
        y = [e[t["metric"]] for e in per[t["b"]]["per_example"]]
        ref = ttest_rel(x, y)
        expect = [ref.statistic, ref.pvalue, np.mean(np.subtract(x, y))]
        np.testing.assert_allclose([t["t"], t["p"], t["mean_diff"]], expect)
        assert t["n"] == 2
    table = E.format_table(res)
    for label in ("A", "B", "zero-filled", "cs-tfft", "cs-ttv"):
        assert any(line.startswith(label + " ") for line in table.splitlines()), label
    assert "paired t-tests" in table and "ΔPSNR" in table
    lines = table.splitlines()
    tests = lines[lines.index(next(x for x in lines if x.startswith("paired t-tests"))) + 2:]  # after the header
    assert [x.split()[:2] for x in tests] == [["A", "B"], ["A", "zero-filled"], ["B", "zero-filled"]]
    assert "device cpu" in table and "failed" in table


def test_pairs_rule():
    assert E.test_pairs(["x", "y", "z"], ["x", "y", "z", "zero-filled"]) == [
        ("x", "y"), ("x", "z"), ("y", "z"), ("x", "zero-filled"), ("y", "zero-filled"), ("z", "zero-filled")]
    assert E.test_pairs(["x"], ["x"]) == []  # no zero-filled evaluated
    assert E.test_pairs(["zero-filled", "x"], ["zero-filled", "x"]) == [("zero-filled", "x")]


def test_json_schema(store, tmp_path):
    ck = save_tiny(tmp_path / "c", store)
    res = E.evaluate(store, [R.load_method(ck), R.load_method("zero-filled")], examples=[0], device=CPU)
    doc = json.loads(E.to_json(res))  # strict JSON: a single example gives NaN t-tests -> null
    assert doc["format"] == "smssynth.evaluation" and doc["format_version"] == "1.0"
    for key in ("store", "split", "n_examples", "indices", "device", "timed", "failure_threshold_nmse", "metrics",
                "methods", "tests", "warnings"):
        assert key in doc, key
    assert doc["failure_threshold_nmse"] == 1.0 and doc["metrics"]["ssim_kind"] == "gaussian"
    assert doc["metrics"]["nmse_unit"].startswith("plain ratio") and doc["metrics"]["nmse_table_scale"] == 1e-3
    assert doc["store"] == store and doc["indices"] == [0] and doc["device"].startswith("cpu")
    m = doc["methods"][0]
    for key in ("label", "kind", "name", "architecture", "config", "sha256", "source", "coil_mode", "normalization",
                "summary", "per_example"):
        assert key in m, key
    assert m["sha256"] == read_metadata(ck)["sha256"] and doc["methods"][1]["sha256"] is None
    assert set(m["summary"]) == {"nmse", "psnr", "ssim", "seconds", "failure_rate", "failed", "excluding_failed"}
    assert set(m["summary"]["excluding_failed"]) == {"nmse", "psnr", "ssim", "seconds"}
    assert set(m["summary"]["failed"]) == {"count", "n", "rate", "indices", "threshold_nmse"}
    assert set(m["per_example"][0]) == {"index", "nmse", "psnr", "ssim", "seconds"}
    assert {t["metric"] for t in doc["tests"]} == {"nmse", "psnr", "ssim"}
    assert all(t["p"] is None and t["n"] == 1 for t in doc["tests"])


def test_every_coil_mode_is_scored_against_the_stores_target(store):
    """Mixed coil modes share one reference: each method's RSS magnitude vs the store's target."""
    modes = [("virtual", None), ("compressed", 2), ("compressed", 3), ("per-coil", None)]
    methods = []
    for mode, k in modes:
        m = R.load_method("zero-filled", coil_mode=mode, coils=k)
        m.label = f"zf-{mode}-{k}"
        methods.append(m)
    res = E.evaluate(store, methods, examples=[1, 2], device=CPU)
    assert res["warnings"] == []
    target = torch.from_numpy(zarr.open_group(store, mode="r")["target"][:])
    got = by_label(res)
    for (mode, k), m in zip(modes, methods):
        for row in got[m.label]["per_example"]:
            zf = independent_zero_filled(store, row["index"], mode, k)[None]
            ref = target[row["index"]][None]
            for name, f in (("nmse", nmse), ("psnr", psnr), ("ssim", ssim)):
                np.testing.assert_allclose(row[name], float(f(zf, ref)), rtol=1e-5)
    # K = C compressed and per-coil see the same RSS zero-filled image (W unitary)
    for a, b in zip(got["zf-compressed-3"]["per_example"], got["zf-per-coil-None"]["per_example"]):
        assert a["psnr"] == pytest.approx(b["psnr"], abs=1e-3)
    # one virtual coil is shaded: it scores worse against the image than all coils
    assert got["zf-virtual-None"]["summary"]["psnr"]["mean"] < got["zf-per-coil-None"]["summary"]["psnr"]["mean"]
    assert "compressed K=2" in E.format_table(res)


def test_failure_rate_counts_diverged(store, monkeypatch):
    zf = R.load_method("zero-filled")

    class Blowup(torch.nn.Module):
        def forward(self, x0, k3, mask3):
            return x0 * 1e3  # NMSE ~ 1e6 > 1000

    bad = R.Method(label="blowup", kind="checkpoint", model=Blowup(), coil_mode="virtual")
    res = by_label(E.evaluate(store, [bad, zf], examples=[0, 1], device=CPU))
    assert res["blowup"]["summary"]["failure_rate"] == 1.0 and res["zero-filled"]["summary"]["failure_rate"] == 0.0
    assert res["blowup"]["summary"]["failed"]["indices"] == [0, 1]
    assert res["blowup"]["summary"]["excluding_failed"]["psnr"]["n"] == 0


def test_fail_nmse_splits_the_summaries(store):
    """A threshold between the examples' NMSEs: the failed ones are counted and named, and the
    means without them (the paper's way) differ from those over all examples."""
    zf = R.load_method("zero-filled")
    full = E.evaluate(store, [zf], examples=[0, 1, 2, 3], device=CPU)
    rows = full["methods"][0]["per_example"]
    values = sorted(r["nmse"] for r in rows)
    thr = (values[1] + values[2]) / 2  # the two worst fail
    res = E.evaluate(store, [zf], examples=[0, 1, 2, 3], device=CPU, fail_nmse=thr)
    s = res["methods"][0]["summary"]
    worst = sorted(r["index"] for r in rows if r["nmse"] > thr)
    assert s["failed"] == {"count": 2, "n": 4, "rate": 0.5, "indices": worst, "threshold_nmse": thr}
    kept = [r for r in rows if r["nmse"] <= thr]
    assert s["excluding_failed"]["psnr"]["n"] == 2
    assert s["excluding_failed"]["psnr"]["mean"] == pytest.approx(np.mean([r["psnr"] for r in kept]))
    assert s["psnr"] == full["methods"][0]["summary"]["psnr"]  # over all examples: unchanged
    table = E.format_table(res)
    assert f"NMSE > {thr / 1e-3:g} x 10^-3" in table and "2/4 (50.0%)" in table
    assert "without the failed examples" in table and "over all examples" in table
    # NMSE printed x 10^-3: the plain mean 0.4 is printed 400
    line = next(x for x in table.splitlines() if x.startswith("zero-filled"))
    assert f"{s['excluding_failed']['nmse']['mean'] / 1e-3:.4g} ±" in line
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="threshold"):
            E.evaluate(store, [zf], examples=[0], device=CPU, fail_nmse=bad)


def test_fastmri_ssim_option(store):
    zf = R.load_method("zero-filled", coil_mode="per-coil")
    res = E.evaluate(store, [zf], examples=[1, 4], device=CPU, ssim_kind="fastmri")
    assert res["metrics"]["ssim_kind"] == "fastmri" and "fastMRI" in res["metrics"]["ssim_description"]
    target = torch.from_numpy(zarr.open_group(store, mode="r")["target"][:])
    for row in res["methods"][0]["per_example"]:
        zf_img = independent_zero_filled(store, row["index"], "per-coil")[None]
        assert row["ssim"] == pytest.approx(float(ssim_fastmri(zf_img, target[row["index"]][None])), rel=1e-5)
        assert row["psnr"] == pytest.approx(float(psnr(zf_img, target[row["index"]][None])), rel=1e-5)
    assert "SSIM (fastMRI 7x7 uniform)" in E.format_table(res)
    with pytest.raises(ValueError, match="ssim_kind"):
        E.evaluate(store, [zf], examples=[1], device=CPU, ssim_kind="ms-ssim")


def test_sense_baselines_are_reported_and_the_oracle_is_marked(store):
    """The SENSE baselines read every coil and the store's maps whatever coil mode the others use;
    sense-oracle is labelled an oracle.  The test store has 3 coils at R * M = 6 and a random,
    temporally white target: no claim about quality here (tests/zoo/eval/test_sense.py has those)."""
    methods = [R.load_method(n, sense_iters=5, coil_mode="virtual")
               for n in ("zero-filled", "sense-oracle", "sense-espirit")]
    assert [m.coil_mode for m in methods] == ["virtual", "per-coil", "per-coil"]
    res = E.evaluate(store, methods, examples=[0, 3], device=CPU)
    got = by_label(res)
    assert got["sense-oracle"]["oracle"] is True and got["sense-espirit"]["oracle"] is False
    assert "ORACLE" in got["sense-oracle"]["config"]["maps"]
    assert got["sense-oracle"]["config"]["n_iter"] == 5
    assert [r["index"] for r in got["sense-espirit"]["per_example"]] == [0, 3]
    assert all(np.isfinite(r["psnr"]) for m in ("sense-oracle", "sense-espirit") for r in got[m]["per_example"])
    table = E.format_table(res)
    assert any(line.startswith("sense-oracle (ORACLE)") for line in table.splitlines())
    assert "ORACLE: sense-oracle" in table
