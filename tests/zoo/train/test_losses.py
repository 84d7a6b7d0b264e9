"""zoo.train.losses: LossConfig validation, each term against a hand computation or the maintained SSIM."""

import dataclasses
import importlib

import pytest
import torch

from synth.errors import ConfigError
from zoo.train.losses import LossConfig, SmsLoss, rss
from zoo.metrics import ssim as ssim_metric

B, M, T, Y, X = 2, 2, 3, 17, 13
msssim = importlib.import_module("pytorch_msssim.ssim")


def batch(seed=0, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, M, T, Y, X, generator=g)
    target = target / target.amax(dim=(1, 2, 3, 4), keepdim=True)  # a store's normalisation
    phase = torch.exp(1j * 3 * torch.rand(B, M, T, Y, X, generator=g))
    truth = (target * phase).to(torch.complex64)
    pred = truth + noise * torch.randn(B, M, T, Y, X, generator=g, dtype=torch.complex64)
    return pred, truth, target


# --- config -------------------------------------------------------------------------------------


def test_config_is_frozen_with_documented_defaults():
    cfg = LossConfig()
    assert dataclasses.is_dataclass(cfg) and LossConfig.__dataclass_params__.frozen
    assert (cfg.w_mse, cfg.w_ssim, cfg.w_tv, cfg.ssim_window, cfg.on) == (1.0, 0.02, 0.001, 7, "magnitude")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.w_mse = 2.0
    assert LossConfig(**cfg.to_dict()) == cfg


@pytest.mark.parametrize("bad", [
    {"w_mse": -1.0}, {"w_ssim": float("nan")}, {"w_tv": "0.1"}, {"w_mse": True},
    {"w_mse": 0.0, "w_ssim": 0.0, "w_tv": 0.0},
    {"ssim_window": 8}, {"ssim_window": 1}, {"ssim_window": 7.0}, {"on": "phase"},
])
def test_config_refuses_invalid_values(bad):
    with pytest.raises(ConfigError, match="LossConfig"):
        LossConfig(**bad)


def test_complex_mse_is_refused_with_the_reason():
    # an old run's config.json may say on: complex; it must not silently train something else
    with pytest.raises(ConfigError, match="on='complex'.*RSS magnitude.*target"):
        LossConfig(on="complex")


def test_loss_takes_only_a_loss_config():
    with pytest.raises(ConfigError):
        SmsLoss({"w_mse": 1.0})


# --- terms --------------------------------------------------------------------------------------


def test_terms_against_hand_computations_and_the_weighted_sum():
    pred, _, target = batch()
    cfg = LossConfig(w_mse=2.0, w_ssim=0.5, w_tv=0.3)
    loss, terms = SmsLoss(cfg)(pred, target)
    assert set(terms) == {"mse", "ssim", "tv", "loss"} and all(type(v) is float for v in terms.values())
    mse = ((pred.abs() - target) ** 2).mean()
    assert terms["mse"] == pytest.approx(mse.item(), rel=1e-5)
    tv = (pred.abs()[:, :, 1:] - pred.abs()[:, :, :-1]).abs().mean()
    assert terms["tv"] == pytest.approx(tv.item(), rel=1e-5)
    want = 2.0 * terms["mse"] + 0.5 * (1 - terms["ssim"]) + 0.3 * terms["tv"]
    assert loss.ndim == 0 and loss.item() == pytest.approx(want, rel=1e-5) == terms["loss"]


def test_only_the_magnitude_counts():
    _, truth, target = batch()
    # any phase, per pixel, costs nothing: the truth is the magnitude image
    rotated = truth * torch.exp(1j * torch.rand(truth.shape, generator=torch.Generator().manual_seed(3)))
    _, terms = SmsLoss()(rotated.to(torch.complex64), target)
    assert terms["mse"] < 1e-12 and terms["ssim"] == pytest.approx(1.0, abs=1e-5)
    # while a magnitude error does
    _, terms = SmsLoss()(truth * 0.5, target)
    assert terms["mse"] == pytest.approx((0.25 * target ** 2).mean().item(), rel=1e-5)


def test_ssim_term_is_the_maintained_ssim_of_magnitudes_per_frame_with_the_targets_range():
    pred, _, target = batch()
    _, terms = SmsLoss(LossConfig(ssim_window=7))(pred, target)
    # pytorch_msssim directly, frame by frame, on each example scaled to range 1
    p = (pred.abs() / target.amax(dim=(1, 2, 3, 4), keepdim=True)).reshape(-1, 1, Y, X)
    r = (target / target.amax(dim=(1, 2, 3, 4), keepdim=True)).reshape(-1, 1, Y, X)
    direct = msssim.ssim(p, r, data_range=1.0, win_size=7, win_sigma=1.5, size_average=True)
    assert terms["ssim"] == pytest.approx(direct.item(), abs=1e-5)
    # and the evaluation metric with the same window
    assert terms["ssim"] == pytest.approx(ssim_metric(pred, target, win_size=7).mean().item(), abs=1e-5)


def test_ssim_uses_each_examples_own_range():
    pred, _, target = batch()
    scale = torch.tensor([1.0, 0.25]).view(B, 1, 1, 1, 1)
    _, a = SmsLoss()(pred, target)
    _, b = SmsLoss()(pred * scale, target * scale)
    assert b["ssim"] == pytest.approx(a["ssim"], abs=1e-5)


def test_perfect_prediction_leaves_only_the_targets_own_tv():
    _, truth, target = batch()
    loss, terms = SmsLoss()(truth, target)
    assert terms["mse"] < 1e-12 and terms["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert loss.item() == pytest.approx(LossConfig().w_tv * terms["tv"], abs=1e-6)


def test_tv_of_a_linear_ramp_and_of_a_single_frame():
    ramp = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1) * 0.1 * torch.ones(B, M, T, Y, X)
    pred = ramp.to(torch.complex64) * torch.exp(torch.tensor(0.5j))
    _, terms = SmsLoss()(pred, ramp + 0.01)
    assert terms["tv"] == pytest.approx(0.1, rel=1e-5)
    one = torch.ones(B, M, 1, Y, X)
    _, terms = SmsLoss()(one.to(torch.complex64), one)
    assert terms["tv"] == 0.0


def test_coil_axis_uses_the_root_sum_of_squares():
    _, truth, target = batch()
    w = torch.tensor([0.6, 0.8j], dtype=torch.complex64).view(1, 2, 1, 1, 1, 1)  # sum |w|^2 = 1
    coils = truth[:, None] * w  # (B, K, M, T, Y, X), RSS over K = |truth| = target
    _, terms = SmsLoss()(coils, target)
    assert terms["ssim"] == pytest.approx(1.0, abs=1e-5) and terms["mse"] < 1e-12
    # one coil alone is shaded (|w| < 1): its magnitude is not the target, and the loss says so
    _, one = SmsLoss()(coils[:, :1], target)
    assert one["mse"] == pytest.approx(((0.6 * target - target) ** 2).mean().item(), rel=1e-4)
    assert rss(coils, True).shape == target.shape
    torch.testing.assert_close(rss(coils, True), target, rtol=1e-5, atol=1e-6)


def test_gradients_are_finite_even_at_zero():
    _, truth, target = batch()
    w = torch.tensor([0.6, 0.8j], dtype=torch.complex64).view(1, 2, 1, 1, 1, 1)
    for start in (torch.zeros_like(truth), truth.clone(), torch.zeros_like(truth[:, None] * w), truth[:, None] * w):
        pred = start.requires_grad_(True)
        loss, _ = SmsLoss()(pred, target)
        loss.backward()
        assert torch.isfinite(torch.view_as_real(pred.grad)).all()
        if start.abs().sum() > 0:
            assert pred.grad.abs().sum() > 0


def test_shape_mismatches_are_refused():
    pred, truth, target = batch()
    with pytest.raises(ValueError, match="does not match target"):
        SmsLoss()(pred, target[:, :1])
    with pytest.raises(ValueError, match="target must be"):
        SmsLoss()(pred, target[0])
    with pytest.raises(ValueError, match="target must be the real magnitude"):
        SmsLoss()(pred, truth)  # the complex coil images are not the reference
    with pytest.raises(ValueError, match="SSIM window"):
        SmsLoss(LossConfig(ssim_window=15))(pred, target)
