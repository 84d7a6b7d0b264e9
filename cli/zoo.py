"""``smssynth zoo``: the pretrained weights registry (``zoo.registry``): list entries, show one,
write a Hugging Face Hub model card (and the folder to upload)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from cli.options import UserError, verbosity_options

KEY_METRICS = ("nmse", "psnr", "ssim")


@click.group("zoo")
def zoo_cmd():
    """Pretrained reconstruction models: list the registered weights, show their metadata, write cards.

    Load one in Python with: model, meta = zoo.load(NAME).  The registry is the package's
    zoo/weights/registry.json, or the folder in $SMSSYNTH_WEIGHTS_DIR.
    """


@zoo_cmd.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the registry entries as JSON.")
@verbosity_options
def list_cmd(as_json):
    """Table of the registered weights: architecture, parameters, training data, key metrics."""
    weights = _read()
    if as_json:
        click.echo(json.dumps([w.to_entry() for w in weights], indent=2))
        return
    if not weights:
        click.echo("no pretrained weights registered yet (maintainers add them with "
                   "zoo.registry.register_checkpoint)")
        return
    header = ("name", "architecture", "parameters", "training data", "key metrics")
    rows = [(w.name, w.architecture, f"{w.n_parameters:,}", _data_summary(w.meta.get("data", {})),
             _metrics_summary(w.meta.get("metrics", {}))) for w in weights]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(cell.ljust(wd) for cell, wd in zip(r, widths)).rstrip())


@zoo_cmd.command("info")
@click.argument("name")
@verbosity_options
def info_cmd(name):
    """Full metadata of the weights NAME (or of a checkpoint file NAME), as JSON."""
    from zoo.errors import SmssynthError
    from zoo.registry import get_weights, list_models

    try:
        if name in list_models() or not _looks_like_path(name):
            click.echo(json.dumps(get_weights(name).to_entry(), indent=2))
            return
        from zoo.checkpoint import read_metadata  # imports torch: only for checkpoint files

        click.echo(json.dumps(read_metadata(name), indent=2))
    except SmssynthError as e:  # unknown name, missing, malformed or damaged checkpoint: an unusable input
        raise click.BadParameter(str(e), param_hint="NAME") from None


@zoo_cmd.command("card")
@click.argument("name")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Write a folder to upload to the Hugging Face Hub as it is: NAME.safetensors (hash-checked), "
                   "NAME.json (the metadata) and README.md (the card). Without --out the card is printed.")
@click.option("--name", "card_name", default=None,
              help="Name of the files and the card (default: the registry name, or the checkpoint's file stem).")
@click.option("--namespace", default=None,
              help="Hub user or organisation of the parent weights, for a fine-tune's base_model (NAMESPACE/PARENT).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --out (nothing else is ever replaced).")
@verbosity_options
def card_cmd(name, out, card_name, namespace, overwrite):
    """Model card of the weights NAME (or of a checkpoint file NAME), made from its metadata.

    The card is README.md-style: YAML front matter the Hugging Face Hub reads (license,
    library_name, tags, datasets, base_model for fine-tunes, metrics as model-index results),
    then the human card (data, splits, steps, time, metrics and what they were measured on,
    licences). Nothing is downloaded for a shipped or checkpoint file; no Hub library is needed.
    """
    from zoo.errors import ChecksumError, SmssynthError, UnknownWeightsError
    from zoo.registry import export_card, model_card

    if out is None and (card_name is not None or overwrite):
        raise click.UsageError("--name and --overwrite apply to --out")
    if out is not None:
        _check_card_out(Path(out), overwrite)
    try:
        if out is None:
            click.echo(model_card(name, namespace=namespace))
            return
        folder = export_card(name, out, name=card_name, namespace=namespace, overwrite=overwrite)
    except UnknownWeightsError as e:
        raise click.BadParameter(str(e), param_hint="NAME") from None
    except SmssynthError as e:
        # the copy in --out differing from its source is a failure at run time (1); an unusable or
        # damaged checkpoint, a bad card name or a refused --out are usage errors (2)
        copy_failed = (out is not None and isinstance(e, ChecksumError)
                       and str(e).startswith(os.path.join(str(Path(out)), "")))
        raise UserError(str(e), 1 if copy_failed else 2) from None
    click.echo(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir()))
               + " (upload the folder as it is, e.g. huggingface-cli upload ORG/REPO " + str(folder) + ")")


def _check_card_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that zoo.registry.export_card would refuse, before the weights are read
    (exit 2, like every command's refused --out)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder; choose another --out", 2)
    present = sorted(p.name for p in out.iterdir())
    if present and not overwrite:
        raise UserError(f"--out {out}: holds {present[:5]}; pass --overwrite to replace an earlier export, or "
                        f"choose another --out", 2)


def _read():
    from zoo.errors import SmssynthError
    from zoo.registry import read_registry

    try:
        return sorted(read_registry(), key=lambda w: w.name)
    except SmssynthError as e:
        raise click.ClickException(str(e)) from None


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.endswith((".safetensors", ".json")) or os.path.exists(name)


def _data_summary(data: dict) -> str:
    if not isinstance(data, dict) or not data:
        return "?"
    parts = [str(data.get("store", "?"))]
    extra = [str(data["split"])] if data.get("split") else []
    if data.get("n_examples") is not None:
        extra.append(f"{data['n_examples']} ex.")
    return parts[0] + (f" ({', '.join(extra)})" if extra else "")


def _flatten(d, prefix=""):
    for k, v in d.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and "mean" not in v:
            yield from _flatten(v, path + ".")
        else:
            yield path, v


def _metrics_summary(metrics: dict) -> str:
    """The first NMSE, PSNR and SSIM found (a number, or a summary's mean), e.g. ``val.psnr 31.2``."""
    if not isinstance(metrics, dict):
        return "?"
    flat = list(_flatten(metrics))
    shown = []
    for key in KEY_METRICS:
        for path, v in flat:
            if key in path.lower().split("."):
                v = v.get("mean") if isinstance(v, dict) else v
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    shown.append(f"{path} {v:.4g}")
                    break
    return ", ".join(shown) or "-"
