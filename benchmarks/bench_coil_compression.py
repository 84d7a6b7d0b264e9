"""What coil compression to K virtual coils costs and gains: time per training step and PSNR/SSIM
against the store's target on a kept-out patient, for each K, after the same short training.

Makes one small store from the Sunnybrook cine data (``smssynth generate`` with a manifest:
patients SCD0000101 and SCD0000201 train, SCD0000301 is the test split), trains ``sms-crnn``
(small filters) for the same number of steps per K in ``coil_mode="compressed"``
(:mod:`zoo.data`), and evaluates every model and the zero-filled image of the same K on the
test patient exactly as training validation does (:func:`zoo.train.evaluate_examples`: RSS over
the K coils vs ``target``).  Prints one table measured in this run, and the equivalent CLI
commands.

    python benchmarks/bench_coil_compression.py                       # K = 1, 2, 4, 8; 120 steps
    python benchmarks/bench_coil_compression.py --coils 1,8 --steps 50 --workdir /dev/shm

The store and the runs are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "sunnybrook-cine"
PATIENTS = {"SCD0000101": "train", "SCD0000201": "train", "SCD0000301": "test"}


def generate(store: Path, args) -> list[str]:
    manifest = store.parent / "patients.csv"
    with manifest.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "patient", "split"])
        for p, split in PATIENTS.items():
            w.writerow([str(args.data / p), p, split])
    cmd = ["smssynth", "generate", "--manifest", str(manifest), "--out", str(store),
           "--sms", "2", "--coils", str(args.store_coils), "--accel", str(args.accel), "--acs", "8",
           "--mask", args.mask, "--csm", "mixed", "--phase", "kmeans", "--matrix", f"{args.size}x{args.size}",
           "--frames", str(args.frames), "--frames-mode", "resample", "--combos", str(args.combos),
           "--seed", "0", "--workers", "2", "--salt", "bench-coil-compression"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return cmd


def time_steps(model, dataset, repeats: int) -> float:
    """Seconds of one optimizer step (forward, loss, backward, Adam) on the first training example,
    the fastest of ``repeats`` after a warm-up: on a CPU shared with other jobs the minimum is the
    machine's cost, the mean also measures the neighbours (data loading excluded)."""
    import torch

    from zoo import train as T
    from zoo.train.losses import SmsLoss

    batch = {k: v[None] for k, v in dataset[0].items()}
    nb, _ = T.normalize_batch(batch)
    x0, k3, mask3, c = T.fold_coils(nb)
    model = copy.deepcopy(model).train()  # the trained model itself is evaluated unchanged
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    loss_fn = SmsLoss()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = model(x0, k3, mask3)
        out = out.unflatten(0, (-1, c)) if nb["x0"].ndim == 6 else out
        loss, _ = loss_fn(out, nb["target"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coils", default="1,2,4,8", help="K values to compare (comma-separated)")
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per K (the same for all)")
    ap.add_argument("--filters", type=int, default=8, help="sms-crnn n_filters")
    ap.add_argument("--iterations", type=int, default=3, help="sms-crnn n_iterations")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", type=int, default=64, help="image matrix (size x size)")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--combos", type=int, default=8, help="slice pairs per series")
    ap.add_argument("--store-coils", type=int, default=8, help="C, the simulated receive coils")
    ap.add_argument("--accel", type=int, default=2)
    ap.add_argument("--mask", default="random")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per K (the fastest is reported)")
    ap.add_argument("--keep", action="store_true", help="keep the store and the runs")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.coils.split(",")]
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no Sunnybrook cine data (../shared/data/sunnybrook-cine); pass --data")

    import torch

    torch.set_num_threads(1)  # zoo.train module doc: 1 thread is fastest for these convolutions on CPU
    from zoo import train as T
    from zoo.data import DataConfig, SmsDataset
    from zoo.metrics import summarize

    tmp = Path(tempfile.mkdtemp(prefix="bench-coils-", dir=args.workdir))
    try:
        store = tmp / "cine.zarr"
        t0 = time.perf_counter()
        gen_cmd = generate(store, args)
        gen_s = time.perf_counter() - t0
        rows = []
        for k in ks:
            data = {"coil_mode": "compressed", "coils": k}
            over = {**data, "lr": args.lr, "epochs": 10_000, "max_steps": args.steps, "val_fraction": 0.0,
                    "batch_size": 1, "seed": 0, "device": "cpu"}
            sections = {"model": {"name": "sms-crnn",
                                  "config": {"n_filters": args.filters, "n_iterations": args.iterations}},
                        "loss": {}, "data": {}, "optimizer": {}, "train": {}}
            run = T.resolve_run_config(str(store), yaml_sections=sections, overrides=over)
            t0 = time.perf_counter()
            res = T.fit(run, tmp / f"run-k{k}", quiet=True)
            train_s = time.perf_counter() - t0
            test = SmsDataset(str(store), DataConfig(**data, split="test"))
            pos = list(range(len(test)))
            dev = torch.device("cpu")
            t0 = time.perf_counter()
            model_rows = T.evaluate_examples(res.model, test, pos, dev, 1, 0)
            eval_s = (time.perf_counter() - t0) / len(pos)
            zf_rows = T.evaluate_examples(None, test, pos, dev, 1, 0)
            col = {name: j + 1 for j, name in enumerate(T.METRICS)}
            # the loop's own epoch times: data loading and optimizer steps, not checkpoint writing
            loop_s = sum(float(r["seconds"]) for r in res.history) / res.step
            step_s = time_steps(res.model, SmsDataset(str(store), DataConfig(**data, split="train")), args.repeats)
            rows.append({
                "K": k, "step_s": step_s, "loop_s": loop_s, "recon_s": eval_s,
                **{f"{m}": summarize([r[col[m]] for r in model_rows]) for m in ("psnr", "ssim")},
                **{f"zf_{m}": summarize([r[col[m]] for r in zf_rows]) for m in ("psnr", "ssim")},
                "n_test": len(pos), "n_train": res.n_train, "steps": res.step,
            })
            print(f"K={k}: {train_s:.0f} s for {res.step} steps, PSNR {rows[-1]['psnr']['mean']:.2f} dB", flush=True)

        def pm(s, f):
            return f"{s['mean']:{f}} ± {s['sd']:{f}}"

        r0 = rows[0]
        print()
        print(f"machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread; "
              f"python {platform.python_version()}")
        print(f"store: Sunnybrook cine, {args.size}x{args.size}, {args.frames} frames, SMS 2, R {args.accel} "
              f"({args.mask}, ACS 8), C = {args.store_coils} coils, k-means phase, mixed coil maps; "
              f"{r0['n_train']} train examples (SCD0000101, SCD0000201), {r0['n_test']} test (SCD0000301); "
              f"generated in {gen_s:.0f} s")
        print(f"model: sms-crnn n_filters={args.filters}, n_iterations={args.iterations}; Adam lr {args.lr:g}, "
              f"batch 1, {args.steps} steps per K, seed 0, default loss; metrics: RSS over the K coils vs the "
              f"store's target, test patient, mean ± sd over examples")
        print(f"s/step: one optimizer step on one example, fastest of {args.repeats}; loop s/step: the training "
              f"loop's mean with data loading (both on a CPU shared with other jobs); eval s/ex: data, forward and "
              f"metrics per test example")
        print()
        header = ("K", "s/step", "x K=%d" % r0["K"], "loop s/step", "eval s/ex", "PSNR (dB)", "SSIM",
                  "zero-filled PSNR", "zero-filled SSIM")
        table = [header]
        for r in rows:
            table.append((str(r["K"]), f"{r['step_s']:.3f}", f"{r['step_s'] / r0['step_s']:.2f}",
                          f"{r['loop_s']:.3f}", f"{r['recon_s']:.3f}", pm(r["psnr"], ".2f"), pm(r["ssim"], ".4f"),
                          pm(r["zf_psnr"], ".2f"), pm(r["zf_ssim"], ".4f")))
        widths = [max(len(t[i]) for t in table) for i in range(len(header))]
        for t in table:
            print("| " + " | ".join(c.ljust(w) for c, w in zip(t, widths)) + " |")
        print()
        print("equivalent commands:")
        print("  " + " ".join(gen_cmd).replace(str(tmp), "WORK"))
        for k in ks:
            print(f"  smssynth train --data WORK/cine.zarr --model sms-crnn --virtual-coils {k} --max-steps "
                  f"{args.steps} --epochs 10000 --val-fraction 0 --lr {args.lr:g} --out WORK/run-k{k}  "
                  f"# model config n_filters={args.filters}, n_iterations={args.iterations} via --config")
            print(f"  smssynth evaluate --model WORK/run-k{k}/checkpoints/last WORK/cine.zarr --split test "
                  f"--baselines zero-filled")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
