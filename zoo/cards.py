"""Model cards: a Hugging Face Hub ``README.md`` rendered from a checkpoint's metadata.

A card is YAML front matter, which the Hub reads (``license``, ``library_name``, ``tags``,
``datasets``, ``pipeline_tag``, ``base_model`` for fine-tunes, and the metrics as
``model-index`` results), followed by the human card: the architecture, the input
normalisation, the training data and its splits, steps and time, the metrics and what they were
measured on, the licences of the weights and of the data, how to load it, and provenance.

Everything comes from the checkpoint's metadata (:mod:`zoo.checkpoint`), so a card cannot
disagree with the weights it describes.  Registered weights may add an optional ``card``
object to their metadata for what the training record cannot know (:data:`CARD_KEYS`)::

    {"license": "bsd-3-clause",                 # Hub licence id; else parsed from meta["licence"]
     "datasets": ["..."],                       # else the training store's name
     "data_licence": "CC0 1.0 (Sunnybrook ...)",
     "base_model": "org/parent-weights",        # else the parent's registry name (fine-tunes)
     "checked_on": "16 validation examples ...",
     "evaluated_on": {"test": "cine-test.zarr", "baselines": "cine-test.zarr"},
     "tags": ["perfusion"]}

``evaluated_on`` names the store each metrics group (and the baselines' rows) was measured on,
when that is not the training store (``meta["data"]["store"]``, where validation at training
time measures): metrics added at registration usually come from a separate test store.

:func:`front_matter` gives the YAML as a dict, :func:`render_card` the whole text, and
:func:`parse_front_matter` reads it back (tests; :func:`zoo.registry.validate_weights`).
``zoo.registry.model_card`` and ``export_card`` (``smssynth zoo card``) resolve names and paths.
No Hub library is needed or imported: the card is plain text, and loading stays offline.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from zoo.errors import CheckpointError

__all__ = [
    "CARD_KEYS", "HUB_LICENSES", "LIBRARY_NAME", "REQUIRED_FRONT_MATTER", "front_matter", "hub_license",
    "model_metrics", "parse_front_matter", "render_card",
]

LIBRARY_NAME = "smssynth"
PIPELINE_TAG = "image-to-image"
CARD_KEYS = ("license", "datasets", "data_licence", "base_model", "checked_on", "evaluated_on", "tags")
REQUIRED_FRONT_MATTER = ("license", "library_name", "tags", "datasets", "pipeline_tag")
# the Hub's licence identifiers most likely here (https://huggingface.co/docs/hub/repositories-licenses);
# anything else is written as license: other + license_name
HUB_LICENSES = (
    "apache-2.0", "mit", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "cc0-1.0", "cc-by-4.0",
    "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc-by-nc-nd-4.0", "gpl-3.0", "lgpl-3.0", "mpl-2.0",
    "unlicense", "openrail", "other",
)
METRIC_NAMES = {"nmse": "NMSE", "psnr": "PSNR (dB)", "ssim": "SSIM"}
_BASELINE_GROUPS = ("zero_filled", "zero-filled", "cs-tfft", "cs-ttv", "sense-oracle", "sense-espirit")
_BASE_TAGS = ("mri", "mri-reconstruction", "cardiac-mri", "simultaneous-multi-slice", "dynamic-mri", "pytorch",
              "safetensors", "smssynth")


# --- metadata helpers ---------------------------------------------------------------------------


def _card_record(meta: dict) -> dict[str, Any]:
    card = meta.get("card") or {}
    if not isinstance(card, dict):
        raise CheckpointError(f"meta['card'] must be an object with keys from {list(CARD_KEYS)}, found {card!r}")
    unknown = sorted(set(card) - set(CARD_KEYS))
    if unknown:
        raise CheckpointError(f"meta['card'] has unknown key(s) {unknown}; known: {list(CARD_KEYS)}")
    for key in ("datasets", "tags"):
        if key in card and not (isinstance(card[key], list) and all(isinstance(v, str) and v for v in card[key])):
            raise CheckpointError(f"meta['card'][{key!r}] must be a list of non-empty strings, found {card[key]!r}")
    for key in ("license", "data_licence", "base_model", "checked_on"):
        if key in card and not (isinstance(card[key], str) and card[key].strip()):
            raise CheckpointError(f"meta['card'][{key!r}] must be a non-empty string, found {card[key]!r}")
    ev = card.get("evaluated_on", {})
    if not (isinstance(ev, dict) and all(isinstance(k, str) and isinstance(v, str) and v.strip()
                                         for k, v in ev.items())):
        raise CheckpointError(f"meta['card']['evaluated_on'] must map metrics groups to store names, found {ev!r}")
    if "license" in card and card["license"] not in HUB_LICENSES:
        raise CheckpointError(f"meta['card']['license'] {card['license']!r} is not a Hub licence id; use one of "
                              f"{list(HUB_LICENSES)} ('other' for the rest)")
    return card


def hub_license(meta: dict) -> dict[str, str]:
    """``{"license": id}`` (plus ``license_name`` for ``other``) from ``meta["card"]["license"]``,
    else from the first word of ``meta["licence"]`` (``"BSD-3-Clause (weights); ..."`` -> ``bsd-3-clause``)."""
    card = _card_record(meta)
    if "license" in card:
        return {"license": card["license"]}
    text = str(meta.get("licence") or "").strip()
    first = re.split(r"[\s;,(]", text, maxsplit=1)[0].lower() if text else ""
    if first in HUB_LICENSES:
        return {"license": first}
    slug = re.sub(r"[^a-z0-9]+", "-", first).strip("-") or "unknown"
    return {"license": "other", "license_name": slug}


def _number(v: Any) -> float | None:
    v = v.get("mean") if isinstance(v, dict) else v
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def model_metrics(meta: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """``(model groups, baseline groups)`` of ``meta["metrics"]``: ``{group: {metric: summary}}``.

    A group is a top-level key whose value holds NMSE/PSNR/SSIM numbers or ``{"mean", ...}``
    summaries (``val``, ``test``, ``train``); groups named after a baseline (``zero_filled``,
    ``cs-ttv``...) are the baselines the model was compared with on the same examples.
    """
    ours, baselines = {}, {}
    for group, values in (meta.get("metrics") or {}).items():
        if not isinstance(values, dict):
            continue
        found = {k: values[k] for k in METRIC_NAMES if _number(values.get(k)) is not None}
        if found:
            (baselines if group in _BASELINE_GROUPS else ours)[group] = found
    return ours, baselines


def _parent(meta: dict) -> dict | None:
    parent = (meta.get("training") or {}).get("parent")
    return parent if isinstance(parent, dict) else None


def _examples_of(meta: dict, group: str) -> str:
    """The store a metrics group was measured on: the card's ``evaluated_on``, else the training store."""
    ev = _card_record(meta).get("evaluated_on") or {}
    return str(ev.get(group) or (meta.get("data") or {}).get("store") or "unknown")


def _split_of(meta: dict, group: str) -> str:
    return {"val": "validation", "test": "test", "train": "train"}.get(group, group)


# --- front matter -------------------------------------------------------------------------------


def front_matter(meta: dict, name: str, *, namespace: str | None = None) -> dict[str, Any]:
    """The card's YAML front matter as a dict (see the module doc).

    ``namespace`` (a Hub user or organisation) turns a registered parent's name into the Hub id
    ``NAMESPACE/PARENT`` for ``base_model``; a parent that is a plain checkpoint file has no Hub
    id, and is described in the human card only.
    """
    card = _card_record(meta)
    model = meta.get("model") or {}
    data = meta.get("data") or {}
    out: dict[str, Any] = dict(hub_license(meta))
    out["library_name"] = LIBRARY_NAME
    out["pipeline_tag"] = PIPELINE_TAG
    tags = list(_BASE_TAGS) + [str(model.get("name"))] + list(card.get("tags", []))
    out["tags"] = list(dict.fromkeys(t for t in tags if t and t != "None"))
    out["datasets"] = list(card.get("datasets") or [str(data.get("store") or "unknown")])
    parent = _parent(meta)
    base = card.get("base_model")
    if base is None and parent and parent.get("registry") and parent.get("name"):
        base = f"{namespace}/{parent['name']}" if namespace else str(parent["name"])
    if base:
        out["base_model"] = base
        out["base_model_relation"] = "finetune"
    ours, _ = model_metrics(meta)
    if ours:
        results = []
        for group, values in ours.items():
            results.append({
                "task": {"type": PIPELINE_TAG, "name": "dynamic SMS cardiac MRI reconstruction"},
                "dataset": {"name": _examples_of(meta, group), "type": str(data.get("format") or "unknown"),
                            "split": _split_of(meta, group)},
                "metrics": [{"type": k, "name": METRIC_NAMES[k], "value": round(_number(v), 6)}
                            for k, v in values.items()],
            })
        out["model-index"] = [{"name": name, "results": results}]
    return out


def parse_front_matter(text: str) -> dict[str, Any]:
    """The YAML between the leading ``---`` lines of a card (CheckpointError if there is none)."""
    m = re.match(r"\A---\n(.*?)\n---\n", text, re.S)
    if not m:
        raise CheckpointError("the card does not start with YAML front matter between '---' lines")
    try:
        data = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        raise CheckpointError(f"the card's front matter is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"the card's front matter must be a mapping, found {type(data).__name__}")
    return data


# --- the human card -----------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, (dict, list)):
        return "`" + json.dumps(v, separators=(", ", ": ")) + "`"
    return "—" if v is None else str(v)


def _summary(v: Any) -> str:
    if isinstance(v, dict):
        mean, sd, n = v.get("mean"), v.get("sd"), v.get("n")
        text = _fmt(mean)
        if isinstance(sd, (int, float)):
            text += f" ± {_fmt(sd, 3)}"
        return text + (f" (n = {n})" if n is not None else "")
    return _fmt(v)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    """A two-column Markdown table; rows whose value is None (not recorded) are left out."""
    return ["| | |", "|---|---|", *(f"| {k} | {_fmt(v)} |" for k, v in rows if v is not None)]


def render_card(meta: dict, name: str, *, weights_file: str | None = None, namespace: str | None = None) -> str:
    """The whole card: front matter (:func:`front_matter`) and the human card, from ``meta``.

    ``weights_file`` is the ``.safetensors`` name the card travels with (default ``NAME.safetensors``).
    """
    from zoo.checkpoint import Normalization

    fm = front_matter(meta, name, namespace=namespace)
    card = _card_record(meta)
    model, data = meta.get("model") or {}, meta.get("data") or {}
    training = meta.get("training") or {}
    weights_file = weights_file or f"{name}.safetensors"
    stem = weights_file[: -len(".safetensors")] if weights_file.endswith(".safetensors") else weights_file
    norm = Normalization.from_meta(meta, source=f"{name}: metadata")
    recorded = isinstance(training.get("normalization"), dict)
    n_params = model.get("n_parameters")

    lines = ["---", yaml.safe_dump(fm, sort_keys=False, allow_unicode=True, width=1000).rstrip(), "---", "",
             f"# {name}", ""]
    if meta.get("description"):
        lines += [str(meta["description"]), ""]
    lines += [
        "## Model", "",
        f"Architecture `{model.get('name')}` of [smssynth](https://pypi.org/project/smssynth/)'s model zoo "
        f"(`zoo.models`), {n_params:,} parameters." if isinstance(n_params, int) else
        f"Architecture `{model.get('name')}` of smssynth's model zoo (`zoo.models`).",
        "The architecture is built from this metadata when the weights load, so weights and code cannot drift.", "",
        *_table([(k, "None" if v is None else v) for k, v in (model.get("config") or {}).items()]), "",
        "## Input normalisation", "",
        f"Each example's zero-filled image and k-space are divided by the {norm.quantile:g} quantile of "
        f"|x0| over the example before the network, and the output multiplied back ({norm.kind}). "
        + ("Recorded in the metadata (`training.normalization`); smssynth applies it when it loads these weights."
           if recorded else
           f"Not recorded in this older checkpoint: smssynth applies the documented default "
           f"{norm.quantile:g} that every such checkpoint was trained with."), "",
    ]

    params = data.get("params") or {}
    dc = data.get("data_config") or {}
    keys = ("sms", "coils", "accel", "acs", "mask", "caipi", "csm", "phase", "matrix", "frames", "snr", "combine")
    lines += [
        "## Training data", "",
        *_table([("store", data.get("store")), ("format", f"{data.get('format')} {data.get('format_version')}"),
                 ("kind", data.get("kind")), ("dims", data.get("dims")),
                 *[(k, params[k]) for k in keys if k in params],
                 ("coil mode", dc.get("coil_mode")),
                 *([("synthesis", dc["synthesis"])] if dc.get("synthesis") else []),
                 *([("augmentation", ", ".join(dc["augment"]) or "none")] if "augment" in dc else []),
                 ("split", data.get("split")), ("training examples", data.get("n_examples")),
                 *([("validation examples", data["n_val"])] if "n_val" in data else []),
                 ("datasets", ", ".join(fm["datasets"])),
                 ("data licence", card.get("data_licence", "not recorded; see the licence below"))]), "",
    ]

    opt = training.get("optimizer")
    train_cfg = training.get("train") if isinstance(training.get("train"), dict) else {}
    seconds = training.get("seconds")
    parent = _parent(meta)
    lines += [
        "## Training", "",
        *_table([("command", training.get("command")),
                 ("epoch of these weights", training.get("epoch")),
                 ("epochs run", train_cfg.get("epochs", training.get("epochs"))),
                 ("steps", training.get("step", training.get("steps"))),
                 ("time", f"{seconds:.0f} s" if isinstance(seconds, (int, float)) else seconds),
                 ("device", training.get("device")), ("world size", training.get("world_size")),
                 ("optimizer", opt), ("loss", training.get("loss")),
                 ("batch size", train_cfg.get("batch_size")), ("seed", train_cfg.get("seed", training.get("seed"))),
                 ("frozen", training.get("frozen") or None),
                 ("fine-tuned from", f"{parent.get('name')} (SHA-256 {parent.get('sha256')})" if parent else None)]),
        "",
    ]

    ours, baselines = model_metrics(meta)
    lines += ["## Evaluation", ""]
    if ours or baselines:
        lines += ["| method | examples | NMSE | PSNR (dB) | SSIM |", "|---|---|---|---|---|"]
        for label, groups in ((name, ours), ("baseline", baselines)):
            for group, values in groups.items():
                who = f"{name} ({_split_of(meta, group)})" if label == name else group.replace("_", "-")
                cells = [_summary(values.get(k)) if k in values else "—" for k in METRIC_NAMES]
                measured_on = _examples_of(meta, group if label == name else "baselines")
                lines.append(f"| {who} | {measured_on} | " + " | ".join(cells) + " |")
        lines.append("")
        where = card.get("checked_on") or (
            f"the {', '.join(_split_of(meta, g) for g in ours) or 'recorded'} examples of "
            f"`{data.get('store')}` ({data.get('split')}), as recorded at training time; baselines on the same "
            f"examples. NMSE is plain (not x1e-3); PSNR uses the reference maximum.")
        lines += [f"What it was checked on: {where}", ""]
    else:
        lines += ["No metrics are recorded in this checkpoint (run `smssynth evaluate`).", ""]

    lines += [
        "## Licence", "",
        f"Weights: {meta.get('licence') or 'not recorded'}.  Training data: "
        f"{card.get('data_licence', 'not recorded separately (see the weights licence)')}.", "",
        "## Use", "",
        "```bash",
        'pip install "smssynth[zoo]"',
        f"smssynth recon --model {weights_file} STORE.zarr --out recon.zarr   # this folder's files",
        "```", "",
        "```python",
        "import zoo",
        f'model, meta = zoo.load("{weights_file}")   # hash-checked, eval mode; model.normalization is set',
        "```", "",
        f"Files: `{weights_file}` (safetensors, SHA-256 `{meta.get('sha256')}`) and `{stem}.json` (the metadata "
        f"this card was made from). Loading checks the hash and never unpickles.", "",
        "## Provenance", "",
        *_table([("created", meta.get("created")), ("software", meta.get("software")),
                 ("checkpoint format", f"{meta.get('format')} {meta.get('format_version')}")]), "",
    ]
    return "\n".join(lines)
