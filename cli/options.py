"""Simulation options shared by every command that simulates (same names, same meaning)."""

from __future__ import annotations

import functools
import logging

import click

from synth.config import CAIPI_ORDERS, CSMS, COMBINES, FRAME_MODES, MASKS, PHASES, RESOLUTIONS, SimConfig
from synth.deid import MASKED_PATHS_NOTE as PATHS_NOTE
from synth.errors import ConfigError


class MatrixType(click.ParamType):
    """``NYxNX`` (e.g. ``192x160``) or a single ``N`` for a square matrix."""

    name = "NYxNX"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = [int(v) for v in str(value).lower().split("x")]
            if len(parts) == 1:
                parts = parts * 2
            if len(parts) != 2 or min(parts) < 4:
                raise ValueError
        except ValueError:
            self.fail(f"{value!r} is not a matrix like 192x160 (two sizes >= 4)", param, ctx)
        return tuple(parts)


MATRIX = MatrixType()

_D = SimConfig()


def sim_options(f):
    """Decorate a click command with every simulation option (defaults from SimConfig)."""
    opts = [
        click.option("--sms", "-m", type=click.IntRange(min=1), default=_D.sms, show_default=True, help="Slices excited simultaneously (M)."),
        click.option("--coils", "-c", type=click.IntRange(min=1), default=_D.coils, show_default=True, help="Receive coils (C)."),
        click.option("--accel", "-r", type=click.IntRange(min=1), default=_D.accel, show_default=True, help="In-plane acceleration R (total R*M)."),
        click.option("--acs", type=click.IntRange(min=0), default=_D.acs, show_default=True, help="Fully sampled central ky rows."),
        click.option("--mask", type=click.Choice(MASKS), default=_D.mask, show_default=True,
                     help="In-plane sampling pattern, varied per frame: 'vd' variable-density random rows (CRNN-MRI's; the recipes'), 'uniform' every R-th row, 'random' uniformly random rows."),
        click.option("--caipi", type=click.Choice(CAIPI_ORDERS), default=_D.caipi, show_default=True,
                     help="CAIPI ordering: 'row' kz = ky row mod M (retrospective), 'acquired' kz = acquisition rank of the row in its frame mod M (prospective). Stored per row in the 'kz' array."),
        click.option("--csm", type=click.Choice(CSMS), default=_D.csm, show_default=True, help="Synthetic coil-map model."),
        click.option("--phase", type=click.Choice(PHASES), default=_D.phase, show_default=True, help="Synthetic phase model."),
        click.option("--clusters", "-k", type=click.IntRange(min=1), default=_D.clusters, show_default=True, help="k-means clusters K for --phase kmeans."),
        click.option("--resolution", type=click.Choice(RESOLUTIONS), default=_D.resolution, show_default=True,
                     help="'acquired': crop k-space to the DICOM AcquisitionMatrix (undo scanner interpolation); 'dicom': keep the stored matrix."),
        click.option("--matrix", type=MATRIX, default=None, help="Centre-crop / zero-pad images to NYxNX (image space, after --resolution)."),
        click.option("--frames", type=click.IntRange(min=1), default=None, help="Number of time frames (default: the series' own)."),
        click.option("--frames-mode", type=click.Choice(FRAME_MODES), default=_D.frames_mode, show_default=True, help="How --frames changes time: keep the first frames, or resample linearly."),
        click.option("--snr", type=click.FloatRange(min=0, min_open=True), default=None, help="Add complex Gaussian noise: rms(k-space)/sigma = SNR. Off by default."),
        click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=_D.seed, show_default=True, help="Root seed; every example's seed derives from it and the example's identity."),
        click.option("--combos", type=click.IntRange(min=1), default=None, help="Random slice combinations per group (default: all M-subsets)."),
        click.option("--draws", type=click.IntRange(min=1), default=_D.draws, show_default=True, help="Independent synthetic draws per combination."),
        click.option("--combine", type=click.Choice(COMBINES), default=_D.combine, show_default=True,
                     help="Which slices may share an example; 'across-series' pairs slices of different series (augmentation for data-poor sets)."),
        click.option("--min-distance", "min_distance_mm", type=click.FloatRange(min=0), default=_D.min_distance_mm, show_default=True, help="Minimum distance (mm) between slices of one example."),
        click.option("--targets-only", "targets_only", is_flag=True,
                     help="Store only the images (each slice once, with its k-means labels) and what cannot be "
                          "redrawn; `smssynth train --synthesis on-the-fly` simulates phase, coils, masks and noise "
                          "from them anew every epoch.  Far smaller than a k-space store."),
        click.option("--no-phase", "no_phase", is_flag=True, help="Do not store the 'phase' array (saves space; the per-coil truth is then not recoverable)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


SIM_KEYS = (
    "sms", "coils", "accel", "acs", "mask", "caipi", "csm", "phase", "clusters", "resolution", "matrix", "frames",
    "frames_mode", "snr", "seed", "combos", "draws", "combine", "min_distance_mm", "targets_only",
)


def config_from_options(kwargs: dict, recipe: dict | None = None) -> SimConfig:
    """Pop the simulation options out of ``kwargs`` into a validated SimConfig.

    Precedence: an option given on the command line (or by environment) > ``recipe`` > default.
    Errors become click usage errors naming the option.
    """
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    recipe = recipe or {}

    def explicit(name: str) -> bool:
        if ctx is None:
            return True
        return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)

    values = {}
    for k in SIM_KEYS:
        v = kwargs.pop(k)
        values[k] = v if explicit(k) or k not in recipe else recipe[k]
    no_phase = kwargs.pop("no_phase")
    values["store_phase"] = not no_phase if explicit("no_phase") or "store_phase" not in recipe else recipe["store_phase"]
    try:
        return SimConfig(**values)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # dask's own INFO chatter (cluster start/stop) is not the user's business
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.WARNING)


def common_run_options(f):
    @click.option("--salt", envvar="SMSSYNTH_SALT", default=None, help="Secret for pseudonymous keys (env SMSSYNTH_SALT; default: a per-user secret in ~/.config/smssynth/salt). Pass the same salt to reproduce a store elsewhere.")
    @click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="Corrupt or undecodable DICOM, images with burned-in annotation, or slices without ImagePositionPatient: skip them / fall back to SliceLocation (counted and reported), or stop.")
    @click.option("--show-paths", is_flag=True, help="Name input files by their real paths in messages. By default each folder and file name is shown as a salted hash, since exports often name them after the patient.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out store.")
    @click.option("--quiet", "-q", is_flag=True, help="Only warnings and the summary.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def _nifti_axes(ctx, param, value):
    from synth.nifti import parse_axes

    try:
        return None if value is None else ",".join(parse_axes(value))
    except ConfigError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1]) from None


nifti_option = click.option(
    "--nifti-axes", "nifti_axes", default=None, callback=_nifti_axes, metavar="AXES",
    help="Axis order of NIfTI (.nii/.nii.gz) inputs, e.g. t,y,x or x,y,z,t, overriding the header "
         "(default: x,y,z,t for 4D files; 3D files only if marked as a time series).")


class UserError(click.ClickException):
    """A one-line error with the documented exit code: 2 for a usage or configuration problem
    (bad option, existing or refused --out, no usable input), 1 for a failure at run time."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def user_error(e: Exception) -> UserError:
    """The project's error ``e`` as a :class:`UserError` with its exit code."""
    from synth.errors import ConfigError, NoInputError, StoreExistsError

    usage = isinstance(e, (ConfigError, StoreExistsError, NoInputError))
    return UserError(str(e), 2 if usage else 1)


def progress_bar(desc: str, quiet: bool):
    """A tqdm bar (off with --quiet) and the ``progress(done, total)`` callback that drives it."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="example", desc=desc, disable=quiet, dynamic_ncols=True)

    def progress(done, total):
        if bar.total is None:
            bar.reset(total=total)
        bar.n = done
        bar.refresh()

    return bar, progress
