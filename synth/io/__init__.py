"""Inputs: DICOM (:mod:`synth.io.dicom`), NIfTI (:mod:`synth.io.nifti`) and raw k-space
(:mod:`synth.io.raw`) files as series/slices/frames, the cardiac phantom written as DICOM
(:mod:`synth.io.phantom`), pseudonyms and masked paths (:mod:`synth.io.deid`), and the working
resolution of the magnitudes (:mod:`synth.io.resolution`).

Imports only :mod:`synth.io`, :mod:`synth.physics` and the top-level modules, never
:mod:`synth.dataset`.
"""
