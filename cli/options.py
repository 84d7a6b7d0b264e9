"""Simulation options shared by every command that simulates (same names, same meaning)."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from pathlib import Path

import click

from synth.dataset.config import CAIPI_ORDERS, CSMS, COMBINES, FRAME_MODES, MASKS, PHASES, RESOLUTIONS, SimConfig
from synth.errors import ConfigError
from synth.io.deid import MASKED_PATHS_NOTE as PATHS_NOTE


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


PROJECT_LOGGERS = ("smssynth", "synth", "zoo", "cli")
log = logging.getLogger("smssynth.cli")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (so CliRunner, pytest and
    redirections see the messages), like logging's last-resort handler."""

    @property
    def stream(self):
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler.__init__ assigns it
        pass


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Log to stderr: warnings and errors only with ``quiet``; the project's loggers
    (:data:`PROJECT_LOGGERS`) at DEBUG with ``verbose``, else INFO.  Safe to call again."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    # third-party loggers stay at INFO at most: their DEBUG (numba, fsspec, matplotlib) is not ours
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # dask's own INFO chatter (cluster start/stop) is not the user's business
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.WARNING)


def verbosity_options(f):
    """``-q/--quiet`` and ``-v/--verbose`` for a command, the same on every command.

    ``-q``: warnings, errors and the final summary only (no progress bar); ``-v``: the project's
    debug logs and per-stage timings.  Both together are a usage error (exit 2).  Logging is set
    up before the command runs; the command receives ``quiet`` / ``verbose`` when its signature
    names them, and :func:`is_quiet` answers anywhere below it.
    """
    import inspect

    params = inspect.signature(f).parameters
    passed = [n for n in ("quiet", "verbose") if n in params]  # named ones only: **kwargs may feed a config

    @click.option("--quiet", "-q", is_flag=True,
                  help="Only warnings, errors and the final summary; no progress bar.")
    @click.option("--verbose", "-v", is_flag=True, help="Also debug logs and per-stage timings (stderr).")
    @functools.wraps(f)
    def wrapper(*args, quiet, verbose, **kwargs):
        if quiet and verbose:
            raise click.UsageError("-q/--quiet and -v/--verbose contradict each other; give one")
        ctx = click.get_current_context()
        ctx.meta["smssynth.quiet"] = quiet
        setup_logging(quiet, verbose)
        flags = {"quiet": quiet, "verbose": verbose}
        kwargs.update({n: flags[n] for n in passed})
        t0 = time.perf_counter()
        try:
            return f(*args, **kwargs)
        finally:
            names = []
            c = ctx
            while c.parent is not None:  # the root's name is the program's ("python -m cli.main", pytest...)
                names.append(c.info_name)
                c = c.parent
            log.debug("timing: smssynth %s took %.2fs in all", " ".join(reversed(names)), time.perf_counter() - t0)

    return wrapper


def is_quiet() -> bool:
    """Whether the running command was given ``-q`` (False outside a command)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get("smssynth.quiet"))


@contextlib.contextmanager
def stage(name: str):
    """Time a stage of a command; the time is logged at DEBUG (shown with ``-v``)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        log.debug("timing: %s %.2fs", name, time.perf_counter() - t0)


def common_run_options(f):
    @click.option("--salt", envvar="SMSSYNTH_SALT", default=None, help="Secret for pseudonymous keys (env SMSSYNTH_SALT; default: a per-user secret in ~/.config/smssynth/salt). Pass the same salt to reproduce a store elsewhere.")
    @click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True, help="Corrupt or undecodable DICOM, images with burned-in annotation, or slices without ImagePositionPatient: skip them / fall back to SliceLocation (counted and reported), or stop.")
    @click.option("--show-paths", is_flag=True, help="Name input files by their real paths in messages. By default each folder and file name is shown as a salted hash, since exports often name them after the patient.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out store.")
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        return f(*args, **kwargs)

    return wrapper


def _nifti_axes(ctx, param, value):
    from synth.io.nifti import parse_axes

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


def refuse_foreign_out(out: str, overwrite: bool) -> None:
    """Refuse, before any work, an existing local ``--out`` that a run without ``--overwrite``
    could not resume because it is not an smssynth store (exit 2).  The library refuses it too,
    but only after scanning the inputs or starting a cluster; an empty folder is written into."""
    from synth.dataset.store import FORMAT_NAME, location

    out = location(out)
    if overwrite or "://" in out:
        return
    p = Path(out)
    if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
        return
    if not (p.exists() or p.is_symlink()):
        return
    try:
        fmt = json.loads((p / "zarr.json").read_text())["attributes"]["format"]
    except (OSError, ValueError, KeyError, TypeError):
        fmt = None
    if fmt != FORMAT_NAME:
        raise UserError(f"{out} exists and is not an smssynth store; choose another --out (--overwrite replaces "
                        f"only smssynth stores)", 2)


def user_error(e: Exception) -> UserError:
    """The project's error ``e`` as a :class:`UserError` with its exit code."""
    from synth.errors import ConfigError, NoInputError, StoreExistsError

    usage = isinstance(e, (ConfigError, StoreExistsError, NoInputError))
    return UserError(str(e), 2 if usage else 1)


def bar(desc: str, quiet: bool | None = None, *, unit: str = "example", total=None, leave: bool = True):
    """A tqdm progress bar on stderr, off with ``--quiet`` (``quiet`` None: the command's) and
    whenever stderr is not a terminal (logs, pipes, CI: no carriage-return litter)."""
    from tqdm import tqdm

    quiet = is_quiet() if quiet is None else quiet
    # disable=None: tqdm turns the bar off when its file (stderr) is not a TTY
    return tqdm(total=total, unit=unit, desc=desc, disable=True if quiet else None, dynamic_ncols=True, leave=leave)


def progress_bar(desc: str, quiet: bool | None = None):
    """A :func:`bar` and the ``progress(done, total)`` callback that drives it."""
    b = bar(desc, quiet)

    def progress(done, total):
        if b.total is None:
            b.reset(total=total)
        b.n = done
        b.refresh()

    return b, progress


def echo_problems(*, skipped: dict[str, int] | None = None, skip_reasons=(), plan_skipped=(), failed=(),
                  warnings=(), notes=(), show_paths: bool = False) -> None:
    """What a conversion left out or could not do, the same way for every command that writes a store.

    ``skipped``: inputs left out, by category; ``skip_reasons``: one line per left-out input (names
    masked unless ``show_paths``); ``plan_skipped``: slices or series the plan did not use;
    ``failed``: (example index, reason) of examples left incomplete; then warnings and notes.  The
    first ten of each list are printed; the note on masked names follows whenever a name was shown.
    """
    if skipped:
        click.echo("skipped inputs: " + ", ".join(f"{n} {cat}" for cat, n in sorted(skipped.items())))
    for r in skip_reasons[:10]:
        click.echo(f"  - {r}")
    if len(skip_reasons) > 10:
        click.echo(f"  ... and {len(skip_reasons) - 10} more (run without --quiet for the log)")
    for r in plan_skipped[:10]:
        click.echo(f"not used: {r}")
    for idx, why in failed[:10]:
        click.echo(f"example {idx} failed (left incomplete): {why}")
    if len(failed) > 10:
        click.echo(f"  ... and {len(failed) - 10} more failed examples")
    for w in warnings[:10]:
        click.echo(f"warning: {w}")
    for note in notes:
        click.echo(note)
    if not show_paths and (skip_reasons or failed or warnings):
        click.echo(PATHS_NOTE)
