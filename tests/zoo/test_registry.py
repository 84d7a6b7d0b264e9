"""zoo.registry and ``smssynth zoo``: the weights registry is valid, typed, hash-checked, offline.

Like torchvision's ``test_schema_meta_validation``: every entry of the shipped registry passes
:func:`zoo.registry.validate_weights` (required metadata, the input normalisation, parameter
count recomputed from the built model, file hash, the model card).  The same validator also runs
on a temporary registry holding a tiny SMS-CRNN trained here for 2 steps on a tiny store
(dataset -> model -> loss -> metrics -> checkpoint -> registry).  Loading by name, ``Weights``
or path, the builders' ``weights=``, and the Hub model cards (``smssynth zoo card``) are tested
on it.  No test touches the network: downloads use ``file://`` URLs and sockets are disabled.
"""

import json
import pickle
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import zoo
from cli.zoo import zoo_cmd
from synth.errors import ConfigError, SmssynthError
from tests.zoo.test_data import make_store
from zoo import cards, registry
from zoo import models as M
from zoo.cards import HUB_LICENSES, parse_front_matter
from zoo.checkpoint import Normalization, describe_store, read_metadata, save_checkpoint, sha256_file
from zoo.data import DataConfig, SmsDataset
from zoo.errors import CheckpointError, ChecksumError, UnknownWeightsError
from zoo.train.losses import LossConfig, SmsLoss
from zoo.metrics import nmse, psnr, ssim, summarize
from zoo.models import build_model, count_parameters, model_config_dict
from zoo.cards import model_metrics
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
    # every entry has its card, and no card is left of an entry that is gone
    assert {p.name for p in PACKAGE_WEIGHTS.glob("*.md")} - {"README.md"} == {f"{w.name}.md" for w in entries}


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
    training = {k: v for k, v in meta["training"].items() if k != "normalization"}
    assert "lacks 'normalization'" in problems(meta={**meta, "training": training})
    assert "training.normalization is unusable" in problems(
        meta={**meta, "training": {**training, "normalization": {"quantile": 2.0}}})
    assert "no model-index results" in problems(meta={**meta, "metrics": {"val": None}})
    assert "does not render" in problems(meta={**meta, "card": {"license": "not-a-hub-id"}})
    (folder / f"{NAME}.md").write_text("---\nlicense: mit\n---\nstale\n")
    assert "out of date" in problems()
    (folder / f"{NAME}.md").unlink()
    assert "model card unreadable" in problems()


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


def test_load_takes_a_name_a_weights_record_or_a_path(temp_registry, trained, monkeypatch):
    folder, entry = temp_registry
    w = get_weights(NAME, weights_dir=folder)
    assert w.folder == folder
    model, meta = load(w)  # the record knows its folder
    assert same_weights(model, trained[0]) and not model.training and meta == entry.meta
    assert model.normalization == w.normalization == Normalization(0.99)
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(folder))
    for spec in (NAME, zoo.get_weights(NAME), trained[1], str(trained[1])):
        model, meta = zoo.load(spec)
        assert same_weights(model, trained[0]) and not model.training and meta["sha256"] == entry.sha256
    with pytest.raises(TypeError, match="a name or a zoo.Weights"):
        zoo.load(3)
    # a Weights record is hash-checked against its entry like a name
    (folder / entry.file).write_bytes((folder / entry.file).read_bytes()[:-1] + b" ")
    with pytest.raises(ChecksumError):
        zoo.load(w)


def test_builders_take_the_architecture_from_the_weights(temp_registry, trained, monkeypatch):
    folder, entry = temp_registry
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(folder))
    assert M.sms_crnn().config.n_filters != 4  # so the tiny config below can only come from the metadata
    for net in (M.sms_crnn(weights=NAME), M.build_model("sms-crnn", weights=zoo.get_weights(NAME)),
                M.sms_crnn(weights=trained[1]), M.sms_crnn(weights=NAME, n_filters=4),
                M.build_model("sms-crnn", {"n_iterations": 2}, weights=NAME)):
        assert same_weights(net, trained[0]) and not net.training
        assert M.model_config_dict(net) == entry.meta["model"]["config"] and net.normalization == entry.normalization
    with pytest.raises(ConfigError, match=r"conflicts .* n_filters=8 \(weights: 4\)"):
        M.sms_crnn(weights=NAME, n_filters=8)
    with pytest.raises(ConfigError, match="for the architecture 'sms-crnn', not 'conv3d'"):
        M.conv3d(weights=NAME)
    with pytest.raises(ConfigError, match="unknown config key"):
        M.sms_crnn(weights=NAME, nope=1)
    with pytest.raises(UnknownWeightsError, match="neither registered"):
        M.sms_crnn(weights="nope")
    fresh = M.sms_crnn(weights=None, n_filters=4, n_iterations=2)
    assert fresh.training and not same_weights(fresh, trained[0])
    assert M.get_model_weights("sms-crnn") == [entry] and M.get_model_weights("conv3d") == []


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


def test_downloads_go_through_torch_hub_then_the_full_hash(temp_registry, trained, tmp_path, monkeypatch):
    import torch.hub

    folder, entry = temp_registry
    source = tmp_path / "served" / "w.safetensors"
    source.parent.mkdir()
    shutil.copyfile(folder / entry.file, source)
    remote = url_registry(folder, entry, source, tmp_path)
    real, calls = torch.hub.download_url_to_file, []

    def spy(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        real(url, dst, hash_prefix=hash_prefix, progress=False)

    monkeypatch.setattr(torch.hub, "download_url_to_file", spy)
    assert same_weights(load(NAME, weights_dir=remote)[0], trained[0])
    assert calls == [(source.as_uri(), entry.sha256)]

    # whatever the downloader hands back is hashed again in full before it enters the cache
    shutil.rmtree(tmp_path / "cache")
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, dst, **kw: Path(dst).write_bytes(b"x"))
    with pytest.raises(ChecksumError, match="not kept"):
        load(NAME, weights_dir=remote)
    assert not list((tmp_path / "cache").rglob("*.safetensors*"))


# --- model cards --------------------------------------------------------------------------------


def test_shipped_cards_are_hub_readable_and_up_to_date():
    for w in read_registry():
        text = registry.model_card(w)
        assert text.startswith("---\n")
        fm = yaml.safe_load(text.split("---\n")[1])  # plain YAML, as the Hub reads it
        assert fm == parse_front_matter(text)
        for key in ("license", "library_name", "tags", "datasets", "pipeline_tag", "model-index"):
            assert fm[key], key
        assert fm["license"] in HUB_LICENSES and fm["library_name"] == "smssynth" and w.architecture in fm["tags"]
        # one result per metrics group of the model (validation during training, test sets after it)
        ours, _ = model_metrics(w.meta)
        results = fm["model-index"][0]["results"]
        assert len(results) == len(ours) >= 1, w.name
        for result, (group, recorded) in zip(results, ours.items()):
            got = {m["type"]: m["value"] for m in result["metrics"]}
            assert got == pytest.approx({k: recorded[k]["mean"] for k in ("nmse", "psnr", "ssim")}, abs=1e-6)
            assert result["dataset"]["split"] == {"val": "validation"}.get(group, group)
        for needle in ("## Training data", "## Training", "| steps |", "| time |", "## Evaluation",
                       "What it was checked on:", "## Licence", "## Input normalisation", w.sha256):
            assert needle in text, needle
        assert (PACKAGE_WEIGHTS / f"{w.name}.md").read_text() == text + "\n"  # shipped card == rendering


def test_card_says_how_the_training_data_was_drawn(trained, tmp_path):
    """On-the-fly synthesis and the augmentations appear in the card's training-data table
    (and nothing is claimed for a checkpoint that records neither)."""
    meta = read_metadata(trained[1])
    data = {**meta["data"], "data_config": {**(meta["data"].get("data_config") or {}),
                                            "synthesis": "on-the-fly", "augment": ["flip", "gamma"]}}
    ck = save_checkpoint(tmp_path / "aug", trained[0], model_name="sms-crnn", model_config=meta["model"]["config"],
                         training={"command": "train", "step": 3, "seconds": 1.0}, data=data, metrics={})
    text = registry.model_card(ck)
    assert "| synthesis | on-the-fly |" in text and "| augmentation | flip, gamma |" in text
    bare = {**meta["data"], "data_config": {"coil_mode": "per-coil"}}
    ck = save_checkpoint(tmp_path / "bare", trained[0], model_name="sms-crnn", model_config=meta["model"]["config"],
                         training={"command": "train", "step": 3, "seconds": 1.0}, data=bare, metrics={})
    text = registry.model_card(ck)
    assert "| augmentation |" not in text and "| synthesis |" not in text


def test_card_of_a_finetune_names_its_base_model(temp_registry, trained, tmp_path):
    folder, entry = temp_registry
    parent = {"source": NAME, "name": NAME, "model": "sms-crnn", "sha256": entry.sha256, "registry": True}
    meta = read_metadata(trained[1])
    ft = save_checkpoint(tmp_path / "ft", trained[0], model_name="sms-crnn", model_config=meta["model"]["config"],
                         training={"command": "finetune", "step": 3, "seconds": 1.5, "parent": parent},
                         data=meta["data"], metrics={"test": {"psnr": 31.0, "ssim": 0.9}})
    fm = parse_front_matter(registry.model_card(ft))
    assert fm["base_model"] == NAME and fm["base_model_relation"] == "finetune"
    assert fm["model-index"][0]["name"] == "ft" and fm["model-index"][0]["results"][0]["dataset"]["split"] == "test"
    assert parse_front_matter(registry.model_card(ft, namespace="org"))["base_model"] == f"org/{NAME}"
    # a parent that is a plain file has no Hub id: described in the card's text only
    fm = parse_front_matter(registry.model_card(trained[1]))
    assert "base_model" not in fm and fm["license"] == "other" and fm["datasets"] == ["tiny.zarr"]
    assert cards.hub_license({"licence": "CC0-1.0 (weights)"}) == {"license": "cc0-1.0"}
    with pytest.raises(CheckpointError, match="front matter"):
        parse_front_matter("# no front matter\n")


def test_cli_card_prints_and_exports_an_uploadable_folder(temp_registry, trained, monkeypatch, tmp_path):
    folder, entry = temp_registry
    monkeypatch.setenv(registry.WEIGHTS_DIR_ENV, str(folder))
    runner = CliRunner()
    out = runner.invoke(zoo_cmd, ["card", NAME])
    assert out.exit_code == 0, out.output
    assert parse_front_matter(out.output)["license"] == "cc0-1.0" and f"# {NAME}" in out.output

    dest = tmp_path / "hub"
    out = runner.invoke(zoo_cmd, ["card", NAME, "--out", str(dest)])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in dest.iterdir()) == ["README.md", f"{NAME}.json", f"{NAME}.safetensors"]
    assert sha256_file(dest / f"{NAME}.safetensors") == entry.sha256
    assert json.loads((dest / f"{NAME}.json").read_text()) == entry.meta
    assert (dest / "README.md").read_text() == registry.model_card(NAME) + "\n"
    model, meta = zoo.load(dest / NAME)  # the folder is a checkpoint that loads by path, normalisation included
    assert same_weights(model, trained[0]) and model.normalization == entry.normalization

    out = runner.invoke(zoo_cmd, ["card", NAME, "--out", str(dest)])
    assert out.exit_code == 2 and "--overwrite" in out.output  # a refused --out is a usage error
    assert runner.invoke(zoo_cmd, ["card", NAME, "--out", str(dest), "--overwrite"]).exit_code == 0
    (dest / "notes.txt").write_text("mine")
    out = runner.invoke(zoo_cmd, ["card", NAME, "--out", str(dest), "--overwrite"])
    assert out.exit_code == 2 and "other files" in out.output and (dest / "notes.txt").read_text() == "mine"

    out = runner.invoke(zoo_cmd, ["card", str(trained[1]), "--out", str(tmp_path / "ck"), "--name", "my-model"])
    assert out.exit_code == 0, out.output
    assert parse_front_matter((tmp_path / "ck" / "README.md").read_text())["model-index"][0]["name"] == "my-model"
    assert sha256_file(tmp_path / "ck" / "my-model.safetensors") == sha256_file(trained[1])
    out = runner.invoke(zoo_cmd, ["card", "nope"])
    assert out.exit_code == 2 and NAME in out.output and "Traceback" not in out.output


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


def test_register_adds_test_metrics_that_the_card_shows(trained, tmp_path):
    folder = tmp_path / "weights"
    test = {"psnr": {"mean": 31.25, "sd": 0.5, "n": 7}, "ssim": {"mean": 0.912, "sd": 0.01, "n": 7},
            "nmse": {"mean": 0.0123, "sd": 0.001, "n": 7}}
    zf = {"psnr": {"mean": 24.5, "sd": 0.4, "n": 7}}
    entry = register_checkpoint(trained[1], NAME, licence="CC0-1.0", description="tiny", weights_dir=folder,
                                metrics={"test": test, "zero-filled": zf})
    assert entry.meta["metrics"]["test"] == test and entry.meta["metrics"]["zero-filled"] == zf
    assert "train" in entry.meta["metrics"]  # the training record's groups stay
    card = (folder / f"{NAME}.md").read_text()
    assert "31.25" in card and "24.5" in card
    assert not validate_weights(read_registry(folder)[0], weights_dir=folder)
    with pytest.raises(CheckpointError, match="metrics must map"):
        register_checkpoint(trained[1], "other", licence="x", description="y", weights_dir=folder,
                            metrics={"test": 3})


def test_card_names_the_store_each_metric_was_measured_on(trained, tmp_path):
    """Test metrics added at registration come from a test store, not the training store: the
    card's ``evaluated_on`` names it in the evaluation table and in the Hub's model-index."""
    folder = tmp_path / "weights"
    test = {"psnr": {"mean": 31.25, "sd": 0.5, "n": 7}}
    entry = register_checkpoint(trained[1], NAME, licence="CC0-1.0", description="tiny", weights_dir=folder,
                                metrics={"test": test, "zero-filled": {"psnr": {"mean": 24.5, "sd": 0.4, "n": 7}}},
                                card={"evaluated_on": {"test": "held-out.zarr", "baselines": "held-out.zarr"}})
    train_store = entry.meta["data"]["store"]
    card = (folder / f"{NAME}.md").read_text()
    rows = {ln.split(" | ")[0]: ln.split(" | ")[1] for ln in card.splitlines() if ln.startswith(f"| {NAME} (")
            or ln.startswith("| zero-filled |")}
    assert rows[f"| {NAME} (test)"] == "held-out.zarr" and rows["| zero-filled"] == "held-out.zarr"
    assert rows[f"| {NAME} (train)"] == train_store  # training-time metrics stay on the training store
    results = {r["dataset"]["split"]: r["dataset"]["name"] for r in
               parse_front_matter(card)["model-index"][0]["results"]}
    assert results == {"test": "held-out.zarr", "train": train_store}
    with pytest.raises(CheckpointError, match="evaluated_on"):
        register_checkpoint(trained[1], "other", licence="x", description="y", weights_dir=folder,
                            card={"evaluated_on": {"test": 3}})


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


def test_finetuning_refuses_a_parent_with_another_normalisation(trained, tmp_path):
    """The training loop normalises with NORM_QUANTILE: a parent trained otherwise would be fed wrongly."""
    from zoo.train import NORM_QUANTILE, load_parent

    meta = read_metadata(trained[1])
    odd = save_checkpoint(tmp_path / "odd", trained[0], model_name="sms-crnn", model_config=meta["model"]["config"],
                          training={"step": 2}, data=meta["data"], metrics=meta["metrics"],
                          normalization=Normalization(0.5))
    with pytest.raises(CheckpointError, match=rf"quantile 0.5 .* normalises with {NORM_QUANTILE:g}"):
        load_parent(odd)
    model, parent = load_parent(trained[1])
    assert same_weights(model, trained[0]) and parent["name"] == "tiny"
