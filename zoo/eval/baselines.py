r"""Classical baselines, with the models' signature: zero-filled and compressed sensing (CS).

Both work on the 3D-k-space view of SMS (:mod:`zoo.physics`): the measurement operator is

.. math:: A = P \, F_3, \qquad F_3 = F_z \circ \mathrm{fft2c}\ \text{(unitary)}, \quad
          P = \mathrm{diag}(\texttt{mask3}),

acting on the slice stack ``x`` complex (B, M, T, Y, X) (a coil axis folded into B); the data
are ``y = mask3 * k3`` (B, Kz=M, T, Ky, Kx).  :math:`\|A\| = 1`, :math:`A^H y` is the
zero-filled image, and a gradient step of unit size on :math:`\tfrac12\|Ax - y\|^2` is exactly
hard data consistency, :math:`x - A^H(Ax - y) = F_3^H(y + (1-P) F_3 x)`.

CS problems (Lustig et al., "Sparse MRI", MRM 2007; k-t SPARSE for the temporal Fourier
transform; temporal TV as in e.g. Adluru et al. 2007 for perfusion)::

    temporal-fft:  min_x 1/2 ||A x - y||^2 + lam * || F_t x ||_1      FISTA (Beck & Teboulle 2009)
    temporal-tv:   min_x 1/2 ||A x - y||^2 + lam * || D_t x ||_1      Chambolle & Pock (2011)

``F_t`` is the orthonormal DFT over T; ``D_t`` the forward difference over T (not cyclic:
perfusion series are not periodic); ``|.|`` is the complex modulus, so both penalties are
isotropic in (real, imag).  ``lam`` is **relative**: the absolute weight is
``lam * max|x0|`` per example, ``x0`` the zero-filled image, so a value carries over between
data scalings.  Defaults: ``lam = 0.01`` for both, 100 iterations for ``temporal-fft`` (FISTA
has converged by then on the phantom of ``tests/zoo/eval/test_baselines.py``) and 200 for
``temporal-tv`` (Chambolle-Pock is slower; the objective is then within ~0.1 % of its value
after 3000).  They were picked on that noiseless phantom (T = 16, R = 4 sheared lattice):
smaller λ does better there, so for noisy data raise λ.  By default the result is finally
made exactly consistent with the data (``final_dc=True``), which for noiseless data can only
lower the error on sampled entries; pass ``final_dc=False`` for the minimiser itself.

What temporal sparsity cannot do for SMS: ky row ``n`` is measured only at ``kz = n mod M``,
in every frame, so with one coil per problem (coils folded into B) the other kz of that row
are never measured, in any frame.  A pixel of slice ``i`` and its CAIPI alias in slice ``i'``
(shifted by ``(i' - i)/M`` of the FOV) then differ only in that unmeasured kz, with the same
time course, and an l1 penalty on the temporal spectrum (or differences) is indifferent to
how the signal is split between them: CS keeps the zero-filled split.  It removes the
in-plane k-t aliasing but not the inter-slice leakage (for M = 2 the moving pixels keep an
NMSE of about 0.5 on the test phantom).  Separating the slices needs coil sensitivities or a
spatial prior (what the networks learn).

SMS-SENSE baselines (:mod:`zoo.eval.sense`): ``sense-oracle`` (the store's true coil sensitivities:
an **oracle**, reported as such) and ``sense-espirit`` (ESPIRiT maps from a simulated
single-band reference) solve ``(A^H A + lam D_t^H D_t) x = A^H y`` by conjugate gradient over
the same 3D operator with every coil's data, ``A = [mask3 * fft3(S_c x)]_c``.  They take the
store's coil maps (or the reference) besides ``(x0, k3, mask3)``: :func:`make_baseline` builds
any baseline by name, and :mod:`zoo.eval.recon` feeds them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from synth.errors import ConfigError
from zoo.physics import data_consistency, zero_filled
from zoo.eval.sense import DEFAULTS as SENSE_DEFAULTS
from zoo.eval.sense import SenseBaseline, _diff_t, _diff_t_adjoint

_T = -3  # time axis of the image layout (..., M, T, Y, X)
_EXAMPLE = (-4, -3, -2, -1)  # the axes of one example: (M, T, Y, X)

KINDS = ("temporal-fft", "temporal-tv")
DEFAULTS = {"temporal-fft": {"lam": 0.01, "n_iter": 100}, "temporal-tv": {"lam": 0.01, "n_iter": 200}}

__all__ = ["BASELINES", "Baseline", "DEFAULTS", "KINDS", "ORACLES", "SENSE", "cs_recon", "make_baseline",
           "zero_filled", "zero_filled_recon"]


def zero_filled_recon(x0: Tensor | None, k3: Tensor, mask3: Tensor) -> Tensor:
    """Zero-filled reconstruction ``ifft3(mask3 * k3)`` with the models' signature (x0 ignored)."""
    return zero_filled(k3 * mask3)


def _soft_threshold(c: Tensor, tau: Tensor) -> Tensor:
    """Complex soft-thresholding ``c * max(0, 1 - tau/|c|)`` (prox of ``tau * |.|_1``)."""
    mag = c.abs()
    return c * torch.clamp(1 - tau / torch.clamp(mag, min=torch.finfo(mag.dtype).tiny), min=0)


def _project_ball(p: Tensor, radius: Tensor) -> Tensor:
    """Pointwise projection of complex ``p`` onto ``|p| <= radius`` (prox of the conjugate of ``radius*|.|_1``)."""
    return p / torch.clamp(p.abs() / torch.clamp(radius, min=torch.finfo(radius.dtype).tiny), min=1)


def cs_recon(
    k3: Tensor,
    mask3: Tensor,
    lam: float | None = None,
    n_iter: int | None = None,
    kind: str = "temporal-fft",
    x_init: Tensor | None = None,
    final_dc: bool = True,
) -> Tensor:
    r"""Compressed-sensing reconstruction of the SMS slice stack from 3D k-space.

    Parameters
    ----------
    k3 : complex64 (B, Kz=M, T, Ky, Kx)
        Measured 3D k-space (:func:`zoo.physics.to_3d_data`); entries off ``mask3`` are ignored.
    mask3 : bool (B, Kz=M, T, Ky, 1)
        3D sampling pattern.
    lam : float >= 0, optional
        Regularisation weight relative to ``max|x0|`` of each example (``x0`` the zero-filled
        image); default ``DEFAULTS[kind]["lam"]``.  ``lam = 0`` gives a least-squares solution.
    n_iter : int >= 0, optional
        Iterations (default ``DEFAULTS[kind]["n_iter"]``); each costs one ``fft3`` and one
        ``ifft3`` (plus two temporal FFTs for ``temporal-fft``).
    kind : {"temporal-fft", "temporal-tv"}
        Sparsity of the temporal Fourier coefficients (FISTA with complex soft-thresholding,
        step 1 = 1/||A||^2) or temporal total variation (Chambolle-Pock, tau = 1, sigma = 1/4,
        ``sigma*tau*||D_t||^2 <= 1``, theta = 1).
    x_init : complex64 (B, M, T, Y, X), optional
        Starting image; default the zero-filled ``A^H y``.
    final_dc : bool
        Return ``data_consistency(x)`` (sampled 3D k-space entries replaced by the data) instead
        of the last iterate.

    Returns
    -------
    x : complex64 (B, M, T, Y, X)

    Notes
    -----
    Batched over B in torch; runs wherever the inputs live (CPU or CUDA).  Differentiable, but
    normally called under ``torch.no_grad()`` (as :class:`Baseline` does).
    """
    if kind not in KINDS:
        raise ConfigError(f"cs_recon: kind must be one of {KINDS}, got {kind!r}")
    lam = DEFAULTS[kind]["lam"] if lam is None else lam
    n_iter = DEFAULTS[kind]["n_iter"] if n_iter is None else n_iter
    if not (lam >= 0 and math.isfinite(lam)):
        raise ConfigError(f"cs_recon: lam must be a finite number >= 0, got {lam}")
    if n_iter < 0 or int(n_iter) != n_iter:
        raise ConfigError(f"cs_recon: n_iter must be an integer >= 0, got {n_iter}")
    mask3 = mask3.to(torch.bool)
    y = k3 * mask3
    x0 = zero_filled(y)
    weight = lam * x0.abs().amax(dim=_EXAMPLE, keepdim=True)  # (B, 1, 1, 1, 1), absolute lambda
    x = x0 if x_init is None else x_init
    if kind == "temporal-fft":
        x = _fista_tfft(x, y, mask3, weight, int(n_iter))
    else:
        x = _chambolle_pock_ttv(x, y, mask3, weight, int(n_iter))
    return data_consistency(x, y, mask3) if final_dc else x


def _fista_tfft(x: Tensor, y: Tensor, mask3: Tensor, weight: Tensor, n_iter: int) -> Tensor:
    """FISTA for ``1/2||Ax - y||^2 + weight * ||F_t x||_1``."""
    z, t = x, 1.0
    for _ in range(n_iter):
        g = data_consistency(z, y, mask3)  # = z - A^H (A z - y): the gradient step of unit size
        c = torch.fft.fft(g, dim=_T, norm="ortho")  # sparsifying transform, not the acquisition
        x_new = torch.fft.ifft(_soft_threshold(c, weight), dim=_T, norm="ortho")
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x


def _chambolle_pock_ttv(x: Tensor, y: Tensor, mask3: Tensor, weight: Tensor, n_iter: int) -> Tensor:
    r"""Chambolle-Pock for ``1/2||Ax - y||^2 + weight * ||D_t x||_1`` (K = D_t, ||K||^2 <= 4).

    The primal prox :math:`\arg\min_x \tfrac12\|Ax-y\|^2 + \|x-v\|^2/(2\tau)` is diagonal in 3D
    k-space: sampled entries become :math:`(F_3 v + \tau y)/(1+\tau)`, the rest stay — i.e. the
    noise-weighted data consistency with λ = τ.
    """
    # tau = 1 converged fastest of tau in {1/4 .. 8} (sigma = 1/(4 tau)) on the test phantom
    tau, sigma = 1.0, 0.25
    p = torch.zeros_like(_diff_t(x))
    x_bar = x
    for _ in range(n_iter):
        p = _project_ball(p + sigma * _diff_t(x_bar), weight)
        x_new = data_consistency(x - tau * _diff_t_adjoint(p), y, mask3, noise_lambda=tau)
        x_bar = 2 * x_new - x
        x = x_new
    return x


def _cs(x0: Tensor, k3: Tensor, mask3: Tensor, **params) -> Tensor:
    return cs_recon(k3, mask3, **params)


# name -> (function with the models' signature, the fixed settings, the tunable ones and defaults)
_METHODS = {
    "zero-filled": (zero_filled_recon, {}, {}),
    "cs-tfft": (_cs, {"kind": "temporal-fft"}, {**DEFAULTS["temporal-fft"], "final_dc": True}),
    "cs-ttv": (_cs, {"kind": "temporal-tv"}, {**DEFAULTS["temporal-tv"], "final_dc": True}),
}


class Baseline(nn.Module):
    """A classical method behind the models' interface: ``forward(x0, k3, mask3) -> x``.

    Parameters
    ----------
    name : {"zero-filled", "cs-tfft", "cs-ttv"}
    **params : overrides of the method's settings (CS: ``lam``, ``n_iter``, ``final_dc``; see
        :func:`cs_recon`); unknown ones raise ConfigError.

    ``x0`` complex64 (B, M, T, Y, X) (unused: every method starts from the data), ``k3``
    complex64 (B, Kz=M, T, Ky, Kx), ``mask3`` bool (B, Kz=M, T, Ky, 1) -> complex64
    (B, M, T, Y, X).  Runs under ``torch.no_grad()`` and has no parameters.  ``name`` and
    ``config`` (every setting, JSON-serialisable) mirror the models'.
    """

    def __init__(self, name: str, **params):
        super().__init__()
        if name not in _METHODS:
            hint = " (SENSE baselines: build them with make_baseline)" if name in SENSE else ""
            raise ConfigError(f"unknown baseline {name!r}; known baselines: {sorted(_METHODS)}{hint}; "
                              f"with coil maps: {sorted(SENSE)}")
        fn, fixed, tunable = _METHODS[name]
        unknown = sorted(set(params) - set(tunable))
        if unknown:
            raise ConfigError(f"baseline {name!r}: unknown parameter(s) {unknown}; known: {sorted(tunable)}")
        self.name = name
        self._fn = fn
        self.config = {**fixed, **tunable, **params}

    def forward(self, x0: Tensor, k3: Tensor, mask3: Tensor) -> Tensor:
        with torch.no_grad():
            return self._fn(x0, k3, mask3, **self.config)

    def extra_repr(self) -> str:
        return ", ".join([repr(self.name)] + [f"{k}={v!r}" for k, v in self.config.items()])


# name -> (SENSE coil maps, the tunable settings and their defaults; zoo.eval.sense.SenseBaseline)
SENSE = {
    "sense-oracle": ("oracle", {**SENSE_DEFAULTS}),
    "sense-espirit": ("espirit", {**SENSE_DEFAULTS, "calib": None, "seed": 0}),
}
ORACLES = ("sense-oracle",)
"""Baselines that use the simulation's ground truth (the true coil maps): label them as oracles."""


def make_baseline(name: str, **params) -> nn.Module:
    """Any baseline by name: :class:`Baseline` (zero-filled, CS) or :class:`zoo.eval.sense.SenseBaseline`.

    ``params`` override the method's settings; unknown names or settings raise ConfigError.
    """
    if name not in SENSE:
        return Baseline(name, **params)
    kind, tunable = SENSE[name]
    unknown = sorted(set(params) - set(tunable))
    if unknown:
        raise ConfigError(f"baseline {name!r}: unknown parameter(s) {unknown}; known: {sorted(tunable)}")
    return SenseBaseline(kind, **params)


BASELINES: dict[str, nn.Module] = {name: make_baseline(name) for name in (*_METHODS, *SENSE)}
"""Every baseline at its default settings, by name (evaluation reports them all by default).

The SENSE ones (:data:`SENSE`) also need the store's coil maps (``store_inputs``) and every
coil's data; the others have the models' ``forward(x0, k3, mask3)`` in any coil mode."""
