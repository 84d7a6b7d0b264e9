"""Evaluation: what is done with trained weights and the baselines, on top of everything else.

* :mod:`zoo.eval.sense`, :mod:`zoo.eval.baselines` -- the non-learned reconstructions (zero-filled,
  CS, SMS-SENSE), by name;
* :mod:`zoo.eval.recon` -- a method (weights or baseline) on a store's examples, as validation
  does it: ``smssynth recon``, the recon store and figures;
* :mod:`zoo.eval.evaluate` -- ``smssynth evaluate``: the metrics table of several methods, paired
  tests;
* :mod:`zoo.eval.experiment`, :mod:`zoo.eval.experiment_report` -- ``smssynth experiment``: the
  Table 1 experiment, each stage a ``smssynth`` command, and its report.

The last layer of :mod:`zoo` (``tests/zoo/test_layers.py``): it may import anything in ``zoo``;
nothing below imports it.  Nothing is imported here, so ``import zoo.eval.experiment`` stays free
of torch.
"""
