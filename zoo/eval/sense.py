r"""SMS-SENSE baselines: the slice stack from every coil's data and coil maps, by conjugate gradient.

Forward model
-------------
The 3D view of SMS (:mod:`zoo.physics`, the paper's supplement) with coil sensitivities: for
coil ``c``

.. math:: y_c = P\, F_3\, (S_c \odot x), \qquad A = \begin{bmatrix} P F_3 S_1 \\ \vdots \\ P F_3 S_C
          \end{bmatrix},

``x`` the complex slice stack (M, T, Y, X), ``S_c`` the coil map (M, T or 1, Y, X), ``F_3`` =
:func:`zoo.physics.fft3` (unitary) and ``P = diag(mask3)`` the 3D sampling pattern of the dataset
item, whatever its kz ordering (the operator takes ``mask3`` as given).  SENSE (Pruessmann et al.,
"SENSE: sensitivity encoding for fast MRI", MRM 1999; for SMS: Larkman et al. JMRI 2001, and
CAIPIRINHA, Breuer et al. MRM 2005/2006, whose 3D-k-space view this is) solves the regularised
normal equations

.. math:: (A^H A + \lambda D_t^H D_t)\, x = A^H y

by conjugate gradient (Hestenes & Stiefel 1952), ``D_t`` the forward temporal difference (not
cyclic), from ``x = 0``.  ``λ`` is Tikhonov on temporal finite differences: ``λ = 0`` is plain
(CG-)SENSE.  It is absolute and scale-free: with unit-norm maps ``||A|| <= 1`` and both terms are
quadratic in the data scale, so a value carries over between data scalings.  Defaults ``λ = 0.01``
and 30 CG iterations (:data:`DEFAULTS`), picked on a noise-free 96 x 96, 16-frame, 8-coil SMS-2
R-2 store of the cine phantom (k-means phase): the oracle's PSNR was 38.6 / 51.1 / 52.8 / 52.8 dB
after 10 / 20 / 30 / 60 iterations at λ = 0.01, while at λ = 0.001 it was still climbing
(30.7 / 36.8 / 43.9 / 56.2 dB) and λ = 0 gave 34 dB after 30 -- the temporal term also
conditions the problem, because the sampling pattern moves from frame to frame.  ESPIRiT maps, inexact for the per-coil k-means phase, did
better with more regularisation there (22.5 / 26.3 / 28.4 dB at λ = 0.01 / 0.03 / 0.1); λ is
an option (``--sense-lam``) because the best value depends on the data and its noise.  One
iteration costs one ``fft3`` and one ``ifft3`` per coil.

Coil maps
---------
``sense-oracle`` (an **oracle**: it uses the simulation's ground truth)
    The store's exact per-coil sensitivities ``S_c = csm_c * exp(j * phase_c)`` (M, T, Y, X).
    The synthetic phase is drawn **per coil** (``synth.physics.phase``: per-coil cluster values and
    grating), so ``csm`` alone is not the coil's sensitivity in this forward model: with ``csm``
    only, a fully sampled noise-free SENSE returns ``target * |Σ_c |csm_c|² e^{jφ_c}|`` (an NMSE of
    0.12 on the cine phantom with the default k-means phase, 0.03--0.05 with the grating alone).  With ``S_c`` the model is exact:
    ``x_c = target * S_c``, ``Σ_c |S_c|² = 1``, so the SENSE image is ``target`` itself (real,
    non-negative) and ``|x|`` is compared with the store's ``target``.
``sense-espirit``
    Maps estimated by ESPIRiT (Uecker et al., MRM 2014; ``sigpy.mri.app.EspiritCalib``, one set
    of maps, its default kernel 6, threshold 0.02, eigenvalue crop 0.95) from a **simulated
    single-band reference**: collapsed SMS data cannot calibrate each slice by themselves (in the
    3D view each ky row is only ever measured at one kz), so, as clinical SMS does with a
    separate single-band scan, each slice's coil images at the time-averaged frame,
    ``r_c = mean_t(target * csm_c * exp(j phase_c))``, are transformed (``fft2c``) and their
    centre ``calib`` rows kept, plus complex Gaussian noise of the store's ``noise_sigma`` when
    it is > 0, from ``np.random.default_rng([seed, store index])``.  ESPIRiT's calibration region
    is square, ``calib x calib`` around DC; ``calib`` defaults to the store's ``acs``, raised to
    :data:`MIN_CALIB` (a 6 x 6 kernel needs a larger region than the 4--8 ACS rows of typical
    stores: an 8 x 8 region gives 9 kernel positions for 8 x 36 unknowns).  A single-band
    reference is a separate acquisition, so its size is not bound to the SMS scan's ACS.
    ESPIRiT maps are unit-norm over coils where the eigenvalue exceeds the crop (signal), 0
    elsewhere, with the phase of coil 0 removed: a common phase per pixel, which SENSE is
    invariant to up to the same phase in ``x``, so ``|x|`` is again comparable with ``target``
    (the RSS of the coil images, since Σ_c |csm_c|² = 1).  They are time-independent: where the
    per-coil synthetic phase changes over time (k-means clusters following motion), the model
    is not exact, as in a real scan with motion between reference and SMS scans.

Both always use every coil (per-coil data), whatever coil mode the models use.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from synth.errors import ConfigError
from zoo.physics import fft2c, fft3, ifft3

_T = -3  # time axis of the image layout (..., M, T, Y, X)

KINDS = ("oracle", "espirit")
MIN_CALIB = 24
DEFAULTS = {"lam": 0.01, "n_iter": 30}
ESPIRIT = {"kernel_width": 6, "thresh": 0.02, "crop": 0.95, "max_iter": 100}

__all__ = [
    "DEFAULTS", "ESPIRIT", "KINDS", "MIN_CALIB", "SenseBaseline", "SenseOperator", "conjugate_gradient",
    "espirit_maps", "oracle_maps", "sense_recon", "single_band_reference",
]


# --- the operator -----------------------------------------------------------------------------


class SenseOperator:
    r"""``A x = mask3 * fft3(maps * x)`` per coil, with adjoint and normal operator.

    Parameters
    ----------
    maps : complex (B, C, M, T or 1, Y, X)
        Coil maps (a time axis of 1 broadcasts over frames).
    mask3 : bool (B, Kz=M, T, Ky, 1)
        3D sampling pattern (as :class:`zoo.data.SmsDataset` items give it).

    ``x`` complex (B, M, T, Y, X) -> ``y`` complex (B, C, Kz=M, T, Ky, Kx).
    """

    def __init__(self, maps: Tensor, mask3: Tensor):
        if maps.ndim != 6 or mask3.ndim != 5:
            raise ValueError(f"SenseOperator: maps must be (B, C, M, T|1, Y, X) and mask3 (B, M, T, Ky, 1), "
                             f"got {tuple(maps.shape)} and {tuple(mask3.shape)}")
        self.maps = maps
        self.mask = mask3.to(torch.bool)[:, None]  # (B, 1, M, T, Ky, 1): broadcasts over coils

    def forward(self, x: Tensor) -> Tensor:
        """(B, M, T, Y, X) -> (B, C, M, T, Ky, Kx)."""
        return fft3(self.maps * x[:, None]) * self.mask

    def adjoint(self, y: Tensor) -> Tensor:
        """(B, C, M, T, Ky, Kx) -> (B, M, T, Y, X)."""
        return (self.maps.conj() * ifft3(y * self.mask)).sum(dim=1)

    def normal(self, x: Tensor) -> Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    __call__ = forward


def _diff_t(x: Tensor) -> Tensor:
    """Forward temporal difference ``D_t``: (..., T, Y, X) -> (..., T-1, Y, X) (also CS's, :mod:`zoo.eval.baselines`)."""
    return torch.diff(x, dim=_T)


def _diff_t_adjoint(p: Tensor) -> Tensor:
    """``D_t^H``: (..., T-1, Y, X) -> (..., T, Y, X), ``q[t-1] - q[t]`` with ``q`` zero beyond the ends."""
    shape = list(p.shape)
    shape[_T] = 1
    z = p.new_zeros(shape)
    return torch.cat([z, p], dim=_T) - torch.cat([p, z], dim=_T)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Per-example real inner product ``Re <a, b>``: (B, ...) x2 -> (B, 1, ..., 1) float."""
    d = (a.conj() * b).real.flatten(1).sum(dim=1)
    return d.reshape(-1, *([1] * (a.ndim - 1)))


def conjugate_gradient(normal, rhs: Tensor, n_iter: int, x: Tensor | None = None,
                       tol: float = 0.0) -> tuple[Tensor, Tensor]:
    r"""Solve ``normal(x) = rhs`` for a Hermitian positive (semi-)definite ``normal`` by CG.

    Batched: every example (dim 0) has its own step sizes.  Stops after ``n_iter`` iterations,
    or earlier once every example's residual ``||r|| <= tol * ||rhs||``.

    Returns ``(x, relative residual (B,))``, the latter ``||rhs - normal(x)|| / ||rhs||`` as CG
    tracks it.
    """
    x = torch.zeros_like(rhs) if x is None else x
    r = rhs - normal(x) if x.abs().amax() > 0 else rhs.clone()
    p = r.clone()
    rr = _dot(r, r)
    bb = torch.clamp(_dot(rhs, rhs), min=torch.finfo(rr.dtype).tiny)
    tiny = torch.finfo(rr.dtype).tiny
    for _ in range(int(n_iter)):
        if tol > 0 and bool((rr <= (tol**2) * bb).all()):
            break
        q = normal(p)
        pq = _dot(p, q)
        alpha = torch.where(pq > tiny, rr / torch.clamp(pq, min=tiny), torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * q
        rr_new = _dot(r, r)
        beta = torch.where(rr > tiny, rr_new / torch.clamp(rr, min=tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return x, (rr / bb).sqrt().flatten()


def sense_recon(k3: Tensor, mask3: Tensor, maps: Tensor, lam: float | None = None,
                n_iter: int | None = None, tol: float = 0.0) -> Tensor:
    r"""SMS-SENSE: CG on ``(A^H A + lam D_t^H D_t) x = A^H y`` (module doc).

    Parameters
    ----------
    k3 : complex64 (B, C, Kz=M, T, Ky, Kx)
        Every coil's measured 3D k-space (entries off ``mask3`` are ignored).
    mask3 : bool (B, Kz=M, T, Ky, 1)
        3D sampling pattern.
    maps : complex64 (B, C, M, T or 1, Y, X)
        Coil maps.
    lam : float >= 0, optional
        Tikhonov weight on the temporal differences (default ``DEFAULTS["lam"]``).
    n_iter : int >= 0, optional
        CG iterations (default ``DEFAULTS["n_iter"]``).
    tol : float >= 0
        Stop earlier once the relative residual is below ``tol`` (0: run every iteration).

    Returns
    -------
    x : complex64 (B, M, T, Y, X)
    """
    lam = DEFAULTS["lam"] if lam is None else lam
    n_iter = DEFAULTS["n_iter"] if n_iter is None else n_iter
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise ConfigError(f"sense: lam must be a finite number >= 0, got {lam!r}")
    if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 0:
        raise ConfigError(f"sense: n_iter must be an integer >= 0, got {n_iter!r}")
    if k3.ndim != 6 or maps.shape[:3] != k3.shape[:3] or maps.shape[-2:] != k3.shape[-2:]:
        raise ValueError(f"sense: k3 must be (B, C, M, T, Ky, Kx) and maps (B, C, M, T|1, Y, X) with the same "
                         f"B, C, M, Y, X; got {tuple(k3.shape)} and {tuple(maps.shape)}")
    op = SenseOperator(maps.to(k3.dtype), mask3)
    rhs = op.adjoint(k3)
    if lam > 0:
        def normal(v):
            return op.normal(v) + lam * _diff_t_adjoint(_diff_t(v))
    else:
        normal = op.normal
    x, _ = conjugate_gradient(normal, rhs, int(n_iter), tol=tol)
    return x


# --- coil maps --------------------------------------------------------------------------------


def oracle_maps(csm: np.ndarray, phase: np.ndarray | None) -> np.ndarray:
    """The store's exact coil sensitivities ``csm_c * exp(j phase_c)``.

    ``csm`` complex (C, M, Y, X), ``phase`` float radians (C, M, T, Y, X) or None ->
    complex64 (C, M, T, Y, X) (T = 1 without phase).
    """
    csm = np.asarray(csm, np.complex64)
    if phase is None:
        return csm[:, :, None]
    return (csm[:, :, None] * np.exp(1j * np.asarray(phase, np.float32))).astype(np.complex64)


def single_band_reference(target: np.ndarray, csm: np.ndarray, phase: np.ndarray | None, calib: int,
                          noise_sigma: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    r"""A simulated single-band calibration scan of every slice (module doc).

    Parameters
    ----------
    target : float (M, T, Y, X), csm : complex (C, M, Y, X), phase : float (C, M, T, Y, X) or None
        The store's arrays of one example.
    calib : int >= 1
        Centre ky rows kept (around the DC row ``Ky // 2``, as :func:`synth.physics.masks.row_mask` places
        the ACS).
    noise_sigma : float >= 0
        σ of complex circular Gaussian noise added to the kept entries (``E|n|² = σ²``); needs ``rng``.

    Returns
    -------
    ref : complex64 (C, M, Ky, Kx)
        ``fft2c`` of the time-averaged coil images ``mean_t(target * csm_c * exp(j phase_c))``,
        zero outside the ``calib`` centre rows.
    """
    c, m, ny, nx = csm.shape
    if not 1 <= calib <= ny:
        raise ConfigError(f"single-band reference: calib must be 1..{ny} rows (Ky), got {calib}")
    if noise_sigma < 0 or not math.isfinite(noise_sigma):
        raise ConfigError(f"single-band reference: noise_sigma must be finite and >= 0, got {noise_sigma}")
    avg = np.empty((c, m, ny, nx), np.complex64)
    for ci in range(c):  # one coil at a time: (M, T, Y, X) temporaries only
        ph = 1 if phase is None else np.exp(1j * phase[ci])
        avg[ci] = (target * ph).mean(axis=1) * csm[ci]
    k = fft2c(torch.from_numpy(avg)).numpy()
    lo = ny // 2 - calib // 2
    keep = np.zeros(ny, bool)
    keep[lo:lo + calib] = True
    ref = np.where(keep[:, None], k, 0).astype(np.complex64)
    if noise_sigma > 0:
        if rng is None:
            raise ConfigError("single-band reference: noise needs a generator (rng)")
        shape = (c, m, calib, nx)
        noise = (noise_sigma / math.sqrt(2)) * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        ref[:, :, keep] += noise.astype(np.complex64)
    return ref


def espirit_maps(ref: np.ndarray, calib: int, **espirit) -> np.ndarray:
    """ESPIRiT maps of every slice from a single-band reference, with sigpy.

    ``ref`` complex (C, M, Ky, Kx) (:func:`single_band_reference`) -> complex64 (C, M, Y, X):
    unit norm over coils where ESPIRiT's eigenvalue exceeds ``crop``, 0 elsewhere, the phase of
    coil 0 removed.  ``espirit`` overrides :data:`ESPIRIT` (``kernel_width``, ``thresh``,
    ``crop``, ``max_iter``).
    """
    try:
        from sigpy.mri.app import EspiritCalib
    except ImportError as e:  # pragma: no cover - sigpy is in the zoo extra
        raise ConfigError(f"sense-espirit needs sigpy (pip install sigpy, or smssynth[zoo]): {e}") from None
    opts = {**ESPIRIT, **espirit}
    c, m, ny, nx = ref.shape
    width = min(int(calib), ny, nx)
    if width < opts["kernel_width"] + 1:
        raise ConfigError(f"sense-espirit: a {width} x {width} calibration region is too small for ESPIRiT's "
                          f"{opts['kernel_width']} x {opts['kernel_width']} kernel; raise calib")
    out = np.empty((c, m, ny, nx), np.complex64)
    for i in range(m):
        # sigpy's centred orthonormal FFT has fft2c's conventions (DC at N // 2), so the maps are
        # on the image grid of the store
        app = EspiritCalib(np.ascontiguousarray(ref[:, i], np.complex64), calib_width=width,
                           thresh=opts["thresh"], kernel_width=opts["kernel_width"], crop=opts["crop"],
                           max_iter=opts["max_iter"], show_pbar=False)
        out[:, i] = np.asarray(app.run(), np.complex64)
    return out


# --- the baselines ----------------------------------------------------------------------------


class SenseBaseline(nn.Module):
    r"""``sense-oracle`` / ``sense-espirit`` behind the models' interface, plus the store inputs.

    Parameters
    ----------
    kind : {"oracle", "espirit"}
        Where the coil maps come from (module doc).
    lam, n_iter : see :func:`sense_recon` (defaults :data:`DEFAULTS`).
    calib : int, optional (espirit)
        Rows (and columns) of the single-band reference's calibration region; default the
        store's ``acs``, at least :data:`MIN_CALIB`, at most ``min(Ky, Kx)``.
    seed : int >= 0 (espirit)
        Root seed of the reference's noise: ``np.random.default_rng([seed, store index])``.

    Use: ``inputs = model.store_inputs(store, index)`` (numpy arrays read and built from the
    store: not part of the timed reconstruction), then ``model(x0, k3, mask3, **inputs)`` with
    **every coil's** data, ``k3`` complex64 (B, C, Kz=M, T, Ky, Kx), ``mask3`` bool (B, Kz=M, T,
    Ky, 1), inputs batched as tensors (B, ...); returns complex64 (B, M, T, Y, X), one image for
    all coils (``x0`` is unused).  For ``espirit`` the forward pass includes the ESPIRiT
    calibration (on the CPU, with sigpy).  Runs under ``torch.no_grad()``; no parameters.
    """

    combines_coils = True
    """The output has no coil axis: one image from every coil's data (recon stores no coil axis)."""

    def __init__(self, kind: str, *, lam: float | None = None, n_iter: int | None = None,
                 calib: int | None = None, seed: int = 0):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"SENSE baseline: kind must be one of {KINDS}, got {kind!r}")
        lam = DEFAULTS["lam"] if lam is None else lam
        n_iter = DEFAULTS["n_iter"] if n_iter is None else n_iter
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (math.isfinite(lam) and lam >= 0):
            raise ConfigError(f"sense-{kind}: lam must be a finite number >= 0, got {lam!r}")
        if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
            raise ConfigError(f"sense-{kind}: n_iter (CG iterations) must be an integer >= 0, got {n_iter!r}")
        if calib is not None and (isinstance(calib, bool) or not isinstance(calib, (int, np.integer)) or calib < 1):
            raise ConfigError(f"sense-{kind}: calib must be an integer >= 1 or None, got {calib!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"sense-{kind}: seed must be an integer >= 0, got {seed!r}")
        self.kind = kind
        self.name = f"sense-{kind}"
        self.config = {"kind": kind, "maps": _MAPS[kind], "lam": float(lam), "n_iter": int(n_iter),
                       "regularizer": "lam * ||D_t x||^2 (temporal forward differences, Tikhonov)",
                       "solver": "conjugate gradient on the normal equations, from x = 0"}
        if kind == "espirit":
            self.config.update({"calib": None if calib is None else int(calib), "min_calib": MIN_CALIB,
                                "seed": int(seed), "espirit": dict(ESPIRIT)})

    def calib_width(self, params: dict, ny: int, nx: int) -> int:
        """The calibration region's width for a store with ``params`` and a Ky x Kx grid."""
        want = self.config["calib"]
        if want is None:
            want = max(int(params.get("acs", 0) or 0), MIN_CALIB)
        return min(int(want), ny, nx)

    def store_inputs(self, store, index: int) -> dict[str, np.ndarray]:
        """What the method takes from the store for example ``index`` (:class:`synth.dataset.store.Store`).

        ``oracle``: ``maps`` complex64 (C, M, T, Y, X) (T = 1 without phase), :func:`oracle_maps`.
        ``espirit``: ``reference`` complex64 (C, M, Ky, Kx), :func:`single_band_reference` with the
        store's ``noise_sigma``, and ``calib`` int64 ().
        """
        names = ["csm"] + (["phase"] if "phase" in store.root else [])
        if self.kind == "oracle" and getattr(store, "source", "synthetic") == "measured":
            raise ConfigError(f"{store.path}: sense-oracle needs the simulation's true coil maps, but this store "
                              f"holds measured k-space whose maps are ESPIRiT estimates; use sense-espirit")
        if self.kind == "oracle":
            ex = store.example(int(index), names)
            return {"maps": oracle_maps(ex["csm"], ex.get("phase"))}
        ex = store.example(int(index), names + ["target", "noise_sigma"])
        c, m, ny, nx = ex["csm"].shape
        calib = self.calib_width(store.params, ny, nx)
        sigma = float(ex["noise_sigma"])
        rng = np.random.default_rng([self.config["seed"], int(index)])
        ref = single_band_reference(ex["target"], ex["csm"], ex.get("phase"), calib, sigma, rng)
        return {"reference": ref, "calib": np.asarray(calib, np.int64)}

    def coil_maps(self, maps: Tensor | None = None, reference: Tensor | None = None,
                  calib: Tensor | None = None) -> Tensor:
        """complex64 (B, C, M, T or 1, Y, X): the given maps, or ESPIRiT's from ``reference``."""
        if self.kind == "oracle":
            if maps is None:
                raise ConfigError("sense-oracle needs maps (store_inputs)")
            return maps
        if reference is None or calib is None:
            raise ConfigError("sense-espirit needs the single-band reference and calib (store_inputs)")
        ref = reference.detach().to("cpu", torch.complex64).numpy()
        widths = calib.reshape(-1).tolist()
        out = np.stack([espirit_maps(r, int(w)) for r, w in zip(ref, widths)])  # (B, C, M, Y, X)
        return torch.from_numpy(out)[:, :, :, None].to(reference.device)

    def forward(self, x0: Tensor, k3: Tensor, mask3: Tensor, *, maps: Tensor | None = None,
                reference: Tensor | None = None, calib: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            s = self.coil_maps(maps, reference, calib)
            return sense_recon(k3, mask3, s, lam=self.config["lam"], n_iter=self.config["n_iter"])

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items() if k not in ("regularizer", "solver"))


_MAPS = {
    "oracle": "ORACLE: the store's true coil sensitivities csm * exp(j phase) (simulation ground truth)",
    "espirit": "ESPIRiT (sigpy EspiritCalib) from a simulated single-band reference at the time-averaged frame",
}
