"""``smssynth dicom2kspace``: DICOM series -> multi-coil complex SMS k-space store."""

from __future__ import annotations

import click

from cli.options import (common_run_options, echo_problems, config_from_options, nifti_option, progress_bar,
                         refuse_foreign_out, sim_options, user_error, verbosity_options)


@click.command("dicom2kspace")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(), help="Output Zarr store (a directory).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads that compute and write coils  [default: the CPU cores available]")
@nifti_option
@sim_options
@common_run_options
@verbosity_options
def dicom2kspace(inputs, out, threads, nifti_axes, salt, on_error, show_paths, overwrite, quiet, verbose, **kwargs):
    """Simulate multi-coil complex SMS k-space from magnitude DICOM or NIfTI INPUTS (files or folders).

    Series are grouped by UID, slices by position along the slice normal, frames by trigger
    time; M slices of a series form each SMS example.  Example:

        smssynth dicom2kspace dicom/ --out sms.zarr --sms 2 --accel 2 --coils 8
    """
    from synth.dataset.pipeline import dicom2kspace as run
    from synth.errors import SmssynthError
    from synth.io.deid import resolve_salt

    config = config_from_options(kwargs)
    refuse_foreign_out(out, overwrite)
    bar, progress = progress_bar("dicom2kspace", quiet)

    try:
        summary = run(
            inputs, out, config, salt=resolve_salt(salt), on_error=on_error, overwrite=overwrite, progress=progress,
            threads=threads, show_paths=show_paths, nifti_axes=nifti_axes,
        )
    except SmssynthError as e:
        bar.close()
        raise user_error(e) from None
    bar.close()
    print_summary(summary, out, show_paths, stages=verbose)
    if summary.written == 0 and not summary.already:
        raise click.ClickException(f"no example could be written to {out}; see the reasons above")
    if summary.failed:
        raise click.ClickException(
            f"{len(summary.failed)} of {summary.n_examples} examples failed (reasons above); run the same command "
            f"again to compute only those"
        )


def print_summary(s, out, show_paths: bool = False, stages: bool = False) -> None:
    t, ny, nx = s.shape
    click.echo(
        f"\n{s.written} of {s.n_examples} examples written to {out}"
        + (f" ({s.already} already complete)" if s.already else "") + "  "
        f"({t} frames, {ny}x{nx}; from {s.n_series} series, {s.n_files} files)"
    )
    echo_problems(skipped=s.skipped_inputs, skip_reasons=s.skip_reasons, plan_skipped=s.plan_skipped, failed=s.failed,
                  warnings=s.warnings, notes=s.notes, show_paths=show_paths)
    if stages and s.seconds:  # -v
        per = ", ".join(f"{k} {v:.1f}s" for k, v in s.seconds.items())
        click.echo(f"time {s.wall_seconds:.1f}s (stages, summed over threads: {per}; they overlap)")
    else:
        click.echo(f"time {s.wall_seconds:.1f}s")
