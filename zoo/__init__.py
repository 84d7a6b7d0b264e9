"""smssynth model zoo: PyTorch reconstruction of dynamic SMS (CAIPI) cardiac MRI from smssynth stores.

The data flow is one way::

    Zarr store -> data (SmsDataset) -> model (calls physics: fft3, data consistency) -> loss/metrics
               -> checkpoint (safetensors + JSON) -> weights registry

``zoo`` reads stores through the documented schema only (``docs/store-format.md``); it never uses
the simulator's internals.

The package reads the same way, each layer importing only the ones before it
(``tests/zoo/test_layers.py``): ``errors``, ``physics``, ``metrics`` -> ``data`` -> ``models/``
-> ``checkpoint``, ``registry``, ``cards`` (the weights) -> ``train/`` (with the loss and
``distributed``) -> ``eval/`` (baselines, SENSE, ``recon``, ``evaluate``, the experiment).

Pretrained weights (:mod:`zoo.registry`)::

    import zoo
    zoo.list_models()                               # registered pretrained weights
    model, meta = zoo.load("NAME")                  # hash-checked, eval mode; (model, metadata)
    model, meta = zoo.load(zoo.get_weights("NAME")) # a Weights record; or zoo.load("runs/x/best.safetensors")
    model = zoo.models.sms_crnn(weights="NAME")     # the builders: architecture from the weights' metadata
    model.normalization                             # the input normalisation the weights were trained with
    print(zoo.model_card("NAME"))                   # Hugging Face Hub model card (smssynth zoo card NAME)
"""

__all__ = ["Weights", "export_card", "get_weights", "list_models", "load", "model_card"]


def __getattr__(name):
    # lazy (PEP 562): `import zoo` stays free of torch until weights are asked for
    if name in __all__:
        from zoo import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
