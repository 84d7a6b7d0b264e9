"""zoo.eval.recon: methods, example selection, inference as validation does it, the recon store, figures."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
import zarr

from synth.errors import ConfigError, StoreError, StoreExistsError
from tests.zoo.test_data import make_store
from zoo import physics as P
from zoo.eval import recon as R
from zoo import train as T
from zoo.checkpoint import LEGACY_NORM_QUANTILE, describe_store, read_metadata, save_checkpoint
from zoo.data import DataConfig, SmsDataset, coil_compression_weights, virtual_coil_weights
from zoo.errors import ChecksumError, UnknownWeightsError
from zoo.metrics import nmse, psnr, ssim, ssim_fastmri
from zoo.models import build_model, model_config_dict

TINY = {"n_filters": 4, "n_iterations": 2}
SPLITS = ["train", "train", "val", "val", "test", "test"]
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def save_tiny(path, store, coil_mode="virtual", seed=0, quantile=T.NORM_QUANTILE, coils=None):
    """An untrained tiny SMS-CRNN saved with the metadata zoo.train.fit writes (coil mode, normalisation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("sms-crnn", TINY)
    data_config = dataclasses.asdict(DataConfig(coil_mode=coil_mode, coils=coils))
    save_checkpoint(path, model, model_name="sms-crnn", model_config=model_config_dict(model),
                    training={"command": "train", "step": 0,
                              "normalization": {"kind": "quantile of |x0| per example", "quantile": quantile}},
                    data=describe_store(store, split=None, data_config=data_config),
                    metrics={"val": None})
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """6 examples, M = 2, 3 coils, 4 frames, 37 x 31, splits train/val/test (tests.zoo.test_data)."""
    path, _ = make_store(tmp_path_factory.mktemp("recon") / "s.zarr", n=6, m=2, splits=SPLITS, seed=7)
    return str(path)


@pytest.fixture(scope="module")
def ckpt(store, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ck") / "tiny", store)


@pytest.fixture(scope="module")
def ckpt_per_coil(store, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckpc") / "tiny-pc", store, coil_mode="per-coil", seed=1)


@pytest.fixture(scope="module")
def ckpt_compressed(store, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("ckcc") / "tiny-k2", store, coil_mode="compressed", coils=2, seed=2)


def independent_zero_filled(store, i, coil_mode, coils=None):
    """|zoo.physics.zero_filled| of example i straight from the store's arrays (RSS over the coils)."""
    root = zarr.open_group(store, mode="r")
    y, mask, m = root["kspace"][i], root["mask"][i], root.attrs["dims"]["M"]
    if coil_mode == "virtual":
        y = np.tensordot(virtual_coil_weights(y, mask).conj(), y, axes=1)
    elif coil_mode == "compressed":
        y = np.tensordot(coil_compression_weights(y, mask, coils).conj().T, y, axes=1)
    k3, _ = P.to_3d_data(torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(mask), m)
    x = P.zero_filled(k3)
    return x.abs() if coil_mode == "virtual" else torch.linalg.vector_norm(x, dim=0)


# --- methods ----------------------------------------------------------------------------------


def test_baselines_and_cs_iters():
    m = R.load_method("cs-ttv", cs_iters=3)
    assert m.kind == "baseline" and m.coil_mode == R.BASELINE_COIL_MODE == "per-coil" == DataConfig().coil_mode
    assert m.model.config["n_iter"] == 3 and m.info["sha256"] is None
    assert R.load_method("zero-filled", cs_iters=3, coil_mode="per-coil").coil_mode == "per-coil"
    k2 = R.load_method("zero-filled", coil_mode="compressed", coils=2)
    assert (k2.coil_mode, k2.coils, k2.describe()["coils"]) == ("compressed", 2, 2)
    for bad in ({"coil_mode": "compressed"}, {"coil_mode": "per-coil", "coils": 2}, {"coil_mode": "sense"}):
        with pytest.raises(ConfigError):
            R.load_method("zero-filled", **bad)
    assert set(R.BASELINE_NAMES) == {"zero-filled", "cs-tfft", "cs-ttv", "sense-oracle", "sense-espirit"}


def test_sense_methods_use_every_coil(store, tmp_path):
    """SENSE loads per-coil whatever coil mode is asked, takes the store's maps itself, and
    writes one image (no coil axis); the recon store records the failure rule and SSIM kind."""
    m = R.load_method("sense-oracle", coil_mode="compressed", coils=2, sense_iters=4, sense_lam=0.1)
    assert (m.coil_mode, m.coils, m.info["oracle"]) == ("per-coil", None, True)
    assert (m.model.config["n_iter"], m.model.config["lam"]) == (4, 0.1)
    assert R.needs_store(m) and R.combines_coils(m) and not R.needs_store(R.load_method("cs-ttv"))
    with pytest.raises(ConfigError, match="store="):
        ds, pos = R.open_examples(store, "per-coil", examples=[1])
        R.reconstruct_item(m, ds[pos[0]], CPU)
    out = tmp_path / "sense.zarr"
    attrs = R.run_recon(m, store, out, device=CPU, examples=[1, 3], save_complex=True, ssim_kind="fastmri",
                        fail_nmse=0.5)
    root = zarr.open_group(str(out), mode="r")
    assert root["recon_complex"].shape == (2, 2, 4, 37, 31)  # one image, no coil axis
    np.testing.assert_allclose(np.abs(root["recon_complex"][:]), root["recon"][:], rtol=1e-5, atol=1e-7)
    assert "C" not in root.attrs["dims"] and attrs["method"]["oracle"] is True
    met = attrs["metrics"]
    assert met["ssim_kind"] == "fastmri" and met["failure_threshold_nmse"] == 0.5
    assert met["failed"]["n"] == 2 and set(met["excluding_failed"]) == {"nmse", "psnr", "ssim", "seconds"}
    assert met["ssim"]["n"] == met["nmse"]["n"] == 2  # the summaries, not shadowed by the conventions
    target = torch.from_numpy(zarr.open_group(store, mode="r")["target"][:])
    rec = torch.from_numpy(root["recon"][:])
    np.testing.assert_allclose(root["ssim"][:], ssim_fastmri(rec, target[[1, 3]]).numpy(), rtol=1e-6)
    # SENSE with the exact maps and many CG iterations beats zero-filling on this store too
    zf = R.run_recon(R.load_method("zero-filled", coil_mode="per-coil"), store, tmp_path / "zf.zarr", device=CPU,
                     examples=[1, 3])
    assert attrs["metrics"]["psnr"]["mean"] > zf["metrics"]["psnr"]["mean"]


def test_checkpoint_settings_come_from_metadata(store, ckpt, ckpt_per_coil, ckpt_compressed, tmp_path):
    m = R.load_method(ckpt, coil_mode="per-coil")  # the checkpoint's recorded mode wins
    assert (m.kind, m.coil_mode, m.info["architecture"]) == ("checkpoint", "virtual", "sms-crnn")
    assert m.info["sha256"] == read_metadata(ckpt)["sha256"]
    assert R.load_method(ckpt_per_coil).coil_mode == "per-coil"
    k2 = R.load_method(ckpt_compressed, coil_mode="virtual")  # recorded mode and K win
    assert (k2.coil_mode, k2.coils) == ("compressed", 2)
    odd = R.load_method(save_tiny(tmp_path / "q", store, quantile=0.9))
    assert odd.quantile == 0.9 and odd.describe()["normalization"]["quantile"] == 0.9


def test_checkpoint_reconstructs_with_its_recorded_quantile(store, tmp_path, monkeypatch):
    """The quantile comes from the checkpoint's metadata, not from a module constant."""
    path = save_tiny(tmp_path / "q5", store, quantile=0.5)
    # were recon to read the module constants, it would now use 0.8
    monkeypatch.setattr(T, "NORM_QUANTILE", 0.8)
    monkeypatch.setattr(R, "NORM_QUANTILE", 0.8)
    method = R.load_method(path)
    assert method.quantile == 0.5 and method.model.normalization.quantile == 0.5
    ds, pos = R.open_examples(store, "virtual", examples=[2])
    item = ds[pos[0]]
    rec = R.reconstruct_item(method, item, CPU)

    def by_hand(q):
        batch = {k: v[None] for k, v in item.items()}
        nb, scale = T.normalize_batch(batch, q)
        with torch.no_grad():
            return T.denormalize(method.model(nb["x0"], nb["k3"], nb["mask3"]), scale)[0]

    torch.testing.assert_close(rec.image, by_hand(0.5))
    assert not torch.allclose(rec.image, by_hand(0.99), rtol=1e-3, atol=1e-6)  # the quantile matters
    assert method.describe()["normalization"]["quantile"] == 0.5

    # a checkpoint from before the record: the documented default, whatever the module constants say
    meta_path = tmp_path / "q5.json"
    meta = read_metadata(path)
    del meta["training"]["normalization"]
    meta_path.write_text(json.dumps(meta))
    old = R.load_method(path)
    assert old.quantile == LEGACY_NORM_QUANTILE == 0.99
    torch.testing.assert_close(R.reconstruct_item(old, item, CPU).image, by_hand(0.99))


def test_unknown_model_lists_what_exists():
    with pytest.raises(UnknownWeightsError) as e:
        R.load_method("nope")
    assert "zero-filled" in str(e.value) and "cs-ttv" in str(e.value) and "registered" in str(e.value)
    with pytest.raises(UnknownWeightsError, match="architecture, not trained weights"):
        R.load_method("sms-crnn")


def test_checksum_mismatch_is_refused(ckpt, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(ckpt + suffix, tmp_path / f"bad{suffix}")
    raw = bytearray((tmp_path / "bad.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        R.load_method(str(tmp_path / "bad"))


# --- examples ---------------------------------------------------------------------------------


def test_example_selection(store):
    ds, pos = R.open_examples(store, "virtual")
    assert [ds.indices[p] for p in pos] == list(range(6))
    ds, pos = R.open_examples(store, "virtual", split="test")
    assert [ds.indices[p] for p in pos] == [4, 5]
    ds, pos = R.open_examples(store, "per-coil", examples=[5, 0, 3])
    assert [ds.indices[p] for p in pos] == [5, 0, 3]
    with pytest.raises(ConfigError, match=r"out of range.*0\.\.5"):
        R.open_examples(store, "virtual", examples=[0, 6])
    with pytest.raises(ConfigError, match="more than once"):
        R.open_examples(store, "virtual", examples=[1, 1])
    with pytest.raises(ConfigError, match="not in split 'test'"):
        R.open_examples(store, "virtual", examples=[0], split="test")
    with pytest.raises(ConfigError, match="no complete example in split 'nosuch'"):
        R.open_examples(store, "virtual", split="nosuch")
    with pytest.raises(StoreError, match="no such store"):
        R.open_examples(store + "-missing", "virtual")


def test_incomplete_example_is_refused(tmp_path):
    path, _ = make_store(tmp_path / "p.zarr", n=3, written={0, 2}, partial={1})
    with pytest.raises(ConfigError, match="incomplete"):
        R.open_examples(str(path), "virtual", examples=[1])


# --- inference --------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["ckpt", "ckpt_per_coil", "ckpt_compressed"])
def test_inference_equals_validation_path(store, fixture, request):
    """Per-example metrics equal zoo.train.evaluate_examples (training validation) on the same examples."""
    method = R.load_method(request.getfixturevalue(fixture))
    ds, pos = R.open_examples(store, method.coil_mode, coils=method.coils)
    recs = list(R.reconstruct(method, ds, pos, CPU))
    rows = T.evaluate_examples(method.model, ds, pos, CPU, batch_size=2, num_workers=0)
    assert [r.index for r in recs] == [row[0] for row in rows] == list(range(6))
    for rec, (_, *vals) in zip(recs, rows):
        got = [rec.metrics[k] for k in R.METRICS]
        np.testing.assert_allclose(got, vals, rtol=1e-5)
        assert rec.seconds > 0
        lead = {"per-coil": (3,), "compressed": (2,)}.get(method.coil_mode, ())
        assert rec.image.shape == (*lead, 2, 4, 37, 31) and rec.image.dtype == torch.complex64
        # the magnitude is the RSS of the coil images, the reference the store's own target
        torch.testing.assert_close(rec.magnitude, T.rss_magnitude(rec.image[None])[0])
        np.testing.assert_array_equal(rec.target.numpy(), zarr.open_group(store, mode="r")["target"][rec.index])
        assert rec.magnitude.shape == rec.target.shape == rec.zero_filled.shape == (2, 4, 37, 31)


def test_coil_mode_mismatch_is_refused(store, ckpt, ckpt_compressed):
    method = R.load_method(ckpt)
    ds, pos = R.open_examples(store, "per-coil")
    with pytest.raises(ConfigError, match="coil mode"):
        next(R.reconstruct(method, ds, pos, CPU))
    ds, pos = R.open_examples(store, "compressed", coils=3)
    with pytest.raises(ConfigError, match="'compressed K=2'.*'compressed K=3'"):
        next(R.reconstruct(R.load_method(ckpt_compressed), ds, pos, CPU))


# --- recon store ------------------------------------------------------------------------------


@pytest.mark.parametrize("coil_mode,coils", [("virtual", None), ("per-coil", None), ("compressed", 2)])
def test_zero_filled_recon_store_equals_physics(store, tmp_path, coil_mode, coils):
    out = tmp_path / "zf.zarr"
    attrs = R.run_recon(R.load_method("zero-filled", coil_mode=coil_mode, coils=coils), store, out, device=CPU,
                        examples=[4, 1], save_complex=True)
    root = zarr.open_group(str(out), mode="r")  # plain zarr, no smssynth code
    assert root.attrs["format"] == "smssynth.recon" and root.attrs["format_version"] == "1.0"
    assert list(root["index"][:]) == [4, 1] and root["complete"][:].all()
    lead = {"per-coil": (3,), "compressed": (2,)}.get(coil_mode, ())
    assert root["recon"].shape == (2, 2, 4, 37, 31) and root["recon"].dtype == np.float32
    assert root["recon_complex"].shape == (2, *lead, 2, 4, 37, 31) and root["recon_complex"].dtype == np.complex64
    assert list(root["recon"].metadata.dimension_names) == ["example", "slice", "time", "y", "x"]
    for r, i in enumerate([4, 1]):
        expect = independent_zero_filled(store, i, coil_mode, coils)
        torch.testing.assert_close(torch.from_numpy(root["recon"][r]), expect.float(), rtol=1e-4, atol=1e-6)
        mag = np.abs(root["recon_complex"][r])
        mag = np.sqrt((mag ** 2).sum(0)) if lead else mag
        np.testing.assert_allclose(mag, root["recon"][r], rtol=1e-5, atol=1e-7)
        # the metrics compare that magnitude with the store's target, whatever the coil mode
        target = torch.from_numpy(zarr.open_group(store, mode="r")["target"][i])[None]
        np.testing.assert_allclose(root["psnr"][r], float(psnr(expect.float()[None], target)), rtol=1e-5)
    assert attrs["coil_mode"] == coil_mode == root.attrs["method"]["coil_mode"]
    assert attrs["coils"] == coils == root.attrs["data_config"]["coils"]
    assert root.attrs["dims"] == {"N": 2, **({"C": lead[0]} if lead else {}), "M": 2, "T": 4, "Y": 37, "X": 31}


def test_recon_store_layout_and_metrics(store, ckpt, tmp_path):
    method = R.load_method(ckpt)
    out = tmp_path / "r.zarr"
    R.run_recon(method, store, out, device=CPU, split="test")
    root = zarr.open_group(str(out), mode="r")
    a = dict(root.attrs)
    for key in ("format", "format_version", "dims", "arrays", "method", "source", "coil_mode", "reference",
                "data_config", "normalization", "timing", "metrics", "software", "created"):
        assert key in a, key
    assert set(a["arrays"]) == {"recon", "index", "seconds", "nmse", "psnr", "ssim", "complete"}
    assert "recon_complex" not in root
    assert a["method"]["sha256"] == method.info["sha256"] and a["method"]["architecture"] == "sms-crnn"
    assert a["method"]["config"]["n_filters"] == 4 and a["source"]["store"] == store
    assert a["source"]["split"] == "test" and a["normalization"]["quantile"] == T.NORM_QUANTILE
    assert list(root["index"][:]) == [4, 5]
    assert a["timing"]["device"].startswith("cpu") and len(a["timing"]["seconds"]) == 2
    np.testing.assert_array_equal(root["seconds"][:], a["timing"]["seconds"])
    # stored metrics = zoo.metrics of the stored recon against the store's target
    ref = torch.from_numpy(zarr.open_group(store, mode="r")["target"][4:6])
    rec = torch.from_numpy(root["recon"][:])
    for name, f in (("nmse", nmse), ("psnr", psnr), ("ssim", ssim)):
        np.testing.assert_allclose(root[name][:], f(rec, ref).numpy(), rtol=1e-6)
    assert a["metrics"]["psnr"]["n"] == 2 and a["metrics"]["failure_rate"] == 0.0
    assert a["metrics"]["failed"] == {"count": 0, "n": 2, "rate": 0.0, "indices": [], "threshold_nmse": 1.0}
    assert a["metrics"]["excluding_failed"]["psnr"] == a["metrics"]["psnr"]
    assert a["metrics"]["ssim_kind"] == "gaussian" and a["metrics"]["nmse_unit"].startswith("plain ratio")


def test_out_is_never_clobbered(store, tmp_path):
    zf = R.load_method("zero-filled")
    out = tmp_path / "r.zarr"
    R.run_recon(zf, store, out, device=CPU, examples=[0])
    with pytest.raises(StoreExistsError, match="--overwrite"):
        R.run_recon(zf, store, out, device=CPU, examples=[1])
    assert list(zarr.open_group(str(out), mode="r")["index"][:]) == [0]
    R.run_recon(zf, store, out, device=CPU, examples=[1, 2], overwrite=True)
    assert list(zarr.open_group(str(out), mode="r")["index"][:]) == [1, 2]
    with pytest.raises(ConfigError, match="source store itself"):
        R.run_recon(zf, store, store, device=CPU, overwrite=True)


# --- figures ----------------------------------------------------------------------------------


def test_png_and_gif(store, tmp_path):
    from PIL import Image

    R.run_recon(R.load_method("zero-filled"), store, tmp_path / "r.zarr", device=CPU, examples=[3],
                png_dir=tmp_path / "png", gif_dir=tmp_path / "gif")
    pngs = sorted((tmp_path / "png").iterdir())
    gifs = sorted((tmp_path / "gif").iterdir())
    assert [p.name for p in pngs] == ["example-0003-slice-0.png", "example-0003-slice-1.png"]
    assert [p.name for p in gifs] == ["example-0003-slice-0.gif", "example-0003-slice-1.gif"]
    for p in pngs:
        with Image.open(p) as im:
            assert im.format == "PNG" and min(im.size) > 100
    for p in gifs:
        with Image.open(p) as im:
            assert im.format == "GIF" and im.n_frames == 4  # T frames


def test_png_frames_subset(store, tmp_path):
    ds, pos = R.open_examples(store, "virtual", examples=[0])
    rec = next(R.reconstruct(R.load_method("zero-filled", coil_mode="virtual"), ds, pos, CPU))
    (p0, _) = R.save_png(rec, tmp_path, n_frames=2, label="zf")
    assert p0.stat().st_size > 1000
