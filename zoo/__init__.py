"""smssynth model zoo: PyTorch reconstruction of dynamic SMS (CAIPI) cardiac MRI from smssynth stores.

The data flow is one way::

    Zarr store -> data (SmsDataset) -> model (calls physics: fft3, data consistency) -> loss/metrics

``zoo`` reads stores through the documented schema only (``docs/store-format.md``); it never uses
the simulator's internals.
"""
