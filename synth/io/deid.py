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

File and folder names are identifiers too: real exports name them after the patient
(``DOE_JOHN_12345/IM_DOE_JOHN.dcm``).  :class:`PathNames` names an input file in messages by its
path relative to the input it was found under, every component replaced by ``#`` + a short keyed
hash of it (``#5d0c2e91ab/#0f3e77c2d4.dcm``; a common extension is kept), unless the user asked to
see real paths (``--show-paths``).  Equal names get equal hashes, so one folder's files still
group visibly.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
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
        ``value`` is the empty string (an empty ``--salt`` never silently means the default), or the
        salt file exists but is empty or unreadable, or cannot be created.
    """
    if value is not None:
        if not value:
            raise ConfigError(
                f"--salt (or ${SALT_ENV}) is empty; give a non-empty secret, or leave both unset to use the "
                f"per-user salt file"
            )
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


PATH_HEX = 10  # hex digits per masked path component: 40 bits, enough to tell a folder's files apart
# Extensions that say what a file is and never who it is about; any other suffix (``DOE.JOHN``) is
# hashed with the rest of the name.
_PLAIN_EXTENSIONS = frozenset({
    ".dcm", ".dicom", ".dic", ".ima", ".img", ".raw", ".dat", ".bin", ".txt", ".csv", ".json", ".xml",
    ".yaml", ".yml", ".zip", ".gz", ".tar", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff",
    ".pdf", ".mat", ".nii", ".npy", ".npz", ".h5", ".zarr",
})


MASKED_PATHS_NOTE = ("file and folder names above are shown as #hashes (salted, one per path component), since "
                     "exports often name them after the patient; pass --show-paths to see the real paths")


class PathNames:
    """How messages name input files and folders: masked (the default) or as given.

    Parameters
    ----------
    inputs : the files and folders the user passed; a path is named relative to the folder that
        holds the input it lies under, so the input's own name is masked too.
    salt : the pseudonym salt (the hashes cannot be reversed by hashing guessed names without it).
    show : name paths as given (``--show-paths``, for a user on their own machine).

    Calling the object with a path returns its display name: with ``show`` the path itself,
    otherwise e.g. ``#5d0c2e91ab/#0f3e77c2d4.dcm`` (one ``#hash`` per component).
    """

    def __init__(self, inputs: Iterable[str | os.PathLike], salt: bytes, show: bool = False):
        self.salt, self.show = salt, bool(show)
        self._roots = sorted({os.path.abspath(os.fspath(p)) for p in inputs}, key=len, reverse=True)

    def __call__(self, path: str | os.PathLike) -> str:
        path = os.fspath(path)
        if self.show:
            return path
        full = os.path.abspath(path)
        for root in self._roots:  # the deepest input that holds it
            if full == root or full.startswith(root.rstrip(os.sep) + os.sep):
                parts = os.path.relpath(full, os.path.dirname(root) or os.sep).split(os.sep)
                break
        else:  # not under an input (e.g. their common folder): its own name only
            parts = [os.path.basename(full.rstrip(os.sep)) or os.sep]
        return "/".join(self.component(p, last=i == len(parts) - 1) for i, p in enumerate(parts))

    def component(self, name: str, last: bool = True) -> str:
        """``#`` + a keyed hash of one path component; a file's plain extension is kept."""
        stem, ext = os.path.splitext(name) if last else (name, "")
        if last and name.lower().endswith(".nii.gz"):  # NIfTI's compound extension says what, not who
            stem, ext = name[:-7], name[-7:]
        if ext.lower() not in _PLAIN_EXTENSIONS and ext.lower() != ".nii.gz":
            stem, ext = name, ""
        return "#" + pseudonym(f"path-component:{stem}", self.salt)[:PATH_HEX] + ext

    @property
    def note(self) -> str:
        """One line for a summary: how paths are shown and how to see them ('' with ``show``)."""
        return "" if self.show else MASKED_PATHS_NOTE
