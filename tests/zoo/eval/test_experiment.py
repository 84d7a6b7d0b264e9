"""``smssynth experiment table1``: every stage at smoke scale, resume, claims and their tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from cli.main import cli, main
from zoo.eval.experiment import SCALES, STAGES, Table1
from zoo.eval.experiment_report import claims_for, paired


def _method(psnr):
    return {"per_example": [{"index": i, "psnr": float(v)} for i, v in enumerate(psnr)]}


def test_paired_matches_scipy_on_shared_examples():
    rng = np.random.default_rng(0)
    a, b = rng.normal(30, 1, 12), rng.normal(29, 1, 12)
    ma, mb = _method(a), _method(b)
    mb["per_example"] = mb["per_example"][2:]  # b lacks examples 0 and 1: only shared ones count
    t = paired(ma, mb)
    ref = stats.ttest_rel(a[2:], b[2:])
    assert t["n"] == 10
    assert t["mean_diff"] == pytest.approx(float(np.mean(a[2:] - b[2:])))
    assert t["p"] == pytest.approx(float(ref.pvalue))


def test_claims_hold_only_with_margin_and_significance():
    n = 10
    rng = np.random.default_rng(1)
    base = np.linspace(20, 22, n)
    methods = {
        "zero-filled": _method(base),
        "sms-crnn": _method(base + 6.5 + rng.normal(0, 0.1, n)),
        "conv3d": _method(base + 6.45 + rng.normal(0, 0.5, n)),  # not significantly below sms-crnn
        "independent": _method(base + 1.0 + rng.normal(0, 0.1, n)),
    }
    c = {x["claim"]: x for x in claims_for("cine", methods)}
    assert c["sms-crnn >= zero-filled + 6 dB"]["holds"]
    assert c["conv3d > independent"]["holds"]
    assert not c["sms-crnn > conv3d"]["holds"]  # +0.1 dB mean but p > 0.05
    assert "sms-crnn > cs-ttv" not in c  # not evaluated: not claimed
    methods["sms-crnn"] = _method(base + 5.9 + rng.normal(0, 0.05, n))
    c = {x["claim"]: x for x in claims_for("cine", methods)}
    assert not c["sms-crnn >= zero-filled + 6 dB"]["holds"]  # significant, but under the margin


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("table1")
    cine = root / "cine"
    assert main(["phantom", str(cine), "--patients", "3", "--slices", "3", "--frames", "4", "--acquired", "32x32",
                 "--matrix", "32x32"]) in (None, 0)
    out = root / "run"
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "smoke", "--out", str(out), "--cine", str(cine),
                                   "--no-real-fpp"])
    assert res.exit_code == 0, res.output
    return cine, out, res


def test_smoke_runs_every_stage_and_writes_tables(smoke):
    cine, out, res = smoke
    for stage in STAGES:
        assert (out / "stages" / f"{stage}.json").is_file(), stage
    md = (out / "table1.md").read_text()
    assert "## Cine (held-out patient)" in md and "## Perfusion, synthetic test patients (phantom)" in md
    assert "| sms-crnn |" in md and "no-pretrain" in md and "grating-phase" in md
    rep = json.loads((out / "table1.json").read_text())
    assert set(rep["sets"]) == {"cine", "fpp"}
    rows = {r["method"] for r in rep["sets"]["cine"]["rows"]}
    assert {"sms-crnn", "conv3d", "independent", "zero-filled"} <= rows
    claims = {c["claim"] for c in rep["sets"]["fpp"]["claims"]}
    assert {"fine-tuned > no-finetune", "fine-tuned > no-pretrain", "fine-tuned > grating-phase"} <= claims
    for f in rep["sets"]["cine"]["figures"]:
        assert (out / f).stat().st_size > 1000
    # the patient split: the test patient's images are in no training store
    train = (out / "data" / "cine-train.csv").read_text()
    test = (out / "data" / "cine-test.csv").read_text()
    assert "PHANTOM03" in test and "PHANTOM03" not in train and "PHANTOM01" in train
    cards = (out / "data" / "CARDS.md").read_text()
    assert "## `cine-train.zarr`" in cards and "kind: targets" in cards and "## `fpp-train-grating.zarr`" in cards
    assert "PHANTOM" not in cards  # inputs named by pseudonym or seed, never by folder
    # the perfusion phantoms carry thermal noise, each patient at its own SNR, and the card says so
    assert "SNR drawn log-uniformly from 15 to 60" in cards
    fpp_cmds = json.loads((out / "stages" / "fpp-data.json").read_text())["commands"]
    assert sum("smssynth phantom" in c and "--snr 15:60" in c for c in fpp_cmds) == 2
    # the training runs used on-the-fly synthesis with the scale's steps
    cfg = json.loads((out / "runs" / "cine-sms-crnn" / "config.json").read_text())
    assert json.dumps(cfg).count("on-the-fly") >= 1
    # with the physics-keeping augmentations: cine may roll (periodic), perfusion may not
    for run, kinds in (("cine-conv3d", ["flip", "transpose", "roll", "gamma"]),
                       ("fpp-sms-crnn-fpp", ["flip", "transpose", "gamma"]),
                       ("fpp-no-pretrain", ["flip", "transpose", "gamma"])):
        assert json.loads((out / "runs" / run / "config.json").read_text())["data"]["augment"] == kinds, run
    # conv3d has sms-crnn's 2D+time convolution, so that the two differ only in how they see the slices
    conv3d = json.loads((out / "runs" / "cine-conv3d" / "config.json").read_text())["model"]
    assert conv3d["name"] == "conv3d" and conv3d["config"]["n_conv3d_layers"] == SCALES["smoke"].conv3d_st_layers == 1


def test_second_start_resumes_without_redoing_anything(smoke):
    cine, out, _ = smoke
    before = (out / "table1.md").read_text()
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "smoke", "--out", str(out), "--cine", str(cine),
                                   "--no-real-fpp"])
    assert res.exit_code == 0, res.output
    assert res.output.count("skipped") == len(STAGES)
    assert (out / "table1.md").read_text() == before


def test_other_options_on_the_same_out_are_refused(smoke):
    cine, out, _ = smoke
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "cpu", "--out", str(out), "--cine", str(cine),
                                   "--no-real-fpp"])
    assert res.exit_code == 2
    assert "different scale" in res.output and "Traceback" not in res.output


def test_missing_cine_collection_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "smoke", "--out", str(tmp_path / "o"),
                                   "--cine", str(tmp_path / "nope"), "--no-real-fpp"])
    assert res.exit_code == 2
    assert "--cine" in res.output and "Traceback" not in res.output


def test_failed_stage_names_its_log_and_resumes(tmp_path):
    cine = tmp_path / "cine"
    assert main(["phantom", str(cine), "--patients", "2", "--slices", "2", "--frames", "4", "--acquired", "32x32",
                 "--matrix", "32x32"]) in (None, 0)
    exp = Table1(out=tmp_path / "run", scale=SCALES["smoke"], cine=cine, fpp=None, say=lambda m: None)
    exp.run(stop_after="cine-data")
    assert exp.done("cine-data") and not exp.done("cine-sms-crnn")
    # a training stage that fails (a broken store) names the stage and its log, and marks nothing
    (tmp_path / "run" / "data" / "cine-train.zarr" / "zarr.json").write_text("{broken")
    from zoo.eval.experiment import ExperimentError

    with pytest.raises(ExperimentError, match=r"stage cine-sms-crnn: .*logs/cine-sms-crnn\.log"):
        exp.run(stop_after="cine-sms-crnn")
    assert not exp.done("cine-sms-crnn")


def test_a_folder_that_is_not_an_experiment_is_refused_and_kept(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("the user's")
    (out / "runs").mkdir()
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "smoke", "--out", str(out),
                                   "--cine", str(tmp_path), "--no-real-fpp"])
    assert res.exit_code == 2 and "not an experiment folder" in res.output and "Traceback" not in res.output
    assert (out / "notes.txt").read_text() == "the user's" and (out / "runs").is_dir()


def test_precision_option_reaches_the_trainings_and_is_part_of_the_scale(smoke, tmp_path):
    from dataclasses import replace
    from pathlib import Path

    cine, out, _ = smoke
    bf16 = Table1(out=tmp_path / "b", scale=replace(SCALES["smoke"], precision="bfloat16"), cine=cine, fpp=None)
    args = [str(a) for a in bf16._train_args(Path("d.zarr"), 2, ())]
    assert args[args.index("--precision") + 1] == "bfloat16"
    fp32 = Table1(out=tmp_path / "f", scale=SCALES["smoke"], cine=cine, fpp=None)
    assert "--precision" not in fp32._train_args(Path("d.zarr"), 2, ())  # float32: the commands as before
    # the smoke experiment ran in float32: asking for bfloat16 on it is another experiment
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "smoke", "--out", str(out), "--cine", str(cine),
                                   "--no-real-fpp", "--precision", "bfloat16"])
    assert res.exit_code == 2 and "different scale" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["experiment", "table1", "--scale", "smoke", "--out", str(out), "--cine", str(cine),
                                   "--no-real-fpp", "--precision", "float32"])
    assert res.exit_code == 0 and res.output.count("skipped") == len(STAGES)
    assert "AVX512-BF16" not in res.output


def test_bfloat16_on_a_cpu_without_native_bf16_is_warned_of(smoke, monkeypatch):
    import zoo.train.params

    cine, out, _ = smoke
    monkeypatch.setattr(zoo.train.params, "cpu_has_native_bf16", lambda: False)
    args = ["experiment", "table1", "--scale", "smoke", "--out", str(out), "--cine", str(cine), "--no-real-fpp"]
    res = CliRunner().invoke(cli, args + ["--precision", "bfloat16"])  # refused after the warning: another scale
    assert "warning:" in res.output and "--precision float32" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, args)  # the smoke scale trains in float32: nothing to warn of
    assert res.exit_code == 0 and "warning:" not in res.output


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_every_stage_command_of_a_scale_is_one_the_cli_accepts(smoke, tmp_path, monkeypatch, scale):
    """A dry run: the command lines of every stage up to the evaluation are parsed and checked
    by the real commands' option parsers (types, ranges, callbacks), none of them run.  The
    paper scale is not run anywhere else in the tests (it needs a GPU), so this is where a
    stale option or a value out of range in it shows."""
    from pathlib import Path

    cine, _, _ = smoke
    fpp = tmp_path / "fpp"
    fpp.mkdir()
    parsed = []

    def dry(self, stage, args, commands, stdout=None):
        args = [str(a) for a in args]
        commands.append(["smssynth", *args])
        cmd = cli.get_command(None, args[0])
        assert cmd is not None, args[0]
        ctx = cmd.make_context(args[0], args[1:])  # click.UsageError / BadParameter fail the test
        parsed.append((stage, args[0], ctx.params))
        if args[0] == "phantom":  # the folders the next commands read
            Path(args[1]).mkdir(parents=True, exist_ok=True)
        if args[0] == "generate":
            Path(args[args.index("--out") + 1]).mkdir(parents=True, exist_ok=True)
        if stdout is not None:
            stdout.write_text("{}")

    monkeypatch.setattr(Table1, "smssynth", dry)
    exp = Table1(out=tmp_path / "run", scale=SCALES[scale], cine=cine, fpp=fpp)
    exp.run(stop_after="evaluate")
    seen = {(stage, name) for stage, name, _ in parsed}
    assert {("cine-data", "generate"), ("cine-sms-crnn", "train"), ("cine-conv3d", "train"),
            ("cine-independent", "train"), ("fpp-data", "phantom"), ("fpp-finetune", "finetune"),
            ("fpp-no-pretrain", "train"), ("fpp-grating", "finetune"), ("evaluate", "evaluate")} <= seen
    s = SCALES[scale]
    train = [p for stage, name, p in parsed if name in ("train", "finetune")]
    assert {p["max_steps"] for p in train} == {s.cine_steps, s.fpp_steps}
    lrs = {(name, p["lr"]) for stage, name, p in parsed if name in ("train", "finetune")}
    assert lrs == {("train", s.lr), ("finetune", s.lr if s.fpp_lr is None else s.fpp_lr)}
    assert {p["precision"] or "float32" for p in train} == {s.precision}  # None: the default, float32
    real = [p for stage, name, p in parsed if name == "generate" and p["out"].endswith("fpp-real-test.zarr")]
    assert len(real) == 1 and real[0]["sms"] == 1 and real[0]["accel"] == s.sms * s.accel


def test_a_scale_field_added_later_resumes_at_its_default(tmp_path):
    """An experiment.json written before a Scale field existed resumes when the field has its
    default, and is refused when the scale now sets it to something else."""
    from dataclasses import replace

    from synth.errors import ConfigError

    cine = tmp_path / "cine"
    cine.mkdir()
    exp = Table1(out=tmp_path / "run", scale=SCALES["smoke"], cine=cine, fpp=None, say=lambda m: None)
    exp._record()
    p = tmp_path / "run" / "experiment.json"
    rec = json.loads(p.read_text())
    assert rec["scale"].pop("fpp_real_draws") == SCALES["smoke"].fpp_real_draws
    p.write_text(json.dumps(rec))
    exp._record()  # the missing field is read as its default: same experiment
    other = Table1(out=tmp_path / "run", scale=replace(SCALES["smoke"], fpp_real_draws=3), cine=cine, fpp=None,
                   say=lambda m: None)
    with pytest.raises(ConfigError, match="different scale"):
        other._record()


def _record_from_before(tmp_path, *later_fields):
    """A smoke experiment whose experiment.json lacks ``later_fields`` (written before they existed):
    ``(Table1 with today's scale, {field: the value removed})``, after checking that today's scale,
    whose values differ from what such an experiment did, is refused on it."""
    from synth.errors import ConfigError

    cine = tmp_path / "cine"
    cine.mkdir()
    exp = Table1(out=tmp_path / "run", scale=SCALES["smoke"], cine=cine, fpp=None, say=lambda m: None)
    exp._record()
    p = tmp_path / "run" / "experiment.json"
    rec = json.loads(p.read_text())
    popped = {f: rec["scale"].pop(f) for f in later_fields}
    p.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="different scale"):
        exp._record()
    return exp, popped


def test_an_experiment_from_before_augmentation_resumes_only_without_it(tmp_path):
    """Augmentation became a scale field; an experiment.json without it trained unaugmented, so it
    resumes only with ``cine_augment=()`` and ``fpp_augment=()``, never silently with augmentation."""
    from dataclasses import replace

    exp, popped = _record_from_before(tmp_path, "cine_augment", "fpp_augment")
    assert popped["cine_augment"] and popped["fpp_augment"]
    old = replace(SCALES["smoke"], cine_augment=(), fpp_augment=())
    Table1(out=tmp_path / "run", scale=old, cine=exp.cine, fpp=None, say=lambda m: None)._record()


def test_an_experiment_from_before_conv3d_had_the_2d_time_conv_resumes_only_without_it(tmp_path):
    """``conv3d_st_layers`` came later: an experiment.json without it trained conv3d without the
    2D+time convolution, so it resumes only with ``conv3d_st_layers=0`` (a partly trained conv3d
    would not load into the other architecture)."""
    from dataclasses import replace

    exp, popped = _record_from_before(tmp_path, "conv3d_st_layers")
    assert popped["conv3d_st_layers"] == 1
    old = Table1(out=tmp_path / "run", scale=replace(SCALES["smoke"], conv3d_st_layers=0), cine=exp.cine, fpp=None,
                 say=lambda m: None)
    old._record()
    from zoo.eval.experiment import _model_config

    assert "n_conv3d_layers" not in _model_config(old.scale, "conv3d")
    assert _model_config(exp.scale, "conv3d")["n_conv3d_layers"] == 1
    assert "n_conv3d_layers" not in _model_config(exp.scale, "sms-crnn")  # its default (1) already


def test_an_experiment_from_before_phantom_noise_resumes_only_noise_free(tmp_path):
    """``phantom_snr`` came later: an experiment.json without it made noise-free perfusion
    phantoms, so it resumes only with ``phantom_snr=None`` (no ``--snr`` passed to the phantom)."""
    from dataclasses import replace

    from zoo.eval.experiment import _snr_args

    exp, popped = _record_from_before(tmp_path, "phantom_snr")
    assert popped["phantom_snr"] == [15.0, 60.0]
    Table1(out=tmp_path / "run", scale=replace(SCALES["smoke"], phantom_snr=None), cine=exp.cine, fpp=None,
           say=lambda m: None)._record()
    assert _snr_args(None) == [] and _snr_args((15.0, 60.0)) == ["--snr", "15:60"]


def test_st_layers_sets_the_depth_of_the_2d_time_conv_of_the_per_slice_models():
    from dataclasses import replace

    from zoo.eval.experiment import BEFORE_FIELD, _model_config

    deep = replace(SCALES["smoke"], st_layers=2, conv3d_st_layers=2)
    assert [_model_config(deep, m)["n_conv3d_layers"] for m in ("sms-crnn", "independent", "conv3d")] == [2, 2, 2]
    assert "n_conv3d_layers" not in _model_config(SCALES["smoke"], "independent")  # the default, 1
    assert BEFORE_FIELD["st_layers"] == 1  # what every experiment before the field trained
    from zoo.models import build_model

    for m in ("sms-crnn", "independent"):  # the configs build
        assert build_model(m, _model_config(deep, m)).st_conv is not None


def test_default_inputs_and_the_subprocesses_path_are_the_checkouts():
    """The stages run ``smssynth`` with PYTHONPATH = this checkout, and the default --cine/--fpp
    are ``../shared/data`` beside it, wherever the module sits inside the package."""
    from pathlib import Path

    from zoo.eval import experiment

    repo = Path(__file__).resolve().parents[3]
    assert experiment.CHECKOUT == repo
    assert (experiment.CHECKOUT / "zoo" / "eval" / "experiment.py").is_file()
    assert experiment.DEFAULT_CINE == repo.parent / "shared" / "data" / "sunnybrook-cine"
    assert experiment.DEFAULT_FPP == repo.parent / "shared" / "data" / "fpp-ge"
