"""``smssynth generate``: a whole dataset with dask (local cluster, or an existing one)."""

from __future__ import annotations

import click

from cli.options import (UserError, bar, common_run_options, config_from_options, echo_problems, nifti_option,
                         refuse_foreign_out, sim_options, user_error, verbosity_options)


class KeyValue(click.ParamType):
    name = "KEY=VALUE"

    def convert(self, value, param, ctx):
        key, sep, val = str(value).partition("=")
        if not sep or not key:
            self.fail(f"{value!r} is not KEY=VALUE", param, ctx)
        return key, val


@click.command("generate")
@click.argument("input_root", required=False, type=click.Path(exists=True))
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="CSV with columns path,patient[,split] instead of INPUT_ROOT (paths relative to the CSV).")
@click.option("--out", "-o", required=True, help="Output store: a folder, or an fsspec URL (s3://... needs smssynth[cloud]).")
@click.option("--recipe", type=click.Path(dir_okay=False),
              help="YAML recipe (datasets/NAME.yaml) with simulation parameters; flags given here override it.")
@click.option("--split", "split_spec", default=None,
              help="Patient-level split, e.g. train=0.8,val=0.1,test=0.1 (recorded per example).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes of the local dask cluster [default: CPU count].")
@click.option("--scheduler", default=None,
              help="Address of an existing dask.distributed scheduler (e.g. tcp://host:8786) instead of a local cluster.")
@click.option("--storage-option", "storage_options", type=KeyValue(), multiple=True,
              help="fsspec storage option for a URL --out, repeatable (e.g. anon=false).")
@nifti_option
@sim_options
@common_run_options
@verbosity_options
def generate(input_root, manifest, out, recipe, split_spec, workers, scheduler, storage_options, nifti_axes, salt,
             on_error, show_paths, overwrite, quiet, verbose, **kwargs):
    """Generate an SMS k-space dataset from every study under INPUT_ROOT (or a --manifest).

    Every simulation option of dicom2kspace applies with the same meaning.  Runs on a local dask
    cluster sized to the machine, or on an existing cluster with --scheduler; interrupted runs
    resume where they stopped when started again with the same parameters.

        smssynth generate /data/sunnybrook --recipe datasets/cine-sms2-r4.yaml --out cine.zarr
    """
    import time

    from synth.dataset.generate import generate as run
    from synth.dataset.generate import read_manifest
    from synth.dataset.recipes import load_recipe
    from synth.dataset.splits import parse_split
    from synth.errors import SmssynthError
    from synth.io.deid import resolve_salt

    if (input_root is None) == (manifest is None):
        raise click.UsageError("give exactly one of INPUT_ROOT or --manifest")
    try:
        params = load_recipe(recipe) if recipe else {}
        config = config_from_options(kwargs, params)
        split = parse_split(split_spec if split_spec is not None else params.get("split"))
        rows = read_manifest(manifest) if manifest else None
    except SmssynthError as e:  # the recipe, the split, the manifest: one line naming file and key
        raise UserError(str(e), 2) from None
    refuse_foreign_out(out, overwrite)  # before a cluster starts

    pbar = bar("generate", quiet)
    t0 = time.perf_counter()

    def progress(done, total, record):
        if pbar.total is None:
            pbar.reset(total=total)
        pbar.update(1)

    try:
        res = run(input_root, out, config, salt=resolve_salt(salt), manifest=rows, split=split, workers=workers,
                  scheduler=scheduler, on_error=on_error, overwrite=overwrite,
                  storage_options=dict(storage_options) or None, progress=progress, show_paths=show_paths,
                  nifti_axes=nifti_axes)
    except SmssynthError as e:
        pbar.close()
        raise user_error(e) from None
    pbar.close()
    print_summary(res, out, time.perf_counter() - t0, show_paths, stages=verbose)
    if res.written + res.already == 0:
        raise click.ClickException(f"no example could be written to {out}; see the reasons above")
    if res.failed:
        raise click.ClickException(
            f"{len(res.failed)} of {res.planned} examples failed (reasons above); the store is resumable: fix the "
            f"cause and run the same command again to compute only those"
        )


def print_summary(r, out, wall, show_paths: bool = False, stages: bool = False) -> None:
    t, ny, nx = r.shape
    rate = r.written / r.seconds if r.seconds else 0.0
    click.echo("")
    click.echo(f"store     {out}   ({t} frames, {ny}x{nx}; {r.n_series} series from {r.n_files} files)")
    rows = [
        ("planned", r.planned),
        ("already complete", r.already),
        ("written now", r.written),
        ("failed (left incomplete)", len(r.failed)),
        ("skipped inputs", sum(r.skipped_inputs.values())),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"  {k:<{w}}  {v:>7}")
    if r.splits:
        click.echo("  splits: " + ", ".join(f"{k} {v}" for k, v in sorted(r.splits.items())))
    click.echo(f"  {r.workers} workers, {wall:.1f}s, {rate:.2f} examples/s, peak worker memory {r.peak_rss_mb:.0f} MB")
    if stages:  # -v
        click.echo(f"  stages: cluster start, scan and plan {max(r.seconds - r.run_seconds, 0):.1f}s, simulate and "
                   f"write {r.run_seconds:.1f}s, summary {max(wall - r.seconds, 0):.1f}s")
    echo_problems(skipped=r.skipped_inputs, skip_reasons=r.skip_reasons, plan_skipped=r.plan_skipped, failed=r.failed,
                  warnings=r.warnings, notes=r.notes, show_paths=show_paths)
