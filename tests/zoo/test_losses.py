"""zoo.losses: LossConfig validation, each term against a hand computation or the maintained SSIM."""

import dataclasses
import importlib

import pytest
import torch

from synth.errors import ConfigError
from zoo.losses import LossConfig, SmsLoss
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
    assert (cfg.w_mse, cfg.w_ssim, cfg.w_tv, cfg.ssim_window, cfg.on) == (1.0, 0.02, 0.001, 7, "complex")
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


def test_loss_takes_only_a_loss_config():
    with pytest.raises(ConfigError):
        SmsLoss({"w_mse": 1.0})


# --- terms --------------------------------------------------------------------------------------


def test_terms_against_hand_computations_and_the_weighted_sum():
    pred, truth, target = batch()
    cfg = LossConfig(w_mse=2.0, w_ssim=0.5, w_tv=0.3)
    loss, terms = SmsLoss(cfg)(pred, truth, target)
    assert set(terms) == {"mse", "ssim", "tv", "loss"} and all(type(v) is float for v in terms.values())
    mse = ((pred - truth).real ** 2 + (pred - truth).imag ** 2).mean()
    assert terms["mse"] == pytest.approx(mse.item(), rel=1e-5)
    tv = (pred.abs()[:, :, 1:] - pred.abs()[:, :, :-1]).abs().mean()
    assert terms["tv"] == pytest.approx(tv.item(), rel=1e-5)
    want = 2.0 * terms["mse"] + 0.5 * (1 - terms["ssim"]) + 0.3 * terms["tv"]
    assert loss.ndim == 0 and loss.item() == pytest.approx(want, rel=1e-5) == terms["loss"]


def test_magnitude_mse_compares_magnitude_with_target():
    pred, truth, target = batch()
    _, terms = SmsLoss(LossConfig(on="magnitude"))(pred, truth, target)
    assert terms["mse"] == pytest.approx(((pred.abs() - target) ** 2).mean().item(), rel=1e-5)
    # a phase error alone costs nothing in magnitude, everything in complex
    rotated = truth * torch.exp(torch.tensor(1j))
    assert SmsLoss(LossConfig(on="magnitude"))(rotated, truth, target)[1]["mse"] < 1e-12
    assert SmsLoss(LossConfig(on="complex"))(rotated, truth, target)[1]["mse"] > 0.1


def test_ssim_term_is_the_maintained_ssim_of_magnitudes_per_frame_with_the_targets_range():
    pred, truth, target = batch()
    _, terms = SmsLoss(LossConfig(ssim_window=7))(pred, truth, target)
    # pytorch_msssim directly, frame by frame, on each example scaled to range 1
    p = (pred.abs() / target.amax(dim=(1, 2, 3, 4), keepdim=True)).reshape(-1, 1, Y, X)
    r = (target / target.amax(dim=(1, 2, 3, 4), keepdim=True)).reshape(-1, 1, Y, X)
    direct = msssim.ssim(p, r, data_range=1.0, win_size=7, win_sigma=1.5, size_average=True)
    assert terms["ssim"] == pytest.approx(direct.item(), abs=1e-5)
    # and the evaluation metric with the same window
    assert terms["ssim"] == pytest.approx(ssim_metric(pred, target, win_size=7).mean().item(), abs=1e-5)


def test_ssim_uses_each_examples_own_range():
    pred, truth, target = batch()
    scale = torch.tensor([1.0, 0.25]).view(B, 1, 1, 1, 1)
    _, a = SmsLoss()(pred, truth, target)
    _, b = SmsLoss()(pred * scale, truth * scale, target * scale)
    assert b["ssim"] == pytest.approx(a["ssim"], abs=1e-5)


def test_perfect_prediction_leaves_only_the_truths_own_tv():
    _, truth, target = batch()
    loss, terms = SmsLoss()(truth, truth, target)
    assert terms["mse"] == 0.0 and terms["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert loss.item() == pytest.approx(LossConfig().w_tv * terms["tv"], abs=1e-6)


def test_tv_of_a_linear_ramp_and_of_a_single_frame():
    ramp = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1, 1) * 0.1 * torch.ones(B, M, T, Y, X)
    pred = ramp.to(torch.complex64) * torch.exp(torch.tensor(0.5j))
    _, terms = SmsLoss()(pred, pred, ramp + 0.01)
    assert terms["tv"] == pytest.approx(0.1, rel=1e-5)
    one = torch.ones(B, M, 1, Y, X)
    _, terms = SmsLoss()(one.to(torch.complex64), one.to(torch.complex64), one)
    assert terms["tv"] == 0.0


def test_coil_axis_uses_the_root_sum_of_squares():
    _, truth, target = batch()
    w = torch.tensor([0.6, 0.8j], dtype=torch.complex64).view(1, 2, 1, 1, 1, 1)  # sum |w|^2 = 1
    coils = truth[:, None] * w  # (B, C, M, T, Y, X), RSS over C = |truth| = target
    _, terms = SmsLoss()(coils, coils, target)
    assert terms["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert terms["mse"] == 0.0


def test_gradients_are_finite_even_at_zero():
    _, truth, target = batch()
    for start in (torch.zeros_like(truth), truth.clone()):
        pred = start.requires_grad_(True)
        loss, _ = SmsLoss()(pred, truth, target)
        loss.backward()
        assert torch.isfinite(torch.view_as_real(pred.grad)).all()
        assert pred.grad.abs().sum() > 0


def test_shape_mismatches_are_refused():
    pred, truth, target = batch()
    with pytest.raises(ValueError, match="pred and truth"):
        SmsLoss()(pred, truth[:, :1], target)
    with pytest.raises(ValueError, match="does not match target"):
        SmsLoss()(pred, truth, target[:, :1])
    with pytest.raises(ValueError, match="target must be"):
        SmsLoss()(pred, truth, target[0])
    with pytest.raises(ValueError, match="SSIM window"):
        SmsLoss(LossConfig(ssim_window=15))(pred, truth, target)
