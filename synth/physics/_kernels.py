"""numba kernels of the simulator; import them through :func:`synth.physics._jit.kernels`, which falls
back to the NumPy code where numba is unavailable.  Each has a NumPy twin that tests compare it with."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def encode_block(labels, target, t0, t1, tab_c, tab_r, sens, grating, rows, cx, acc, phase):
    """One coil, frames ``t0:t1``: the stored phase and the FFT's input, in one pass.

    For slice i, frame t, pixel (y, x), with ``l = labels[i, t, y, x]``::

        phase[i, t - t0, y, x] = tab_r[i, l] + grating[y, x]
        acc[t - t0, (y + rows[i]) % Ny, (x + cx) % Nx] += tab_c[i, l] * target[i, t, y, x] * sens[i, y, x]

    (slice 0 assigns, the others add).  ``tab_c = exp(1j * tab_r)`` (the cluster phasors),
    ``sens`` folds the coil map, grating phasor, CAIPI constant, centring ramp and scale
    (see :meth:`synth.dataset.simulate.Encoder._setup_jit`), ``rows``/``cx`` the FOV shifts and the
    half-matrix shift that replaces the output ramp for even sizes.
    """
    m = labels.shape[0]
    ny = labels.shape[2]
    nx = labels.shape[3]
    n1 = nx - cx
    kmax = tab_r.shape[1] - 1
    for i in range(m):
        r = rows[i]
        for tt in range(t1 - t0):
            t = t0 + tt
            for y in range(ny):
                ry = y + r
                if ry >= ny:
                    ry -= ny
                lab = labels[i, t, y]
                tg = target[i, t, y]
                se = sens[i, y]
                g = grating[y]
                ph = phase[i, tt, y]
                out = acc[tt, ry]
                for x in range(nx):
                    l = min(lab[x], kmax)  # labels are < K; clip as np.take(mode="clip") does
                    ph[x] = tab_r[i, l] + g[x]
                    v = tab_c[i, l] * (tg[x] * se[x])
                    xo = x + cx - nx if x >= n1 else x + cx
                    if i == 0:
                        out[xo] = v
                    else:
                        out[xo] += v


@numba.njit(nogil=True, cache=True)
def pair_counts(a, b, k):
    """counts[p, q] = number of positions where a == p and b == q (a, b flat, values < k)."""
    counts = np.zeros((k, k), np.int64)
    for n in range(a.size):
        if a[n] >= k or b[n] >= k:
            raise ValueError("labels must be < the number of clusters")
        counts[a[n], b[n]] += 1
    return counts
