"""zoo.checkpoint: safetensors + JSON round trip, hash checks, helpful refusals, never pickle."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from synth.errors import SmssynthError
from zoo.checkpoint import (
    FORMAT,
    REQUIRED_KEYS,
    checkpoint_paths,
    describe_store,
    load_checkpoint,
    n_parameters,
    read_metadata,
    save_checkpoint,
    sha256_file,
    tensors_sha256,
)
from synth.dataset.store import FORMAT_VERSION
from zoo.errors import CheckpointError, ChecksumError
from zoo.train.losses import LossConfig
from zoo.models import build_model, count_parameters, model_config_dict

TINY = {"n_filters": 4, "n_iterations": 2}


def tiny(name="sms-crnn", seed=0, **extra):
    torch.manual_seed(seed)
    return build_model(name, {**TINY, **extra})


def save(path, model, **overrides):
    kwargs = {
        "model_name": model.name,
        "model_config": model_config_dict(model),
        "training": {"steps": 2, "lr": 1e-3, "loss": LossConfig(), "device": torch.device("cpu")},
        "data": {"store": "tiny.zarr", "n_examples": np.int64(2), "dims": {"M": 2}},
        "metrics": {"val": {"psnr": {"mean": np.float32(30.5), "sd": 1.0, "n": 2}}},
    }
    kwargs.update(overrides)
    return save_checkpoint(path, model, **kwargs)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["sms-crnn", "independent", "conv3d"])
def test_round_trip(tmp_path, name):
    model = tiny(name)
    st = save(tmp_path / "run" / "best", model)
    assert st == tmp_path / "run" / "best.safetensors" and st.is_file()
    loaded, meta = load_checkpoint(tmp_path / "run" / "best")
    assert type(loaded) is type(model) and same_weights(loaded, model) and not loaded.training
    assert meta["model"] == {"name": name, "config": model_config_dict(model), "n_parameters": count_parameters(model)}
    assert meta["sha256"] == sha256_file(st) and meta["format"] == FORMAT and meta["format_version"] == "1.0"
    assert set(REQUIRED_KEYS) <= set(meta) and set(meta["software"]) >= {"smssynth", "torch", "python"}
    # values trainers pass are stored as JSON (dataclass, device, numpy scalars)
    assert meta["training"]["loss"] == LossConfig().to_dict() and meta["training"]["device"] == "cpu"
    assert meta["data"]["n_examples"] == 2 and meta["metrics"]["val"]["psnr"]["mean"] == pytest.approx(30.5)
    assert read_metadata(st) == meta


def test_safetensors_header_names_the_model_and_hashes_the_tensors(tmp_path):
    model = tiny()
    st = save(tmp_path / "ck", model)
    with safe_open(str(st), framework="pt") as f:
        header = f.metadata()
    assert header["format"] == FORMAT and header["model_name"] == "sms-crnn"
    assert json.loads(header["model_config"]) == model_config_dict(model)
    assert header["tensors_sha256"] == tensors_sha256(model.state_dict())


def test_path_forms(tmp_path):
    model = tiny()
    assert checkpoint_paths(tmp_path / "a.safetensors") == (tmp_path / "a.safetensors", tmp_path / "a.json")
    assert checkpoint_paths(tmp_path / "a.json") == (tmp_path / "a.safetensors", tmp_path / "a.json")
    # a dotted stem keeps its dot (no with_suffix)
    st = save(str(tmp_path / "run.v2"), model)
    assert st.name == "run.v2.safetensors" and (tmp_path / "run.v2.json").is_file()
    for form in (tmp_path / "run.v2", str(st), tmp_path / "run.v2.json"):
        assert same_weights(load_checkpoint(form)[0], model)


def test_frozen_layers_count_in_the_recorded_parameters(tmp_path):
    """A fine-tuned model with frozen layers still loads: the count is of all parameters."""
    model = tiny()
    for name, p in model.named_parameters():
        p.requires_grad_("bcrnn" not in name)
    assert count_parameters(model) < n_parameters(model)
    st = save(tmp_path / "ck", model)
    loaded, meta = load_checkpoint(st)
    assert meta["model"]["n_parameters"] == n_parameters(model) == count_parameters(loaded)
    assert same_weights(loaded, model)


def test_device_argument(tmp_path):
    st = save(tmp_path / "ck", tiny())
    model, _ = load_checkpoint(st, device="cpu")
    assert all(p.device.type == "cpu" for p in model.parameters())


# --- refusals -----------------------------------------------------------------------------------


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the last tensor's bytes
    path.write_bytes(bytes(data))


def test_tampered_weights_are_refused_with_both_hashes(tmp_path):
    st = save(tmp_path / "ck", tiny())
    recorded = read_metadata(st)["sha256"]
    flip_last_byte(st)
    actual = sha256_file(st)
    with pytest.raises(ChecksumError) as info:
        load_checkpoint(st)
    msg = str(info.value)
    assert str(st) in msg and recorded in msg and actual in msg
    assert isinstance(info.value, ValueError) and isinstance(info.value, SmssynthError)


def test_expected_sha256_is_checked(tmp_path):
    st = save(tmp_path / "ck", tiny())
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=wrong):
        load_checkpoint(st, expected_sha256=wrong)
    load_checkpoint(st, expected_sha256=sha256_file(st).upper())  # hex case does not matter


def test_missing_or_garbled_metadata(tmp_path):
    st = save(tmp_path / "ck", tiny())
    js = tmp_path / "ck.json"
    good = js.read_text()

    js.unlink()
    with pytest.raises(CheckpointError, match=r"ck\.json: metadata file missing.*save_checkpoint"):
        load_checkpoint(st)
    js.write_text(good[:50])
    with pytest.raises(CheckpointError, match=r"ck\.json: metadata is not valid JSON.*restore"):
        load_checkpoint(st)
    meta = json.loads(good)
    for broken, pattern in (
        ({**meta, "format": "other"}, "format 'other'"),
        ({**meta, "format_version": "2.0"}, "version 2.0.*upgrade smssynth"),
        ({k: v for k, v in meta.items() if k != "metrics"}, r"lacks \['metrics'\]"),
        ({**meta, "model": {"name": "sms-crnn"}}, "model.config"),
    ):
        js.write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(st)
    js.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="JSON object"):
        read_metadata(st)


def test_missing_weights_file(tmp_path):
    st = save(tmp_path / "ck", tiny())
    st.unlink()
    with pytest.raises(CheckpointError, match=r"ck\.safetensors: weights file missing"):
        load_checkpoint(tmp_path / "ck")


def test_metadata_that_no_longer_fits_the_weights_is_refused(tmp_path):
    """Weights and code cannot drift: the architecture comes from the metadata, loading is strict."""
    st = save(tmp_path / "ck", tiny())
    js = tmp_path / "ck.json"
    meta = json.loads(js.read_text())
    meta["model"]["config"]["n_filters"] = 8
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(st)
    meta["model"]["config"]["n_filters"] = 4
    meta["model"]["name"] = "no-such-model"
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot build"):
        load_checkpoint(st)
    meta["model"] = {**meta["model"], "name": "independent", "config": model_config_dict(tiny("independent"))}
    js.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights are of model 'sms-crnn'"):
        load_checkpoint(st)


def test_save_refuses_what_could_not_be_rebuilt(tmp_path):
    model = tiny()
    with pytest.raises(CheckpointError, match="is a registered 'sms-crnn'"):
        save(tmp_path / "a", model, model_name="conv3d")
    with pytest.raises(CheckpointError, match="other weights"):
        save(tmp_path / "b", model, model_config={**model_config_dict(model), "n_filters": 8})
    with pytest.raises(CheckpointError, match="unknown config key"):
        save(tmp_path / "c", model, model_config={"bogus": 1})
    with pytest.raises(CheckpointError, match="JSON"):
        save(tmp_path / "d", model, metrics={"x": object()})
    with pytest.raises(CheckpointError, match="metrics must be a dict"):
        save(tmp_path / "e", model, metrics=[1])


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model = tiny()
    st = save(tmp_path / "ck", model)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded, _ = load_checkpoint(st)
    assert same_weights(loaded, model)
    # and the weights file is not a pickle (zip or protocol header) but a safetensors header
    head = st.read_bytes()[:9]
    assert head[:2] != b"PK" and head[:1] != b"\x80" and head[8:9] == b"{"


def test_describe_store_counts_the_complete_examples_of_the_split(tmp_path):
    from tests.zoo.test_data import make_store

    splits = ["train", "val", "train", "train"]
    path, _ = make_store(tmp_path / "deep" / "s.zarr", n=4, written=[0, 1, 3], splits=splits)
    d = describe_store(path, split="train", data_config={"coil_mode": "virtual"})
    assert d["store"] == "s.zarr"  # the basename only: full paths may name people or sites
    assert (d["format"], d["format_version"], d["split"], d["n_examples"]) == ("smssynth.sms-kspace", FORMAT_VERSION, "train", 2)
    assert d["dims"]["M"] == 2 and d["params"]["sms"] == 2 and d["data_config"] == {"coil_mode": "virtual"}
    assert describe_store(path)["n_examples"] == 3 and describe_store(path, n_examples=7)["n_examples"] == 7


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf_are_refused_at_load(tmp_path, bad):
    """A checkpoint of a diverged run (hashes all consistent) must not load and reconstruct NaN."""
    model = tiny()
    name, p = next(iter(model.named_parameters()))
    with torch.no_grad():
        p.view(-1)[0] = bad
    st = save(tmp_path / "ck", model)
    with pytest.raises(CheckpointError, match=rf"NaN or infinite.*{name}"):
        load_checkpoint(st)


# --- input normalisation travels with the weights ----------------------------------------------


def test_normalization_is_recorded_and_handed_over_with_the_model(tmp_path):
    from zoo.checkpoint import LEGACY_NORM_QUANTILE, Normalization
    from zoo.train import NORM_QUANTILE

    model = tiny()
    # given explicitly
    st = save(tmp_path / "q", model, normalization=Normalization(0.9))
    loaded, meta = load_checkpoint(st)
    assert meta["training"]["normalization"] == {"kind": "quantile of |x0| per example", "quantile": 0.9}
    assert loaded.normalization == Normalization(0.9)
    # inside training (what zoo.train writes), the same
    st = save(tmp_path / "t", model, training={"normalization": {"kind": "quantile of |x0| per example",
                                                                 "quantile": 0.75}})
    assert load_checkpoint(st)[0].normalization.quantile == 0.75
    # neither: normalize_batch's default, recorded explicitly
    st = save(tmp_path / "d", model)
    assert read_metadata(st)["training"]["normalization"]["quantile"] == NORM_QUANTILE
    # both, disagreeing: refused
    with pytest.raises(CheckpointError, match="disagree"):
        save(tmp_path / "x", model, normalization={"quantile": 0.5},
             training={"normalization": {"quantile": 0.6}})
    with pytest.raises(CheckpointError, match=r"quantile must be a number in \(0, 1\]"):
        save(tmp_path / "x", model, normalization={"quantile": 1.5})

    # an older checkpoint without the record: the documented default
    json_path = tmp_path / "d.json"
    meta = json.loads(json_path.read_text())
    del meta["training"]["normalization"]
    json_path.write_text(json.dumps(meta))
    assert load_checkpoint(tmp_path / "d")[0].normalization == Normalization(LEGACY_NORM_QUANTILE)
    # a record that is there but unusable is refused, naming the file: guessing would reconstruct garbage
    for bad in ("quantile 0.99 of |x0|", {"kind": "max of |x0|", "quantile": 1.0}, {"quantile": 0}):
        meta["training"]["normalization"] = bad
        json_path.write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match=r"d\.json: training\.normalization"):
            load_checkpoint(tmp_path / "d")
