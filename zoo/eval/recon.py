r"""Reconstruct a store's examples with a trained model or a classical baseline.

Inference runs exactly the path of training validation (:func:`zoo.train.evaluate_examples`),
one example at a time::

    SmsDataset item -> normalize_batch -> fold coils into B -> model(x0, k3, mask3)
                    -> unfold -> denormalize -> magnitude (|x|, or RSS over coils) vs ``target``

so the metrics of a checkpoint on an example equal its validation metrics on that example.

Methods (:func:`load_method`)
-----------------------------
``zero-filled``, ``cs-tfft``, ``cs-ttv``
    :data:`zoo.eval.baselines.BASELINES` (``--cs-iters`` caps the CS iterations).  They have no
    coil mode of their own: the caller picks one, by default ``per-coil`` (every coil, whose
    RSS is the target; :data:`BASELINE_COIL_MODE`, the default of :class:`zoo.data.DataConfig`).
``sense-oracle`` (an oracle: the store's true coil maps), ``sense-espirit``
    SMS-SENSE by CG (:mod:`zoo.eval.sense`; ``sense_iters`` / ``sense_lam``).  Always ``per-coil``
    items (every coil's data, whatever coil mode is chosen for the other baselines), unfolded,
    plus what the method reads from the store itself (``model.store_inputs(store, index)``:
    the true maps, or the single-band reference ESPIRiT calibrates from; read untimed, the
    ESPIRiT calibration is timed); one image out, no coil axis (``recon_complex`` has none).
registered weights name, or checkpoint path
    :func:`zoo.registry.load` (SHA-256 checked, architecture from the metadata).  The coil mode
    and the normalisation quantile come from the checkpoint's metadata (``data.data_config``,
    and ``training.normalization`` through ``model.normalization``,
    :class:`zoo.checkpoint.Normalization`), as :func:`zoo.train.fit` writes them.

The examples are always read with the store's own masks (``mask="stored"``): the store is the
acquisition being tested, and every method sees the same data, which the paired tests of
:mod:`zoo.eval.evaluate` need.  A checkpoint trained with ``mask="fresh"`` validated on fresh masks,
so only checkpoints trained on stored masks reproduce their validation numbers exactly.

Recon store (:func:`run_recon`), format ``smssynth.recon`` 1.0, a Zarr v3 group
-----------------------------------------------------------------------------
Readable with plain ``zarr.open_group(path, mode="r")``; one row ``r`` per reconstructed example,
``index[r]`` its index in the source store; ``L = ()`` for ``virtual``, ``(K,)`` for ``compressed``
to K coils, ``(C,)`` for ``per-coil`` (the coil axis length is ``dims["C"]``).

============== ===================== ========= ==================================================
array          dims                  dtype     meaning
============== ===================== ========= ==================================================
recon          (N, M, T, Y, X)       float32   magnitude of the reconstruction on the store's scale:
                                               ``|x|`` (virtual) or the RSS over its coils
recon_complex  (N, *L, M, T, Y, X)   complex64 the complex reconstruction (only with ``complex=True``)
index          (N,)                  int64     store index of row ``r``
seconds        (N,)                  float64   model forward time of the example (see ``timing``)
nmse/psnr/ssim (N,)                  float64   metrics of ``recon`` vs the magnitude reference
                                               (:mod:`zoo.metrics`, as training validation)
complete       (N,)                  bool      written after the row's data
============== ===================== ========= ==================================================

The magnitude reference is the store's ``target`` in every coil mode -- the image that came from
the DICOM, never the (virtual) coil images (:mod:`zoo.data`, "The truth is the image"); it is
not copied.
Root attributes: ``format``, ``format_version``, ``dims``, ``arrays``, ``method`` (label, kind,
architecture, config, sha256, source), ``source`` (store path, format, dims, split),
``coil_mode``, ``coils`` (K of ``compressed``), ``reference``, ``data_config``, ``normalization``,
``timing`` (device, what is
timed, per-example seconds, mean, sd), ``metrics`` (summaries over all examples and without the
failed ones, the failures, NMSE unit, SSIM kind: :func:`zoo.metrics.summarize_examples`,
:func:`zoo.metrics.metric_conventions`), ``software``,
``created``.

Figures (``--png``, ``--gif``): :mod:`zoo.eval.figures` (``save_png``, ``save_gif``, also
importable from here).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from synth.dataset import output
from synth.errors import ConfigError, StoreExistsError
from synth.dataset.store import Store
from zoo.eval.baselines import BASELINES, SENSE, make_baseline
from zoo.eval.figures import save_gif, save_png
from zoo.data import COIL_MODES, DataConfig, SmsDataset, coil_label
from zoo.models.crnn import check_coil_channels
from zoo.errors import UnknownWeightsError
from zoo.metrics import FAIL_NMSE, example_metrics, metric_conventions, summarize, summarize_examples

# the validation path's own helpers, imported (not copied) so inference cannot drift from it
from zoo.train import NORM_QUANTILE, denormalize, fold_coils, normalize_batch, rss_magnitude

__all__ = [
    "BASELINE_COIL_MODE", "BASELINE_NAMES", "FORMAT", "FORMAT_VERSION", "METRICS", "Method", "Reconstruction",
    "check_coil_mode", "check_out", "device_description", "load_method", "open_examples", "pick_device",
    "reconstruct", "reconstruct_item", "run_recon", "save_gif", "save_png",
]

FORMAT = "smssynth.recon"
FORMAT_VERSION = "1.0"
BASELINE_NAMES = tuple(BASELINES)
BASELINE_COIL_MODE = "per-coil"  # zoo.data.DataConfig's default
METRICS = ("nmse", "psnr", "ssim")
# what --overwrite may replace: a recon store holds only these arrays (synth.dataset.output)
output.register_format(FORMAT, ("recon", "recon_complex", "index", "seconds", "complete", *METRICS))
TIMED = ("model forward only: torch.no_grad, eval mode, CUDA synchronised before and after; "
         "excludes data loading, normalisation and metrics")
_REFERENCE = "the store's target (the magnitude image from the DICOM), compared with the RSS over the coils"
REFERENCE = {mode: _REFERENCE for mode in COIL_MODES}  # the same in every coil mode (zoo.data)


# --- methods ----------------------------------------------------------------------------------


@dataclass
class Method:
    """A reconstruction method ready to run: ``model(x0, k3, mask3) -> x`` and how to feed it.

    Attributes
    ----------
    label : the name the user gave (baseline name, registry name, or checkpoint path).
    kind : ``baseline``, ``registry`` or ``checkpoint``.
    model : the module, in eval mode, on the device it runs on.
    coil_mode : ``virtual``, ``compressed`` or ``per-coil`` (the checkpoint's, or the one chosen
        for a baseline; :mod:`zoo.data`).
    quantile : input normalisation quantile (:func:`zoo.train.normalize_batch`).
    info : JSON-able description: ``name``, ``architecture``, ``config``, ``sha256`` (None for a
        baseline), ``source``, ``coil_mode_source``, and for checkpoints ``training_data_config``
        (the :class:`~zoo.data.DataConfig` it was trained with) and ``trained_on`` (store name).
    """

    label: str
    kind: str
    model: nn.Module
    coil_mode: str
    quantile: float = NORM_QUANTILE
    info: dict[str, Any] = field(default_factory=dict)
    coils: int | None = None
    """K of ``compressed`` (None in the other modes)."""

    def describe(self) -> dict[str, Any]:
        """JSON-able record of the method (for recon stores and evaluation reports)."""
        return {"label": self.label, "kind": self.kind, "coil_mode": self.coil_mode, "coils": self.coils,
                "normalization": {"kind": "quantile of |x0| per example", "quantile": self.quantile}, **self.info}


def pick_device(requested: str | None) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` (ConfigError if absent)."""
    from zoo.train.distributed import DistInfo
    from zoo.train.distributed import pick_device as _pick

    return _pick(requested, DistInfo())  # one process: recon and evaluate never run distributed


def device_description(device: torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu (x86_64, 4 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"


def load_method(
    spec: str,
    *,
    device: torch.device | str = "cpu",
    coil_mode: str | None = None,
    cs_iters: int | None = None,
    weights_dir: str | Path | None = None,
    coils: int | None = None,
    sense_iters: int | None = None,
    sense_lam: float | None = None,
) -> Method:
    """Resolve ``spec``: a baseline name, registered weights name, or checkpoint path (module doc).

    Parameters
    ----------
    spec : ``zero-filled``, ``cs-tfft``, ``cs-ttv``, a registry name, or a checkpoint path.
    device : where the model runs.
    coil_mode, coils : for a baseline (default :data:`BASELINE_COIL_MODE`), and for a checkpoint
        whose metadata records none; a checkpoint's recorded coil mode (and K) always wins.
        ``coils`` is K of ``compressed`` (:class:`zoo.data.DataConfig`).
    cs_iters : iterations of the CS baselines (default: :data:`zoo.eval.baselines.DEFAULTS`).
    sense_iters, sense_lam : CG iterations and temporal Tikhonov weight of the SENSE baselines
        (default: :data:`zoo.eval.sense.DEFAULTS`); they run ``per-coil`` whatever ``coil_mode`` says.
    weights_dir : registry folder (default ``$SMSSYNTH_WEIGHTS_DIR`` or the package's).

    Raises UnknownWeightsError (listing the baselines and registered weights, and saying so when
    ``spec`` is an untrained architecture name), ChecksumError / CheckpointError from loading,
    ConfigError for a bad coil mode.
    """
    from zoo.registry import list_models as list_weights
    from zoo.registry import load as load_weights

    if coil_mode is not None and coil_mode not in COIL_MODES:
        raise ConfigError(f"coil mode must be one of {COIL_MODES}, got {coil_mode!r}")
    if coil_mode is not None or coils is not None:
        DataConfig(coil_mode=coil_mode or BASELINE_COIL_MODE, coils=coils)  # ConfigError for a bad pair
    device = torch.device(device)
    if spec in BASELINE_NAMES:
        if spec in SENSE:
            params = {k: v for k, v in (("n_iter", sense_iters), ("lam", sense_lam)) if v is not None}
        else:
            params = {} if cs_iters is None or spec == "zero-filled" else {"n_iter": int(cs_iters)}
        model = make_baseline(spec, **params).to(device).eval()
        info = {"name": spec, "architecture": None, "config": dict(model.config), "sha256": None,
                "source": "zoo.eval.baselines", "coil_mode_source": "chosen" if coil_mode else "default for baselines"}
        if spec in SENSE:  # SENSE needs every coil's data
            coil_mode, coils = "per-coil", None
            info.update(source="zoo.eval.sense", coil_mode_source="SENSE always uses every coil's data",
                        oracle=model.kind == "oracle")
        return Method(label=spec, kind="baseline", model=model, coil_mode=coil_mode or BASELINE_COIL_MODE,
                      coils=coils, info=info)
    try:
        model, meta = load_weights(spec, device=device, weights_dir=weights_dir)
    except UnknownWeightsError as e:
        from zoo.models import list_models as list_architectures

        hint = ""
        if spec in list_architectures():
            hint = (f"; {spec!r} is an architecture, not trained weights: train it "
                    f"(smssynth train --model {spec}) and pass the checkpoint")
        raise UnknownWeightsError(f"{e}; baselines: {list(BASELINE_NAMES)}{hint}") from None
    registered = spec in list_weights(weights_dir=weights_dir)
    data_config = dict((meta.get("data") or {}).get("data_config") or {})
    recorded = data_config.get("coil_mode")
    if recorded is not None:
        if recorded not in COIL_MODES:
            raise ConfigError(f"{spec}: the checkpoint records coil_mode {recorded!r}, not one of {COIL_MODES}")
        try:  # checkpoints from before coil compression record no 'coils': virtual and per-coil need none
            DataConfig(coil_mode=recorded, coils=data_config.get("coils"))
        except ConfigError as e:
            raise ConfigError(f"{spec}: the checkpoint's coil mode is invalid ({e})") from None
        coil_mode, coils = recorded, data_config.get("coils")
    # the loader reads it from the checkpoint's metadata (zoo.checkpoint.Normalization; the documented
    # default for checkpoints older than the record), never from this module's constants
    quantile = model.normalization.quantile
    return Method(
        label=spec, kind="registry" if registered else "checkpoint", model=model.eval(),
        coil_mode=coil_mode or BASELINE_COIL_MODE, coils=coils, quantile=quantile,
        info={"name": spec, "architecture": meta["model"]["name"], "config": meta["model"]["config"],
              "sha256": meta["sha256"], "source": "registry" if registered else str(spec),
              "coil_mode_source": "checkpoint" if recorded else "not recorded in the checkpoint; chosen/default",
              "training_data_config": data_config, "trained_on": (meta.get("data") or {}).get("store")},
    )


# --- examples ---------------------------------------------------------------------------------


def open_examples(
    store_path: str | Path, coil_mode: str, *, examples: list[int] | None = None, split: str | None = None,
    coils: int | None = None,
) -> tuple[SmsDataset, list[int]]:
    """The dataset of ``coil_mode`` (``coils`` = K of ``compressed``; stored masks) and the
    positions of the chosen examples in it.

    ``examples`` are store indices (in the given order; each complete, in range, no repeats, and
    in ``split`` when both are given); None = every complete example (of ``split``).  Raises
    StoreError for the store, ConfigError naming the split or the indices.
    """
    ds = SmsDataset(store_path, DataConfig(coil_mode=coil_mode, coils=coils, mask="stored", split=split))
    if examples is None:
        return ds, list(range(len(ds)))
    n = int(ds.dims["N"])
    examples = [int(i) for i in examples]
    if not examples:
        raise ConfigError("no example index given")
    out = sorted({i for i in examples if not 0 <= i < n})
    if out:
        raise ConfigError(f"example index {out} out of range: the store has examples 0..{n - 1}")
    dupes = sorted({i for i in examples if examples.count(i) > 1})
    if dupes:
        raise ConfigError(f"example index {dupes} given more than once")
    pos = {s: p for p, s in enumerate(ds.indices)}
    missing = [i for i in examples if i not in pos]
    if missing:
        where = f" or not in split {split!r}" if split is not None else ""
        raise ConfigError(f"examples {missing} are incomplete (their writer did not finish){where}; "
                          f"choose among {ds.indices[:20]}{' ...' if len(ds) > 20 else ''}")
    return ds, [pos[i] for i in examples]


# --- inference --------------------------------------------------------------------------------


@dataclass
class Reconstruction:
    """One example reconstructed (CPU tensors, the store's scale).

    ``image`` complex64 (*L, M, T, Y, X); ``magnitude``, ``target``, ``zero_filled`` float32
    (M, T, Y, X) -- the last the RSS magnitude of ``x0`` over its coils; ``metrics`` NMSE, PSNR,
    SSIM of ``magnitude`` vs ``target``; ``seconds`` the model's forward time.
    """

    index: int
    image: Tensor
    magnitude: Tensor
    target: Tensor
    zero_filled: Tensor
    metrics: dict[str, float]
    seconds: float


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def needs_store(method: Method) -> bool:
    """Whether the method reads inputs from the store itself (the SENSE baselines' coil maps)."""
    return callable(getattr(method.model, "store_inputs", None))


def combines_coils(method: Method) -> bool:
    """Whether the method makes one image from every coil's data (no coil axis in its output)."""
    return bool(getattr(method.model, "combines_coils", False))


@torch.no_grad()
def reconstruct_item(method: Method, item: dict[str, Tensor], device: torch.device,
                     *, warmup: bool = False, store: Store | None = None,
                     ssim_kind: str = "gaussian") -> Reconstruction:
    """Reconstruct one :class:`~zoo.data.SmsDataset` item as training validation does (module doc).

    ``warmup`` runs the forward pass once untimed first, so one-off costs (CUDA context, kernel
    selection, allocator growth) do not land in ``seconds``.  ``store`` (the item's store) is
    needed by methods that read inputs from it (:func:`needs_store`: the SENSE baselines); those
    get the item's per-coil data unfolded.  ``ssim_kind``: :data:`zoo.metrics.SSIM_KINDS`.
    """
    batch = {k: v[None].to(device) for k, v in item.items()}
    nb, scale = normalize_batch(batch, method.quantile)
    method.model.eval()
    if needs_store(method):
        if store is None:
            raise ConfigError(f"{method.label} reads coil maps from the store: pass store= to reconstruct_item")
        if nb["x0"].ndim != 6:
            raise ConfigError(f"{method.label} needs every coil's data: open the examples per-coil")
        extra = {k: torch.from_numpy(np.asarray(v))[None].to(device)
                 for k, v in method.model.store_inputs(store, int(item["index"])).items()}

        def forward():
            return method.model(nb["x0"], nb["k3"], nb["mask3"], **extra)
    else:
        x0, k3, mask3, c = fold_coils(nb)

        def forward():
            out = method.model(x0, k3, mask3)
            return out.unflatten(0, (-1, c)) if nb["x0"].ndim == 6 else out
    if warmup:
        forward()
    _sync(device)
    t0 = time.perf_counter()
    out = forward()
    _sync(device)
    seconds = time.perf_counter() - t0
    pred = denormalize(out, scale)
    mag = rss_magnitude(pred).float()
    target = batch["target"]
    metrics = {k: float(v[0]) for k, v in example_metrics(mag, target, ssim_kind=ssim_kind).items()}
    return Reconstruction(
        index=int(item["index"]), image=pred[0].to("cpu", torch.complex64), magnitude=mag[0].cpu(),
        target=target[0].cpu(), zero_filled=rss_magnitude(batch["x0"])[0].float().cpu(), metrics=metrics,
        seconds=seconds,
    )


def reconstruct(method: Method, dataset: SmsDataset, positions: list[int], device: torch.device,
                *, warmup: bool | None = None, ssim_kind: str = "gaussian") -> Iterator[Reconstruction]:
    """Reconstruct ``dataset[positions]`` one example at a time (a generator).

    ``warmup`` (default: on CUDA) runs the first example once untimed (:func:`reconstruct_item`).
    """
    check_coil_mode(method, dataset)
    warmup = device.type == "cuda" if warmup is None else warmup
    store = Store.open(dataset.store_path) if needs_store(method) else None
    for j, p in enumerate(positions):
        yield reconstruct_item(method, dataset[p], device, warmup=warmup and j == 0, store=store,
                               ssim_kind=ssim_kind)


def check_coil_mode(method: Method, dataset: SmsDataset) -> None:
    """Refuse to feed a method a dataset of another coil mode or K (the model's input shapes)."""
    cfg = dataset.config
    if (method.coil_mode, method.coils) != (cfg.coil_mode, cfg.coils):
        raise ConfigError(f"{method.label}: coil mode {coil_label(method.coil_mode, method.coils)!r}, but the "
                          f"dataset is {coil_label(cfg.coil_mode, cfg.coils)!r}; open the examples with the "
                          f"method's coil mode")
    try:
        check_coil_channels(method.model, None if cfg.coil_mode == "virtual" else dataset.n_coils,
                            f"the store ({coil_label(cfg.coil_mode, cfg.coils)})")
    except ValueError as e:
        raise ConfigError(f"{method.label}: {e}") from None


# --- recon store ------------------------------------------------------------------------------


def _codecs():
    from zarr.codecs import BloscCodec

    # the source store's compression (synth.dataset.store, chosen by benchmarks/bench_dicom2kspace.py)
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import zarr

    try:
        ours = version("smssynth")
    except PackageNotFoundError:
        ours = "unknown"
    return {"smssynth": ours, "torch": torch.__version__, "zarr": zarr.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _same_path(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def check_out(out: str | Path, store_path: str | Path, overwrite: bool) -> None:
    """Refuse ``out`` when it is the source store or holds it, when it exists and ``overwrite`` is
    false, or when it exists and is not a recon store (``--overwrite`` replaces only those;
    :mod:`synth.dataset.output`).  Changes nothing."""
    if _same_path(out, store_path):
        raise ConfigError(f"{out}: the output is the source store itself; choose another --out")
    output.check_not_input(out, [store_path])
    if output.exists(out):
        if not overwrite:
            raise StoreExistsError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
        output.recognise(out, [FORMAT])


def run_recon(
    method: Method,
    store_path: str | Path,
    out: str | Path,
    *,
    device: torch.device,
    examples: list[int] | None = None,
    split: str | None = None,
    overwrite: bool = False,
    save_complex: bool = False,
    png_dir: str | Path | None = None,
    gif_dir: str | Path | None = None,
    error_scale: float = 5.0,
    png_frames: int = 4,
    progress: Callable[[Reconstruction, int, int], None] | None = None,
    ssim_kind: str = "gaussian",
    fail_nmse: float = FAIL_NMSE,
) -> dict[str, Any]:
    """Reconstruct the chosen examples into the recon store ``out`` (module doc); draw figures.

    ``ssim_kind`` (:data:`zoo.metrics.SSIM_KINDS`) chooses the SSIM stored in ``ssim``;
    ``fail_nmse`` the failure threshold on the plain NMSE (:func:`zoo.metrics.summarize_examples`).

    Returns the store's root attributes (a dict).  Raises StoreExistsError when ``out`` exists
    and ``overwrite`` is false (checked before any work), ConfigError / StoreError for bad input.
    """
    check_out(out, store_path, overwrite)
    ds, positions = open_examples(store_path, method.coil_mode, examples=examples, split=split,
                                  coils=method.coils)
    # an existing recon store is replaced only at the end: the new one is written beside it
    replacement = output.prepare(out, formats=[FORMAT], overwrite=overwrite, inputs=[store_path])
    with replacement.guard():
        result = _write_recon(method, store_path, replacement.target, ds, positions, device=device, split=split,
                              save_complex=save_complex, png_dir=png_dir, gif_dir=gif_dir,
                              error_scale=error_scale, png_frames=png_frames, progress=progress,
                              ssim_kind=ssim_kind, fail_nmse=fail_nmse)
    replacement.commit()
    return result


def _write_recon(method: Method, store_path, out, ds, positions, *, device, split, save_complex, png_dir, gif_dir,
                 error_scale, png_frames, progress, ssim_kind="gaussian", fail_nmse=FAIL_NMSE) -> dict[str, Any]:
    import zarr

    conventions = metric_conventions(ssim_kind, fail_nmse)  # validates both before any work

    d = ds.dims
    n, m, t, ny, nx = len(positions), d["M"], d["T"], d["Ky"], d["Kx"]
    lead = () if method.coil_mode == "virtual" or combines_coils(method) else (ds.n_coils,)
    img_dims = ["slice", "time", "y", "x"]
    arrays = {
        "recon": ((n, m, t, ny, nx), (1, 1, t, ny, nx), "float32", ["example", *img_dims],
                  "magnitude of the reconstruction, store scale (the RSS over its coils; |x| for one)"),
        "index": ((n,), (n,), "int64", ["example"], "store index of each row"),
        "seconds": ((n,), (n,), "float64", ["example"], "model forward time of the example, seconds"),
        **{k: ((n,), (n,), "float64", ["example"], f"{k.upper()} of recon vs the reference (zoo.metrics)")
           for k in METRICS},
        "complete": ((n,), (n,), "bool", ["example"], "row written completely"),
    }
    if save_complex:
        arrays["recon_complex"] = ((n, *lead, m, t, ny, nx), (1, *lead, 1, t, ny, nx), "complex64",
                                   ["example", *(["coil"] if lead else []), *img_dims],
                                   "complex reconstruction, store scale" + (" (per coil)" if lead else ""))
    root = zarr.open_group(str(out), mode="w", zarr_format=3)
    for name, (shape, chunks, dtype, dims, _) in arrays.items():
        root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, dimension_names=dims,
                          fill_value=False if dtype == "bool" else 0,
                          compressors=_codecs() if len(shape) > 1 else None)
    attrs: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dims": {"N": n, **({"C": ds.n_coils} if lead else {}), "M": m, "T": t, "Y": ny, "X": nx},
        "arrays": {k: {"dims": v[3], "dtype": v[2], "meaning": v[4]} for k, v in arrays.items()},
        "method": method.describe(),
        "source": {"store": str(store_path), "dims": dict(d), "params": ds.params, "split": split},
        "coil_mode": method.coil_mode,
        "coils": method.coils,
        "reference": REFERENCE[method.coil_mode],
        "data_config": {"coil_mode": method.coil_mode, "coils": method.coils, "mask": "stored", "split": split},
        "normalization": {"kind": "quantile of |x0| per example (zoo.train.normalize_batch)",
                          "quantile": method.quantile},
        "software": _software(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    root.attrs.update(attrs)
    root["index"][:] = np.asarray([ds.indices[p] for p in positions], np.int64)

    seconds, values = [], {k: [] for k in METRICS}
    for r, rec in enumerate(reconstruct(method, ds, positions, device, ssim_kind=ssim_kind)):
        root["recon"][r] = rec.magnitude.numpy()
        if save_complex:
            root["recon_complex"][r] = rec.image.numpy()
        for k in METRICS:
            root[k][r] = rec.metrics[k]
            values[k].append(rec.metrics[k])
        root["seconds"][r] = rec.seconds
        root["complete"][r] = True
        seconds.append(rec.seconds)
        if png_dir is not None:
            save_png(rec, png_dir, label=method.label, error_scale=error_scale, n_frames=png_frames)
        if gif_dir is not None:
            save_gif(rec, gif_dir, label=method.label, error_scale=error_scale)
        if progress is not None:
            progress(rec, r + 1, n)
    final = {
        "timing": {"device": device_description(device), "timed": TIMED, "warmup": device.type == "cuda",
                   "seconds": seconds, **{k: v for k, v in summarize(seconds).items()}},
        "metrics": {**summarize_examples({**values, "seconds": seconds}, fail_nmse,
                                         [ds.indices[p] for p in positions]), **conventions},
    }
    root.attrs.update(final)
    return {**attrs, **final}
