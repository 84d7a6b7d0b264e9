"""How much memory an example needs, checked before any work starts.

Options such as ``--coils 100000``, ``--matrix 100000x100000`` or ``--frames 1000000`` are valid
numbers that no machine can simulate; without this check they end in a ``MemoryError`` deep in
NumPy after the inputs were scanned.  :func:`check_memory` estimates the bytes one example holds
while it is simulated and refuses, with the numbers, when the examples in flight at once would
not fit in the memory available now.

The estimate (bytes, for ``C`` coils, ``M`` slices, ``T`` frames, ``Ny x Nx``):

* the working magnitudes and their k-means labels, ``M*T*Ny*Nx * (4 + 2)``, held once more by
  the slice cache;
* the coil maps, ``C*M*Ny*Nx * 8``;
* per coil being written, one k-space chunk and one phase chunk, ``T*Ny*Nx*8 + M*T*Ny*Nx*4``;
* with ``--snr`` the whole example's k-space and phase, ``C*T*Ny*Nx*8 + C*M*T*Ny*Nx*4``
  (noise is scaled by the rms of the whole example).

It is a lower bound on the true peak (temporaries come on top), so the refusal is never wrong;
a run that passes it can still be tight, which is what the printed peak memory is for.
"""

from __future__ import annotations

import os

from synth.dataset.config import SimConfig
from synth.errors import ConfigError

GB = 1024**3


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (None if the OS does not say)."""
    try:
        import psutil  # installed with dask.distributed

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def example_bytes(config: SimConfig, t: int, ny: int, nx: int, coil_threads: int = 1) -> int:
    """Lower bound of the bytes one example holds while it is simulated (module doc)."""
    c, m = int(config.coils), int(config.sms)
    img = m * t * ny * nx
    need = 2 * img * (4 + 2) + c * m * ny * nx * 8
    need += min(coil_threads, c) * (t * ny * nx * 8 + img * 4)
    if config.snr is not None:
        need += c * t * ny * nx * 8 + c * img * 4
    return need


def check_memory(config: SimConfig, t: int, ny: int, nx: int, *, in_flight: int = 1, coil_threads: int = 1,
                 available: int | None = None, where: str = "this machine") -> int:
    """Refuse (ConfigError) when ``in_flight`` examples would not fit in the memory available.

    Returns the estimated bytes per example.
    """
    per = example_bytes(config, t, ny, nx, coil_threads)
    avail = available_memory() if available is None else available
    if avail is not None and per * in_flight > avail:
        raise ConfigError(
            f"one example of {config.coils} coils x {config.sms} slices x {t} frames x {ny}x{nx} needs at least "
            f"{per / GB:.1f} GB of memory ({in_flight} at once: {per * in_flight / GB:.1f} GB), but {where} has "
            f"{avail / GB:.1f} GB available; lower --coils, --frames or --matrix"
            + (", or drop --snr" if config.snr is not None else "")
        )
    return per
