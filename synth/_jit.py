"""Compiled inner loops (numba), with the NumPy code as the fallback where numba is missing."""

from __future__ import annotations

import os

import numpy as np

_kernels = None


def kernels():
    """The compiled kernels module, or None (numba not installed, or ``SMSSYNTH_NO_JIT=1``)."""
    global _kernels
    if _kernels is None:
        if os.environ.get("SMSSYNTH_NO_JIT", "") not in ("", "0"):
            _kernels = False
        else:
            try:
                from synth import _kernels as k
            except ImportError:
                k = False
            _kernels = k
    return _kernels or None
