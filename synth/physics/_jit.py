"""Compiled inner loops (numba, :mod:`synth.physics._kernels`), with NumPy code as the fallback.

numba is a dependency, so the kernels are normally used.  The NumPy routes stay for platforms
numba does not support yet and for checking: the tests run both and compare them.  Setting
``SMSSYNTH_NO_JIT=1`` selects the NumPy routes.  The kernels compile on first use (about a
second each) and are cached next to the module, or in numba's user cache where that folder is
read-only.
"""

from __future__ import annotations

import logging
import os

_kernels = None
log = logging.getLogger(__name__)


def kernels():
    """The compiled kernels module, or None (numba unavailable, or ``SMSSYNTH_NO_JIT=1``)."""
    global _kernels
    if _kernels is None:
        if os.environ.get("SMSSYNTH_NO_JIT", "") not in ("", "0"):
            _kernels = False
        else:
            try:
                from synth.physics import _kernels as k
            except Exception as e:  # ImportError, or numba refusing to set up its cache
                log.warning("numba kernels unavailable (%s: %s); using the slower NumPy routes", type(e).__name__, e)
                k = False
            _kernels = k
    return _kernels or None
