r"""Synthetic image phase for magnitude-only DICOM.

The simulator turns magnitude images :math:`m_{i,t}` into coil images

.. math:: x_{c,i,t}(y, x) = m_{i,t}(y, x)\, S_{c,i}(y, x)\, e^{j\varphi_{c,i,t}(y, x)}

for coil ``c``, SMS slice ``i`` (of ``M``) and frame ``t``.  This module draws :math:`\varphi`.
The ``kmeans`` model is the paper's k-means cluster phase:

1. **Clusters.**  Each slice's magnitude series (T, Y, X) is split into ``K`` clusters by a 3D
   k-means over (t, y, x) (:func:`kmeans_labels`, scikit-learn's ``KMeans``).  A voxel's
   feature vector is

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

import functools
from dataclasses import dataclass

import numpy as np

from synth.errors import ConfigError, DicomError
from synth.physics._jit import kernels

KINDS = ("kmeans", "grating", "none")

CLUSTER_SIGMA = np.pi / 3
SPATIAL_WEIGHT = 0.5
TEMPORAL_WEIGHT = 0.1
INTENSITY_PERCENTILE = 99.0
FIT_VOXELS = 20_000
N_INIT = 1  # one k-means++ seeding: the seed is part of the slice's identity, not a search over seeds
MAX_ITER = 30
TOL = 1e-3  # scikit-learn's: total squared centre shift / mean feature variance; 1e-4 takes ~18
# Lloyd steps instead of ~11 on Sunnybrook cine slices for the same within-cluster spread
ALGORITHM = "lloyd"  # Elkan's bounds do not pay off for 4 features and a few clusters (slower here)
PREDICT_VOXELS = 1 << 20  # voxels per KMeans.predict call (16 MB of features; a 20 x 224^2 slice in one)
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
    "kmeans_implementation": "scikit-learn KMeans, fitted with one OpenMP thread",
    "kmeans_algorithm": ALGORITHM,
    "kmeans_init": "k-means++ (scikit-learn's greedy variant) on a random subsample",
    "kmeans_n_init": N_INIT,
    "kmeans_fit_voxels": FIT_VOXELS,
    "kmeans_max_iter": MAX_ITER,
    "kmeans_tol": TOL,
    "kmeans_tol_units": "scikit-learn's: squared centre shift summed over centres, relative to the mean feature variance",
    "kmeans_assign": "every voxel to the nearest fitted centre (KMeans.predict, float32)",
    "grating_amplitude_rad": [float(v) for v in GRATING_AMPLITUDE],
    "grating_frequency_cycles_per_fov": list(GRATING_FREQUENCY),
    "grating_orientation_rad": [0.0, float(2 * np.pi)],
    "grating_offset_rad": [0.0, float(2 * np.pi)],
    "grating_fov": "longer side, L = max(Ny, Nx) pixels; constant over slices and frames",
    "draw_order": ["cluster values (C, K)", "grating (per coil: a, f, theta, psi)"],
    "kmeans_seed": "per slice: SeedSequence(seed, spawn_key=sha256('kmeans|<series key>:<slice>|K')) draws the "
                   "subsample, then KMeans's random_state = integers(2**31 - 1); a slice has the same clusters in "
                   "every example, its cluster values are drawn per example",
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


def _features(mag: np.ndarray, inv: np.float32, axes, flat=None) -> np.ndarray:
    """float32 (N, 4) k-means features (intensity, y, x, t) of the voxels ``flat`` (all if None)."""
    ft, fy, fx = axes
    if flat is not None:
        it, iy, ix = np.unravel_index(flat, mag.shape)
        return np.stack([mag.reshape(-1)[flat].astype(np.float32) * inv, fy[iy], fx[ix], ft[it]], axis=1)
    t, ny, nx = mag.shape
    f = np.empty((t, ny, nx, 4), np.float32)
    np.multiply(mag.astype(np.float32, copy=False), inv, out=f[..., 0])
    f[..., 1] = fy[None, :, None]
    f[..., 2] = fx[None, None, :]
    f[..., 3] = ft[:, None, None]
    return f.reshape(-1, 4)


@functools.cache
def _sklearn():
    """scikit-learn's ``KMeans`` and a threadpool controller, imported on first use (the import
    takes about a second and only ``--phase kmeans`` needs it)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import ThreadpoolController

    return KMeans, ThreadpoolController()


def kmeans_labels(magnitude: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """3D k-means labels of one slice's magnitude series.

    The features are intensity and weighted (t, y, x) coordinates (see the module docstring and
    ``PHASE_MODEL``).  scikit-learn's ``KMeans`` (k-means++ seeding, Lloyd iterations) is fitted
    on a random subsample of at most ``FIT_VOXELS`` voxels drawn from ``rng``, seeded with an
    integer drawn from ``rng`` after it; then every voxel is assigned to its nearest centre
    (``KMeans.predict``).  A slice with fewer voxels than ``K`` is fitted with one cluster per
    voxel (the other labels stay unused).

    Parameters
    ----------
    magnitude : float (T, Y, X)
        Non-negative magnitude images (any units; only relative intensity matters).
    n_clusters : int
        K >= 1.
    rng : numpy.random.Generator
        Source of the subsample and of the k-means seed.

    Returns
    -------
    labels : uint8 (T, Y, X) (uint16 for K > 256, see :func:`compact_labels`)
        Cluster index in ``[0, K)``, in scikit-learn's order of the centres (no meaning attached
        to it).  A cluster can end up empty.  The same magnitudes and generator state give the
        same labels, whatever the number of cores.
    """
    _check_rng(rng)
    _check_counts(n_clusters=n_clusters)
    mag = np.asarray(magnitude)
    if mag.ndim != 3:
        raise ValueError(f"magnitude must be (T, Y, X), got shape {mag.shape}")
    if not np.isfinite(mag).all():
        raise DicomError("magnitude images contain NaN or infinite values; check the input DICOM pixel data")
    k = int(n_clusters)
    n = mag.size
    axes = _axes(*mag.shape)

    # fit on a subsample
    m = min(n, FIT_VOXELS)
    idx = np.sort(rng.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    sample = mag.reshape(-1)[idx].astype(np.float32)
    scale = float(np.percentile(sample, INTENSITY_PERCENTILE)) if m else 0.0
    if not scale > 0:
        scale = float(np.abs(mag).max()) or 1.0
    inv = np.float32(1.0 / scale)
    seed = int(rng.integers(2**31 - 1))
    labels = np.empty(mag.shape, compact_labels(np.zeros(0, np.intp), k).dtype)
    if n == 0:
        return labels
    kmeans, threads = _sklearn()
    km = kmeans(n_clusters=min(k, m), init="k-means++", n_init=N_INIT, max_iter=MAX_ITER, tol=TOL,
                algorithm=ALGORITHM, random_state=seed)
    # One OpenMP thread: scikit-learn's Lloyd step sums the centres per thread, in whatever order
    # the threads finish, so with more threads the float32 centres (and then labels) could
    # depend on the core count and the run.  The limit is per calling thread (libgomp keeps it
    # per thread), so the simulator's coil threads are unaffected; they keep the cores busy anyway.
    with threads.limit(limits=1, user_api="openmp"):
        km.fit(_features(mag, inv, axes, idx))
        # assign in blocks of frames: the (N, 4) features of a block stay small and in cache
        per = max(1, PREDICT_VOXELS // (mag.shape[1] * mag.shape[2]))
        for t0 in range(0, mag.shape[0], per):
            block = mag[t0:t0 + per]
            labels[t0:t0 + per] = km.predict(_features(block, inv, (axes[0][t0:t0 + per],) + axes[1:])).reshape(block.shape)
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
