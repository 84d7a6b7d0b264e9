"""The training loop: :func:`fit` (train, fine-tune, resume) and validation (:func:`evaluate_examples`).

The run directory, resume, determinism, distribution and mixed precision are described in
:mod:`zoo.train`; the learning rate in :mod:`zoo.train.schedule`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from synth.dataset.store import Store
from synth.errors import ConfigError
from zoo.checkpoint import Normalization, describe_store, load_checkpoint, save_checkpoint
from zoo.data import NORM_QUANTILE, SmsDataset, coil_label, denormalize, normalize_batch
from zoo.errors import CheckpointError
from zoo.metrics import nmse, psnr, ssim, summarize
from zoo.models import build_model, count_parameters, model_config_dict
from zoo.models.crnn import check_coil_channels
from zoo.train import distributed as D
from zoo.train.batch import crop_readout, fold_coils, rss_magnitude, step_generator, to_device
from zoo.train.config import RunConfig, TrainConfig
from zoo.train.logs import EpochLog, StepLog, tensorboard
from zoo.train.losses import SmsLoss
from zoo.train.params import amp_convs, cpu_has_native_bf16, freeze_parameters, set_compute_dtype
from zoo.train.schedule import LrSchedule
from zoo.train.splits import check_complete, split_examples
from zoo.train.state import copy_checkpoint, load_state, save_state, write_json

METRICS = ("nmse", "psnr", "ssim")


@dataclass
class FitResult:
    """What :func:`fit` did (rank 0's view).

    ``history`` holds the log rows (dicts) of this run dir, resumed ones included; ``zero_filled``
    the zero-filled metrics on the val examples ({metric: {mean, sd, n}}), None without validation.
    ``stopped_early`` is set when ``early_stop`` ended the run: ``{"epoch", "patience",
    "best_epoch", "best_psnr"}``.
    """

    run_dir: Path
    epoch: int
    step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    zero_filled: dict[str, dict] | None = None
    split: str = ""
    n_train: int = 0
    n_val: int = 0
    seconds: float = 0.0
    model: nn.Module | None = None
    rank: int = 0
    stopped_early: dict[str, Any] | None = None


@torch.no_grad()
def evaluate_examples(model: nn.Module | None, dataset, positions: list[int], device: torch.device,
                      batch_size: int, num_workers: int) -> list[tuple[int, float, float, float]]:
    """Per-example (store index, NMSE, PSNR, SSIM) of ``model`` on ``dataset[positions]``.

    ``model`` None scores the zero-filled image.  Inputs are normalised as in training and the
    output denormalised; magnitudes (RSS over coils) are compared with ``target``.
    """
    if not positions:
        return []
    loader = DataLoader(Subset(dataset, positions), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    rows = []
    if model is not None:
        model.eval()
    for batch in loader:
        batch = to_device(batch, device)
        if model is None:
            pred = batch["x0"]
        else:
            nb, scale = normalize_batch(batch)
            x0, k3, mask3, c = fold_coils(nb)
            out = model(x0, k3, mask3)
            pred = denormalize(out.unflatten(0, (-1, c)) if nb["x0"].ndim == 6 else out, scale)
        mag = rss_magnitude(pred).float()
        target = batch["target"]
        vals = [f(mag, target).tolist() for f in (nmse, psnr, ssim)]
        rows += list(zip(batch["index"].tolist(), *vals))
    return rows


def _summaries(rows: list[tuple]) -> dict[str, dict] | None:
    if not rows:
        return None
    rows = sorted({r[0]: r for r in rows}.values())  # dedupe by store index
    return {name: summarize([r[j + 1] for r in rows]) for j, name in enumerate(METRICS)}


def fit(
    run: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    init_model: nn.Module | None = None,
    quiet: bool = False,
    echo: Callable[[str], None] = print,
) -> FitResult:
    """Train (or fine-tune) ``run.model`` on ``run.store``, writing ``run_dir`` (:mod:`zoo.train`).

    Parameters
    ----------
    run : the resolved configuration.
    run_dir : output folder (created).  With ``resume``, the run continues from
        ``run_dir/checkpoints/last`` (weights, optimizer, epoch/step, RNG states).
    init_model : starting weights and architecture (fine-tuning); must match ``run.model``.
    quiet : no progress bar or epoch lines (an early stop and warnings are still said).
    echo : where rank 0's human-readable lines go.

    Raises ConfigError / StoreError (user errors, one line each) and CheckpointError.
    Runs distributed when started by torchrun (:mod:`zoo.train.distributed`).
    """
    t_start = time.perf_counter()
    cfg = run.train
    info = D.env_info()
    device = D.pick_device(cfg.device, info)
    if cfg.amp and device.type != "cuda":
        raise ConfigError(f"--amp needs a CUDA device, but the run is on {device}; drop --amp or use --device cuda")
    D.init(info, device)
    grad_mode = torch.is_grad_enabled()
    try:
        return _fit(run, Path(run_dir), resume, init_model, quiet, echo, info, device, t_start)
    finally:
        torch.set_grad_enabled(grad_mode)
        D.shutdown(info)


def _fit(run, run_dir, resume, init_model, quiet, echo, info, device, t_start) -> FitResult:
    cfg = run.train
    main = info.is_main
    say = echo if (main and not quiet) else (lambda s: None)
    tell = echo if main else (lambda s: None)  # said even when quiet
    ckdir = run_dir / "checkpoints"
    last = ckdir / "last"

    # data: two views of the store, validation never sees fresh masks of later epochs
    store = Store.open(run.store)
    check_complete(store, cfg.allow_incomplete, tell)
    train_ds = SmsDataset(run.store, run.data)
    if run.data.synthesis is None:  # record what the store's kind chose (stored / on-the-fly)
        run = dataclasses.replace(run, data=dataclasses.replace(run.data, synthesis=train_ds.synthesis))
    val_ds = SmsDataset(run.store, dataclasses.replace(run.data, augment=()))  # validation is never augmented
    train_idx, val_idx, how = split_examples(store, train_ds.indices, cfg.val_fraction, cfg.seed)
    pos = {s: i for i, s in enumerate(train_ds.indices)}
    train_set = Subset(train_ds, [pos[i] for i in train_idx])
    val_positions = [pos[i] for i in val_idx]
    if cfg.crop is not None and cfg.crop > train_ds.dims["Kx"]:
        raise ConfigError(f"--crop {cfg.crop} is wider than the store's images ({train_ds.dims['Kx']} columns)")
    if cfg.early_stop is not None and not val_positions:
        raise ConfigError(f"--early-stop {cfg.early_stop} watches the val PSNR, but this run validates on no example "
                          f"({how}); raise --val-fraction or drop --early-stop")

    # model: fresh, fine-tuned, or resumed
    progress = None
    if not resume and Path(str(last) + ".json").is_file():
        raise ConfigError(f"--out {run_dir} already holds a run (checkpoints/last); pass --resume to continue it "
                          f"or choose another --out")
    if resume:
        if not Path(str(last) + ".json").is_file():
            raise ConfigError(f"--resume: {run_dir} has no checkpoints/last checkpoint to resume from")
        model, meta = load_checkpoint(last, device="cpu")
    elif init_model is not None:
        model = init_model
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = build_model(run.model, run.model_config)
    try:
        check_coil_channels(model, None if run.data.coil_mode == "virtual" else train_ds.n_coils,
                            f"the store ({coil_label(run.data.coil_mode, run.data.coils)})")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if getattr(model, "name", run.model) != run.model:
        raise CheckpointError(f"the checkpoint's model is {model.name!r}, the run's config says {run.model!r}")
    frozen = freeze_parameters(model, cfg.freeze) if cfg.freeze else []
    model.to(device)
    if cfg.amp:
        amp_convs(model)
    compute_dtype = torch.bfloat16 if cfg.precision == "bfloat16" else None  # None: as the input, float32
    if compute_dtype is not None and not set_compute_dtype(model, compute_dtype):
        raise ConfigError(f"--precision bfloat16: model {run.model!r} has no convolution block it applies to; "
                          f"train it with --precision float32")
    if compute_dtype is not None and device.type == "cpu" and cpu_has_native_bf16() is False:
        tell("warning: --precision bfloat16 on a CPU without AMX or AVX512-BF16: oneDNN emulates bfloat16 "
             "here, which is slower than float32; train with --precision float32 on this machine")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
    if resume:
        progress = load_state(last, optimizer, scaler)
        if progress["step"] != meta.get("training", {}).get("step"):
            raise CheckpointError(f"{last}: the resume state (step {progress['step']}) and the weights (step "
                                  f"{meta.get('training', {}).get('step')}) differ; the last save was interrupted")
        # the training time a checkpoint records is that of every run of this run dir up to it (the
        # time between a run's last save and its interruption is lost): resumed runs count on from it
        t_start -= float(meta.get("training", {}).get("seconds") or 0.0)
    net = model
    if info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = SmsLoss(run.loss)

    # the sampler fixes the batches of every epoch, and so the optimizer steps the schedule spans
    sampler = DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=False)
    n_batches = math.ceil(sampler.num_samples / cfg.batch_size)
    schedule = LrSchedule.from_config(cfg, math.ceil(n_batches / cfg.accumulate))

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckdir.mkdir(exist_ok=True)
        cfg_dict = {**run.to_dict(), "world_size": info.world_size, "split": how,
                    "n_train": len(train_idx), "n_val": len(val_idx),
                    "effective_batch_size": cfg.batch_size * cfg.accumulate * info.world_size,
                    "lr_schedule": schedule.state_dict(),
                    "normalization": f"quantile {NORM_QUANTILE} of |x0|",
                    "frozen": frozen, "n_parameters": count_parameters(model),
                    "versions": {"torch": torch.__version__, "smssynth": _version()}}
        write_json(run_dir / "config.json", cfg_dict)
    D.barrier(info)

    say(f"{run.command}: {run.model} ({count_parameters(model):,} trainable parameters"
        f"{f', {len(frozen)} frozen tensors' if frozen else ''}) on {device}"
        f"{f' x {info.world_size} ranks' if info.enabled else ''}; {len(train_idx)} train / {len(val_idx)} val "
        f"examples ({how})")
    if progress:
        note = schedule.changes(progress.get("schedule"))
        if note:
            tell(f"note: {note}")

    # zero-filled reference on the same val examples (once per run dir)
    zf = None
    if val_positions:
        base = run_dir / "baseline.json"
        if resume and base.is_file():
            zf = json.loads(base.read_text())["zero_filled"]
        else:
            rows = evaluate_examples(None, val_ds, val_positions[info.rank::info.world_size], device,
                                     cfg.batch_size, cfg.num_workers)
            zf = _summaries([r for part in D.all_gather_objects(rows, info) for r in part])
            if main:
                write_json(base, {"zero_filled": zf, "val_indices": val_idx})
        say("zero-filled on val: " + _metric_line(zf))

    step = progress["step"] if progress else 0
    epoch_done = progress["epoch"] if progress else 0
    skip = 0
    if progress and not progress["epoch_complete"]:
        epoch_done, skip = progress["epoch"] - 1, progress["batch_in_epoch"]
    best = progress.get("best") if progress else None
    keep = step if resume else None
    log = EpochLog(run_dir / "log.csv", keep_until_step=keep) if main else None
    steps_log = StepLog(run_dir / "steps.csv", keep_until_step=keep) if main else None
    tb = tensorboard(run_dir) if main else None

    from tqdm import tqdm

    epoch = epoch_done
    stopped = _early_stop(cfg, best, epoch) if progress and not skip else None
    if stopped:
        tell(_early_stop_line(stopped) + "; nothing left to do")
    try:
        while stopped is None and epoch < cfg.epochs and (cfg.max_steps is None or step < cfg.max_steps):
            epoch += 1
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            train_ds.set_epoch(epoch)
            order = list(sampler)
            batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            if skip and progress.get("batches_per_epoch") != n_batches:
                raise CheckpointError(f"--resume: the interrupted epoch had {progress.get('batches_per_epoch')} "
                                      f"batches, now {n_batches} (the store's examples or the rank count changed); "
                                      f"it cannot be replayed")
            # accumulate micro-batches per optimizer step; a resumed epoch restarts at a step's first one
            acc = cfg.accumulate
            groups = [batches[i:i + acc] for i in range(skip, n_batches, acc)]
            loader = DataLoader(train_set, batch_sampler=batches[skip:], num_workers=cfg.num_workers,
                                pin_memory=device.type == "cuda")
            bar = tqdm(total=math.ceil(n_batches / acc), initial=math.ceil(skip / acc), desc=f"epoch {epoch}/{cfg.epochs}",
                       unit="step", disable=True if (not main or quiet) else None, dynamic_ncols=True, leave=False)
            sums, n_seen, done, step = _train_epoch(
                net, loader, groups, bar, optimizer, scaler, params, loss_fn, schedule, cfg, device, epoch, step, skip,
                info, steps_log, tb)
            skip = 0
            complete = done == n_batches

            # reductions: train terms averaged over ranks, val metrics gathered over ranks
            keys = sorted(sums)
            tot = D.all_reduce_sum([sums[k] for k in keys] + [n_seen], info, device)
            train_terms = {k: tot[j] / max(tot[-1], 1) for j, k in enumerate(keys)}
            val = None
            if val_positions:
                set_compute_dtype(model, None)  # validate as evaluate and recon will run it: float32
                rows = evaluate_examples(model, val_ds, val_positions[info.rank::info.world_size], device,
                                         cfg.batch_size, cfg.num_workers)
                set_compute_dtype(model, compute_dtype)
                val = _summaries([r for part in D.all_gather_objects(rows, info) for r in part])
            seconds = time.perf_counter() - t0

            improved = val is not None and (best is None or val["psnr"]["mean"] > best["psnr"])
            if improved:
                best = {"epoch": epoch, "step": step, "psnr": val["psnr"]["mean"]}
            stopped = _early_stop(cfg, best, epoch) if complete else None
            prog = {"epoch": epoch, "step": step, "batch_in_epoch": done, "batches_per_epoch": n_batches,
                    "epoch_complete": complete, "best": best, "schedule": schedule.state_dict(),
                    "stopped_early": stopped}
            if main:
                name = ckdir / f"epoch-{epoch:03d}"
                _save(name, model, run, prog, val, zf, how, len(train_idx), len(val_idx), frozen, info, device,
                      time.perf_counter() - t_start)
                copy_checkpoint(name, last)
                save_state(last, optimizer, scaler, prog)
                if improved:
                    copy_checkpoint(name, ckdir / "best")
                row = {"epoch": epoch, "step": step, "lr": optimizer.param_groups[0]["lr"],
                       **{f"train_{k}": v for k, v in train_terms.items()},
                       **{f"val_{m}": (val[m]["mean"] if val else "") for m in METRICS},
                       "seconds": seconds}
                log.add(row)
                if tb is not None and val:
                    for m in METRICS:
                        tb.add_scalar(f"val/{m}", val[m]["mean"], step)
                    tb.flush()
            loss_mean = train_terms.get("loss", float("nan"))
            say(f"epoch {epoch}{'' if complete else ' (partial)'}  step {step}  loss {loss_mean:.4g}"
                + (f"  val {_metric_line(val)}" if val else "") + f"  {seconds:.1f}s")
            if stopped:
                tell(_early_stop_line(stopped))
            D.barrier(info)
            if not complete:
                break
    finally:
        if steps_log is not None:
            steps_log.close()
        if tb is not None:
            tb.close()
    return FitResult(run_dir=run_dir, epoch=epoch, step=step, history=list(log.rows) if log else [],
                     best=best, zero_filled=zf, split=how, n_train=len(train_idx), n_val=len(val_idx),
                     seconds=time.perf_counter() - t_start, model=model, rank=info.rank, stopped_early=stopped)


def _early_stop(cfg: TrainConfig, best: dict | None, epoch: int) -> dict[str, Any] | None:
    """The early-stop record when ``epoch`` is the ``early_stop``-th epoch without a better val PSNR."""
    if cfg.early_stop is None:
        return None
    since = best["epoch"] if best else 0
    if epoch - since < cfg.early_stop:
        return None
    return {"epoch": epoch, "patience": cfg.early_stop, "best_epoch": best["epoch"] if best else None,
            "best_psnr": best["psnr"] if best else None}


def _early_stop_line(s: dict[str, Any]) -> str:
    where = (f"; the best, {s['best_psnr']:.2f} dB at epoch {s['best_epoch']}, is checkpoints/best"
             if s["best_epoch"] is not None else "")
    return f"early stop after epoch {s['epoch']}: no better val PSNR for {s['patience']} epochs{where}"


def _train_epoch(net, loader, groups, bar, optimizer, scaler, params, loss_fn, schedule: LrSchedule,
                 cfg: TrainConfig, device, epoch: int, step: int, done: int, info, steps_log, tb):
    """The optimizer steps of one (possibly resumed or cut short) epoch: one per group of
    micro-batches (``groups``, lists of example positions, in the order ``loader`` yields them).

    Each micro-batch's loss, a mean over its examples, is weighted by its share of the group's
    examples before ``backward``, so the summed gradients are those of the mean loss over the
    group (equal to one batch of all its examples whenever the loss is a mean of per-example
    terms).  Under DDP only the group's last backward all-reduces (``no_sync``).

    Returns (sums of the loss terms weighted by examples, examples seen, batches done in the
    epoch, global step).
    """
    torch.set_grad_enabled(True)  # whatever the caller left: training needs autograd (fit restores it)
    net.train()
    ddp = isinstance(net, nn.parallel.DistributedDataParallel)
    sums: dict[str, float] = {}
    n_seen = 0
    batches = iter(loader)
    for group in groups:
        t0 = time.perf_counter()
        n_group = sum(len(b) for b in group)
        optimizer.zero_grad(set_to_none=True)
        step_terms: dict[str, float] = {}
        for j, positions in enumerate(group):
            batch = to_device(next(batches), device)
            nb, _ = normalize_batch(batch)
            if cfg.crop is not None:
                nb = crop_readout(nb, cfg.crop, step_generator(cfg.seed, epoch, step * cfg.accumulate + j, info.rank))
            x0, k3, mask3, c = fold_coils(nb)
            n_b = x0.shape[0] // c
            share = n_b / n_group
            sync = net.no_sync() if ddp and j < len(group) - 1 else contextlib.nullcontext()
            with sync:
                out = net(x0, k3, mask3)
                if nb["x0"].ndim == 6:  # K coils: the loss takes (B, K, ...) and compares their RSS with target
                    out = out.unflatten(0, (-1, c))
                loss, terms = loss_fn(out, nb["target"])
                scaler.scale(loss if share == 1 else loss * share).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v * n_b
                step_terms[k] = step_terms.get(k, 0.0) + v * share
            n_seen += n_b
        lr = schedule(step)
        for g in optimizer.param_groups:
            g["lr"] = lr
        if cfg.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        done += len(group)
        bar.update(1)
        bar.set_postfix(loss=f"{step_terms['loss']:.4g}", refresh=False)
        if steps_log is not None:
            steps_log.add({"step": step, "epoch": epoch, "lr": lr, **step_terms,
                           "seconds": time.perf_counter() - t0})
        if tb is not None:
            tb.add_scalar("train/lr", lr, step)
            for k, v in step_terms.items():
                tb.add_scalar(f"train/{k}", v, step)
        if cfg.max_steps is not None and step >= cfg.max_steps:
            break
    bar.close()
    return sums, n_seen, done, step


def _metric_line(s: dict | None) -> str:
    if not s:
        return "-"
    return f"PSNR {s['psnr']['mean']:.2f} dB  SSIM {s['ssim']['mean']:.4f}  NMSE {s['nmse']['mean']:.4g}"


def _save(name, model, run, prog, val, zf, how, n_train, n_val, frozen, info, device, seconds) -> None:
    t = run.train
    training = {
        "command": run.command,
        "epoch": prog["epoch"],
        "step": prog["step"],
        "epoch_complete": prog["epoch_complete"],
        "seconds": seconds,
        "device": str(device),
        "world_size": info.world_size,
        "optimizer": {"name": "Adam", "lr": t.lr, "weight_decay": t.weight_decay, "grad_clip": t.grad_clip,
                      "schedule": prog["schedule"]},
        "effective_batch_size": t.batch_size * t.accumulate * info.world_size,
        "loss": dataclasses.asdict(run.loss),
        "train": {**dataclasses.asdict(t), "freeze": list(t.freeze)},
        "frozen": frozen,
        "normalization": Normalization(NORM_QUANTILE).to_meta(),  # what normalize_batch used: recon reads it
        "parent": run.parent,
        "stopped_early": prog["stopped_early"],
    }
    data = describe_store(run.store, split=how, n_examples=n_train, n_val=n_val,
                          data_config=dataclasses.asdict(run.data))
    metrics = {"val": val, "zero_filled": zf}
    # the metadata's n_parameters is counted over trainable parameters and checked against a freshly
    # built model on load, so frozen ones are counted as what they are in the architecture: parameters
    with _all_trainable(model):
        save_checkpoint(name, model, model_name=run.model, model_config=model_config_dict(model),
                        training=training, data=data, metrics=metrics)


@contextlib.contextmanager
def _all_trainable(model: nn.Module):
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("smssynth")
    except Exception:
        return "unknown"
