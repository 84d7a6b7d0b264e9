"""zoo.eval.baselines: zero-filled and CS (temporal FFT / temporal TV) on a sparse dynamic phantom.

The phantom: a smooth, static, complex background per slice plus a few pixels oscillating at
integer temporal frequencies (so its temporal spectrum is exactly sparse), sampled on a sheared
k-t lattice (R = 4, shifted one row per frame, 4 ACS rows) through zoo.physics.
"""

import math

import pytest
import torch

from zoo.eval.baselines import BASELINES, DEFAULTS, ORACLES, SENSE, Baseline, cs_recon, make_baseline, zero_filled_recon
from zoo.eval.sense import SenseBaseline
from zoo.physics import data_consistency, fft3, kz_mask, zero_filled

KINDS = ["temporal-fft", "temporal-tv"]


def phantom(b=2, m=2, t=16, y=36, x=30, seed=0):
    """complex64 (B, M, T, Y, X): smooth static background + 4 oscillating pixels per slice."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, y), torch.linspace(-1, 1, x), indexing="ij")
    out = torch.zeros(b, m, t, y, x, dtype=torch.complex64)
    frames = torch.arange(t)
    for i in range(b):
        for j in range(m):
            cy, cx = (torch.rand(2, generator=g) - 0.5).tolist()
            bg = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.3)
            bg = bg + 0.3 * torch.exp(-((yy + cx) ** 2 + (xx - cy) ** 2) / 0.1)
            out[i, j] = (bg * torch.exp(1j * math.pi * 0.3 * (yy + xx)))[None]
            for _ in range(4):
                py, px = torch.randint(0, y, (1,), generator=g).item(), torch.randint(0, x, (1,), generator=g).item()
                f = torch.randint(1, max(2, t // 2), (1,), generator=g).item()
                out[i, j, :, py, px] += 0.8 * torch.cos(2 * math.pi * f * frames / t)
    return out


def kt_lattice(b, t, ny, accel=4, acs=4, seed=0):
    """bool (B, T, Ky): every R-th row, shifted by one row per frame, plus ACS rows."""
    g = torch.Generator().manual_seed(seed)
    n = torch.arange(ny)
    offsets = torch.randint(0, accel, (b,), generator=g)
    rows = (n[None, None, :] - offsets[:, None, None] - torch.arange(t)[None, :, None]) % accel == 0
    c = ny // 2 - acs // 2
    rows[..., c : c + acs] = True
    return rows


def acquire(img, seed=0):
    mask3 = kz_mask(img.shape[1], kt_lattice(img.shape[0], img.shape[2], img.shape[3], seed=seed))
    return fft3(img) * mask3, mask3


def nmse(a, b):
    return (torch.linalg.vector_norm(a - b) ** 2 / torch.linalg.vector_norm(b) ** 2).item()


def dynamic(v):
    """The part that changes in time (the temporal mean removed)."""
    return v - v.mean(dim=2, keepdim=True)


@pytest.fixture(scope="module")
def single_slice():
    img = phantom(m=1)
    return (img, *acquire(img))


@pytest.fixture(scope="module")
def sms2():
    img = phantom(m=2, seed=1)
    return (img, *acquire(img, seed=1))


# --- reconstruction quality -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_cs_beats_zero_filled_without_sms(kind, single_slice):
    img, k3, mask3 = single_slice
    zf, cs = zero_filled(k3), cs_recon(k3, mask3, kind=kind)
    assert nmse(cs, img) < 0.2 * nmse(zf, img)
    assert nmse(dynamic(cs), dynamic(img)) < 0.2 * nmse(dynamic(zf), dynamic(img))


@pytest.mark.parametrize("kind", KINDS)
def test_cs_beats_zero_filled_with_sms(kind, sms2):
    """With SMS 2 CS still removes the k-t aliasing of the moving pixels; the static inter-slice
    leakage is outside any temporal prior (see the module docstring of zoo.eval.baselines)."""
    img, k3, mask3 = sms2
    zf, cs = zero_filled(k3), cs_recon(k3, mask3, kind=kind)
    assert nmse(cs, img) < nmse(zf, img)
    assert nmse(dynamic(cs), dynamic(img)) < 0.7 * nmse(dynamic(zf), dynamic(img))


# --- data consistency and the least-squares limit ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_result_is_consistent_with_the_data(kind, sms2):
    _, k3, mask3 = sms2
    exact = cs_recon(k3, mask3, kind=kind)
    assert nmse(fft3(exact) * mask3, k3) < 1e-10
    # the minimiser itself (no final projection) is near the data for a small lambda
    near = cs_recon(k3, mask3, kind=kind, final_dc=False)
    assert nmse(fft3(near) * mask3, k3) < 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_lambda_zero_converges_to_the_nearest_least_squares_solution(kind, sms2):
    """lam = 0: min ||A x - y||^2 from a random start converges to the data-consistent image
    nearest to the start (the projection ``data_consistency(x_init)``)."""
    img, k3, mask3 = sms2
    g = torch.Generator().manual_seed(7)
    x_init = torch.randn(img.shape, generator=g, dtype=torch.complex64)
    x = cs_recon(k3, mask3, lam=0.0, n_iter=60, kind=kind, x_init=x_init, final_dc=False)
    assert nmse(fft3(x) * mask3, k3) < 1e-9
    assert nmse(x, data_consistency(x_init, k3, mask3)) < 1e-9
    # from the default start, the zero-filled image: the minimum-norm least-squares solution
    x = cs_recon(k3, mask3, lam=0.0, n_iter=60, kind=kind, final_dc=False)
    assert nmse(x, zero_filled(k3)) < 1e-9


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_batched_equals_per_example_and_lambda_is_relative(kind, sms2):
    _, k3, mask3 = sms2
    both = cs_recon(k3, mask3, kind=kind, n_iter=20)
    one = cs_recon(k3[1:], mask3[1:], kind=kind, n_iter=20)
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-5 * one.abs().max().item())
    scaled = cs_recon(1e3 * k3, mask3, kind=kind, n_iter=20)
    torch.testing.assert_close(scaled, 1e3 * both, rtol=1e-4, atol=1e-2 * both.abs().max().item())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 9, 7), (1, 3, 5, 11, 7)])
def test_odd_shapes_single_frame_and_three_slices(kind, shape):
    img = phantom(*shape)
    k3, mask3 = acquire(img)
    x = cs_recon(k3, mask3, kind=kind, n_iter=10)
    assert x.shape == img.shape and x.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(x)).all()


def test_zero_filled_recon_is_physics_zero_filled_of_the_masked_data(sms2):
    _, k3, mask3 = sms2
    noisy = k3 + 5.0 * ~mask3  # entries off the mask must be ignored
    torch.testing.assert_close(zero_filled_recon(None, noisy, mask3), zero_filled(k3))


def test_invalid_arguments_raise(sms2):
    _, k3, mask3 = sms2
    with pytest.raises(ValueError, match="kind"):
        cs_recon(k3, mask3, kind="wavelet")
    with pytest.raises(ValueError, match="lam"):
        cs_recon(k3, mask3, lam=-1.0)
    with pytest.raises(ValueError, match="n_iter"):
        cs_recon(k3, mask3, n_iter=-3)


# --- the uniform wrapper ----------------------------------------------------------------------


def test_baselines_registry_and_uniform_call(sms2):
    img, k3, mask3 = sms2
    assert sorted(BASELINES) == ["cs-tfft", "cs-ttv", "sense-espirit", "sense-oracle", "zero-filled"]
    x0 = zero_filled(k3)
    for name, method in BASELINES.items():
        assert method.name == name and list(method.parameters()) == []
        if name in SENSE:  # they also take coil maps: tests/zoo/eval/test_sense.py
            assert isinstance(method, SenseBaseline) and method.combines_coils
            continue
        out = method(x0, k3, mask3)
        assert out.shape == img.shape and out.dtype == torch.complex64 and not out.requires_grad
        assert method.name == name and list(method.parameters()) == []
    torch.testing.assert_close(BASELINES["zero-filled"](x0, k3, mask3), x0)
    assert BASELINES["cs-tfft"].config == {"kind": "temporal-fft", **DEFAULTS["temporal-fft"], "final_dc": True}
    assert BASELINES["cs-ttv"].config["kind"] == "temporal-tv"
    short = Baseline("cs-ttv", n_iter=5)
    assert short.config["n_iter"] == 5
    torch.testing.assert_close(short(x0, k3, mask3), cs_recon(k3, mask3, kind="temporal-tv", n_iter=5))


def test_baseline_unknown_name_or_parameter():
    with pytest.raises(ValueError, match="known baselines") as e:
        Baseline("sense")
    assert "cs-tfft" in str(e.value)
    with pytest.raises(ValueError, match="lamda"):
        Baseline("cs-tfft", lamda=0.1)
    with pytest.raises(ValueError, match="kind"):
        Baseline("cs-tfft", kind="temporal-tv")  # fixed by the name
    with pytest.raises(ValueError, match="make_baseline"):
        Baseline("sense-oracle")


def test_make_baseline_builds_every_baseline():
    assert ORACLES == ("sense-oracle",) and set(ORACLES) <= set(SENSE)
    assert make_baseline("cs-ttv", n_iter=5).config["n_iter"] == 5
    sense = make_baseline("sense-espirit", n_iter=7, lam=0.1, calib=30, seed=2)
    assert (sense.config["n_iter"], sense.config["lam"], sense.config["calib"], sense.config["seed"]) == (7, 0.1, 30, 2)
    assert "ORACLE" in make_baseline("sense-oracle").config["maps"]
    with pytest.raises(ValueError, match="calib"):
        make_baseline("sense-oracle", calib=30)  # the oracle has no calibration
    with pytest.raises(ValueError, match="known baselines"):
        make_baseline("grappa")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_cuda_matches_cpu(kind, sms2):
    _, k3, mask3 = sms2
    cpu = cs_recon(k3, mask3, kind=kind, n_iter=20)
    gpu = cs_recon(k3.cuda(), mask3.cuda(), kind=kind, n_iter=20)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * cpu.abs().max().item())
