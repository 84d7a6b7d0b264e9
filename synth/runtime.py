"""Process-level tuning for the simulator's big, short-lived arrays.

Each example allocates and frees a few hundred MB of arrays (coil images, k-space, compression
buffers).  glibc serves allocations above its mmap threshold with fresh ``mmap`` pages and gives
them back on ``free``, so every example page-faults its whole working set in again: on the full
Sunnybrook cine recipe that was ~300k minor faults and about as much kernel time as compute per
example.  Raising the mmap and trim thresholds keeps freed memory in the heap for reuse; resident
memory then stays at the per-process peak (bounded: one example at a time), which is the point.
Measured with ``benchmarks/bench_dicom2kspace.py`` (see the issue notes).  No-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator() -> bool:
    """Once per process: keep freed large blocks for reuse (glibc ``mallopt``). True if applied."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _done = ok
    return ok
