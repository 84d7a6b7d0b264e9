"""``dicom2kspace`` end to end: scan DICOM, plan examples, simulate, write the store.

Used by ``cli/dicom2kspace.py`` and ``benchmarks/``; free of click and torch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from collections import Counter, OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import synth
from synth.dataset import store as zstore
from synth.physics.coils import COIL_MODEL
from synth.dataset.combos import ExamplePlan, Plan, plan_examples
from synth.dataset.config import SimConfig
from synth.io.dicom import Catalog, SliceInfo, load_slice, scan
from synth.dataset import output
from synth.dataset.budget import check_memory
from synth.errors import ConfigError, DicomError, NoInputError, StoreExistsError
from synth.physics.phase import PHASE_MODEL
from synth.io.resolution import prepare, working_shape
from synth.runtime import tune_allocator
from synth.dataset.simulate import Prepared, StageTimer, prepare_example, slice_labels

log = logging.getLogger("smssynth")

# spacing assumed between slices of different series (across-series examples), for coil maps
ACROSS_SERIES_SPACING_MM = 10.0


@dataclass
class Summary:
    written: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)  # (example index, reason)
    skipped_inputs: Counter = field(default_factory=Counter)  # category -> count
    skip_reasons: list[str] = field(default_factory=list)
    plan_skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_files: int = 0
    n_series: int = 0
    n_examples: int = 0
    shape: tuple | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # per stage; 'write' overlaps compute
    wall_seconds: float = 0.0
    already: int = 0  # examples already complete in a resumed store
    notes: list[str] = field(default_factory=list)  # what happened to an existing --out


class SliceCache:
    """Prepared (working) magnitudes and k-means labels of recently used slices.

    Combinations reuse slices a lot (each of 12 slices is in 11 of the 66 pairs), so each slice
    is read, resampled and clustered once.  The key includes the files' modification times and
    sizes: ``generate``'s workers keep their cache across runs, and a changed file must never be
    served from it.
    """

    def __init__(self, config: SimConfig, size: int = 32):
        self.config, self.size = config, size
        self._data: OrderedDict = OrderedDict()

    def get(self, series_key: str, sl: SliceInfo, timer: StageTimer) -> tuple[np.ndarray, np.ndarray | None]:
        key = (series_key, sl.index, tuple((ref.path, *_stat(ref.path)) for ref in sl.frames))
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        with timer("read"):
            raw = load_slice(sl)
            c = self.config
            img = prepare(
                raw,
                sl.acquisition_matrix,
                resolution=c.resolution,
                matrix=c.matrix,
                frames=c.frames,
                frames_mode=c.frames_mode,
                what=f"series {series_key} slice {sl.index}",
            )
        with timer("kmeans"):
            labels = slice_labels(img, self.config, f"{series_key}:{sl.index}")
        self._data[key] = (img, labels)
        if len(self._data) > self.size:
            self._data.popitem(last=False)
        return img, labels

    def prepare(self, ex: ExamplePlan, timer: StageTimer) -> Prepared:
        """Read (or reuse) the example's slices and prepare it for coil-by-coil simulation.

        DicomError if a slice fails.
        """
        got = [self.get(s.series.key, s.slice, timer) for s in ex.sources]
        mags = np.stack([g[0] for g in got])
        labels = None if got[0][1] is None else [g[1] for g in got]
        offsets = slice_offsets(ex, self.config, mags.shape[-2:])
        return prepare_example(mags, offsets, self.config, ex.seed_sequence(), timer, labels=labels)

    def simulate(self, ex: ExamplePlan, timer: StageTimer) -> dict[str, np.ndarray]:
        """The whole example's arrays (see :func:`synth.dataset.simulate.simulate_example`)."""
        return self.prepare(ex, timer).full(timer)


class CoilWriter:
    """Simulates prepared examples and writes each coil's chunks as they are computed.

    A coil's ``kspace`` and ``phase`` (one store chunk each) are written block by block by the
    thread that computes them (:meth:`synth.dataset.store.Writer.coil_chunks`), so they go to the store
    while still in cache and no whole-example array is ever built.  The coils are split into
    one group per thread.  With ``threads > 1`` the groups run on a thread pool (NumPy, SciPy's
    FFT and file writes release the GIL) while the caller prepares the next example; with
    ``threads == 1`` they run in the caller's thread (``generate``'s single-core workers).
    ``submit`` starts an example; ``finish`` waits for its coils, then writes the rest and the
    completion marker, so a crash leaves the example incomplete, never half-valid.
    """

    def __init__(self, store: zstore.Writer, threads: int, timer: StageTimer):
        self.store, self.timer = store, timer
        self.threads = max(1, int(threads))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="smssynth-coil") if self.threads > 1 else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)

    def _coils(self, index: int, prep: Prepared, group: list[int]) -> None:
        t0 = time.perf_counter()
        spent = [0.0]  # seconds inside the block writes, which interleave with the computing
        with ExitStack() as stack:
            targets = [
                tuple(_Timed(x, spent) for x in stack.enter_context(
                    self.store.coil_chunks(index, ci, phase=not prep.zero_phase)))
                for ci in group
            ]
            t1 = time.perf_counter()
            prep.coils(group, targets)
            compute = time.perf_counter() - t1 - spent[0]
        self.timer.add("fft_sms", compute)
        self.timer.add("write", time.perf_counter() - t0 - compute)  # incl. opening and committing

    def submit(self, index: int, prep: Prepared) -> list[Future]:
        """Start example ``index``'s coils (or, single-threaded, do them now).

        The coils are split into one contiguous group per thread; each group is computed frame
        block by frame block, all its coils per block (see :meth:`synth.dataset.simulate.Encoder.coils`).
        """
        groups = [g.tolist() for g in np.array_split(np.arange(prep.n_coils), min(self.threads, prep.n_coils))]
        if self._pool is None:
            for g in groups:
                self._coils(index, prep, g)
            return []
        return [self._pool.submit(self._coils, index, prep, g) for g in groups]

    def finish(self, index: int, prep: Prepared, futures: list[Future]) -> None:
        """Wait for the example's coils, then write its other arrays and its completion marker."""
        with self.timer("write_wait"):
            for f in futures:
                f.result()
        with self.timer("write"):
            self.store.example(index, prep.arrays, coils_written=True)


class _Timed:
    """Block-assignment target that adds the time its assignments take to ``spent[0]``."""

    __slots__ = ("target", "spent")

    def __init__(self, target, spent: list):
        self.target, self.spent = target, spent

    def __setitem__(self, key, value) -> None:
        t0 = time.perf_counter()
        self.target[key] = value
        self.spent[0] += time.perf_counter() - t0


def default_threads() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return -1, -1


def slice_offsets(ex: ExamplePlan, config: SimConfig, shape: tuple[int, int]) -> np.ndarray:
    """Slice positions relative to their mean, in units of L = the longer side of the working FOV.

    ``shape`` is the working (Ny, Nx).  The k-space crop to the acquired matrix keeps the FOV;
    ``--matrix`` changes it by the crop/pad factor.  ``synth.physics.coils`` measures distances in L.
    """
    src = ex.sources
    sl0 = src[0].slice
    dy, dx = sl0.pixel_spacing_mm if sl0.pixel_spacing_mm else (1.5, 1.5)
    fov_y, fov_x = sl0.shape[0] * dy, sl0.shape[1] * dx  # stored FOV, mm
    acq = working_shape(sl0.shape, sl0.acquisition_matrix, config.resolution, None)
    # working pixel size after the resolution step, then the --matrix FOV
    fov = max(shape[0] * fov_y / acq[0], shape[1] * fov_x / acq[1], 1e-6)
    if config.combine == "across-series" and len({s.series.key for s in src}) > 1:
        pos = np.arange(len(src)) * ACROSS_SERIES_SPACING_MM
    else:
        pos = np.array([s.slice.position_mm for s in src], dtype=float)
    return (pos - pos.mean()) / fov


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def store_attrs(config: SimConfig, plan: Plan, catalog: Catalog) -> dict:
    import zarr

    return {
        "generator": {
            "name": "smssynth",
            "version": synth.__version__,
            "command": "dicom2kspace",
            "numpy": np.__version__,
            "zarr": zarr.__version__,
            # the k-means phase and the coil maps depend on these (read without importing them)
            "scikit-learn": _dist_version("scikit-learn"),
            "scipy": _dist_version("scipy"),
            "python": platform.python_version(),
        },
        "source": "synthetic",  # format 1.3: k-space simulated from magnitudes ("measured": synth.dataset.raw)
        "params": config.to_dict(),
        "models": {"phase": PHASE_MODEL, "coils": COIL_MODEL},
        "inputs": {
            "files": catalog.n_files,
            "series": len(catalog.series),
            "skipped": dict(Counter(s.category for s in catalog.skipped)),
            "fallbacks": dict(catalog.fallbacks),  # e.g. {"SliceLocation": series separated by it}
        },
        "examples": [ex.to_dict() for ex in plan.examples],
    }


def store_kind(config: SimConfig) -> str:
    return "targets" if config.targets_only else "kspace"


def targets_layout(plan: Plan, dims: dict, attrs: dict) -> tuple[dict, list[list[int]]]:
    """The slice table of a targets store: every distinct slice once, in order of first use.

    Adds ``S`` to ``dims`` and ``attrs["slices"]`` (each slice's series pseudonym and index);
    returns the new dims and, per example, its slices' ids.
    """
    ids: dict[tuple[str, int], int] = {}
    per_example = []
    for ex in plan.examples:
        per_example.append([ids.setdefault((s.series.key, s.slice.index), len(ids)) for s in ex.sources])
    attrs["slices"] = [{"series": k, "slice": i} for (k, i) in ids]
    return {**dims, "S": len(ids)}, per_example


def write_targets(writer: zstore.Writer, cache: "SliceCache", ex: ExamplePlan, sids: list[int], config: SimConfig,
                  timer: StageTimer, written: set[int] | None = None) -> None:
    """Write one example of a targets store: its slices (those not in ``written`` yet), then its
    slice ids, offsets, scale and completion marker.  The same magnitudes, labels, offsets and
    scale as :meth:`SliceCache.prepare` hands to the simulation."""
    got = [cache.get(s.series.key, s.slice, timer) for s in ex.sources]
    mags = np.stack([g[0] for g in got])
    peak = float(mags.max())
    scale = peak if peak > 0 else 1.0  # as synth.dataset.simulate.prepare_example
    new = {sid: g for sid, g in zip(sids, got) if written is None or sid not in written}
    writer.targets_example(ex.index, sids, new, slice_offsets(ex, config, mags.shape[-2:]), scale)
    if written is not None:
        written.update(new)


def resume_mismatch(old: dict, new: dict) -> list[str]:
    """Why an existing store cannot be resumed with these attributes ([] if it can)."""
    why = []
    if old.get("format") != zstore.FORMAT_NAME:
        return [f"it is not an smssynth store (format {old.get('format')!r})"]
    for key in ("params", "dims"):
        if old.get(key) != new.get(key):
            diff = sorted(k for k in set(old.get(key, {})) | set(new.get(key, {}))
                          if old.get(key, {}).get(k) != new.get(key, {}).get(k))
            why.append(f"{key} differ ({', '.join(diff)})")
    if [e.get("identity") for e in old.get("examples", [])] != [e.get("identity") for e in new.get("examples", [])]:
        why.append("the planned examples differ (other inputs or salt)")
    if (old.get("split") or {}).get("spec") != (new.get("split") or {}).get("spec"):
        why.append("the split differs")
    return why


def open_to_resume(out: str, attrs: dict, storage_options: dict | None = None):
    """Open an existing store to complete it: ``(root, indices still to compute)``.

    Refuses (StoreExistsError) a store of other parameters or inputs, or anything that is not an
    smssynth store.  Removes the temporary chunk files of killed writers first.
    """
    import zarr

    try:
        old = dict(zarr.open_group(out, mode="r", storage_options=storage_options).attrs)
    except Exception:
        raise StoreExistsError(f"{out} exists and is not an smssynth store; choose another --out "
                               f"(--overwrite replaces only smssynth stores)") from None
    why = resume_mismatch(old, attrs)
    if why:
        raise StoreExistsError(
            f"{out} exists with different parameters: {'; '.join(why)}. Pass --overwrite to replace it, "
            f"or choose another --out"
        )
    st = zstore.Store.open(out, storage_options)
    stale = zstore.remove_partials(out)
    if stale:
        log.info("removed %d temporary chunk file(s) left by an interrupted run", stale)
    todo = {int(i) for i in np.flatnonzero(~st.complete())}
    # consolidated metadata (format 1.4; none before) refreshed from the per-array metadata, final by now
    root = zstore.consolidate(out, storage_options) or zarr.open_group(out, mode="r+", storage_options=storage_options)
    # a complete example whose chunk files were damaged since (truncated, wrong size) is recomputed
    for i, problems in sorted(st.verify().items()):
        log.warning("example %d is damaged (%s); recomputing it", i, "; ".join(problems))
        zstore.write_row(root["complete"], i, np.False_)
        todo.add(i)
    return root, todo


def make_plan(catalog: Catalog, config: SimConfig, split_of=None, on_mixed: str = "error") -> Plan:
    """Plan and check that every example has one common (T, Ny, Nx).

    Examples of different sizes cannot share a store.  ``on_mixed="error"`` refuses (for
    ``dicom2kspace``, where the user named the inputs); ``"majority"`` keeps the size with the
    most examples and reports the others as not used (for ``generate``: one odd series must not
    stop a whole dataset).
    """
    plan = plan_examples(catalog, config, split_of)
    if not plan.examples:
        why = "; ".join(plan.skipped[:5]) or "no slices"
        raise NoInputError(
            f"no SMS example can be formed with --sms {config.sms} ({why}). Lower --sms, use "
            f"--combine across-series for single-slice series, or add inputs"
        )
    if plan.shape is None and on_mixed == "majority":
        plan = _keep_majority(plan)
    if plan.shape is None:
        sizes = ", ".join(f"{t} frames x {y}x{x}" for t, y, x in plan.signatures)
        raise ConfigError(
            f"inputs give examples of different sizes ({sizes}); one store needs one size: "
            f"pass --matrix NYxNX and/or --frames N (with --frames-mode resample if needed)"
        )
    ny = plan.shape[1]
    if config.accel > ny:
        raise ConfigError(f"--accel {config.accel} exceeds the {ny} ky rows of the examples")
    if config.acs > ny:
        raise ConfigError(f"--acs {config.acs} exceeds the {ny} ky rows of the examples")
    return plan


def _keep_majority(plan: Plan) -> Plan:
    """Keep the examples of the most common size; report the rest (indices are renumbered)."""
    sizes = Counter(ex.size for ex in plan.examples)
    keep = max(sizes, key=lambda sz: (sizes[sz], sz))
    skipped = list(plan.skipped)
    for sz, n in sorted(sizes.items()):
        if sz != keep:
            skipped.append(f"{n} example(s) of {sz[0]} frames x {sz[1]}x{sz[2]} (the store holds {keep[0]} frames x "
                           f"{keep[1]}x{keep[2]}; pass --matrix/--frames to include them)")
    kept = [ex for ex in plan.examples if ex.size == keep]
    kept = [dataclasses.replace(ex, index=i) for i, ex in enumerate(kept)]
    return Plan(kept, [keep], skipped)


def dicom2kspace(
    inputs: Sequence[str | Path],
    out: str | Path,
    config: SimConfig,
    *,
    salt: bytes,
    on_error: str = "skip",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    timer: StageTimer | None = None,
    threads: int | None = None,
    show_paths: bool = False,
    nifti_axes: str | None = None,
) -> Summary:
    """Convert DICOM (and NIfTI) inputs into a new store at ``out``; returns what happened.

    ``threads``: threads that compute and write coils (default: the CPU cores available).
    ``show_paths``: messages name input files by their real paths instead of salted hashes
    (:class:`synth.io.deid.PathNames`).
    ``nifti_axes``: axis order of NIfTI inputs (``"t,y,x"``), overriding their headers (:mod:`synth.io.nifti`).
    """
    timer = timer or StageTimer()
    summary = Summary()
    t_start = time.perf_counter()
    # before any work: --out is never an input, and --overwrite replaces only a store of ours,
    # written beside it and swapped in at the end (synth.dataset.output)
    # an existing store is resumed if it is the same conversion (checked once planned)
    replacement, resume = output.prepare_or_resume(out, formats=[zstore.FORMAT_NAME], overwrite=overwrite,
                                                   inputs=inputs)
    with replacement.guard(say_incomplete=True):
        _convert(inputs, replacement.target, config, summary, salt=salt, on_error=on_error, progress=progress,
                 timer=timer, threads=threads, resume=resume, show_paths=show_paths, nifti_axes=nifti_axes)
    replacement.finish(bool(summary.written or summary.already))
    summary.notes = list(replacement.notes)
    summary.seconds = dict(timer.seconds)
    summary.wall_seconds = time.perf_counter() - t_start
    return summary


def _convert(inputs, out, config: SimConfig, summary: Summary, *, salt: bytes, on_error: str, progress,
             timer: StageTimer, threads: int | None, resume: bool = False, show_paths: bool = False,
             nifti_axes: str | None = None) -> None:
    """The conversion proper, into the store at ``out``: a new path, or (``resume``) an existing
    store of the same conversion whose missing examples are computed."""
    tune_allocator()
    with timer("scan"):
        catalog = scan(inputs, salt=salt, on_error=on_error, show_paths=show_paths, nifti_axes=nifti_axes)
    summary.n_files, summary.n_series = catalog.n_files, len(catalog.series)
    summary.skipped_inputs = Counter(s.category for s in catalog.skipped)
    summary.skip_reasons = [str(s) for s in catalog.skipped]  # names masked unless show_paths
    summary.warnings = list(catalog.warnings)

    plan = make_plan(catalog, config)
    summary.plan_skipped = list(plan.skipped)
    summary.n_examples = len(plan.examples)
    summary.shape = plan.shape
    t, ny, nx = plan.shape
    dims = {"N": len(plan.examples), "C": config.coils, "M": config.sms, "T": t, "Ky": ny, "Kx": nx}
    threads = default_threads() if threads is None else threads
    attrs = store_attrs(config, plan, catalog)
    if config.targets_only:
        dims, sids = targets_layout(plan, dims, attrs)
    else:
        # two examples are in flight (one computed by the pool while the next is read)
        check_memory(config, t, ny, nx, in_flight=2, coil_threads=threads)
    if resume:
        root, todo = open_to_resume(out, {**attrs, "dims": dims})
        summary.already = len(plan.examples) - len(todo)
    else:
        root = zstore.create(out, dims, attrs, with_phase=config.store_phase, kind=store_kind(config),
                             with_labels=config.phase == "kmeans")
        todo = set(range(len(plan.examples)))

    cache = SliceCache(config)
    if config.targets_only:
        writer = zstore.Writer(root)
        written: set[int] = set()
        for ex in plan.examples:
            if ex.index not in todo:
                continue
            try:
                with timer("write"):
                    write_targets(writer, cache, ex, sids[ex.index], config, timer, written)
                summary.written += 1
            except DicomError as e:
                if on_error == "fail":
                    raise DicomError(f"{e} (stopped at example {ex.index}: --on-error fail)") from None
                summary.failed.append((ex.index, str(e)))
                log.warning("example %d skipped: %s", ex.index, e)
            if progress:
                progress(summary.written + len(summary.failed), len(todo))
        return
    # While the pool computes and writes example n's coils, this thread reads and prepares
    # example n+1 and submits it; then it finishes n (its small arrays and completion marker).
    total = len(todo)
    with CoilWriter(zstore.Writer(root), min(threads, config.coils), timer) as writer:
        pending = None

        def report():
            if progress:
                progress(summary.written + len(summary.failed), total)

        def finish_pending():
            nonlocal pending
            if pending is not None:
                writer.finish(*pending)
                summary.written += 1
                pending = None
                report()

        for ex in plan.examples:
            if ex.index not in todo:
                continue
            try:
                prep = cache.prepare(ex, timer)
            except DicomError as e:
                if on_error == "fail":
                    finish_pending()
                    raise DicomError(f"{e} (stopped at example {ex.index}: --on-error fail)") from None
                summary.failed.append((ex.index, str(e)))
                log.warning("example %d skipped: %s", ex.index, e)
                report()
                continue
            futures = writer.submit(ex.index, prep)
            finish_pending()
            pending = (ex.index, prep, futures)
        finish_pending()
