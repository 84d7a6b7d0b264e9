"""smssynth simulator: magnitude DICOM -> multi-coil complex SMS k-space in a Zarr store.

The data flow is one way, and so is the package layout::

    io/       inputs: DICOM, NIfTI, raw k-space and phantom files -> series/slices/frames (dicom,
              nifti, raw), de-identification (deid), working resolution (resolution)
    physics/  the forward model: phase + coils -> sms (CAIPI collapse) + masks + noise, on fft/linop
    dataset/  plans, simulation and stores: config, combos, simulate, pipeline/generate (dicom2kspace,
              generate), raw (kspace2sms), store (Zarr v3), export

``physics`` imports only ``physics`` and the top-level modules (``errors``, ``runtime``); ``io``
imports ``io``, ``physics`` and the top level; ``dataset`` may import anything in ``synth``
(``tests/synth/test_layers.py`` checks it).  This package never imports torch
(``tests/synth/test_no_torch.py`` proves it).
"""

__version__ = "0.1.0"
