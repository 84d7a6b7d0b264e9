r"""Evaluate reconstruction methods on a store: the metrics table and paired tests of the paper.

For every method (trained models, registered weights, and the classical baselines of
:mod:`zoo.eval.baselines`) and every chosen example, :func:`zoo.eval.recon.reconstruct_item` computes
NMSE, PSNR and SSIM (:mod:`zoo.metrics`) exactly as training validation does, and times the
model's forward pass.  SSIM is the Gaussian one of training validation by default, or fastMRI's
(``ssim_kind="fastmri"``); the report says which.  Per method: the failed examples (plain NMSE
above ``fail_nmse``, default 1 = 1000 x 10^-3, :data:`zoo.metrics.FAIL_NMSE`) are counted and
named, and mean ± sd of each metric and of the time are given both without them (the paper's
way) and over all examples (:func:`zoo.metrics.summarize_examples`).  NMSE is the plain ratio
in the JSON and ``x 10^-3`` in the table (the paper's Table 1).  Between methods: paired t-tests
(``scipy.stats.ttest_rel``) on the per-example PSNR, SSIM and NMSE over all examples, for every
pair of the methods the user named and each of those against ``zero-filled`` (when evaluated).

The SENSE baselines (:mod:`zoo.eval.sense`) read the per-coil items and the store's coil maps (or
the single-band reference) themselves; ``sense-oracle`` uses the simulation's true maps and is
marked as an oracle in the table (``oracle: true`` in the JSON).

Coil modes: a checkpoint runs in the coil mode (and K) it was trained in; the baselines in the
one chosen (default ``virtual``).  Every method's magnitude (RSS over its coils) is compared with
the same reference, the store's ``target`` (:mod:`zoo.data`, "The truth is the image"), so
metrics and paired tests compare methods of different coil modes fairly.

The result (:func:`evaluate`) is one JSON-able dict, ``format`` ``smssynth.evaluation`` 1.0::

    store, split, indices, n_examples, device, timed, failure_threshold_nmse (plain NMSE)
    metrics: {nmse_unit, nmse_table_scale, psnr_unit, ssim_kind, ssim_description, failure_rule, ...}
    methods: [{label, kind, name, architecture, config, sha256, source, coil_mode, coils, normalization,
               [oracle,]
               summary: {nmse|psnr|ssim|seconds: {mean, sd, n} over all examples,
                         excluding_failed: {nmse|psnr|ssim|seconds: {mean, sd, n}},
                         failed: {count, n, rate, indices, threshold_nmse}, failure_rate},
               per_example: [{index, nmse (plain), psnr, ssim, seconds}]}]
    tests:   [{a, b, metric, n, mean_diff (a - b), sd_diff, t, p}]
    warnings: [str]

Non-finite numbers (a perfect PSNR, a t-test of identical values) become ``null`` in
:func:`to_json`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.data import coil_label
from synth.dataset.store import Store
from zoo.metrics import FAIL_NMSE, NMSE_TABLE_SCALE, SSIM_LABEL, metric_conventions, summarize_examples
from zoo.eval.recon import (METRICS, TIMED, Method, check_coil_mode, device_description, needs_store, open_examples,
                       reconstruct_item)

__all__ = ["FORMAT", "FORMAT_VERSION", "FAILURE_THRESHOLD", "evaluate", "format_table", "paired_tests",
           "test_pairs", "to_json"]

FORMAT = "smssynth.evaluation"
FORMAT_VERSION = "1.0"
FAILURE_THRESHOLD = FAIL_NMSE  # plain NMSE (1 = 1000 x 10^-3)
ZERO_FILLED = "zero-filled"


def test_pairs(named: list[str], evaluated: list[str]) -> list[tuple[str, str]]:
    """The pairs to test: all pairs of the ``named`` methods (in order), then each named method
    against ``zero-filled`` when it was evaluated; no pair twice, no method against itself."""
    pairs = list(combinations(named, 2))
    if ZERO_FILLED in evaluated:
        pairs += [(a, ZERO_FILLED) for a in named if a != ZERO_FILLED]
    seen, out = set(), []
    for a, b in pairs:
        if a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            out.append((a, b))
    return out


test_pairs.__test__ = False  # a library function, not a pytest test


def paired_tests(per_example: dict[str, list[dict]], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Paired t-tests (``scipy.stats.ttest_rel``) of every metric for each pair ``(a, b)``.

    ``per_example[label]`` is a list of ``{index, nmse, psnr, ssim, ...}`` in the same example
    order for every method.  Returns one row per pair and metric: ``mean_diff`` and ``sd_diff``
    of ``a - b`` and the two-sided ``t``, ``p`` (NaN with fewer than 2 examples or zero variance).
    """
    from scipy.stats import ttest_rel

    rows = []
    for a, b in pairs:
        ia = [e["index"] for e in per_example[a]]
        if ia != [e["index"] for e in per_example[b]]:
            raise ValueError(f"paired_tests: {a!r} and {b!r} were evaluated on different examples")
        for metric in METRICS:
            x = np.asarray([e[metric] for e in per_example[a]], np.float64)
            y = np.asarray([e[metric] for e in per_example[b]], np.float64)
            d = x - y
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # n < 2 or zero variance: scipy warns, the result is NaN
                res = ttest_rel(x, y) if len(d) >= 2 else None
            rows.append({
                "a": a, "b": b, "metric": metric, "n": int(len(d)),
                "mean_diff": float(d.mean()) if len(d) else math.nan,
                "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else math.nan,
                "t": float(res.statistic) if res is not None else math.nan,
                "p": float(res.pvalue) if res is not None else math.nan,
            })
    return rows


def evaluate(
    store_path: str | Path,
    methods: list[Method],
    *,
    named: list[str] | None = None,
    examples: list[int] | None = None,
    split: str | None = None,
    device: torch.device,
    progress: Callable[[str, int, int], None] | None = None,
    ssim_kind: str = "gaussian",
    fail_nmse: float = FAILURE_THRESHOLD,
) -> dict[str, Any]:
    """Evaluate ``methods`` on the chosen examples of ``store_path`` (module doc).

    Parameters
    ----------
    methods : loaded methods (:func:`zoo.eval.recon.load_method`), unique labels, on ``device``.
    named : labels of the methods the user named (the t-test pairs, :func:`test_pairs`);
        default all non-baseline methods.
    examples, split : the example selection (:func:`zoo.eval.recon.open_examples`).
    progress : called as ``progress(label, done, total)`` after each reconstruction.
    ssim_kind : ``gaussian`` (training validation's) or ``fastmri`` (:data:`zoo.metrics.SSIM_KINDS`).
    fail_nmse : failure threshold on the plain NMSE (> 0; default 1 = 1000 x 10^-3).

    Each example is read once per coil mode and reconstructed by every method of that mode.
    """
    labels = [mth.label for mth in methods]
    if not methods:
        raise ValueError("evaluate: no method given")
    if len(set(labels)) != len(labels):
        raise ValueError(f"evaluate: methods given twice: {sorted({x for x in labels if labels.count(x) > 1})}")
    named = [mth.label for mth in methods if mth.kind != "baseline"] if named is None else list(named)
    conventions = metric_conventions(ssim_kind, fail_nmse)  # ValueError for a bad kind or threshold

    per_example: dict[str, list[dict]] = {label: [] for label in labels}
    modes = list(dict.fromkeys((mth.coil_mode, mth.coils) for mth in methods))
    opened = {mode: open_examples(store_path, mode[0], examples=examples, split=split, coils=mode[1])
              for mode in modes}
    selections = {mode: [ds.indices[p] for p in positions] for mode, (ds, positions) in opened.items()}
    indices = selections[modes[0]]
    if any(sel != indices for sel in selections.values()):  # same store and selection: cannot happen
        raise RuntimeError(f"coil modes selected different examples: {selections}")
    total, done = len(methods) * len(indices), 0
    store = Store.open(store_path) if any(needs_store(mth) for mth in methods) else None
    for mode, (ds, positions) in opened.items():
        group = [mth for mth in methods if (mth.coil_mode, mth.coils) == mode]
        for j, p in enumerate(positions):
            item = ds[p]  # read once, reconstructed by every method of this coil mode
            for mth in group:
                check_coil_mode(mth, ds)
                rec = reconstruct_item(mth, item, device, warmup=device.type == "cuda" and j == 0, store=store,
                                       ssim_kind=ssim_kind)
                per_example[mth.label].append({"index": rec.index, **rec.metrics, "seconds": rec.seconds})
                done += 1
                if progress is not None:
                    progress(mth.label, done, total)

    out_methods = []
    for mth in methods:
        rows = per_example[mth.label]
        summary = summarize_examples({k: [r[k] for r in rows] for k in (*METRICS, "seconds")}, fail_nmse,
                                     [r["index"] for r in rows])
        out_methods.append({**mth.describe(), "summary": summary, "per_example": rows})

    warns: list[str] = []
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "store": str(store_path),
        "split": split,
        "n_examples": len(indices),
        "indices": indices,
        "device": device_description(device),
        "timed": TIMED,
        "failure_threshold_nmse": conventions["failure_threshold_nmse"],
        "metrics": conventions,
        "methods": out_methods,
        "tests": paired_tests(per_example, test_pairs(named, labels)),
        "warnings": warns,
    }


# --- output -----------------------------------------------------------------------------------


def _clean(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(result: dict[str, Any]) -> str:
    """The result as one strict JSON document (non-finite numbers become null)."""
    return json.dumps(_clean(result), indent=2, allow_nan=False)


def _pm(s: dict, fmt: str, scale: float = 1.0) -> str:
    if s["n"] == 0 or not math.isfinite(s["mean"]):
        return "n/a" if s["n"] == 0 else f"{s['mean']}"
    return f"{s['mean'] / scale:{fmt}} ± {s['sd'] / scale:{fmt}}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "<1e-4" if p < 1e-4 else f"{p:.4f}"


def _label(mth: dict) -> str:
    return f"{mth['label']} (ORACLE)" if mth.get("oracle") else mth["label"]


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report: header, the metrics without and with the failed examples, then
    the paired tests.  NMSE is printed x 10^-3 (the JSON keeps the plain ratio)."""
    conv = result.get("metrics") or metric_conventions("gaussian", result["failure_threshold_nmse"])
    thr = result["failure_threshold_nmse"]
    ssim_label = SSIM_LABEL[conv["ssim_kind"]]
    lines = [
        f"store {result['store']}: {result['n_examples']} examples"
        + (f" (split {result['split']!r})" if result["split"] else "")
        + f"; device {result['device']}",
        "time = model forward per example (torch.no_grad, CUDA synchronised; excludes data loading)",
        f"NMSE in units of 10^-3 (the JSON has the plain ratio); PSNR with L = reference max; {conv['ssim_description']}",
        f"failed: NMSE > {thr / NMSE_TABLE_SCALE:g} x 10^-3 (plain NMSE > {thr:g}) or NaN",
    ]
    header = ("method", "coil", "NMSE (x10^-3)", "PSNR (dB)", ssim_label, "failed", "time/example (s)")
    for title, key in (("mean ± SD without the failed examples (the paper's way)", "excluding_failed"),
                       ("mean ± SD over all examples", None)):
        rows = []
        for mth in result["methods"]:
            s = mth["summary"]
            v = s[key] if key else s
            f = s["failed"]
            rows.append((_label(mth), coil_label(mth["coil_mode"], mth.get("coils")),
                         _pm(v["nmse"], ".4g", NMSE_TABLE_SCALE), _pm(v["psnr"], ".2f"), _pm(v["ssim"], ".4f"),
                         f"{f['count']}/{f['n']} ({100 * f['rate']:.1f}%)", _pm(v["seconds"], ".4g")))
        lines += ["", title, *_columns(header, rows)]
    oracles = [m["label"] for m in result["methods"] if m.get("oracle")]
    if oracles:
        lines.append(f"ORACLE: {', '.join(oracles)} use the simulation's true coil maps (csm * exp(j phase)), "
                     f"which no real scan provides: an upper reference, not a competitor")
    if result["tests"]:
        lines += ["", f"paired t-tests over all examples (scipy.stats.ttest_rel, n = {result['n_examples']}; "
                      f"difference = A - B)"]
        by_pair: dict[tuple[str, str], dict[str, dict]] = {}
        for t in result["tests"]:
            by_pair.setdefault((t["a"], t["b"]), {})[t["metric"]] = t
        header = ("A", "B", "ΔPSNR (dB)", "p", f"Δ{ssim_label}", "p", "ΔNMSE (x10^-3)", "p")
        rows = []
        for (a, b), t in by_pair.items():
            rows.append((a, b, f"{t['psnr']['mean_diff']:+.2f}", _p(t["psnr"]["p"]),
                         f"{t['ssim']['mean_diff']:+.4f}", _p(t["ssim"]["p"]),
                         f"{t['nmse']['mean_diff'] / NMSE_TABLE_SCALE:+.4g}", _p(t["nmse"]["p"])))
        lines += _columns(header, rows)
    for w in result.get("warnings", []):
        lines.append(f"warning: {w}")
    return "\n".join(lines)


def _columns(header, rows) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
