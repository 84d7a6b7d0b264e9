"""``smssynth kspace2sms``: measured multi-coil cine k-space (ISMRMRD, fastMRI HDF5, CMRxRecon .mat) -> SMS store."""

from __future__ import annotations

import click

from cli.options import MATRIX, echo_problems, progress_bar, refuse_foreign_out, user_error, verbosity_options
from synth.dataset.config import CAIPI_ORDERS, FRAME_MODES, MASKS, SimConfig

_D = SimConfig()


@click.command("kspace2sms")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "-o", required=True, type=click.Path(), help="Output Zarr store (a directory).")
@click.option("--dataset", default=None,
              help="Name of the k-space dataset (fastMRI/CMRxRecon) or ISMRMRD group, if not the default "
                   "('kspace'; 'kspace_full' or 'kspace'; 'dataset').")
@click.option("--sms", "-m", type=click.IntRange(min=1), default=_D.sms, show_default=True, help="Slices excited simultaneously (M).")
@click.option("--accel", "-r", type=click.IntRange(min=1), default=_D.accel, show_default=True, help="In-plane acceleration R (total R*M).")
@click.option("--acs", type=click.IntRange(min=0), default=_D.acs, show_default=True, help="Fully sampled central ky rows.")
@click.option("--mask", type=click.Choice(MASKS), default=_D.mask, show_default=True, help="In-plane sampling pattern, as for dicom2kspace.")
@click.option("--caipi", type=click.Choice(CAIPI_ORDERS), default=_D.caipi, show_default=True, help="CAIPI ordering, as for dicom2kspace.")
@click.option("--matrix", type=MATRIX, default=None, help="Centre-crop / zero-pad the coil images to NYxNX.")
@click.option("--frames", type=click.IntRange(min=1), default=None, help="Number of time frames (default: the data's own).")
@click.option("--frames-mode", type=click.Choice(FRAME_MODES), default=_D.frames_mode, show_default=True, help="Keep the first frames, or interpolate linearly.")
@click.option("--snr", type=click.FloatRange(min=0, min_open=True), default=None, help="Add complex Gaussian noise on top of the measured data: rms(k-space)/sigma = SNR.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=_D.seed, show_default=True, help="Root seed of the masks and noise.")
@click.option("--combos", type=click.IntRange(min=1), default=None, help="Random slice combinations per file (default: all M-subsets).")
@click.option("--draws", type=click.IntRange(min=1), default=_D.draws, show_default=True, help="Independent mask/noise draws per combination.")
@click.option("--min-distance", "min_distance_mm", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Minimum distance between slices of one example (mm; slice index for files without geometry).")
@click.option("--salt", envvar="SMSSYNTH_SALT", default=None, help="Secret for pseudonymous keys (as dicom2kspace).")
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="A file that cannot be read (truncated, not HDF5, no k-space dataset, not fully sampled): leave it out and go on (listed at the end; its examples left incomplete if it broke mid-way), or stop.")
@click.option("--show-paths", is_flag=True, help="Name input files by their real paths in messages (default: salted hashes).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out store.")
@verbosity_options
def kspace2sms(inputs, out, dataset, salt, on_error, show_paths, overwrite, quiet, **kwargs):
    """Make SMS (CAIPI) examples from fully sampled multi-slice multi-coil cine k-space INPUTS.

    Each file is one series (ISMRMRD .h5/.mrd, fastMRI-style .h5 with a 'kspace' dataset, or a
    CMRxRecon MATLAB v7.3 .mat); M of its slices are collapsed with CAIPI per example.  The store
    holds the collapsed measured k-space, the RSS target and ESPIRiT coil maps (no phase array).

        smssynth kspace2sms cine_sax.mat --out cmrx-sms2.zarr --sms 2 --accel 2
    """
    from synth.dataset.raw import kspace2sms as run
    from synth.errors import ConfigError, SmssynthError
    from synth.io.deid import resolve_salt

    try:
        config = SimConfig(phase="none", resolution="dicom", **kwargs)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    refuse_foreign_out(out, overwrite)
    bar, progress = progress_bar("kspace2sms", quiet)

    try:
        s = run(inputs, out, config, salt=resolve_salt(salt), overwrite=overwrite, show_paths=show_paths,
                dataset=dataset, on_error=on_error, progress=progress)
    except SmssynthError as e:
        bar.close()
        raise user_error(e) from None
    bar.close()
    t, ny, nx = s.shape
    click.echo(f"\n{s.written} of {s.n_examples} examples written to {out}"
               + (f" ({s.already} already complete)" if s.already else "")
               + f"  ({t} frames, {ny}x{nx}; from {s.n_series} file{'' if s.n_series == 1 else 's'}; measured k-space)")
    echo_problems(skipped={"unreadable": len(s.skipped_inputs)} if s.skipped_inputs else None,
                  skip_reasons=s.skipped_inputs, plan_skipped=s.plan_skipped, failed=s.failed, notes=s.notes,
                  show_paths=show_paths)
    click.echo(f"time {s.wall_seconds:.1f}s, peak memory {s.peak_rss_mb:.0f} MB")
    if s.written == 0 and not s.already:
        raise click.ClickException(f"no example could be written to {out}; see the reasons above")
    if s.failed:
        raise click.ClickException(f"{len(s.failed)} of {s.n_examples} examples failed (reasons above); run the same "
                                   f"command again to compute only those")
