r"""Tables, claims and figures of the Table 1 experiment (:mod:`zoo.eval.experiment`) from its evaluations.

Reads ``OUT/eval/{cine,fpp,fpp-real}.json`` (``smssynth evaluate --json``) and writes

``table1.md``
    Per test set the paper's table: NMSE (x 10^-3), PSNR (dB), SSIM as mean ± sd over the
    examples that did not fail (NMSE above the evaluation's threshold, the paper's convention),
    the failure rate, and the time per case (the model's forward pass, device stated), then the
    claims with their paired t-tests.
``table1.json``
    The same numbers, machine-readable, with every paired test.
``figures/SET-METHOD.png``
    For the first test example: one frame of each slice, the error map ``|recon - target|`` with
    its colour bar, and a y-t temporal profile through the image centre of the first slice.

Paired tests are ``scipy.stats.ttest_rel`` on per-example values of the same examples (two-sided;
a claim "A > B" holds when A's mean is higher and p < 0.05).  SSIM is the evaluation's kind.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.05
MIN_GAIN_DB = 6.0


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _names(exp, set_name: str) -> dict[str, str]:
    """evaluation label -> row name."""
    store, models = exp.test_sets()[set_name]
    out = {str(ckpt): name for name, ckpt in models.items()}
    return out


def _per_example(method: dict, metric: str) -> dict[int, float]:
    return {int(r["index"]): r[metric] for r in method["per_example"]}


def paired(a: dict, b: dict, metric: str = "psnr") -> dict[str, Any]:
    """Paired two-sided t-test of ``a - b`` on the examples both have (per-example ``metric``)."""
    from scipy import stats

    pa, pb = _per_example(a, metric), _per_example(b, metric)
    idx = sorted(set(pa) & set(pb))
    x = np.array([pa[i] for i in idx], float)
    y = np.array([pb[i] for i in idx], float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = x - y
    res: dict[str, Any] = {"metric": metric, "n": int(d.size), "mean_diff": float(d.mean()) if d.size else None}
    if d.size >= 2 and np.ptp(d) > 0:
        t = stats.ttest_rel(x, y)
        res.update(t=float(t.statistic), p=float(t.pvalue))
    else:
        res.update(t=None, p=None)
    return res


def _fmt(s: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    if not s or s.get("mean") is None:
        return "–"
    m, sd = s["mean"] * scale, (s.get("sd") or 0.0) * scale
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _p(p: float | None) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def claims_for(set_name: str, methods: dict[str, dict]) -> list[dict[str, Any]]:
    """The paper's claims on one test set, each with its paired test and whether it holds."""
    out = []

    def better(a, b, what, margin=0.0):
        if a not in methods or b not in methods:
            return
        t = paired(methods[a], methods[b], "psnr")
        holds = (t["mean_diff"] is not None and t["mean_diff"] > margin and t["p"] is not None and t["p"] < ALPHA)
        out.append({"claim": what, "a": a, "b": b, **t, "margin_db": margin, "holds": bool(holds)})

    if set_name == "cine":
        better("sms-crnn", "conv3d", "sms-crnn > conv3d")
        better("conv3d", "independent", "conv3d > independent")
        better("sms-crnn", "independent", "sms-crnn > independent")
        better("sms-crnn", "zero-filled", f"sms-crnn >= zero-filled + {MIN_GAIN_DB:g} dB", MIN_GAIN_DB)
        for cs in ("cs-tfft", "cs-ttv"):
            better("sms-crnn", cs, f"sms-crnn > {cs}")
    else:
        for abl in ("no-finetune", "no-pretrain", "grating-phase"):
            better("sms-crnn-fpp", abl, f"fine-tuned > {abl}")
        better("sms-crnn-fpp", "zero-filled", "fine-tuned > zero-filled")
    return out


TITLES = {
    "cine": "Cine (held-out patient)",
    "fpp": "Perfusion, synthetic test patients (phantom)",
    "fpp-real": "Perfusion, real GE series (one slice in several synthetic draws, same total acceleration; the "
                "tests are over draws, not patients)",
}


def write_report(exp) -> None:
    from zoo.eval.experiment import FPP_RUNS

    report: dict[str, Any] = {"format": "smssynth.table1", "version": "1.0", "scale": exp.scale.name, "sets": {}}
    lines = [f"# Table 1 ({exp.scale.name} scale)", "",
             "NMSE, PSNR, SSIM: mean ± sd over the test examples that did not fail (NMSE > the threshold, "
             "the paper's convention); failures: rate; time: the forward pass per case. Claims: paired "
             f"two-sided t-tests on per-example PSNR, holding when the mean difference is positive "
             f"(above the margin) and p < {ALPHA}.", ""]
    for set_name in exp.test_sets():
        ev = _load(exp.path("eval", f"{set_name}.json"))
        if ev is None:
            continue
        names = _names(exp, set_name)
        methods: dict[str, dict] = {}
        for m in ev["methods"]:
            methods[names.get(m["label"], m["label"])] = m
        rows = []
        lines += [f"## {TITLES.get(set_name, set_name)}", "",
                  f"{ev['n_examples']} examples of `{Path(ev['store']).name}`; device: {ev.get('device')}; "
                  f"SSIM: {ev['metrics'].get('ssim_kind')}.", "",
                  "| method | NMSE (×10⁻³) | PSNR (dB) | SSIM | failures | time per case (s) |",
                  "|---|---|---|---|---|---|"]
        for name, m in methods.items():
            s = m["summary"]
            ex = s.get("excluding_failed", s)
            fail = s.get("failed", {})
            label = name + (" (ORACLE)" if m.get("oracle") else "")
            if set_name != "cine" and name in FPP_RUNS:
                label += f" — {FPP_RUNS[name]}"
            row = {"method": name, "nmse": ex.get("nmse"), "psnr": ex.get("psnr"), "ssim": ex.get("ssim"),
                   "seconds": ex.get("seconds"), "failed": fail.get("count"), "failure_rate": fail.get("rate"),
                   "oracle": bool(m.get("oracle")), "checkpoint": m["label"] if name != m["label"] else None}
            rows.append(row)
            rate = fail.get("rate")
            lines.append(f"| {label} | {_fmt(ex.get('nmse'), 1e3)} | {_fmt(ex.get('psnr'))} | "
                         f"{_fmt(ex.get('ssim'), digits=3)} | {'–' if rate is None else f'{100 * rate:.0f} %'} | "
                         f"{_fmt(ex.get('seconds'), digits=3)} |")
        claims = claims_for(set_name, methods)
        if claims:
            lines += ["", "| claim | mean ΔPSNR (dB) | n | p | holds |", "|---|---|---|---|---|"]
            for c in claims:
                md = "–" if c["mean_diff"] is None else f"{c['mean_diff']:+.2f}"
                lines.append(f"| {c['claim']} | {md} | {c['n']} | {_p(c['p'])} | {'yes' if c['holds'] else 'no'} |")
        lines.append("")
        figs = []
        if exp.scale.figures:
            figs = write_figures(exp, set_name, ev, names)
            if figs:
                lines += [f"Figures: {', '.join(f'`{Path(f).relative_to(exp.out)}`' for f in figs)}", ""]
        report["sets"][set_name] = {"store": ev["store"], "n_examples": ev["n_examples"], "rows": rows,
                                    "claims": claims, "figures": [str(Path(f).relative_to(exp.out)) for f in figs]}
    exp.path("table1.md").write_text("\n".join(lines))
    exp.path("table1.json").write_text(json.dumps(report, indent=2, allow_nan=False, default=_nan_none))


def _nan_none(v):
    return None


FIGURE_METHODS = ("zero-filled", "cs-ttv")


def write_figures(exp, set_name: str, ev: dict, names: dict[str, str]) -> list[str]:
    """One PNG per method (the models and the zero-filled/CS baselines evaluated) for the first test example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from zoo.eval.recon import load_method, open_examples, reconstruct_item

    store = ev["store"]
    index = int(ev["indices"][0])
    labels = [m["label"] for m in ev["methods"] if m["label"] in names or m["label"] in FIGURE_METHODS]
    out_dir = exp.path("figures")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cache: dict[str, Any] = {}
    for label in labels:
        method = load_method(label, device="cpu", coil_mode=exp.scale.coil_mode, cs_iters=exp.scale.cs_iters)
        key = (method.coil_mode, method.coils)
        if key not in cache:
            cache[key] = open_examples(store, method.coil_mode, examples=[index], coils=method.coils)
        ds, positions = cache[key]
        with torch.no_grad():
            rec = reconstruct_item(method, ds[positions[0]], torch.device("cpu"))
        mag = rec.magnitude.numpy()  # (M, T, Y, X)
        ref = rec.target.numpy()
        m_slices, t_frames = mag.shape[0], mag.shape[1]
        t = t_frames // 2
        vmax = float(ref.max()) or 1.0
        err = np.abs(mag - ref)
        fig, axes = plt.subplots(3, m_slices, figsize=(max(3.2 * m_slices, 5.0), 8.6), squeeze=False)
        for i in range(m_slices):
            axes[0, i].imshow(mag[i, t], cmap="gray", vmin=0, vmax=vmax)
            axes[0, i].set_title(f"slice {i}, frame {t}", fontsize=9)
            im = axes[1, i].imshow(err[i, t], cmap="inferno", vmin=0, vmax=0.2 * vmax)
            axes[1, i].set_title("|error|", fontsize=9)
            fig.colorbar(im, ax=axes[1, i], fraction=0.046, pad=0.04)
            x = mag.shape[-1] // 2
            axes[2, i].imshow(mag[i, :, :, x].T, cmap="gray", vmin=0, vmax=vmax, aspect="auto")
            axes[2, i].set_title(f"y-t profile at x={x}", fontsize=9)
            axes[2, i].set_xlabel("frame")
        for a in axes.flat:
            a.set_xticks([]) if a not in axes[2] else None
            a.set_yticks([])
        name = names.get(label, label)
        mt = rec.metrics
        fig.suptitle(f"{set_name}: {name} — example {index}: PSNR {mt['psnr']:.2f} dB, SSIM {mt['ssim']:.3f}",
                     fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{set_name}-{name}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(str(path))
    return written
