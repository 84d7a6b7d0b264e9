"""The store writer: chunk files written without zarr are byte-for-byte what zarr writes."""

import numpy as np
import pytest
import zarr

from synth.dataset import store as zstore
from synth.dataset.store.writer import _write_all
from synth.errors import StoreError

DIMS = {"N": 3, "C": 2, "M": 2, "T": 3, "Ky": 6, "Kx": 5}


def _example(seed: int, zero_phase: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    c, m, t, ny, nx = (DIMS[k] for k in ("C", "M", "T", "Ky", "Kx"))

    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    return {
        "kspace": cplx(c, t, ny, nx),
        "mask": rng.random((t, ny)) > 0.5,
        "kz": rng.integers(0, m, (t, ny)).astype(np.int8),
        "target": rng.random((m, t, ny, nx), dtype=np.float32),
        "csm": cplx(c, m, ny, nx),
        "phase": np.zeros((c, m, t, ny, nx), np.float32) if zero_phase else rng.standard_normal((c, m, t, ny, nx)).astype(np.float32),
        "scale": np.float32(3.5),
        "offsets": rng.standard_normal(m),
        "noise_sigma": np.float32(0),
    }


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_writer_bytes_equal_plain_zarr(tmp_path):
    examples = [_example(i, zero_phase=i == 2) for i in range(3)]
    plain = zstore.create(tmp_path / "plain.zarr", DIMS, {})
    for i, ex in enumerate(examples):
        for name, value in ex.items():
            plain[name][i] = value
        plain["complete"][i] = True
    ours = zstore.create(tmp_path / "ours.zarr", DIMS, {})
    assert zstore.direct_chunk_folder(ours["kspace"]) is not None
    assert zstore.direct_chunk_folder(ours["mask"]) is None  # compressed: zarr writes it
    w = zstore.Writer(ours)
    w.example(0, examples[0])
    for i in (2, 1):  # coil by coil, out of order, then the rest
        for ci in reversed(range(DIMS["C"])):
            w.coil(i, ci, examples[i]["kspace"][ci], examples[i]["phase"][ci])
        w.example(i, {k: v for k, v in examples[i].items() if k not in ("kspace", "phase")}, coils_written=True)
    a, b = _files(tmp_path / "plain.zarr"), _files(tmp_path / "ours.zarr")
    assert sorted(a) == sorted(b)  # incl. the all-zero phase chunks of example 2 left unwritten
    assert not any("phase/c/2/" in str(p) for p in b)
    for rel in a:
        assert a[rel] == b[rel], rel
    assert not list((tmp_path / "ours.zarr").rglob("*.partial"))
    st = zstore.Store.open(tmp_path / "ours.zarr")
    for i, ex in enumerate(examples):
        got = st.example(i)
        for name in ex:
            np.testing.assert_array_equal(got[name], ex[name])


def test_writer_rejects_wrong_shapes_and_missing_arrays(tmp_path):
    w = zstore.Writer(zstore.create(tmp_path / "s.zarr", DIMS, {}))
    ex = _example(0)
    with pytest.raises(StoreError, match="shape"):
        w.coil(0, 0, ex["kspace"][0, :2], ex["phase"][0])
    with pytest.raises(StoreError, match="'csm' missing"):
        w.example(0, {k: v for k, v in ex.items() if k != "csm"})
    assert not zstore.Store.open(tmp_path / "s.zarr").complete().any()


def test_overwriting_a_chunk_replaces_it(tmp_path):
    root = zstore.create(tmp_path / "s.zarr", DIMS, {})
    w = zstore.Writer(root)
    first, second = _example(0), _example(1)
    first["noise_sigma"] = np.float32(0.7)
    w.example(0, first)
    sigma_chunk = tmp_path / "s.zarr" / "noise_sigma" / "c" / "0"
    assert sigma_chunk.read_bytes() == np.float32(0.7).tobytes()
    w.example(0, second)  # noise_sigma back to the fill value: the chunk goes, as zarr does it
    assert not sigma_chunk.exists()
    got = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_array_equal(got["kspace"][0], second["kspace"])
    assert got["noise_sigma"][0] == 0 and got["complete"][0]


def test_writer_through_zarr_where_chunks_cannot_be_written_directly(tmp_path):
    """An fsspec URL (here fsspec's in-memory filesystem) goes through zarr, coil blocks included."""
    pytest.importorskip("fsspec")
    url = f"memory://{tmp_path.name}/s.zarr"
    root = zstore.create(url, DIMS, {})
    assert zstore.direct_chunk_folder(root["kspace"]) is None
    w = zstore.Writer(root)
    ex = _example(4)
    for ci in range(DIMS["C"]):
        with w.coil_chunks(1, ci) as (k, p):
            for t0 in range(DIMS["T"]):
                k[t0 : t0 + 1] = ex["kspace"][ci, t0 : t0 + 1]
                for i in range(DIMS["M"]):
                    p[i, t0 : t0 + 1] = ex["phase"][ci, i, t0 : t0 + 1]
    w.example(1, {k: v for k, v in ex.items() if k not in ("kspace", "phase")}, coils_written=True)
    got = zstore.Store.open(url).example(1)
    for name in ex:
        np.testing.assert_array_equal(got[name], ex[name])


def test_chunk_file_blocks_any_order_and_abort(tmp_path):
    ex = _example(5)
    root = zstore.create(tmp_path / "s.zarr", DIMS, {})
    w = zstore.Writer(root)
    with w.coil_chunks(0, 1) as (k, p):
        assert isinstance(k, zstore.ChunkFile) and isinstance(p, zstore.ChunkFile)
        for t0 in reversed(range(DIMS["T"])):  # blocks land at their offsets in any order
            k[t0 : t0 + 1] = ex["kspace"][1, t0 : t0 + 1]
        for i in reversed(range(DIMS["M"])):
            p[i, 0 : DIMS["T"]] = ex["phase"][1, i]
        with pytest.raises(ValueError, match="shape"):
            k[0:2] = ex["kspace"][1, :1]
    arr = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_array_equal(arr["kspace"][0, 1], ex["kspace"][1])
    np.testing.assert_array_equal(arr["phase"][0, 1], ex["phase"][1])
    # an exception inside the block stores nothing and leaves no temporary file
    with pytest.raises(RuntimeError):
        with w.coil_chunks(2, 0) as (k, p):
            k[0:1] = ex["kspace"][0, :1]
            raise RuntimeError("simulation failed")
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))
    assert not [f for f in (tmp_path / "s.zarr" / "kspace" / "c" / "2").rglob("*") if f.is_file()]
    # a chunk with bytes missing is refused at commit
    with pytest.raises(StoreError, match="never written"):
        with w.coil_chunks(2, 0) as (k, p):
            k[0:1] = ex["kspace"][0, :1]
            k[0:1] = ex["kspace"][0, :1]  # the same block twice does not fill the hole
            k[2:3] = ex["kspace"][0, 2:3]
            p[0, 0 : DIMS["T"]] = ex["phase"][0, 0]
            p[1, 0 : DIMS["T"]] = ex["phase"][0, 1]
    assert not list((tmp_path / "s.zarr").rglob("*.partial"))


def test_remove_partials(tmp_path):
    root = zstore.create(tmp_path / "s.zarr", DIMS, {})
    zstore.Writer(root).example(0, _example(0))
    stale = tmp_path / "s.zarr" / "kspace" / "c" / "1" / "0" / "0" / "0" / "0.0123abcd.partial"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a chunk")
    assert zstore.remove_partials(tmp_path / "s.zarr") == 1
    assert not stale.exists()
    assert zstore.Store.open(tmp_path / "s.zarr").complete().tolist() == [True, False, False]
    assert zstore.remove_partials("memory://nothing-here") == 0


def test_short_raw_writes_are_completed(tmp_path):
    """An unbuffered write may take fewer bytes than asked; the writer loops until all are written."""

    class Trickle:
        name = "trickle"

        def __init__(self):
            self.got = bytearray()

        def write(self, data):
            self.got += bytes(data[:3])
            return min(3, len(data))

    f = Trickle()
    payload = np.arange(10, dtype=np.float32)
    _write_all(f, memoryview(payload).cast("B"))
    assert bytes(f.got) == payload.tobytes()


# --- format 1.1: the kz array; 1.0 stores still load --------------------------------------------


def downgrade_to_1_0(path):
    """Make ``path`` what a 1.0 writer left: no ``kz`` or ``offsets`` array, no ``kind``,
    ``format_version`` "1.0"."""
    import shutil

    shutil.rmtree(path / "kz")
    shutil.rmtree(path / "offsets")
    root = zarr.open_group(str(path), mode="r+")
    arrays = {k: v for k, v in root.attrs["arrays"].items() if k not in ("kz", "offsets")}
    root.attrs.update({"format_version": "1.0", "arrays": arrays})
    root.attrs.pop("kind")


def test_new_stores_have_kz_and_offsets(tmp_path):
    root = zstore.create(tmp_path / "s.zarr", DIMS, {})
    assert root.attrs["format_version"] == "1.4" == zstore.FORMAT_VERSION and root.attrs["kind"] == "kspace"
    assert root["offsets"].dtype == np.float64 and root["offsets"].shape == (DIMS["N"], DIMS["M"])
    assert root["kz"].dtype == np.int8 and root["kz"].shape == (DIMS["N"], DIMS["T"], DIMS["Ky"])
    assert "kz[t,n]" in root.attrs["conventions"]["caipi_model"]
    ex = _example(0)
    with pytest.raises(StoreError, match="'kz' missing"):
        zstore.Writer(root).example(0, {k: v for k, v in ex.items() if k != "kz"})


def test_1_0_store_without_kz_loads_as_row_ordering(tmp_path):
    path = tmp_path / "old.zarr"
    root = zstore.create(path, DIMS, {"params": {"sms": DIMS["M"]}})
    ex = _example(3)
    zstore.Writer(root).example(0, ex)
    downgrade_to_1_0(path)
    st = zstore.Store.open(path)
    assert st.version == (1, 0) and st.caipi == "row" and "kz" not in st.root
    got = st.example(0)
    assert "kz" not in got  # not stored: only given when asked for
    np.testing.assert_array_equal(got["kspace"], ex["kspace"])
    kz = st.example(0, ["mask", "kz"])["kz"]
    assert kz.dtype == np.int8 and kz.shape == (DIMS["T"], DIMS["Ky"])
    np.testing.assert_array_equal(kz, np.tile(np.arange(DIMS["Ky"]) % DIMS["M"], (DIMS["T"], 1)))
    # the same store claiming 1.1 lacks an array its version has
    zarr.open_group(str(path), mode="r+").attrs["format_version"] = "1.1"
    with pytest.raises(StoreError, match="'kz' missing"):
        zstore.Store.open(path)


def test_kz_is_validated(tmp_path):
    from synth.physics.sms import kz_table

    path = tmp_path / "s.zarr"
    root = zstore.create(path, DIMS, {"params": {"caipi": "acquired"}})
    w = zstore.Writer(root)
    ex = _example(1)
    ex["kz"] = kz_table("acquired", ex["mask"], DIMS["M"])
    w.example(0, ex)
    np.testing.assert_array_equal(zstore.Store.open(path).example(0)["kz"], ex["kz"])
    bad = dict(ex, kz=kz_table("row", ex["mask"], DIMS["M"]))  # not what 'acquired' gives
    w.example(1, bad)
    with pytest.raises(StoreError, match="CAIPI ordering 'acquired'"):
        zstore.Store.open(path).example(1)
    w.example(2, dict(ex, kz=np.full_like(ex["kz"], DIMS["M"])))
    with pytest.raises(StoreError, match="outside 0..1"):
        zstore.Store.open(path).example(2, ["kz"])
    # a kz array of the wrong type fails on open
    other = tmp_path / "t.zarr"
    root = zstore.create(other, DIMS, {})
    import shutil

    shutil.rmtree(other / "kz")
    root.create_array("kz", shape=(DIMS["N"], DIMS["T"], DIMS["Ky"]), dtype="int32", fill_value=0)
    with pytest.raises(StoreError, match="'kz' is int32"):
        zstore.Store.open(other)
