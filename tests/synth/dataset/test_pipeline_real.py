"""dicom2kspace on the real scanner data in ../shared/data (skipped when it is absent)."""

import numpy as np
import pytest

from synth.dataset.config import SimConfig
from synth.dataset.pipeline import dicom2kspace
from synth.dataset.store import Store
from synth.errors import ConfigError, NoInputError
from tests.conftest import shared_data
from tests.synth.dataset.test_pipeline import reproduce

pytestmark = pytest.mark.shared_data
SALT = b"real-data-tests"


@pytest.mark.parametrize(
    "patient,shape", [("SCD0000101", (224, 224)), ("SCD0000201", (224, 224)), ("SCD0000301", (256, 213))]
)
def test_sunnybrook_each_patient(tmp_path, patient, shape):
    src = shared_data("sunnybrook-cine", patient)
    out = tmp_path / "s.zarr"
    s = dicom2kspace([src], out, SimConfig(sms=2, coils=4, combos=1), salt=SALT)
    assert s.written == 1 and not s.failed
    st = Store.open(out)
    assert (st.dims["T"], st.dims["Ky"], st.dims["Kx"]) == (20, *shape)
    ex = st.example(0)
    ref = reproduce(ex)
    assert np.linalg.norm(ex["kspace"] - ref) / np.linalg.norm(ref) < 2e-6
    # the acquired-matrix crop leaves no empty outer k-space: the edge rows carry signal
    energy = (np.abs(ex["kspace"]) ** 2).mean(axis=(0, 1, 3))
    assert energy[:3].mean() > 1e-4 * energy.max()


def test_perfusion_single_slice(tmp_path):
    src = shared_data("fpp-ge", "series")
    with pytest.raises(NoInputError, match="across-series"):
        dicom2kspace([src], tmp_path / "x.zarr", SimConfig(sms=2), salt=SALT)
    out = tmp_path / "p.zarr"
    s = dicom2kspace([src], out, SimConfig(sms=1, coils=4), salt=SALT)
    assert s.written == 1
    st = Store.open(out)
    assert (st.dims["T"], st.dims["Ky"], st.dims["Kx"]) == (79, 128, 128)


def test_perfusion_across_series_with_sunnybrook(tmp_path):
    """A single-slice perfusion series pairs with slices of another series (augmentation)."""
    out = tmp_path / "a.zarr"
    srcs = [shared_data("fpp-ge", "series"), shared_data("sunnybrook-cine", "SCD0000101")]
    s = dicom2kspace(srcs, out, SimConfig(sms=2, coils=2, combine="across-series", combos=2, matrix=(96, 96),
                                           frames=20, frames_mode="resample"), salt=SALT)
    assert s.written == 2
    for i in range(2):
        series = {src["series"] for src in Store.open(out).provenance(i)["sources"]}
        assert len(series) == 2


def test_edge_cases_folder(tmp_path):
    src = shared_data("dicom-edge")
    with pytest.raises(ConfigError, match="--matrix"):
        dicom2kspace([src], tmp_path / "x.zarr", SimConfig(sms=2), salt=SALT)
    out = tmp_path / "e.zarr"
    s = dicom2kspace([src], out, SimConfig(sms=2, coils=2, matrix=(64, 64), frames=4, frames_mode="resample",
                                           combos=2), salt=SALT)
    assert s.written == 4 and not s.failed
    assert s.skipped_inputs["inconsistent-series"] == 1  # nine copies of one image, no time order
