"""Examples/s of ``generate`` with 1 and 2 dask workers, and of ``dicom2kspace`` in one process.

``generate`` with 2 workers runs twice: with its slice-affinity scheduling (each worker gets one
contiguous run of examples in series-then-slice order, so a series is read and clustered by one
worker) and with dask's own placement (any example on any free worker, the scheduling before).

``dicom2kspace`` runs as a plain single-threaded loop (``threads=1``) and with its coil threads
(one per core).  All five write the same examples (same inputs, recipe and seed) into fresh stores, ``--repeats``
times each, interleaved; medians are compared.  Rates count the simulate-and-write phase (cluster
start-up, scan and plan excluded; printed separately).

    python benchmarks/bench_generate.py                       # Sunnybrook (../shared/data) if present
    python benchmarks/bench_generate.py --input DIR --combos 4 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from synth.dataset.config import SimConfig
from synth.dataset.generate import generate
from synth.dataset.pipeline import default_threads, dicom2kspace
from synth.dataset.recipes import load_recipe
from synth.dataset.simulate import StageTimer

HERE = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = HERE.parent / "shared" / "data" / "sunnybrook-cine"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=None)
    ap.add_argument("--recipe", type=Path, default=HERE / "datasets" / "cine-sms2-r4.yaml")
    ap.add_argument("--combos", type=int, default=4, help="slice pairs per series (bounds disk use)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="where the stores are written (default: the system temp folder), e.g. /dev/shm")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-", dir=args.workdir))
    src = args.input
    if src is None:
        src = DEFAULT_INPUT
        if not src.exists():
            from synth.io.phantom import PhantomSpec, write_phantom

            src = tmp / "phantom"
            for p in range(3):
                write_phantom(src / f"P{p}", PhantomSpec(n_slices=5, n_frames=20, acquired=(192, 160), matrix=(224, 224),
                                                        seed=p), patient=f"P{p}")
    params = {k: v for k, v in load_recipe(args.recipe).items() if k != "split"}
    config = SimConfig(**{**params, "combos": args.combos})
    salt = b"benchmark"
    rates = {"plain loop": [], "threaded": [], "1 worker": [], "2 workers": [], "2 workers, dask placement": []}
    overhead = {"1 worker": [], "2 workers": [], "2 workers, dask placement": []}
    whole = {"1 worker": [], "2 workers": [], "2 workers, dask placement": []}
    n = None
    try:
        for r in range(args.repeats):
            for name in rates:
                out = tmp / f"{name.replace(' ', '-').replace(',', '')}-{r}.zarr"
                if hasattr(os, "sync"):
                    os.sync()  # no run inherits the previous one's dirty pages
                if name in ("plain loop", "threaded"):
                    t0 = time.perf_counter()
                    threads = 1 if name == "plain loop" else default_threads()
                    s = dicom2kspace([src], out, config, salt=salt, timer=StageTimer(), threads=threads)
                    secs, written = time.perf_counter() - t0, s.written
                else:
                    res = generate(src, str(out), config, salt=salt, workers=int(name[0]),
                                   affinity="dask" not in name)
                    secs, written = res.run_seconds, res.written
                    overhead[name].append(res.seconds - res.run_seconds)
                    whole[name].append(res.seconds)
                n = written
                rates[name].append(written / secs)
                shutil.rmtree(out)
        print(f"input: {src}  examples per run: {n}  recipe: {args.recipe.name} (combos {args.combos})  repeats: {args.repeats}")
        med = {k: statistics.median(v) for k, v in rates.items()}
        for k, v in med.items():
            extra = f"   (+{statistics.median(overhead[k]):.1f}s cluster start, scan, plan)" if k in overhead else ""
            label = {"plain loop": "plain loop (dicom2kspace, 1 thread)",
                     "threaded": f"dicom2kspace, {default_threads()} threads"}.get(k, k)
            print(f"{label:<36} {v:6.3f} examples/s{extra}")
        print(f"speed-up 2 workers / 1 worker       = {med['2 workers'] / med['1 worker']:.2f}   (target >= 1.6)")
        print(f"  the same, dask's own placement    = {med['2 workers, dask placement'] / med['1 worker']:.2f}")
        print(f"  whole command (cluster start, scan, plan included) = "
              f"{statistics.median(whole['1 worker']) / statistics.median(whole['2 workers']):.2f}")
        print(f"ratio 2 workers / plain loop        = {med['2 workers'] / med['plain loop']:.2f}")
        print(f"ratio 1 worker / plain loop         = {med['1 worker'] / med['plain loop']:.2f}")
        print(f"ratio 2 workers / threaded          = {med['2 workers'] / med['threaded']:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
