r"""CRNN-MRI building blocks (Qin et al. 2018), for 2D or 3D spatial convolutions.

Reference: C. Qin, J. Schlemper, J. Caballero, A. N. Price, J. V. Hajnal, D. Rueckert,
"Convolutional Recurrent Neural Networks for Dynamic MR Image Reconstruction", IEEE TMI 38(1),
280-290, 2018 (arXiv:1712.01751); code: github.com/cq615/Deep-MRI-Reconstruction
(``cascadenet_pytorch/model_pytorch.py``: ``CRNNcell``, ``BCRNNlayer``, ``CRNN_MRI``).

One iteration ``i`` of CRNN-MRI on a real 2-channel sequence :math:`x^{(i-1)}_t`:

.. math::

    \overrightarrow{H}_{1,t} &= \mathrm{ReLU}(W_{x} * x_t + W_{t} * \overrightarrow{H}_{1,t-1}
                               + W_{i} * H^{(i-1)}_{1,t})                         \quad\text{(BCRNN)}\\
    H_{1,t} &= \overrightarrow{H}_{1,t} + \overleftarrow{H}_{1,t}\\
    H_{l,t} &= \mathrm{ReLU}(W_{l} * H_{l-1,t} + W_{i,l} * H^{(i-1)}_{l,t}),
              \quad l = 2..L-1                                                    \quad\text{(CRNN-i)}\\
    x^{(i)}_t &= x^{(i-1)}_t + W_{L} * H_{L-1,t}                                  \quad\text{(residual)}

followed by data consistency, done by the model (:mod:`zoo.physics`).  Hidden states at
iteration 0 and before the first frame are zero (so those convolutions reduce to their bias).
As in the reference code, the forward and backward time directions share one cell, and every
convolution has a bias.  The paper's network has ``L = 5`` (one BCRNN, three CRNN-i, the final
convolution), 64 filters, 3x3 kernels, and 5 iterations (the reference code's default) with
weights shared over iterations: 297,794 parameters in 2D.

Tensors here are **real**, laid out ``(N, T, C, *S)`` with ``S`` the spatial axes: ``(Y, X)``
for ``ndim=2`` or e.g. ``(M, Y, X)`` for ``ndim=3``.  Complex <-> channel conversion is the
model's job (at the network boundary).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from synth.errors import ConfigError
from zoo.physics import data_consistency

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_FN = {2: F.conv2d, 3: F.conv3d}


def _need(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"model config {key!r}: {msg}")


def _need_int(config, *keys: str) -> None:
    # a YAML/CLI string or float must not slip through to a comparison or a layer size
    for key in keys:
        v = getattr(config, key)
        _need(isinstance(v, int) and not isinstance(v, bool), key, f"must be an integer, got {v!r}")


@dataclass(frozen=True)
class CRNNConfig:
    """The CRNN body shared by the zoo's models (defaults: the paper's CRNN-MRI).

    Attributes
    ----------
    n_filters : hidden channels of every layer (paper: 64; 16 is a usable CPU-sized choice).
    n_iterations : unrolled iterations, weights shared over them (paper: 5 for SMS-CRNN).
    kernel_size : odd convolution kernel size (paper: 3).
    n_crnn_layers : CRNN-i layers after the BCRNN layer (paper: 3, i.e. ``nd = 5`` layers in all).
    coil_channels : K, the coils of one example the network sees **together**, as 2K real
        channels (real parts, then imaginary parts).  1 (the default, CRNN-MRI's network): every
        coil image goes through the network on its own, coils folded into the batch, so the
        network never sees what the coils' different sensitivities say about which slice a
        signal came from.  K > 1: the data must have exactly K coils per example (``per-coil``
        with C = K, or ``compressed`` to K) and arrive folded as ``zoo.train.fold_coils`` folds
        them, (B*K, ...) with an example's coils consecutive; only the first and last
        convolutions grow (2K channels), and a step costs about 1/K of the folded one.
        Data consistency stays per coil and exact.
    """

    n_filters: int = 64
    n_iterations: int = 5
    kernel_size: int = 3
    n_crnn_layers: int = 3
    coil_channels: int = 1

    def __post_init__(self):
        _need_int(self, "n_filters", "n_iterations", "kernel_size", "n_crnn_layers", "coil_channels")
        _need(self.coil_channels >= 1, "coil_channels", f"must be >= 1, got {self.coil_channels}")
        _need(self.n_filters >= 1, "n_filters", f"must be >= 1, got {self.n_filters}")
        _need(self.n_iterations >= 1, "n_iterations", f"must be >= 1, got {self.n_iterations}")
        _need(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "kernel_size",
              f"must be odd and >= 1 (same-size padding), got {self.kernel_size}")
        _need(self.n_crnn_layers >= 0, "n_crnn_layers", f"must be >= 0, got {self.n_crnn_layers}")


def check_dc_config(dc_noise_lambda: float | None, learn_lambda: bool) -> None:
    """Validate the data-consistency fields shared by the models that have DC."""
    _need(isinstance(learn_lambda, bool), "learn_lambda", f"must be true or false, got {learn_lambda!r}")
    is_number = isinstance(dc_noise_lambda, (int, float)) and not isinstance(dc_noise_lambda, bool)
    _need(dc_noise_lambda is None or is_number, "dc_noise_lambda", f"must be None or a number, got {dc_noise_lambda!r}")
    _need(dc_noise_lambda is None or dc_noise_lambda >= 0, "dc_noise_lambda",
          f"must be None (hard data consistency) or >= 0, got {dc_noise_lambda}")
    _need(not learn_lambda or (dc_noise_lambda is not None and dc_noise_lambda > 0), "learn_lambda",
          f"learning lambda needs a starting value dc_noise_lambda > 0 (e.g. 1.0), got {dc_noise_lambda}")


def _conv(ndim: int, c_in: int, c_out: int, kernel_size: int) -> nn.Module:
    # "same" padding for odd kernels keeps any (odd or even) image size and any M >= 1
    return _CONV[ndim](c_in, c_out, kernel_size, padding=kernel_size // 2)


# --- circular padding of the first spatial axis ---------------------------------------------
# ``conv3d`` convolves over (M, Y, X).  With ``circular=True`` the slice axis M is padded by
# wrapping around (slice M-1 beside slice 0) instead of with zeros: the input is wrapped by
# ``p = k // 2`` planes on each side (:func:`_wrap`) and the convolution pads only the other
# axes (:func:`_padding`).  Every slice then sees the others through all k kernel planes.


def _padding(kernel_size: int, nd: int, circular: bool) -> list[int]:
    """The convolution's own zero padding: none along the first spatial axis when it is wrapped."""
    p = kernel_size // 2
    return [0 if circular and i == 0 else p for i in range(nd)]


def _wrap_index(m: int, p: int, device) -> Tensor:
    return torch.arange(-p, m + p, device=device) % m  # any M >= 1, any p (p > M wraps several times)


def _wrap(x: Tensor, p: int) -> Tensor:
    """Circular padding by ``p`` of axis 2 (the first spatial axis of (N, C, *S)), channels-last kept."""
    if not p:
        return x
    y = x.index_select(2, _wrap_index(x.shape[2], p, x.device))
    return y.contiguous(memory_format=_MEMORY_FORMAT[x.dim() - 2])


def _unwrap_grad(g: Tensor, m: int, p: int) -> Tensor:
    """The adjoint of :func:`_wrap`: the gradient of the wrapped tensor summed back onto the ``m`` planes."""
    if not p:
        return g
    shape = list(g.shape)
    shape[2] = m
    out = torch.zeros(shape, dtype=g.dtype, device=g.device).contiguous(memory_format=_MEMORY_FORMAT[g.dim() - 2])
    return out.index_add_(2, _wrap_index(m, p, g.device), g)


# --- layout -----------------------------------------------------------------------------------
# Inside the block, sequences are "time-major": (T*N, C, *S), frame t in rows t*N .. t*N+N-1, in
# channels-last memory (NHWC / NDHWC).  oneDNN's direct convolutions run on channels-last data
# without reordering it on every call (about 2x faster forward and input-gradient than NCHW on
# the 2-core AVX-512 machine, benchmarks/bench_zoo.py), and time-major rows make every frame a
# contiguous block, so the recurrence slices and concatenates without copies of the hidden state.

_MEMORY_FORMAT = {2: torch.channels_last, 3: torch.channels_last_3d}


def to_time_major(x: Tensor, ndim: int) -> Tensor:
    """(N, T, C, *S) -> (T*N, C, *S) in channels-last memory; a free view for :func:`from_time_major`'s output."""
    n, t = x.shape[:2]
    return x.transpose(0, 1).reshape(t * n, *x.shape[2:]).contiguous(memory_format=_MEMORY_FORMAT[ndim])


def from_time_major(y: Tensor, n: int, t: int) -> Tensor:
    """(T*N, C, *S) -> (N, T, C, *S), a view."""
    return y.unflatten(0, (t, n)).transpose(0, 1)


def _conv_sum(terms: list[tuple[Tensor, nn.Module]], bias: Tensor, ndim: int, weight=None,
              circular: bool = False) -> Tensor:
    """``sum_i conv_i(x_i) + bias``, the convs' own biases left out (``bias`` holds their sum).

    The convolutions' outputs and the bias are added in place into the first output.  Stacking
    the inputs along channels into one convolution is the same math, but measured slower here:
    the stacking copies the inputs, and oneDNN's input gradient of a 2F-channel convolution costs
    more than two F-channel ones (1 thread: 1.14x the step time, 2 threads: equal).  The bias is
    added outside the convolutions because oneDNN's fused bias gradient costs more than the
    reduction autograd does for the add (a few ms per call at 64 filters).  ``weight(conv)`` gives
    the kernel to use (default ``conv.weight``; :class:`CRNNBlock` passes channels-last copies).
    ``circular``: wrap the first spatial axis instead of zero-padding it (:func:`_wrap`).
    """
    out = None
    for x, c in terms:
        k = c.weight.shape[-1]
        if circular:
            x = _wrap(x, k // 2)
        y = _CONV_FN[ndim](x, c.weight if weight is None else weight(c), None, padding=_padding(k, ndim, circular))
        out = y if out is None else out.add_(y)
    return out.add_(bias.to(out.dtype).view(1, -1, *([1] * ndim)))


class _BidirectionalSweep(torch.autograd.Function):
    r"""Both time sweeps of the BCRNN, with a hand-written backward (same math, fewer passes).

    ``forward(pre, weight, n, t, circular=False)``: ``pre`` (T*N, F, *S) time-major
    channels-last, every term of :math:`h_t = \mathrm{ReLU}(\mathrm{pre}_t + W_h * h_{t \mp 1})`
    but the hidden-to-hidden one (all biases included; :math:`h_{-1} = 0`); ``weight`` the
    hidden-to-hidden kernel, no bias; ``circular`` wraps the first spatial axis (:func:`_wrap`).
    Returns the sum of the forward and the backward sweep, (T*N, F, *S).

    The forward sweep at frame ``s`` and the backward sweep at frame ``T-1-s`` use the same
    kernel and do not depend on each other, so step ``s`` is one convolution over a batch of 2N
    (Qin et al.'s ``BCRNNlayer`` runs them one after the other).  Autograd through that loop
    would cost, per step, a weight-gradient convolution on 2N images, a gradient buffer the size
    of the whole sequence for every frame it slices (zero-filled and summed: O(T²) memory
    traffic), and a handful of small element-wise passes.  Here the backward walks the steps in
    reverse with only the input-gradient convolution and one fused ReLU mask per step, then
    computes the kernel's gradient as **one** convolution over all T-1 steps, which oneDNN runs
    about twice as fast per image as on 2N images.  Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, pre: Tensor, weight: Tensor, n: int, t: int, circular: bool = False) -> Tensor:
        nd = weight.dim() - 2
        fmt = _MEMORY_FORMAT[nd]
        w = weight.contiguous(memory_format=fmt)
        pad = _padding(weight.shape[-1], nd, circular)
        p = weight.shape[-1] // 2 if circular else 0
        # step s works on the rows of frame s (forward sweep) then those of frame T-1-s (backward
        # sweep): ``steps[s]`` holds both halves' ReLU outputs h.  The frames of ``pre`` are added
        # in place of a gather, half a step at a time, so no copy of the sequence is made
        frames = pre.unflatten(0, (t, n))
        hidden = _empty_rows(pre, 2 * t * n)
        steps = hidden.unflatten(0, (t, 2 * n))
        for s in range(t):
            fwd, bwd = frames[s], frames[t - 1 - s]
            if s:
                a = _CONV_FN[nd](_wrap(steps[s - 1], p), w, None, padding=pad)
                a[:n].add_(fwd)
                a[n:].add_(bwd)
                torch.clamp_min(a, 0, out=steps[s])
            else:
                torch.clamp_min(fwd, 0, out=steps[s, :n])
                torch.clamp_min(bwd, 0, out=steps[s, n:])
        ctx.save_for_backward(weight, hidden)
        ctx.n, ctx.t, ctx.p = n, t, p
        return _sum_sweeps(steps, n, t)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        weight, hidden = ctx.saved_tensors
        n, t, p = ctx.n, ctx.t, ctx.p
        nd = weight.dim() - 2
        fmt = _MEMORY_FORMAT[nd]
        w = weight.contiguous(memory_format=fmt)
        conv_args = ([1] * nd, _padding(weight.shape[-1], nd, p > 0), [1] * nd, False, [0] * nd, 1)
        steps = hidden.unflatten(0, (t, 2 * n))
        g_frames = grad_out.contiguous(memory_format=fmt).unflatten(0, (t, n))
        g_pre = torch.empty_like(hidden)  # becomes d loss / d ReLU input, the rows of ``steps``
        g_steps = g_pre.unflatten(0, (t, 2 * n))
        carry = None  # gradient reaching h(s) through step s+1's convolution
        for s in reversed(range(t)):
            g = g_steps[s]
            fwd, bwd = g_frames[s], g_frames[t - 1 - s]
            if carry is not None:  # the output's gradient and the carried one, summed into place
                torch.add(carry[:n], fwd, out=g[:n])
                torch.add(carry[n:], bwd, out=g[n:])
            else:
                g[:n].copy_(fwd)
                g[n:].copy_(bwd)
            torch.ops.aten.threshold_backward.grad_input(g, steps[s], 0, grad_input=g)
            if s:
                carry = torch.ops.aten.convolution_backward(
                    g, _wrap(steps[s - 1], p), w, None, *conv_args, [True, False, False])[0]
                carry = _unwrap_grad(carry, steps.shape[3] if p else 0, p)
        g_weight = None
        if ctx.needs_input_grad[1] and t > 1:
            g_weight = torch.ops.aten.convolution_backward(
                g_pre[2 * n:], _wrap(hidden[: -2 * n], p), w, None, *conv_args, [False, True, False])[1]
            g_weight = g_weight.contiguous()
        elif ctx.needs_input_grad[1]:
            g_weight = torch.zeros_like(weight)
        return _sum_sweeps(g_steps, n, t), g_weight, None, None, None


def _empty_rows(like: Tensor, rows: int) -> Tensor:
    """An uninitialised (rows, *like.shape[1:]) tensor in channels-last memory, like ``like``."""
    return torch.empty((rows, *like.shape[1:]), dtype=like.dtype, device=like.device,
                       memory_format=_MEMORY_FORMAT[like.dim() - 2])


def _sum_sweeps(steps: Tensor, n: int, t: int) -> Tensor:
    """(T, 2N, ...) rows of the two sweeps per step -> per frame f, forward(f) + backward(f):
    ``steps[f, :N] + steps[T-1-f, N:]``, (T*N, ...) channels-last: one pass, frame by frame."""
    out = _empty_rows(steps[0], t * n)
    frames = out.unflatten(0, (t, n))
    for f in range(t):
        torch.add(steps[f, :n], steps[t - 1 - f, n:], out=frames[f])
    return out


class BCRNNLayer(nn.Module):
    """Bidirectional convolutional RNN over time, with a recurrence over iterations.

    ``forward(x, h_iter)``: ``x`` real (N, T, C_in, *S), ``h_iter`` real (N, T, F, *S) (this
    layer's output at the previous iteration) or None at the first iteration; returns real
    (N, T, F, *S), the sum of the forward and backward passes.

    This is the reference ``CRNNcell`` / ``BCRNNlayer`` reordered, not a different model
    (``tests/zoo/test_crnn_reference.py`` checks it against a layer-for-layer port): the
    input-to-hidden and iteration-to-hidden terms do not depend on the time recurrence, so they
    run once over all frames (:func:`_conv_sum`), with all three biases; only
    the hidden-to-hidden convolution is sequential, and the two directions share each of its
    steps (:class:`_BidirectionalSweep`).  Zero hidden states contribute only their bias.
    """

    def __init__(self, c_in: int, n_filters: int, kernel_size: int, ndim: int = 2, circular: bool = False):
        super().__init__()
        self.ndim, self.circular = ndim, circular
        self.i2h = _conv(ndim, c_in, n_filters, kernel_size)  # input -> hidden
        self.h2h = _conv(ndim, n_filters, n_filters, kernel_size)  # hidden(t -/+ 1) -> hidden(t)
        self.ih2ih = _conv(ndim, n_filters, n_filters, kernel_size)  # hidden(iteration - 1) -> hidden

    def forward(self, x: Tensor, h_iter: Tensor | None) -> Tensor:
        n, t, nd = x.shape[0], x.shape[1], self.ndim
        h_iter = None if h_iter is None else to_time_major(h_iter, nd)
        return from_time_major(self.time_major(to_time_major(x, nd), h_iter, n, t), n, t)

    def time_major(self, x: Tensor, h_iter: Tensor | None, n: int, t: int, weight=None) -> Tensor:
        """:meth:`forward` on time-major channels-last tensors (:func:`to_time_major`);
        ``weight`` as in :func:`_conv_sum`."""
        terms = [(x, self.i2h)] + ([] if h_iter is None else [(h_iter, self.ih2ih)])
        pre = _conv_sum(terms, self.i2h.bias + self.h2h.bias + self.ih2ih.bias, self.ndim, weight, self.circular)
        return _BidirectionalSweep.apply(pre, self.h2h.weight if weight is None else weight(self.h2h), n, t,
                                         self.circular)


class CRNNiLayer(nn.Module):
    """Convolution with a recurrence over iterations (CRNN-i): ``ReLU(W_l * x + W_i * h_iter)``.

    ``x`` real (N, T, F, *S); ``h_iter`` real (N, T, F, *S) or None; returns (N, T, F, *S).
    Both convolutions run over all frames at once (:func:`_conv_sum`).
    """

    def __init__(self, n_filters: int, kernel_size: int, ndim: int = 2, circular: bool = False):
        super().__init__()
        self.ndim, self.circular = ndim, circular
        self.conv_x = _conv(ndim, n_filters, n_filters, kernel_size)
        self.conv_h = _conv(ndim, n_filters, n_filters, kernel_size)

    def forward(self, x: Tensor, h_iter: Tensor | None) -> Tensor:
        n, t, nd = x.shape[0], x.shape[1], self.ndim
        h_iter = None if h_iter is None else to_time_major(h_iter, nd)
        return from_time_major(self.time_major(to_time_major(x, nd), h_iter), n, t)

    def time_major(self, x: Tensor, h_iter: Tensor | None, weight=None) -> Tensor:
        """:meth:`forward` on time-major channels-last tensors (:func:`to_time_major`);
        ``weight`` as in :func:`_conv_sum`."""
        terms = [(x, self.conv_x)] + ([] if h_iter is None else [(h_iter, self.conv_h)])
        return _conv_sum(terms, self.conv_x.bias + self.conv_h.bias, self.ndim, weight, self.circular).relu_()


class CRNNBlock(nn.Module):
    """One CRNN-MRI iteration without data consistency: BCRNN, CRNN-i layers, conv, residual.

    Parameters
    ----------
    n_filters : hidden channels F (paper: 64).
    kernel_size : odd kernel size (paper: 3).
    n_crnn_layers : number of CRNN-i layers between the BCRNN and the output conv (paper: 3).
    ndim : 2 for (Y, X) convolutions, 3 for (M, Y, X) (or any 3 spatial axes).
    n_channels : real channels of the image (2: real and imaginary part).
    circular : pad the first spatial axis by wrapping it around instead of with zeros (every
        convolution of the block); ``conv3d`` uses it for the slice axis.

    ``forward(x, state)``: ``x`` real (N, T, n_channels, *S); ``state`` the list of hidden
    states returned by the previous iteration (None at the first).  Returns ``(x + residual,
    new_state)``; the same block (same weights) is called at every iteration.  The returned
    tensors are (N, T, ...) views of time-major, channels-last storage (see :func:`to_time_major`),
    so feeding them back costs no copy.
    """

    def __init__(self, n_filters: int, kernel_size: int, n_crnn_layers: int, ndim: int = 2, n_channels: int = 2,
                 circular: bool = False):
        super().__init__()
        self.ndim, self.circular = ndim, circular
        self.bcrnn = BCRNNLayer(n_channels, n_filters, kernel_size, ndim, circular)
        self.crnn_i = nn.ModuleList(CRNNiLayer(n_filters, kernel_size, ndim, circular) for _ in range(n_crnn_layers))
        self.out = _conv(ndim, n_filters, n_channels, kernel_size)
        self.compute_dtype: torch.dtype | None = None  # zoo.train.params.set_compute_dtype

    def forward(self, x: Tensor, state: list[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
        n, t, nd = x.shape[0], x.shape[1], self.ndim
        # everything inside runs on time-major tensors, so that the gradients met in the backward
        # pass (a hidden state feeds the next layer and the next iteration) share one layout and
        # autograd sums them in place; (N, T, ...) views only at the boundary.  A state this
        # block returned hands back its time-major tensors rather than the views (through the
        # views, the state's gradient would arrive as a view and be summed out of place).
        if state is None:
            prev = [None] * (1 + len(self.crnn_i))
        elif isinstance(state, _State):
            prev = state.time_major
        else:
            prev = [to_time_major(h, nd) for h in state]
        cache = state.weights if isinstance(state, _State) else {}

        def weight(conv: nn.Module) -> Tensor:
            # oneDNN wants channels-last kernels with channels-last data, and F.conv2d would copy
            # the kernel on every call (forward and backward); copied once per forward pass here
            # instead (the cache lives in the state), and again if the weight changed or was replaced
            w, source, version = cache.get(conv, (None, None, None))
            if w is None or source is not conv.weight or version != conv.weight._version:
                w = conv.weight.to(dtype, memory_format=_MEMORY_FORMAT[nd])
                cache[conv] = (w, conv.weight, conv.weight._version)
            return w

        dtype = self.compute_dtype or x.dtype
        xs = to_time_major(x, nd)
        h = self.bcrnn.time_major(xs.to(dtype), prev[0], n, t, weight)
        new_state = [h]
        for layer, h_iter in zip(self.crnn_i, prev[1:]):
            h = layer.time_major(h, h_iter, weight)
            new_state.append(h)
        k = self.out.weight.shape[-1]
        r = _CONV_FN[nd](_wrap(h, k // 2) if self.circular else h, weight(self.out), self.out.bias.to(dtype),
                         padding=_padding(k, nd, self.circular))
        return from_time_major(xs + r.to(x.dtype), n, t), _State(new_state, n, t, cache)


class _State(list):
    """The hidden states of :class:`CRNNBlock`: a list of (N, T, F, *S) views, which also keeps
    the time-major tensors they view (``time_major``) and the channels-last kernels (``weights``)
    for the block's next call in the same forward pass."""

    def __init__(self, time_major: list[Tensor], n: int, t: int, weights: dict):
        super().__init__(from_time_major(h, n, t) for h in time_major)
        self.time_major = time_major
        self.weights = weights


class SpatioTemporalConv(nn.Module):
    """Residual 2D+time (3D) convolution over (T, Y, X), applied before data consistency.

    SMS-CRNN adds "a 2D+time 3D convolution before DC" to CRNN-MRI.  ``n_layers = 1`` is a
    single ``Conv3d(C, C, k)``; ``n_layers >= 2`` is ``Conv3d(C, F) - ReLU - ... - Conv3d(F, C)``
    with ``n_layers - 2`` hidden ``Conv3d(F, F)``.  The output is added to its input (residual),
    like the CRNN's own output, so it refines the image rather than replacing it.

    ``forward(x)``: real (N, T, C, Y, X) -> (N, T, C, Y, X).
    """

    def __init__(self, n_channels: int, n_filters: int, kernel_size: int, n_layers: int):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"SpatioTemporalConv needs n_layers >= 1, got {n_layers}")
        widths = [n_channels] + [n_filters] * (n_layers - 1) + [n_channels]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(nn.ReLU())
            layers.append(nn.Conv3d(a, b, kernel_size, padding=kernel_size // 2))
        self.net = nn.Sequential(*layers)
        self.compute_dtype: torch.dtype | None = None  # zoo.train.params.set_compute_dtype

    def forward(self, x: Tensor) -> Tensor:
        # Conv3d wants (N, C, D=T, H=Y, W=X); oneDNN runs it about twice as fast on channels-last
        # (NDHWC) memory as on NCDHW, even with 2 channels
        h = x.transpose(1, 2).contiguous(memory_format=torch.channels_last_3d)
        if self.compute_dtype is None or self.compute_dtype == x.dtype:
            return x + self.net(h).transpose(1, 2)
        with torch.autocast(x.device.type, dtype=self.compute_dtype):
            y = self.net(h)
        return x + y.to(x.dtype).transpose(1, 2)


class DataConsistency(nn.Module):
    r"""Data consistency in 3D k-space, :func:`zoo.physics.data_consistency`, with optional learnt λ.

    ``noise_lambda=None`` replaces the sampled entries by the measurements (noiseless data);
    a float λ >= 0 weighs them against the network's estimate, ``(k + λ k3) / (1 + λ)``
    (Schlemper et al., IEEE TMI 2018; λ = 0 leaves the estimate unchanged).  With
    ``learn=True``, λ is a parameter, kept positive as ``exp(log_lambda)`` and initialised to
    ``noise_lambda``; one λ serves every iteration, like the other weights.

    ``forward(x, k3, mask3)``: complex (B, M, T, Y, X), (B, Kz, T, Ky, Kx), bool (B, Kz, T, Ky, 1)
    -> complex (B, M, T, Y, X).
    """

    def __init__(self, noise_lambda: float | None = None, learn: bool = False):
        super().__init__()
        check_dc_config(noise_lambda, learn)
        self.noise_lambda = noise_lambda
        self.log_lambda = nn.Parameter(torch.tensor(math.log(noise_lambda))) if learn else None

    def lam(self) -> Tensor | float | None:
        return self.noise_lambda if self.log_lambda is None else self.log_lambda.exp()

    def forward(self, x: Tensor, k3: Tensor, mask3: Tensor) -> Tensor:
        return data_consistency(x, k3, mask3, noise_lambda=self.lam())


def check_coil_channels(model: nn.Module, n_coils: int | None, where: str = "the data") -> None:
    """Refuse data whose coils per example differ from a model's ``coil_channels`` K (> 1).

    ``n_coils``: coils per item of the data (``SmsDataset.n_coils``; None for the ``virtual``
    mode, whose items have no coil axis).  Raises ValueError naming both numbers.
    """
    k = int(getattr(getattr(model, "config", None), "coil_channels", 1) or 1)
    if k > 1 and n_coils != k:
        got = "no coil axis (virtual coil mode)" if n_coils is None else f"{n_coils} coils per example"
        raise ValueError(f"the model takes its {k} coils together (coil_channels={k}), but {where} has {got}; use "
                         f"--coil-mode per-coil on a {k}-coil store, or --virtual-coils {k}")


def coils_to_channels(x: Tensor, k: int, channel_dim: int) -> Tensor:
    """Complex (B*K, *S) with an example's K coils consecutive -> real (B, *S') with 2K channels
    (the K real parts, then the K imaginary parts) inserted at ``channel_dim`` of (B, *S)."""
    xk = x.unflatten(0, (-1, k)).movedim(1, channel_dim)
    return torch.cat([xk.real, xk.imag], dim=channel_dim)


def channels_to_coils(h: Tensor, k: int, channel_dim: int) -> Tensor:
    """Inverse of :func:`coils_to_channels`: real (B, ..., 2K at ``channel_dim``, ...) -> complex (B*K, ...)."""
    re, im = h.narrow(channel_dim, 0, k), h.narrow(channel_dim, k, k)
    return torch.complex(re, im).movedim(channel_dim, 1).flatten(0, 1)
