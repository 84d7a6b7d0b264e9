"""Synthesis on the fly vs stored k-space: item rate, training-step overhead and disk, in one run.

From one real cine patient (Sunnybrook SCD0000101 in ../shared/data) it makes, in a scratch
folder, a k-space store and a targets-only store of the same examples, then prints

1. **disk per example** of each store and their ratio;
2. **items per second per DataLoader worker** (one process, ``SmsDataset[i]``) at the recipe size
   (``--matrix 224 --frames 20 --coils 8``, SMS 2, the shipped cine recipe): reading the stored
   k-space vs simulating a fresh draw (epoch >= 1), medians over the items;
3. **training steps per second** of ``sms-crnn`` at a CPU-scale configuration (``--train-matrix``,
   ``--train-frames``, 16 filters, 5 iterations, virtual coil), ``--workers`` DataLoader workers,
   with stored vs on-the-fly data, alternating repeats; the overhead is ``1 - on-the-fly / stored``,
   and, because that difference drowns in the load of a shared machine,
4. **CPU-time accounting**: the process CPU seconds that on-the-fly synthesis adds per item (over
   reading the stored item) as a fraction of the CPU seconds of a training step; on a machine whose
   cores the step keeps busy that fraction bounds the slowdown, whatever else runs beside it.

From 2. it also prints how many workers keep a GPU fed at the paper's size for a given GPU step
time (``--gpu-step``; this machine has no GPU, so that time is an input, not a measurement).

    python benchmarks/bench_synthesis.py [--combos 8] [--steps 12] [--repeats 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101"


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def make(out: Path, cfg) -> None:
    from synth.dataset.pipeline import dicom2kspace

    dicom2kspace([DATA], out, cfg, salt=b"bench-synthesis")


def item_seconds(store: Path, synthesis: str, n: int, clock=time.perf_counter) -> list[float]:
    from zoo.data import DataConfig, SmsDataset

    ds = SmsDataset(store, DataConfig(coil_mode="virtual", synthesis=synthesis))
    ds.set_epoch(1)  # a fresh draw (epoch 0 is the stored one)
    ds[0]  # warm-up: opens the store, compiles kernels, caches labels
    times = []
    for i in range(min(n, len(ds))):
        t0 = clock()
        ds[i]
        times.append(clock() - t0)
    return times


def _trainer(store: Path, synthesis: str):
    """The dataset and the CPU-scale training step of sections 3 and 4: ``(dataset, step(batch))``."""
    import torch

    from zoo.data import DataConfig, SmsDataset
    from zoo.train.losses import LossConfig, SmsLoss
    from zoo.models import build_model
    from zoo.train import fold_coils, normalize_batch

    ds = SmsDataset(store, DataConfig(coil_mode="virtual", synthesis=synthesis))
    ds.set_epoch(1)
    torch.manual_seed(0)
    net = build_model("sms-crnn", {"n_filters": 16, "n_iterations": 5})
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    loss_fn = SmsLoss(LossConfig())

    def step(batch) -> None:
        nb, _ = normalize_batch(batch)
        x0, k3, mask3, _ = fold_coils(nb)
        loss, _ = loss_fn(net(x0, k3, mask3), nb["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return ds, step


def step_cpu_seconds(store: Path, steps: int) -> list[float]:
    """Process CPU seconds of each training step (forward, loss, backward, Adam) of the
    configuration of :func:`steps_per_second`, the items read beforehand."""
    ds, step = _trainer(store, "stored")
    batches = [{k: v[None] for k, v in ds[i % len(ds)].items()} for i in range(steps + 1)]
    out = []
    for k, batch in enumerate(batches):
        t0 = time.process_time()
        step(batch)
        if k:  # the first step warms up
            out.append(time.process_time() - t0)
    return out


def steps_per_second(store: Path, synthesis: str, steps: int, workers: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    ds, step = _trainer(store, synthesis)
    order = [i % len(ds) for i in range(steps + 1)]
    loader = DataLoader(torch.utils.data.Subset(ds, order), batch_size=1, num_workers=workers,
                        persistent_workers=False)
    t0 = None
    for k, batch in enumerate(loader):
        if k == 1:  # the first step pays for worker start-up and warm-up
            t0 = time.perf_counter()
        step(batch)
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--combos", type=int, default=8, help="SMS examples per store (random slice pairs)")
    p.add_argument("--items", type=int, default=8, help="items timed per worker measurement")
    p.add_argument("--steps", type=int, default=12, help="timed training steps per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--train-matrix", type=int, default=96)
    p.add_argument("--train-frames", type=int, default=12)
    p.add_argument("--gpu-step", type=float, default=0.5, help="assumed GPU seconds per paper-size training step")
    p.add_argument("--workdir", default=None)
    a = p.parse_args(argv)
    if not DATA.is_dir():
        sys.exit(f"needs the real data at {DATA}")

    import torch

    from synth.dataset.config import SimConfig

    torch.set_num_threads(2)
    recipe = SimConfig(sms=2, coils=8, accel=2, acs=8, mask="vd", matrix=(224, 224), frames=20,
                       frames_mode="resample", combos=a.combos, seed=0)
    cpu = recipe.replace(matrix=(a.train_matrix, a.train_matrix), frames=a.train_frames)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        tmp = Path(tmp)
        stores = {}
        for name, cfg in (("paper", recipe), ("cpu", cpu), ("cpu, every pair", cpu.replace(combos=None))):
            for kind in ("kspace", "targets"):
                out = tmp / f"{name.replace(', ', '-').replace(' ', '-')}-{kind}.zarr"
                make(out, cfg.replace(targets_only=kind == "targets"))
                stores[name, kind] = out
        n = a.combos
        print(f"data: Sunnybrook SCD0000101, {n} random SMS-2 slice pairs per store (and every pair for the "
              f"last disk line); torch threads 2")
        print("\n1. disk per example (a targets store keeps each slice once, so the ratio grows with the pairs "
              "that share slices)")
        for name in ("paper", "cpu", "cpu, every pair"):
            from synth.dataset.store import Store

            k = len(Store.open(stores[name, "kspace"]))
            full, targ = size(stores[name, "kspace"]) / k, size(stores[name, "targets"]) / k
            print(f"  {name:<15} {k:3d} examples  k-space store {full / 1e6:8.2f} MB   targets store "
                  f"{targ / 1e6:7.3f} MB   ratio {full / targ:6.1f}x")

        print("\n2. seconds per item in one process (= one DataLoader worker), medians")
        per_item = {}
        for name in ("paper", "cpu"):
            st = statistics.median(item_seconds(stores[name, "kspace"], "stored", a.items))
            fly = statistics.median(item_seconds(stores[name, "targets"], "on-the-fly", a.items))
            per_item[name] = fly
            print(f"  {name:<5} stored {st:.3f} s ({1 / st:6.1f} items/s)   on-the-fly {fly:.3f} s "
                  f"({1 / fly:6.1f} items/s)   ratio {fly / st:5.2f}")
        need = math.ceil(per_item["paper"] / a.gpu_step)
        print(f"  at the paper's size a GPU step of {a.gpu_step:g} s needs >= {need} worker(s) "
              f"({per_item['paper']:.3f} s per item / {a.gpu_step:g} s per step)")

        print(f"\n3. training steps/s, sms-crnn 16 filters x 5 iterations, {a.train_matrix}^2 x {a.train_frames} "
              f"frames, virtual coil, {a.workers} workers ({a.repeats} alternating repeats of {a.steps} steps)")
        rates = {"stored": [], "on-the-fly": []}
        for _ in range(a.repeats):
            rates["stored"].append(steps_per_second(stores["cpu", "kspace"], "stored", a.steps, a.workers))
            rates["on-the-fly"].append(steps_per_second(stores["cpu", "targets"], "on-the-fly", a.steps, a.workers))
        st, fly = statistics.median(rates["stored"]), statistics.median(rates["on-the-fly"])
        print(f"  stored {st:.3f} steps/s   on-the-fly {fly:.3f} steps/s   (runs: "
              f"{', '.join(f'{v:.3f}' for v in rates['stored'])} | {', '.join(f'{v:.3f}' for v in rates['on-the-fly'])})")
        print(f"  on-the-fly overhead: {100 * (1 - fly / st):.1f} % of the stored step rate")
        # On a shared 2-core machine the step rate itself varies by 2-4x between repeats, so the
        # difference above can drown in noise.  CPU time does not: what on-the-fly synthesis adds
        # is CPU work in the workers, and on a machine whose cores a training step keeps busy it
        # slows training by at most that work over the step's own CPU work.  Both are measured
        # here as process CPU seconds (all threads), in this process, in the same run.
        print("\n4. CPU-time accounting (process CPU seconds, all threads; robust to the machine's load), medians")
        cpu_st = statistics.median(item_seconds(stores["cpu", "kspace"], "stored", a.items, clock=time.process_time))
        cpu_fly = statistics.median(item_seconds(stores["cpu", "targets"], "on-the-fly", a.items,
                                                 clock=time.process_time))
        cpu_step = statistics.median(step_cpu_seconds(stores["cpu", "kspace"], a.steps))
        print(f"  per item: stored {cpu_st:.3f} s, on-the-fly {cpu_fly:.3f} s;  per training step (data excluded): "
              f"{cpu_step:.3f} s")
        print(f"  on-the-fly adds {100 * max(cpu_fly - cpu_st, 0) / cpu_step:.1f} % of a step's CPU work "
              f"(a whole on-the-fly item is {100 * cpu_fly / cpu_step:.1f} %)")

if __name__ == "__main__":
    main()
