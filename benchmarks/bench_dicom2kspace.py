"""Time ``dicom2kspace`` per example and per stage against the floor of FFTs + writes.

The floor is what no simulator can avoid: the FFTs that produce the stored k-space (C*T 2D FFTs
of the aliased coil images, the same count the simulator needs) and writing the very same arrays
into a store with the same codecs and chunks.  It is timed three ways, all in this one run:

* ``serial``     -- FFT an example, then write it, one after the other (the issue's floor);
* ``overlapped`` -- FFTs in one thread, the previous example's write in another;
* ``parallel``   -- like the pipeline: ``--threads`` threads each FFT one coil at a time and
  write its chunks right away (the strictest floor).

Pipeline and floors alternate within each repeat, every timed run starts from a flushed page
cache (``os.sync`` outside the timed region), and medians over ``--repeats`` are compared.

``--kmeans-baseline REV`` instead compares whole runs with the k-means of git revision ``REV``
(the hand-written k-means++/Lloyd with its numba kernels, by default: ``synth/phase.py`` and
``synth/_kernels.py``, their paths before ``synth/`` was split into ``io/``, ``physics/`` and
``dataset/``, are read with ``git show`` into temporary modules) against the current
scikit-learn k-means, alternating which goes first in each repeat, and prints the median
ratio; the floors are not run then.  Both get one untimed run first (numba compiles, scikit-learn
is imported), so the import of scikit-learn (about a second, once per process) is not in the
ratio; it is printed separately.

Where the stores go matters: a run larger than the kernel's dirty-page limits (a few GB here)
is bound by the disk's write bandwidth, for the pipeline and the floors alike; ``--workdir
/dev/shm`` takes the disk out and shows the CPU and memory cost alone.

    python benchmarks/bench_dicom2kspace.py                      # Sunnybrook SCD0000101 if present
    python benchmarks/bench_dicom2kspace.py --workdir /dev/shm   # without the disk
    python benchmarks/bench_dicom2kspace.py --combos 16          # fewer examples per slice
    python benchmarks/bench_dicom2kspace.py --kmeans-baseline 0bbf228 --workdir /dev/shm --repeats 5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import synth.dataset.simulate
from synth.dataset import store as zstore
from synth.dataset.config import SimConfig
from synth.dataset.pipeline import default_threads, dicom2kspace
from synth.dataset.simulate import StageTimer
from synth.dataset.store import Store
from synth.physics.fft import fft2c
from synth.physics.sms import collapse_images

REPO = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO.parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"
# the last revision with the hand-written k-means++/Lloyd and its numba twin (before scikit-learn)
HANDWRITTEN_KMEANS = "0bbf2286fba12681afc910878d15b09a1b46af10"
FLOORS = {
    "serial": "FFT then write, one after the other",
    "overlapped": "FFTs overlap the previous example's write",
    "parallel": "--threads threads FFT coils and write each at once, as the pipeline does",
}


def floor_once(arrays: list[dict], dims: dict, out: Path, with_phase: bool, kind: str, threads: int) -> float:
    """FFT the aliased coil images and write the same arrays: the unavoidable work."""
    t0 = time.perf_counter()
    root = zstore.Writer(zstore.create(out, dims, {"benchmark": "floor"}, with_phase=with_phase))
    if kind == "parallel":
        def coil(i, ci):
            ex = arrays[i]
            root.coil(i, ci, fft2c(ex["_aliased"][ci]), ex["phase"][ci] if with_phase else None)

        with ThreadPoolExecutor(max_workers=threads) as pool:
            pending = None
            for i, ex in enumerate(arrays):
                futures = [pool.submit(coil, i, ci) for ci in range(dims["C"])]
                if pending is not None:
                    for f in pending[1]:
                        f.result()
                    root.example(pending[0], arrays[pending[0]], coils_written=True)
                pending = (i, futures)
            for f in pending[1]:
                f.result()
            root.example(pending[0], arrays[pending[0]], coils_written=True)
        return time.perf_counter() - t0
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for i, ex in enumerate(arrays):
            data = {**ex, "kspace": fft2c(ex["_aliased"])}
            if kind == "overlapped":
                if pending is not None:
                    pending.result()
                pending = writer.submit(root.example, i, data)
            else:
                root.example(i, data)
        if pending is not None:
            pending.result()
    return time.perf_counter() - t0


def _module_at(rev: str, path: str, name: str, folder: Path):
    """Import ``path`` as it was at git revision ``rev``, as module ``name`` (from a file in ``folder``)."""
    try:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"--kmeans-baseline: cannot read {path} at {rev!r} with git ({e}); run from a git checkout "
                         f"that has that revision") from e
    file = folder / f"{name}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look the module up while the class body runs
    spec.loader.exec_module(mod)
    return mod


def baseline_kmeans(rev: str, folder: Path):
    """``kmeans_labels`` of revision ``rev``, calling that revision's numba kernels."""
    import synth.physics._jit

    # the paths at that revision; its phase.py imports synth._jit, now synth.physics._jit
    sys.modules.setdefault("synth._jit", synth.physics._jit)
    old_kernels = _module_at(rev, "synth/_kernels.py", "_bench_old_kernels", folder)
    old_phase = _module_at(rev, "synth/phase.py", "_bench_old_phase", folder)
    old_phase.kernels = lambda: old_kernels  # its k-means kernels, which the current synth/physics/_kernels.py lacks
    return old_phase.kmeans_labels


def _settle() -> None:
    """Flush dirty pages to disk so the next timed run starts from the same page-cache state."""
    if hasattr(os, "sync"):
        os.sync()
    time.sleep(0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=None, help="DICOM folder (default: Sunnybrook SCD0000101, else a phantom)")
    ap.add_argument("--combos", type=int, default=None,
                    help="random examples per series (default: every M-subset, as dicom2kspace does: 66 "
                         "for SCD0000101, 9.4 GB per timed run, deleted after it). Fewer examples per "
                         "slice leave the per-slice read and k-means less amortised")
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--sms", type=int, default=2)
    ap.add_argument("--phase", default="kmeans")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--floor-examples", type=int, default=16,
                    help="distinct examples the floor holds in memory and writes in turn into all N slots "
                         "(uncompressed: the values do not change the cost; bounds memory for large N)")
    ap.add_argument("--threads", type=int, default=None, help="pipeline and parallel-floor threads (default: cores)")
    ap.add_argument("--kmeans-baseline", metavar="REV", nargs="?", const=HANDWRITTEN_KMEANS, default=None,
                    help="compare whole runs with the k-means of git revision REV (default when given without "
                         f"REV: {HANDWRITTEN_KMEANS[:7]}, the hand-written k-means) instead of the floors")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the stores are written (default: the system temp folder); e.g. /dev/shm "
                         "to take the disk out of the comparison")
    args = ap.parse_args(argv)
    threads = args.threads or default_threads()

    tmp = Path(tempfile.mkdtemp(prefix="bench-d2k-", dir=args.workdir))
    src = args.input
    if src is None:
        src = DEFAULT_INPUT
        if not src.exists():
            from synth.io.phantom import PhantomSpec, write_phantom

            src = tmp / "phantom"
            write_phantom(src, PhantomSpec(n_slices=6, n_frames=20, acquired=(192, 160), matrix=(224, 224)))
    config = SimConfig(sms=args.sms, coils=args.coils, combos=args.combos, phase=args.phase)
    salt = b"benchmark"
    try:
        if args.kmeans_baseline:
            compare_kmeans(args, src, config, salt, threads, tmp)
            return
        # one untimed run produces the arrays the floor writes (the same bytes, in memory)
        first = tmp / "arrays.zarr"
        n = dicom2kspace([src], first, config, salt=salt, threads=threads).written
        st = Store.open(first)
        dims = st.dims
        distinct = []
        for i in range(min(n, args.floor_examples)):
            ex = st.example(i, ["mask", "kz", "target", "csm", "phase", "scale", "noise_sigma", "offsets"])
            x = ex["target"][None] * ex["csm"][:, :, None] * np.exp(1j * ex["phase"]).astype(np.complex64)
            ex["_aliased"] = collapse_images(np.moveaxis(x.astype(np.complex64), 1, 2))
            distinct.append(ex)
        arrays = [distinct[i % len(distinct)] for i in range(n)]  # same shapes and bytes per example
        shutil.rmtree(first)
        runs, stages = [], []
        floors = {kind: [] for kind in FLOORS}
        for r in range(args.repeats):
            out = tmp / f"run{r}.zarr"
            timer = StageTimer()
            _settle()
            t0 = time.perf_counter()
            dicom2kspace([src], out, config, salt=salt, timer=timer, threads=threads)
            runs.append(time.perf_counter() - t0)
            stages.append(dict(timer.seconds))
            shutil.rmtree(out)  # outside the timed region
            for kind in floors:
                out_f = tmp / f"floor-{kind}-{r}.zarr"
                _settle()
                floors[kind].append(floor_once(arrays, dims, out_f, config.store_phase, kind, threads))
                shutil.rmtree(out_f)
        shape = "x".join(str(dims[k]) for k in ("C", "M", "T", "Ky", "Kx"))
        print(f"input: {src.name}  examples/run: {n}  example C x M x T x Ky x Kx = {shape}  "
              f"repeats: {args.repeats}  threads: {threads}  workdir: {tmp.parent}")
        print(f"{'stage':<12} {'median s/example':>18}   (summed over threads; stages overlap)")
        keys = sorted({k for s in stages for k in s})
        for k in keys:
            print(f"{k:<12} {statistics.median(s.get(k, 0.0) for s in stages) / n:>18.4f}")
        pipe = statistics.median(runs) / n
        print(f"{'pipeline':<12} {pipe:>18.4f}   (whole command, wall: scan, plan, store creation, all)")
        for kind, label in FLOORS.items():
            print(f"{'floor ' + kind:<12} {statistics.median(floors[kind]) / n:>18.4f}   ({label})")
        for kind in floors:
            flo = statistics.median(floors[kind]) / n
            print(f"ratio pipeline / floor {kind:<10} = {pipe / flo:.2f}   (target <= 1.3)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compare_kmeans(args, src: Path, config: SimConfig, salt: bytes, threads: int, tmp: Path) -> None:
    """Whole ``dicom2kspace`` runs with the k-means of ``--kmeans-baseline`` and the current one."""
    current = synth.dataset.simulate.kmeans_labels
    t0 = time.perf_counter()
    import sklearn.cluster  # noqa: F401  (what the current k-means imports on first use)
    import_s = time.perf_counter() - t0
    impls = {"baseline": baseline_kmeans(args.kmeans_baseline, tmp), "current": current}
    runs = {name: [] for name in impls}
    cpu = {name: [] for name in impls}
    kmeans = {name: [] for name in impls}
    n = 0

    def run(name: str, out: Path) -> tuple[float, float, float]:
        nonlocal n
        synth.dataset.simulate.kmeans_labels = impls[name]  # what slice_labels calls
        timer = StageTimer()
        try:
            _settle()
            c0, t0 = time.process_time(), time.perf_counter()
            n = dicom2kspace([src], out, config, salt=salt, timer=timer, threads=threads).written
            wall, used = time.perf_counter() - t0, time.process_time() - c0
        finally:
            synth.dataset.simulate.kmeans_labels = current
            shutil.rmtree(out, ignore_errors=True)  # outside the timed region
        return wall, used, timer.seconds.get("kmeans", 0.0)

    for name in impls:  # untimed: numba compiles, page cache warms
        run(name, tmp / f"warm-{name}.zarr")
    for r in range(args.repeats):
        order = list(impls) if r % 2 == 0 else list(impls)[::-1]
        for name in order:
            wall, used, km = run(name, tmp / f"{name}-{r}.zarr")
            runs[name].append(wall)
            cpu[name].append(used)
            kmeans[name].append(km)
    print(f"input: {src.name}  examples/run: {n}  phase: {config.phase} K={config.clusters}  repeats: {args.repeats} "
          f"(alternating)  threads: {threads}  workdir: {tmp.parent}  baseline: {args.kmeans_baseline[:12]}")
    print(f"{'k-means':<10} {'wall s/run: median':>19} {'min':>8} {'max':>8} {'CPU s/run':>10} {'k-means s/run':>14}")
    for name in impls:
        print(f"{name:<10} {statistics.median(runs[name]):>19.3f} {min(runs[name]):>8.3f} {max(runs[name]):>8.3f} "
              f"{statistics.median(cpu[name]):>10.3f} {statistics.median(kmeans[name]):>14.3f}")
    print("(CPU: all threads of this process, less sensitive to other load than wall time; k-means: its stage, "
          "summed wall time on the main thread)")
    for label, d in (("wall", runs), ("CPU", cpu)):
        ratios = [c / b for c, b in zip(d["current"], d["baseline"])]
        print(f"ratio current / baseline, {label + ':':<5} {statistics.median(d['current']) / statistics.median(d['baseline']):.3f} "
              f"of the medians, {statistics.median(ratios):.3f} median of the per-repeat ratios "
              f"({', '.join(f'{q:.3f}' for q in ratios)})   (target <= 1.05)")
    print(f"not in the runs: importing sklearn.cluster took {import_s:.2f} s in this process (once per process)")


if __name__ == "__main__":
    main()
