"""Register the checkpoints of a finished Table 1 experiment in the zoo (maintainer tool).

    python experiments/register_table1.py runs/table1 [--weights-dir zoo/weights] [--overwrite] [--only NAME,...]

For every model of the experiment (``zoo.eval.experiment``), its ``checkpoints/last`` goes into the
registry under the name below, with the test metrics of ``table1.json``'s evaluations (the model
and the baselines on the same examples) in its metadata, and a card record saying what it was
trained and checked on.  The ``no fine-tuning`` ablation of the perfusion table is the cine
``sms-crnn`` itself, so it is not registered twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# registry name -> (run folder under runs/, row name in the evaluations, the test sets it is scored on)
MODELS = {
    "sms-crnn-cine": ("cine-sms-crnn", "sms-crnn", ("cine",)),
    "conv3d-cine": ("cine-conv3d", "conv3d", ("cine",)),
    "independent-cine": ("cine-independent", "independent", ("cine",)),
    "sms-crnn-fpp": ("fpp-sms-crnn-fpp", "sms-crnn-fpp", ("fpp", "fpp-real")),
    "sms-crnn-fpp-no-pretrain": ("fpp-no-pretrain", "no-pretrain", ("fpp", "fpp-real")),
    "sms-crnn-fpp-grating-phase": ("fpp-grating-phase", "grating-phase", ("fpp", "fpp-real")),
}
GROUP = {"cine": "test", "fpp": "test", "fpp-real": "test-real-ge"}
BASELINES = ("zero-filled", "cs-tfft", "cs-ttv", "sense-espirit", "sense-oracle")
SUNNYBROOK = "CC0 1.0 (Sunnybrook Cardiac Data: patients SC-HF-I-1 and -2 for training, SC-HF-I-4 for testing)"
TRAINED_ON = {
    "cine": "synthetic SMS-2 x R-2 k-space from Sunnybrook cine (patients SC-HF-I-1 and -2; fresh phase, coil "
            "maps, masks and noise every epoch)",
    "fpp": "synthetic SMS-2 x R-2 k-space from smssynth's seeded perfusion phantom patients",
}


def _trained_on(kind: str, scale: dict) -> str:
    snr = scale.get("phantom_snr")
    if kind != "fpp" or not snr:
        return TRAINED_ON[kind]
    return (f"{TRAINED_ON[kind]} with thermal noise (each patient's peak-signal SNR log-uniform in "
            f"{float(snr[0]):g}-{float(snr[1]):g})")


def _summary(row: dict) -> dict:
    return {k: row[k] for k in ("nmse", "psnr", "ssim") if row.get(k)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--weights-dir", default=str(ROOT / "zoo" / "weights"))
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--only", default=None, help="comma-separated registry names to (re-)register; default all")
    a = p.parse_args(argv)
    only = None if a.only is None else set(a.only.split(","))
    if only is not None and not only <= set(MODELS):
        p.error(f"--only: unknown names {sorted(only - set(MODELS))}; choose from {sorted(MODELS)}")

    from zoo.registry import register_checkpoint

    rep = json.loads((a.experiment / "table1.json").read_text())
    exp = json.loads((a.experiment / "experiment.json").read_text())
    scale = exp["scale"]
    for name, (run, row_name, sets) in MODELS.items():
        if only is not None and name not in only:
            continue
        metrics, checked, evaluated_on = {}, [], {}
        for s in sets:
            if s not in rep["sets"]:
                continue
            rows = {r["method"]: r for r in rep["sets"][s]["rows"]}
            group = GROUP[s]
            metrics[group] = _summary(rows[row_name])
            evaluated_on[group] = Path(rep["sets"][s]["store"]).name
            if group == "test":  # the baselines on the same examples (the card's comparison table)
                for b in BASELINES:
                    if b in rows:
                        metrics[b] = _summary(rows[b])
                evaluated_on["baselines"] = evaluated_on[group]
            checked.append(f"{rep['sets'][s]['n_examples']} test examples of {s} "
                           f"({'the kept-out Sunnybrook patient SC-HF-I-4' if s == 'cine' else 'unseen phantom patients' if s == 'fpp' else 'draws of the real GE perfusion series: its one slice at R=4, coil maps, phase and mask drawn anew'})")
        kind = "cine" if name.endswith("-cine") else "fpp"
        licence = (f"BSD-3-Clause (weights); trained on {SUNNYBROOK}" if kind == "cine" else
                   f"BSD-3-Clause (weights); pretrained on {SUNNYBROOK}, trained on smssynth's own phantom")
        if name == "sms-crnn-fpp-no-pretrain":
            licence = "BSD-3-Clause (weights); trained on smssynth's own phantom"
        st = scale.get("conv3d_st_layers") if name == "conv3d-cine" else scale.get("st_layers", 1)
        desc = (f"{row_name} of the Table 1 experiment at {scale['name']} scale ({scale['n_filters']} filters, "
                f"{scale['n_iterations']} iterations, "
                + ("trained with bfloat16 convolutions (float32 weights), "
                   if scale.get("precision", "float32") == "bfloat16" else "")
                + (f"a {st}-layer 2D+time convolution before DC, " if st and st > 1 else "")
                + f"{scale['coils']} coils as channels, {scale['cine_matrix'][0]}^2 x "
                f"{scale['cine_frames']} frames); trained on {_trained_on(kind, scale)}"
                + ("" if kind == "cine" or name.endswith("no-pretrain") else ", fine-tuned from sms-crnn-cine")
                + (" with grating-only synthetic phase (ablation)" if name.endswith("grating-phase") else "")
                + (". It has sms-crnn's 2D+time convolution on each slice before DC, so the two differ only in "
                   "how the CRNN sees the slices (3D convolutions over slice, y and x here; 2D, shared across "
                   "the slices, there)" if name == "conv3d-cine" and scale.get("conv3d_st_layers") else "")
                + ". Reproduce: smssynth experiment table1 --scale cpu.")
        pretrained = kind == "fpp" and not name.endswith("no-pretrain")   # cine weights, then the phantom
        phantom = "smssynth perfusion phantom (BSD-3-Clause)"
        card = {"license": "bsd-3-clause",
                "data_licence": SUNNYBROOK if kind == "cine" else (
                    f"{SUNNYBROOK}, pretraining; {phantom}, fine-tuning" if pretrained else phantom),
                "checked_on": "; ".join(checked) or "not evaluated",
                "evaluated_on": evaluated_on,
                "datasets": (["sunnybrook-cardiac-data"] if kind == "cine" else
                             ["sunnybrook-cardiac-data", "smssynth-perfusion-phantom"] if pretrained else
                             ["smssynth-perfusion-phantom"]),
                "tags": ["cine"] if kind == "cine" else ["perfusion"]}
        ckpt = a.experiment / "runs" / run / "checkpoints" / "last"
        w = register_checkpoint(ckpt, name, licence=licence, description=desc, card=card, metrics=metrics,
                                weights_dir=a.weights_dir, overwrite=a.overwrite)
        size = (Path(a.weights_dir) / w.file).stat().st_size
        print(f"{name:<28} {size / 1e3:7.1f} kB  " + "  ".join(
            f"{g} PSNR {m['psnr']['mean']:.2f}" for g, m in metrics.items() if g.startswith("test")))
    name_parents(Path(a.weights_dir))


def name_parents(folder: Path) -> None:
    """A fine-tune's parent is recorded as the checkpoint path it started from (a path on the
    machine that trained it); when that checkpoint is registered too (same SHA-256), name it
    instead, so the card links its base model and no local path ships."""
    import dataclasses

    from zoo.registry import _write_registry, read_registry, write_card

    entries = read_registry(folder)
    by_sha = {w.sha256: w.name for w in entries}
    out = []
    for w in entries:
        parent = (w.meta.get("training") or {}).get("parent")
        if isinstance(parent, dict) and parent.get("sha256") in by_sha and not parent.get("registry"):
            name = by_sha[parent["sha256"]]
            meta = json.loads(json.dumps(w.meta))
            meta["training"]["parent"] = {**parent, "source": name, "name": name, "registry": True}
            w = dataclasses.replace(w, meta=meta)
            (folder / f"{w.name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        out.append(w)
    _write_registry(folder, out)
    for w in out:
        write_card(w, weights_dir=folder)


if __name__ == "__main__":
    main()
