"""What the training tests share: a tiny ``sms-crnn`` and the run configuration built over a store."""

from __future__ import annotations

TINY = {"n_filters": 4, "n_iterations": 2}


def run_config(store, **over):
    """``zoo.train.resolve_run_config`` for :data:`TINY` over ``store``: by default one epoch, a third of
    the examples for validation; ``over`` are the command-line overrides (keyword per option)."""
    from zoo import train as T

    over.setdefault("val_fraction", 0.34)
    over.setdefault("epochs", 1)
    return T.resolve_run_config(store, yaml_sections={"model": {"name": "sms-crnn", "config": TINY}},
                                overrides=over)
