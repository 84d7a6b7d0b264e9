"""The classical baselines on a patient kept out of everything, for each sampling choice and coil mode.

Issue 10's table: for each sampling choice (``--mask uniform|vd`` x ``--caipi row|acquired``)
it simulates SMS-2 x R-2 k-space from one real cine patient that no model of the project is
trained or tuned on (Sunnybrook SCD0000301 by default), then reports zero-filled and ``cs-ttv``
in each coil mode (virtual = 1 coil, compressed to K coils, per-coil), and SMS-SENSE with the
oracle and the ESPIRiT coil maps (always every coil), as PSNR / SSIM / NMSE (x 10^-3) means
against the store's ``target``.  Prints a Markdown table and writes the JSON of every
evaluation under ``--workdir``.

    python experiments/baselines_kept_out.py [--patient SCD0000301] [--combos 6] [--matrix 96] [--frames 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "sunnybrook-cine"

SAMPLING = [("uniform", "row"), ("uniform", "acquired"), ("vd", "row"), ("vd", "acquired")]


def make_store(out: Path, patient: Path, mask: str, caipi: str, a) -> None:
    from synth.dataset.config import SimConfig
    from synth.dataset.pipeline import dicom2kspace

    cfg = SimConfig(sms=2, coils=a.coils, accel=2, acs=8, mask=mask, caipi=caipi, csm="mixed", phase="kmeans",
                    matrix=(a.matrix, a.matrix), frames=a.frames, frames_mode="resample", combos=a.combos,
                    seed=a.seed, snr=a.snr)
    dicom2kspace([patient], out, cfg, salt=b"baselines-kept-out")


def run(store: Path, names: list[str], coil_mode: str, coils: int | None, a) -> dict:
    import torch

    from zoo.eval.evaluate import evaluate
    from zoo.eval.recon import load_method

    dev = torch.device("cpu")
    methods = [load_method(n, device=dev, coil_mode=coil_mode, coils=coils, cs_iters=a.cs_iters,
                           sense_iters=a.sense_iters) for n in names]
    return evaluate(store, methods, device=dev)


def cell(summary: dict) -> str:
    s = summary.get("excluding_failed") or summary
    return (f"{s['psnr']['mean']:.2f} / {s['ssim']['mean']:.3f} / {1e3 * s['nmse']['mean']:.1f}"
            + (f" ({summary['failed']['count']} failed)" if summary.get("failed", {}).get("count") else ""))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patient", default="SCD0000301")
    p.add_argument("--combos", type=int, default=6, help="random slice pairs (SMS examples) per sampling choice")
    p.add_argument("--matrix", type=int, default=96)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--virtual-coils", type=int, default=4, help="K of the compressed coil mode")
    p.add_argument("--snr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cs-iters", type=int, default=100)
    p.add_argument("--sense-iters", type=int, default=30)
    p.add_argument("--workdir", default="runs/baselines-kept-out")
    a = p.parse_args(argv)
    patient = DATA / a.patient
    if not patient.is_dir():
        sys.exit(f"needs the real data at {patient}")
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    modes = [("virtual", None), ("compressed", a.virtual_coils), ("per-coil", None)]
    rows = []
    t0 = time.perf_counter()
    for mask, caipi in SAMPLING:
        store = work / f"{mask}-{caipi}.zarr"
        if not store.exists():
            make_store(store, patient, mask, caipi, a)
        results = {}
        for mode, k in modes:
            out = work / f"{mask}-{caipi}-{mode}{k or ''}.json"
            if out.exists():
                results[mode] = json.loads(out.read_text())
            else:
                results[mode] = run(store, ["zero-filled", "cs-ttv"], mode, k, a)
                out.write_text(json.dumps(results[mode], default=str))
        out = work / f"{mask}-{caipi}-sense.json"
        if out.exists():
            sense = json.loads(out.read_text())
        else:
            sense = run(store, ["sense-oracle", "sense-espirit"], "per-coil", None, a)
            out.write_text(json.dumps(sense, default=str))
        by = {(m["label"], mode): m["summary"] for mode, r in results.items() for m in r["methods"]}
        sen = {m["label"]: m["summary"] for m in sense["methods"]}
        n = sense["n_examples"]
        row = [f"{mask} / {caipi}", str(n)]
        for label in ("zero-filled", "cs-ttv"):
            row += [cell(by[label, mode]) for mode, _ in modes]
        row += [cell(sen["sense-oracle"]), cell(sen["sense-espirit"])]
        rows.append(row)
    head = (["mask / CAIPI", "n"] + [f"{b} {m if m != 'compressed' else f'K={a.virtual_coils}'}"
                                     for b in ("zero-filled", "cs-ttv") for m, _ in modes]
            + ["SENSE oracle maps (ORACLE)", "SENSE ESPIRiT maps"])
    print(f"patient {a.patient} (kept out of all training), SMS 2 x R 2, {a.coils} coils, {a.matrix}^2, "
          f"{a.frames} frames, {a.combos} slice pairs; cells: PSNR dB / SSIM / NMSE x10^-3 (means over the "
          f"examples not failed); cs-ttv {a.cs_iters} iterations, SENSE {a.sense_iters} CG iterations; "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
