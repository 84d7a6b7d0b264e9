"""smssynth model zoo: PyTorch reconstruction of dynamic SMS (CAIPI) cardiac MRI from smssynth stores.

The data flow is one way::

    Zarr store -> data (SmsDataset) -> model (calls physics: fft3, data consistency) -> loss/metrics
               -> checkpoint (safetensors + JSON) -> weights registry

``zoo`` reads stores through the documented schema only (``docs/store-format.md``); it never uses
the simulator's internals.

Pretrained weights (:mod:`zoo.registry`)::

    import zoo
    zoo.list_models()                       # registered pretrained weights
    model, meta = zoo.load("NAME")          # or zoo.load("runs/x/best.safetensors")
"""

__all__ = ["Weights", "get_weights", "list_models", "load"]


def __getattr__(name):
    # lazy (PEP 562): `import zoo` stays free of torch until weights are asked for
    if name in __all__:
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
