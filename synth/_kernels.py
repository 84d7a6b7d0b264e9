"""numba kernels; import through :func:`synth._jit.kernels`."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def encode_block(labels, target, t0, t1, tab_c, tab_r, sens, grating, rows, cx, acc, phase):
    m = labels.shape[0]
    ny = labels.shape[2]
    nx = labels.shape[3]
    n1 = nx - cx
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
                    l = lab[x]
                    ph[x] = tab_r[i, l] + g[x]
                    v = tab_c[i, l] * (tg[x] * se[x])
                    xo = x + cx - nx if x >= n1 else x + cx
                    if i == 0:
                        out[xo] = v
                    else:
                        out[xo] += v


@numba.njit(nogil=True, cache=True)
def kmeans_assign(mag, inv, c0, gy, gx, gt, labels):
    """labels[t, y, x] = argmin_k ((mag * inv - c0[k])^2 + (gy[k, y] + gx[k, x]) + gt[t, k]).

    float32 throughout, in the same order of operations as the NumPy code in
    :func:`synth.phase.kmeans_labels`, so the labels are identical; ties go to the lowest k.
    """
    t_, ny, nx = mag.shape
    k_ = c0.shape[0]
    for t in range(t_):
        for y in range(ny):
            for x in range(nx):
                a = numba.float32(mag[t, y, x]) * inv
                best = numba.float32(0.0)
                bl = 0
                for k in range(k_):
                    d = a - c0[k]
                    d = d * d
                    d = d + (gy[k, y] + gx[k, x])
                    d = d + gt[t, k]
                    if k == 0 or d < best:
                        best = d
                        bl = k
                labels[t, y, x] = bl


@numba.njit(nogil=True, cache=True)
def pair_counts(a, b, k):
    """counts[p, q] = number of positions where a == p and b == q (a, b flat, values < k)."""
    counts = np.zeros((k, k), np.int64)
    for n in range(a.size):
        counts[a[n], b[n]] += 1
    return counts
