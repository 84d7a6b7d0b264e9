"""Time ``dicom2kspace`` per example and per stage against the floor of FFTs + writes.

The floor is what no simulator can avoid: the FFTs that produce the stored k-space (C*T 2D FFTs
of the aliased coil images, the same count the simulator needs) and writing the very same arrays
into a store with the same codecs and chunks.  Both are timed in this one run, ``--repeats`` times,
and medians are compared.

    python benchmarks/bench_dicom2kspace.py                      # Sunnybrook SCD0000101 if present
    python benchmarks/bench_dicom2kspace.py --input DIR --combos 4 --repeats 3

Prints per-stage medians (seconds per example) and ``ratio = pipeline / floor``.
"""

from __future__ import annotations

import argparse
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
from synth.pipeline import dicom2kspace
from synth.simulate import StageTimer
from synth.sms import collapse_images
from synth.store import Store

DEFAULT_INPUT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"


def floor_once(arrays: list[dict], dims: dict, out: Path, with_phase: bool, overlap: bool) -> float:
    """FFT the aliased coil images and write the same arrays: the unavoidable work.

    ``overlap`` runs the writes in a writer thread, as the pipeline does, so the FFTs of the next
    example overlap the previous write (the strict floor); otherwise FFT and write are serial.
    """
    t0 = time.perf_counter()
    root = zstore.create(out, dims, {"benchmark": "floor"}, with_phase=with_phase)
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = None
        for i, ex in enumerate(arrays):
            k = fft2c(ex["_aliased"])
            data = {**ex, "kspace": k}
            if overlap:
                if pending is not None:
                    pending.result()
                pending = writer.submit(zstore.write_example, root, i, data)
            else:
                zstore.write_example(root, i, data)
        if pending is not None:
            pending.result()
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=None, help="DICOM folder (default: Sunnybrook SCD0000101, else a phantom)")
    ap.add_argument("--combos", type=int, default=4, help="examples per series (keeps disk use bounded)")
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--sms", type=int, default=2)
    ap.add_argument("--phase", default="kmeans")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-d2k-"))
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
        runs, stages = [], []
        for r in range(args.repeats):
            out = tmp / f"run{r}.zarr"
            timer = StageTimer()
            t0 = time.perf_counter()
            summary = dicom2kspace([src], out, config, salt=salt, timer=timer)
            runs.append(time.perf_counter() - t0)
            stages.append(dict(timer.seconds))
            n = summary.written
            if r < args.repeats - 1:
                shutil.rmtree(out)  # outside the timed region
        st = Store.open(out)
        dims = st.dims
        arrays = []
        for i in range(n):
            ex = st.example(i)
            x = ex["target"][None] * ex["csm"][:, :, None] * np.exp(1j * ex["phase"]).astype(np.complex64)
            ex["_aliased"] = collapse_images(np.moveaxis(x.astype(np.complex64), 1, 2))
            arrays.append(ex)
        floors = {"serial": [], "overlapped": []}
        for r in range(args.repeats):
            for kind in floors:
                out_f = tmp / f"floor-{kind}-{r}.zarr"
                floors[kind].append(floor_once(arrays, dims, out_f, config.store_phase, kind == "overlapped"))
                shutil.rmtree(out_f)
        shape = "x".join(str(dims[k]) for k in ("C", "M", "T", "Ky", "Kx"))
        print(f"input: {src.name}  examples/run: {n}  example C x M x T x Ky x Kx = {shape}  repeats: {args.repeats}")
        print(f"{'stage':<12} {'median s/example':>18}")
        keys = sorted({k for s in stages for k in s})
        for k in keys:
            print(f"{k:<12} {statistics.median(s.get(k, 0.0) for s in stages) / n:>18.4f}")
        pipe = statistics.median(runs) / n
        print(f"{'pipeline':<12} {pipe:>18.4f}   (whole command, incl. scan/plan/store creation; writes overlap)")
        for kind, label in (("serial", "FFT then write, one after the other"),
                            ("overlapped", "FFTs overlap the previous write, as the pipeline does")):
            flo = statistics.median(floors[kind]) / n
            print(f"{'floor ' + kind:<12} {flo:>18.4f}   ({label})")
        for kind in floors:
            flo = statistics.median(floors[kind]) / n
            print(f"ratio pipeline / floor {kind:<10} = {pipe / flo:.2f}   (target <= 1.3)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
