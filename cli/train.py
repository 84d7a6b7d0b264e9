"""``smssynth train``: train a zoo model on a store (the loop is :mod:`zoo.train`).

The options shared with ``smssynth finetune`` live here too (:func:`loop_options`,
:func:`run_loop`).  Precedence: a flag given on the command line > the ``--config`` YAML > the
defaults of ``zoo.train.TrainConfig`` / ``zoo.data.DataConfig`` / ``zoo.train.losses.LossConfig``.
"""

from __future__ import annotations

import click

from cli.options import verbosity_options

# click parameter name -> config field name (zoo.train.TrainConfig / zoo.data.DataConfig)
LOOP_KEYS = ("epochs", "lr", "schedule", "warmup_steps", "min_lr", "step_size", "gamma", "batch_size", "accumulate",
             "num_workers", "val_fraction", "crop", "seed", "max_steps", "early_stop", "amp", "precision", "device",
             "coil_mode",
             "coils", "mask", "synthesis", "augment", "allow_incomplete")


def _augment_option(ctx, param, value):
    if value is None:
        return None
    from synth.dataset.augment import check_augment

    try:
        return check_augment(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def loop_options(f):
    """The options every training command takes (defaults shown are zoo.train's); ``-q`` (no
    progress bar or per-epoch lines) and ``-v`` come with :func:`cli.options.verbosity_options`."""
    opts = [
        click.option("--data", "store", default=None, metavar="STORE",
                     help="smssynth store to train on (required, except with --resume: taken from the run)."),
        click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False),
                     help="Run folder: config.json, log.csv (per epoch), steps.csv (per optimizer step), "
                          "checkpoints/ (epoch-NNN, last, best); tensorboard/ when tensorboard is installed."),
        click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="YAML with sections model, loss, data, optimizer, train (see zoo.train.load_yaml_config); "
                          "flags given here override it."),
        click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs.  [default: 10]"),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Adam learning rate (the peak, with a schedule).  [default: 1e-4]"),
        click.option("--lr-schedule", "schedule", type=click.Choice(["constant", "cosine", "step"]), default=None,
                     help="Learning rate over the optimizer steps: constant; cosine, from --lr to --min-lr over the "
                          "run's steps (--epochs x steps per epoch, or --max-steps when fewer); step, times --lr-gamma "
                          "every --lr-step-size steps.  [default: constant]"),
        click.option("--warmup-steps", type=click.IntRange(min=0), default=None,
                     help="Linear warm-up to --lr over this many optimizer steps, before the schedule.  [default: 0]"),
        click.option("--min-lr", type=click.FloatRange(min=0), default=None,
                     help="Where --lr-schedule cosine ends.  [default: 0]"),
        click.option("--lr-step-size", "step_size", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Optimizer steps between the decays of --lr-schedule step (required for it)."),
        click.option("--lr-gamma", "gamma", type=click.FloatRange(0, 1, min_open=True), default=None,
                     help="Factor of each decay of --lr-schedule step.  [default: 0.1]"),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Examples per micro-batch (per process under torchrun).  [default: 1]"),
        click.option("--accumulate", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Add the gradients of N micro-batches per optimizer step: an effective batch of "
                          "--batch-size x N at the memory of one; the loss is their mean.  [default: 1]"),
        click.option("--num-workers", type=click.IntRange(min=0), default=None,
                     help="DataLoader worker processes.  [default: 0]"),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
                     help="Held-out fraction (by patient when possible) when the store has no 'val' split; "
                          "0 = no validation.  [default: 0.1]"),
        click.option("--crop", type=click.IntRange(min=16), default=None,
                     help="Train on random readout (x) windows this many pixels wide, k-space recomputed "
                          "exactly (CPU training); validation uses whole images.  [default: off]"),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Root seed: initialisation, shuffling, fresh masks, crops, held-out split.  [default: 0]"),
        click.option("--max-steps", type=click.IntRange(min=1), default=None,
                     help="Stop after this many optimizer steps in all (smoke runs).  [default: none]"),
        click.option("--early-stop", type=click.IntRange(min=0), default=None, metavar="PATIENCE",
                     help="Stop after PATIENCE epochs in a row without a better val PSNR (checkpoints/best keeps the "
                          "best); 0 = off.  [default: off]"),
        click.option("--device", default=None,
                     help="cpu, cuda or cuda:N.  [default: cuda when available, else cpu]"),
        click.option("--amp/--no-amp", default=None,
                     help="Mixed precision for the convolutions (CUDA only).  [default: off]"),
        click.option("--precision", type=click.Choice(["float32", "bfloat16"]), default=None,
                     help="bfloat16: the networks' convolutions compute in bfloat16, parameters, optimizer and "
                          "physics stay float32; fast on CPUs with AMX/AVX512-BF16 and on CUDA, slow on other "
                          "CPUs.  Checkpoints are float32 either way.  [default: float32]"),
        click.option("--coil-mode", type=click.Choice(["virtual", "compressed", "per-coil"]), default=None,
                     help="compressed: --virtual-coils K virtual coils from the acquired data (SVD); virtual: one "
                          "(K = 1); per-coil: every coil as measured (K = C).  Each coil image is reconstructed with "
                          "shared weights, and the RSS over coils is compared with the store's target.  "
                          "[default: per-coil]"),
        click.option("--virtual-coils", "coils", type=click.IntRange(min=1), default=None, metavar="K",
                     help="Number of virtual coils, 1..C (the store's coils); implies --coil-mode compressed."),
        click.option("--synthesis", type=click.Choice(["stored", "on-the-fly"]), default=None,
                     help="on-the-fly: simulate phase, coil maps, mask and noise anew every epoch from the store's "
                          "images with its recorded parameters (validation stays on the fixed first draw); "
                          "stored: the store's k-space.  [default: stored; on-the-fly for a --targets-only store]"),
        click.option("--augment", default=None, metavar="KINDS", callback=_augment_option,
                     help="Augment the images before every on-the-fly draw (physics kept: the k-space is simulated "
                          "from the augmented image): comma-separated flip, transpose, roll (periodic cine only), "
                          "gamma; none for none.  Validation is never augmented.  [default: none]"),
        click.option("--mask", type=click.Choice(["stored", "fresh"]), default=None,
                     help="The store's masks, or a fresh seeded mask per epoch.  [default: stored]"),
        click.option("--allow-incomplete", is_flag=True, default=None,
                     help="Train even when fewer than 90 % of the store's examples are complete (an interrupted "
                          "generation); a store with any incomplete example is reported either way."),
        click.option("--resume", is_flag=True,
                     help="Continue the run in --out from checkpoints/last (weights, optimizer, schedule, epoch, RNG); "
                          "--epochs, --max-steps and --early-stop may change."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def explicit_options(kwargs: dict, names) -> dict:
    """The options among ``names`` given on the command line (or by environment)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: kwargs[k] for k in names if ctx.get_parameter_source(k) in given and kwargs[k] is not None}


def check_coils(over: dict, store: str | None) -> None:
    """Validate --coil-mode / --virtual-coils at the boundary (``over``: the explicit options, updated).

    ``--virtual-coils K`` implies ``--coil-mode compressed`` and must fit the store's coil count;
    it contradicts ``--coil-mode virtual`` (K = 1) and ``per-coil`` (K = C).
    """
    k, mode = over.get("coils"), over.get("coil_mode")
    if k is None:  # K may come from the --config YAML (data.coils); DataConfig names it if absent
        return
    if mode in ("virtual", "per-coil"):
        raise click.BadParameter(f"--virtual-coils {k} sets the number of virtual coils of --coil-mode compressed; "
                                 f"--coil-mode {mode} has {'one' if mode == 'virtual' else 'every measured'} coil",
                                 param_hint="--virtual-coils")
    over["coil_mode"] = "compressed"
    if store is not None:
        from synth.dataset.store import Store
        from synth.errors import SmssynthError

        try:
            c = int(Store.open(store).dims["C"])
        except SmssynthError:
            return  # run_loop reports the store itself, naming --data
        if k > c:
            raise click.BadParameter(f"{k} virtual coils asked for, but {store} has {c} coils; choose 1..{c}",
                                     param_hint="--virtual-coils")


def run_loop(command: str, kwargs: dict, *, source=None, freeze=()):
    """Resolve the configuration and run ``zoo.train.fit``; user errors become one-line click errors.

    ``source`` and ``freeze`` are ``smssynth finetune``'s (the architecture then comes from the
    checkpoint); ``smssynth train`` takes ``--model`` (inside ``kwargs``).
    """
    from pathlib import Path

    from cli.options import is_quiet, user_error
    from synth.dataset.store import Store
    from synth.errors import SmssynthError
    from zoo import train as T
    from zoo.models import list_models, model_config_dict

    run_dir, store, config_path = Path(kwargs["run_dir"]), kwargs["store"], kwargs["config_path"]
    name = kwargs.get("model")  # train only
    over = explicit_options(kwargs, LOOP_KEYS)
    if over.get("early_stop") == 0:
        over["early_stop"] = None  # off
    check_coils(over, store)
    if freeze:
        over["freeze"] = tuple(freeze)
    try:
        if kwargs["resume"]:
            given = {**over, **{k: v for k, v in (("config", config_path), ("model", name), ("from", source)) if v}}
            run, init_model = T.resumed_run_config(run_dir, command, given, store=store), None
        else:
            if store is None:
                raise click.UsageError("Missing option '--data' (the store to train on).")
            try:
                Store.open(store)
            except SmssynthError as e:
                raise click.BadParameter(str(e), param_hint="--data") from None
            if name is not None and name not in list_models():
                raise click.BadParameter(f"unknown model {name!r}; known models: {list_models()}", param_hint="--model")
            if name is not None:
                over["model"] = name
            sections = T.load_yaml_config(config_path) if config_path else None  # errors name --config and the file
            init_model = parent = model = model_config = None
            if source is not None:
                try:
                    init_model, parent = T.load_parent(source)
                except SmssynthError as e:
                    raise click.BadParameter(str(e), param_hint="--from") from None
                model, model_config = init_model.name, model_config_dict(init_model)
            run = T.resolve_run_config(store, yaml_sections=sections, overrides=over, model=model,
                                       model_config=model_config, command=command, parent=parent,
                                       source=f"--config {config_path}")
        result = T.fit(run, run_dir, resume=kwargs["resume"], init_model=init_model, quiet=is_quiet(),
                       echo=click.echo)
    except SmssynthError as e:
        raise user_error(e) from None  # one line; exit code 2 for a configuration error, 1 at run time
    summary(result)
    return result


def summary(r) -> None:
    if r is None or r.rank != 0:
        return
    line = f"done: epoch {r.epoch}, step {r.step}, {r.seconds:.1f}s; run in {r.run_dir}"
    if r.stopped_early:
        line += f"; stopped early (no better val PSNR for {r.stopped_early['patience']} epochs)"
    if r.best:
        line += f"; best val PSNR {r.best['psnr']:.2f} dB at epoch {r.best['epoch']}"
    if r.zero_filled:
        line += f" (zero-filled {r.zero_filled['psnr']['mean']:.2f} dB)"
    click.echo(line)


@click.command("train")
@click.option("--model", default=None, metavar="NAME",
              help="Architecture (zoo.models: sms-crnn, independent, conv3d); or model.name in --config.")
@loop_options
@verbosity_options
def train(**kwargs):
    """Train a reconstruction model on an smssynth store.

    Adam with an optional learning-rate schedule and warm-up, gradient accumulation, per-epoch
    validation (NMSE, PSNR, SSIM on the store's 'val' split, else a held-out --val-fraction),
    optional early stopping on the val PSNR, a checkpoint every epoch (plus last and best by val
    PSNR), log.csv per epoch and steps.csv per optimizer step.
    Multi-GPU / multi-node: start it with torchrun, e.g.

    \b
        torchrun --nproc-per-node 2 -m cli.main train --data cine.zarr --model sms-crnn --out run
    """
    run_loop("train", kwargs)
