"""Training steps/s and reconstruction seconds per example for every zoo model and baseline.

One size for all, stated in the output (default: the CPU training setting of the shipped
checkpoint: M=2, T=12, 96x96, one virtual coil, batch 1, n_filters=16, 5 iterations).  Inputs
are random tensors of the right shapes and a real SMS sampling pattern (timing does not depend
on the values).  Each number is the median of ``--repeats`` timed calls after one warm-up.

Then, in the same run:

* **sms-crnn vs CRNN-MRI as published** (``benchmarks/crnn_mri_reference.py``, a layer-for-layer
  port of Qin et al.'s ``CRNN_MRI``, checked equal to ``sms-crnn`` without its 3D conv by
  ``tests/zoo/test_crnn_reference.py`` and again here on one input) at the public code's
  configuration: 64 filters, 5 iterations, 8 frames, 64x64; ``sms-crnn`` reconstructs the two
  slices of one SMS-2 example, CRNN-MRI the same two slices as its batch of two single-slice
  problems.  A training step is forward + MSE + backward + Adam; inference is a no-grad forward.
  The contenders alternate within each of ``--ref-repeats`` rounds; it prints the medians, the
  ratio of the medians and the range of the per-round ratios.
* ``conv3d`` with its ``Conv3d`` block run as 2D convolutions over the slices stacked along
  channels (what the model does) against the same block run as ``Conv3d`` (what it did before):
  a training step and inference at the Table 1 ``cpu`` scale (16 filters, 5 iterations, 4 coils
  as channels, 2-layer 2D+time convolution, 10 frames, 96x24 readout crop, SMS 2), alternating,
  after a check that the two give the same output.
* ``--precision bfloat16`` against float32 (``bf16`` section): a training step (forward, the
  training loss, backward, Adam) of each Table 1 network at the ``cpu`` scale with 16 and 32
  filters, the four alternating, each ratio against float32 at 16 filters, after the relative
  difference of the two precisions' outputs on one input.  The ratio depends on the CPU:
  oneDNN runs bfloat16 convolutions on AMX or AVX512-BF16 and emulates them (slower than
  float32) elsewhere; the output names the CPU's flags.
* the training-step time of ``sms-crnn`` at the project's CPU training size (16 filters, 5
  iterations, 12 frames, 96x48 readout crop, batch 1, virtual coil, the training loss), with
  CRNN-MRI's on the same slices for scale.

    python benchmarks/bench_zoo.py
    python benchmarks/bench_zoo.py --size 128 --frames 20 --filters 64 --device cuda
    python benchmarks/bench_zoo.py --sections crnn-mri --ref-repeats 7
    python benchmarks/bench_zoo.py --sections conv3d-stacked --ref-repeats 7
    python benchmarks/bench_zoo.py --sections bf16 --ref-repeats 7 [--bf16-filters 16,32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from synth.physics.masks import row_mask
from zoo.eval.baselines import Baseline, make_baseline
from zoo.train.losses import SmsLoss
from zoo.train.params import cpu_bf16_flags, set_compute_dtype
from zoo.models import build_model, count_parameters
from zoo.models.conv3d import Conv3dCrnn
from zoo.models.crnn import channels_to_coils, coils_to_channels
from zoo.physics import fft3, kz_mask, zero_filled
from zoo.eval.sense import SenseOperator

import crnn_mri_reference as crnn_mri  # benchmarks/, beside this script


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


def alternating(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every contender, one call each per round in turn, after a warm-up."""
    for fn in contenders.values():
        fn()
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _problem(m, t, ny, nx, device, seed=0):
    """(truth, x0, k3, mask3) of one SMS-M example with a uniform R=2 + 8 ACS mask (row kz), and
    the reference's inputs for the same M slices as a batch of single-slice problems."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.from_numpy(row_mask("uniform", t, ny, 2, 8, np.random.default_rng(seed)))[None]  # (1, T, Ky)
    truth = torch.randn(1, m, t, ny, nx, generator=g, dtype=torch.complex64).to(device)
    mask3 = kz_mask(m, rows).to(device)
    k3 = fft3(truth) * mask3
    # the same slices, each its own 2D+t problem (M = 1), in the published layout and FFT convention
    t1 = truth.flatten(0, 1)[:, None]
    m1 = kz_mask(1, rows.expand(m, t, ny)).to(device)
    k1 = fft3(t1) * m1
    ref_in = crnn_mri.inputs_from_zoo(zero_filled(k1), k1, m1)
    ref_target = crnn_mri.inputs_from_zoo(t1, k1, m1)[0]
    return truth, zero_filled(k3), k3, mask3, ref_in, ref_target


def _trainer(model, inputs, loss):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss(model(*inputs)).backward()
        opt.step()

    def infer():
        with torch.no_grad():
            model(*inputs)

    return step, infer


def _check_equal(n_filters: int, n_iterations: int, device) -> float:
    """Max relative difference of CRNN-MRI and sms-crnn (no 3D conv), same weights, one M=1 input."""
    torch.manual_seed(1)
    model = build_model("sms-crnn", {"n_filters": n_filters, "n_iterations": n_iterations, "n_conv3d_layers": 0})
    ref = crnn_mri.copy_sms_crnn_weights(crnn_mri.CRNN_MRI(nf=n_filters, nc=n_iterations), model).to(device)
    _, x0, k3, mask3, _, _ = _problem(1, 4, 32, 24, device, seed=3)
    with torch.no_grad():
        want = model.to(device)(x0, k3, mask3)
        got = crnn_mri.output_to_zoo(ref(*crnn_mri.inputs_from_zoo(x0, k3, mask3)))
    return ((got - want).abs().max() / want.abs().max()).item()


def _ratio_line(label: str, times: dict, ref: str = "crnn-mri") -> str:
    med = {k: statistics.median(v) for k, v in times.items()}
    parts = [f"{k} {med[k]:.2f} s" for k in times]
    for k in times:
        if k != ref:
            per_round = [a / b for a, b in zip(times[ref], times[k])]
            parts.append(f"{ref}/{k} = {med[ref] / med[k]:.2f}x (rounds {min(per_round):.2f}-{max(per_round):.2f})")
    return f"  {label:<11} " + "; ".join(parts)


def compare_with_crnn_mri(args, device) -> None:
    m, t, n, nf, nc = 2, args.ref_frames, args.ref_size, args.ref_filters, args.ref_iterations
    print(f"\nsms-crnn vs CRNN-MRI as published (benchmarks/crnn_mri_reference.py): {nf} filters, {nc} iterations, "
          f"{t} frames, {n}x{n}, SMS-{m} example vs its batch of {m} slices; float32, {torch.get_num_threads()} threads; "
          f"medians of {args.ref_repeats} alternating rounds")
    print(f"  check: CRNN-MRI == sms-crnn without 3D conv (same weights, one M=1 input): max rel diff "
          f"{_check_equal(min(nf, 16), 2, device):.1e}")
    truth, x0, k3, mask3, ref_in, ref_target = _problem(m, t, n, n, device)
    torch.manual_seed(0)
    contenders = {
        "crnn-mri": (crnn_mri.CRNN_MRI(nf=nf, nc=nc).to(device), ref_in, lambda o: (o - ref_target).pow(2).mean()),
        "sms-crnn": (build_model("sms-crnn", {"n_filters": nf, "n_iterations": nc}).to(device), (x0, k3, mask3),
                     lambda o: (o - truth).abs().pow(2).mean()),
    }
    if args.no_conv3d:
        contenders["sms-crnn(no 3D conv)"] = (
            build_model("sms-crnn", {"n_filters": nf, "n_iterations": nc, "n_conv3d_layers": 0}).to(device),
            (x0, k3, mask3), lambda o: (o - truth).abs().pow(2).mean())
    fns = {k: _trainer(*v) for k, v in contenders.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed_fn(f):
        return lambda: (f(), sync())

    train = alternating({k: timed_fn(f[0]) for k, f in fns.items()}, args.ref_repeats)
    infer = alternating({k: timed_fn(f[1]) for k, f in fns.items()}, args.ref_repeats)
    print(_ratio_line("train step", train))
    print(_ratio_line("inference", infer))


def cpu_scale_step(args, device) -> None:
    m, t, ny, nx = 2, 12, 96, 48
    print(f"\nCPU training size: sms-crnn 16 filters, 5 iterations, M={m} T={t} {ny}x{nx} (readout crop), batch 1, "
          f"virtual coil, training loss (SmsLoss) + Adam; CRNN-MRI on the same {m} slices with MSE for scale; "
          f"medians of {args.ref_repeats} alternating rounds")
    truth, x0, k3, mask3, ref_in, ref_target = _problem(m, t, ny, nx, device, seed=1)
    loss_fn = SmsLoss().to(device)
    target = truth.abs()
    torch.manual_seed(0)
    fns = {
        "crnn-mri": _trainer(crnn_mri.CRNN_MRI(nf=16, nc=5).to(device), ref_in, lambda o: (o - ref_target).pow(2).mean()),
        "sms-crnn": _trainer(build_model("sms-crnn", {"n_filters": 16, "n_iterations": 5}).to(device), (x0, k3, mask3),
                             lambda o: loss_fn(o, target)[0]),
    }
    train = alternating({k: f[0] for k, f in fns.items()}, args.ref_repeats)
    print(_ratio_line("train step", train))
    print(f"  sms-crnn: {statistics.median(train['sms-crnn']):.3f} s/step = "
          f"{3600 / statistics.median(train['sms-crnn']):.0f} steps/hour")


class Conv3dAs3D(Conv3dCrnn):
    """``conv3d`` as it ran before: its CRNN block as ``Conv3d`` over (M, Y, X) (same parameters)."""

    def forward(self, x0, k3, mask3):
        x, state, k = x0, None, self.config.coil_channels
        for _ in range(self.config.n_iterations):
            h = coils_to_channels(x.transpose(1, 2), k, channel_dim=2)  # (B, T, 2K, M, Y, X)
            h, state = self.crnn(h, state)
            if self.st_conv is not None:
                h = self._per_slice(h)
            x = self.dc(channels_to_coils(h, k, channel_dim=2).transpose(1, 2), k3, mask3)
        return x


def _table1_problem(m, t, ny, nx, coils, device):
    """(truth, x0, k3, mask3) of one example at the Table 1 ``cpu`` scale: ``coils`` random coil
    images (batch axis) of M slices, random lines (half of them) shared by the coils."""
    g = torch.Generator().manual_seed(2)
    rows = torch.rand(1, t, ny, generator=g) < 0.5
    truth = torch.randn(coils, m, t, ny, nx, generator=g, dtype=torch.complex64).to(device)
    mask3 = kz_mask(m, rows.expand(coils, t, ny)).to(device)
    k3 = fft3(truth) * mask3
    return truth, zero_filled(k3), k3, mask3


def conv3d_stacked(args, device) -> None:
    m, t, ny, nx, coils = 2, 10, 96, 24, 4
    cfg = {"n_filters": 16, "n_iterations": 5, "coil_channels": coils, "n_conv3d_layers": 2}
    print(f"\nconv3d at the Table 1 cpu scale ({cfg}, M={m} T={t} {ny}x{nx}, {coils} coil images): its "
          f"Conv3d block run as Conv2d over stacked slices vs as Conv3d; float32, {torch.get_num_threads()} "
          f"threads; medians of {args.ref_repeats} alternating rounds")
    truth, x0, k3, mask3 = _table1_problem(m, t, ny, nx, coils, device)
    torch.manual_seed(0)
    stacked = build_model("conv3d", cfg).to(device)
    as3d = Conv3dAs3D(stacked.config).to(device)
    as3d.load_state_dict(stacked.state_dict())
    with torch.no_grad():
        a, b = stacked(x0, k3, mask3), as3d(x0, k3, mask3)
    print(f"  check: same output, max rel diff {((a - b).abs().max() / b.abs().max()).item():.1e}")
    loss = lambda o: (o - truth).abs().pow(2).mean()  # noqa: E731
    fns = {"conv3d(as Conv3d)": _trainer(as3d, (x0, k3, mask3), loss),
           "conv3d(stacked)": _trainer(stacked, (x0, k3, mask3), loss)}
    train = alternating({k: f[0] for k, f in fns.items()}, args.ref_repeats)
    infer = alternating({k: f[1] for k, f in fns.items()}, args.ref_repeats)
    print(_ratio_line("train step", train, ref="conv3d(as Conv3d)"))
    print(_ratio_line("inference", infer, ref="conv3d(as Conv3d)"))


def _cpu_bf16() -> str:
    """What the CPU offers oneDNN's bfloat16 convolutions (from /proc/cpuinfo where there is one)."""
    have = cpu_bf16_flags()
    if have is None:
        return "unknown CPU flags"
    return ", ".join(have) if have else "no AMX / AVX512-BF16 (bfloat16 emulated)"


def bf16_step(args, device) -> None:
    m, t, ny, nx, coils = 2, 10, 96, 24, 4
    widths = [int(w) for w in args.bf16_filters.split(",")]
    base = {"n_iterations": 5, "coil_channels": coils, "n_conv3d_layers": 2}
    print(f"\n--precision bfloat16 vs float32 at the Table 1 cpu scale ({base}, n_filters {widths}, M={m} T={t} "
          f"{ny}x{nx}, {coils} coil images, training loss + Adam); {device}, {torch.get_num_threads()} threads, "
          f"{_cpu_bf16()}; medians of {args.ref_repeats} rounds alternating the contenders of a model")
    truth, x0, k3, mask3 = _table1_problem(m, t, ny, nx, coils, device)
    target = truth.abs().pow(2).sum(0, keepdim=True).sqrt()  # the image: RSS over the coils, (1, M, T, Y, X)
    loss_fn = SmsLoss().to(device)

    def loss(o):  # (K, M, T, Y, X) coil images -> one example's (1, K, ...), as the training loop does
        return loss_fn(o.unflatten(0, (1, coils)), target)[0]

    for name in ("sms-crnn", "conv3d", "independent"):
        fns, diffs = {}, []
        for nf in widths:
            torch.manual_seed(0)
            fp32 = build_model(name, {**base, "n_filters": nf}).to(device)
            bf16 = build_model(name, {**base, "n_filters": nf}).to(device)
            bf16.load_state_dict(fp32.state_dict())
            set_compute_dtype(bf16, torch.bfloat16)
            with torch.no_grad():
                a, b = fp32(x0, k3, mask3), bf16(x0, k3, mask3)
            diffs.append(f"{nf} filters {(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(a)).item():.1e}")
            fns[f"float32({nf})"] = _trainer(fp32, (x0, k3, mask3), loss)[0]
            fns[f"bfloat16({nf})"] = _trainer(bf16, (x0, k3, mask3), loss)[0]
        train = alternating(fns, args.ref_repeats)
        print(f"  {name}: bfloat16 outputs differ from float32 by {', '.join(diffs)} (relative L2)")
        print(_ratio_line("train step", train, ref=f"float32({widths[0]})"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--sms", type=int, default=2)
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cs-iters", type=int, default=100)
    ap.add_argument("--coils", type=int, default=8, help="coils of the SENSE baselines (per-coil data)")
    ap.add_argument("--sense-iters", type=int, default=None, help="CG iterations (default zoo.eval.sense.DEFAULTS)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sections", default="table,crnn-mri,cpu-scale,conv3d-stacked,bf16",
                    help="comma-separated: table (every model and baseline), crnn-mri, cpu-scale, conv3d-stacked, bf16")
    ap.add_argument("--ref-filters", type=int, default=64, help="filters of the CRNN-MRI comparison (public code: 64)")
    ap.add_argument("--ref-iterations", type=int, default=5)
    ap.add_argument("--ref-frames", type=int, default=8)
    ap.add_argument("--ref-size", type=int, default=64)
    ap.add_argument("--ref-repeats", type=int, default=5, help="alternating rounds of the CRNN-MRI and CPU-size timings")
    ap.add_argument("--no-conv3d", action="store_true", help="also time sms-crnn without its 3D conv")
    ap.add_argument("--bf16-filters", default="16,32", help="widths of the bf16 section (the first is the reference)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sections = set(args.sections.split(","))
    known = ("table", "crnn-mri", "cpu-scale", "conv3d-stacked", "bf16")
    unknown = sections - set(known)
    if unknown:
        ap.error(f"--sections: unknown {sorted(unknown)}; known: {', '.join(known)}")
    if "table" in sections:
        table(args, device)
    if "crnn-mri" in sections:
        compare_with_crnn_mri(args, device)
    if "cpu-scale" in sections:
        cpu_scale_step(args, device)
    if "conv3d-stacked" in sections:
        conv3d_stacked(args, device)
    if "bf16" in sections:
        bf16_step(args, device)


def table(args, device) -> None:
    torch.manual_seed(0)
    m, t, n = args.sms, args.frames, args.size
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(row_mask("uniform", t, n, 2, 8, rng))[None]  # (1, T, Ky)
    mask3 = kz_mask(m, rows).to(device)
    truth = torch.randn(1, m, t, n, n, dtype=torch.complex64, device=device)
    k3 = fft3(truth) * mask3
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
