"""benchmarks/crnn_mri_reference.py (the published CRNN-MRI, layer for layer) equals sms-crnn.

``sms-crnn`` without its 3D conv, on one slice, is CRNN-MRI: same weights, same output to float32
precision (the reference's DC uses the unshifted FFT; the inputs are converted exactly, see the
module docstring).  This is what makes ``bench_zoo.py``'s speed ratio a like-for-like one.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from zoo.models import build_model
from zoo.physics import fft3, kz_mask, zero_filled

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "crnn_mri_reference.py"
_spec = importlib.util.spec_from_file_location("crnn_mri_reference", _PATH)
ref_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref_mod)


def _problem(b, t, y, x, seed=0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(b, 1, t, y, x, generator=g, dtype=torch.complex64)
    rows = torch.rand(b, t, y, generator=g) < 0.35
    mask3 = kz_mask(1, rows)
    k3 = fft3(truth) * mask3
    return zero_filled(k3), k3, mask3


@pytest.mark.parametrize("lam,shape", [(None, (2, 5, 16, 12)), (None, (1, 4, 15, 9)), (0.5, (1, 3, 10, 8))])
def test_reference_equals_sms_crnn_without_conv3d(lam, shape):
    torch.manual_seed(0)
    model = build_model("sms-crnn", {"n_filters": 6, "n_iterations": 3, "n_conv3d_layers": 0, "dc_noise_lambda": lam})
    # non-zero biases everywhere, so the zero hidden states' convolutions matter
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.1)
    ref = ref_mod.copy_sms_crnn_weights(ref_mod.CRNN_MRI(nf=6, nc=3, noise_lvl=lam), model)
    x0, k3, mask3 = _problem(*shape)
    with torch.no_grad():
        want = model(x0, k3, mask3)
        got = ref_mod.output_to_zoo(ref(*ref_mod.inputs_from_zoo(x0, k3, mask3)))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    # and the comparison can fail: a different weight gives a different output
    with torch.no_grad():
        ref.conv2_h.weight[0, 0, 1, 1] += 0.5
        other = ref_mod.output_to_zoo(ref(*ref_mod.inputs_from_zoo(x0, k3, mask3)))
    assert (other - want).abs().max() > 1e-3


def test_copy_refuses_a_model_with_conv3d():
    model = build_model("sms-crnn", {"n_filters": 4, "n_iterations": 2})
    with pytest.raises(ValueError, match="n_conv3d_layers=0"):
        ref_mod.copy_sms_crnn_weights(ref_mod.CRNN_MRI(nf=4, nc=2), model)


# --- the optimised sms-crnn against a plain, frame-by-frame formulation -------------------------


def _plain_sms_crnn(model, x0, k3, mask3):
    """sms-crnn written out the straightforward way from its own modules: every cell frame by
    frame, each direction on its own, zero hidden states convolved, complex <-> channels by hand,
    DC as ifft3(where(mask, k3, fft3(x)))."""
    from zoo.physics import fft3 as f3, ifft3

    c, crnn = model.config, model.crnn
    b, m, t = x0.shape[:3]
    cell = crnn.bcrnn
    x, state = x0, None
    for _ in range(c.n_iterations):
        h_in = torch.stack([x.real, x.imag], dim=3).flatten(0, 1)  # (N, T, 2, Y, X)
        zeros = torch.zeros(h_in.shape[0], c.n_filters, *h_in.shape[3:])
        prev = state or [torch.zeros(h_in.shape[0], t, *zeros.shape[1:])] * (1 + len(crnn.crnn_i))
        fwd, bwd, h = [], [None] * t, zeros
        for f in range(t):
            h = torch.relu(cell.i2h(h_in[:, f]) + cell.h2h(h) + cell.ih2ih(prev[0][:, f]))
            fwd.append(h)
        h = zeros
        for f in reversed(range(t)):
            h = torch.relu(cell.i2h(h_in[:, f]) + cell.h2h(h) + cell.ih2ih(prev[0][:, f]))
            bwd[f] = h
        hs = [torch.stack([a + z for a, z in zip(fwd, bwd)], dim=1)]
        for layer, hi in zip(crnn.crnn_i, prev[1:]):
            hs.append(torch.stack([torch.relu(layer.conv_x(hs[-1][:, f]) + layer.conv_h(hi[:, f])) for f in range(t)], 1))
        out = h_in + torch.stack([crnn.out(hs[-1][:, f]) for f in range(t)], dim=1)
        if model.st_conv is not None:
            out = out + model.st_conv.net(out.transpose(1, 2)).transpose(1, 2)
        x = torch.complex(out[:, :, 0], out[:, :, 1]).unflatten(0, (b, m))
        x = ifft3(torch.where(mask3, k3, f3(x)))
        state = hs
    return x


def _shipped():
    import json

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[2] / "zoo" / "weights"
    meta = json.loads((root / "sms-crnn-cine-cpu.json").read_text())
    model = build_model(meta["model"]["name"], meta["model"]["config"])
    model.load_state_dict(load_file(root / "sms-crnn-cine-cpu.safetensors"), strict=True)
    return model.eval()


def test_shipped_weights_load_and_equal_the_plain_formulation():
    """Parameter names and shapes are those of the shipped checkpoint (strict load), and the
    optimised network gives the plain formulation's output with them (M = 2, conv3d on)."""
    model = _shipped()
    g = torch.Generator().manual_seed(4)
    truth = torch.randn(1, 2, 5, 24, 20, generator=g, dtype=torch.complex64)
    mask3 = kz_mask(2, torch.rand(1, 5, 24, generator=g) < 0.4)
    k3 = fft3(truth) * mask3
    x0 = zero_filled(k3)
    with torch.no_grad():
        got, want = model(x0, k3, mask3), _plain_sms_crnn(model, x0, k3, mask3)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_training_gradients_equal_the_plain_formulation():
    """The hand-written backward of the recurrence gives autograd's gradients (float32)."""
    torch.manual_seed(2)
    model = build_model("sms-crnn", {"n_filters": 5, "n_iterations": 2})
    g = torch.Generator().manual_seed(5)
    truth = torch.randn(2, 2, 4, 12, 10, generator=g, dtype=torch.complex64)
    mask3 = kz_mask(2, torch.rand(2, 4, 12, generator=g) < 0.4)
    k3 = fft3(truth) * mask3
    x0 = zero_filled(k3)
    grads = []
    for fn in (model, lambda *a: _plain_sms_crnn(model, *a)):
        model.zero_grad()
        (fn(x0, k3, mask3) - truth).abs().pow(2).mean().backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-4, atol=1e-6 * grads[1][k].abs().max().item(), msg=k)


@pytest.mark.parametrize("ndim,t,circular,m", [(2, 1, False, 0), (2, 4, False, 0), (3, 3, False, 2),
                                              (3, 3, True, 1), (3, 3, True, 2), (3, 2, True, 3)])
def test_bidirectional_sweep_gradcheck(ndim, t, circular, m):
    """The hand-written backward of both BCRNN sweeps, against finite differences (float64), and
    the forward against the two sweeps written as a plain loop (``circular``: the first spatial
    axis wrapped around before every hidden-to-hidden convolution)."""
    import torch.nn.functional as F

    from zoo.models.crnn import _MEMORY_FORMAT, _BidirectionalSweep

    g = torch.Generator().manual_seed(ndim * 10 + t + 100 * m)
    n, f, spatial = 2, 3, (5, 4) if ndim == 2 else (m or 2, 3, 4)
    pre = torch.randn(t * n, f, *spatial, generator=g, dtype=torch.float64)
    pre = pre.contiguous(memory_format=_MEMORY_FORMAT[ndim]).requires_grad_()
    w = torch.randn(f, f, *([3] * ndim), generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, k: _BidirectionalSweep.apply(p, k, n, t, circular), (pre, w))

    conv = F.conv2d if ndim == 2 else F.conv3d

    def h2h(h):
        if not circular:
            return conv(h, w, padding=1)
        wrapped = torch.cat([h[:, :, -1:], h, h[:, :, :1]], dim=2)
        return conv(wrapped, w, padding=(0, 1, 1))

    frames = pre.detach().unflatten(0, (t, n))
    fwd, bwd, h = [None] * t, [None] * t, None
    for s in range(t):
        h = (frames[s] if h is None else frames[s] + h2h(h)).relu()
        fwd[s] = h
    h = None
    for s in reversed(range(t)):
        h = (frames[s] if h is None else frames[s] + h2h(h)).relu()
        bwd[s] = h
    want = torch.cat([a + b for a, b in zip(fwd, bwd)])
    got = _BidirectionalSweep.apply(pre.detach(), w.detach(), n, t, circular)
    assert torch.allclose(got, want, atol=1e-12)


def test_a_state_does_not_carry_stale_kernels():
    """The block caches channels-last kernels in its state; a weight changed in place or replaced
    between calls is seen."""
    from zoo.models.crnn import CRNNBlock

    torch.manual_seed(3)
    block = CRNNBlock(n_filters=4, kernel_size=3, n_crnn_layers=1)
    x = torch.randn(2, 3, 2, 6, 5)
    with torch.no_grad():
        _, state = block(x)
        before, _ = block(x, state)
        block.crnn_i[0].conv_h.weight.mul_(2)
        changed, _ = block(x, state)
        block.crnn_i[0].conv_h.weight = torch.nn.Parameter(block.crnn_i[0].conv_h.weight / 2)
        back, _ = block(x, state)
    assert (changed - before).abs().max() > 1e-4
    torch.testing.assert_close(back, before)
