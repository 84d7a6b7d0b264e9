"""Reading a store: :class:`Store` validates the format and reads whole examples, refusing
incomplete ones and naming damaged chunks."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BytesCodec
from zarr.storage import LocalStore

from synth.dataset.store.facts import example_facts
from synth.dataset.store.layout import (ADDED_IN, ARRAYS, DATA_ARRAYS, FACT_ARRAYS, FORMAT_NAME, KINDS, SUPPORTED_MAJOR,
                                _shapes_of, fact_shapes, location)
from synth.errors import StoreError


def _plain_chunk_folder(arr: zarr.Array) -> Path | None:
    """The chunk folder of an uncompressed local array in either byte order (for size checks)."""
    store = arr.store_path.store
    codecs = arr.metadata.codecs
    if not isinstance(store, LocalStore) or arr.metadata.zarr_format != 3:
        return None
    if len(codecs) != 1 or not isinstance(codecs[0], BytesCodec):
        return None
    return Path(store.root) / arr.store_path.path


@dataclass
class Store:
    """Read access to a store, validating its format.  ``Store.open(path)``."""

    root: zarr.Group
    path: str

    @classmethod
    def open(cls, path: str | Path, storage_options: dict | None = None) -> "Store":
        path = location(path)
        if "://" not in path and not Path(path).exists():
            raise StoreError(f"{path}: no such store; create one with `smssynth dicom2kspace ... --out {path}`")
        try:
            # the per-array metadata, not the consolidated copy: zarr-python does not refresh that
            # copy when arrays change, and smssynth's own readers must never see a stale one
            root = zarr.open_group(path, mode="r", storage_options=storage_options, use_consolidated=False)
        except Exception as e:  # zarr raises several types for "not a group"
            raise StoreError(f"{path}: not a Zarr group ({type(e).__name__}); is this an smssynth store?") from None
        store = cls(root, path)
        store.validate()
        return store

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.root.attrs)

    @property
    def dims(self) -> dict[str, int]:
        return dict(self.root.attrs["dims"])

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.root.attrs.get("params", {}))

    def __len__(self) -> int:
        return int(self.dims["N"])

    def complete(self) -> np.ndarray:
        return np.asarray(self.root["complete"][:], dtype=bool)

    def validate(self) -> None:
        a = self.root.attrs
        if a.get("format") != FORMAT_NAME:
            raise StoreError(f"{self.path}: format {a.get('format')!r}, expected {FORMAT_NAME!r}")
        version = str(a.get("format_version", ""))
        try:
            major = int(version.split(".")[0])
        except ValueError:
            raise StoreError(f"{self.path}: unreadable format_version {version!r}") from None
        if major != SUPPORTED_MAJOR:
            raise StoreError(
                f"{self.path}: format version {version}, this smssynth reads {SUPPORTED_MAJOR}.x; "
                f"upgrade smssynth or regenerate the store"
            )
        kind = self.kind
        if kind not in KINDS:
            raise StoreError(f"{self.path}: store kind {kind!r}, this smssynth reads {KINDS}; upgrade smssynth")
        d = self.dims
        if kind == "targets" and "S" not in d:
            raise StoreError(f"{self.path}: a targets store without dims['S'] (the number of distinct slices)")
        expect = _shapes_of(d, kind, "phase" in self.root, "labels" in self.root)
        expect.update(fact_shapes(d["N"], d["M"], d["T"]))
        for name, (shape, _) in expect.items():
            if name not in self.root and self.version < ADDED_IN.get(name, (0, 0)):
                continue  # an older minor version, without the array: readers fall back (see example)
            if name not in self.root:
                raise StoreError(f"{self.path}: array {name!r} missing (format version {version} has it)")
            arr = self.root[name]
            dtype = "str" if arr.dtype.kind == "U" else str(arr.dtype)
            if tuple(arr.shape) != shape or dtype != ARRAYS[name]["dtype"]:
                raise StoreError(
                    f"{self.path}: array {name!r} is {arr.dtype}{tuple(arr.shape)}, expected "
                    f"{ARRAYS[name]['dtype']}{shape}"
                )

    @property
    def source(self) -> str:
        """``synthetic`` (simulated from magnitudes) or ``measured`` (``kspace2sms``: real coil data,
        no ``phase`` array, ESPIRiT ``csm``); stores before 1.3 are synthetic."""
        return str(self.root.attrs.get("source", "synthetic"))

    @property
    def kind(self) -> str:
        """``kspace`` (simulated or measured k-space) or ``targets`` (images only; module doc)."""
        return str(self.root.attrs.get("kind", "kspace"))

    def targets(self, index: int) -> dict[str, np.ndarray]:
        """What a simulation of example ``index`` starts from, for either kind of store.

        Returns ``magnitudes`` float32 (M, T, Y, X), ``labels`` uint8 (M, T, Y, X) or None,
        ``offsets`` float64 (M,) and ``scale`` float32 ().  From a targets store the magnitudes are
        the slices' working magnitudes in DICOM units, exactly what ``dicom2kspace`` simulated
        from; from a k-space store they are its ``target`` (max 1) and there are no labels (the
        caller computes them).  Raises StoreError for an incomplete example, or a k-space store
        older than 1.2 (no ``offsets``).
        """
        self._check_complete(index)
        if self.kind == "targets":
            ids = self._read("example_slices", index)
            mags = np.stack([self._read("slices", int(i)) for i in ids])
            labels = np.stack([self._read("labels", int(i)) for i in ids]) if "labels" in self.root else None
        else:
            if "offsets" not in self.root:
                raise StoreError(
                    f"{self.path}: format {self.root.attrs.get('format_version')} stores do not record the slice "
                    f"offsets that coil maps depend on; regenerate the store (or make a --targets-only one) to "
                    f"simulate from it"
                )
            mags, labels = self._read("target", index), None
        return {"magnitudes": mags, "labels": labels, "offsets": self._read("offsets", index),
                "scale": self._read("scale", index)}

    @property
    def version(self) -> tuple[int, int]:
        """``format_version`` as (major, minor)."""
        parts = str(self.root.attrs.get("format_version", "")).split(".")
        try:
            return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except ValueError:
            version = self.root.attrs.get("format_version")
            raise StoreError(f"{self.path}: unreadable format_version {version!r}") from None

    @property
    def caipi(self) -> str:
        """The CAIPI ordering of the store's ``kz`` (``params.caipi``; ``row`` for 1.0 stores)."""
        return str(self.params.get("caipi", "row"))

    def example(self, index: int, names=None) -> dict[str, np.ndarray]:
        """Arrays of one complete example (refuses an incomplete one).

        ``kz`` is read from the store when it has one (validated: values in 0..M-1, and equal to
        :func:`synth.physics.sms.kz_table` of the example's mask under the recorded ``params.caipi``);
        for a 1.0 store, which has none, asking for ``kz`` gives the ``row`` ordering that its
        k-space was made with, ``n mod M``.
        """
        self._check_complete(index)
        if self.kind == "targets":
            t = self.targets(index)
            target = np.divide(t["magnitudes"], np.float32(t["scale"]), dtype=np.float32)
            full = {"target": target, "scale": t["scale"], "offsets": t["offsets"],
                    "example_slices": self._read("example_slices", index)}
            if t["labels"] is not None:
                full["labels"] = t["labels"]
            unknown = sorted(set(names or ()) - set(full))
            if unknown:
                raise StoreError(f"{self.path}: a targets store has no {unknown} (it holds only the images); "
                                 f"simulate them with zoo's on-the-fly synthesis, or make a k-space store")
            return {k: full[k] for k in (names or full)}
        names = names or [k for k in DATA_ARRAYS if k in self.root]
        out = {k: self._read(k, index) for k in names if k != "kz"}
        if "kz" in names:
            out["kz"] = self._kz(index, out.get("mask"))
        return out

    def _check_complete(self, index: int) -> None:
        """IndexError out of range; StoreError for an example whose writer did not finish."""
        n = len(self)
        if not 0 <= index < n:
            raise IndexError(f"example {index} out of range [0, {n})")
        if not bool(self.root["complete"][index]):
            raise StoreError(
                f"{self.path}: example {index} is incomplete (its writer did not finish); "
                f"re-run the generating command to complete the store"
            )

    def _read(self, name: str, index: int) -> np.ndarray:
        """``root[name][index]``, naming the example and array when a chunk cannot be decoded."""
        try:
            return np.asarray(self.root[name][index])
        except Exception as e:  # zarr/numcodecs raise many types for a truncated or garbled chunk
            raise StoreError(
                f"{self.path}: example {index}, array {name!r}: a chunk cannot be read ({type(e).__name__}); "
                f"the store is damaged: `smssynth inspect {self.path} --verify` lists every damaged example, and "
                f"re-running the generating command recomputes them"
            ) from None

    def verify(self, indices=None, *, deep: bool = False) -> dict[int, list[str]]:
        """Damaged examples among the complete ones: ``{index: [problem, ...]}`` ({} if none).

        Cheap check (always): every chunk file of an uncompressed array that exists has exactly
        the chunk's byte size (local stores; a missing chunk is legal, zarr does not store chunks
        that equal the fill value).  ``deep``: every array of the example is also read and decoded,
        which catches damage in compressed chunks and works for any store, at the cost of reading it.
        """
        done = self.complete()
        indices = np.flatnonzero(done) if indices is None else [i for i in indices if done[i]]
        names = [k for k in (*DATA_ARRAYS, "kz", "example_slices") if k in self.root]
        by_slice = [k for k in ("slices", "labels") if k in self.root]  # targets stores: rows by slice id
        sized = {}
        for k in names + by_slice:
            arr = self.root[k]
            folder = _plain_chunk_folder(arr)
            if folder is not None:
                sized[k] = (arr, folder, int(np.prod(arr.chunks)) * arr.dtype.itemsize)
        bad: dict[int, list[str]] = {}
        for i in indices:
            i = int(i)
            for k, (arr, folder, nbytes) in sized.items():
                if k in by_slice:
                    try:
                        rows = [int(r) for r in self.root["example_slices"][i]]
                    except Exception:
                        continue  # reported as example_slices' own damage
                else:
                    rows = [i]
                grid = [range(0, n, c) for n, c in zip(arr.shape[1:], arr.chunks[1:])]
                for row, starts in itertools.product(rows, itertools.product(*grid)):
                    coords = (row,) + tuple(st // c for st, c in zip(starts, arr.chunks[1:]))
                    f = folder / arr.metadata.encode_chunk_key(coords)
                    try:
                        size = f.stat().st_size
                    except FileNotFoundError:
                        continue
                    if size != nbytes:
                        bad.setdefault(i, []).append(f"array {k!r} chunk {list(coords)}: {size} bytes, expected {nbytes}")
                        break
            if deep and by_slice:
                try:
                    v = self.targets(i)
                    if not np.isfinite(v["magnitudes"]).all():
                        bad.setdefault(i, []).append("array 'slices': holds NaN or infinite values")
                except StoreError as e:
                    bad.setdefault(i, []).append(str(e).split(": ", 1)[-1])
            if deep:
                for k in names:
                    try:
                        v = np.asarray(self.root[k][i])
                    except Exception as e:
                        bad.setdefault(i, []).append(f"array {k!r}: unreadable ({type(e).__name__})")
                        continue
                    if v.dtype.kind in "fc" and not np.isfinite(v).all():
                        bad.setdefault(i, []).append(f"array {k!r}: holds NaN or infinite values")
        return bad

    def _kz(self, index: int, mask: np.ndarray | None) -> np.ndarray:
        from synth.physics.sms import kz_index, kz_table

        d = self.dims
        m, t, ny = int(d["M"]), int(d["T"]), int(d["Ky"])
        if "kz" not in self.root:
            return np.broadcast_to(kz_index(m, ny), (t, ny)).astype(np.int8)
        kz = self._read("kz", index)
        if kz.size and (kz.min() < 0 or kz.max() >= m):
            raise StoreError(f"{self.path}: example {index}: kz values {kz.min()}..{kz.max()} outside "
                             f"0..{m - 1} (M = {m}); the example is corrupt: regenerate it")
        if "caipi" in self.params:
            mask = self._read("mask", index) if mask is None else mask
            expect = kz_table(self.caipi, mask, m)
            if not np.array_equal(kz, expect):
                bad = np.argwhere(kz != expect)[0]
                raise StoreError(
                    f"{self.path}: example {index}: kz[{bad[0]}, {bad[1]}] = {kz[tuple(bad)]}, but the "
                    f"store's CAIPI ordering {self.caipi!r} gives {expect[tuple(bad)]} for its mask; the "
                    f"example is corrupt: regenerate it"
                )
        return kz

    def provenance(self, index: int) -> dict[str, Any]:
        return self.root.attrs["examples"][index]

    def facts(self) -> dict[str, np.ndarray]:
        """The per-example fact arrays (:func:`example_facts`): read from a 1.4+ store, derived
        from ``attrs["examples"]`` for an older one (whose examples do not record pixel spacing or
        frame times: NaN there)."""
        if all(name in self.root for name in FACT_ARRAYS):
            return {name: np.asarray(self.root[name][...]) for name in FACT_ARRAYS}
        return example_facts(self.root.attrs.get("examples") or [], self.dims, self.params)
