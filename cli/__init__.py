"""The ``smssynth`` command line: a thin click layer, one module per command.

Nothing imports ``cli``; commands import ``synth`` (and, lazily, ``zoo``/torch) inside their
function bodies so ``smssynth --help`` stays fast and torch-free.
"""
