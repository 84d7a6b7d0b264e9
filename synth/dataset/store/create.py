"""Creating a store: every array (all examples incomplete), the fact arrays and the root
attributes, then the consolidated metadata."""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from synth.dataset.output import recognise
from synth.dataset.store.facts import example_facts
from synth.dataset.store.layout import (ARRAYS, CONVENTIONS, FACT_ARRAYS, FORMAT_NAME, FORMAT_VERSION, KINDS, _codecs,
                                        _shapes_of, fact_shapes, location)
from synth.errors import StoreError, StoreExistsError


@contextmanager
def _quiet_zarr():
    """Silence the two notes zarr-python makes whenever it writes this format's metadata.

    * Consolidated metadata is not (yet) in the Zarr v3 spec: zarr-python and xarray read it, and
      a reader without it reads the per-array metadata, which is the same.
    * zarr-python's fixed-length unicode (``fixed_length_utf32``, numpy ``<U``) has no v3 spec
      yet: chosen for the string facts over variable-length strings because xarray's ``where``
      cannot fill numpy's StringDType with NaN (docs/store-format.md).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification")
        yield


def _write_facts(root: zarr.Group, facts: dict[str, np.ndarray]) -> None:
    """Create and fill the fact arrays (one writer, at creation)."""
    n = next(iter(facts.values())).shape[0]
    shapes = fact_shapes(n, facts["source_slice"].shape[1], facts["frame_time_ms"].shape[1])
    with _quiet_zarr():
        for name, value in facts.items():
            shape, chunks = shapes[name]
            kind = value.dtype.kind
            arr = root.create_array(
                name, shape=shape, chunks=chunks, dtype=value.dtype, compressors=None,
                fill_value="" if kind == "U" else (np.nan if kind == "f" else -1),
                dimension_names=ARRAYS[name]["dims"],
            )
            if n:
                arr[...] = value


def consolidate(root: zarr.Group | str | Path, storage_options: dict | None = None) -> zarr.Group | None:
    """Write the store's consolidated metadata (every array's metadata in the root ``zarr.json``).

    ``xarray.open_zarr`` and ``zarr.open_group`` then read one document instead of one per array,
    and xarray opens the store without its "not consolidated" warning.  zarr-python 3 never updates
    consolidated metadata by itself when arrays are created, resized or deleted later; smssynth
    writers change no metadata after :func:`create` (examples only fill chunks), so calling this once
    the metadata is final keeps it correct for every reader, mid-write included.

    ``root``: the group :func:`create` made, or the path of an existing store (resumed runs: its
    consolidated metadata is compared with the per-array metadata and rewritten only if missing or
    different, so resuming a complete store changes no file).  Returns the group opened with the
    consolidated metadata, or None where the store cannot hold any.
    """
    if isinstance(root, zarr.Group):
        store, path = root.store, root.path
    else:
        fresh = zarr.open_group(location(root), mode="r+", storage_options=storage_options, use_consolidated=False)
        store, path = fresh.store, ""
        if getattr(store, "supports_consolidated_metadata", True):
            with _quiet_zarr():
                now = zarr.open_group(store, mode="r+", zarr_format=3)
                held = now.metadata.consolidated_metadata
                if held is not None and held.metadata is not None:
                    want = {k: v.metadata.to_dict() for k, v in fresh.members()}
                    if want == {k: v.to_dict() for k, v in held.metadata.items()}:
                        return now
    if not getattr(store, "supports_consolidated_metadata", True):
        return None
    with _quiet_zarr():
        return zarr.consolidate_metadata(store, path=path or None, zarr_format=3)


def create(
    path: str | Path,
    dims: dict[str, int],
    attrs: dict[str, Any],
    *,
    with_phase: bool = True,
    overwrite: bool = False,
    storage_options: dict | None = None,
    kind: str = "kspace",
    with_labels: bool = False,
) -> zarr.Group:
    """Create an empty store with every array (all examples incomplete) and the root attributes.

    ``dims`` has keys N, C, M, T, Ky, Kx (and S, the distinct slices, for ``kind="targets"``,
    whose ``labels`` array exists when ``with_labels``).  ``attrs`` must be JSON-serialisable;
    format name, version and kind are added here.
    """
    if kind not in KINDS:
        raise StoreError(f"store kind must be one of {KINDS}, got {kind!r}")
    path = location(path)
    if _exists(path, storage_options):
        if not overwrite:
            raise StoreExistsError(f"{path} already exists; pass --overwrite to replace it, or choose another --out")
        # zarr's mode="w" deletes whatever is there: only ever an smssynth store (synth.dataset.output)
        recognise(path, [FORMAT_NAME], storage_options)
    root = zarr.open_group(path, mode="w", zarr_format=3, storage_options=storage_options)
    shapes = _shapes_of(dims, kind, with_phase, with_labels)
    for name, (shape, chunks) in shapes.items():
        spec = ARRAYS[name]
        small = len(shape) == 1
        root.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=spec["dtype"],
            fill_value=False if spec["dtype"] == "bool" else 0,
            compressors=None if small else _codecs(name),
            dimension_names=spec["dims"],
        )
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "dims": dict(dims),
        "arrays": {k: ARRAYS[k] for k in (*shapes, *FACT_ARRAYS)},
        "conventions": CONVENTIONS,
    }
    meta.update(attrs)
    json.dumps(meta)  # fail early, not half-way, on anything non-serialisable
    _write_facts(root, example_facts(meta.get("examples") or [], dims, meta.get("params") or {}))
    root.attrs.update(meta)
    # the metadata is final now (examples only fill chunks): consolidate it before any example
    return consolidate(root) or root


def _exists(path: str, storage_options=None) -> bool:
    from synth.dataset.output import exists

    return exists(path, storage_options)
