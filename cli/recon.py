"""``smssynth recon``: reconstruct a store's examples into a recon store, optionally with figures.

The library is :mod:`zoo.eval.recon`; this module validates the options at the boundary (one clear
line per bad input, exit code 2) and holds the option helpers ``smssynth evaluate`` shares.
"""

from __future__ import annotations

import contextlib

import click

from cli.options import bar, stage, verbosity_options

# zoo.eval.baselines.BASELINES, named without importing torch (sense-oracle uses the true coil maps: an oracle)
BASELINES = ("zero-filled", "cs-tfft", "cs-ttv", "sense-oracle", "sense-espirit")
SSIM_KINDS = ("gaussian", "fastmri")  # zoo.metrics.SSIM_KINDS
FAIL_NMSE = 1.0  # zoo.metrics.FAIL_NMSE
COIL_MODES = ("virtual", "compressed", "per-coil")  # zoo.data.COIL_MODES


class IndexList(click.ParamType):
    """Comma-separated store indices: ``0,3,5``."""

    name = "I,J,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            out = [int(v) for v in str(value).replace(" ", "").split(",") if v != ""]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of example indices like 0,3,5", param, ctx)
        if not out:
            self.fail("no example index given (e.g. --examples 0,3,5)", param, ctx)
        return out


INDEX_LIST = IndexList()


@contextlib.contextmanager
def user_errors(hint: str):
    """Turn the project's errors into a one-line usage error naming ``hint`` (exit code 2)."""
    from synth.errors import SmssynthError

    try:
        yield
    except SmssynthError as e:
        raise click.BadParameter(str(e), param_hint=hint) from None


def selection_options(f):
    """``--examples``, ``--split``, ``--device``, ``--coil-mode``, ``--virtual-coils``, ``--cs-iters``
    (recon and evaluate)."""
    opts = [
        click.option("--examples", type=INDEX_LIST, default=None,
                     help="Store indices to use, e.g. 0,3,5.  [default: every complete example]"),
        click.option("--split", default=None,
                     help="Use the examples of this split (e.g. test), as recorded by `smssynth generate --split`."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--coil-mode", type=click.Choice(COIL_MODES), default=None,
                     help="Coil mode of the baselines (and of checkpoints that record none); a checkpoint "
                          "runs in the coil mode it was trained in.  Every method's RSS magnitude is compared "
                          "with the store's target.  [default: per-coil]"),
        click.option("--virtual-coils", "coils", type=click.IntRange(min=1), default=None, metavar="K",
                     help="K virtual coils of --coil-mode compressed (implied when --coil-mode is not given)."),
        click.option("--cs-iters", type=click.IntRange(min=0), default=None,
                     help="Cap the iterations of cs-tfft / cs-ttv (faster).  [default: 100 / 200]"),
        click.option("--sense-iters", type=click.IntRange(min=0), default=None,
                     help="CG iterations of sense-oracle / sense-espirit (cost linear in it).  [default: 30]"),
        click.option("--sense-lam", type=float, default=None, callback=_finite_nonnegative, metavar="LAMBDA",
                     help="Tikhonov weight on temporal differences of the SENSE baselines (0 = plain SENSE; "
                          "scale-free).  [default: 0.01]"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _finite_nonnegative(ctx, param, value):
    import math

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"must be a finite number >= 0, got {value}")
    return value


def _positive_nmse(ctx, param, value):
    import math

    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a finite NMSE > 0 (plain ratio; 1 = 1000 x 10^-3), got {value}")
    return value


def metric_options(f):
    """``--ssim`` and ``--fail-nmse`` (recon and evaluate)."""
    opts = [
        click.option("--ssim", "ssim_kind", type=click.Choice(SSIM_KINDS), default="gaussian", show_default=True,
                     help="gaussian: 11x11 Gaussian window (training validation's); fastmri: as fastMRI's "
                          "evaluation (skimage defaults: 7x7 uniform window, sample covariance).  Reports say which."),
        click.option("--fail-nmse", type=float, default=FAIL_NMSE, show_default=True, callback=_positive_nmse,
                     metavar="NMSE",
                     help="An example fails when its NMSE (plain ratio) exceeds this; tables print NMSE x 10^-3, so "
                          "the default 1 is the paper's 1000 x 10^-3.  Failed examples are counted, and means are "
                          "given without them and over all examples."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def check_selection(examples, split) -> None:
    if examples is not None and split is not None:
        raise click.UsageError("--examples and --split are alternatives; give one (or neither for every example)")


def open_checked(store: str, device: str):
    """Validate STORE and --device; returns the torch device."""
    from synth.dataset.store import Store
    from zoo.eval.recon import pick_device

    with user_errors("STORE"):
        Store.open(store)
    with user_errors("--device"):
        return pick_device(device)


def check_coil_options(coil_mode, coils):
    """``(coil_mode, coils)`` validated at the boundary: ``--virtual-coils K`` implies ``--coil-mode
    compressed``, contradicts ``virtual``/``per-coil``, and ``compressed`` needs it."""
    if coils is not None:
        if coil_mode in ("virtual", "per-coil"):
            raise click.BadParameter(f"--virtual-coils {coils} is K of --coil-mode compressed; --coil-mode "
                                     f"{coil_mode} has {'one' if coil_mode == 'virtual' else 'every measured'} coil",
                                     param_hint="--virtual-coils")
        return "compressed", coils
    if coil_mode == "compressed":
        raise click.BadParameter("--coil-mode compressed needs --virtual-coils K (1..C)", param_hint="--virtual-coils")
    return coil_mode, None


def load_checked(spec: str, device, coil_mode, cs_iters, hint: str = "--model", coils=None, sense_iters=None,
                 sense_lam=None):
    from zoo.eval.recon import load_method

    with user_errors(hint):
        return load_method(spec, device=device, coil_mode=coil_mode, cs_iters=cs_iters, coils=coils,
                           sense_iters=sense_iters, sense_lam=sense_lam)


def select_checked(store: str, coil_mode: str, examples, split, coils=None) -> None:
    """Check the example selection (and K against the store's coils), naming the option at fault."""
    from zoo.eval.recon import open_examples

    with user_errors("--virtual-coils" if coils is not None else "--split" if split is not None else "STORE"):
        open_examples(store, coil_mode, split=split, coils=coils)
    if examples is not None:
        with user_errors("--examples"):
            open_examples(store, coil_mode, examples=examples, split=split, coils=coils)


@click.command("recon")
@click.option("--model", "spec", required=True, metavar="CHECKPOINT|NAME",
              help="A checkpoint (PATH[.safetensors]), registered weights NAME (smssynth zoo list), "
                   "or a baseline: zero-filled, cs-tfft, cs-ttv, sense-oracle (ORACLE: true coil maps), "
                   "sense-espirit.")
@click.argument("store")
@click.option("--out", required=True, type=click.Path(file_okay=True), help="Recon store to write (Zarr v3 group).")
@selection_options
@metric_options
@click.option("--png", "png_dir", type=click.Path(file_okay=False), default=None,
              help="Write a PNG per example and SMS slice: zero-filled, recon, truth, error maps, a few frames.")
@click.option("--gif", "gif_dir", type=click.Path(file_okay=False), default=None,
              help="Write an animated GIF per example and SMS slice (every frame).")
@click.option("--complex", "save_complex", is_flag=True,
              help="Also store the complex reconstruction (recon_complex; per coil for per-coil models).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
@verbosity_options
def recon(spec, store, out, examples, split, device, coil_mode, coils, cs_iters, sense_iters, sense_lam, ssim_kind,
          fail_nmse, png_dir, gif_dir, save_complex, overwrite):
    """Reconstruct examples of STORE with a model or a baseline into the recon store --out.

    The recon store (readable with plain zarr) holds `recon` float32 (N, M, T, Y, X), the
    magnitude on the store's scale, `index` (N,) the store indices, per-example `nmse`, `psnr`,
    `ssim` and `seconds` (model forward time), and in its attributes the method (name, sha256,
    config), the source store, coil mode, normalisation and timing; see zoo/eval/recon.py.
    Baselines run in --coil-mode (default per-coil); a checkpoint in its own; sense-oracle and
    sense-espirit always use every coil.  The attributes also hold the metric summaries over all
    examples and without the failed ones (NMSE > --fail-nmse), with the NMSE unit and SSIM kind.
    """
    check_selection(examples, split)
    coil_mode, coils = check_coil_options(coil_mode, coils)
    with stage("open store and device"):
        dev = open_checked(store, device)
    from synth.errors import SmssynthError
    from zoo.data import coil_label
    from zoo.eval.recon import check_out, run_recon

    with user_errors("--out"):
        check_out(out, store, overwrite)
    with stage("load method"):
        method = load_checked(spec, dev, coil_mode, cs_iters, coils=coils, sense_iters=sense_iters,
                              sense_lam=sense_lam)
    select_checked(store, method.coil_mode, examples, split, coils=method.coils)

    pbar = bar(f"recon {method.label}", leave=False)

    def progress(rec, done, total):
        pbar.total = total
        pbar.update(1)

    try:
        with stage("reconstruct"):
            attrs = run_recon(method, store, out, device=dev, examples=examples, split=split, overwrite=overwrite,
                              save_complex=save_complex, png_dir=png_dir, gif_dir=gif_dir, progress=progress,
                              ssim_kind=ssim_kind, fail_nmse=fail_nmse)
    except SmssynthError as e:
        raise click.ClickException(str(e)) from None
    finally:
        pbar.close()
    m, t, n = attrs["metrics"], attrs["timing"], attrs["dims"]["N"]
    click.echo(
        f"recon: {method.label} ({coil_label(method.coil_mode, method.coils)}) on {n} "
        f"example{'s' if n != 1 else ''} -> {out}; "
        f"PSNR {m['psnr']['mean']:.2f} ± {m['psnr']['sd']:.2f} dB, SSIM ({ssim_kind}) {m['ssim']['mean']:.4f}, "
        f"NMSE {m['nmse']['mean'] / 1e-3:.4g} x10^-3 (all examples; failed {m['failed']['count']}/{m['failed']['n']} "
        f"with NMSE > {fail_nmse:g}); forward {t['mean']:.4g} ± {t['sd']:.2g} s/example on {t['device']}"
        + (f"; PNG in {png_dir}" if png_dir else "") + (f"; GIF in {gif_dir}" if gif_dir else "")
    )
