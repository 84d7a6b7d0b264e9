"""zoo.registry and ``smssynth zoo``: the weights registry is valid, typed, hash-checked, offline.

Like torchvision's ``test_schema_meta_validation``: every entry of the shipped registry passes
:func:`zoo.registry.validate_weights` (required metadata, parameter count recomputed from the
built model, file hash).  The shipped registry is empty until the project's own model is
trained, so the same validator also runs on a temporary registry holding a tiny SMS-CRNN trained
here for 2 steps on a tiny store (dataset -> model -> loss -> metrics -> checkpoint -> registry).
No test touches the network: downloads use ``file://`` URLs and sockets are disabled.
"""

import json
import pickle
import shutil
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import zoo
from cli.zoo import zoo_cmd
from synth.errors import SmssynthError
from tests.zoo.test_data import make_store
from zoo import registry
from zoo.checkpoint import describe_store, save_checkpoint, sha256_file
from zoo.data import DataConfig, SmsDataset
from zoo.errors import CheckpointError, ChecksumError, UnknownWeightsError
from zoo.losses import LossConfig, SmsLoss
from zoo.metrics import nmse, psnr, ssim, summarize
from zoo.models import build_model, count_parameters, model_config_dict
from zoo.registry import (
    REQUIRED_META,
    Weights,
    get_weights,
    list_models,
    load,
    read_registry,
    register_checkpoint,
    validate_weights,
)

NAME = "tiny-sms-crnn-test"
PACKAGE_WEIGHTS = Path(registry.__file__).parent / "weights"


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a registry test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv(registry.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SMS-CRNN trained for 2 steps, saved as a checkpoint: (model, checkpoint path)."""
    store, _ = make_store(tmp_path_factory.mktemp("store") / "tiny.zarr", n=2, m=2)
    ds = SmsDataset(store, DataConfig(coil_mode="virtual"))  # 5-D items, fed to the model as they are
    batch = {k: torch.stack([ds[i][k] for i in range(len(ds))]) for k in ("x0", "k3", "mask3", "truth", "target")}
    torch.manual_seed(0)
    model = build_model("sms-crnn", {"n_filters": 4, "n_iterations": 2})
    loss_fn = SmsLoss(LossConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        loss, _ = loss_fn(model(batch["x0"], batch["k3"], batch["mask3"]), batch["target"])
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(batch["x0"], batch["k3"], batch["mask3"])
    metrics = {"train": {name: summarize(fn(pred, batch["target"])) for name, fn in
                         (("nmse", nmse), ("psnr", psnr), ("ssim", ssim))}}
    path = save_checkpoint(
        tmp_path_factory.mktemp("run") / "tiny", model, model_name="sms-crnn", model_config=model_config_dict(model),
        training={"steps": 2, "epochs": 1, "optimizer": "Adam", "lr": 1e-3, "loss": LossConfig(), "seed": 0,
                  "device": "cpu"},
        data=describe_store(store, split=None), metrics=metrics,
    )
    return model, path


@pytest.fixture
def temp_registry(trained, tmp_path):
    """A weights folder holding the tiny checkpoint, registered the maintainers' way."""
    folder = tmp_path / "weights"
    entry = register_checkpoint(trained[1], NAME, licence="CC0-1.0", description="tiny test model, 2 steps",
                                weights_dir=folder)
    return folder, entry


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- the registry validation test ---------------------------------------------------------------


def test_shipped_registry_is_valid():
    """Every shipped entry: required metadata, parameter count from the built model, file hash."""
    entries = read_registry()  # the package's zoo/weights (env var cleared)
    assert (PACKAGE_WEIGHTS / "registry.json").is_file()
    problems = {w.name: validate_weights(w) for w in entries}
    assert not any(problems.values()), problems
    # nothing shipped outside the registry (a forgotten or stale weights file)
    registered = {w.file for w in entries}
    assert {p.name for p in PACKAGE_WEIGHTS.glob("*.safetensors")} <= registered


def test_temporary_registry_passes_the_same_validation(temp_registry, trained):
    folder, entry = temp_registry
    assert read_registry(folder) == [entry]
    assert validate_weights(entry, weights_dir=folder) == []
    # what the validator checks, spelled out
    assert set(REQUIRED_META) <= set(entry.meta)
    built = build_model(entry.meta["model"]["name"], entry.meta["model"]["config"])
    assert count_parameters(built) == entry.meta["model"]["n_parameters"] == entry.n_parameters
    assert sha256_file(folder / entry.file) == entry.sha256 == sha256_file(trained[1])
    assert json.loads((folder / f"{NAME}.json").read_text()) == entry.meta
    assert entry.meta["licence"] == "CC0-1.0" and entry.meta["data"]["store"] == "tiny.zarr"


def test_validator_catches_each_kind_of_problem(temp_registry):
    folder, entry = temp_registry
    meta = entry.meta

    def problems(**changes):
        return " | ".join(validate_weights(Weights(**{**entry.__dict__, **changes}), weights_dir=folder))

    assert "parameters" in problems(meta={**meta, "model": {**meta["model"], "n_parameters": 1}})
    assert "lacks 'licence'" in problems(meta={k: v for k, v in meta.items() if k != "licence"})
    assert "lacks 'split'" in problems(meta={**meta, "data": {k: v for k, v in meta["data"].items() if k != "split"}})
    assert "does not build" in problems(meta={**meta, "model": {**meta["model"], "name": "nope"}})
    assert "SHA-256" in problems(sha256="f" * 64, meta={**meta, "sha256": "f" * 64})
    assert "differs from the entry's" in problems(sha256="f" * 64)
    assert "not shipped and no url" in problems(file="absent.safetensors")


# --- lookups ------------------------------------------------------------------------------------


def test_list_get_and_the_env_override(temp_registry, monkeypatch):
    folder, entry = temp_registry
    assert list_models(weights_dir=folder) == [NAME]
    assert get_weights(NAME, weights_dir=folder) == entry and entry.architecture == "sms-crnn"
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(folder))
    assert zoo.list_models() == [NAME] and zoo.get_weights(NAME) == entry and zoo.Weights is Weights


def test_unknown_name_lists_the_known_ones(temp_registry):
    folder, _ = temp_registry
    with pytest.raises(UnknownWeightsError) as info:
        get_weights("nope", weights_dir=folder)
    assert isinstance(info.value, KeyError) and isinstance(info.value, SmssynthError)
    assert str(info.value).startswith("no pretrained weights named 'nope'") and NAME in str(info.value)
    with pytest.raises(UnknownWeightsError, match="neither registered"):
        load("nope", weights_dir=folder)
    with pytest.raises(UnknownWeightsError, match="none yet"):
        get_weights("nope", weights_dir=folder / "empty")


# --- loading ------------------------------------------------------------------------------------


def test_load_by_name_and_by_path(temp_registry, trained):
    folder, entry = temp_registry
    model, meta = load(NAME, weights_dir=folder)
    assert same_weights(model, trained[0]) and meta == entry.meta and not model.training
    model, meta = load(str(trained[1]))
    assert same_weights(model, trained[0]) and "licence" not in meta


def test_tampered_shipped_file_is_refused_with_both_hashes(temp_registry):
    folder, entry = temp_registry
    path = folder / entry.file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError) as info:
        load(NAME, weights_dir=folder)
    assert entry.sha256 in str(info.value) and sha256_file(path) in str(info.value) and str(path) in str(info.value)


def test_loading_never_unpickles(temp_registry, trained, monkeypatch):
    folder, _ = temp_registry

    def refuse(*args, **kwargs):
        raise AssertionError("loading registered weights tried to unpickle")

    for target, attr in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(target, attr, refuse)
    assert same_weights(load(NAME, weights_dir=folder)[0], trained[0])


def url_registry(folder, entry, source: Path, tmp_path) -> Path:
    """A registry whose entry is not shipped but has a file:// url (to ``source``)."""
    remote = tmp_path / "weights-url"
    remote.mkdir()
    w = Weights(**{**entry.__dict__, "url": source.as_uri()})
    (remote / "registry.json").write_text(json.dumps([w.to_entry()]))
    return remote


def test_url_source_is_downloaded_to_the_cache_and_hash_checked(temp_registry, trained, tmp_path):
    folder, entry = temp_registry
    source = tmp_path / "served" / "w.safetensors"
    source.parent.mkdir()
    shutil.copyfile(folder / entry.file, source)
    remote = url_registry(folder, entry, source, tmp_path)
    assert validate_weights(get_weights(NAME, weights_dir=remote), weights_dir=remote) == []

    model, _ = load(NAME, weights_dir=remote)
    assert same_weights(model, trained[0])
    cached = list((tmp_path / "cache" / "weights").glob("*.safetensors"))
    assert len(cached) == 1 and sha256_file(cached[0]) == entry.sha256
    source.unlink()  # second load: from the cache, no fetch
    assert same_weights(load(NAME, weights_dir=remote)[0], trained[0])


def test_url_with_other_content_is_refused_and_not_kept(temp_registry, tmp_path):
    folder, entry = temp_registry
    source = tmp_path / "served" / "w.safetensors"
    source.parent.mkdir()
    source.write_bytes(b"not the weights")
    remote = url_registry(folder, entry, source, tmp_path)
    with pytest.raises(ChecksumError) as info:
        load(NAME, weights_dir=remote)
    assert entry.sha256 in str(info.value) and sha256_file(source) in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.safetensors*"))
    source.unlink()
    with pytest.raises(CheckpointError, match="cannot download"):
        load(NAME, weights_dir=remote)


# --- registration and registry files ------------------------------------------------------------


def test_register_refuses_bad_input_and_duplicates(temp_registry, trained):
    folder, entry = temp_registry
    with pytest.raises(CheckpointError, match="already registered"):
        register_checkpoint(trained[1], NAME, licence="x", description="y", weights_dir=folder)
    again = register_checkpoint(trained[1], NAME, licence="MIT", description="y", weights_dir=folder, overwrite=True)
    assert read_registry(folder) == [again] and again.meta["licence"] == "MIT"
    with pytest.raises(CheckpointError, match="must match"):
        register_checkpoint(trained[1], "Bad Name", licence="x", description="y", weights_dir=folder)
    with pytest.raises(CheckpointError, match="licence must be a non-empty"):
        register_checkpoint(trained[1], "other", licence=" ", description="y", weights_dir=folder)


@pytest.mark.parametrize("text, pattern", [
    ("{", "not valid JSON"),
    ('{"a": 1}', "JSON list"),
    ('[{"name": "x"}]', "missing keys"),
    ('[{"name": "x", "file": "../x.safetensors", "sha256": "' + "0" * 64 + '", "meta": {"model": {}}}]', "plain"),
    ('[{"name": "x", "file": "x.safetensors", "sha256": "abc", "meta": {"model": {}}}]', "64 lower-case hex"),
    ('[{"name": "x", "file": "x.safetensors", "sha256": "' + "0" * 64 + '", "meta": {"model": {}}, '
     '"url": "ftp://h/x"}]', "url must be null"),
])
def test_malformed_registry_files_are_refused(tmp_path, text, pattern):
    (tmp_path / "registry.json").write_text(text)
    with pytest.raises(CheckpointError, match=pattern):
        read_registry(tmp_path)


# --- smssynth zoo -------------------------------------------------------------------------------


def test_cli_list_and_info(temp_registry, trained, monkeypatch):
    folder, entry = temp_registry
    runner = CliRunner()
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(folder / "empty"))
    out = runner.invoke(zoo_cmd, ["list"])
    assert out.exit_code == 0 and "no pretrained weights registered" in out.output

    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(folder))
    out = runner.invoke(zoo_cmd, ["list"])
    assert out.exit_code == 0, out.output
    header, row = out.output.splitlines()
    for column in ("name", "architecture", "parameters", "training data", "key metrics"):
        assert column in header
    for cell in (NAME, "sms-crnn", f"{entry.n_parameters:,}", "tiny.zarr (2 ex.)", "train.nmse", "train.psnr"):
        assert cell in row

    out = runner.invoke(zoo_cmd, ["list", "--json"])
    assert out.exit_code == 0 and json.loads(out.output) == [entry.to_entry()]
    out = runner.invoke(zoo_cmd, ["info", NAME])
    assert out.exit_code == 0 and json.loads(out.output) == entry.to_entry()
    out = runner.invoke(zoo_cmd, ["info", str(trained[1])])
    assert out.exit_code == 0 and json.loads(out.output)["model"]["name"] == "sms-crnn"
    out = runner.invoke(zoo_cmd, ["info", "nope"])
    assert out.exit_code == 2 and NAME in out.output and "Traceback" not in out.output


def test_cli_reports_a_broken_registry_without_traceback(tmp_path, monkeypatch):
    (tmp_path / "registry.json").write_text("{")
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(tmp_path))
    out = CliRunner().invoke(zoo_cmd, ["list"])
    assert out.exit_code == 1 and "not valid JSON" in out.output and out.exception.__class__ is SystemExit
