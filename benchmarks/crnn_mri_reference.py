r"""CRNN-MRI as published, layer for layer, in plain PyTorch: the yardstick of ``bench_zoo.py``.

Reference: C. Qin, J. Schlemper, J. Caballero, A. N. Price, J. V. Hajnal, D. Rueckert,
"Convolutional Recurrent Neural Networks for Dynamic MR Image Reconstruction", IEEE TMI 38(1),
280-290, 2018; code github.com/js3611/Deep-MRI-Reconstruction, ``cascadenet_pytorch/
model_pytorch.py`` (``CRNNcell``, ``BCRNNlayer``, ``CRNN_MRI``) and ``kspace_pytorch.py``
(``DataConsistencyInKspace``).  This is a re-implementation of that structure, not a copy,
written the way the published code computes, with no optimisation:

* every hidden state starts as a tensor of zeros that really goes through its convolution
  (the first frame's ``h2h``, every ``*_h`` / ``ih2ih`` at the first iteration);
* ``CRNNcell`` evaluates ``i2h(x_t) + h2h(h) + ih2ih(h_iter_t)`` frame by frame, so the forward
  and the backward sweep each compute ``i2h`` and ``ih2ih`` of every frame;
* each sweep collects its frames in a list and concatenates them;
* data consistency converts the 2-channel image to complex, takes the orthonormal,
  **unshifted** 2D FFT (the published ``torch.fft(x, 2, normalized=True)``), blends
  ``(1 - m) k + m k0`` with a real mask, and converts back.

Layouts are the published ones: image, k-space and mask ``(n, 2, nx, ny, nt)`` real (channels
real, imaginary), the recurrence on ``(nt, n, C, nx, ny)``.

How equality with ``sms-crnn`` is established
---------------------------------------------
``sms-crnn`` with ``n_conv3d_layers = 0`` and ``M = 1`` is this network: its per-slice body is
the same cascade with the same weights (:func:`copy_sms_crnn_weights` maps them one to one), and
with one slice its 3D data consistency is 2D.  The two DCs differ only in the FFT convention
(centred ``fft2c`` vs unshifted ``fft2``); the map between them, ``T = F_u F_c^H``, is a phase
times the permutation ``ifftshift``, so ``F_u^H (P_u k_u + (1 - P_u) F_u x) = F_c^H (P k + (1 - P)
F_c x)`` when ``k_u = T k`` and ``P_u = ifftshift(P)``.  :func:`inputs_from_zoo` converts
``sms-crnn``'s inputs that way, and ``tests/zoo/test_crnn_reference.py`` checks the two outputs
agree to float32 precision on one input.  For ``M > 1`` the yardstick is the published
comparison: the ``B * M`` slices as a batch of single-slice 2D+t problems with 2D DC (each
slice's own k-space), which has the same convolutions as ``sms-crnn`` without its 3D conv.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRNNcell(nn.Module):
    """``ReLU(i2h(x) + h2h(h) + ih2ih(h_iter))`` on real (n, C, nx, ny) tensors."""

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int):
        super().__init__()
        pad = kernel_size // 2
        self.i2h = nn.Conv2d(input_size, hidden_size, kernel_size, padding=pad)
        self.h2h = nn.Conv2d(hidden_size, hidden_size, kernel_size, padding=pad)
        self.ih2ih = nn.Conv2d(hidden_size, hidden_size, kernel_size, padding=pad)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, hidden_iteration: Tensor, hidden: Tensor) -> Tensor:
        return self.relu(self.i2h(x) + self.h2h(hidden) + self.ih2ih(hidden_iteration))


class BCRNNlayer(nn.Module):
    """Bidirectional CRNN over time, one cell for both directions.

    ``forward(x, h_iter)``: ``x`` (nt, n, C, nx, ny), ``h_iter`` (nt, n, F, nx, ny) -> the sum of
    the two sweeps, (nt * n, F, nx, ny) (frames concatenated along dim 0, as published).
    """

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.CRNN_model = CRNNcell(input_size, hidden_size, kernel_size)

    def forward(self, x: Tensor, h_iter: Tensor) -> Tensor:
        nt, nb, _, nx, ny = x.shape
        hid_init = torch.zeros(nb, self.hidden_size, nx, ny, device=x.device, dtype=x.dtype)
        output_f = []
        hidden = hid_init
        for i in range(nt):
            hidden = self.CRNN_model(x[i], h_iter[i], hidden)
            output_f.append(hidden)
        output_b = []
        hidden = hid_init
        for i in range(nt):
            hidden = self.CRNN_model(x[nt - i - 1], h_iter[nt - i - 1], hidden)
            output_b.append(hidden)
        return torch.cat(output_f) + torch.cat(output_b[::-1])


def _dc_2d(x: Tensor, k0: Tensor, mask: Tensor, noise_lvl: float | None) -> Tensor:
    """Published ``DataConsistencyInKspace.perform`` on (n, 2, nx, ny, nt) real tensors."""
    # to (n, nt, nx, ny, 2): the published layout for its FFT over (nx, ny)
    x, k0, mask = (a.permute(0, 4, 2, 3, 1).contiguous() for a in (x, k0, mask))
    k = torch.view_as_real(torch.fft.fft2(torch.view_as_complex(x), norm="ortho"))
    if noise_lvl:
        out = (1 - mask) * k + mask * (k + noise_lvl * k0) / (1 + noise_lvl)
    else:
        out = (1 - mask) * k + mask * k0
    x_res = torch.view_as_real(torch.fft.ifft2(torch.view_as_complex(out.contiguous()), norm="ortho"))
    return x_res.permute(0, 4, 2, 3, 1)


class CRNN_MRI(nn.Module):
    """The published cascade: ``nc`` iterations of BCRNN, three CRNN-i layers, a conv, DC.

    ``forward(x, k, m)``: real (n, 2, nx, ny, nt) image, measured unshifted k-space and mask
    (1.0 where sampled) -> real (n, 2, nx, ny, nt).  The published ``nd = 5``.
    """

    def __init__(self, n_ch: int = 2, nf: int = 64, ks: int = 3, nc: int = 5, noise_lvl: float | None = None):
        super().__init__()
        self.nc, self.nf, self.noise_lvl = nc, nf, noise_lvl
        pad = ks // 2
        self.bcrnn = BCRNNlayer(n_ch, nf, ks)
        self.conv1_x = nn.Conv2d(nf, nf, ks, padding=pad)
        self.conv1_h = nn.Conv2d(nf, nf, ks, padding=pad)
        self.conv2_x = nn.Conv2d(nf, nf, ks, padding=pad)
        self.conv2_h = nn.Conv2d(nf, nf, ks, padding=pad)
        self.conv3_x = nn.Conv2d(nf, nf, ks, padding=pad)
        self.conv3_h = nn.Conv2d(nf, nf, ks, padding=pad)
        self.conv4_x = nn.Conv2d(nf, n_ch, ks, padding=pad)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, k: Tensor, m: Tensor) -> Tensor:
        n_batch, n_ch, width, height, n_seq = x.shape
        hid_init = torch.zeros(n_seq * n_batch, self.nf, width, height, device=x.device, dtype=x.dtype)
        h0, h1, h2, h3 = hid_init, hid_init, hid_init, hid_init  # net['t{i-1}_x0'..'x3']
        for _ in range(self.nc):
            x = x.permute(4, 0, 1, 2, 3).contiguous()  # (nt, n, 2, nx, ny)
            h0 = self.bcrnn(x, h0.view(n_seq, n_batch, self.nf, width, height))
            h0 = h0.view(-1, self.nf, width, height)
            h1 = self.relu(self.conv1_h(h1) + self.conv1_x(h0))
            h2 = self.relu(self.conv2_h(h2) + self.conv2_x(h1))
            h3 = self.relu(self.conv3_h(h3) + self.conv3_x(h2))
            out = x.view(-1, n_ch, width, height) + self.conv4_x(h3)
            out = out.view(-1, n_batch, n_ch, width, height).permute(1, 2, 3, 4, 0)
            x = _dc_2d(out, k, m, self.noise_lvl)
        return x


# --- the bridge to sms-crnn -------------------------------------------------------------------


def copy_sms_crnn_weights(ref: CRNN_MRI, model: nn.Module) -> CRNN_MRI:
    """Copy the weights of an ``sms-crnn`` without its 3D conv into ``ref`` (returned).

    Needs ``n_conv3d_layers = 0``, ``n_crnn_layers = 3`` (the published ``nd = 5``), a fixed
    λ and the same filters, kernel and iterations; raises ValueError otherwise.
    """
    c = model.config
    if c.n_conv3d_layers != 0 or c.n_crnn_layers != 3 or c.learn_lambda:
        raise ValueError(f"CRNN-MRI is sms-crnn with n_conv3d_layers=0, n_crnn_layers=3, fixed lambda; got {c}")
    if (ref.nf, ref.nc, ref.bcrnn.CRNN_model.i2h.kernel_size[0]) != (c.n_filters, c.n_iterations, c.kernel_size):
        raise ValueError("CRNN_MRI and sms-crnn differ in filters, iterations or kernel size")
    if ref.noise_lvl != c.dc_noise_lambda and (ref.noise_lvl or c.dc_noise_lambda):
        raise ValueError(f"noise_lvl {ref.noise_lvl} != dc_noise_lambda {c.dc_noise_lambda}")
    crnn = model.crnn
    pairs = [
        (ref.bcrnn.CRNN_model.i2h, crnn.bcrnn.i2h),
        (ref.bcrnn.CRNN_model.h2h, crnn.bcrnn.h2h),
        (ref.bcrnn.CRNN_model.ih2ih, crnn.bcrnn.ih2ih),
        (ref.conv4_x, crnn.out),
    ]
    for j, layer in enumerate(crnn.crnn_i, start=1):
        pairs += [(getattr(ref, f"conv{j}_x"), layer.conv_x), (getattr(ref, f"conv{j}_h"), layer.conv_h)]
    with torch.no_grad():
        for dst, src in pairs:
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    return ref


def inputs_from_zoo(x0: Tensor, k3: Tensor, mask3: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``sms-crnn``'s single-slice inputs in CRNN-MRI's layout and FFT convention.

    ``x0`` complex (B, 1, T, Y, X), ``k3`` complex (B, 1, T, Ky, Kx) (centred, zero off the mask),
    ``mask3`` bool (B, 1, T, Ky, 1) -> ``(x, k0, m)``, real (B, 2, Y, X, T) each: ``k0`` the
    unshifted k-space ``fft2(ifft2c(k3))`` (the phase-and-permutation ``T`` of the module
    docstring), ``m`` the mask moved by ``ifftshift`` over (Ky, Kx).
    """
    from zoo.physics import ifft2c

    if x0.shape[1] != 1:
        raise ValueError(f"inputs_from_zoo takes single-slice problems (M = 1), got shape {tuple(x0.shape)}")

    def to_ref(z: Tensor) -> Tensor:  # complex (B, T, Y, X) -> real (B, 2, Y, X, T)
        return torch.view_as_real(z).permute(0, 4, 2, 3, 1).contiguous()

    k0 = torch.fft.fft2(ifft2c(k3[:, 0]), norm="ortho")
    m = torch.fft.ifftshift(mask3[:, 0].expand(k3[:, 0].shape), dim=(-2, -1)).to(torch.float32)
    return to_ref(x0[:, 0]), to_ref(k0), to_ref(torch.complex(m, m))


def output_to_zoo(x: Tensor) -> Tensor:
    """CRNN-MRI's output, real (B, 2, Y, X, T), as complex (B, 1, T, Y, X)."""
    return torch.view_as_complex(x.permute(0, 4, 2, 3, 1).contiguous())[:, None]
