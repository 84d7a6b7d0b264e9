"""What ``--out`` may be, and what ``--overwrite`` may replace.

``--overwrite`` replaces only what is recognisably this project's output: a Zarr v3 group whose
root attributes name one of our formats (``smssynth.sms-kspace`` stores, ``smssynth.recon``
stores) and whose top level holds nothing but that format's entries (its arrays, ``zarr.json``
and temporary ``*.partial`` chunk files).  It never replaces an input of the same command nor a
folder that holds one, never a plain file, a symbolic link, or a folder with anything else in it
-- those are refused with a message that says what was found and what to do.

Replacing a local store does not remove the old one first: the new store is written beside it
(a hidden sibling folder, :func:`staging_path`), and only when the run has written something is
the old store swapped out and deleted (:class:`Replacement`).  If the run fails, the old store is
left as it was and the new one is removed.  Object-store URLs (``s3://...``) cannot be renamed
cheaply, so there the old store is deleted before the new run, and the log says so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from synth.errors import ConfigError, SmssynthError, StoreExistsError

log = logging.getLogger(__name__)

# format name -> the entries its top level may hold (besides zarr.json and *.partial files)
KNOWN_FORMATS: dict[str, frozenset[str] | None] = {}

STAGING_MARK = ".smssynth-new-"
RETIRED_MARK = ".smssynth-old-"


def register_format(name: str, entries: Iterable[str]) -> None:
    """Declare an output format that ``--overwrite`` may replace, with its top-level entries."""
    KNOWN_FORMATS[name] = frozenset(entries)


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str | Path) -> str:
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path


def _resolved(path: str | Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path)))).resolve()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_not_input(out: str | Path, inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse an output that is an input of the command or a folder holding one.

    ``inputs`` are local paths (URLs are skipped).  Raised whether or not ``--overwrite`` is given:
    writing a store there would delete (or mix into) the command's own input.
    """
    out = _local(out)
    if _is_url(out):
        return
    o = _resolved(out)
    for n, inp in enumerate(inputs, start=1):
        inp = _local(inp)
        if _is_url(inp):
            continue
        i = _resolved(inp)
        if _inside(i, o):
            what = "is" if i == o else "holds"
            # the input is named by its position, not its path: exports name folders after patients
            raise ConfigError(
                f"{option} {out} {what} an input of this command (input {n}); the output must be a new "
                f"path outside the inputs -- choose another {option}"
            )


def exists(path: str | Path, storage_options: dict | None = None) -> bool:
    """True when ``path`` exists and is not an empty folder."""
    path = _local(path)
    if not _is_url(path):
        p = Path(path)
        if p.is_symlink():
            return True
        return p.exists() and (not p.is_dir() or any(p.iterdir()))
    import fsspec  # optional, only for URLs

    fs, _, (root,) = fsspec.get_fs_token_paths(path, storage_options=storage_options)
    return fs.exists(root)


def recognise(path: str | Path, formats: Iterable[str], storage_options: dict | None = None) -> str:
    """The format name of the existing output at ``path``, or raise :class:`StoreExistsError`
    saying why ``--overwrite`` may not replace it."""
    path = _local(path)
    formats = tuple(formats)
    names = " or ".join(formats)
    refuse = (f"--overwrite only replaces an smssynth output ({names}), and {path} is not one: {{why}}. "
              f"Nothing was changed; move it away or choose another --out")
    if _is_url(path):
        import fsspec

        fs, _, (root,) = fsspec.get_fs_token_paths(path, storage_options=storage_options)
        try:
            meta = json.loads(fs.cat_file(f"{root.rstrip('/')}/zarr.json"))
            listing = [Path(p.rstrip("/")).name for p in fs.ls(root, detail=False)]
        except (OSError, ValueError) as e:
            raise StoreExistsError(refuse.format(why=f"no readable zarr.json ({type(e).__name__})")) from None
    else:
        p = Path(path)
        if p.is_symlink():
            raise StoreExistsError(refuse.format(why="it is a symbolic link (links are never followed)"))
        if not p.is_dir():
            raise StoreExistsError(refuse.format(why="it is a file, not a store folder"))
        try:
            meta = json.loads((p / "zarr.json").read_text())
        except FileNotFoundError:
            raise StoreExistsError(refuse.format(why="it is a folder without zarr.json")) from None
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise StoreExistsError(refuse.format(why=f"its zarr.json is unreadable ({type(e).__name__})")) from None
        listing = [e.name for e in p.iterdir()]
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        raise StoreExistsError(refuse.format(why="its zarr.json is not a Zarr v3 group"))
    fmt = (meta.get("attributes") or {}).get("format")
    if fmt not in formats or fmt not in KNOWN_FORMATS:
        raise StoreExistsError(refuse.format(why=f"its format is {fmt!r}"))
    allowed = KNOWN_FORMATS[fmt] | {"zarr.json"}
    foreign = sorted(n for n in listing if n not in allowed and not n.endswith(".partial"))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise StoreExistsError(refuse.format(why=f"it also holds entries that are not part of a {fmt} store ({shown})"))
    if not _is_url(path):
        for name in listing:
            sub = Path(path) / name
            if sub.is_symlink() or (sub.is_dir() and not (sub / "zarr.json").is_file()):
                raise StoreExistsError(refuse.format(why=f"its entry {name!r} is not a Zarr array or group"))
    return fmt


def staging_path(out: str | Path) -> Path:
    """A fresh hidden sibling of ``out`` to write a replacement into."""
    o = Path(_local(out))
    return o.with_name(f".{o.name}{STAGING_MARK}{uuid.uuid4().hex[:8]}")


@dataclass
class Replacement:
    """Where a command should write, and how to finish or abandon the replacement.

    ``target`` is the path to write to: ``out`` itself when nothing is replaced (or for URLs,
    where the old store was already removed), else a staging sibling.  Call :meth:`commit` after a
    run that produced something, :meth:`abort` after one that failed.
    """

    out: str
    target: str
    replaced: str | None = None  # format of the output being replaced, if any
    notes: list[str] = field(default_factory=list)

    @property
    def staged(self) -> bool:
        return self.target != self.out

    def commit(self) -> None:
        """Swap the new output into place and delete the old one (local paths)."""
        if not self.staged:
            return
        out = Path(self.out)
        retired = out.with_name(f".{out.name}{RETIRED_MARK}{uuid.uuid4().hex[:8]}")
        os.replace(out, retired)
        try:
            os.replace(self.target, out)
        except OSError:
            os.replace(retired, out)  # put the old one back
            raise
        shutil.rmtree(retired, ignore_errors=True)
        self.notes.append(f"replaced the existing {self.replaced} store at {self.out}")
        self.target = self.out

    def abort(self) -> None:
        """Remove the staged output; the existing one stays untouched."""
        if self.staged:
            shutil.rmtree(self.target, ignore_errors=True)
            self.notes.append(f"the existing store at {self.out} was left unchanged")
            self.target = self.out

    def finish(self, produced: bool) -> None:
        """After a run that ended normally: swap the new output in if it holds something (or
        nothing was staged), else drop it and keep the existing one."""
        if produced or not self.staged:
            self.commit()
        else:
            self.abort()

    @contextmanager
    def guard(self, say_incomplete: bool = False):
        """Around a run writing into :attr:`target`: on failure the staged output is removed and a
        project error says the existing store was left unchanged (or, with ``say_incomplete``,
        that an unstaged store it wrote into is incomplete)."""
        try:
            yield self
        except SmssynthError as e:
            if self.staged:
                self.abort()
                raise type(e)(f"{e}; the existing store at {self.out} was left unchanged") from None
            if say_incomplete and exists(self.target):
                raise type(e)(f"{e}; the store at {self.out} is incomplete") from None
            raise
        except BaseException:
            self.abort()
            raise


def prepare(
    out: str | Path,
    *,
    formats: Iterable[str],
    overwrite: bool,
    inputs: Iterable[str | Path] = (),
    storage_options: dict | None = None,
) -> Replacement:
    """Check ``out`` (module doc) and decide where to write.

    Raises :class:`ConfigError` when ``out`` is or holds an input, :class:`StoreExistsError` when
    it exists and ``overwrite`` is false, or it exists and is not recognisably ours.
    """
    out = _local(out)
    check_not_input(out, inputs)
    if not exists(out, storage_options):
        return Replacement(out, out)
    if not overwrite:
        raise StoreExistsError(f"{out} already exists; pass --overwrite to replace it, or choose another --out")
    fmt = recognise(out, formats, storage_options)
    if _is_url(out):
        import fsspec

        fs, _, (root,) = fsspec.get_fs_token_paths(out, storage_options=storage_options)
        fs.rm(root, recursive=True)
        log.warning("--overwrite: removed the existing %s store at %s before writing the new one", fmt, out)
        return Replacement(out, out, fmt, [f"removed the existing {fmt} store at {out}"])
    _remove_stale_staging(Path(out), formats)
    return Replacement(out, str(staging_path(out)), fmt)


def prepare_or_resume(out: str | Path, *, formats: Iterable[str], overwrite: bool,
                      inputs: Iterable[str | Path] = ()) -> tuple[Replacement, bool]:
    """For a command that resumes its own output: ``(replacement, resume)``.

    Without ``overwrite`` an existing ``out`` is to be resumed in place (the caller checks it is
    the same conversion); otherwise :func:`prepare` decides.  ``out`` is never an input.
    """
    inputs = list(inputs)
    if not overwrite and exists(out):
        check_not_input(out, inputs)
        return Replacement(_local(out), _local(out)), True
    return prepare(out, formats=formats, overwrite=overwrite, inputs=inputs), False


def _remove_stale_staging(out: Path, formats: Iterable[str]) -> None:
    """Delete staging/retired siblings left by killed runs, when they are recognisably ours."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        return
    for p in parent.iterdir():
        if p.name.startswith(f".{out.name}{STAGING_MARK}") or p.name.startswith(f".{out.name}{RETIRED_MARK}"):
            try:
                recognise(p, formats)
            except StoreExistsError:
                continue
            shutil.rmtree(p, ignore_errors=True)
