"""Pseudonyms for patients, studies and series: keyed hashes, never the identifiers themselves.

Everything smssynth returns, logs, raises or stores names a series as ``se-<16 hex>``, a study
as ``st-...`` and a patient as ``pt-...``: the first 64 bits of HMAC-SHA256(salt, value).  With
a secret salt the keys cannot be reversed by hashing candidate UIDs or patient IDs (a plain hash
could: UIDs and IDs are guessable); with the same salt the same input always gets the same key,
so stores made on different days can be joined.

The salt comes from, in order: ``--salt``; the environment variable ``SMSSYNTH_SALT``; a
per-user secret file ``$XDG_CONFIG_HOME/smssynth/salt`` (default ``~/.config/smssynth/salt``),
created on first use with 32 random bytes and mode 0600.  Share the salt only with those who
may link the pseudonyms back to the source data.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from synth.errors import ConfigError

SALT_ENV = "SMSSYNTH_SALT"
SALT_BYTES = 32
KEY_HEX = 16  # 64 bits: collisions among a million series have probability ~3e-8


def salt_path() -> Path:
    """The per-user salt file: ``$XDG_CONFIG_HOME/smssynth/salt`` or ``~/.config/smssynth/salt``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "smssynth" / "salt"


def resolve_salt(value: str | None = None) -> bytes:
    """Return the salt: ``value`` (from ``--salt``), else ``$SMSSYNTH_SALT``, else the salt file.

    Text salts are used as their UTF-8 bytes.  The salt file is created when absent (32 random
    bytes, mode 0600, in a 0700 folder); an existing one is read as raw bytes.

    Raises
    ------
    ConfigError
        The salt file exists but is empty or unreadable, or cannot be created.
    """
    if value:
        return value.encode("utf-8")
    env = os.environ.get(SALT_ENV)
    if env:
        return env.encode("utf-8")
    return _salt_file(salt_path())


def _salt_file(path: Path) -> bytes:
    fix = f"set {SALT_ENV} or pass --salt, or delete {path} to have a new one made"
    if not path.exists():
        try:
            _create_salt_file(path)
        except OSError as e:
            raise ConfigError(
                f"cannot create the salt file {path} ({e.strerror or e}); set {SALT_ENV} or pass --salt"
            ) from None
    try:
        salt = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the salt file {path} ({e.strerror or e}); {fix}") from None
    if not salt:
        raise ConfigError(f"the salt file {path} is empty; {fix}")
    return salt


def _create_salt_file(path: Path) -> None:
    """Write 32 random bytes to ``path`` atomically (mode 0600); a concurrent creator wins."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".salt.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SALT_BYTES))
            f.flush()
            os.fsync(f.fileno())
        # link() never replaces: if two processes race, both end up reading the same winner's
        # salt, where rename() would let the loser's pseudonyms silently differ.
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)


def pseudonym(value: str, salt: bytes, prefix: str = "") -> str:
    """``prefix`` + the first 16 hex digits of HMAC-SHA256(``salt``, ``value``); deterministic.

    Parameters
    ----------
    value : the identifier to hide (a UID, a patient ID...), hashed as UTF-8.
    salt : the secret key from :func:`resolve_salt`; must be non-empty bytes.
    prefix : prepended verbatim, e.g. ``"se-"`` for series.
    """
    if not isinstance(salt, (bytes, bytearray)) or not salt:
        raise ConfigError(f"the pseudonym salt must be non-empty bytes, got {type(salt).__name__}")
    digest = hmac.new(bytes(salt), str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return prefix + digest[:KEY_HEX]
