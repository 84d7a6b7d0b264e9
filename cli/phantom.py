"""``smssynth phantom``: write the dynamic cardiac phantom as DICOM (the embedded default sample)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import click

from cli.options import stage, verbosity_options

# kept literal so that `smssynth --help` does not import numpy/scipy; tests check they match PhantomSpec
KINDS = ("cine", "perfusion")
_PATIENT_DIR = re.compile(r"PHANTOM\d+")


def _size(ctx, param, value):
    """``ROWSxCOLS`` -> (rows, cols)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(value))
    if not m:
        raise click.BadParameter(f"{value!r} is not a size like 64x56 (ROWSxCOLS)")
    rows, cols = int(m.group(1)), int(m.group(2))
    if min(rows, cols) < 8 or max(rows, cols) > 2048:
        raise click.BadParameter(f"{value!r}: rows and columns must be between 8 and 2048")
    return rows, cols


def _snr(ctx, param, value):
    """``SNR`` or ``LOW:HIGH`` -> None, (snr, snr) or (low, high)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(?::\s*([0-9.eE+-]+)\s*)?", str(value))
    try:
        low = float(m.group(1))
        high = float(m.group(2)) if m.group(2) is not None else low
    except (AttributeError, ValueError):
        raise click.BadParameter(f"{value!r} is not an SNR like 30 or a range like 15:60") from None
    if not (0 < low <= high < float("inf")):
        raise click.BadParameter(f"{value!r}: need 0 < SNR (and LOW <= HIGH for a range)")
    return low, high


def _prepare(out_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty OUT_DIR; with --overwrite, remove only earlier phantom patients in it."""
    if not out_dir.exists():
        return
    entries = sorted(out_dir.iterdir())
    if not entries:
        return
    if not overwrite:
        raise click.UsageError(
            f"output directory {out_dir} is not empty; pass --overwrite to replace the phantom "
            "patients in it, or choose a new directory"
        )
    foreign = [p.name for p in entries if not (p.is_dir() and _PATIENT_DIR.fullmatch(p.name))]
    if foreign:
        # never delete what this command did not write
        raise click.UsageError(
            f"--overwrite only replaces phantom patients (PHANTOMnn folders), but {out_dir} also "
            f"holds {foreign[0]!r}{' and more' if len(foreign) > 1 else ''}; choose an empty or new directory"
        )
    for p in entries:
        shutil.rmtree(p)


@click.command("phantom")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--kind", type=click.Choice(KINDS), default="cine", show_default=True,
              help="cine: one bright-blood cardiac cycle; perfusion: first-pass contrast, one frame per beat.")
@click.option("--slices", type=click.IntRange(min=1), default=4, show_default=True,
              help="Short-axis slices (base to apex).")
@click.option("--frames", type=click.IntRange(min=1), default=16, show_default=True,
              help="Cardiac phases (cine) or heartbeats (perfusion).")
@click.option("--acquired", default="64x56", show_default=True, callback=_size,
              help="Acquired matrix ROWSxCOLS (the phantom's resolution).")
@click.option("--matrix", default="80x80", show_default=True, callback=_size,
              help="Stored DICOM matrix ROWSxCOLS (>= --acquired; k-space zero-filled like a scanner).")
@click.option("--patients", type=click.IntRange(min=1, max=999), default=1, show_default=True,
              help="Patients to write, into OUT_DIR/PHANTOMnn; patient i uses seed SEED+i.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1000), default=0, show_default=True,
              help="Seed of the first patient.")
@click.option("--snr", default=None, callback=_snr, metavar="SNR|LOW:HIGH",
              help="Add thermal noise as scanners' images have it: complex Gaussian noise of standard deviation "
                   "1/SNR of the full-scale signal (fully enhanced blood in perfusion) at the acquired resolution, "
                   "before interpolation and magnitude.  LOW:HIGH gives each patient its own SNR, log-uniform, "
                   "drawn from its seed.  [default: no noise]")
@click.option("--no-extension", is_flag=True, help="Name files without '.dcm', like many scanner exports.")
@click.option("--overwrite", is_flag=True, help="Replace the phantom patients of a non-empty OUT_DIR.")
@verbosity_options
def phantom(out_dir, kind, slices, frames, acquired, matrix, patients, seed, snr, no_extension, overwrite, quiet):
    """Write a synthetic dynamic cardiac short-axis DICOM series per patient into OUT_DIR.

    Needs no data, so it is the quickest way to try the pipeline:

        smssynth phantom demo/ && smssynth dicom2kspace demo/ --out demo.zarr
    """
    from synth.errors import ConfigError
    from synth.io.phantom import PhantomSpec, describe, draw_snr, write_phantom

    if matrix[0] < acquired[0] or matrix[1] < acquired[1]:
        raise click.BadParameter(
            f"{matrix[0]}x{matrix[1]} is smaller than --acquired {acquired[0]}x{acquired[1]}; "
            "the stored matrix must be at least the acquired one in both dimensions",
            param_hint="'--matrix'",
        )
    width = max(2, len(str(patients)))
    try:
        specs = [PhantomSpec(kind=kind, n_slices=slices, n_frames=frames, acquired=acquired, matrix=matrix,
                             seed=seed + i, snr=None if snr is None else draw_snr(seed + i, *snr))
                 for i in range(patients)]
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    _prepare(out_dir, overwrite)
    n_files = 0
    for i, spec in enumerate(specs):
        key = f"PHANTOM{i + 1:0{width}d}"
        with stage(f"write {key}"):
            paths = write_phantom(out_dir / key, spec, extension="" if no_extension else ".dcm", patient=key)
        n_files += len(paths)
        if not quiet:
            click.echo(f"{key}: {describe(spec)}; {len(paths)} files in {out_dir / key}")
    if quiet:  # the summary alone
        click.echo(f"{patients} {kind} phantom patient{'s' if patients != 1 else ''}, {n_files} files in {out_dir}")
