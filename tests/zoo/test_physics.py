"""zoo.physics: the operator property suite (STYLE 2), numpy-vs-torch agreement with synth, DC."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.physics import fft as sfft
from synth.physics import sms
from zoo import physics as P

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPES = [(2, 1, 3, 37, 31), (1, 2, 2, 8, 6), (2, 3, 2, 37, 31), (1, 3, 1, 5, 4)]  # (B, M, T, Y, X)


def crandn(gen, *shape, dtype=torch.complex64, device="cpu"):
    return torch.randn(*shape, generator=gen, dtype=dtype).to(device)


def inner(a, b):
    """<a, b> = sum conj(a) b, in complex128."""
    return torch.vdot(a.reshape(-1).to(torch.complex128), b.reshape(-1).to(torch.complex128)).item()


def check_adjoint(fwd, adj, ishape, oshape, gen, device="cpu", rtol=1e-4):
    """<A x, y> == <x, A^H y>, with explicit shape checks (after sigpy's check_linop_adjoint)."""
    x, y = crandn(gen, *ishape, device=device), crandn(gen, *oshape, device=device)
    ax, ahy = fwd(x), adj(y)
    assert tuple(ax.shape) == tuple(oshape), (ax.shape, oshape)
    assert tuple(ahy.shape) == tuple(ishape), (ahy.shape, ishape)
    assert ax.dtype == ahy.dtype == torch.complex64
    assert ax.device.type == ahy.device.type == torch.device(device).type
    lhs, rhs = inner(y, ax), inner(ahy, x)
    assert abs(lhs - rhs) <= rtol * max(abs(lhs), 1e-12), (lhs, rhs)


def check_linearity(op, ishape, gen, device="cpu", rtol=1e-5):
    x1, x2 = crandn(gen, *ishape, device=device), crandn(gen, *ishape, device=device)
    a = 0.7 - 1.3j
    lhs, rhs = op(a * x1 + x2), a * op(x1) + op(x2)
    assert torch.linalg.vector_norm(lhs - rhs) <= rtol * torch.linalg.vector_norm(rhs)


def row_mask(gen, b, t, ny, device="cpu"):
    return (torch.rand(b, t, ny, generator=gen) < 0.5).to(device)


def random_kz(gen, b, t, ny, m, device="cpu"):
    """An arbitrary kz per row, int8 (B, T, Ky), as a store's ``kz`` array holds."""
    return torch.randint(0, m, (b, t, ny), generator=gen).to(torch.int8).to(device)


def close(a, b, tol=2e-6):
    """Relative max-norm agreement (float32 precision) of torch/numpy arrays."""
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(np.abs(b).max(), 1e-30)
    assert np.abs(a - b).max() <= tol * scale, np.abs(a - b).max() / scale


# --- property suite ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
def test_operator_suite(shape, device):
    b, m, t, ny, nx = shape
    gen = torch.Generator().manual_seed(sum(shape))
    img, k3, coll = (b, m, t, ny, nx), (b, m, t, ny, nx), (b, t, ny, nx)
    ops = {
        "fft2c": (P.fft2c, P.ifft2c, img, img),
        "collapse": (P.collapse, lambda y: P.expand(y, m), (b, t, m, ny, nx), coll),
        "fft3": (P.fft3, P.ifft3, img, k3),
        "from_3d_data": (P.from_3d_data, lambda y: from_3d_adjoint(y, m), k3, coll),
    }
    mask = row_mask(gen, b, t, ny, device)
    kz = random_kz(gen, b, t, ny, m, device)
    ops["collapse-kz"] = (lambda k: P.collapse(k, kz), lambda y: P.expand(y, m, kz), (b, t, m, ny, nx), coll)
    ops["from_3d_data-kz"] = (lambda k: P.from_3d_data(k, kz), lambda y: m * P.to_3d_data(y, None, m, kz)[0], k3, coll)
    for name, op in {"unmasked": P.SmsOperator(None, m), "masked": P.SmsOperator(mask, m),
                     "masked-kz": P.SmsOperator(mask, m, kz), "unmasked-kz": P.SmsOperator(None, m, kz)}.items():
        ops[f"sms-{name}"] = (op.forward, op.adjoint, img, coll)
    for name, (fwd, adj, ishape, oshape) in ops.items():
        check_adjoint(fwd, adj, ishape, oshape, gen, device)
        check_linearity(fwd, ishape, gen, device)
        check_linearity(adj, oshape, gen, device)


def from_3d_adjoint(y, m):
    """Adjoint of from_3d_data through to_3d_data: from_3d^H y = M * to_3d_data(y, all rows)."""
    return m * P.to_3d_data(y, None, m)[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_fft3_and_fft2c_are_unitary_inverses(shape):
    gen = torch.Generator().manual_seed(1)
    x = crandn(gen, *shape)
    close(P.ifft3(P.fft3(x)), x)
    close(P.ifft2c(P.fft2c(x)), x)
    assert torch.linalg.vector_norm(P.fft3(x)).item() == pytest.approx(torch.linalg.vector_norm(x).item(), rel=1e-5)


def test_extra_leading_coil_dim():
    """(B, C, M, T, Y, X) works as if C were folded into B."""
    gen = torch.Generator().manual_seed(2)
    x = crandn(gen, 2, 3, 2, 2, 9, 7)
    close(P.fft3(x), P.fft3(x.reshape(6, 2, 2, 9, 7)).reshape(x.shape))
    mask = row_mask(gen, 2, 2, 9)
    op = P.SmsOperator(mask[:, None], 2)
    folded = P.SmsOperator(mask.repeat_interleave(3, 0), 2)
    close(op.forward(x), folded.forward(x.reshape(6, 2, 2, 9, 7)).reshape(2, 3, 2, 9, 7))


# --- numpy (synth) vs torch (zoo) -------------------------------------------------------------


@pytest.mark.parametrize("m,ny", [(1, 7), (2, 37), (3, 37), (4, 10)])
def test_caipi_phase_and_kz_mask_match_synth(m, ny):
    close(P.caipi_phase(m, ny), sms.caipi_phase(m, ny), tol=1e-6)
    assert P.caipi_phase(m, ny).dtype == torch.complex64
    rows = np.random.default_rng(m).random((2, 3, ny)) < 0.5  # (B, T, Ky)
    ours = P.kz_mask(m, torch.from_numpy(rows))
    assert ours.shape == (2, m, 3, ny, 1) and ours.dtype == torch.bool
    ref = sms.kz_mask(m, rows)  # (B, T, M, Ky)
    np.testing.assert_array_equal(ours[..., 0].numpy(), np.moveaxis(ref, -2, -3))


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 3), t=st.integers(1, 3), ny=st.integers(4, 21), nx=st.integers(3, 11),
       seed=st.integers(0, 2**31))
def test_matches_synth_collapse_fft2c_and_3d_identity(m, t, ny, nx, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, m, t, ny, nx)) + 1j * rng.standard_normal((2, m, t, ny, nx))).astype(np.complex64)
    xt = torch.from_numpy(x)
    k_np = sfft.fft2c(x)
    close(P.fft2c(xt), k_np)
    close(P.ifft2c(xt), sfft.ifft2c(x))
    per_slice = np.moveaxis(k_np, 1, -3)  # (B, T, M, Ky, Kx)
    y_np = sms.collapse(per_slice)
    close(P.collapse(torch.from_numpy(per_slice)), y_np)
    y = rng.standard_normal((2, t, ny, nx)).astype(np.complex64)
    close(P.expand(torch.from_numpy(y), m), sms.expand(y, m))
    # the paper's 3D identity: masked from_3d_data(fft3(x)) is synth's (masked) collapse
    mask = rng.random((t, ny)) < 0.6
    ours = P.from_3d_data(P.fft3(xt)) * torch.from_numpy(mask)[..., None]
    close(ours, y_np * mask[..., None])
    # and the full operator against synth.physics.sms.SmsForward (coils as the leading dim)
    ref = sms.SmsForward(x.shape, mask)
    close(P.SmsOperator(torch.from_numpy(mask), m).forward(xt), ref(x))
    close(P.SmsOperator(torch.from_numpy(mask), m).adjoint(torch.from_numpy(y)), ref.H(y))


def test_3d_data_round_trip_and_zero_filled_scale():
    gen = torch.Generator().manual_seed(3)
    b, m, t, ny, nx = 2, 3, 2, 37, 31
    mask = row_mask(gen, b, t, ny)
    y = crandn(gen, b, t, ny, nx)
    k3, mask3 = P.to_3d_data(y, mask, m)
    assert k3.shape == (b, m, t, ny, nx) and k3.dtype == torch.complex64
    assert mask3.shape == (b, m, t, ny, 1) and mask3.dtype == torch.bool
    assert torch.equal(mask3, P.kz_mask(m, mask))
    assert not k3[~mask3.expand_as(k3)].any()  # zeros off the 3D mask
    close(P.from_3d_data(k3), y * mask[..., None])
    # zero-filled 3D inverse = A^H y / M
    close(P.zero_filled(k3), P.SmsOperator(mask, m).adjoint(y) / m)
    # a noiseless measurement of x is the 3D k-space of x on the mask
    x = crandn(gen, b, m, t, ny, nx)
    k3x, _ = P.to_3d_data(P.SmsOperator(mask, m).forward(x), mask, m)
    close(k3x, P.fft3(x) * mask3)


@settings(max_examples=20, deadline=None)
@given(m=st.integers(1, 3), t=st.integers(1, 3), ny=st.integers(4, 21), nx=st.integers(3, 11),
       seed=st.integers(0, 2**31))
def test_kz_operators_match_synth(m, t, ny, nx, seed):
    """The kz-aware operators equal synth.physics.sms's, for the acquired ordering and any kz."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((2, m, t, ny, nx)) + 1j * rng.standard_normal((2, m, t, ny, nx))).astype(np.complex64)
    xt = torch.from_numpy(x)
    mask = rng.random((t, ny)) < 0.6
    for kz in (sms.kz_table("acquired", mask, m), rng.integers(0, m, (t, ny)).astype(np.int8)):
        kzt = torch.from_numpy(kz)
        close(P.caipi_phase_kz(kzt, m), sms.caipi_phase_kz(kz, m), tol=1e-6)
        per_slice = np.moveaxis(sfft.fft2c(x), 1, -3)  # (B, T, M, Ky, Kx)
        y_np = sms.collapse(per_slice, kz)
        close(P.collapse(torch.from_numpy(per_slice), kzt), y_np)
        close(P.collapse(torch.from_numpy(per_slice), kzt.long()), y_np)  # long works as int8 does
        y = rng.standard_normal((2, t, ny, nx)).astype(np.complex64)
        close(P.expand(torch.from_numpy(y), m, kzt), sms.expand(y, m, kz))
        # 3D identity with kz: from_3d_data(fft3(x), kz) is the collapse with kz
        close(P.from_3d_data(P.fft3(xt), kzt), y_np)
        ref = sms.SmsForward(x.shape, mask, kz)
        op = P.SmsOperator(torch.from_numpy(mask), m, kzt)
        close(op.forward(xt), ref(x))
        close(op.adjoint(torch.from_numpy(y)), ref.H(y))
        ours = P.kz_mask(m, torch.from_numpy(mask), kzt)
        assert ours.shape == (m, t, ny, 1)
        np.testing.assert_array_equal(ours[..., 0].numpy(), np.moveaxis(sms.kz_mask(m, mask, kz), -2, -3))
        # a noiseless measurement with kz lands on the 3D k-space of x at (kz, t, n)
        k3x, mask3 = P.to_3d_data(op.forward(xt), torch.from_numpy(mask), m, kzt)
        close(k3x, P.fft3(xt) * mask3)
    # kz = n mod M is the default
    row, maskt = torch.from_numpy(sms.kz_table("row", mask, m)), torch.from_numpy(mask)
    close(P.SmsOperator(maskt, m, row).forward(xt), P.SmsOperator(maskt, m).forward(xt))
    assert torch.equal(P.kz_mask(m, maskt, row), P.kz_mask(m, maskt).expand(m, t, ny, 1))


def test_kz_batches_broadcast_over_coils():
    """kz (B, T, Ky) with images (B, C, M, T, Y, X): kz[:, None] broadcasts over the coil dim."""
    gen = torch.Generator().manual_seed(5)
    b, c, m, t, ny, nx = 2, 3, 2, 2, 9, 7
    x = crandn(gen, b, c, m, t, ny, nx)
    mask, kz = row_mask(gen, b, t, ny), random_kz(gen, b, t, ny, m)
    op = P.SmsOperator(mask[:, None], m, kz[:, None])
    folded = P.SmsOperator(mask.repeat_interleave(c, 0), m, kz.repeat_interleave(c, 0))
    close(op.forward(x), folded.forward(x.reshape(b * c, m, t, ny, nx)).reshape(b, c, t, ny, nx))


# --- data consistency -------------------------------------------------------------------------


@pytest.fixture
def dc_case():
    gen = torch.Generator().manual_seed(4)
    b, m, t, ny, nx = 2, 2, 3, 37, 31
    truth = crandn(gen, b, m, t, ny, nx)
    mask = row_mask(gen, b, t, ny)
    k3, mask3 = P.to_3d_data(P.SmsOperator(mask, m).forward(truth), mask, m)
    x = crandn(gen, b, m, t, ny, nx)
    return x, k3, mask3


def test_dc_agrees_with_data_and_keeps_the_rest(dc_case):
    x, k3, mask3 = dc_case
    out = P.data_consistency(x, k3, mask3)
    assert out.shape == x.shape and out.dtype == torch.complex64
    k_out, k_in = P.fft3(out), P.fft3(x)
    m3 = mask3.expand_as(k3)
    close(k_out[m3], k3[m3])
    close(k_out[~m3], k_in[~m3])


def test_dc_identity_without_samples_and_idempotent(dc_case):
    x, k3, mask3 = dc_case
    close(P.data_consistency(x, k3, torch.zeros_like(mask3)), x)
    once = P.data_consistency(x, k3, mask3)
    close(P.data_consistency(once, k3, mask3), once)


def test_dc_noise_lambda_limits(dc_case):
    x, k3, mask3 = dc_case
    hard = P.data_consistency(x, k3, mask3)
    close(P.data_consistency(x, k3, mask3, float("inf")), hard)
    close(P.data_consistency(x, k3, mask3, 1e9), hard, tol=1e-6)
    close(P.data_consistency(x, k3, mask3, 0.0), x)
    # in between: sampled entries are the weighted average
    lam = torch.tensor(3.0)
    k_out = P.fft3(P.data_consistency(x, k3, mask3, lam))
    m3 = mask3.expand_as(k3)
    close(k_out[m3], ((P.fft3(x) + 3 * k3) / 4)[m3])


def test_gradients_flow_gradcheck():
    """Double-precision gradcheck through DC (x, k3 and a learnable λ) and the SMS operator."""
    gen = torch.Generator().manual_seed(5)
    shape = (1, 2, 1, 5, 3)
    x = crandn(gen, *shape, dtype=torch.complex128).requires_grad_()
    k3 = crandn(gen, *shape, dtype=torch.complex128).requires_grad_()
    lam = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    mask3 = P.kz_mask(2, torch.tensor([[[True, False, True, True, False]]]))
    assert torch.autograd.gradcheck(lambda x, k, l: P.data_consistency(x, k, mask3, l), (x, k3, lam))
    assert torch.autograd.gradcheck(lambda x, k: P.data_consistency(x, k, mask3), (x, k3))
    op = P.SmsOperator(torch.tensor([[[True, True, False, True, False]]]), 2)
    assert torch.autograd.gradcheck(op.forward, (x,))
    y = crandn(gen, 1, 1, 5, 3, dtype=torch.complex128).requires_grad_()
    assert torch.autograd.gradcheck(lambda y: P.to_3d_data(y, None, 2)[0], (y,))
    # a float32 learnable λ gets a gradient in the usual training dtype
    lam32 = torch.nn.Parameter(torch.tensor(1.0))
    x32 = crandn(gen, *shape).requires_grad_()
    P.data_consistency(x32, k3.detach().to(torch.complex64), mask3, lam32).abs().sum().backward()
    assert lam32.grad is not None and torch.isfinite(lam32.grad) and x32.grad is not None


def test_complex_channels_round_trip():
    gen = torch.Generator().manual_seed(6)
    x = crandn(gen, 2, 3, 4, 5, 7)
    for dim in (1, -1, 0, 5, -6):
        r = P.complex_to_channels(x, dim)
        assert r.dtype == torch.float32 and r.shape[dim] == 2 and r.ndim == 6
        assert torch.equal(P.channels_to_complex(r, dim), x)
    r = P.complex_to_channels(x, 1)
    assert torch.equal(r[:, 0], x.real) and torch.equal(r[:, 1], x.imag)
    with pytest.raises(ValueError, match="size 2"):
        P.channels_to_complex(r, 2)


def test_operator_rejects_wrong_slice_count():
    with pytest.raises(ValueError, match="2 slices"):
        P.SmsOperator(None, 2).forward(torch.zeros(1, 3, 1, 4, 4, dtype=torch.complex64))
