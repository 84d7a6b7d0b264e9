"""Training steps/s and reconstruction seconds per example for every zoo model and baseline.

One size for all, stated in the output (default: the CPU training setting of the shipped
checkpoint: M=2, T=12, 96x96, one virtual coil, batch 1, n_filters=16, 5 iterations).  Inputs
are random tensors of the right shapes and a real SMS sampling pattern (timing does not depend
on the values).  Each number is the median of ``--repeats`` timed calls after one warm-up.

    python benchmarks/bench_zoo.py
    python benchmarks/bench_zoo.py --size 128 --frames 20 --filters 64 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from synth.masks import row_mask
from zoo.baselines import Baseline, make_baseline
from zoo.losses import SmsLoss
from zoo.models import build_model, count_parameters
from zoo.physics import fft3, kz_mask
from zoo.sense import SenseOperator


def timed(fn, device, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--sms", type=int, default=2)
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cs-iters", type=int, default=100)
    ap.add_argument("--coils", type=int, default=8, help="coils of the SENSE baselines (per-coil data)")
    ap.add_argument("--sense-iters", type=int, default=None, help="CG iterations (default zoo.sense.DEFAULTS)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    m, t, n = args.sms, args.frames, args.size
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(row_mask("uniform", t, n, 2, 8, rng))[None]  # (1, T, Ky)
    mask3 = kz_mask(m, rows).to(device)
    truth = torch.randn(1, m, t, n, n, dtype=torch.complex64, device=device)
    k3 = fft3(truth) * mask3
    from zoo.physics import zero_filled

    x0 = zero_filled(k3)
    target = truth.abs()
    loss_fn = SmsLoss().to(device)
    print(f"device {device} ({torch.get_num_threads()} CPU threads); example M={m} T={t} {n}x{n}, batch 1, "
          f"n_filters={args.filters}, median of {args.repeats}")
    print(f"{'method':<14} {'params':>9} {'train steps/s':>14} {'recon s/example':>16}")
    for name in ("sms-crnn", "independent", "conv3d"):
        model = build_model(name, {"n_filters": args.filters}).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss, _ = loss_fn(model(x0, k3, mask3), target)
            loss.backward()
            opt.step()

        def recon():
            with torch.no_grad():
                model.eval()
                model(x0, k3, mask3)
                model.train()

        s = timed(step, device, args.repeats)
        r = timed(recon, device, args.repeats)
        print(f"{name:<14} {count_parameters(model):>9,} {1 / s:>14.3f} {r:>16.3f}")
    for name, params in (("zero-filled", {}), ("cs-tfft", {"n_iter": args.cs_iters}), ("cs-ttv", {"n_iter": args.cs_iters})):
        b = Baseline(name, **params)
        r = timed(lambda: b(x0, k3, mask3), device, args.repeats)
        print(f"{name:<14} {'-':>9} {'-':>14} {r:>16.3f}")
    # SENSE: every coil's data (C coils), CG over the 3D operator; sense-espirit adds the ESPIRiT
    # calibration of each slice (sigpy, on the CPU) from a single-band reference of calib rows
    c = args.coils
    maps = torch.randn(1, c, m, 1, n, n, dtype=torch.complex64, device=device)
    maps = maps / torch.linalg.vector_norm(maps, dim=1, keepdim=True)
    k3c = SenseOperator(maps, mask3)(truth)
    params = {} if args.sense_iters is None else {"n_iter": args.sense_iters}
    oracle, espirit = make_baseline("sense-oracle", **params), make_baseline("sense-espirit", **params)
    r = timed(lambda: oracle(None, k3c, mask3, maps=maps), device, args.repeats)
    print(f"{'sense-oracle':<14} {'-':>9} {'-':>14} {r:>16.3f}   ({c} coils, {oracle.config['n_iter']} CG iterations)")
    calib = espirit.calib_width({"acs": 8}, n, n)
    ref = torch.zeros(1, c, m, n, n, dtype=torch.complex64)
    ref[..., n // 2 - calib // 2: n // 2 - calib // 2 + calib, :] = torch.randn(1, c, m, calib, n, dtype=torch.complex64)
    calib_t = torch.tensor([calib])
    r = timed(lambda: espirit(None, k3c, mask3, reference=ref.to(device), calib=calib_t), device, args.repeats)
    print(f"{'sense-espirit':<14} {'-':>9} {'-':>14} {r:>16.3f}   (+ ESPIRiT of {m} slices, {calib}x{calib} region)")


if __name__ == "__main__":
    main()
