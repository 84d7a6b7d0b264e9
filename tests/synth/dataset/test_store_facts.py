"""Format 1.4: per-example fact arrays, named dimensions and consolidated metadata (xarray opens it)."""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest
import zarr

from synth.dataset import store as zstore
from synth.dataset.store.create import _quiet_zarr
from synth.dataset.config import SimConfig
from synth.dataset.pipeline import dicom2kspace
from synth.errors import StoreError

SALT = b"facts-tests"
DIMS = {"N": 4, "C": 2, "M": 2, "T": 3, "Ky": 6, "Kx": 5}
KEY = re.compile(r"^(pt|st|se)-[0-9a-f]{16}(\+(pt|st|se)-[0-9a-f]{16})*$")


def _source(series="se-" + "a" * 16, patient="pt-" + "b" * 16, slice_=0, pos=10.0, **extra):
    src = {"series": series, "study": "st-" + "c" * 16, "patient": patient, "slice": slice_, "position_mm": pos,
           "frames": 3, "stored_shape": [12, 10], "acquisition_matrix": [6, 5], "position_source": "ImagePositionPatient",
           "pixel_spacing_mm": [1.0, 2.0], "times_ms": [0.0, 40.0, 80.0], "slice_thickness_mm": 6.0}
    src.update(extra)
    return src


def _examples():
    """Four examples: plain, across-series (two patients), unknown geometry (raw), and split test."""
    return [
        {"index": 0, "draw": 0, "split": "train", "sources": [_source(slice_=0, pos=10.0), _source(slice_=2, pos=18.0)]},
        {"index": 1, "draw": 1, "split": "test",
         "sources": [_source(slice_=1, pos=0.0), _source(series="se-" + "d" * 16, patient="pt-" + "e" * 16, slice_=0,
                                                         pos=50.0, times_ms=[10.0, 50.0, 90.0])]},
        {"index": 2, "draw": 0, "split": "val",
         "sources": [_source(slice_=0, pos=0.0, position_source="slice index (mm unknown)", pixel_spacing_mm=None,
                             times_ms=None, stored_shape=[6, 5], acquisition_matrix=None, slice_thickness_mm=None),
                     _source(slice_=1, pos=1.0, position_source="slice index (mm unknown)", pixel_spacing_mm=None,
                             times_ms=None, stored_shape=[6, 5], acquisition_matrix=None)]},
        {"index": 3, "draw": 0, "split": "test", "sources": [_source(slice_=3), _source(slice_=4)]},
    ]


def _example_arrays(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    c, m, t, ny, nx = (DIMS[k] for k in ("C", "M", "T", "Ky", "Kx"))

    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    return {"kspace": cplx(c, t, ny, nx), "mask": rng.random((t, ny)) > 0.5,
            "kz": (np.arange(ny) % m).astype(np.int8)[None].repeat(t, 0),
            "target": rng.random((m, t, ny, nx), dtype=np.float32), "csm": cplx(c, m, ny, nx),
            "phase": rng.standard_normal((c, m, t, ny, nx)).astype(np.float32), "scale": np.float32(2.0),
            "offsets": rng.standard_normal(m), "noise_sigma": np.float32(0)}


def _written_store(path):
    root = zstore.create(path, DIMS, {"examples": _examples(), "params": {"resolution": "acquired", "sms": 2}})
    w = zstore.Writer(root)
    arrays = [_example_arrays(i) for i in range(DIMS["N"])]
    for i, ex in enumerate(arrays):
        w.example(i, ex)
    return arrays


def test_example_facts_from_the_examples():
    f = zstore.example_facts(_examples(), DIMS, {"resolution": "acquired"})
    assert f["split"].tolist() == ["train", "test", "val", "test"] and f["split"].dtype.kind == "U"
    assert f["patient"][0] == "pt-" + "b" * 16
    assert f["patient"][1] == "pt-" + "b" * 16 + "+pt-" + "e" * 16  # across-series: both, in slice order
    assert f["series"][1] == "se-" + "a" * 16 + "+se-" + "d" * 16 and f["study"][1] == "st-" + "c" * 16
    assert f["draw"].tolist() == [0, 1, 0, 0] and f["source_slice"].tolist() == [[0, 2], [1, 0], [0, 1], [3, 4]]
    np.testing.assert_array_equal(f["slice_position_mm"][:2], [[10.0, 18.0], [0.0, 50.0]])
    assert np.isnan(f["slice_position_mm"][2]).all()  # raw input without geometry: slice indices, not mm
    np.testing.assert_array_equal(f["frame_time_ms"][0], [0.0, 40.0, 80.0])
    np.testing.assert_array_equal(f["frame_time_ms"][1], [5.0, 45.0, 85.0])  # mean over the SMS slices
    assert np.isnan(f["frame_time_ms"][2]).all()
    # 12x10 stored at (1, 2) mm, acquired 6x5: the kept acquired matrix has twice the pixel size
    np.testing.assert_allclose(f["pixel_spacing_mm"][0], [2.0, 4.0])
    np.testing.assert_allclose(f["fov_mm"][0], [12.0, 20.0])  # (Ky, Kx) x spacing = the stored FOV
    assert np.isnan(f["pixel_spacing_mm"][2]).all() and np.isnan(f["fov_mm"][2]).all()
    assert f["slice_thickness_mm"][0] == 6.0 and np.isnan(f["slice_thickness_mm"][2])
    # --resolution dicom keeps the stored pixel size (and --matrix the pixel size, not the FOV)
    g = zstore.example_facts(_examples(), DIMS, {"resolution": "dicom", "matrix": [6, 5]})
    np.testing.assert_allclose(g["pixel_spacing_mm"][0], [1.0, 2.0])
    np.testing.assert_allclose(g["fov_mm"][0], [6.0, 10.0])
    # no examples (or fewer than N): everything unknown
    e = zstore.example_facts([], DIMS, {})
    assert e["split"].tolist() == [""] * 4 and (e["draw"] == -1).all() and np.isnan(e["fov_mm"]).all()


@pytest.mark.parametrize("frames_mode, want", [("crop", [0.0, 40.0]), ("resample", [0.0, 80.0])])
def test_frame_times_follow_frames(frames_mode, want):
    dims = dict(DIMS, T=2)
    f = zstore.example_facts(_examples()[:1], dims, {"frames": 2, "frames_mode": frames_mode})
    np.testing.assert_allclose(f["frame_time_ms"][0], want)
    # 5 frames from 3 by linear interpolation over the same span
    f = zstore.example_facts(_examples()[:1], dict(DIMS, T=5), {"frames": 5, "frames_mode": "resample"})
    np.testing.assert_allclose(f["frame_time_ms"][0], [0.0, 20.0, 40.0, 60.0, 80.0])


def test_xarray_selects_the_test_split(tmp_path):
    xr = pytest.importorskip("xarray")
    path = tmp_path / "s.zarr"
    arrays = _written_store(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated: no "falling back to non-consolidated" warning
        ds = xr.open_zarr(path, chunks=None)  # lazily indexed, without dask
        sub = ds.where(ds.split == "test", drop=True)
    assert sub.sizes["example"] == 2 and sub.split.values.tolist() == ["test", "test"]
    np.testing.assert_array_equal(sub.kspace.values, np.stack([arrays[1]["kspace"], arrays[3]["kspace"]]))
    np.testing.assert_array_equal(sub.patient.values[0], "pt-" + "b" * 16 + "+pt-" + "e" * 16)
    np.testing.assert_allclose(sub.frame_time_ms.values, [[5.0, 45.0, 85.0], [0.0, 40.0, 80.0]])
    # with dask (open_zarr's default) the variables are lazy: the condition is computed first
    ds = xr.open_zarr(path)
    lazy = ds.where((ds.split == "test").compute(), drop=True)
    np.testing.assert_array_equal(lazy.kspace.values, sub.kspace.values)
    picked = ds.isel(example=(ds.split == "test").values)  # the dtypes stay as stored
    assert picked.kspace.dtype == np.complex64 and picked.mask.dtype == bool
    np.testing.assert_array_equal(picked.target.values, np.stack([arrays[1]["target"], arrays[3]["target"]]))
    # named dimensions, consistent across arrays
    assert ds.kspace.dims == ("example", "coil", "time", "ky", "kx")
    assert ds.slice_position_mm.dims == ("example", "slice") and ds.pixel_spacing_mm.dims == ("example", "yx")
    assert ds.sizes["time"] == DIMS["T"] and ds.sizes["slice"] == DIMS["M"]


def _consolidated(path) -> dict:
    return json.loads((path / "zarr.json").read_text()).get("consolidated_metadata")


def _per_array(path) -> dict:
    g = zarr.open_group(str(path), mode="r", use_consolidated=False)
    with _quiet_zarr():
        return {k: json.loads(json.dumps(v.metadata.to_dict(), default=str)) for k, v in g.members()}


def _held(path) -> dict:
    with _quiet_zarr():
        return {k: json.loads(json.dumps(v, default=str)) for k, v in _consolidated(path)["metadata"].items()}


def test_dicom2kspace_store_facts_consolidated_and_resumed(phantom_cine, tmp_path):
    xr = pytest.importorskip("xarray")
    out = tmp_path / "s.zarr"
    cfg = SimConfig(sms=2, coils=2, accel=2, acs=4, seed=3)
    dicom2kspace([phantom_cine], out, cfg, salt=SALT, threads=1)
    st = zstore.Store.open(out)
    assert st.version == (1, 4) and len(st) == 6
    f = st.facts()
    for i in range(len(st)):
        src = st.provenance(i)["sources"]
        assert f["patient"][i] == src[0]["patient"] and f["series"][i] == src[0]["series"]
        np.testing.assert_allclose(f["slice_position_mm"][i], [s["position_mm"] for s in src])
        assert f["source_slice"][i].tolist() == [s["slice"] for s in src]
        np.testing.assert_allclose(f["frame_time_ms"][i], src[0]["times_ms"])  # one trigger list for every slice
        stored, acq, spacing = src[0]["stored_shape"], src[0]["acquisition_matrix"], src[0]["pixel_spacing_mm"]
        np.testing.assert_allclose(f["pixel_spacing_mm"][i], [spacing[k] * stored[k] / acq[k] for k in range(2)])
        np.testing.assert_allclose(f["fov_mm"][i], [spacing[k] * stored[k] for k in range(2)], rtol=1e-5)
    assert f["split"].tolist() == [""] * 6
    for key in ("patient", "study", "series"):  # pseudonyms only
        assert all(KEY.match(v) for v in f[key]), f[key]
    assert not np.isnan(f["frame_time_ms"]).any() and not np.isnan(f["fov_mm"]).any()
    # consolidated, and equal to the per-array metadata
    assert _held(out) == _per_array(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(out)
    assert ds.sizes["example"] == 6 and ds.frame_time_ms.dims == ("example", "time")
    # an interrupted run (example 4 incomplete), of a store whose consolidated metadata is gone:
    # resuming computes the example and consolidates again
    meta = json.loads((out / "zarr.json").read_text())
    meta.pop("consolidated_metadata")
    (out / "zarr.json").write_text(json.dumps(meta))
    zstore.write_row(zarr.open_group(str(out), mode="r+")["complete"], 4, np.False_)
    s = dicom2kspace([phantom_cine], out, cfg, salt=SALT, threads=1)
    assert s.already == 5 and s.written == 1
    assert _held(out) == _per_array(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool(xr.open_zarr(out).complete.all())


def test_targets_store_has_facts(phantom_cine, tmp_path):
    xr = pytest.importorskip("xarray")
    out = tmp_path / "t.zarr"
    dicom2kspace([phantom_cine], out, SimConfig(sms=2, coils=2, targets_only=True, seed=3), salt=SALT, threads=1)
    st = zstore.Store.open(out)
    assert st.kind == "targets" and all(name in st.root for name in zstore.FACT_ARRAYS)
    assert st.facts()["source_slice"].tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(out)
    assert ds.slices.dims == ("slice_id", "time", "y", "x") and ds.example_slices.dims == ("example", "slice")


def test_stores_before_1_4_read_and_derive_their_facts(tmp_path):
    path = tmp_path / "old.zarr"
    _written_store(path)
    for name in zstore.FACT_ARRAYS:
        shutil.rmtree(path / name)
    meta = json.loads((path / "zarr.json").read_text())
    meta.pop("consolidated_metadata")
    meta["attributes"]["format_version"] = "1.3"
    for ex in meta["attributes"]["examples"]:
        for s in ex["sources"]:
            for k in ("position_source", "pixel_spacing_mm", "times_ms", "slice_thickness_mm"):
                s.pop(k)
    (path / "zarr.json").write_text(json.dumps(meta))
    st = zstore.Store.open(path)
    f = st.facts()
    assert f["split"].tolist() == ["train", "test", "val", "test"]
    np.testing.assert_array_equal(f["slice_position_mm"][0], [10.0, 18.0])
    assert np.isnan(f["pixel_spacing_mm"]).all() and np.isnan(f["frame_time_ms"]).all()
    np.testing.assert_array_equal(st.example(1)["kspace"], _example_arrays(1)["kspace"])
    # the same store claiming 1.4 lacks arrays its version has
    meta["attributes"]["format_version"] = "1.4"
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="'split' missing"):
        zstore.Store.open(path)


def test_reader_ignores_stale_consolidated_metadata(tmp_path):
    """zarr-python keeps consolidated metadata as written; smssynth's reader reads the arrays' own."""
    path = tmp_path / "s.zarr"
    _written_store(path)
    shutil.rmtree(path / "fov_mm")  # the consolidated copy still lists it
    assert "fov_mm" in zarr.open_group(str(path), mode="r")
    with pytest.raises(StoreError, match="'fov_mm' missing"):
        zstore.Store.open(path)
    # and a fact of the wrong shape is refused
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    root.create_array("fov_mm", shape=(DIMS["N"], 3), dtype="float64", dimension_names=["example", "yx"])
    with pytest.raises(StoreError, match="'fov_mm' is float64"):
        zstore.Store.open(path)
