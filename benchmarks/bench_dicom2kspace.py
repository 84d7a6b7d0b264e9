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

Where the stores go matters: a run larger than the kernel's dirty-page limits (a few GB here)
is bound by the disk's write bandwidth, for the pipeline and the floors alike; ``--workdir
/dev/shm`` takes the disk out and shows the CPU and memory cost alone.

    python benchmarks/bench_dicom2kspace.py                      # Sunnybrook SCD0000101 if present
    python benchmarks/bench_dicom2kspace.py --workdir /dev/shm   # without the disk
    python benchmarks/bench_dicom2kspace.py --combos 16          # fewer examples per slice
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from synth import store as zstore
from synth.config import SimConfig
from synth.fft import fft2c
from synth.pipeline import default_threads, dicom2kspace
from synth.simulate import StageTimer
from synth.sms import collapse_images
from synth.store import Store

DEFAULT_INPUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"
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
            from synth.phantom import PhantomSpec, write_phantom

            src = tmp / "phantom"
            write_phantom(src, PhantomSpec(n_slices=6, n_frames=20, acquired=(192, 160), matrix=(224, 224)))
    config = SimConfig(sms=args.sms, coils=args.coils, combos=args.combos, phase=args.phase)
    salt = b"benchmark"
    try:
        # one untimed run produces the arrays the floor writes (the same bytes, in memory)
        first = tmp / "arrays.zarr"
        n = dicom2kspace([src], first, config, salt=salt, threads=threads).written
        st = Store.open(first)
        dims = st.dims
        distinct = []
        for i in range(min(n, args.floor_examples)):
            ex = st.example(i, ["mask", "kz", "target", "csm", "phase", "scale", "noise_sigma"])
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


if __name__ == "__main__":
    main()
