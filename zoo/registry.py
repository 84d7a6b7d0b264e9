"""Pretrained weights: a typed registry in the manner of torchvision's ``WeightsEnum``.

The registry is data, shipped with the package::

    zoo/weights/registry.json       a JSON list of entries {name, file, sha256, meta, url}
    zoo/weights/NAME.safetensors    the weights (safetensors, never pickle)
    zoo/weights/NAME.json           the checkpoint metadata (== the entry's meta)
    zoo/weights/NAME.md             its model card (:mod:`zoo.cards`, rendered from the metadata)

Each entry is a :class:`Weights`: the weights file, its full SHA-256, and the checkpoint's
metadata (architecture name and config, parameter count, training data, training settings,
metrics, licence, description).  :func:`load` builds the architecture from that metadata
(``zoo.models.build_model``), so weights and code cannot drift, and checks the file's hash
before use (:func:`zoo.checkpoint.load_checkpoint`).  ``tests/zoo/test_registry.py`` validates
every entry (:func:`validate_weights`: required keys, parameter count recomputed from the built
model, file hash, the card), like torchvision's ``test_schema_meta_validation``.

Three ways in, as torchvision's ``get_model`` / ``resnet50(weights=...)``::

    model, meta = zoo.load("NAME")                        # or a Weights, or a checkpoint path
    model = zoo.models.sms_crnn(weights="NAME")           # the builder takes the config from the weights
    model = zoo.models.build_model("sms-crnn", weights=zoo.get_weights("NAME"))

Each returns the model in eval mode with ``model.normalization``, the input normalisation it was
trained with (:class:`zoo.checkpoint.Normalization`).  :func:`model_card` and
:func:`export_card` (``smssynth zoo card``) write a Hugging Face Hub model card from the metadata.

Shipped weights load offline.  An entry may instead (or also) give a ``url``: the file is then
downloaded only when it is not shipped (``torch.hub.download_url_to_file``, with the SHA-256 as
its hash prefix, then the full SHA-256 checked again before the file enters the cache), into
``$SMSSYNTH_CACHE`` (default ``~/.cache/smssynth``) under ``weights/``; nothing is fetched at
import time.  ``$SMSSYNTH_WEIGHTS_DIR`` (or the ``weights_dir`` argument) points the registry
at another folder (tests; a site's private weights).

Names: :func:`list_models` lists *pretrained weights* names; the architectures they use are
``zoo.models.list_models()``.  Maintainers add weights with :func:`register_checkpoint`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, ChecksumError, ConfigError, UnknownWeightsError

__all__ = [
    "CACHE_ENV",
    "REQUIRED_META",
    "WEIGHTS_DIR_ENV",
    "Weights",
    "build_from_weights",
    "card_path",
    "export_card",
    "get_weights",
    "list_models",
    "load",
    "model_card",
    "read_registry",
    "register_checkpoint",
    "resolve_cache_dir",
    "resolve_weights_dir",
    "validate_weights",
    "weights_path",
    "write_card",
]

WEIGHTS_DIR_ENV = "SMSSYNTH_WEIGHTS_DIR"
CACHE_ENV = "SMSSYNTH_CACHE"
REGISTRY_FILE = "registry.json"
_PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENTRY_KEYS = {"name", "file", "sha256", "meta", "url"}
_URL_SCHEMES = ("https://", "http://", "file://")

# metadata an entry must carry: the checkpoint's keys (zoo.checkpoint.REQUIRED_KEYS) + licence, description
REQUIRED_META = (
    "format", "format_version", "model", "training", "data", "metrics", "software", "sha256", "created",
    "licence", "description",
)
REQUIRED_MODEL = ("name", "config", "n_parameters")
REQUIRED_DATA = ("store", "format", "format_version", "dims", "params", "n_examples", "split")
REQUIRED_SOFTWARE = ("smssynth", "torch", "python")


@dataclass(frozen=True)
class Weights:
    """One registered set of pretrained weights.

    Attributes
    ----------
    name : registry name (lower case, digits, ``.``, ``_``, ``-``).
    file : the ``.safetensors`` file, relative to the weights folder.
    sha256 : full hex SHA-256 of that file.
    meta : the checkpoint's JSON metadata plus ``licence`` and ``description``
        (``meta["model"]`` = ``{"name", "config", "n_parameters"}``).
    url : optional download source, used only when the file is not shipped.
    folder : the weights folder the entry was read from (not part of the entry; lets
        ``zoo.load(weights)`` find the file without being told the folder again).
    """

    name: str
    file: str
    sha256: str
    meta: dict = field(hash=False)
    url: str | None = None
    folder: Path | None = field(default=None, compare=False, repr=False)

    @property
    def architecture(self) -> str:
        """Registered model name (``zoo.models``) the weights are for."""
        return self.meta["model"]["name"]

    @property
    def n_parameters(self) -> int:
        return int(self.meta["model"]["n_parameters"])

    @property
    def config(self) -> dict[str, Any]:
        """The architecture's config the weights were trained with (``meta["model"]["config"]``)."""
        return dict(self.meta["model"].get("config") or {})

    @property
    def normalization(self):
        """The input normalisation the weights expect (:class:`zoo.checkpoint.Normalization`),
        like torchvision's ``weights.transforms()``."""
        from zoo.checkpoint import Normalization

        return Normalization.from_meta(self.meta, source=f"weights {self.name!r}")

    def to_entry(self) -> dict[str, Any]:
        """The registry.json entry."""
        return {"name": self.name, "file": self.file, "sha256": self.sha256, "url": self.url, "meta": self.meta}


# --- locations ----------------------------------------------------------------------------------


def resolve_weights_dir(path: str | Path | None = None) -> Path:
    """The registry folder: ``path``, else ``$SMSSYNTH_WEIGHTS_DIR``, else the package's ``zoo/weights``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(env) if env else _PACKAGE_WEIGHTS


def resolve_cache_dir(path: str | Path | None = None) -> Path:
    """Download cache: ``path``, else ``$SMSSYNTH_CACHE``, else ``~/.cache/smssynth``."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "smssynth"


# --- reading ------------------------------------------------------------------------------------


def _entry_to_weights(entry: Any, where: Path, i: int) -> Weights:
    def bad(msg):
        return CheckpointError(f"{where}: entry {i}: {msg}; fix the registry (or restore it from the package)")

    if not isinstance(entry, dict):
        raise bad(f"must be an object, found {type(entry).__name__}")
    missing = sorted({"name", "file", "sha256", "meta"} - set(entry))
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if missing or unknown:
        raise bad(f"missing keys {missing}, unknown keys {unknown}; entries have {sorted(_ENTRY_KEYS)}")
    name, file, sha, meta, url = (entry.get(k) for k in ("name", "file", "sha256", "meta", "url"))
    if not (isinstance(name, str) and _NAME.match(name)):
        raise bad(f"name {name!r} must match {_NAME.pattern}")
    if not (isinstance(file, str) and file.endswith(".safetensors") and "/" not in file and "\\" not in file
            and not file.startswith(".")):
        raise bad(f"file {file!r} must be a plain .safetensors file name inside the weights folder")
    if not (isinstance(sha, str) and _SHA256.match(sha)):
        raise bad(f"sha256 {sha!r} must be 64 lower-case hex digits")
    if not (isinstance(meta, dict) and isinstance(meta.get("model"), dict)):
        raise bad("meta must be an object with a 'model' object")
    if url is not None and not (isinstance(url, str) and url.startswith(_URL_SCHEMES)):
        raise bad(f"url must be null or start with one of {_URL_SCHEMES}, got {url!r}")
    return Weights(name=name, file=file, sha256=sha, meta=meta, url=url, folder=where.parent)


def read_registry(weights_dir: str | Path | None = None) -> list[Weights]:
    """All entries of the registry, validated for their schema (an absent registry.json is empty)."""
    path = resolve_weights_dir(weights_dir) / REGISTRY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); restore the registry from the package"
        ) from None
    if not isinstance(entries, list):
        raise CheckpointError(f"{path}: must hold a JSON list of entries, found {type(entries).__name__}")
    out = [_entry_to_weights(e, path, i) for i, e in enumerate(entries)]
    names = [w.name for w in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CheckpointError(f"{path}: names registered twice: {dupes}; keep one entry per name")
    return out


def list_models(*, weights_dir: str | Path | None = None) -> list[str]:
    """Names of the registered pretrained weights, sorted (architectures: ``zoo.models.list_models``)."""
    return sorted(w.name for w in read_registry(weights_dir))


def get_weights(name: str, *, weights_dir: str | Path | None = None) -> Weights:
    """The :class:`Weights` registered as ``name`` (UnknownWeightsError, a KeyError, lists the known ones)."""
    for w in read_registry(weights_dir):
        if w.name == name:
            return w
    known = list_models(weights_dir=weights_dir)
    raise UnknownWeightsError(
        f"no pretrained weights named {name!r}; registered: {known or 'none yet'}"
        + ("" if known else " (train a model and add it with zoo.registry.register_checkpoint)")
    )


# --- files --------------------------------------------------------------------------------------


def _download(url: str, dest: Path, sha256: str) -> None:
    """Fetch ``url`` to ``dest``, refusing it unless its SHA-256 is ``sha256``.

    ``torch.hub.download_url_to_file`` streams to a temporary file and checks the hash as a
    prefix (here: all of it); the file it produces is then hashed again in full before it is
    renamed to ``dest``, so the cache never holds bytes whose hash was not checked.
    """
    from torch.hub import download_url_to_file

    from zoo.checkpoint import sha256_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    mismatch = None
    try:
        # only _URL_SCHEMES reach here (entries are validated on read); tests use file://
        download_url_to_file(url, tmp, hash_prefix=sha256, progress=sys.stderr.isatty())
        actual = sha256_file(tmp)
        if actual != sha256:
            mismatch = actual
        else:
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
    except RuntimeError as e:  # torch.hub's hash-prefix refusal: 'invalid hash value (expected ..., got "HEX")'
        found = re.search(r'got "([0-9a-f]{64})"', str(e))
        if found is None:
            raise
        mismatch = found.group(1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot download {url} ({e}); check the connection, or put the file at {dest} yourself"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    if mismatch is not None:
        raise ChecksumError(
            f"{url}: downloaded file has SHA-256 {mismatch}, the registry expects {sha256}; it was not "
            f"kept. The source changed or the transfer was corrupted: try again, or fix the entry's url"
        )


def weights_path(
    weights: Weights, *, weights_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The local ``.safetensors`` of ``weights``: the shipped file, else a verified download in the cache.

    The weights folder is ``weights_dir``, else the one the entry was read from, else the default.
    A cached copy is re-hashed before use and fetched again if it differs; a ``.json`` holding
    the entry's metadata is written beside it so that it is a complete checkpoint.
    """
    from zoo.checkpoint import sha256_file

    folder = resolve_weights_dir(weights_dir if weights_dir is not None else weights.folder)
    shipped = folder / weights.file
    if shipped.is_file() or weights.url is None:
        if not shipped.is_file():
            raise CheckpointError(
                f"{shipped}: weights {weights.name!r} are registered but their file is not shipped and the "
                f"entry has no url; reinstall smssynth or restore the file"
            )
        return shipped
    cached = resolve_cache_dir(cache_dir) / "weights" / f"{weights.name}-{weights.sha256[:16]}.safetensors"
    if not (cached.is_file() and sha256_file(cached) == weights.sha256):
        _download(weights.url, cached, weights.sha256)
    meta_path = cached.with_name(cached.name[: -len(".safetensors")] + ".json")
    meta_path.write_text(json.dumps(weights.meta, indent=2) + "\n", encoding="utf-8")
    return cached


def _resolve(spec, *, weights_dir, cache_dir, what: str = "zoo.load") -> tuple[Path, str | None, Weights | None]:
    """``(checkpoint path, expected SHA-256 or None, Weights or None)`` for a Weights, name or path."""
    from zoo.checkpoint import checkpoint_paths

    if isinstance(spec, Weights):
        return weights_path(spec, weights_dir=weights_dir, cache_dir=cache_dir), spec.sha256, spec
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"{what} takes registered weights (a name or a zoo.Weights) or a checkpoint path, "
                        f"got {type(spec).__name__}")
    if isinstance(spec, str) and spec in list_models(weights_dir=weights_dir):
        w = get_weights(spec, weights_dir=weights_dir)
        return weights_path(w, weights_dir=weights_dir, cache_dir=cache_dir), w.sha256, w
    st_path, json_path = checkpoint_paths(spec)
    if st_path.exists() or json_path.exists():
        return st_path, None, None
    known = list_models(weights_dir=weights_dir)
    raise UnknownWeightsError(
        f"{str(spec)!r} is neither registered pretrained weights (registered: {known or 'none yet'}) "
        f"nor a checkpoint path (no {st_path} or {json_path})"
    )


def load(
    weights: Weights | str | os.PathLike,
    *,
    device="cpu",
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
):
    """Load pretrained weights: ``(model, metadata)``, the model in eval mode on ``device``.

    ``weights`` is a registry name, a :class:`Weights` (``zoo.get_weights(NAME)``), or a
    checkpoint path (with or without ``.safetensors``).  The architecture is built from the
    metadata and the file's SHA-256 checked against the registry entry (names, Weights) and the
    checkpoint's JSON before anything is loaded.  The model carries ``model.normalization``
    (:class:`zoo.checkpoint.Normalization`): feed it ``model.normalization.normalize(batch)``.
    ``metadata`` is the checkpoint's JSON (for registered weights, the entry's meta, with
    ``licence`` and ``description``).

    A pair, not the model alone (torchvision's ``get_model`` returns the model only), because the
    metadata says what the weights are for: coil mode, training data, metrics.  For the model
    alone use the builders: ``zoo.models.build_model(arch, weights=...)``.  A registry name wins
    over a same-named relative path.  Unknown names raise UnknownWeightsError listing the
    registered ones; other argument types raise TypeError.
    """
    from zoo.checkpoint import load_checkpoint

    path, expected, _ = _resolve(weights, weights_dir=weights_dir, cache_dir=cache_dir)
    return load_checkpoint(path, device=device, expected_sha256=expected)


def _spec_meta(spec, *, weights_dir) -> tuple[dict, str]:
    """The metadata of a Weights, name or path without loading the weights, and a label for messages."""
    from zoo.checkpoint import checkpoint_paths, read_metadata

    if isinstance(spec, Weights):
        return spec.meta, f"weights {spec.name!r}"
    if isinstance(spec, str) and spec in list_models(weights_dir=weights_dir):
        return get_weights(spec, weights_dir=weights_dir).meta, f"weights {spec!r}"
    if isinstance(spec, (str, os.PathLike)):
        st_path, json_path = checkpoint_paths(spec)
        if json_path.exists() or st_path.exists():
            return read_metadata(spec), str(st_path)
    _resolve(spec, weights_dir=weights_dir, cache_dir=None, what="weights=")  # raises the right error
    raise AssertionError("unreachable")


def build_from_weights(
    architecture: str,
    weights: Weights | str | os.PathLike,
    config: dict[str, Any] | Any | None = None,
    *,
    device="cpu",
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
):
    """``zoo.models.build_model(architecture, config, weights=weights)``: the model alone, eval mode.

    The config comes from the weights' metadata.  An explicit ``config`` may repeat values of it
    but not contradict them (torchvision's ``_ovewrite_named_param``): a conflicting value, or
    weights of another architecture, raise ConfigError naming both and what to do.
    """
    import dataclasses

    from zoo.models import get_model_config_class, make_config

    meta, label = _spec_meta(weights, weights_dir=weights_dir)
    trained_for = meta["model"]["name"]
    if trained_for != architecture:
        raise ConfigError(
            f"{label} are for the architecture {trained_for!r}, not {architecture!r}; build "
            f"{trained_for!r} with them (zoo.models.build_model({trained_for!r}, weights=...)) or use zoo.load"
        )
    if config is not None:
        if dataclasses.is_dataclass(config) and not isinstance(config, type):
            if not isinstance(config, get_model_config_class(architecture)):
                make_config(architecture, config)  # raises its ConfigError for the wrong class
            given = dataclasses.asdict(config)
        elif isinstance(config, dict):
            make_config(architecture, config)  # unknown keys and bad values: the usual ConfigError
            given = dict(config)
        else:
            make_config(architecture, config)
            given = {}
        recorded = dataclasses.asdict(make_config(architecture, dict(meta["model"].get("config") or {})))
        conflicts = {k: (v, recorded.get(k)) for k, v in given.items() if recorded.get(k) != v}
        if conflicts:
            shown = ", ".join(f"{k}={v!r} (weights: {r!r})" for k, (v, r) in sorted(conflicts.items()))
            raise ConfigError(
                f"{label}: the config given conflicts with the one the weights were trained with: {shown}; "
                f"drop those options (the weights set the architecture), or pass weights=None for a fresh model"
            )
    model, _ = load(weights, device=device, weights_dir=weights_dir, cache_dir=cache_dir)
    return model


# --- model cards --------------------------------------------------------------------------------


def card_path(weights: Weights, *, weights_dir: str | Path | None = None) -> Path:
    """Where the shipped card of ``weights`` lives: ``NAME.md`` beside the weights file."""
    folder = resolve_weights_dir(weights_dir if weights_dir is not None else weights.folder)
    return folder / f"{weights.name}.md"


def model_card(
    weights: Weights | str | os.PathLike, *, weights_dir: str | Path | None = None, namespace: str | None = None
) -> str:
    """The Hugging Face Hub model card (``README.md`` text) of registered weights or a checkpoint.

    Rendered from the metadata alone (:func:`zoo.cards.render_card`); nothing is loaded or
    downloaded.  A checkpoint path is named after its file stem.
    """
    from zoo.cards import render_card
    from zoo.checkpoint import checkpoint_paths

    meta, _ = _spec_meta(weights, weights_dir=weights_dir)
    if isinstance(weights, Weights):
        name = weights.name
    elif isinstance(weights, str) and weights in list_models(weights_dir=weights_dir):
        name = weights
    else:
        name = checkpoint_paths(weights)[0].name[: -len(".safetensors")]
    return render_card(meta, name, namespace=namespace)


def export_card(
    weights: Weights | str | os.PathLike,
    out: str | Path,
    *,
    name: str | None = None,
    namespace: str | None = None,
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a folder to upload to the Hub as it is: ``NAME.safetensors``, ``NAME.json``, ``README.md``.

    ``name`` defaults to the registry name (or the checkpoint's file stem).  The weights are
    hash-checked (and fully loaded: an export is a checkpoint that loads) before they are copied,
    and the copy is hashed again.  ``out`` must not exist, or be empty, or hold an earlier export
    (only these three files) with ``overwrite``; anything else is refused, nothing deleted.
    """
    from zoo.cards import render_card
    from zoo.checkpoint import checkpoint_paths, load_checkpoint, sha256_file

    path, expected, entry = _resolve(weights, weights_dir=weights_dir, cache_dir=cache_dir, what="export_card")
    _, meta = load_checkpoint(path, expected_sha256=expected)
    if entry is not None:
        meta = entry.meta  # the registered record: the checkpoint's own plus licence and description
    default = entry.name if entry is not None else checkpoint_paths(path)[0].name[: -len(".safetensors")]
    name = default if name is None else name
    if not (isinstance(name, str) and _NAME.match(name)):
        raise CheckpointError(f"card name {name!r} must match {_NAME.pattern} (it names the files and the Hub repo)")
    out = Path(out)
    files = {f"{name}.safetensors", f"{name}.json", "README.md"}
    if out.exists():
        if not out.is_dir():
            raise CheckpointError(f"{out}: exists and is not a folder; choose another --out")
        present = {p.name for p in out.iterdir()}
        if present - files:
            raise CheckpointError(f"{out}: holds other files ({sorted(present - files)[:5]}); an export goes "
                                  f"into a new or empty folder: choose another --out")
        if present and not overwrite:
            raise CheckpointError(f"{out}: holds an earlier export ({sorted(present)}); pass --overwrite to "
                                  f"replace it")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out / f"{name}.safetensors")
    actual = sha256_file(out / f"{name}.safetensors")
    if actual != meta["sha256"]:
        raise ChecksumError(f"{out / (name + '.safetensors')}: the copy has SHA-256 {actual}, expected "
                            f"{meta['sha256']}; the disk or the source changed during the copy: run it again")
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(render_card(meta, name, namespace=namespace) + "\n", encoding="utf-8")
    return out


# --- validation and registration ----------------------------------------------------------------


def _meta_problems(meta: dict, sha256: str) -> list[str]:
    problems = [f"meta lacks {k!r}" for k in REQUIRED_META if k not in meta]
    for key, required in (("model", REQUIRED_MODEL), ("data", REQUIRED_DATA), ("software", REQUIRED_SOFTWARE)):
        sub = meta.get(key)
        if isinstance(sub, dict):
            problems += [f"meta[{key!r}] lacks {k!r}" for k in required if k not in sub]
        elif key in meta:
            problems.append(f"meta[{key!r}] must be an object")
    for key in ("training", "metrics"):
        if key in meta and not (isinstance(meta[key], dict) and meta[key]):
            problems.append(f"meta[{key!r}] must be a non-empty object")
    for key in ("licence", "description"):
        if key in meta and not (isinstance(meta[key], str) and meta[key].strip()):
            problems.append(f"meta[{key!r}] must be a non-empty string")
    if meta.get("sha256") != sha256:
        problems.append(f"meta sha256 {meta.get('sha256')} differs from the entry's {sha256}")
    if isinstance(meta.get("training"), dict):
        from zoo.checkpoint import Normalization

        if "normalization" not in meta["training"]:
            problems.append("meta['training'] lacks 'normalization' (the input normalisation the weights expect)")
        try:
            Normalization.from_meta(meta)
        except CheckpointError as e:
            problems.append(str(e))
    return problems


def _card_problems(weights: Weights, folder: Path, check_file: bool) -> list[str]:
    from zoo.cards import REQUIRED_FRONT_MATTER, parse_front_matter, render_card

    try:
        text = render_card(weights.meta, weights.name)
        fm = parse_front_matter(text)
    except Exception as e:  # any failure to render is a problem to report, not to raise
        return [f"model card does not render: {type(e).__name__}: {e}"]
    problems = [f"model card front matter lacks {k!r}" for k in REQUIRED_FRONT_MATTER if not fm.get(k)]
    index = fm.get("model-index") or [{}]
    if not any(r.get("metrics") for r in index[0].get("results", [])):
        problems.append("model card has no model-index results: meta['metrics'] holds no NMSE/PSNR/SSIM of the model")
    path = card_path(weights, weights_dir=folder)
    if check_file and (folder / weights.file).is_file():
        try:
            if path.read_text(encoding="utf-8") != text + "\n":
                problems.append(f"{path} is out of date with the metadata; regenerate it with "
                                f"zoo.registry.write_card({weights.name!r})")
        except OSError as e:
            problems.append(f"{path}: model card unreadable ({e}); write it with "
                            f"zoo.registry.write_card({weights.name!r})")
    return problems


def write_card(weights: Weights | str, *, weights_dir: str | Path | None = None) -> Path:
    """Maintainer tool: (re)write the shipped card ``NAME.md`` of registered weights from their metadata."""
    from zoo.cards import render_card

    w = weights if isinstance(weights, Weights) else get_weights(weights, weights_dir=weights_dir)
    path = card_path(w, weights_dir=weights_dir)
    path.write_text(render_card(w.meta, w.name) + "\n", encoding="utf-8")
    return path


def validate_weights(
    weights: Weights, *, weights_dir: str | Path | None = None, check_file: bool = True
) -> list[str]:
    """Problems with one entry (empty list = valid), the registry's test in function form.

    Checks: required metadata keys (:data:`REQUIRED_META` and their sub-keys); the architecture
    builds from ``meta["model"]`` and its parameter count, recomputed, equals
    ``meta["model"]["n_parameters"]``; with ``check_file``, the shipped file's SHA-256 equals the
    entry's and the shipped ``.json`` equals ``meta`` (an entry with only a ``url`` is not
    downloaded here: that is :func:`load`'s job); the input normalisation is recorded; the model
    card renders, its front matter parses as YAML with :data:`zoo.cards.REQUIRED_FRONT_MATTER`
    and model-index metrics, and with ``check_file`` the shipped ``NAME.md`` is that rendering.
    """
    from zoo.checkpoint import n_parameters, sha256_file
    from zoo.models import build_model

    problems = _meta_problems(weights.meta, weights.sha256)
    model_meta = weights.meta.get("model", {})
    try:
        n = n_parameters(build_model(model_meta.get("name"), model_meta.get("config")))
        if n != model_meta.get("n_parameters"):
            problems.append(f"built model has {n} parameters, meta records {model_meta.get('n_parameters')}")
    except Exception as e:  # any failure to build is a problem to report, not to raise
        problems.append(f"architecture does not build: {type(e).__name__}: {e}")
    folder = resolve_weights_dir(weights_dir if weights_dir is not None else weights.folder)
    problems += _card_problems(weights, folder, check_file)
    if check_file:
        shipped = folder / weights.file
        if shipped.is_file():
            actual = sha256_file(shipped)
            if actual != weights.sha256:
                problems.append(f"{shipped}: SHA-256 {actual}, entry says {weights.sha256}")
            side = shipped.with_name(shipped.name[: -len(".safetensors")] + ".json")
            try:
                if json.loads(side.read_text(encoding="utf-8")) != weights.meta:
                    problems.append(f"{side} differs from the entry's meta")
            except (OSError, json.JSONDecodeError) as e:
                problems.append(f"{side}: unreadable ({e})")
        elif weights.url is None:
            problems.append(f"{shipped}: not shipped and no url")
    return problems


def _write_registry(folder: Path, entries: list[Weights]) -> None:
    text = json.dumps([w.to_entry() for w in sorted(entries, key=lambda w: w.name)], indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{REGISTRY_FILE}.", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; the registry is package data others must read
    os.replace(tmp, folder / REGISTRY_FILE)


def register_checkpoint(
    checkpoint_path: str | Path,
    name: str,
    *,
    licence: str,
    description: str,
    url: str | None = None,
    card: dict[str, Any] | None = None,
    weights_dir: str | Path | None = None,
    overwrite: bool = False,
    metrics: dict[str, Any] | None = None,
) -> Weights:
    """Maintainer tool: add a trained checkpoint to the registry (files copied, entry appended).

    ``metrics`` adds groups to the metadata's ``metrics`` (e.g. ``{"test": {"psnr": {"mean":
    ..., "sd": ..., "n": ...}, ...}, "zero-filled": {...}}``: the model's and the baselines'
    results on a test set measured after training; :func:`zoo.cards.model_metrics`).

    The checkpoint is fully loaded first (hash, architecture, strict weights); then
    ``NAME.safetensors``, ``NAME.json`` (its metadata plus ``licence``, ``description``, the
    optional ``card`` record of :mod:`zoo.cards` -- Hub licence id, datasets, data licence,
    base model, what it was checked on -- and the input normalisation, made explicit for a
    checkpoint older than its record) and ``NAME.md`` (the model card) are written into the
    weights folder (default: the package's ``zoo/weights``, to commit) and the entry is added to
    ``registry.json``.  ``url`` records a download source for installations that do not ship
    the file.  Refuses an existing name unless ``overwrite``.
    """
    from zoo.checkpoint import checkpoint_paths, load_checkpoint

    if url is not None and not (isinstance(url, str) and url.startswith(_URL_SCHEMES)):
        raise CheckpointError(f"url must be None or start with one of {_URL_SCHEMES}, got {url!r}")
    if not (isinstance(name, str) and _NAME.match(name)):
        raise CheckpointError(f"weights name {name!r} must match {_NAME.pattern} (e.g. 'sms-crnn-cine-sms2-r4')")
    for key, value in (("licence", licence), ("description", description)):
        if not (isinstance(value, str) and value.strip()):
            raise CheckpointError(f"register_checkpoint: {key} must be a non-empty string, got {value!r}")
    folder = resolve_weights_dir(weights_dir)
    entries = read_registry(folder)
    if any(w.name == name for w in entries) and not overwrite:
        raise CheckpointError(
            f"{folder / REGISTRY_FILE}: {name!r} is already registered; pass overwrite=True to replace it"
        )

    st_src, _ = checkpoint_paths(checkpoint_path)
    model, meta = load_checkpoint(checkpoint_path)  # verifies everything a user's load would
    meta = {**meta, "licence": licence, "description": description,
            "training": {**meta["training"], "normalization": model.normalization.to_meta()}}
    if card is not None:
        meta["card"] = card
    if metrics is not None:
        if not isinstance(metrics, dict) or not all(isinstance(v, dict) for v in metrics.values()):
            raise CheckpointError(f"register_checkpoint: metrics must map group names to metric objects, got {metrics!r}")
        meta["metrics"] = {**(meta.get("metrics") or {}), **metrics}
    entry = Weights(name=name, file=f"{name}.safetensors", sha256=meta["sha256"], meta=meta, url=url, folder=folder)
    problems = validate_weights(entry, weights_dir=folder, check_file=False)
    if problems:
        raise CheckpointError(f"{st_src}: cannot register {name!r}: " + "; ".join(problems))

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(st_src, folder / entry.file)
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    write_card(entry, weights_dir=folder)
    problems = validate_weights(entry, weights_dir=folder)
    if problems:  # the copy itself went wrong (disk full, concurrent writer)
        raise CheckpointError(f"{folder}: registering {name!r} failed: " + "; ".join(problems))
    _write_registry(folder, [w for w in entries if w.name != name] + [entry])
    return entry
