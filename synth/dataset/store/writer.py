"""Writing examples into a store, chunk by chunk: :class:`Writer`, :func:`write_block` (chunk-exact
values, local chunk files written directly), :class:`ChunkFile` (a chunk written block by block)
and :func:`remove_partials`."""

from __future__ import annotations

import itertools
import os
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.storage import LocalStore

from synth.dataset.store.layout import COIL_ARRAYS, DATA_ARRAYS, location
from synth.errors import StoreError


class Writer:
    """Writes examples into an open store; holds the array handles (opening one reads its metadata).

    Thread-safe: threads may write different coils or examples at once.
    """

    def __init__(self, root: zarr.Group):
        self.root = root
        self.arrays = {name: root[name] for name in (*DATA_ARRAYS, "complete") if name in root}
        for name in ("slices", "labels", "example_slices"):
            if name in root:
                self.arrays[name] = root[name]

    def targets_example(self, index: int, slice_ids, slices: dict[int, tuple[np.ndarray, np.ndarray | None]],
                        offsets: np.ndarray, scale: float) -> None:
        """Write example ``index`` of a targets store: its slices (``slice id -> (magnitudes (T, Y, X),
        labels or None)``, rewritten with the same bytes when several examples share one), then
        its small arrays and its completion marker."""
        for sid, (mags, labels) in slices.items():
            write_row(self.arrays["slices"], sid, mags)
            if "labels" in self.arrays:
                write_row(self.arrays["labels"], sid, labels)
        write_row(self.arrays["example_slices"], index, np.asarray(slice_ids, np.int32))
        write_row(self.arrays["offsets"], index, np.asarray(offsets, np.float64))
        write_row(self.arrays["scale"], index, np.float32(scale))
        write_row(self.arrays["complete"], index, np.True_)

    def coil(self, index: int, coil: int, kspace: np.ndarray, phase: np.ndarray | None) -> None:
        """Write coil ``coil`` of example ``index``: ``kspace`` (T, Ky, Kx) and ``phase``
        (M, T, Y, X), one chunk each (``phase`` is ignored by a store without it).  The example
        stays incomplete until :meth:`example` (``coils_written=True``) writes the rest."""
        write_block(self.arrays["kspace"], (index, coil), kspace)
        if "phase" in self.arrays:
            write_block(self.arrays["phase"], (index, coil), phase)

    @contextmanager
    def coil_chunks(self, index: int, coil: int, *, phase: bool = True):
        """Block-writable ``(kspace, phase)`` targets for coil ``coil`` of example ``index``.

        Each target takes ``kspace[t0:t1] = block`` / ``phase[i, t0:t1] = block`` assignments;
        for local uncompressed stores it is a :class:`ChunkFile` that writes each block into the
        chunk file at once (no whole-chunk buffer), elsewhere an array written through zarr when
        the block exits.  A chunk is stored only if the block exits normally.  With
        ``phase=False`` (a store without ``phase``, or an all-zero phase, which zarr would not
        store either) the phase target is a scratch array that is not written.
        """
        targets = {}
        kshape = tuple(self.arrays["kspace"].shape[2:])
        names = [("kspace", kshape)]
        if "phase" in self.arrays:
            pshape = tuple(self.arrays["phase"].shape[2:])
            if phase:
                names.append(("phase", pshape))
            else:
                targets["phase"] = np.empty(pshape, np.float32)
        else:
            targets["phase"] = _Scratch()
        done = False
        try:
            for name, shape in names:
                arr = self.arrays[name]
                folder = direct_chunk_folder(arr)
                if folder is not None and tuple(arr.chunks[2:]) == shape:
                    key = arr.metadata.encode_chunk_key((index, coil) + (0,) * len(shape))
                    targets[name] = ChunkFile(folder / key, shape, arr.dtype)
                else:
                    targets[name] = np.empty(shape, arr.dtype)
            yield targets["kspace"], targets["phase"]
            for name, _ in names:
                tgt = targets[name]
                if isinstance(tgt, ChunkFile):
                    tgt.commit()
                else:
                    write_block(self.arrays[name], (index, coil), tgt)
            done = True
        finally:
            if not done:
                for name, _ in names:
                    if isinstance(targets.get(name), ChunkFile):
                        targets[name].abort()  # a no-op for one already committed

    def example(self, index: int, arrays: dict[str, np.ndarray], *, coils_written: bool = False) -> None:
        """Write one example's arrays, then its completion marker (so readers never see half an
        example).  ``coils_written``: ``kspace`` and ``phase`` were already written coil by coil
        (:meth:`coil`) and are not in ``arrays``."""
        for name in DATA_ARRAYS:
            if name not in self.arrays or (coils_written and name in COIL_ARRAYS):
                continue
            if name not in arrays:
                raise StoreError(f"example {index}: array {name!r} missing from the simulation output")
            write_row(self.arrays[name], index, arrays[name])
        write_row(self.arrays["complete"], index, np.True_)


def write_example(root: zarr.Group, index: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one whole example and its completion marker (see :class:`Writer` for many)."""
    Writer(root).example(index, arrays)


def write_row(arr: zarr.Array, index: int, value) -> None:
    """``arr[index] = value``, chunk by chunk (see :func:`write_block`)."""
    write_block(arr, (index,), value)


def write_block(arr: zarr.Array, prefix: tuple[int, ...], value) -> None:
    """Write ``arr[prefix] = value`` one chunk at a time, each as a value of exactly the chunk's shape.

    ``prefix`` indexes leading axes whose chunks are 1 long (example, and coil for ``kspace`` and
    ``phase``).  Same stored bytes as plain assignment, at about half the cost for the big arrays:
    zarr stores a value that has exactly the chunk's shape as it is, whereas a larger value is
    first copied into a freshly filled chunk buffer; and a chunk whose first element differs from
    the fill value cannot be empty, so zarr's whole-chunk emptiness test (a full pass over the
    data) is skipped for it.  All-zero chunks (e.g. ``phase`` with ``--phase none``) are still
    left unwritten, as zarr does by default; they read back as zeros.
    """
    value = np.asarray(value, dtype=arr.dtype)
    if not value.flags.c_contiguous:
        value = value.copy()
    k = len(prefix)
    block_shape = tuple(arr.shape[k:])
    if value.shape != block_shape:
        raise StoreError(f"array {arr.basename!r}{list(prefix)}: shape {value.shape}, expected {block_shape}")
    if any(c != 1 for c in arr.chunks[:k]):
        raise StoreError(f"array {arr.basename!r}: chunks {arr.chunks} are not 1 long on the first {k} axes")
    lead = tuple(slice(i, i + 1) for i in prefix)
    folder = direct_chunk_folder(arr)
    if not block_shape:
        if folder is None:
            arr[lead] = value.reshape((1,) * k)
            return
        # one element per chunk (scale, noise_sigma, the completion marker): what zarr would do,
        # without its event loop -- store the element, or remove the chunk if it is the fill value
        path = folder / arr.metadata.encode_chunk_key(tuple(prefix))
        if value == np.asarray(arr.fill_value, arr.dtype):
            path.unlink(missing_ok=True)
        else:
            _put_chunk(path, value.reshape(1))
        return
    chunks = tuple(arr.chunks[k:])
    fill = np.zeros((), arr.dtype)
    grid = [range(0, n, c) for n, c in zip(block_shape, chunks)]
    for starts in itertools.product(*grid):
        sel = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunks, block_shape))
        block = value[sel]
        maybe_empty = block.size == 0 or block.flat[0] == fill
        if folder is not None and not maybe_empty and block.shape == chunks:
            coords = tuple(prefix) + tuple(s // c for s, c in zip(starts, chunks))
            _put_chunk(folder / arr.metadata.encode_chunk_key(coords), np.ascontiguousarray(block))
        else:
            dest = arr if maybe_empty else arr.with_config({"write_empty_chunks": True})
            dest[lead + sel] = block.reshape((1,) * k + block.shape)


def direct_chunk_folder(arr: zarr.Array) -> Path | None:
    """The folder of ``arr``'s chunk files when they can be written without zarr, else None.

    That is a Zarr v3 array in a local folder whose only codec is ``bytes`` in this machine's
    byte order: its chunk file is then exactly the chunk's bytes in C order, named by the
    array's own chunk-key encoding.  Writing those files directly gives the same bytes as zarr
    does, at a fraction of its cost per chunk (zarr routes every write through its event loop,
    which also keeps writes from several threads from running in parallel).  Anything else --
    compressors, other stores, URLs -- goes through zarr.
    """
    store = arr.store_path.store
    meta = arr.metadata
    if not isinstance(store, LocalStore) or store.read_only or meta.zarr_format != 3:
        return None
    codecs = meta.codecs
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    if arr.dtype.itemsize > 1 and (codecs[0].endian is None or codecs[0].endian.value != sys.byteorder):
        return None
    return Path(store.root) / arr.store_path.path


class _Scratch:
    """Accepts and drops block assignments (the phase of a store without a ``phase`` array)."""

    def __setitem__(self, key, value) -> None:
        pass


class ChunkFile:
    """One uncompressed chunk file written block by block, then renamed into place.

    ``chunk[t0:t1] = block`` or ``chunk[i, t0:t1] = block`` writes a C-contiguous region of the
    chunk (leading-axis indices, the last one a slice) at its byte offset, so a producer can hand
    over each block while it is in cache.  :meth:`commit` renames the temporary file to the chunk
    key (as zarr's own local writes do); :meth:`abort` removes it.  Every byte must have been
    assigned before :meth:`commit`, which checks it.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = path, tuple(shape), np.dtype(dtype)
        self.tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        self._f = _open_new(self.tmp)
        self._spans: list[tuple[int, int]] = []  # byte ranges written

    def __setitem__(self, key, value) -> None:
        key = key if isinstance(key, tuple) else (key,)
        *lead, last = key
        if not isinstance(last, slice) or last.step not in (None, 1) or len(key) > len(self.shape):
            raise IndexError(f"ChunkFile takes leading indices ending in a unit-step slice, got {key!r}")
        start, stop, _ = last.indices(self.shape[len(lead)])
        inner = self.shape[len(key):]
        expect = (stop - start, *inner)
        value = np.ascontiguousarray(value, dtype=self.dtype)
        if value.shape != expect:
            raise ValueError(f"block for {key!r} has shape {value.shape}, expected {expect}")
        row = int(np.prod(inner, dtype=np.int64)) * self.dtype.itemsize
        pos = 0  # in rows of the sliced axis
        for idx, n in zip(lead, self.shape):
            if not 0 <= idx < n:
                raise IndexError(f"index {idx} out of range for axis of length {n}")
            pos = pos * n + idx
        pos = pos * self.shape[len(lead)] + start
        self._f.seek(pos * row)
        _write_all(self._f, memoryview(value).cast("B"))
        self._spans.append((pos * row, pos * row + value.nbytes))

    def commit(self) -> None:
        self._f.close()
        size = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        covered = 0  # bytes from 0 on that some assignment wrote
        for a, b in sorted(self._spans):
            if a > covered:
                break
            covered = max(covered, b)
        if covered < size:
            self.tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.path}: bytes {covered}..{size} were never written; chunk not stored")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)  # gone already after a commit


def remove_partials(path: str | Path) -> int:
    """Delete the temporary chunk files (``*.partial``) that killed writers left in a local store.

    Call only while nobody writes to the store (``generate`` does, before resuming).  Readers
    never see these files; removing them makes a resumed store the same, file for file, as one
    written in one go.  Returns how many were removed (0 for URLs).
    """
    path = location(path)
    if "://" in path:
        return 0
    stale = list(Path(path).rglob("*.partial"))
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def _open_new(path: Path):
    """``open(path, "wb", buffering=0)``, creating the parent folders only when missing (a
    ``mkdir`` per chunk cost as much Python time as the rest of a chunk write)."""
    try:
        return open(path, "wb", buffering=0)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "wb", buffering=0)


def _write_all(f, data: memoryview) -> None:
    """Write every byte to an unbuffered file: a raw ``write`` may take fewer than asked (Linux
    caps one call at about 2 GB), and a short chunk must never pass for a whole one."""
    while data:
        n = f.write(data)
        if not n:
            raise OSError(f"could not write to {f.name}")
        data = data[n:]


def _put_chunk(path: Path, data: np.ndarray) -> None:
    """Write one chunk file atomically (a temporary file renamed into place, as zarr does)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with _open_new(tmp) as f:
            _write_all(f, memoryview(data).cast("B"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
