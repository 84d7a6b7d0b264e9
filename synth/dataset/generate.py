"""``smssynth generate``: a whole dataset with dask, from a folder tree or a manifest.

Flow (the client never touches pixel data)::

    discover: one scan task per top-level entry (headers only)  ->  Catalog
    plan:     combinations x draws, patient-level split per example  ->  Plan
    store:    created once by the client with every example's provenance (or resumed)
    run:      one task per missing example on the workers: read DICOM, simulate, write its own
              chunks, then its completion marker; results are small status records

Scheduling by slice affinity (:class:`AffinityQueues`): every worker process keeps the slices
it has read, resampled and clustered, so the missing examples are cut into one contiguous queue
per worker in series-then-slice order (:func:`affinity_runs`), and each worker is handed the next
example of its own queue as it finishes one (two at a time, so it never waits).  A worker whose
queue is empty takes the last example of the longest other queue: the load stays balanced to the
last example, and a series is read and clustered by one worker (two where a queue boundary or a
taken example cuts it) instead of by every worker its pairs land on.  The same holds on N
machines: start ``dask scheduler`` and one ``dask worker --nthreads 1`` per core on each machine
(all seeing the inputs and the store at the same paths or URLs) and pass ``--scheduler``; the
queues are cut for however many workers the scheduler reports, so each machine reads mostly its
own series, and workers keep their slices between runs.  Examples are pinned loosely: those of
a worker that dies run on the others.

Guarantees: an example's arrays depend only on its identity and the root seed (1 or N workers
give identical bytes); completion markers are written after the data, so a killed run resumes
with only the missing examples; a failing series is recorded and skipped; a worker that dies
is replaced and its task retried by dask (the retry rewrites every chunk of the example).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import resource
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from synth.dataset import output
from synth.dataset import store as zstore
from synth.dataset.budget import check_memory
from synth.dataset.combos import ExamplePlan, Plan
from synth.dataset.config import SimConfig
from synth.dataset.pipeline import (CoilWriter, SliceCache, make_plan, open_to_resume, store_attrs, store_kind,
                            targets_layout, write_targets)
from synth.dataset.simulate import StageTimer
from synth.dataset.splits import assign_split, split_spec_str
from synth.errors import ClusterError, ConfigError, NoInputError, SmssynthError
from synth.io.deid import PathNames, pseudonym
from synth.io.dicom import Catalog, SeriesInfo, Skip, scan
from synth.runtime import tune_allocator

log = logging.getLogger("smssynth.generate")

# Fault injection for the tests of worker death: "INDEX:MARKER" makes the worker that runs
# example INDEX write part of it and then die (once: the marker file records that it happened).
FAULT_ENV = "SMSSYNTH_FAULT_KILL_ONCE"
MAX_ROUNDS = 3


@dataclass(frozen=True)
class ManifestRow:
    path: str
    patient: str
    split: str | None = None


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """CSV with columns ``path`` (file or folder, relative to the CSV's folder), ``patient``, optional ``split``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--manifest {path}: no such file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in cols or "patient" not in cols:
            raise ConfigError(f"--manifest {path}: needs a header with columns path,patient[,split]; found {cols}")
        rows = []
        for n, raw in enumerate(reader, start=2):
            r = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not r.get("path") or not r.get("patient"):
                raise ConfigError(f"--manifest {path}, line {n}: empty path or patient")
            p = Path(r["path"])
            p = p if p.is_absolute() else path.parent / p
            if not p.exists():
                # the row's path is not repeated: exports name folders after patients
                raise ConfigError(f"--manifest {path}, line {n}: its path does not exist (relative paths are read "
                                  f"from the manifest's folder)")
            rows.append(ManifestRow(str(p), r["patient"], r.get("split") or None))
    if not rows:
        raise ConfigError(f"--manifest {path}: no rows")
    return rows


@dataclass
class Discovery:
    catalog: Catalog
    split_override: dict[str, str]  # series key -> split from a manifest


def _entries(root: Path) -> list[list[str]]:
    """Scan units: each top-level folder of ``root``; loose files together."""
    if root.is_file():
        return [[str(root)]]
    dirs = sorted(str(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = sorted(str(p) for p in root.iterdir() if p.is_file())
    return [[d] for d in dirs] + ([files] if files else [])


def _scan_unit(paths: list[str], salt: bytes, on_error: str, show_paths: bool = False,
               nifti_axes: str | None = None) -> Catalog:
    try:
        return scan(paths, salt=salt, on_error=on_error, show_paths=show_paths, nifti_axes=nifti_axes)
    except NoInputError as e:  # a unit without images (e.g. a contours folder) is not an error
        where = paths[0] if len(paths) == 1 else os.path.commonpath(paths)
        name = PathNames(paths, salt, show_paths)(where)
        return Catalog(series=[], skipped=[Skip(where, f"no DICOM image series ({e})", "no-images", name)],
                       warnings=[], n_files=0)


def merge_catalogs(parts: list[Catalog]) -> Catalog:
    series: dict[str, SeriesInfo] = {}
    out = Catalog(series=[], skipped=[], warnings=[], n_files=0)
    for c in parts:
        out.skipped += c.skipped
        out.warnings += c.warnings
        out.n_files += c.n_files
        out.fallbacks.update(c.fallbacks)
        for s in c.series:
            if s.key in series:
                raise ConfigError(
                    f"series {s.key} is split across several top-level folders; point generate at a "
                    f"root whose top-level folders each hold whole series (e.g. one per patient)"
                )
            series[s.key] = s
    out.series = [series[k] for k in sorted(series)]
    return out


def discover(
    root: str | Path | None,
    manifest: Sequence[ManifestRow] | None,
    *,
    salt: bytes,
    on_error: str,
    mapper: Callable,
    show_paths: bool = False,
    nifti_axes: str | None = None,
) -> Discovery:
    """Scan inputs in parallel (``mapper(fn, items)`` runs ``fn`` over ``items``).

    ``show_paths``: messages name files by their real paths, not salted hashes (PathNames)."""
    override: dict[str, str] = {}
    if manifest:
        units = [[r.path] for r in manifest]
    else:
        root = Path(root)
        if not root.exists():
            raise NoInputError(f"{PathNames([root], salt, show_paths)(root)}: no such file or folder")
        units = _entries(root)
    results = mapper(lambda paths: _scan_unit(paths, salt, on_error, show_paths, nifti_axes), units)
    parts = []
    for i, cat in enumerate(results):
        if manifest:
            row = manifest[i]
            pk = pseudonym(f"manifest-patient:{row.patient}", salt, "pt-")
            cat.series = [dataclasses.replace(s, patient_key=pk) for s in cat.series]
            if row.split:
                override.update({s.key: row.split for s in cat.series})
        parts.append(cat)
    if not any(c.series for c in parts):
        where = "the manifest's paths" if manifest else PathNames([root], salt, show_paths)(root)
        raise NoInputError(f"no DICOM image series found under {where}")
    return Discovery(merge_catalogs(parts), override)


def plan_dataset(disc: Discovery, config: SimConfig, fractions: dict[str, float] | None) -> Plan:
    def split_of(se: SeriesInfo) -> str | None:
        if se.key in disc.split_override:
            return disc.split_override[se.key]
        return assign_split(se.patient_key, fractions, config.seed) if fractions else None

    use_split = bool(fractions or disc.split_override)
    return make_plan(disc.catalog, config, split_of if use_split else None, on_mixed="majority")


def dataset_attrs(config: SimConfig, plan: Plan, catalog: Catalog, fractions) -> dict[str, Any]:
    attrs = store_attrs(config, plan, catalog)
    attrs["generator"]["command"] = "generate"
    attrs["split"] = {
        "spec": split_spec_str(fractions),
        "rule": "patient-level: sha256(seed, patient key) in cumulative fractions; manifest split overrides",
        "counts": dict(Counter(ex.split for ex in plan.examples if ex.split is not None)),
    }
    return attrs


# ---------------------------------------------------------------- worker side
_WORKER: dict[str, Any] = {"writers": OrderedDict(), "cache": OrderedDict()}


def _worker_writer(url: str, storage_options, token: str) -> zstore.Writer:
    """The store's writer (open array handles), kept for the run ``token``: workers outlive runs,
    and a later run may have re-created the store at the same URL with other shapes."""
    import zarr

    key = (url, repr(storage_options), token)
    writers: OrderedDict = _WORKER["writers"]
    if key not in writers:
        # A dask worker here is one core (threads_per_worker=1, one worker per core): zarr's own
        # thread pool would otherwise compress chunks on every core of the machine from every
        # worker at once, and N workers would fight over the same cores instead of adding them.
        zarr.config.set({"threading.max_workers": 1})
        writers[key] = zstore.Writer(zarr.open_group(url, mode="r+", storage_options=storage_options))
        while len(writers) > 2:
            writers.popitem(last=False)
    return writers[key]


def _worker_cache(config: SimConfig) -> SliceCache:
    """One slice cache per worker process and configuration (workers outlive runs)."""
    key = json.dumps(config.to_dict(), sort_keys=True)
    caches: OrderedDict = _WORKER["cache"]
    if key not in caches:
        caches[key] = SliceCache(config, size=16)
        while len(caches) > 2:
            caches.popitem(last=False)
    return caches[key]


def _maybe_die(index: int, root) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    at, _, marker = spec.partition(":")
    if int(at) != index or os.path.exists(marker):
        return
    Path(marker).write_text("died once")
    root["kspace"][index, 0] = np.full(root["kspace"].shape[2:], 7 + 7j, np.complex64)  # half-written
    os._exit(17)


def run_example(url: str, storage_options, ex: ExamplePlan, config: SimConfig, token: str = "",
                sids: list[int] | None = None) -> dict[str, Any]:
    """Simulate and write one example (runs on a worker); returns a small status record.

    ``token`` identifies the run (the worker reuses its open store for the same token).
    """
    t0 = time.perf_counter()
    tune_allocator()
    try:
        store = _worker_writer(url, storage_options, token)
        _maybe_die(ex.index, store.root)
        timer = StageTimer()
        if config.targets_only:  # the images only (each worker writes the slices of its examples)
            write_targets(store, _worker_cache(config), ex, sids, config, timer)
        else:
            prep = _worker_cache(config).prepare(ex, timer)
            # one thread: each coil is written right after it is computed, while still in cache
            writer = CoilWriter(store, 1, timer)
            writer.finish(ex.index, prep, writer.submit(ex.index, prep))
        status, reason = "written", ""
    except SmssynthError as e:
        status, reason = "failed", str(e)
    except Exception as e:  # one bad input never stops the run; the reason is recorded
        log.debug("example %d failed", ex.index, exc_info=True)
        status, reason = "failed", f"{type(e).__name__}: {e}"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"index": ex.index, "status": status, "reason": reason,
            "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_mb, "pid": os.getpid()}


IN_FLIGHT = 2  # examples handed to a worker at a time: the one it runs and the next, ready


class AffinityQueues:
    """One queue of examples per worker (:func:`affinity_runs`), handed out as workers finish.

    ``next_for(worker)`` is the next example of the worker's own queue; a worker whose queue is
    empty takes the **last** example of the longest other queue (the one its owner would reach
    last, so the slices the owner holds now stay its own).  Every example is handed out once;
    None when all are.  An unknown worker (one that joined or came back under a new address)
    only takes from the others.
    """

    def __init__(self, examples: Sequence[ExamplePlan], workers: Sequence[str]):
        if not workers:
            raise ValueError("AffinityQueues needs at least one worker")
        self.queues = {w: deque(run) for w, run in zip(workers, affinity_runs(examples, len(workers)))}
        self.taken = 0  # examples a worker took from another's queue

    def __len__(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def next_for(self, worker: str | None) -> ExamplePlan | None:
        own = self.queues.get(worker)
        if own:
            return own.popleft()
        longest = max(self.queues.values(), key=len)
        if not longest:
            return None
        self.taken += 1
        return longest.pop()


def warm_worker() -> None:
    """Import what simulating an example needs (scikit-learn's k-means, SciPy's FFT, zarr and its
    codecs): run once on every worker when a run starts, so that a worker's first example is
    timed like its others."""
    import importlib

    for name in ("numcodecs", "scipy.fft", "sklearn.cluster", "threadpoolctl", "zarr", "synth.dataset.pipeline"):
        importlib.import_module(name)
    tune_allocator()


# ---------------------------------------------------------------- client side
def affinity_runs(examples: Sequence[ExamplePlan], n_workers: int) -> list[list[ExamplePlan]]:
    """Split the examples into ``n_workers`` runs of equal size (+-1) that share few slices.

    Each worker keeps the slices it has read and clustered (:class:`synth.dataset.pipeline.SliceCache`),
    so an example should run where its slices already are.  The examples are ordered by the
    series they read, then by their slices and draw (all examples of one series together, those
    sharing a slice next to each other), and that order is cut into ``n_workers`` contiguous
    runs.  Two series on two workers: each series is read and clustered by one worker only.  A
    series cut between two runs has only the slices of the examples on both sides read twice
    (for every pair of ``n`` slices cut in half, about 0.7 n of them).  Balance comes first: the
    runs differ by at most one example whatever the series sizes.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")

    def order(ex: ExamplePlan):
        return (sorted({s.series.key for s in ex.sources}), [(s.series.key, s.slice.index) for s in ex.sources],
                ex.draw, ex.index)

    ordered = sorted(examples, key=order)
    size, extra = divmod(len(ordered), n_workers)
    runs, start = [], 0
    for w in range(n_workers):
        stop = start + size + (w < extra)
        runs.append(ordered[start:stop])
        start = stop
    return runs


@dataclass
class GenerateResult:
    planned: int = 0
    already: int = 0
    written: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    skipped_inputs: Counter = field(default_factory=Counter)
    skip_reasons: list[str] = field(default_factory=list)
    plan_skipped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    n_series: int = 0
    n_files: int = 0
    shape: tuple | None = None
    seconds: float = 0.0
    run_seconds: float = 0.0  # the simulate-and-write phase alone (no cluster start, scan or plan)
    peak_rss_mb: float = 0.0
    workers: int = 0
    taken: int = 0  # examples a worker took from another worker's queue (AffinityQueues)
    notes: list[str] = field(default_factory=list)  # what happened to an existing --out


def open_client(workers: int | None, scheduler: str | None):
    """A dask.distributed Client: an existing cluster at ``scheduler``, else a local one."""
    from dask.distributed import Client, LocalCluster

    # distributed configures its loggers at import; keep its start/stop chatter out of the output
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.WARNING)

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({e}); start one with `dask scheduler`") from None
    n = workers or os.cpu_count() or 1
    cluster = None
    try:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.ERROR)
        return Client(cluster), cluster
    except Exception as e:  # distributed raises many types here (RuntimeError, OSError, TimeoutError...)
        log.debug("local dask cluster failed to start", exc_info=True)
        if cluster is not None:
            try:
                cluster.close()
            except Exception:
                pass
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ClusterError(
            f"could not start a local dask cluster of {n} worker process(es) ({type(e).__name__}: {why}); "
            f"try --workers 1, check free memory and that local ports can be opened, or pass --scheduler "
            f"ADDRESS of a running cluster"
        ) from None


def generate(
    root: str | Path | None,
    out: str,
    config: SimConfig,
    *,
    salt: bytes,
    manifest: Sequence[ManifestRow] | None = None,
    split: dict[str, float] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    on_error: str = "skip",
    overwrite: bool = False,
    storage_options: dict | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    show_paths: bool = False,
    nifti_axes: str | None = None,
    affinity: bool = True,
) -> GenerateResult:
    """Discover, plan and write a dataset; resumes an interrupted store with the same parameters.

    ``show_paths``: messages name input files by their real paths instead of salted hashes.
    ``affinity``: pin examples to workers by slice affinity (:func:`affinity_runs`); False leaves
    the placement to dask (``benchmarks/bench_generate.py`` compares the two)."""
    res = GenerateResult()
    t0 = time.perf_counter()
    out = zstore.location(out)
    inputs = ([root] if root is not None else []) + [r.path for r in manifest or []]
    # before any work: --out is never an input; --overwrite replaces only a store of ours, and a
    # local one is written beside the old store and swapped in at the end (synth.dataset.output)
    if overwrite:
        replacement = output.prepare(out, formats=[zstore.FORMAT_NAME], overwrite=True, inputs=inputs,
                                     storage_options=storage_options)
    else:
        output.check_not_input(out, inputs)
        replacement = output.Replacement(out, out)
    with replacement.guard():
        _generate(res, root, replacement.target, config, salt=salt, manifest=manifest, split=split,
                  workers=workers, scheduler=scheduler, on_error=on_error, storage_options=storage_options,
                  progress=progress, show_paths=show_paths, nifti_axes=nifti_axes, affinity=affinity)
    replacement.finish(bool(res.written))
    res.notes = list(replacement.notes)
    res.seconds = time.perf_counter() - t0
    return res


def _generate(res: GenerateResult, root, out: str, config: SimConfig, *, salt, manifest, split, workers, scheduler,
              on_error, storage_options, progress, show_paths: bool = False, nifti_axes: str | None = None,
              affinity: bool = True) -> None:
    """The run proper, into ``out`` (new, or an existing store of the same parameters to resume)."""
    client, cluster = open_client(workers, scheduler)
    try:
        res.workers = len(client.scheduler_info()["workers"])
        client.run(warm_worker)  # a worker's one-off imports belong to its start, not to its first example

        def mapper(fn, items):
            futs = client.map(fn, items, pure=False)
            return client.gather(futs)

        disc = discover(root, manifest, salt=salt, on_error=on_error, mapper=mapper, show_paths=show_paths,
                        nifti_axes=nifti_axes)
        cat = disc.catalog
        res.n_series, res.n_files = len(cat.series), cat.n_files
        res.skipped_inputs = Counter(s.category for s in cat.skipped)
        res.skip_reasons = [str(s) for s in cat.skipped]  # names masked unless show_paths
        res.warnings = list(cat.warnings)
        plan = plan_dataset(disc, config, split)
        res.plan_skipped = list(plan.skipped)
        res.planned, res.shape = len(plan.examples), plan.shape
        res.splits = dict(Counter(ex.split for ex in plan.examples if ex.split))
        if split:
            patients = {s.series.patient_key for ex in plan.examples for s in ex.sources}
            for name in split:
                if name not in res.splits:
                    res.warnings.append(f"split {name!r} received no patient ({len(patients)} patient(s) in all); "
                                        f"with few patients, assign splits explicitly (a manifest's split column)")
        t, ny, nx = plan.shape
        dims = {"N": len(plan.examples), "C": config.coils, "M": config.sms, "T": t, "Ky": ny, "Kx": nx}
        sids = None
        attrs = dataset_attrs(config, plan, cat, split)
        if config.targets_only:
            dims, sids = targets_layout(plan, dims, attrs)
        elif scheduler is None:  # a local cluster: its workers share this machine's memory
            check_memory(config, t, ny, nx, in_flight=max(res.workers, 1),
                         where=f"this machine (for {res.workers} workers)")

        todo = _prepare_store(out, dims, attrs, config, storage_options)
        token = uuid.uuid4().hex  # this run's identity on the workers (see _worker_writer)
        res.already = res.planned - len(todo)
        if not todo:
            return
        from dask.distributed import as_completed

        t_run = time.perf_counter()
        failed: dict[int, str] = {}
        done = 0
        # Results can be lost when a worker dies after finishing a task (dask then recomputes it,
        # and gathering may fail); the completion markers in the store are the truth, so any
        # example neither complete nor failed is submitted again, at most MAX_ROUNDS times.
        for _round in range(MAX_ROUNDS):
            keys: dict[str, tuple[int, str | None]] = {}
            running = as_completed()

            def submit(ex: ExamplePlan, address: str | None) -> None:
                # loose restriction: the examples of a worker that died (and came back under
                # another address) run on any worker
                where = {} if address is None else {"workers": [address], "allow_other_workers": True}
                fut = client.submit(run_example, out, storage_options, ex, config, token,
                                    None if sids is None else sids[ex.index], retries=2, pure=False, **where,
                                    key=f"smssynth-example-{ex.index}-{ex.spawn_key[0]:08x}-r{_round}")
                keys[fut.key] = (ex.index, address)
                running.add(fut)

            queues = None
            addresses = sorted(client.scheduler_info()["workers"])
            if affinity and addresses:  # (a cluster without workers yet: dask places them as workers come)
                queues = AffinityQueues([plan.examples[i] for i in todo], addresses)
                for address in addresses:
                    for _ in range(IN_FLIGHT):
                        ex = queues.next_for(address)
                        if ex is not None:
                            submit(ex, address)
            else:
                for i in todo:
                    submit(plan.examples[i], None)
            for fut in running:
                i, address = keys[fut.key]
                if queues is not None:  # the worker that finished gets its next example
                    ex = queues.next_for(address)
                    if ex is not None:
                        submit(ex, address)
                try:
                    r = fut.result()
                except Exception as e:  # result lost with its worker; checked against the store below
                    log.debug("example %d: result lost (%s: %s)", i, type(e).__name__, e)
                    continue
                if r["status"] != "written":
                    failed[i] = r["reason"]
                    log.warning("example %d failed: %s", i, r["reason"])
                res.peak_rss_mb = max(res.peak_rss_mb, r.get("peak_rss_mb", 0))
                done += 1
                if progress:
                    progress(done, res.planned - res.already, r)
            res.taken += queues.taken if queues is not None else 0
            complete = zstore.Store.open(out, storage_options).complete()
            todo = [i for i in todo if not complete[i] and i not in failed]
            if not todo:
                break
        for i in todo:
            failed[i] = f"result lost {MAX_ROUNDS} times (workers dying?); re-run to complete it"
        res.failed = sorted(failed.items())
        res.written = int(complete.sum()) - res.already
        res.run_seconds = time.perf_counter() - t_run
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _prepare_store(out, dims, attrs, config: SimConfig, storage_options) -> list[int]:
    """Create the store, or check an existing one (to resume) and return the indices still missing."""
    if output.exists(out, storage_options):
        _, todo = open_to_resume(out, {**attrs, "dims": dims}, storage_options)
        return sorted(todo)
    zstore.create(out, dims, attrs, with_phase=config.store_phase, overwrite=True, storage_options=storage_options,
                  kind=store_kind(config), with_labels=config.phase == "kmeans")
    return list(range(dims["N"]))
