r"""The paper's Table 1 as one resumable experiment: data -> cine models -> perfusion transfer -> tables.

``smssynth experiment table1 --scale cpu|paper --out runs/table1`` (:mod:`cli.experiment`) runs
every stage below in order.  Each stage is a ``smssynth`` command run as a subprocess (so the
experiment exercises exactly what a user runs, and every stage's own resume applies), its output
goes to ``OUT/logs/STAGE.log``, and a finished stage leaves ``OUT/stages/STAGE.json`` (command,
seconds, finish time).  Starting the experiment again skips finished stages, resumes a training
whose ``checkpoints/last`` exists (``--resume``) and a generation whose store is partly written
(generate's own resume), so an interrupted run continues where it stopped.

Stages
------
``cine-data``
    Patient-level split of the cine collection (``--cine``, one folder per patient; default the
    Sunnybrook cine of ``../shared/data``): the last patient in sorted order (or ``--test-patient``)
    is the test patient, the others train.  Training examples are a **targets-only** store (images,
    k-means labels; :mod:`zoo.data` simulates phase, coil maps, masks and noise anew every epoch);
    the test set is a k-space store (one fixed draw, seed 1), so every method is scored on the
    same measured data.
``cine-sms-crnn``, ``cine-conv3d``, ``cine-independent``
    The paper's three architectures, trained on the same cine data for the same number of steps.
``fpp-data``
    Perfusion: ``smssynth phantom --kind perfusion`` patients (seeded; different seeds for train
    and test; with the thermal noise of real magnitude DICOM, each patient at its own SNR drawn
    from ``Scale.phantom_snr``), made into a targets-only training store with k-means phase, one
    with grating-only phase (``--phase grating``, the simple-phase ablation) and a k-space test
    store with k-means phase.  When the real perfusion series (``--fpp``, default ``../shared/data/fpp-ge``) exists,
    a second test store is made from it.  It holds **one** slice, so it is made single-band
    (SMS factor 1) at the same total acceleration (R = SMS x R of the recipe): it tests the
    perfusion models on a real perfusion image with the same number of acquired lines, without
    slice coupling (the weights are shared across slices, so a model runs on one slice as on two).
``fpp-finetune`` (``sms-crnn-fpp``), ``fpp-no-pretrain``, ``fpp-grating``
    Fine-tuning of the cine ``sms-crnn`` on the perfusion store; the same architecture and steps
    from scratch; fine-tuning on the grating-phase store.  The fourth row of the perfusion table,
    *no fine-tuning*, is the cine model itself.
``evaluate``
    ``smssynth evaluate --json`` on each test store: the models, zero-filled, the CS baselines and
    SENSE (oracle and ESPIRiT maps), paired t-tests (per-example PSNR, SSIM, NMSE).
``report``
    ``table1.md`` (the paper's form: NMSE x 10^-3, PSNR, SSIM, failure rate, time per case, and
    the p-values of the claims), ``table1.json`` and figures (``figures/``: per method one frame
    of each slice, the error map with its colour bar, and a y-t temporal profile).

The claims checked in the report (``claims`` in the JSON) are the paper's: on cine
``sms-crnn > conv3d > independent`` (PSNR, paired t-test p < 0.05) and ``sms-crnn`` at least
6 dB above zero-filled and above the CS baselines; on perfusion, fine-tuned above each ablation
(p < 0.05).  They are reported as measured, never tuned on the test split.

Scales (:data:`SCALES`): ``paper`` is the paper's configuration (64 filters, 5 iterations,
lr 1e-4, the recipes' full matrices and frames, every coil); ``cpu`` the same science sized for a
2-core CPU (16 filters, a 2-layer 2D+time convolution, smaller matrix and frames, fewer coils,
lr 1e-3 with a cosine decay, readout crops); ``smoke`` a minutes-long run of every stage for tests.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from synth.errors import ConfigError, SmssynthError

__all__ = ["SCALES", "Scale", "ExperimentError", "Table1", "STAGES"]

CHECKOUT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) this module runs from
SHARED = CHECKOUT.parent / "shared" / "data"
DEFAULT_CINE = SHARED / "sunnybrook-cine"
DEFAULT_FPP = SHARED / "fpp-ge"


class ExperimentError(SmssynthError, RuntimeError):
    """A stage of an experiment failed; the message names the stage and its log."""


@dataclass(frozen=True)
class Scale:
    """Sizes of one experiment scale (every field is recorded in ``OUT/experiment.json``)."""

    name: str
    # simulation (both collections): SMS factor, in-plane R, ACS rows, coils, mask
    sms: int = 2
    accel: int = 2
    acs: int = 8
    coils: int = 8
    mask: str = "vd"
    caipi: str = "acquired"
    cine_matrix: tuple[int, int] = (224, 224)
    cine_frames: int = 20
    cine_test_combos: int | None = None
    fpp_matrix: tuple[int, int] = (128, 128)
    fpp_frames: int = 60
    fpp_test_combos: int | None = None
    # the real perfusion series has one slice, so its test store holds this many draws of it
    # (coil maps, phase and sampling mask drawn anew; the same anatomy and contrast)
    fpp_real_draws: int = 8
    # perfusion phantom patients
    phantom_train: int = 8
    phantom_test: int = 3
    phantom_slices: int = 4
    phantom_frames: int = 60
    phantom_acquired: str = "128x112"
    phantom_matrix: str = "128x128"
    # thermal noise of the perfusion phantom's images, as real DICOM has it: each patient's peak-signal
    # SNR drawn log-uniformly from this range (``smssynth phantom --snr LOW:HIGH``); None: noise-free
    phantom_snr: tuple[float, float] | None = (15.0, 60.0)
    # models and training
    n_filters: int = 64
    n_iterations: int = 5
    coil_channels: bool = True  # the network sees an example's coils together (zoo.models.crnn.CRNNConfig)
    lr: float = 1e-4
    # peak learning rate of the perfusion fine-tunes (fine-tuned and simple phase); None: ``lr``.
    # The no-pretraining ablation trains from scratch at ``lr``
    fpp_lr: float | None = None
    schedule: str = "constant"
    crop: int | None = None
    coil_mode: str = "per-coil"
    # the 2D+time convolution before DC that sms-crnn (and independent) have, given to conv3d too so
    # that it differs from sms-crnn only in how it sees the slices (zoo.models.conv3d)
    conv3d_st_layers: int = 1
    # depth of that convolution in sms-crnn and independent (their n_conv3d_layers): 1 is the single
    # Conv3d the paper names; >= 2 adds hidden layers of n_filters channels (zoo.models.crnn.SpatioTemporalConv)
    st_layers: int = 1
    # augmentations of the training images before every on-the-fly draw (synth.dataset.augment):
    # cine is periodic (roll: any start phase); perfusion is not
    cine_augment: tuple[str, ...] = ("flip", "transpose", "roll", "gamma")
    fpp_augment: tuple[str, ...] = ("flip", "transpose", "gamma")
    # the networks' convolutions during training (train.precision; zoo.train, "Mixed precision"):
    # bfloat16 is several times faster on CPUs with AMX, emulated and slower on CPUs without
    precision: str = "float32"
    cine_steps: int = 30000
    fpp_steps: int = 10000
    batch_size: int = 1
    num_workers: int = 2
    # evaluation
    baselines: tuple[str, ...] = ("zero-filled", "cs-tfft", "cs-ttv", "sense-oracle", "sense-espirit")
    cs_iters: int | None = None
    sense_iters: int | None = None
    figures: bool = True


SCALES: dict[str, Scale] = {
    "paper": Scale(name="paper"),
    "cpu": Scale(
        name="cpu", coils=4, cine_matrix=(96, 96), cine_frames=10, cine_test_combos=20,
        fpp_matrix=(96, 96), fpp_frames=10, fpp_test_combos=12,
        phantom_train=6, phantom_test=2, phantom_slices=4, phantom_frames=24, phantom_acquired="96x80",
        phantom_matrix="96x96",
        n_filters=32, n_iterations=5, lr=1e-3, schedule="cosine", crop=24, cine_steps=4800,
        # 32 filters trained in bfloat16 cost about what 16 in float32 did; chosen on fresh draws of the
        # training patients (README, "bfloat16 training"); never on a test patient
        precision="bfloat16",
        # a 2-layer 2D+time convolution and 1,600 perfusion fine-tuning steps: both chosen on fresh draws
        # of the training patients (README, "What the gap to CS is made of", "Perfusion"), never on a
        # test patient
        fpp_steps=1600,
        # fine-tuning at 3e-4 instead of 1e-3 keeps more of the cine model (fresh draws of the cine
        # training patients +0.16 dB) at no significant cost on fresh draws of the training phantoms
        # (-0.06 dB, p = 0.15); chosen there (README, "Perfusion"), never on a test set
        fpp_lr=3e-4,
        st_layers=2, conv3d_st_layers=2,
        num_workers=1, cs_iters=100, sense_iters=20,
    ),
    "smoke": Scale(
        name="smoke", coils=2, acs=4, cine_matrix=(32, 32), cine_frames=4, cine_test_combos=2,
        fpp_matrix=(32, 32), fpp_frames=4, fpp_test_combos=2,
        phantom_train=2, phantom_test=1, phantom_slices=2, phantom_frames=4, phantom_acquired="32x32",
        phantom_matrix="32x32",
        n_filters=4, n_iterations=1, lr=1e-3, crop=None, cine_steps=2, fpp_steps=2, num_workers=0,
        baselines=("zero-filled", "cs-ttv"), cs_iters=2, sense_iters=2,
    ),
}

# what an experiment recorded before a scale field existed did, where that differs from its default
BEFORE_FIELD = {"cine_augment": [], "fpp_augment": [], "conv3d_st_layers": 0, "phantom_snr": None, "st_layers": 1}

CINE_MODELS = ("sms-crnn", "conv3d", "independent")
FPP_RUNS = {  # run name -> (description in the table, how it is made)
    "sms-crnn-fpp": "fine-tuned (cine -> synthetic FPP, k-means phase)",
    "no-finetune": "no fine-tuning (the cine model)",
    "no-pretrain": "no pretraining (FPP from scratch)",
    "grating-phase": "simple phase (fine-tuned on grating-only phase)",
}
STAGES = ("cine-data", "cine-sms-crnn", "cine-conv3d", "cine-independent", "fpp-data", "fpp-finetune",
          "fpp-no-pretrain", "fpp-grating", "evaluate", "report")


def _has_images(folder: Path, look: int = 64) -> bool:
    """Whether ``folder`` holds DICOM (the ``DICM`` preamble) or NIfTI files among its first ``look``
    files: patient folders beside others (contours, documents) are told apart without reading them all."""
    for i, f in enumerate(p for p in folder.rglob("*") if p.is_file()):
        if i >= look:
            break
        if f.name.endswith((".nii", ".nii.gz")):
            return True
        try:
            with open(f, "rb") as fh:
                if fh.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            continue
    return False


def _snr_args(snr) -> list[str]:
    """``smssynth phantom``'s noise option for a ``Scale.phantom_snr`` range (none for None)."""
    return [] if snr is None else ["--snr", f"{float(snr[0]):g}:{float(snr[1]):g}"]


def _snr_card(snr) -> str:
    if snr is None:
        return "; noise-free images"
    return (f"; thermal noise, each patient's peak-signal SNR drawn log-uniformly from {float(snr[0]):g} to "
            f"{float(snr[1]):g}, `{' '.join(_snr_args(snr))}`")


def _model_config(scale: Scale, name: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"n_filters": scale.n_filters, "n_iterations": scale.n_iterations}
    if scale.coil_channels and scale.coil_mode == "per-coil":
        cfg["coil_channels"] = scale.coils
    if name == "conv3d" and scale.conv3d_st_layers:
        cfg["n_conv3d_layers"] = scale.conv3d_st_layers
    if name != "conv3d" and scale.st_layers != 1:  # 1 is these models' default
        cfg["n_conv3d_layers"] = scale.st_layers
    return cfg


@dataclass
class Table1:
    """One Table 1 experiment in ``out`` (module doc).  ``run()`` does every unfinished stage."""

    out: Path
    scale: Scale
    cine: Path = DEFAULT_CINE
    fpp: Path | None = DEFAULT_FPP
    test_patient: str | None = None
    device: str = "cpu"
    workers: int = 1
    say: Callable[[str], None] = print
    verbose: bool = False
    python: list[str] = field(default_factory=lambda: [sys.executable, "-m", "cli.main"])

    def __post_init__(self):
        self.out = Path(self.out)
        self.cine = Path(self.cine)
        self.fpp = Path(self.fpp) if self.fpp is not None else None

    # -- bookkeeping -----------------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def done(self, stage: str) -> bool:
        return self.path("stages", f"{stage}.json").is_file()

    def _mark(self, stage: str, seconds: float, commands: list[list[str]]) -> None:
        p = self.path("stages", f"{stage}.json")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"stage": stage, "seconds": round(seconds, 1), "finished": time.strftime(
            "%Y-%m-%dT%H:%M:%S"), "commands": [" ".join(shlex.quote(a) for a in c) for c in commands]}, indent=2))

    def _record(self) -> None:
        """``experiment.json``: the scale and inputs; a later start must match them (resume)."""
        rec = {"experiment": "table1", "scale": asdict(self.scale), "cine": str(self.cine),
               "fpp": str(self.fpp) if self.fpp else None, "test_patient": self.test_patient}
        p = self.path("experiment.json")
        if p.is_file():
            old = json.loads(p.read_text())
            if isinstance(old.get("scale"), dict):
                # a scale field added since this experiment started counts as its default, or as
                # what the experiment did before the field existed
                defaults = {f.name: f.default for f in fields(Scale) if f.default is not MISSING}
                defaults.update(BEFORE_FIELD)
                old["scale"] = {**{k: v for k, v in defaults.items() if k not in old["scale"]}, **old["scale"]}
            diff = sorted(k for k in rec if json.dumps(old.get(k), sort_keys=True, default=list)
                          != json.dumps(rec[k], sort_keys=True, default=list))
            if diff:
                raise ConfigError(f"{p}: this experiment was started with different {', '.join(diff)}; "
                                  f"use another --out, or the same options to resume it")
            return
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise ConfigError(f"--out {self.out}: exists and is not an experiment folder (no experiment.json); "
                              f"give a new or empty folder")
        self.out.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rec, indent=2, default=list))

    def smssynth(self, stage: str, args: list[str], commands: list[list[str]], stdout: Path | None = None) -> None:
        """Run ``smssynth ARGS``; its output is appended to ``logs/STAGE.log`` (stdout to ``stdout``)."""
        cmd = [*self.python, *map(str, args)]
        commands.append(["smssynth", *map(str, args)])
        if self.verbose:
            self.say("  $ smssynth " + " ".join(shlex.quote(str(a)) for a in args))
        log = self.path("logs", f"{stage}.log")
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        root = str(CHECKOUT)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log, "a") as err:
            err.write(f"$ smssynth {' '.join(shlex.quote(str(a)) for a in args)}\n")
            err.flush()
            if stdout is not None:
                tmp = stdout.with_name(stdout.name + ".part")
                with open(tmp, "w") as fo:
                    rc = subprocess.call(cmd, stdout=fo, stderr=err, env=env)
                if rc == 0:
                    tmp.replace(stdout)
            else:
                rc = subprocess.call(cmd, stdout=err, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            raise ExperimentError(f"stage {stage}: `smssynth {args[0]}` failed (exit {rc}); see {log}. "
                                  f"Fix the cause and start the experiment again: it resumes here")

    # -- stages ----------------------------------------------------------------------------------
    def run(self, stop_after: str | None = None) -> Path:
        if stop_after is not None and stop_after not in STAGES:
            raise ConfigError(f"--stop-after must be one of {', '.join(STAGES)}, got {stop_after!r}")
        self._record()
        for stage in STAGES:
            if self.done(stage):
                self.say(f"[{stage}] done before; skipped")
            else:
                self.say(f"[{stage}] started {time.strftime('%H:%M:%S')}")
                t0, commands = time.perf_counter(), []
                getattr(self, "stage_" + stage.replace("-", "_"))(commands)
                dt = time.perf_counter() - t0
                self._mark(stage, dt, commands)
                self.say(f"[{stage}] finished in {dt / 60:.1f} min")
            if stage == stop_after:
                break
        return self.path("table1.md")

    def _sim_args(self, matrix, frames) -> list[str]:
        s = self.scale
        return ["--sms", s.sms, "--accel", s.accel, "--acs", s.acs, "--coils", s.coils, "--mask", s.mask,
                "--caipi", s.caipi, "--csm", "mixed", "--clusters", 8, "--resolution", "acquired",
                "--matrix", f"{matrix[0]}x{matrix[1]}", "--frames", frames, "--frames-mode", "resample",
                "--workers", self.workers, "--salt", "smssynth-table1", "--quiet"]

    def _step_done(self, name: str) -> bool:
        return self.path("stages", f"{name}.ok").is_file()

    def _step_finished(self, name: str) -> None:
        p = self.path("stages", f"{name}.ok")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")

    def _generate(self, stage, commands, source_args, out: Path, extra: list) -> None:
        """``smssynth generate`` into ``out`` (resumed by generate itself when interrupted)."""
        if self._step_done(f"{stage}.{out.name}"):
            return
        self.smssynth(stage, ["generate", *source_args, "--out", out, *extra], commands)
        self._step_finished(f"{stage}.{out.name}")

    def cine_patients(self) -> tuple[list[Path], Path]:
        if not self.cine.is_dir():
            raise ConfigError(f"--cine {self.cine}: not a folder; give a folder with one sub-folder of cine DICOM "
                              f"per patient (e.g. ../shared/data/sunnybrook-cine)")
        pats = sorted(p for p in self.cine.iterdir() if p.is_dir() and not p.name.startswith(".") and _has_images(p))
        if len(pats) < 2:
            raise ConfigError(f"--cine {self.cine}: needs at least two patient folders (one is kept out as the "
                              f"test patient); found {len(pats)}")
        if self.test_patient is None:
            test = pats[-1]
        else:
            match = [p for p in pats if p.name == self.test_patient]
            if not match:
                raise ConfigError(f"--test-patient {self.test_patient!r}: no such folder of images under --cine "
                                  f"(choose one of its {len(pats)} patient folders)")
            test = match[0]
        return [p for p in pats if p != test], test

    def _manifest(self, name: str, rows: list[tuple[Path, str, str]]) -> Path:
        p = self.path("data", name)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "patient", "split"])
            for path, patient, split in rows:
                w.writerow([os.path.relpath(path, p.parent), patient, split])
        return p

    def stage_cine_data(self, commands) -> None:
        s = self.scale
        train, test = self.cine_patients()
        # pseudonymous patient keys in the manifest (folder names can identify people)
        m_train = self._manifest("cine-train.csv", [(p, f"cine{i:02d}", "train") for i, p in enumerate(train)])
        m_test = self._manifest("cine-test.csv", [(test, "cine-test", "test")])
        sim = self._sim_args(s.cine_matrix, s.cine_frames)
        self._generate("cine-data", commands, ["--manifest", m_train], self.path("data", "cine-train.zarr"),
                       [*sim, "--phase", "kmeans", "--targets-only", "--seed", 0])
        combos = ["--combos", s.cine_test_combos] if s.cine_test_combos else []
        self._generate("cine-data", commands, ["--manifest", m_test], self.path("data", "cine-test.zarr"),
                       [*sim, "--phase", "kmeans", "--seed", 1, *combos])

    def _train_args(self, data: Path, steps: int, augment, lr: float | None = None) -> list:
        s = self.scale
        args = ["--data", data, "--lr", s.lr if lr is None else lr, "--batch-size", s.batch_size,
                "--num-workers", s.num_workers,
                "--val-fraction", 0, "--seed", 0, "--device", self.device, "--coil-mode", s.coil_mode,
                "--synthesis", "on-the-fly", "--augment", ",".join(augment) or "none", "--epochs", 100000,
                "--max-steps", steps, "--quiet"]
        if s.crop:
            args += ["--crop", s.crop]
        if s.precision != "float32":
            args += ["--precision", s.precision]
        return args

    def _train(self, stage: str, commands, run: Path, head: list, data: Path, steps: int, model: str,
               augment=(), lr: float | None = None) -> None:
        """A training or fine-tuning run in ``run``: resumed when it has a last checkpoint."""
        cfg = self.path("configs", f"{run.name}.yaml")
        cfg.parent.mkdir(parents=True, exist_ok=True)
        sections: dict[str, Any] = {"loss": {"w_mse": 1.0, "w_ssim": 0.02, "w_tv": 0.001},
                                    "optimizer": {"schedule": self.scale.schedule}}
        if head[0] == "train":  # fine-tuning takes the architecture from its checkpoint
            sections["model"] = {"name": model, "config": _model_config(self.scale, model)}
        cfg.write_text(json.dumps(sections))
        if (run / "checkpoints" / "last.safetensors").is_file():
            self.smssynth(stage, [head[0], "--out", run, "--resume", "--max-steps", steps, "--quiet"], commands)
        else:
            if (run / "config.json").is_file():  # train's own run that died before its first checkpoint
                import shutil

                shutil.rmtree(run)
            elif run.exists():
                raise ExperimentError(f"{run}: exists but holds no training run; move it away and start again")
            self.smssynth(stage, [*head, "--out", run, "--config", cfg, *self._train_args(data, steps, augment, lr)],
                          commands)

    def cine_run(self, model: str) -> Path:
        return self.path("runs", f"cine-{model}")

    def checkpoint(self, run: Path) -> Path:
        return run / "checkpoints" / "last"

    def stage_cine_sms_crnn(self, commands) -> None:
        self._cine("sms-crnn", commands)

    def stage_cine_conv3d(self, commands) -> None:
        self._cine("conv3d", commands)

    def stage_cine_independent(self, commands) -> None:
        self._cine("independent", commands)

    def _cine(self, model: str, commands) -> None:
        self._train(f"cine-{model}", commands, self.cine_run(model), ["train", "--model", model],
                    self.path("data", "cine-train.zarr"), self.scale.cine_steps, model, self.scale.cine_augment)

    def stage_fpp_data(self, commands) -> None:
        s = self.scale
        for split, n, seed in (("train", s.phantom_train, 1000), ("test", s.phantom_test, 2000)):
            d = self.path("data", f"fpp-phantom-{split}")
            if not self._step_done(f"fpp-data.phantom-{split}"):
                self.smssynth("fpp-data", ["phantom", d, "--kind", "perfusion", "--slices", s.phantom_slices,
                                           "--frames", s.phantom_frames, "--acquired", s.phantom_acquired,
                                           "--matrix", s.phantom_matrix, "--patients", n, "--seed", seed,
                                           *_snr_args(s.phantom_snr), "--overwrite"], commands)
                self._step_finished(f"fpp-data.phantom-{split}")
        sim = self._sim_args(s.fpp_matrix, s.fpp_frames)
        train = self.path("data", "fpp-phantom-train")
        self._generate("fpp-data", commands, [train], self.path("data", "fpp-train.zarr"),
                       [*sim, "--phase", "kmeans", "--targets-only", "--combine", "within-study", "--seed", 0])
        self._generate("fpp-data", commands, [train], self.path("data", "fpp-train-grating.zarr"),
                       [*sim, "--phase", "grating", "--targets-only", "--combine", "within-study", "--seed", 0])
        combos = ["--combos", s.fpp_test_combos] if s.fpp_test_combos else []
        self._generate("fpp-data", commands, [self.path("data", "fpp-phantom-test")],
                       self.path("data", "fpp-test.zarr"),
                       [*sim, "--phase", "kmeans", "--combine", "within-study", "--seed", 1, *combos])
        if self.real_fpp():
            single = self._sim_args(s.fpp_matrix, s.fpp_frames)
            single[single.index("--sms") + 1] = 1
            single[single.index("--accel") + 1] = s.accel * s.sms
            self._generate("fpp-data", commands, [self.fpp], self.path("data", "fpp-real-test.zarr"),
                           [*single, "--phase", "kmeans", "--seed", 1, "--draws", s.fpp_real_draws])

    def real_fpp(self) -> bool:
        return self.fpp is not None and self.fpp.is_dir()

    def fpp_run(self, name: str) -> Path:
        return self.cine_run("sms-crnn") if name == "no-finetune" else self.path("runs", f"fpp-{name}")

    def _finetune(self, stage, commands, name: str, data: str) -> None:
        run = self.fpp_run(name)
        head = ["finetune", "--from", self.checkpoint(self.cine_run("sms-crnn"))]
        self._train(stage, commands, run, head, self.path("data", data), self.scale.fpp_steps, "sms-crnn",
                    self.scale.fpp_augment, self.scale.fpp_lr)

    def stage_fpp_finetune(self, commands) -> None:
        self._finetune("fpp-finetune", commands, "sms-crnn-fpp", "fpp-train.zarr")

    def stage_fpp_no_pretrain(self, commands) -> None:
        self._train("fpp-no-pretrain", commands, self.fpp_run("no-pretrain"), ["train", "--model", "sms-crnn"],
                    self.path("data", "fpp-train.zarr"), self.scale.fpp_steps, "sms-crnn", self.scale.fpp_augment)

    def stage_fpp_grating(self, commands) -> None:
        self._finetune("fpp-grating", commands, "grating-phase", "fpp-train-grating.zarr")

    def test_sets(self) -> dict[str, tuple[Path, dict[str, Path]]]:
        """Test store and {row name: checkpoint} of each table."""
        cine = {m: self.checkpoint(self.cine_run(m)) for m in CINE_MODELS}
        fpp = {n: self.checkpoint(self.fpp_run(n)) for n in FPP_RUNS}
        sets = {"cine": (self.path("data", "cine-test.zarr"), cine), "fpp": (self.path("data", "fpp-test.zarr"), fpp)}
        if self.path("data", "fpp-real-test.zarr").exists():
            sets["fpp-real"] = (self.path("data", "fpp-real-test.zarr"), fpp)
        return sets

    def stage_evaluate(self, commands) -> None:
        s = self.scale
        for name, (store, models) in self.test_sets().items():
            out = self.path("eval", f"{name}.json")
            if out.is_file():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            args = ["evaluate", store, "--device", self.device, "--json", "--baselines", ",".join(s.baselines)]
            for ckpt in models.values():
                args += ["--model", ckpt]
            if s.cs_iters is not None:
                args += ["--cs-iters", s.cs_iters]
            if s.sense_iters is not None:
                args += ["--sense-iters", s.sense_iters]
            self.smssynth("evaluate", args, commands, stdout=out)

    def stage_report(self, commands) -> None:
        from zoo.eval.experiment_report import write_report

        self.write_data_cards(commands)
        write_report(self)

    def write_data_cards(self, commands) -> None:
        """``data/CARDS.md``: what went into every store (inputs, split, parameters, shapes), from
        the manifests, the phantom seeds and ``smssynth inspect`` of each store."""
        s = self.scale
        inputs = {
            "cine-train.zarr": "the cine patients of `cine-train.csv` (pseudonymous keys; split train); "
                               "targets only, simulated anew every epoch",
            "cine-test.zarr": "the kept-out cine patient of `cine-test.csv` (split test); one fixed draw, seed 1",
            "fpp-train.zarr": f"{s.phantom_train} perfusion phantom patients (`smssynth phantom --kind perfusion`, "
                              f"seeds 1000..{999 + s.phantom_train}{_snr_card(s.phantom_snr)}), k-means phase; "
                              "targets only",
            "fpp-train-grating.zarr": "the same phantom patients, grating-only phase (the simple-phase ablation); "
                                      "targets only",
            "fpp-test.zarr": f"{s.phantom_test} other phantom patients (seeds 2000..{1999 + s.phantom_test}"
                             f"{_snr_card(s.phantom_snr)}); one fixed draw, seed 1",
            "fpp-real-test.zarr": "the real GE perfusion series (`--fpp`; one slice), single-band (SMS 1) at "
                                  f"R = {s.sms * s.accel}; {s.fpp_real_draws} draws of that slice (coil maps, "
                                  f"phase and mask drawn anew; the same anatomy and contrast), seed 1",
        }
        lines = ["# Stores of this experiment", "",
                 "Made by `smssynth experiment table1`; the exact commands are in `../stages/*.json`.", ""]
        for name, what in inputs.items():
            store = self.path("data", name)
            if not store.exists():
                continue
            out = self.path("data", f"{name}.inspect.txt")
            self.smssynth("report", ["inspect", store], commands, stdout=out)
            head = [ln for ln in out.read_text().splitlines()
                    if ln.startswith(("kind:", "examples:", "dims:", "params:", "caipi ordering:"))]
            lines += [f"## `{name}`", "", f"Inputs: {what}.", "", "```", *head, "```", ""]
        self.path("data", "CARDS.md").write_text("\n".join(lines))
