"""numba kernels of the simulator; import them through :func:`synth._jit.kernels`, which falls
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
    (see :meth:`synth.simulate.Encoder._setup_jit`), ``rows``/``cx`` the FOV shifts and the
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
def kmeans_assign(mag, inv, c0, gy, gx, gt, labels):
    """labels[t, y, x] = argmin_k ((mag * inv - c0[k])^2 + (gy[k, y] + gx[k, x]) + gt[t, k]).

    float32 throughout, in the same order of operations as the NumPy code in
    :func:`synth.phase.kmeans_labels`, so the labels are identical; ties go to the lowest k
    (a running strict minimum).  Centres outer and pixels inner along each row, so it vectorises.
    """
    t_, ny, nx = mag.shape
    k_ = c0.shape[0]
    a = np.empty(nx, np.float32)
    best = np.empty(nx, np.float32)
    lab = np.empty(nx, np.int64)
    for t in range(t_):
        for y in range(ny):
            for x in range(nx):
                a[x] = numba.float32(mag[t, y, x]) * inv
            for k in range(k_):
                c = c0[k]
                g = gy[k, y]
                s = gt[t, k]
                gxk = gx[k]
                for x in range(nx):
                    d = a[x] - c
                    d = d * d
                    d = d + (g + gxk[x])
                    d = d + s
                    if k == 0 or d < best[x]:
                        best[x] = d
                        lab[x] = k
            for x in range(nx):
                labels[t, y, x] = lab[x]


@numba.njit(nogil=True, cache=True)
def pair_counts(a, b, k):
    """counts[p, q] = number of positions where a == p and b == q (a, b flat, values < k)."""
    counts = np.zeros((k, k), np.int64)
    for n in range(a.size):
        if a[n] >= k or b[n] >= k:
            raise ValueError("labels must be < the number of clusters")
        counts[a[n], b[n]] += 1
    return counts


@numba.njit(nogil=True, cache=True)
def lloyd_step(feats_t, centres, labels):
    """One Lloyd step on the fit subsample: nearest centre of every column of ``feats_t`` (F, N)
    into ``labels`` (ties to the lowest index), and the per-centre feature sums (float64 (K, F))
    and counts (K,) of that assignment.

    Same arithmetic as :func:`synth.phase._nearest` (float32 squared distances summed over the
    features in order, a running strict minimum over the centres) and ``np.bincount`` (float64
    sums in row order): identical results.  Centres outer, rows inner, so the loops vectorise.
    """
    nf, n = feats_t.shape
    k_ = centres.shape[0]
    best = np.empty(n, np.float32)
    d = np.empty(n, np.float32)
    for k in range(k_):
        d[:] = 0
        for f in range(nf):
            c = centres[k, f]
            x = feats_t[f]
            for i in range(n):
                e = x[i] - c
                d[i] = d[i] + e * e
        if k == 0:
            for i in range(n):
                best[i] = d[i]
                labels[i] = 0
        else:
            for i in range(n):
                if d[i] < best[i]:
                    best[i] = d[i]
                    labels[i] = k
    sums = np.zeros((k_, nf), np.float64)
    counts = np.zeros(k_, np.int64)
    for i in range(n):
        counts[labels[i]] += 1
    for f in range(nf):
        x = feats_t[f]
        for i in range(n):
            sums[labels[i], f] += x[i]
    return sums, counts
