r"""Synthetic image phase for magnitude-only DICOM.

The simulator turns magnitude images :math:`m_{i,t}` into coil images

.. math:: x_{c,i,t}(y, x) = m_{i,t}(y, x)\, S_{c,i}(y, x)\, e^{j\varphi_{c,i,t}(y, x)}

for coil ``c``, SMS slice ``i`` (of ``M``) and frame ``t``.  This module draws :math:`\varphi`.
The ``kmeans`` model is the paper's k-means cluster phase:

1. **Clusters.**  Each slice's magnitude series (T, Y, X) is split into ``K`` clusters by a 3D
   k-means over (t, y, x) (:func:`kmeans_labels`).  A voxel's feature vector is

   .. math:: f = \bigl(m / s,\; w_s\,\tilde y,\; w_s\,\tilde x,\; w_t\,\tilde t\bigr)

   with ``s`` the 99th percentile of the magnitude (so intensities are ~[0, 1]),
   :math:`\tilde y = (y - N_y/\!/2)/L`, :math:`\tilde x = (x - N_x/\!/2)/L` (``L = max(Ny, Nx)``:
   square pixels, units of the longer FOV side), :math:`\tilde t = (t - T/\!/2)/T`,
   ``w_s = SPATIAL_WEIGHT`` and ``w_t = TEMPORAL_WEIGHT``.  The spatial term makes clusters
   spatially coherent regions of similar intensity rather than scattered iso-intensity voxels;
   the weak temporal term lets a cluster follow tissue that moves (the labels of a voxel change
   when the heart wall moves through it) without cutting the series into time blocks, which
   would make the phase jump between frames.
2. **Cluster values, first slice.**  Per coil, each cluster ``k`` of slice 0 gets a constant
   :math:`v_{c,k} \sim \mathcal N(0, \sigma^2)`, :math:`\sigma = \pi/3`.
3. **Other slices: majority vote.**  Cluster ``k`` of slice ``i > 0`` takes the value of the
   slice-0 cluster that is most frequent among the slice-0 voxels at the same (t, y, x)
   positions as its own voxels; ties go to the lowest slice-0 label.  Slices of one SMS group
   thus share their phase structure as far as their anatomy overlaps.
4. **Grating.**  Per coil a sinusoidal grating, constant over slices and frames
   (:func:`grating_phase`), is added:

   .. math:: g_c(y, x) = a_c \sin\bigl(2\pi f_c (\tilde x\cos\theta_c + \tilde y\sin\theta_c)
             + \psi_c\bigr)

   with :math:`a_c \sim U(\pi/6, \pi/2)` rad, :math:`f_c \sim U(0.5, 3)` cycles per FOV (the
   longer side), :math:`\theta_c, \psi_c \sim U(0, 2\pi)`.

So :math:`\varphi_{c,i,t}(r) = v_{c,\,\kappa_i(k_{i}(t, r))} + g_c(r)` with :math:`k_i` the
labels of slice ``i`` and :math:`\kappa_i` its vote map (:math:`\kappa_0` = identity).  ``grating``
alone is the paper's "simple phase" ablation; ``none`` is zero phase.  Phases are in radians
and are **not** wrapped to (-pi, pi].

All randomness comes from the ``rng`` argument; the draw order is fixed (k-means of slice
0..M-1, then the cluster values, then the grating), so a seed reproduces an example exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth._jit import kernels
from synth.errors import ConfigError, DicomError

KINDS = ("kmeans", "grating", "none")

CLUSTER_SIGMA = np.pi / 3
SPATIAL_WEIGHT = 0.5
TEMPORAL_WEIGHT = 0.1
INTENSITY_PERCENTILE = 99.0
FIT_VOXELS = 20_000
MAX_ITER = 30
TOL = 1e-3  # feature units (intensity ~[0, 1]): moves below this relabel < 1 % of voxels
GRATING_AMPLITUDE = (np.pi / 6, np.pi / 2)
GRATING_FREQUENCY = (0.5, 3.0)

PHASE_MODEL: dict = {
    "model": "phi[c,i,t] = v[c, vote_i(label_i[t,y,x])] + a_c*sin(2*pi*f_c*(x*cos(theta_c)+y*sin(theta_c)) + psi_c)",
    "units": "radians, not wrapped",
    "cluster_value_distribution": "normal(0, sigma^2) per coil and slice-0 cluster",
    "cluster_sigma": float(CLUSTER_SIGMA),
    "other_slices": "majority vote of slice-0 labels under each cluster's voxels; ties -> lowest label",
    "kmeans_features": ["magnitude / p99(magnitude)", "w_s*(y - Ny//2)/L", "w_s*(x - Nx//2)/L",
                        "w_t*(t - T//2)/T"],
    "kmeans_L": "max(Ny, Nx)",
    "kmeans_spatial_weight": SPATIAL_WEIGHT,
    "kmeans_temporal_weight": TEMPORAL_WEIGHT,
    "kmeans_intensity_percentile": INTENSITY_PERCENTILE,
    "kmeans_init": "k-means++ on a random subsample",
    "kmeans_fit_voxels": FIT_VOXELS,
    "kmeans_max_iter": MAX_ITER,
    "kmeans_tol": TOL,
    "kmeans_assign": "every voxel to the nearest fitted centre (Euclidean, float32)",
    "grating_amplitude_rad": [float(v) for v in GRATING_AMPLITUDE],
    "grating_frequency_cycles_per_fov": list(GRATING_FREQUENCY),
    "grating_orientation_rad": [0.0, float(2 * np.pi)],
    "grating_offset_rad": [0.0, float(2 * np.pi)],
    "grating_fov": "longer side, L = max(Ny, Nx) pixels; constant over slices and frames",
    "draw_order": ["cluster values (C, K)", "grating (per coil: a, f, theta, psi)"],
    "kmeans_seed": "per slice: SeedSequence(seed, spawn_key=sha256('kmeans|<series key>:<slice>|K')); a slice has the "
                   "same clusters in every example, its cluster values are drawn per example",
}


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")


def _check_counts(n_coils: int | None = None, n_clusters: int | None = None) -> None:
    if n_coils is not None and int(n_coils) < 1:
        raise ConfigError(f"--coils: must be >= 1, got {n_coils}")
    if n_clusters is not None and int(n_clusters) < 1:
        raise ConfigError(f"--clusters: must be >= 1, got {n_clusters}")


def _axes(t: int, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted, centred feature coordinates (float32 (T,), (Y,), (X,))."""
    side = float(max(ny, nx))
    ft = TEMPORAL_WEIGHT * (np.arange(t, dtype=np.float32) - t // 2) / np.float32(t)
    fy = SPATIAL_WEIGHT * (np.arange(ny, dtype=np.float32) - ny // 2) / np.float32(side)
    fx = SPATIAL_WEIGHT * (np.arange(nx, dtype=np.float32) - nx // 2) / np.float32(side)
    return ft.astype(np.float32), fy.astype(np.float32), fx.astype(np.float32)


def _kmeans_pp(feats: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: float32 (K, F) centres chosen among the rows of ``feats`` (N, F)."""
    n = feats.shape[0]
    centres = np.empty((k, feats.shape[1]), np.float32)
    centres[0] = feats[rng.integers(n)]
    d2 = ((feats - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        total = float(d2.sum(dtype=np.float64))
        if total > 0:
            p = d2.astype(np.float64) / total
            idx = rng.choice(n, p=p)
        else:  # every point coincides with a centre already: any choice is as good
            idx = rng.integers(n)
        centres[j] = feats[idx]
        np.minimum(d2, ((feats - centres[j]) ** 2).sum(1), out=d2)
    return centres


def _argmin0(d: np.ndarray, out: np.ndarray, best: np.ndarray | None = None) -> np.ndarray:
    """``out[...] = d.argmin(0)`` for a short axis 0 (the K centres), ties to the lowest index.

    A running minimum over the K rows: each step is a contiguous pass, about 1.6x faster than
    ``argmin`` over a leading axis (and ``out`` may be a small integer type).  ``best`` is
    scratch of ``d[0]``'s shape.
    """
    best = np.empty_like(d[0]) if best is None else best
    np.copyto(best, d[0])
    out[...] = 0
    less = np.empty(d.shape[1:], bool)
    for j in range(1, d.shape[0]):
        np.less(d[j], best, out=less)  # strict: a tie keeps the lower index
        np.minimum(best, d[j], out=best)
        np.putmask(out, less, j)
    return out


def _nearest(feats: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre, int (N,), for a small (N, F) set (the fit subsample)."""
    # explicit sums rather than ``feats @ centres.T``: a multi-threaded BLAS call this small
    # runs up to 8x slower when the cores are busy (measured on the 2-core dev machine)
    d = np.zeros((centres.shape[0], feats.shape[0]), np.float32)
    for f in range(feats.shape[1]):
        d += (feats[None, :, f] - centres[:, f, None]) ** 2
    return _argmin0(d, np.empty(feats.shape[0], np.intp))


def _lloyd(feats: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Lloyd iterations until the labels stop changing, no centre moves more than ``TOL``, or ``MAX_ITER``."""
    k, nf = centres.shape
    labels = None
    jit = kernels()
    feats_t = None if jit is None else np.ascontiguousarray(feats.T)
    for _ in range(MAX_ITER):
        if jit is not None:  # the same labels and sums, compiled
            new = np.empty(feats.shape[0], np.intp)
            sums, counts = jit.lloyd_step(feats_t, centres, new)
        else:
            new = _nearest(feats, centres)
            counts = np.bincount(new, minlength=k)
            sums = np.stack([np.bincount(new, weights=feats[:, f], minlength=k) for f in range(nf)], 1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        old = centres.copy()
        for f in range(nf):
            # an emptied cluster keeps its old centre (it may win voxels back later)
            np.divide(sums[:, f], counts, out=centres[:, f], where=counts > 0, casting="unsafe")
        if np.abs(centres - old).max() < TOL:
            break
    return centres


def kmeans_labels(magnitude: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """3D k-means labels of one slice's magnitude series.

    The features are intensity and weighted (t, y, x) coordinates (see the module docstring and
    ``PHASE_MODEL``).  The centres are fitted by k-means++ and Lloyd iterations on a random
    subsample of at most ``FIT_VOXELS`` voxels drawn from ``rng``; then every voxel is assigned to
    its nearest centre.

    Parameters
    ----------
    magnitude : float (T, Y, X)
        Non-negative magnitude images (any units; only relative intensity matters).
    n_clusters : int
        K >= 1.
    rng : numpy.random.Generator
        Source of the subsample and the k-means++ seeding.

    Returns
    -------
    labels : uint8 (T, Y, X) (uint16 for K > 256, see :func:`compact_labels`)
        Cluster index in ``[0, K)``.  A cluster can end up empty.
    """
    _check_rng(rng)
    _check_counts(n_clusters=n_clusters)
    mag = np.asarray(magnitude)
    if mag.ndim != 3:
        raise ValueError(f"magnitude must be (T, Y, X), got shape {mag.shape}")
    if not np.isfinite(mag).all():
        raise DicomError("magnitude images contain NaN or infinite values; check the input DICOM pixel data")
    k = int(n_clusters)
    t, ny, nx = mag.shape
    n = mag.size
    ft, fy, fx = _axes(t, ny, nx)

    # fit on a subsample
    m = min(n, FIT_VOXELS)
    idx = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    it, iy, ix = np.unravel_index(idx, mag.shape)
    sample = mag.reshape(-1)[idx].astype(np.float32)
    scale = float(np.percentile(sample, INTENSITY_PERCENTILE)) if m else 0.0
    if not scale > 0:
        scale = float(np.abs(mag).max()) or 1.0
    inv = np.float32(1.0 / scale)
    feats = np.stack([sample * inv, fy[iy], fx[ix], ft[it]], axis=1).astype(np.float32)
    centres = _lloyd(feats, _kmeans_pp(feats, k, rng))

    # assign all voxels; the (y, x) part of the squared distance is the same for every frame
    gy = (fy[None, :] - centres[:, 1:2]) ** 2  # (K, Y)
    gx = (fx[None, :] - centres[:, 2:3]) ** 2  # (K, X)
    gt = (ft[:, None] - centres[None, :, 3]) ** 2  # (T, K)
    labels = np.empty(mag.shape, compact_labels(np.zeros(0, np.intp), k).dtype)
    jit = kernels()
    if jit is not None:
        c0 = np.ascontiguousarray(centres[:, 0])
        jit.kmeans_assign(np.ascontiguousarray(mag), inv, c0, np.ascontiguousarray(gy), np.ascontiguousarray(gx),
                          np.ascontiguousarray(gt), labels)
        return labels
    # NumPy: one frame at a time, so that the (K, Y, X) distance block stays in cache
    ci = centres[:, 0][:, None, None]
    gyx = gy[:, :, None] + gx[:, None, :]
    d = np.empty((k, ny, nx), np.float32)
    best = np.empty((ny, nx), np.float32)
    for ti in range(t):
        np.subtract(mag[ti].astype(np.float32, copy=False) * inv, ci, out=d)
        np.square(d, out=d)
        d += gyx
        d += gt[ti][:, None, None]
        _argmin0(d, labels[ti], best)  # ties -> lowest centre index
    return labels


def unit_phasor(angle) -> np.ndarray:
    """complex64 ``exp(1j * angle)`` for a real array, from float32 cosine and sine.

    NumPy's vectorised float32 ``cos``/``sin`` are about 30x faster than the complex ``exp``
    (2 ms per 224^2 map here), agreeing to a few float32 ulps.
    """
    a = np.asarray(angle, dtype=np.float32)
    out = np.empty(a.shape, np.complex64)
    out.real = np.cos(a)
    out.imag = np.sin(a)
    return out


def compact_labels(labels, n_clusters: int) -> np.ndarray:
    """Labels in the smallest unsigned type that holds ``n_clusters`` values (uint8 for K <= 256).

    The lookups that build the phase read 1 byte per voxel instead of 8, and an example's labels
    stay in cache while all its coils go through them.  No copy if already of that type.
    """
    dtype = np.uint8 if n_clusters <= 1 << 8 else np.uint16 if n_clusters <= 1 << 16 else np.uint32
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got {lab.dtype}")
    return lab if lab.dtype == dtype else lab.astype(dtype)


def _vote(labels_i: np.ndarray, labels_0: np.ndarray, k: int) -> np.ndarray:
    """For each cluster of slice i, the most frequent slice-0 label under it: int (K,)."""
    jit = kernels()
    if jit is not None:  # one pass, without the GIL (bincount holds it)
        counts = jit.pair_counts(np.ascontiguousarray(labels_i).reshape(-1), np.ascontiguousarray(labels_0).reshape(-1), k)
    else:
        counts = np.bincount((labels_i.astype(np.intp) * k + labels_0).ravel(), minlength=k * k).reshape(k, k)
    return counts.argmax(1)  # argmax: ties (and empty clusters) -> lowest label


def _check_magnitudes(magnitudes) -> np.ndarray:
    mags = np.asarray(magnitudes)
    if mags.ndim != 4:
        raise ValueError(f"magnitudes must be (M, T, Y, X), got shape {mags.shape}")
    return mags


@dataclass(frozen=True)
class PhaseParts:
    """The synthetic phase of one example in factored form.

    :math:`\varphi_{c,i,t} = \text{tables}[c, i, \text{labels}_i(t, y, x)] + \text{grating}[c]`,
    each term optional.  The factored form lets the simulator build :math:`e^{j\varphi}` from K
    complex table entries and one (Y, X) grating phasor per coil instead of C*M*T*Y*X
    cosines and sines (:meth:`phasor`); :meth:`phase` gives the full array for the store.

    Attributes
    ----------
    shape : (M, T, Y, X)
    n_coils : C
    labels : per slice (T, Y, X) cluster labels (:func:`compact_labels`), or None (no cluster term)
    tables : float32 (C, M, K) radians, cluster values after the majority vote, or None
    grating : float32 (C, Y, X) radians, or None
    """

    shape: tuple[int, int, int, int]
    n_coils: int
    labels: tuple[np.ndarray, ...] | None = None
    tables: np.ndarray | None = None
    grating: np.ndarray | None = None

    def phase(self) -> np.ndarray:
        """float32 (C, M, T, Y, X) radians."""
        c = self.n_coils
        out = np.empty((c,) + tuple(self.shape), np.float32)
        if self.labels is None:
            out[...] = 0 if self.grating is None else self.grating[:, None, None]
            return out
        for i, lab in enumerate(self.labels):
            for ci in range(c):
                # take(..., mode="clip") writes straight into the contiguous out[ci, i] (labels are
                # in range, so clip never acts); 3x faster than a (C, T, Y, X) fancy-index temporary
                np.take(self.tables[ci, i], lab, out=out[ci, i], mode="clip")
                if self.grating is not None:
                    out[ci, i] += self.grating[ci]
        return out

    def phase_block(self, coil: int, t0: int, t1: int, out: np.ndarray | None = None, block_labels=None) -> np.ndarray:
        """float32 (M, t1-t0, Y, X): ``phase()[coil, :, t0:t1]`` (written into ``out`` if given).

        ``block_labels``: the slices' labels of frames ``t0:t1`` already at hand (e.g. as intp,
        converted once for all coils); taken from :attr:`labels` when None.
        """
        m, _, ny, nx = self.shape
        if out is None:
            out = np.empty((m, t1 - t0, ny, nx), np.float32)
        if self.labels is None:
            out[...] = 0 if self.grating is None else self.grating[coil]
            return out
        if block_labels is None:
            block_labels = [lab[t0:t1] for lab in self.labels]
        for i, lab in enumerate(block_labels):
            np.take(self.tables[coil, i], lab, out=out[i], mode="clip")
            if self.grating is not None:
                out[i] += self.grating[coil]
        return out

    def grating_phasor(self, coil: int) -> np.ndarray | None:
        """complex64 (Y, X) ``exp(1j * grating[coil])``, or None without a grating."""
        return None if self.grating is None else unit_phasor(self.grating[coil])

    def phasor(self, coil: int) -> np.ndarray:
        """complex64 (M, T, Y, X): ``exp(1j * phase()[coil])`` by table lookup."""
        out = np.empty(tuple(self.shape), np.complex64)
        g = self.grating_phasor(coil)
        if self.labels is None:
            out[...] = 1 if g is None else g
            return out
        table = unit_phasor(self.tables[coil])  # (M, K)
        for i, lab in enumerate(self.labels):
            np.take(table[i], lab, out=out[i], mode="clip")
            if g is not None:
                out[i] *= g
        return out


def _cluster_parts(mags, n_coils, n_clusters, rng, with_grating: bool, labels=None) -> PhaseParts:
    """Cluster phase (+ grating) in factored form; draw order: k-means (unless ``labels`` are
    given), values, grating."""
    c, k = int(n_coils), int(n_clusters)
    if labels is None:
        labels = [kmeans_labels(mags[i], k, rng) for i in range(mags.shape[0])]
    elif len(labels) != mags.shape[0] or any(np.shape(lab) != mags.shape[1:] for lab in labels):
        raise ValueError(f"labels must be M={mags.shape[0]} arrays of shape {mags.shape[1:]}")
    labels = tuple(compact_labels(lab, k) for lab in labels)
    values = rng.normal(0.0, CLUSTER_SIGMA, size=(c, k)).astype(np.float32)
    g = grating_phase(c, mags.shape[-2:], rng) if with_grating else None  # drawn after the values
    tables = np.stack([values if i == 0 else values[:, _vote(lab, labels[0], k)] for i, lab in enumerate(labels)], 1)
    return PhaseParts(tuple(mags.shape), c, labels, np.ascontiguousarray(tables), g)


def _cluster_phase(mags, n_coils, n_clusters, rng) -> np.ndarray:
    return _cluster_parts(mags, n_coils, n_clusters, rng, with_grating=False).phase()


def cluster_phase(magnitudes: np.ndarray, n_coils: int, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    r"""The paper's k-means cluster phase, without the grating.

    :math:`\varphi_{c,i,t}(y,x) = v_{c,\kappa_i(k_i(t,y,x))}` with :math:`v_{c,k} \sim
    \mathcal N(0, (\pi/3)^2)`, :math:`k_i` the k-means labels of slice ``i`` and :math:`\kappa_i`
    the majority-vote map onto slice-0 clusters (identity for slice 0).

    Parameters
    ----------
    magnitudes : float (M, T, Y, X)
        Magnitude series of the M slices of one SMS example.
    n_coils : int
        C.
    n_clusters : int
        K of the k-means.
    rng : numpy.random.Generator

    Returns
    -------
    phase : float32 (C, M, T, Y, X)
        Radians.
    """
    _check_rng(rng)
    _check_counts(n_coils, n_clusters)
    return _cluster_phase(_check_magnitudes(magnitudes), n_coils, n_clusters, rng)


def grating_phase(n_coils: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    r"""Per-coil sinusoidal phase grating.

    .. math:: g_c(y, x) = a_c \sin\bigl(2\pi f_c (\tilde x\cos\theta_c + \tilde y\sin\theta_c)
              + \psi_c\bigr)

    with :math:`\tilde y = (y - N_y/\!/2)/L`, :math:`\tilde x = (x - N_x/\!/2)/L`,
    ``L = max(Ny, Nx)``; :math:`a_c \sim U(\pi/6, \pi/2)`, :math:`f_c \sim U(0.5, 3)` cycles per
    FOV, :math:`\theta_c, \psi_c \sim U(0, 2\pi)` (drawn per coil in that order).

    Parameters
    ----------
    n_coils : int
        C.
    shape : (Ny, Nx)
    rng : numpy.random.Generator

    Returns
    -------
    grating : float32 (C, Y, X)
        Radians; broadcast it over slices and frames.
    """
    _check_rng(rng)
    _check_counts(n_coils)
    ny, nx = (int(s) for s in shape)
    c = int(n_coils)
    draws = rng.random((c, 4))
    amp = GRATING_AMPLITUDE[0] + (GRATING_AMPLITUDE[1] - GRATING_AMPLITUDE[0]) * draws[:, 0]
    freq = GRATING_FREQUENCY[0] + (GRATING_FREQUENCY[1] - GRATING_FREQUENCY[0]) * draws[:, 1]
    theta = 2 * np.pi * draws[:, 2]
    psi = 2 * np.pi * draws[:, 3]
    side = float(max(ny, nx))
    y = (np.arange(ny) - ny // 2) / side
    x = (np.arange(nx) - nx // 2) / side
    # sin(u + v) = sin(u) cos(v) + cos(u) sin(v) with u along x and v (+ psi) along y: C*(Y+X)
    # sines and cosines instead of C*Y*X
    u = (2 * np.pi * freq * np.cos(theta))[:, None] * x[None, :]  # (C, X)
    v = (2 * np.pi * freq * np.sin(theta))[:, None] * y[None, :] + psi[:, None]  # (C, Y)
    a = amp[:, None, None]
    out = (a * np.cos(v)[:, :, None]).astype(np.float32) * np.sin(u).astype(np.float32)[:, None, :]
    out += (a * np.sin(v)[:, :, None]).astype(np.float32) * np.cos(u).astype(np.float32)[:, None, :]
    return out


def phase_parts(
    magnitudes: np.ndarray,
    n_coils: int,
    kind: str,
    n_clusters: int,
    rng: np.random.Generator,
    labels=None,
) -> PhaseParts:
    """The synthetic phase of one SMS example in factored form (see :class:`PhaseParts`).

    Same arguments and the same random draws as :func:`synthesize_phase`;
    ``phase_parts(...).phase()`` equals ``synthesize_phase(...)``.  ``labels`` (M arrays int
    (T, Y, X)) are precomputed k-means labels of the slices: the simulator clusters each slice
    once, with a seed of its own, and reuses the labels in every example the slice is part of
    (the cluster values are still drawn per example from ``rng``).
    """
    if kind not in KINDS:
        raise ConfigError(f"--phase: must be one of {KINDS}, got {kind!r}")
    _check_rng(rng)
    _check_counts(n_coils, n_clusters)
    mags = _check_magnitudes(magnitudes)
    c = int(n_coils)
    if kind == "none":
        return PhaseParts(tuple(mags.shape), c)
    if kind == "grating":
        return PhaseParts(tuple(mags.shape), c, grating=grating_phase(c, mags.shape[-2:], rng))
    return _cluster_parts(mags, c, n_clusters, rng, with_grating=True, labels=labels)


def synthesize_phase(
    magnitudes: np.ndarray, n_coils: int, kind: str, n_clusters: int, rng: np.random.Generator
) -> np.ndarray:
    """Synthetic phase of one SMS example.

    Parameters
    ----------
    magnitudes : float (M, T, Y, X)
        Magnitude series of the M slices.
    n_coils : int
        C.
    kind : {"kmeans", "grating", "none"}
        ``kmeans``: :func:`cluster_phase` plus :func:`grating_phase` (the paper's model);
        ``grating``: the grating alone (the paper's "simple phase" ablation); ``none``: zeros.
    n_clusters : int
        K (used by ``kmeans`` only, but validated always).
    rng : numpy.random.Generator

    Returns
    -------
    phase : float32 (C, M, T, Y, X)
        Radians, not wrapped.
    """
    return phase_parts(magnitudes, n_coils, kind, n_clusters, rng).phase()
