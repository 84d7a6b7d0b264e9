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
