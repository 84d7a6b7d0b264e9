"""zoo.eval.sense: the SENSE operator's adjoint, CG, SMS-SENSE with oracle and ESPIRiT maps on a small
cine phantom written through the store's forward model (docs/store-format.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.dataset.store import Store
from synth.errors import ConfigError
from synth.io.phantom import PhantomSpec
from synth.physics.fft import fft2c
from zoo import physics as P
from zoo.eval import sense as S
from zoo.data import DataConfig, SmsDataset
from zoo.metrics import psnr

C, M, T, NY, NX = 8, 2, 8, 40, 36

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.complex64)


def unit_maps(g, b, c, m, t, y, x):
    s = rand(g, b, c, m, t, y, x)
    return s / torch.linalg.vector_norm(s, dim=1, keepdim=True)


def phantom_store(root, *, snr=None):
    """SMS-2 stores of a 3-slice cine phantom made by the simulator itself (dicom2kspace): 8 circle
    coils, a smooth per-coil grating phase (constant in time, so the true coil sensitivity is
    csm * exp(j grating)), uniform R = 2 (R * M = 4), 4 ACS rows; ``snr`` adds noise."""
    from synth.dataset.config import SimConfig
    from synth.dataset.pipeline import dicom2kspace
    from synth.io.phantom import write_phantom

    write_phantom(root / "dcm", PhantomSpec(kind="cine", n_slices=3, n_frames=T, acquired=(NY, NX), matrix=(NY, NX),
                                            slice_spacing_mm=20.0, seed=3))
    out = root / "s.zarr"
    dicom2kspace([root / "dcm"], out, SimConfig(sms=M, coils=C, accel=2, acs=4, csm="circle", phase="grating",
                                                snr=snr, seed=5), salt=b"sense-tests")
    return str(out)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return phantom_store(tmp_path_factory.mktemp("sense"))


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    return phantom_store(tmp_path_factory.mktemp("sense-noisy"), snr=20.0)


def item_batch(store, i):
    ds = SmsDataset(store, DataConfig(coil_mode="per-coil"))
    return {k: v[None] for k, v in ds[i].items()}


# --- the operator and the solver --------------------------------------------------------------


def test_operator_adjoint_and_shapes():
    g = torch.Generator().manual_seed(0)
    b, c, m, t, y, x = 2, 3, 2, 4, 9, 7  # odd sizes catch axis mix-ups
    maps = unit_maps(g, b, c, m, 1, y, x)
    mask3 = P.kz_mask(m, torch.rand(b, t, y, generator=g) < 0.5)
    op = S.SenseOperator(maps, mask3)
    u, v = rand(g, b, m, t, y, x), rand(g, b, c, m, t, y, x)
    au, ahv = op(u), op.adjoint(v)
    assert au.shape == (b, c, m, t, y, x) and ahv.shape == (b, m, t, y, x)
    lhs = torch.vdot(v.flatten().to(torch.complex128), au.flatten().to(torch.complex128))
    rhs = torch.vdot(ahv.flatten().to(torch.complex128), u.flatten().to(torch.complex128))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    # linear, and zero off the mask
    w = rand(g, b, m, t, y, x)
    assert torch.allclose(op(2j * u + w), 2j * au + op(w), atol=1e-5)
    assert (au * ~mask3[:, None]).abs().max() == 0
    # unit-norm maps and a full mask: A is an isometry, A^H A = I
    full = S.SenseOperator(maps, torch.ones_like(mask3))
    assert torch.allclose(full.normal(u), u, atol=1e-5)


def test_cg_solves_a_small_problem_exactly():
    """Noise-free, fully sampled, with and without the temporal Tikhonov term: CG reaches the
    solution of the normal equations (checked against a dense solve of the same matrix)."""
    g = torch.Generator().manual_seed(1)
    b, c, m, t, y, x = 1, 2, 2, 3, 5, 4
    maps = rand(g, b, c, m, 1, y, x).to(torch.complex128)  # not unit norm: a non-trivial A^H A
    mask3 = torch.ones(b, m, t, y, 1, dtype=torch.bool)
    truth = rand(g, b, m, t, y, x).to(torch.complex128)
    op = S.SenseOperator(maps, mask3)
    k3 = op(truth)
    n = m * t * y * x
    for lam in (0.0, 0.3):
        got = S.sense_recon(k3, mask3, maps, lam=lam, n_iter=n)
        # the dense normal matrix, column by column
        eye = torch.eye(n, dtype=torch.complex128).reshape(n, m, t, y, x)
        cols = []
        for e in eye:
            v = op.normal(e[None]) + lam * S._diff_t_adjoint(S._diff_t(e[None]))
            cols.append(v.flatten())
        a = torch.stack(cols, dim=1)
        want = torch.linalg.solve(a, op.adjoint(k3).flatten()).reshape(truth.shape)
        assert torch.linalg.vector_norm(got - want) <= 1e-8 * torch.linalg.vector_norm(want)
        if lam == 0:
            assert torch.linalg.vector_norm(got - truth) <= 1e-8 * torch.linalg.vector_norm(truth)


def test_cg_stops_at_tolerance():
    g = torch.Generator().manual_seed(2)
    maps = unit_maps(g, 2, 4, 2, 1, 6, 5)
    mask3 = P.kz_mask(2, torch.rand(2, 3, 6, generator=g) < 0.7)
    op = S.SenseOperator(maps, mask3)
    rhs = op.adjoint(op(rand(g, 2, 2, 3, 6, 5)))
    _, res = S.conjugate_gradient(op.normal, rhs, 500, tol=1e-4)
    assert res.shape == (2,) and (res <= 1e-4).all()


def test_bad_settings_are_refused():
    for bad in ({"lam": -1.0}, {"lam": float("nan")}, {"n_iter": -1}, {"n_iter": 2.5}):
        with pytest.raises(ConfigError):
            S.SenseBaseline("oracle", **bad)
    with pytest.raises(ConfigError, match="kind"):
        S.SenseBaseline("grappa")
    with pytest.raises(ConfigError, match="calib"):
        S.SenseBaseline("espirit", calib=0)


# --- on the phantom store ---------------------------------------------------------------------


def test_oracle_maps_are_the_exact_sensitivities(store):
    """Fully sampled and noise-free, the oracle recovers the target exactly -- which csm alone
    cannot, because the synthetic phase is per coil."""
    st = Store.open(store)
    ex = st.example(0, ["target", "csm", "phase"])
    truth = torch.from_numpy(ex["target"].astype(np.complex64))[None]
    maps = torch.from_numpy(S.oracle_maps(ex["csm"], ex["phase"]))[None]
    full = torch.ones(1, M, T, NY, 1, dtype=torch.bool)
    k3 = S.SenseOperator(maps, full)(truth)
    assert float(psnr(S.sense_recon(k3, full, maps, lam=0.0, n_iter=3), truth)) > 80
    csm_only = torch.from_numpy(S.oracle_maps(ex["csm"], None))[None]
    assert float(psnr(S.sense_recon(k3, full, csm_only, lam=0.0, n_iter=3), truth)) < 40


@pytest.mark.parametrize("kind", ["oracle", "espirit"])
def test_sense_beats_zero_filled_at_total_acceleration_4(store, noisy, kind):
    """R * M = 2 * 2 with 8 coils: SENSE separates the slices that zero-filling leaves aliased."""
    model = S.SenseBaseline(kind)
    for path, i in ((store, 0), (noisy, 1)):
        st = Store.open(path)
        b = item_batch(path, i)
        inputs = {k: torch.from_numpy(np.asarray(v))[None] for k, v in model.store_inputs(st, i).items()}
        x = model(b["x0"], b["k3"], b["mask3"], **inputs)
        assert x.shape == (1, M, T, NY, NX) and x.dtype == torch.complex64
        zf = torch.linalg.vector_norm(b["x0"], dim=1)
        p_sense, p_zf = float(psnr(x, b["target"])), float(psnr(zf, b["target"]))
        assert p_sense > p_zf + 10, (kind, i, p_sense, p_zf)


def test_espirit_maps_match_the_true_maps(noisy):
    """Up to a phase per pixel, where there is signal: |<s_est, s_true>| > 0.95 over coils (from a
    noisy single-band reference)."""
    st = Store.open(noisy)
    ex = st.example(1, ["target", "csm", "phase", "noise_sigma"])
    assert float(ex["noise_sigma"]) > 0
    model = S.SenseBaseline("espirit")
    inputs = model.store_inputs(st, 1)
    assert int(inputs["calib"]) == S.MIN_CALIB  # the store's acs (4) raised to the minimum
    est = S.espirit_maps(inputs["reference"], int(inputs["calib"]))  # (C, M, Y, X)
    true = S.oracle_maps(ex["csm"], ex["phase"])[:, :, 0]  # the grating is constant in time
    support = ex["target"].mean(axis=1) > 0.05  # (M, Y, X)
    coherence = np.abs((est.conj() * true).sum(axis=0))
    assert support.mean() > 0.2
    assert np.median(coherence[support]) > 0.99 and np.mean(coherence[support] > 0.95) > 0.97
    # unit norm where ESPIRiT keeps the pixel, 0 where it does not
    norm = np.sqrt((np.abs(est) ** 2).sum(axis=0))
    assert np.all((np.abs(norm - 1) < 1e-3) | (norm == 0))


def test_single_band_reference(store):
    st = Store.open(store)
    ex = st.example(1, ["target", "csm", "phase"])
    ref = S.single_band_reference(ex["target"], ex["csm"], ex["phase"], 10)
    rows = np.flatnonzero(np.abs(ref).sum(axis=(0, 1, 3)) > 0)
    assert rows.tolist() == list(range(NY // 2 - 5, NY // 2 + 5))
    # the kept rows are fft2c of the time-averaged coil images
    avg = (ex["target"][None] * ex["csm"][:, :, None] * np.exp(1j * ex["phase"])).mean(axis=2)
    np.testing.assert_allclose(ref[:, :, rows], fft2c(avg)[:, :, rows], atol=1e-5)
    # noise: seeded, of the given sigma, on the kept rows only
    a = S.single_band_reference(ex["target"], ex["csm"], ex["phase"], 10, 0.1, np.random.default_rng(0))
    b = S.single_band_reference(ex["target"], ex["csm"], ex["phase"], 10, 0.1, np.random.default_rng(0))
    np.testing.assert_array_equal(a, b)
    d = (a - ref)[:, :, rows]
    assert abs(np.sqrt(np.mean(np.abs(d) ** 2)) - 0.1) < 0.01
    assert np.all(a[:, :, ~np.isin(np.arange(NY), rows)] == 0)
    with pytest.raises(ConfigError, match="rng"):
        S.single_band_reference(ex["target"], ex["csm"], ex["phase"], 10, 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(store):
    st = Store.open(store)
    b = item_batch(store, 0)
    for kind in ("oracle", "espirit"):  # ESPIRiT calibrates on the CPU; the maps move to the data's device
        model = S.SenseBaseline(kind, n_iter=10)
        inputs = {k: torch.from_numpy(np.asarray(v))[None] for k, v in model.store_inputs(st, 0).items()}
        cpu = model(b["x0"], b["k3"], b["mask3"], **inputs)
        gpu = model(b["x0"].cuda(), b["k3"].cuda(), b["mask3"].cuda(), **{k: v.cuda() for k, v in inputs.items()})
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * cpu.abs().max().item())
