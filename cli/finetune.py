"""``smssynth finetune``: continue training a checkpoint or registered weights on a store.

The loop, options and precedence are ``smssynth train``'s (:mod:`cli.train`); the architecture
and starting weights come from ``--from`` (a checkpoint path or a registry name, loaded with
``zoo.registry.load``, SHA-256 checked), and the run's checkpoints record it as their parent
(name + sha256).  The learning rate defaults to train's 1e-4; lower it (``--lr 5e-5``) when the
new data are close to the old and few.
"""

from __future__ import annotations

import click

from cli.options import verbosity_options
from cli.train import loop_options, run_loop


@click.command("finetune")
@click.option("--from", "source", default=None, metavar="CHECKPOINT|NAME",
              help="Starting weights: a checkpoint (PATH or PATH.safetensors) or registered weights name "
                   "(required, except with --resume).")
@click.option("--freeze", multiple=True, metavar="PATTERN",
              help="Keep parameters whose names match this glob fixed, e.g. 'crnn.*' (repeatable).")
@loop_options
@verbosity_options
def finetune(source, freeze, **kwargs):
    """Fine-tune a trained model (checkpoint or registry name) on an smssynth store.

    \b
        smssynth finetune --from run/checkpoints/best --data perfusion.zarr --freeze 'crnn.*' --out ft
    """
    if source is None and not kwargs["resume"]:
        raise click.UsageError("Missing option '--from' (a checkpoint path or registered weights name).")
    run_loop("finetune", kwargs, source=source, freeze=freeze)
