"""zoo.models: registry, shapes, 3D-k-space data consistency, slice weight sharing, training.

Data: random complex slice stacks pushed through zoo.physics (fft3, masked); odd image sizes
(17 x 13) catch axis mix-ups; tiny networks (4 filters) keep every test fast on CPU.
"""

import dataclasses
import json

import pytest
import torch

from synth.errors import ConfigError
from zoo.models import (
    build_model,
    count_parameters,
    get_model_config_class,
    list_models,
    make_config,
    model_config_dict,
)
from zoo.models.crnn import BCRNNLayer, CRNNBlock, CRNNConfig
from zoo.physics import fft3, kz_mask, zero_filled

NAMES = ["conv3d", "independent", "sms-crnn"]
DC_MODELS = ["conv3d", "sms-crnn"]
TINY = {"n_filters": 4, "n_iterations": 3}


def make_data(b=1, m=2, t=4, y=17, x=13, density=0.4, seed=0):
    """(x_true, x0, k3, mask3): a random stack, its masked 3D k-space and zero-filled image."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, m, t, y, x, generator=g, dtype=torch.complex64)
    rows = torch.rand(b, t, y, generator=g) < density
    mask3 = kz_mask(m, rows)
    k3 = fft3(img) * mask3
    return img, zero_filled(k3), k3, mask3


def tiny(name, **extra):
    torch.manual_seed(0)
    return build_model(name, {**TINY, **extra})


def rel(a, b):
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


# --- registry ---------------------------------------------------------------------------------


def test_registry_lists_the_three_models():
    assert list_models() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_default_config_and_from_a_dict(name):
    cls = get_model_config_class(name)
    default = build_model(name)
    assert default.name == name and default.config == cls()
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    net = build_model(name, {"n_filters": 5, "kernel_size": 5})
    assert net.config == cls(n_filters=5, kernel_size=5)
    # the config dict is JSON and rebuilds the same architecture
    d = json.loads(json.dumps(model_config_dict(net)))
    again = build_model(name, d)
    assert again.config == net.config and count_parameters(again) == count_parameters(net)
    assert build_model(name, net.config).config == net.config


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'crnn-xyz'") as e:
        build_model("crnn-xyz")
    for name in NAMES:
        assert name in str(e.value)
    with pytest.raises(ValueError, match="known models"):
        get_model_config_class("nope")


@pytest.mark.parametrize("name", NAMES)
def test_unknown_config_key_is_named(name):
    with pytest.raises(ValueError, match="n_fliters") as e:
        build_model(name, {"n_fliters": 8})
    assert "n_filters" in str(e.value)  # the known keys are listed


@pytest.mark.parametrize(
    "bad",
    [
        {"n_filters": 0},
        {"kernel_size": 4},
        {"n_iterations": 0},
        {"n_crnn_layers": -1},
        {"n_filters": "16"},
        {"n_conv3d_layers": 1.0},
        {"learn_lambda": "yes"},
        {"dc_noise_lambda": "1"},
    ],
)
def test_invalid_config_values_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_model("sms-crnn", bad)


def test_dc_lambda_validation_and_wrong_config_class():
    with pytest.raises(ValueError, match="learn_lambda"):
        build_model("sms-crnn", {"learn_lambda": True})  # needs a starting lambda
    with pytest.raises(ValueError, match="dc_noise_lambda"):
        build_model("conv3d", {"dc_noise_lambda": -1.0})
    with pytest.raises(ValueError, match="Conv3dConfig"):
        build_model("conv3d", make_config("sms-crnn"))
    with pytest.raises(ValueError, match="dc_noise_lambda"):
        build_model("independent", {"dc_noise_lambda": 1.0})  # no DC in that model


def test_parameter_counts_paper_config():
    """CRNN-MRI at the paper's size has 297,794 weights (nf=64, 3x3, nd=5); the docs quote these."""
    assert count_parameters(build_model("sms-crnn", {"n_conv3d_layers": 0})) == 297_794
    assert count_parameters(build_model("sms-crnn")) == 297_904  # + one 3x3x3 Conv3d(2, 2)
    assert count_parameters(build_model("independent")) == 297_904
    assert count_parameters(build_model("conv3d")) == 892_226
    assert count_parameters(build_model("sms-crnn", {"n_filters": 16})) == 19_264
    assert count_parameters(build_model("conv3d", {"n_filters": 16})) == 57_170
    assert count_parameters(build_model("conv3d", {"n_filters": 16, "n_conv3d_layers": 1})) == 57_170 + 110
    assert count_parameters(build_model("conv3d", {"n_filters": 16, "n_conv3d_layers": 1, "coil_channels": 4})) == (
        count_parameters(build_model("conv3d", {"n_filters": 16, "coil_channels": 4})) + 1_736)
    assert count_parameters(build_model("sms-crnn", {"learn_lambda": True, "dc_noise_lambda": 1.0})) == 297_905


# --- forward ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 1, 3, 17, 13), (2, 2, 4, 17, 13), (1, 3, 2, 9, 11)])
def test_output_shape_and_dtype(name, shape):
    b, m, t, y, x = shape
    _, x0, k3, mask3 = make_data(b, m, t, y, x)
    out = tiny(name)(x0, k3, mask3)
    assert out.shape == x0.shape and out.dtype == torch.complex64
    assert torch.isfinite(torch.view_as_real(out)).all()


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_the_seed(name):
    _, x0, k3, mask3 = make_data()
    a, b = tiny(name)(x0, k3, mask3), tiny(name)(x0, k3, mask3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", DC_MODELS)
@pytest.mark.parametrize("m", [1, 2, 3])
def test_output_agrees_with_measured_3d_kspace(name, m):
    _, x0, k3, mask3 = make_data(b=2, m=m, t=3)
    out = tiny(name)(x0, k3, mask3)
    k_out = fft3(out)
    assert rel(k_out * mask3, k3) < 1e-5
    assert rel(k_out * ~mask3, fft3(x0) * ~mask3) > 0.1  # the network did fill the unsampled entries


@pytest.mark.parametrize("name", DC_MODELS)
def test_noise_weighted_dc_is_between_network_and_data(name):
    _, x0, k3, mask3 = make_data()
    hard = tiny(name)(x0, k3, mask3)
    soft = tiny(name, dc_noise_lambda=1.0)(x0, k3, mask3)
    assert rel(fft3(hard) * mask3, k3) < 1e-5
    assert rel(fft3(soft) * mask3, k3) > 1e-3


def test_independent_ignores_kspace():
    _, x0, k3, mask3 = make_data()
    net = tiny("independent")
    a = net(x0, k3, mask3)
    b = net(x0, torch.zeros_like(k3), torch.ones_like(mask3))
    assert torch.equal(a, b)
    assert torch.equal(a, net(x0, None, None))


@pytest.mark.parametrize("name", ["sms-crnn", "independent"])
def test_weights_shared_across_slices(name):
    """Without DC coupling (nothing sampled), permuting the slices of x0 permutes the output."""
    _, x0, k3, _ = make_data(m=3)
    none = torch.zeros(*k3.shape[:-1], 1, dtype=torch.bool)
    net = tiny(name)
    perm = [2, 0, 1]
    out = net(x0, torch.zeros_like(k3), none)
    out_p = net(x0[:, perm], torch.zeros_like(k3), none)
    assert rel(out_p, out[:, perm]) < 1e-5
    # and the network did something slice-wise (not the identity)
    assert rel(out, x0) > 0.1


def test_conv3d_sees_the_slice_order():
    """The counter-check: convolving across slices makes conv3d depend on their order."""
    _, x0, k3, _ = make_data(m=3)
    none = torch.zeros(*k3.shape[:-1], 1, dtype=torch.bool)
    net = tiny("conv3d")
    perm = [2, 0, 1]
    out = net(x0, torch.zeros_like(k3), none)
    out_p = net(x0[:, perm], torch.zeros_like(k3), none)
    assert rel(out_p, out[:, perm]) > 1e-3


def test_conv3d_circular_slice_padding_is_cyclic_equivariant():
    """With the slice axis wrapped, a cyclic shift of the slices shifts the output the same way
    (and a non-cyclic permutation still changes it); zero padding is not shift-equivariant."""
    _, x0, k3, _ = make_data(m=3)
    none = torch.zeros(*k3.shape[:-1], 1, dtype=torch.bool)
    z = torch.zeros_like(k3)
    net = tiny("conv3d", slice_padding="circular")
    out = net(x0, z, none)
    shift = [2, 0, 1]
    assert rel(net(x0[:, shift], z, none), out[:, shift]) < 1e-5
    swap = [1, 0, 2]
    assert rel(net(x0[:, swap], z, none), out[:, swap]) > 1e-3
    zeros = tiny("conv3d")
    assert rel(zeros(x0[:, shift], z, none), zeros(x0, z, none)[:, shift]) > 1e-3
    assert rel(out, zeros(x0, z, none)) > 1e-3  # same weights (same seed): only the padding differs


@pytest.mark.parametrize("coils", [1, 2])
def test_conv3d_2d_time_conv_acts_on_each_slice_before_dc(coils):
    """``n_conv3d_layers``: the same residual (T, Y, X) convolution as sms-crnn's, on every slice of
    the volume (no mixing of slices), before DC; 0 (the default, older checkpoints) has none."""
    assert build_model("conv3d").config.n_conv3d_layers == 0 and build_model("conv3d").st_conv is None
    net = tiny("conv3d", n_conv3d_layers=1, coil_channels=coils)
    h = torch.randn(2, 4, 2 * coils, 3, 7, 5)  # (B, T, C, M, Y, X)
    out = net._per_slice(h)
    for j in range(3):
        assert torch.allclose(out[:, :, :, j], net.st_conv(h[:, :, :, j]), atol=1e-6)
    _, x0, k3, mask3 = make_data(b=coils, m=2)
    before = tiny("conv3d", coil_channels=coils)
    after = tiny("conv3d", n_conv3d_layers=1, coil_channels=coils)  # same seed: the CRNN weights agree
    assert rel(after(x0, k3, mask3), before(x0, k3, mask3)) > 1e-4
    after(x0, k3, mask3).abs().pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in after.st_conv.parameters())
    # DC still has the last word: the measured entries are the data
    assert torch.allclose(fft3(after(x0, k3, mask3)) * mask3, k3, atol=1e-4)
    with pytest.raises(ConfigError, match="n_conv3d_layers"):
        build_model("conv3d", {"n_conv3d_layers": -1})


@pytest.mark.parametrize("m", [1, 2])
def test_circular_conv_is_zero_padded_conv_of_the_wrapped_input(m):
    """``circular`` pads the slice axis by wrapping: slice M-1 beside slice 0 (for M = 2, each
    slice sees the other on both sides; for M = 1, itself), the other axes zero padded."""
    import torch.nn.functional as F

    from zoo.models.crnn import _conv_sum, _wrap, to_time_major

    torch.manual_seed(2)
    conv = torch.nn.Conv3d(2, 4, 3, padding=1).double()
    x = torch.randn(1, 3, 2, m, 5, 4, dtype=torch.float64)  # (N, T, C, M, Y, X)
    flat = x.flatten(0, 1)
    wrapped = torch.cat([flat[:, :, -1:], flat, flat[:, :, :1]], dim=2)
    assert torch.equal(_wrap(flat, 1), wrapped)
    want = F.conv3d(wrapped, conv.weight, conv.bias, padding=(0, 1, 1))
    got = _conv_sum([(to_time_major(x, 3), conv)], conv.bias, 3, circular=True)
    assert torch.allclose(got, to_time_major(want.unflatten(0, (1, 3)), 3), atol=1e-12)
    zero = _conv_sum([(to_time_major(x, 3), conv)], conv.bias, 3)
    assert torch.allclose(zero, to_time_major(conv(flat).unflatten(0, (1, 3)), 3), atol=1e-12)
    assert not torch.allclose(got, zero)


def test_sms_crnn_dc_couples_the_slices():
    """With data, a change in one slice's input changes the other slice's output (3D-k-space DC)."""
    _, x0, k3, mask3 = make_data(m=2)
    net = tiny("sms-crnn")
    x1 = x0.clone()
    x1[:, 0] += 0.5 * torch.randn(x1[:, 0].shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    a, b = net(x0, k3, mask3), net(x1, k3, mask3)
    assert rel(b[:, 1], a[:, 1]) > 1e-4
    ind = tiny("independent")
    assert torch.equal(ind(x0, k3, mask3)[:, 1], ind(x1, k3, mask3)[:, 1])


# --- the CRNN block against the reference recurrence ------------------------------------------


def _reference_bcrnn(layer: BCRNNLayer, x, h_iter):
    """Qin et al.'s BCRNNlayer loop, frame by frame, with explicit zero hidden states."""
    n, t = x.shape[:2]
    zeros = torch.zeros(n, layer.h2h.out_channels, *x.shape[3:])
    h_iter = h_iter if h_iter is not None else torch.zeros(n, t, *zeros.shape[1:])

    def cell(xt, hi, h):
        return torch.relu(layer.i2h(xt) + layer.h2h(h) + layer.ih2ih(hi))

    fwd, h = [], zeros
    for i in range(t):
        h = cell(x[:, i], h_iter[:, i], h)
        fwd.append(h)
    bwd, h = [None] * t, zeros
    for i in reversed(range(t)):
        h = cell(x[:, i], h_iter[:, i], h)
        bwd[i] = h
    return torch.stack([f + b for f, b in zip(fwd, bwd)], dim=1)


@pytest.mark.parametrize("ndim", [2, 3])
def test_crnn_block_matches_the_reference_recurrence(ndim):
    torch.manual_seed(1)
    block = CRNNBlock(n_filters=3, kernel_size=3, n_crnn_layers=2, ndim=ndim)
    spatial = (5, 7) if ndim == 2 else (2, 5, 7)
    x = torch.randn(2, 4, 2, *spatial)
    state = None
    ref_state = [torch.zeros(2, 4, 3, *spatial)] * 3
    for _ in range(2):  # two iterations: exercises the recurrence over iterations too
        out, state = block(x, state)
        h = _reference_bcrnn(block.bcrnn, x, ref_state[0])
        new = [h]
        for layer, hi in zip(block.crnn_i, ref_state[1:]):
            h = torch.relu(layer.conv_x(h.flatten(0, 1)) + layer.conv_h(hi.flatten(0, 1))).unflatten(0, (2, 4))
            new.append(h)
        ref_out = x + block.out(h.flatten(0, 1)).unflatten(0, (2, 4))
        torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
        for a, b in zip(state, new):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        ref_state, x = new, out.detach()


def test_crnn_config_defaults_are_the_papers():
    assert CRNNConfig() == CRNNConfig(n_filters=64, n_iterations=5, kernel_size=3, n_crnn_layers=3)


# --- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    extra = {"learn_lambda": True, "dc_noise_lambda": 1.0} if name in DC_MODELS else {}
    net = tiny(name, **extra)
    target, x0, k3, mask3 = make_data()
    loss = (net(x0, k3, mask3) - target).abs().pow(2).mean()
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_a_few_adam_steps_overfit_one_example(name):
    """Smooth dynamic target (learnable), 30 Adam steps: the loss must drop clearly."""
    g = torch.Generator().manual_seed(3)
    m, t, y, x = 2, 4, 17, 13
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, y), torch.linspace(-1, 1, x), indexing="ij")
    blob = torch.exp(-(yy**2 + xx**2) / 0.2)
    amp = 1 + 0.3 * torch.sin(torch.arange(t) * 1.3)
    target = (blob * amp[:, None, None])[None, None].repeat(1, m, 1, 1, 1).to(torch.complex64)
    target[:, 1] = target[:, 1].roll(3, dims=-1)
    mask3 = kz_mask(m, torch.rand(1, t, y, generator=g) < 0.4)
    k3 = fft3(target) * mask3
    x0 = zero_filled(k3)
    net = tiny(name, n_filters=8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (net(x0, k3, mask3) - target).abs().pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# --- coils as channels (coil_channels = K > 1) ---------------------------------------------------


@pytest.mark.parametrize("name", ["sms-crnn", "conv3d", "independent"])
def test_coil_channels_couple_an_examples_coils_and_nothing_else(name):
    from zoo.models import build_model

    torch.manual_seed(0)
    b, c, m, t, y, x = 2, 3, 2, 3, 11, 9
    net = build_model(name, {"n_filters": 4, "n_iterations": 2, "coil_channels": c})
    x0 = torch.randn(b, c, m, t, y, x, dtype=torch.complex64)
    mask3 = torch.rand(b, c, m, t, y, 1) > 0.5
    k3 = torch.fft.fftn(x0, dim=(-4, -2, -1), norm="ortho") * mask3
    out = net(x0.flatten(0, 1), k3.flatten(0, 1), mask3.flatten(0, 1)).unflatten(0, (b, c))
    assert out.shape == (b, c, m, t, y, x) and out.dtype == torch.complex64
    x1 = x0.clone()
    x1[0, 1] += 1.0  # another coil of example 0 changes
    out1 = net(x1.flatten(0, 1), k3.flatten(0, 1), mask3.flatten(0, 1)).unflatten(0, (b, c))
    assert not torch.allclose(out1[0, 0], out[0, 0])  # coil 0 of the same example sees it
    torch.testing.assert_close(out1[1], out[1])  # the other example does not
    # only the first and last convolutions grow with K
    one = build_model(name, {"n_filters": 4, "n_iterations": 2})
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in one.parameters())
    with pytest.raises(ValueError, match="whole number"):
        net(x0.flatten(0, 1)[:5], k3.flatten(0, 1)[:5], mask3.flatten(0, 1)[:5])


def test_coil_channels_one_is_the_folded_network():
    from zoo.models import build_model
    from zoo.models.crnn import check_coil_channels

    torch.manual_seed(0)
    a = build_model("sms-crnn", {"n_filters": 4, "n_iterations": 2})
    torch.manual_seed(0)
    b = build_model("sms-crnn", {"n_filters": 4, "n_iterations": 2, "coil_channels": 1})
    x0 = torch.randn(4, 2, 3, 8, 8, dtype=torch.complex64)
    mask3 = torch.rand(4, 2, 3, 8, 1) > 0.5
    k3 = torch.fft.fftn(x0, dim=(-4, -2, -1), norm="ortho") * mask3
    torch.testing.assert_close(a(x0, k3, mask3), b(x0, k3, mask3), rtol=0, atol=0)
    check_coil_channels(a, 8)  # K = 1 takes any number of coils
    four = build_model("sms-crnn", {"n_filters": 4, "n_iterations": 1, "coil_channels": 4})
    check_coil_channels(four, 4)
    with pytest.raises(ValueError, match="coil_channels=4.*8 coils per example"):
        check_coil_channels(four, 8)
    with pytest.raises(ValueError, match="virtual"):
        check_coil_channels(four, None)


@pytest.mark.parametrize("m,padding,kernel", [(1, "zeros", 3), (2, "zeros", 3), (3, "zeros", 3), (2, "circular", 3),
                                               (3, "circular", 3), (2, "circular", 5), (4, "zeros", 5)])
def test_conv3d_runs_its_3d_block_as_2d_convolutions_over_stacked_slices(m, padding, kernel):
    """``conv3d`` runs its ``Conv3d`` CRNN block as ``Conv2d`` over the slices stacked along channels
    (block-Toeplitz kernels made from the 3D ones): the same outputs, states and parameter gradients
    as the 3D block, over two iterations (the second with the first's hidden states)."""
    torch.manual_seed(3)
    net = build_model("conv3d", {"n_filters": 3, "n_iterations": 2, "kernel_size": kernel, "coil_channels": 2,
                                 "slice_padding": padding}).double()
    h = torch.randn(2, 4, 4, m, 7, 5, dtype=torch.float64)  # (B, T, C = 2 coils, M, Y, X)

    def run_3d():
        a, s = net.crnn(h, None)
        b, s = net.crnn(a, s)
        return a, b, s

    def run_stacked():
        block, params = net._stacked(m)
        a, s = torch.func.functional_call(block, params, (h.transpose(2, 3).flatten(2, 3), None))
        b, s = torch.func.functional_call(block, params, (a, s))
        back = [x.unflatten(2, (m, -1)).transpose(2, 3) for x in (a, b, *s)]
        return back[0], back[1], back[2:]

    want, got = run_3d(), run_stacked()
    for w, g in zip([want[0], want[1], *want[2]], [got[0], got[1], *got[2]]):
        assert torch.allclose(g, w, atol=1e-10)
    grads = []
    for a, b, _ in (want, got):
        net.zero_grad()
        (b.pow(2).sum() + a.sin().sum()).backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in net.crnn.named_parameters()})
    for name in grads[0]:
        assert torch.allclose(grads[1][name], grads[0][name], atol=1e-9), name
    # no parameters but the 3D ones: checkpoints and optimisers see the same model
    assert all(n.startswith(("crnn.", "dc.")) for n, _ in net.named_parameters())


def test_slice_toeplitz_reads_the_planes_a_conv3d_reads():
    from zoo.models.conv3d import slice_toeplitz

    assert slice_toeplitz(2, 3, False).tolist() == [[[0, 1, 0], [0, 0, 1]], [[1, 0, 0], [0, 1, 0]]]
    # wrapped, each of two slices sees the other through both outer planes
    assert slice_toeplitz(2, 3, True).tolist() == [[[0, 1, 0], [1, 0, 1]], [[1, 0, 1], [0, 1, 0]]]
    assert slice_toeplitz(1, 3, True).tolist() == [[[1, 1, 1]]]
    assert slice_toeplitz(1, 3, False).tolist() == [[[0, 1, 0]]]


# --- bfloat16 compute (train.precision: bfloat16) -----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("coils", [1, 2])
def test_bfloat16_compute_is_close_to_float32_and_keeps_float32_parameters(name, coils):
    from zoo.train.params import set_compute_dtype

    extra = {"coil_channels": coils, "n_conv3d_layers": 2, "n_filters": 8}  # 4 filters: a dead ReLU layer
    ref, net = tiny(name, **extra), tiny(name, **extra)
    target, x0, k3, mask3 = make_data(b=coils)
    want = ref(x0, k3, mask3)
    (want - target).abs().pow(2).mean().backward()
    assert set_compute_dtype(net, torch.bfloat16) >= 1
    got = net(x0, k3, mask3)
    assert got.dtype == torch.complex64
    assert 0 < rel(got, want) < 2e-2  # bfloat16 has an 8-bit mantissa: close, not equal
    (got - target).abs().pow(2).mean().backward()
    for (pname, p), q in zip(net.named_parameters(), ref.parameters()):
        assert p.dtype == p.grad.dtype == torch.float32, pname
        assert rel(p.grad, q.grad) < 0.1, pname
    set_compute_dtype(net, None)  # back to the input's dtype: float32 exactly
    with torch.no_grad():
        assert torch.equal(net(x0, k3, mask3), ref(x0, k3, mask3))
