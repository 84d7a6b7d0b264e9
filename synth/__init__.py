"""smssynth simulator: magnitude DICOM -> multi-coil complex SMS k-space in a Zarr store.

The data flow is one way::

    DICOM files -> dicom (series/slices/frames) -> resolution (acquired matrix, --matrix, --frames)
      -> phase + coils -> sms (CAIPI collapse) + masks + noise -> store (Zarr v3)

This package never imports torch (``tests/synth/test_no_torch.py`` proves it).
"""

__version__ = "0.1.0"
