"""zoo.metrics: NMSE, PSNR, SSIM per example against numpy reference formulas and hand values.

Odd sizes (M=2, T=3, 23 x 19) catch axis mix-ups.  The Gaussian SSIM reference is written out
here from Wang et al. (2004) in numpy; the fastMRI SSIM is checked against scikit-image itself
(the test extra; skipped without it).
"""

import math

import numpy as np
import pytest
import torch

from zoo.metrics import (FAIL_NMSE, SSIM_K, example_metrics, failed, failure_rate, nmse, psnr, ssim, ssim_fastmri,
                         summarize, summarize_examples)

B, M, T, Y, X = 3, 2, 3, 23, 19


def pair(seed=0, noise=0.1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(B, M, T, Y, X, generator=g, dtype=torch.float64)
    ref = ref * torch.tensor([1.0, 0.5, 3.0], dtype=torch.float64).view(B, 1, 1, 1, 1)  # distinct ranges
    pred = ref + noise * torch.randn(B, M, T, Y, X, generator=g, dtype=torch.float64)
    return pred.to(dtype), ref.to(dtype)


# --- numpy references -------------------------------------------------------------------------


def np_gauss(win=11, sigma=1.5):
    c = np.arange(win) - win // 2
    g = np.exp(-(c**2) / (2 * sigma**2))
    return g / g.sum()


def np_filter_valid(img, g):
    """Separable 'valid' filtering of a 2D image: (Y, X) -> (Y - w + 1, X - w + 1)."""
    w = len(g)
    rows = np.lib.stride_tricks.sliding_window_view(img, w, axis=0) @ g
    return np.lib.stride_tricks.sliding_window_view(rows, w, axis=1) @ g


def np_ssim2d(x, y, data_range, win=11, sigma=1.5):
    g = np_gauss(win, sigma)
    c1, c2 = (SSIM_K[0] * data_range) ** 2, (SSIM_K[1] * data_range) ** 2
    mx, my = np_filter_valid(x, g), np_filter_valid(y, g)
    sxx = np_filter_valid(x * x, g) - mx**2
    syy = np_filter_valid(y * y, g) - my**2
    sxy = np_filter_valid(x * y, g) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return smap.mean()


def np_metrics(pred, ref):
    mag = lambda a: np.abs(a) if np.iscomplexobj(a) else a  # noqa: E731 (real inputs are taken as they are)
    p, r = mag(pred.numpy()), mag(ref.numpy())
    out = {"nmse": [], "psnr": [], "ssim": []}
    for b in range(p.shape[0]):
        err = ((p[b] - r[b]) ** 2).sum()
        out["nmse"].append(err / (r[b] ** 2).sum())
        out["psnr"].append(10 * np.log10(r[b].max() ** 2 / (err / r[b].size)))
        frames = [np_ssim2d(p[b, i, t], r[b, i, t], r[b].max()) for i in range(p.shape[1]) for t in range(p.shape[2])]
        out["ssim"].append(np.mean(frames))
    return {k: np.array(v) for k, v in out.items()}


# --- against the references -------------------------------------------------------------------


def test_all_three_match_numpy_reference_formulas():
    pred, ref = pair()
    want = np_metrics(pred, ref)
    for name, fn in (("nmse", nmse), ("psnr", psnr), ("ssim", ssim)):
        got = fn(pred, ref)
        assert got.shape == (B,) and got.dtype == torch.float64, name
        np.testing.assert_allclose(got.numpy(), want[name], rtol=1e-10, err_msg=name)


def test_float32_inputs_agree_with_float64_reference():
    pred, ref = pair()
    want = np_metrics(pred, ref)
    p32, r32 = pred.float(), ref.float()
    np.testing.assert_allclose(nmse(p32, r32).numpy(), want["nmse"], rtol=1e-5)
    np.testing.assert_allclose(psnr(p32, r32).numpy(), want["psnr"], rtol=1e-5)
    np.testing.assert_allclose(ssim(p32, r32).numpy(), want["ssim"], rtol=1e-5)


def test_complex_inputs_are_scored_on_their_magnitude():
    pred, ref = pair()
    g = torch.Generator().manual_seed(3)
    phase = lambda t: torch.exp(1j * torch.rand(t.shape, generator=g, dtype=torch.float64) * 6)  # noqa: E731
    cp, cr = pred.abs() * phase(pred), ref * phase(ref)
    for fn in (nmse, psnr, ssim):
        torch.testing.assert_close(fn(cp, cr), fn(pred.abs(), ref), rtol=1e-12, atol=0)


# --- hand computations ------------------------------------------------------------------------


def test_hand_values():
    ref = torch.ones(1, M, T, Y, X, dtype=torch.float64)
    assert nmse(torch.zeros_like(ref), ref).item() == 1.0  # an all-zero image
    assert nmse(2 * ref, ref).item() == 1.0
    assert nmse(ref, ref).item() == 0.0
    # constant error 0.1 on a range-1 image: MSE 0.01, PSNR 20 dB exactly
    assert psnr(ref + 0.1, ref).item() == pytest.approx(20.0, abs=1e-12)
    assert psnr(ref, ref).item() == math.inf
    # data_range given: L = 10 -> +20 dB
    assert psnr(ref + 0.1, ref, data_range=10.0).item() == pytest.approx(40.0, abs=1e-12)


def test_ssim_hand_values():
    ref = torch.ones(1, M, T, Y, X, dtype=torch.float64)
    assert ssim(ref, ref).item() == pytest.approx(1.0, abs=1e-12)
    pred, _ = pair()
    assert torch.allclose(ssim(pred, pred), torch.ones(B, dtype=torch.float64), atol=1e-12)
    # flat images: no variance, the contrast-structure term is C2 / C2 = 1; luminance is left
    c1 = (SSIM_K[0] * 1.0) ** 2
    want = (2 * 0.5 * 1.0 + c1) / (0.5**2 + 1.0**2 + c1)
    assert ssim(0.5 * ref, ref, data_range=1.0).item() == pytest.approx(want, abs=1e-12)


def test_default_data_range_is_each_examples_reference_max():
    pred, ref = pair()
    explicit = ref.amax(dim=(1, 2, 3, 4))
    torch.testing.assert_close(psnr(pred, ref), psnr(pred, ref, data_range=explicit))
    torch.testing.assert_close(ssim(pred, ref), ssim(pred, ref, data_range=explicit))
    # scale-free: PSNR and SSIM with the default range do not change when an example is rescaled
    scale = torch.tensor([1.0, 7.0, 0.01], dtype=torch.float64).view(B, 1, 1, 1, 1)
    torch.testing.assert_close(psnr(pred * scale, ref * scale), psnr(pred, ref))
    torch.testing.assert_close(ssim(pred * scale, ref * scale), ssim(pred, ref), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(nmse(pred * scale, ref * scale), nmse(pred, ref))


def test_examples_are_independent_and_ssim_averages_slices_and_frames():
    pred, ref = pair()
    whole = ssim(pred, ref)
    for b in range(B):
        assert ssim(pred[b:b + 1], ref[b:b + 1]).item() == pytest.approx(whole[b].item(), abs=1e-12)
        frames = [ssim(pred[b:b + 1, i:i + 1, t:t + 1], ref[b:b + 1, i:i + 1, t:t + 1],
                       data_range=ref[b].max()).item() for i in range(M) for t in range(T)]
        assert np.mean(frames) == pytest.approx(whole[b].item(), abs=1e-12)


def test_bad_inputs_are_refused():
    pred, ref = pair()
    with pytest.raises(ValueError, match="must both be"):
        nmse(pred, ref[:, :1])
    with pytest.raises(ValueError, match="must both be"):
        psnr(pred[0], ref[0])
    with pytest.raises(ValueError, match="smaller than the 11 x 11 SSIM window"):
        ssim(pred[..., :9, :], ref[..., :9, :])
    with pytest.raises(ValueError, match="shape"):
        psnr(pred, ref, data_range=torch.ones(2))
    with pytest.raises(TypeError):
        nmse(pred.numpy(), ref.numpy())


# --- summaries --------------------------------------------------------------------------------


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s == {"mean": 2.5, "sd": pytest.approx(math.sqrt(5 / 3)), "n": 4}
    assert summarize(torch.tensor([2.0])) == {"mean": 2.0, "sd": 0.0, "n": 1}
    assert summarize([torch.tensor(1.0), np.float32(3.0)])["mean"] == 2.0
    assert type(summarize(np.arange(3))["mean"]) is float
    with pytest.raises(ValueError, match="no values"):
        summarize([])


def test_failure_rate_counts_nmse_above_the_threshold_and_nan():
    assert FAIL_NMSE == 1.0  # plain NMSE 1 = 1000 x 10^-3, the paper's rule in its table's unit
    values = [0.1, 2.0, float("nan"), 1.0]  # exactly 1 is not a failure
    assert failure_rate(values) == 0.5
    assert failed(values).tolist() == [False, True, True, False]
    assert failure_rate(torch.tensor([0.5, 2.0]), threshold=1000.0) == 0.0
    assert failure_rate([0.0]) == 0.0
    with pytest.raises(ValueError):
        failure_rate([])
    for bad in (float("nan"), 0.0, -1.0, True):
        with pytest.raises(ValueError, match="threshold"):
            failure_rate([1.0], threshold=bad)


def test_summarize_examples_with_and_without_failures():
    s = summarize_examples({"nmse": [0.1, 5.0, 0.3], "psnr": [30.0, -3.0, 20.0]}, indices=[7, 8, 9])
    assert s["nmse"] == summarize([0.1, 5.0, 0.3]) and s["psnr"]["n"] == 3  # over all examples
    assert s["excluding_failed"]["psnr"] == summarize([30.0, 20.0])  # the paper's way
    assert s["failed"] == {"count": 1, "n": 3, "rate": pytest.approx(1 / 3), "indices": [8], "threshold_nmse": 1.0}
    assert s["failure_rate"] == pytest.approx(1 / 3)
    loose = summarize_examples({"nmse": [0.1, 5.0, 0.3]}, threshold=10.0)
    assert loose["failed"]["count"] == 0 and loose["excluding_failed"]["nmse"] == loose["nmse"]
    every = summarize_examples({"nmse": [2.0, 3.0]})
    assert every["excluding_failed"]["nmse"]["n"] == 0 and math.isnan(every["excluding_failed"]["nmse"]["mean"])
    with pytest.raises(ValueError, match="nmse"):
        summarize_examples({"psnr": [1.0]})
    with pytest.raises(ValueError, match="2 values"):
        summarize_examples({"nmse": [1.0, 2.0], "psnr": [1.0]})


# --- fastMRI's SSIM ---------------------------------------------------------------------------


def test_fastmri_ssim_equals_skimage():
    """Per frame ``structural_similarity`` at skimage's defaults, data_range = the reference
    volume's max, averaged over frames: fastmri/evaluate.py's ``ssim``."""
    skm = pytest.importorskip("skimage.metrics")
    pred, ref = pair(seed=4, noise=0.2)
    got = ssim_fastmri(pred, ref)
    for b in range(B):
        r, p = ref[b].reshape(M * T, Y, X).numpy(), pred[b].reshape(M * T, Y, X).numpy()
        want = np.mean([skm.structural_similarity(r[f], p[f], data_range=float(r.max())) for f in range(M * T)])
        assert float(got[b]) == pytest.approx(want, rel=1e-10, abs=1e-12)
    # a given data range, and complex inputs (the modulus is taken)
    got = ssim_fastmri(pred.to(torch.complex128) * 1j, ref, data_range=2.0)
    r, p = ref[0].reshape(M * T, Y, X).numpy(), pred[0].reshape(M * T, Y, X).numpy()
    want = np.mean([skm.structural_similarity(r[f], np.abs(p[f]), data_range=2.0) for f in range(M * T)])
    assert float(got[0]) == pytest.approx(want, rel=1e-10)


def test_fastmri_ssim_properties():
    pred, ref = pair(seed=5)
    assert torch.allclose(ssim_fastmri(ref, ref), torch.ones(B, dtype=torch.float64))
    assert (ssim_fastmri(pred, ref) < 1).all()
    # not the Gaussian SSIM: a different window and covariance normalisation
    assert not torch.allclose(ssim_fastmri(pred, ref), ssim(pred, ref), atol=1e-3)
    with pytest.raises(ValueError, match="7 x 7"):
        ssim_fastmri(pred[..., :6], ref[..., :6])


def test_example_metrics_choose_the_ssim():
    pred, ref = pair(seed=6)
    g, f = example_metrics(pred, ref), example_metrics(pred, ref, ssim_kind="fastmri")
    assert set(g) == set(f) == {"nmse", "psnr", "ssim"}
    assert torch.equal(g["nmse"], nmse(pred, ref)) and torch.equal(g["psnr"], psnr(pred, ref))
    assert torch.equal(g["ssim"], ssim(pred, ref)) and torch.equal(f["ssim"], ssim_fastmri(pred, ref))
    with pytest.raises(ValueError, match="ssim_kind"):
        example_metrics(pred, ref, ssim_kind="ms-ssim")
