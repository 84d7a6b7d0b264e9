"""``smssynth experiment``: whole experiments of the paper, one command each (:mod:`zoo.eval.experiment`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from cli.options import user_error, verbosity_options

SCALE_NAMES = ("cpu", "paper", "smoke")


@click.group("experiment")
def experiment_cmd():
    """Reproduce the paper's experiments end to end (resumable)."""


@experiment_cmd.command("table1")
@click.option("--scale", type=click.Choice(SCALE_NAMES), default="cpu", show_default=True,
              help="paper: the paper's configuration (64 filters, full matrices; for a GPU); cpu: the same science "
                   "sized for a 2-core CPU (about two hours); smoke: minutes, every stage (tests).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Experiment folder: data/, runs/, eval/, figures/, logs/, table1.md, table1.json.")
@click.option("--cine", type=click.Path(file_okay=False), default=None,
              help="Cine DICOM collection, one sub-folder per patient [default: ../shared/data/sunnybrook-cine].")
@click.option("--fpp", type=click.Path(file_okay=False), default=None,
              help="Real perfusion DICOM for an extra test set [default: ../shared/data/fpp-ge when present].")
@click.option("--no-real-fpp", is_flag=True, help="Skip the real perfusion test set.")
@click.option("--test-patient", default=None,
              help="Name of the cine patient folder kept out as test [default: the last in sorted order].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N for training and evaluation.")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]), default=None,
              help="The networks' convolutions during training (smssynth train --precision).  [default: the "
                   "scale's: bfloat16 for cpu, fast on CPUs with AMX; give float32 on a CPU without AMX or "
                   "AVX512-BF16, where bfloat16 is emulated and slower]")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes of the data generation.")
@click.option("--stop-after", type=click.Choice(["cine-data", "cine-sms-crnn", "cine-conv3d", "cine-independent",
                                                 "fpp-data", "fpp-finetune", "fpp-no-pretrain", "fpp-grating",
                                                 "evaluate", "report"]),
              default=None, help="Stop after this stage (start again later to continue).")
@verbosity_options
def table1(scale, out, cine, fpp, no_real_fpp, test_patient, device, precision, workers, stop_after, quiet, verbose):
    """The paper's Table 1: cine models and perfusion transfer learning, from DICOM to tables.

    Generates the stores (patient-level split, on-the-fly training data), trains sms-crnn,
    conv3d and independent on cine, fine-tunes sms-crnn on synthetic perfusion with three
    ablations, evaluates everything with the baselines and paired t-tests, and writes
    table1.md, table1.json and figures.  Interrupted, it resumes where it stopped when started
    again with the same options.  Each stage's output is in OUT/logs/STAGE.log; -v also prints
    every command as it starts, -q only errors and the final table.  At CPU scale, run it in the background:

        nohup smssynth experiment table1 --scale cpu --out runs/table1 > runs/table1.log 2>&1 &
    """
    from zoo.eval.experiment import DEFAULT_CINE, DEFAULT_FPP, SCALES, Table1

    fpp_path = None if no_real_fpp else Path(fpp) if fpp else (DEFAULT_FPP if DEFAULT_FPP.is_dir() else None)
    if fpp and not Path(fpp).is_dir():
        raise click.BadParameter(f"{fpp}: not a folder", param_hint="--fpp")
    chosen = SCALES[scale] if precision is None else dataclasses.replace(SCALES[scale], precision=precision)
    if chosen.precision == "bfloat16" and device == "cpu" and not quiet:
        from zoo.train.params import cpu_has_native_bf16

        if cpu_has_native_bf16() is False:
            click.echo(f"warning: the {scale} scale trains with bfloat16 convolutions, which this CPU (no AMX or "
                       f"AVX512-BF16) emulates slower than float32; start it with --precision float32 here",
                       err=True)
    exp = Table1(out=Path(out), scale=chosen, cine=Path(cine) if cine else DEFAULT_CINE, fpp=fpp_path,
                 test_patient=test_patient, device=device, workers=workers,
                 say=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)), verbose=verbose)
    from synth.errors import SmssynthError

    try:
        path = exp.run(stop_after=stop_after)
    except SmssynthError as e:  # a failed stage or a bad input: one line, exit 1 or 2
        raise user_error(e) from None
    if path.is_file():
        click.echo(path.read_text())
