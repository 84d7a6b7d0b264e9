"""``smssynth evaluate``: metrics table (or JSON) of models and baselines on a store (:mod:`zoo.eval.evaluate`)."""

from __future__ import annotations

import click

from cli.options import bar, stage, verbosity_options
from cli.recon import (BASELINES, check_coil_options, check_selection, load_checked, metric_options, open_checked,
                       select_checked, selection_options)


def _baseline_list(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown or not names:
        raise click.BadParameter(f"unknown baseline(s) {unknown or [value]}; choose from {', '.join(BASELINES)} "
                                 f"(comma-separated), or pass --no-baselines", param_hint="--baselines")
    return list(dict.fromkeys(names))


@click.command("evaluate")
@click.option("--model", "specs", multiple=True, metavar="CHECKPOINT|NAME",
              help="A checkpoint, registered weights NAME or baseline; repeat for several.")
@click.argument("store")
@selection_options
@metric_options
@click.option("--baselines", "baselines", default=",".join(BASELINES), show_default=True,
              help="Baselines to report besides the models (comma-separated); sense-oracle uses the true coil "
                   "maps (an ORACLE, marked as such).")
@click.option("--no-baselines", is_flag=True, help="Report the --model entries only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the table.")
@verbosity_options
def evaluate(specs, store, examples, split, device, coil_mode, coils, cs_iters, sense_iters, sense_lam, ssim_kind,
             fail_nmse, baselines, no_baselines, as_json):
    """Metrics of each --model and the baselines on STORE, with paired t-tests.

    Per method: NMSE (table: x 10^-3; JSON: plain ratio), PSNR, SSIM (--ssim: training
    validation's Gaussian one, or fastMRI's), mean ± sd without the failed examples (NMSE >
    --fail-nmse; the paper's way) and over all of them, the failures counted, and the model's
    forward time per example (mean ± sd, device stated).  The SENSE baselines use every coil's
    data; sense-oracle uses the simulation's true coil maps and is marked ORACLE.
    Paired t-tests (scipy.stats.ttest_rel) on per-example PSNR, SSIM and NMSE for every pair of
    --model entries and each of them against zero-filled.  A checkpoint runs in the coil mode it
    was trained in; the baselines in --coil-mode (--virtual-coils K), by default the models' coil
    mode when they all share one, else per-coil.  Every method's magnitude (RSS over its coils) is
    compared with the store's target.
    """
    check_selection(examples, split)
    coil_mode, coils = check_coil_options(coil_mode, coils)
    from click.core import ParameterSource

    ctx = click.get_current_context()
    if no_baselines and ctx.get_parameter_source("baselines") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--baselines and --no-baselines contradict each other; give one")
    chosen = [] if no_baselines else _baseline_list(baselines)
    specs = list(specs)
    dupes = sorted({s for s in specs if specs.count(s) > 1})
    if dupes:
        raise click.BadParameter(f"{dupes} given more than once", param_hint="--model")
    if not specs and not chosen:
        raise click.UsageError("nothing to evaluate: give --model, or drop --no-baselines")

    dev = open_checked(store, device)
    from synth.dataset.store import Store

    if Store.open(store).source == "measured":  # no simulation truth: there are no true coil maps
        if "sense-oracle" in specs or (ctx.get_parameter_source("baselines") == ParameterSource.COMMANDLINE
                                       and "sense-oracle" in chosen):
            raise click.BadParameter(
                f"{store} holds measured k-space (kspace2sms): its coil maps are ESPIRiT estimates, not the truth "
                f"sense-oracle needs; use sense-espirit", param_hint="--baselines")
        chosen = [b for b in chosen if b != "sense-oracle"]
    sense = {"sense_iters": sense_iters, "sense_lam": sense_lam}
    trained = {s: load_checked(s, dev, coil_mode, cs_iters, coils=coils) for s in specs if s not in BASELINES}
    if coil_mode is None:
        modes = {(m.coil_mode, m.coils) for m in trained.values()}
        coil_mode, coils = modes.pop() if len(modes) == 1 else ("per-coil", None)  # zoo.eval.recon.BASELINE_COIL_MODE
    methods = [trained[s] if s in trained else load_checked(s, dev, coil_mode, cs_iters, coils=coils, **sense)
               for s in specs]
    methods += [load_checked(b, dev, coil_mode, cs_iters, hint="--baselines", coils=coils, **sense)
                for b in chosen if b not in specs]
    for mode, k in dict.fromkeys((m.coil_mode, m.coils) for m in methods):
        select_checked(store, mode, examples, split, coils=k)

    from synth.errors import SmssynthError
    from zoo.eval.evaluate import evaluate as run, format_table, to_json

    pbar = bar("evaluate", True if as_json else None, unit="recon", leave=False)

    def progress(label, done, total):
        pbar.total = total
        pbar.set_postfix_str(label)
        pbar.update(1)

    try:
        with stage("evaluate"):
            result = run(store, methods, named=specs, examples=examples, split=split, device=dev, progress=progress,
                         ssim_kind=ssim_kind, fail_nmse=fail_nmse)
    except SmssynthError as e:
        raise click.ClickException(str(e)) from None
    finally:
        pbar.close()
    click.echo(to_json(result) if as_json else format_table(result))
