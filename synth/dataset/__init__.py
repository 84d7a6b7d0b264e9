"""Datasets: simulation parameters (:mod:`synth.dataset.config`, :mod:`synth.dataset.recipes`),
planning (:mod:`synth.dataset.combos`, :mod:`synth.dataset.splits`, :mod:`synth.dataset.budget`),
one example (:mod:`synth.dataset.simulate`), the commands ``dicom2kspace``
(:mod:`synth.dataset.pipeline`), ``generate`` (:mod:`synth.dataset.generate`), ``kspace2sms``
(:mod:`synth.dataset.raw`) and ``export`` (:mod:`synth.dataset.export`), and the Zarr store
(:mod:`synth.dataset.store`, :mod:`synth.dataset.output`).

May import anything in :mod:`synth`.
"""
