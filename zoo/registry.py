"""Pretrained weights: a typed registry in the manner of torchvision's ``WeightsEnum``.

The registry is data, shipped with the package::

    zoo/weights/registry.json       a JSON list of entries {name, file, sha256, meta, url}
    zoo/weights/NAME.safetensors    the weights (safetensors, never pickle)
    zoo/weights/NAME.json           the checkpoint metadata (== the entry's meta)

Each entry is a :class:`Weights`: the weights file, its full SHA-256, and the checkpoint's
metadata (architecture name and config, parameter count, training data, training settings,
metrics, licence, description).  :func:`load` builds the architecture from that metadata
(``zoo.models.build_model``), so weights and code cannot drift, and checks the file's hash
before use (:func:`zoo.checkpoint.load_checkpoint`).  ``tests/zoo/test_registry.py`` validates
every entry (:func:`validate_weights`: required keys, parameter count recomputed from the built
model, file hash), like torchvision's ``test_schema_meta_validation``.

Shipped weights load offline.  An entry may instead (or also) give a ``url``: the file is then
downloaded only when it is not shipped, into ``$SMSSYNTH_CACHE`` (default
``~/.cache/smssynth``) under ``weights/``, and hash-checked before use; nothing is fetched at
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
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import CheckpointError, ChecksumError, UnknownWeightsError

__all__ = [
    "CACHE_ENV",
    "REQUIRED_META",
    "WEIGHTS_DIR_ENV",
    "Weights",
    "get_weights",
    "list_models",
    "load",
    "read_registry",
    "register_checkpoint",
    "resolve_cache_dir",
    "resolve_weights_dir",
    "validate_weights",
    "weights_path",
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
    """

    name: str
    file: str
    sha256: str
    meta: dict = field(hash=False)
    url: str | None = None

    @property
    def architecture(self) -> str:
        """Registered model name (``zoo.models``) the weights are for."""
        return self.meta["model"]["name"]

    @property
    def n_parameters(self) -> int:
        return int(self.meta["model"]["n_parameters"])

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
    return Weights(name=name, file=file, sha256=sha, meta=meta, url=url)


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
    """Fetch ``url`` to ``dest`` through a temporary file, refusing it unless its SHA-256 is ``sha256``."""
    import hashlib

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    try:
        # only _URL_SCHEMES reach here (entries are validated on read); tests use file://
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as src:  # noqa: S310
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        actual = h.hexdigest()
        if actual != sha256:
            raise ChecksumError(
                f"{url}: downloaded file has SHA-256 {actual}, the registry expects {sha256}; it was not "
                f"kept. The source changed or the transfer was corrupted: try again, or fix the entry's url"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        raise CheckpointError(
            f"cannot download {url} ({e}); check the connection, or put the file at {dest} yourself"
        ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def weights_path(
    weights: Weights, *, weights_dir: str | Path | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The local ``.safetensors`` of ``weights``: the shipped file, else a verified download in the cache.

    A cached copy is re-hashed before use and fetched again if it differs; a ``.json`` holding
    the entry's metadata is written beside it so that it is a complete checkpoint.
    """
    from zoo.checkpoint import sha256_file

    shipped = resolve_weights_dir(weights_dir) / weights.file
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


def load(
    name_or_path: str | Path,
    *,
    device="cpu",
    weights_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
):
    """Load pretrained weights by registry name, or a checkpoint by path: ``(model, metadata)``.

    The architecture is built from the metadata and the file's SHA-256 checked against the
    registry entry (names) or the checkpoint's JSON (paths) before anything is loaded; the
    model is returned in eval mode on ``device``.  A registry name wins over a same-named
    relative path.  Unknown names raise UnknownWeightsError listing the registered ones.
    """
    from zoo.checkpoint import checkpoint_paths, load_checkpoint

    if isinstance(name_or_path, str) and name_or_path in list_models(weights_dir=weights_dir):
        w = get_weights(name_or_path, weights_dir=weights_dir)
        path = weights_path(w, weights_dir=weights_dir, cache_dir=cache_dir)
        return load_checkpoint(path, device=device, expected_sha256=w.sha256)
    st_path, json_path = checkpoint_paths(name_or_path)
    if st_path.exists() or json_path.exists():
        return load_checkpoint(name_or_path, device=device)
    known = list_models(weights_dir=weights_dir)
    raise UnknownWeightsError(
        f"{str(name_or_path)!r} is neither registered pretrained weights (registered: {known or 'none yet'}) "
        f"nor a checkpoint path (no {st_path} or {json_path})"
    )


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
    return problems


def validate_weights(
    weights: Weights, *, weights_dir: str | Path | None = None, check_file: bool = True
) -> list[str]:
    """Problems with one entry (empty list = valid), the registry's test in function form.

    Checks: required metadata keys (:data:`REQUIRED_META` and their sub-keys); the architecture
    builds from ``meta["model"]`` and its parameter count, recomputed, equals
    ``meta["model"]["n_parameters"]``; with ``check_file``, the shipped file's SHA-256 equals the
    entry's and the shipped ``.json`` equals ``meta`` (an entry with only a ``url`` is not
    downloaded here: that is :func:`load`'s job).
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
    if check_file:
        folder = resolve_weights_dir(weights_dir)
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
    weights_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Weights:
    """Maintainer tool: add a trained checkpoint to the registry (files copied, entry appended).

    The checkpoint is fully loaded first (hash, architecture, strict weights); then
    ``NAME.safetensors`` and ``NAME.json`` (its metadata plus ``licence`` and ``description``)
    are written into the weights folder (default: the package's ``zoo/weights``, to commit) and
    the entry is added to ``registry.json``.  ``url`` records a download source for
    installations that do not ship the file.  Refuses an existing name unless ``overwrite``.
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
    _, meta = load_checkpoint(checkpoint_path)  # verifies everything a user's load would
    meta = {**meta, "licence": licence, "description": description}
    entry = Weights(name=name, file=f"{name}.safetensors", sha256=meta["sha256"], meta=meta, url=url)
    problems = validate_weights(entry, check_file=False)
    if problems:
        raise CheckpointError(f"{st_src}: cannot register {name!r}: " + "; ".join(problems))

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(st_src, folder / entry.file)
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    problems = validate_weights(entry, weights_dir=folder)
    if problems:  # the copy itself went wrong (disk full, concurrent writer)
        raise CheckpointError(f"{folder}: registering {name!r} failed: " + "; ".join(problems))
    _write_registry(folder, [w for w in entries if w.name != name] + [entry])
    return entry
