r"""Evaluation metrics of the paper, on magnitude images, one value per example.

Every metric takes ``pred`` and ``ref`` of shape (B, M, T, Y, X) -- B examples, M SMS slices,
T frames, Y x X pixels -- real magnitudes (used as they are) or complex (the modulus is taken),
torch tensors on any device, and returns a float64 tensor (B,) on that device: one value per
example, computed over all of its (M, T, Y, X), in float64.  Nothing is differentiated (inputs
are detached); the training loss is :mod:`zoo.train.losses`.

.. math::

    \mathrm{NMSE} = \frac{\|p - r\|_2^2}{\|r\|_2^2}, \qquad
    \mathrm{PSNR} = 10 \log_{10} \frac{L^2}{\tfrac{1}{N}\|p - r\|_2^2}\ \mathrm{dB}, \qquad
    \mathrm{SSIM} = \frac{1}{MT} \sum_{i,t} \mathrm{SSIM}_{2D}(p_{i,t}, r_{i,t}; L)

with ``p = |pred|``, ``r = |ref|``, N = M*T*Y*X and ``L`` the data range, by default the
example's reference maximum ``max r`` (for a store's ``target``, normalised to max 1, that is 1).

SSIM is Wang et al.'s ("Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004): Gaussian window 11 x 11, sigma 1.5, ``K1 = 0.01``, ``K2 = 0.03``,
population (biased) local statistics, averaged over the "valid" positions (where the window
lies inside the image), computed per 2D frame by the maintained ``pytorch_msssim`` (with a
window normalised in float64, see :func:`_gauss_window`).  That is what
``skimage.metrics.structural_similarity(p, r, data_range=L, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` averages too (it crops the same ``(win - 1) // 2`` border);
skimage is not a dependency: ``tests/zoo/test_metrics.py`` checks against a numpy
transcription of the formula.

``ssim_kind="fastmri"`` (:func:`ssim_fastmri`) is SSIM as fastMRI's evaluation computes it
(``fastmri/evaluate.py``: ``skimage.metrics.structural_similarity`` at its defaults on each 2D
slice, averaged, ``data_range`` = the maximum of the reference **volume**): a 7 x 7 **uniform**
window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariances (``N / (N - 1)``, N = 49), averaged over
the valid positions; here per 2D frame of the (M, T) frames of an example, L = the example's
reference maximum, in float64 torch.  ``tests/zoo/test_metrics.py`` checks it against skimage.
The Gaussian SSIM above stays the default (the training loss and validation use it); reports
say which one they show (:data:`SSIM_KINDS`, :data:`SSIM_DESCRIPTION`).

NMSE units.  Every function here returns the **plain ratio** (0 = perfect, 1 = as bad as an
all-zero image), and so do JSON reports and recon stores (``NMSE_UNIT``); tables print it
``x 10^-3`` as the paper's Table 1 does (:data:`NMSE_TABLE_SCALE`: 0.0123 is printed 12.3).
Failures (:func:`failed`, :func:`failure_rate`, :func:`summarize_examples`): an example fails
when its plain NMSE exceeds ``threshold`` -- by default :data:`FAIL_NMSE` = 1, i.e. 1000 x 10^-3
in the table's unit: the paper's rule "NMSE > 1000" read in its Table 1 unit (x 10^-3), the
reading under which a reconstruction worse than an all-zero image fails.  NaN fails too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import numpy as np
import torch
from pytorch_msssim import ssim as _msssim
from torch import Tensor

__all__ = ["FAIL_NMSE", "FASTMRI_WINDOW", "NMSE_TABLE_SCALE", "NMSE_UNIT", "SSIM_DESCRIPTION", "SSIM_K",
           "SSIM_KINDS", "SSIM_LABEL", "SSIM_SIGMA", "SSIM_WINDOW", "example_metrics", "failed", "failure_rate", "nmse", "psnr",
           "metric_conventions", "ssim", "ssim_fastmri", "ssim_frames", "summarize", "summarize_examples"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
FASTMRI_WINDOW = 7
SSIM_KINDS = ("gaussian", "fastmri")
SSIM_DESCRIPTION = {
    "gaussian": "SSIM, Gaussian 11x11 window (sigma 1.5), population statistics, L = reference max per example",
    "fastmri": "SSIM as fastMRI's evaluation (skimage defaults: 7x7 uniform window, sample covariance), "
               "L = reference max per example",
}
SSIM_LABEL = {"gaussian": "SSIM (Gaussian 11x11)", "fastmri": "SSIM (fastMRI 7x7 uniform)"}
NMSE_UNIT = "plain ratio ||p - r||^2 / ||r||^2"
NMSE_TABLE_SCALE = 1e-3
"""Tables print NMSE in units of 10^-3 (the paper's Table 1)."""
FAIL_NMSE = 1.0
"""Default failure threshold on the plain NMSE: 1 = 1000 x 10^-3 (module doc)."""
_EXAMPLE = (1, 2, 3, 4)  # the axes of one example in (B, M, T, Y, X)


def _magnitudes(pred: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
    if not (isinstance(pred, Tensor) and isinstance(ref, Tensor)):
        raise TypeError(f"pred and ref must be torch tensors, got {type(pred).__name__} and {type(ref).__name__}")
    if pred.ndim != 5 or pred.shape != ref.shape:
        raise ValueError(
            f"pred and ref must both be (B, M, T, Y, X), got {tuple(pred.shape)} and {tuple(ref.shape)}"
        )
    pred, ref = pred.detach(), ref.detach()
    pred = pred.abs() if pred.is_complex() else pred
    ref = ref.abs() if ref.is_complex() else ref
    return pred.to(torch.float64), ref.to(torch.float64)


def _data_range(ref: Tensor, data_range) -> Tensor:
    """(B,) float64: the given range (scalar or (B,)) or the example's reference maximum."""
    b = ref.shape[0]
    if data_range is None:
        return ref.amax(dim=_EXAMPLE)
    dr = torch.as_tensor(data_range, dtype=torch.float64, device=ref.device)
    if dr.ndim == 0:
        return dr.expand(b)
    if dr.shape != (b,):
        raise ValueError(f"data_range must be a number or a tensor of shape ({b},), got shape {tuple(dr.shape)}")
    return dr


def nmse(pred: Tensor, ref: Tensor) -> Tensor:
    """Normalised MSE ``||p - r||^2 / ||r||^2`` per example, float64 (B,) (see module doc)."""
    p, r = _magnitudes(pred, ref)
    return ((p - r) ** 2).sum(dim=_EXAMPLE) / (r**2).sum(dim=_EXAMPLE)


def psnr(pred: Tensor, ref: Tensor, data_range: float | Tensor | None = None) -> Tensor:
    """PSNR in dB per example, float64 (B,): ``10 log10(L^2 / mean((p - r)^2))``.

    ``data_range`` L: a number, a (B,) tensor, or None for each example's ``max |ref|``.
    A perfect reconstruction gives ``inf``.
    """
    p, r = _magnitudes(pred, ref)
    mse = ((p - r) ** 2).mean(dim=_EXAMPLE)
    return 10 * torch.log10(_data_range(r, data_range) ** 2 / mse)


def ssim_frames(
    pred: Tensor,
    ref: Tensor,
    data_range: Tensor,
    *,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> Tensor:
    """2D SSIM of every frame, differentiable: real (B, M, T, Y, X) x2, data_range (B,) -> (B, M*T).

    The shared kernel of :func:`ssim` and :class:`zoo.train.losses.SmsLoss`.  Frames become the batch
    of ``pytorch_msssim.ssim`` (separable Gaussian filter, "valid" positions).  Each example is divided
    by its data range first and scored with range 1: SSIM is invariant under scaling both images
    and ``L`` together (the constants are ``(K L)^2``), and ``pytorch_msssim`` takes one scalar
    range only.
    """
    b, m, t, y, x = pred.shape
    if win_size < 3 or win_size % 2 != 1:
        raise ValueError(f"SSIM window must be odd and >= 3, got {win_size}")
    if min(y, x) < win_size:
        # pytorch_msssim would silently skip smoothing along the short axis (a different metric)
        raise ValueError(
            f"images of {y} x {x} pixels are smaller than the {win_size} x {win_size} SSIM window; "
            f"use a window of at most {min(y, x) - (1 - min(y, x) % 2)} or larger images"
        )
    scale = torch.clamp(data_range, min=torch.finfo(data_range.dtype).tiny).reshape(b, 1, 1, 1, 1)
    # one frame per batch entry, one channel: the (B*M*T,) scores reshape back per example
    p = (pred / scale).reshape(b * m * t, 1, y, x)
    r = (ref / scale).reshape(b * m * t, 1, y, x)
    win = _gauss_window(win_size, float(sigma)).to(pred.device)
    scores = _msssim(p, r, data_range=1.0, size_average=False, win=win, K=SSIM_K)
    return scores.reshape(b, m * t)


@functools.lru_cache(maxsize=16)
def _gauss_window(win_size: int, sigma: float) -> Tensor:
    """The Gaussian window (1, 1, 1, win) for one-channel 2D images, normalised in float64.

    ``pytorch_msssim`` builds its window in float32, whose sum is 1 - 3e-8: then the local
    variance ``G*(x^2) - (G*x)^2`` of a flat image is ~6e-8 x^2 instead of 0, which moves SSIM by
    up to ~1e-5 (on flat regions of range-1 images).  Passed as ``win``, this one is cast to the
    images' dtype by the package.
    """
    c = torch.arange(win_size, dtype=torch.float64) - win_size // 2
    g = torch.exp(-(c**2) / (2 * sigma**2))
    return (g / g.sum()).reshape(1, 1, 1, win_size)


def ssim(
    pred: Tensor,
    ref: Tensor,
    data_range: float | Tensor | None = None,
    *,
    win_size: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> Tensor:
    """Mean 2D SSIM over slices and frames per example, float64 (B,) (see module doc).

    ``data_range`` L: a number, a (B,) tensor, or None for each example's ``max |ref|``.
    """
    p, r = _magnitudes(pred, ref)
    return ssim_frames(p, r, _data_range(r, data_range), win_size=win_size, sigma=sigma).mean(dim=1)


def ssim_fastmri(pred: Tensor, ref: Tensor, data_range: float | Tensor | None = None) -> Tensor:
    """fastMRI's SSIM per example, float64 (B,): the mean over (M, T) frames of skimage's default SSIM.

    Per frame, ``skimage.metrics.structural_similarity(r, p, data_range=L)`` with its defaults
    (module doc): 7 x 7 box means, ``cov_norm = 49/48``, ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``,
    averaged over the positions where the window lies inside the frame.  ``data_range`` L: a
    number, a (B,) tensor, or None for each example's ``max |ref|`` (fastMRI's volume maximum).
    """
    p, r = _magnitudes(pred, ref)
    b, m, t, y, x = p.shape
    w = FASTMRI_WINDOW
    if min(y, x) < w:
        raise ValueError(f"images of {y} x {x} pixels are smaller than fastMRI's {w} x {w} SSIM window")
    dr = _data_range(r, data_range).reshape(b, 1, 1, 1)
    p, r = p.reshape(b, m * t, y, x), r.reshape(b, m * t, y, x)

    def box(v):  # the mean over each 7 x 7 window lying inside the frame ("valid" positions)
        return torch.nn.functional.avg_pool2d(v, w, stride=1)

    n = w * w
    cov_norm = n / (n - 1)
    ux, uy = box(r), box(p)
    vx = cov_norm * (box(r * r) - ux * ux)
    vy = cov_norm * (box(p * p) - uy * uy)
    vxy = cov_norm * (box(r * p) - ux * uy)
    c1, c2 = (SSIM_K[0] * dr) ** 2, (SSIM_K[1] * dr) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(2, 3)).mean(dim=1)


def example_metrics(pred: Tensor, ref: Tensor, *, ssim_kind: str = "gaussian") -> dict[str, Tensor]:
    """``{"nmse", "psnr", "ssim"}``, each float64 (B,), with the chosen SSIM (:data:`SSIM_KINDS`)."""
    if ssim_kind not in SSIM_KINDS:
        raise ValueError(f"ssim_kind must be one of {SSIM_KINDS}, got {ssim_kind!r}")
    score = ssim if ssim_kind == "gaussian" else ssim_fastmri
    return {"nmse": nmse(pred, ref), "psnr": psnr(pred, ref), "ssim": score(pred, ref)}


def _as_array(values) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().to("cpu", torch.float64).reshape(-1).numpy()
    if isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        vals = [v.item() if isinstance(v, Tensor) else v for v in values]
        return np.asarray(vals, dtype=np.float64).reshape(-1)
    raise TypeError(f"values must be a tensor or an iterable of numbers, got {type(values).__name__}")


def summarize(values) -> dict[str, float | int]:
    """``{"mean", "sd", "n"}`` of per-example values (tensor, array or list).

    ``sd`` is the sample standard deviation (ddof = 1), the "mean ± SD" of papers; 0.0 for a
    single value.  Every value counts, non-finite ones included (a diverged example makes the
    mean ``inf``/``nan``: report :func:`failure_rate` beside it rather than hiding it).
    """
    a = _as_array(values)
    if a.size == 0:
        raise ValueError("summarize: no values (an empty evaluation set?)")
    sd = float(a.std(ddof=1)) if a.size > 1 else 0.0
    return {"mean": float(a.mean()), "sd": sd, "n": int(a.size)}


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not (isinstance(threshold, (int, float)) and math.isfinite(threshold)
                                           and threshold > 0):
        raise ValueError(f"the NMSE failure threshold must be a finite number > 0 (plain NMSE), got {threshold!r}")
    return float(threshold)


def failed(nmse_values, threshold: float = FAIL_NMSE) -> np.ndarray:
    """bool per example: plain NMSE above ``threshold`` (default :data:`FAIL_NMSE`), or NaN."""
    threshold = _check_threshold(threshold)
    return ~(_as_array(nmse_values) <= threshold)


def failure_rate(nmse_values, threshold: float = FAIL_NMSE) -> float:
    """Fraction of examples whose plain NMSE exceeds ``threshold`` (NaN counts as a failure).

    ``threshold`` defaults to :data:`FAIL_NMSE` = 1 (1000 x 10^-3, module doc).
    """
    bad = failed(nmse_values, threshold)
    if bad.size == 0:
        raise ValueError("failure_rate: no values (an empty evaluation set?)")
    return float(np.mean(bad))


def summarize_examples(values: dict[str, object], threshold: float = FAIL_NMSE,
                       indices: list[int] | None = None) -> dict[str, object]:
    """Summaries of per-example values, over all examples and without the failed ones.

    ``values`` maps a name (``nmse`` required, plain ratio; ``psnr``, ``ssim``, ``seconds``, ...)
    to one value per example, all in the same order; ``indices`` names the examples (default
    0..n-1).  Returns::

        {name: {mean, sd, n} over all examples, ...,
         "excluding_failed": {name: {mean, sd, n}} over the examples that did not fail (the
                              paper's way; mean and sd NaN when every example failed),
         "failed": {"count", "n", "rate", "indices", "threshold_nmse"},
         "failure_rate": rate}
    """
    if "nmse" not in values:
        raise ValueError("summarize_examples: values need 'nmse' (the failure rule)")
    arrays = {k: _as_array(v) for k, v in values.items()}
    n = arrays["nmse"].size
    if n == 0:
        raise ValueError("summarize_examples: no values (an empty evaluation set?)")
    if any(a.size != n for a in arrays.values()):
        raise ValueError(f"summarize_examples: every name needs {n} values, got "
                         f"{ {k: a.size for k, a in arrays.items()} }")
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    bad = failed(arrays["nmse"], threshold)
    kept = {}
    for k, a in arrays.items():
        kept[k] = summarize(a[~bad]) if (~bad).any() else {"mean": math.nan, "sd": math.nan, "n": 0}
    return {
        **{k: summarize(a) for k, a in arrays.items()},
        "excluding_failed": kept,
        "failed": {"count": int(bad.sum()), "n": int(n), "rate": float(bad.mean()),
                   "indices": [i for i, f in zip(indices, bad) if f], "threshold_nmse": float(threshold)},
        "failure_rate": float(bad.mean()),
    }


def metric_conventions(ssim_kind: str = "gaussian", threshold: float = FAIL_NMSE) -> dict[str, object]:
    """JSON-able statement of what a report's numbers are: units, which SSIM, the failure rule."""
    if ssim_kind not in SSIM_KINDS:
        raise ValueError(f"ssim_kind must be one of {SSIM_KINDS}, got {ssim_kind!r}")
    threshold = _check_threshold(threshold)
    return {
        "nmse_unit": NMSE_UNIT,
        "nmse_table_scale": NMSE_TABLE_SCALE,
        "psnr_unit": "dB, L = reference max per example",
        "ssim_kind": ssim_kind,
        "ssim_description": SSIM_DESCRIPTION[ssim_kind],
        "failure_rule": f"plain NMSE > {threshold:g} (= {threshold / NMSE_TABLE_SCALE:g} x 10^-3), or NaN",
        "failure_threshold_nmse": threshold,
        "summaries": "over all examples, and 'excluding_failed' (the paper's way)",
    }
