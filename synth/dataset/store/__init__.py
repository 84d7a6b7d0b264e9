"""The smssynth store: a Zarr v3 group, the contract between ``synth`` and ``zoo``.

The format is documented in ``docs/store-format.md`` (keep the two in step) and is readable with
plain ``zarr.open`` and no project code.  One row per SMS example ``n``:

========== ============================ ========= =====================================
array      dims                         dtype     meaning
========== ============================ ========= =====================================
kspace     (N, C, T, Ky, Kx)            complex64 CAIPI-collapsed multi-coil k-space, every
                                                  ky row present (+ noise if ``snr``)
mask       (N, T, Ky)                   bool      in-plane sampled rows
kz         (N, T, Ky)                   int8      kz (CAIPI phase index) of every row (1.1+)
target     (N, M, T, Ky, Kx)            float32   magnitude of each SMS slice, max 1 per example
csm        (N, C, M, Ky, Kx)            complex64 coil maps, sum_c |csm|^2 = 1
phase      (N, C, M, T, Ky, Kx)         float32   synthetic phase, radians (optional)
scale      (N,)                         float32   DICOM units per target unit
noise_sigma(N,)                         float32   sigma of the added noise (0: none)
offsets    (N, M)                       float64   slice positions relative to their mean, in units
                                                  of the FOV (what the coil maps depend on) (1.2+)
complete   (N,)                         bool      completion marker, written last
========== ============================ ========= =====================================

Every store of 1.4+ (either kind) also holds the **per-example facts** (:data:`FACT_ARRAYS`,
:func:`example_facts`): ``split``, ``patient``, ``study``, ``series`` (pseudonyms; fixed-length
unicode), ``draw``, ``source_slice`` (N, M), ``slice_position_mm`` (N, M), ``frame_time_ms``
(N, T), ``pixel_spacing_mm`` and ``fov_mm`` (N, 2), ``slice_thickness_mm`` (N,), all derived from
``attrs["examples"]`` and written once by :func:`create`, so ``xarray.open_zarr`` sees them as
variables along ``example``.  The metadata is consolidated (:func:`consolidate`) once it is
final, at the end of :func:`create`.

A **targets** store (``attrs["kind"] == "targets"``, ``--targets-only``, 1.2+) holds only what
cannot be redrawn, each slice once: ``slices`` float32 (S, T, Y, X) working magnitudes in DICOM
units, ``labels`` uint8 (S, T, Y, X) their k-means clusters (with ``phase: kmeans``), and per
example ``example_slices`` int32 (N, M), ``offsets``, ``scale`` and ``complete``.  An example's
``target`` is ``slices[example_slices[n]] / scale[n]``; ``zoo`` simulates the rest.

Chunks never straddle two examples (writers never share a chunk), and are one coil (or one
example for the small arrays) so a per-example read touches C + few chunks.  Only ``mask`` and ``kz`` are
compressed (see :func:`synth.dataset.store.layout._codecs`).

Modules
-------
* :mod:`~synth.dataset.store.layout`: the format: name and version, the arrays, their dims, dtypes,
  shapes and chunks, the conventions recorded in every store.
* :mod:`~synth.dataset.store.facts`: :func:`example_facts`, the per-example fact arrays.
* :mod:`~synth.dataset.store.create`: :func:`create` (an empty store with every array) and
  :func:`consolidate`.
* :mod:`~synth.dataset.store.writer`: :class:`Writer` and the chunk-exact writes
  (:func:`write_block`, :class:`ChunkFile`, :func:`remove_partials`).
* :mod:`~synth.dataset.store.reader`: :class:`Store`, validated read access.
"""

from synth.dataset.store.create import consolidate, create
from synth.dataset.store.facts import example_facts
from synth.dataset.store.layout import (ADDED_IN, ARRAYS, COIL_ARRAYS, CONVENTIONS, DATA_ARRAYS, FACT_ARRAYS,
                                        FACT_CHUNK, FORMAT_NAME, FORMAT_VERSION, KINDS, SUPPORTED_MAJOR, TARGET_ARRAYS,
                                        array_shapes, fact_shapes, location, target_array_shapes)
from synth.dataset.store.reader import Store
from synth.dataset.store.writer import (ChunkFile, Writer, direct_chunk_folder, remove_partials, write_block,
                                        write_example, write_row)

__all__ = ["ADDED_IN", "ARRAYS", "COIL_ARRAYS", "CONVENTIONS", "ChunkFile", "DATA_ARRAYS", "FACT_ARRAYS", "FACT_CHUNK",
           "FORMAT_NAME", "FORMAT_VERSION", "KINDS", "SUPPORTED_MAJOR", "Store", "TARGET_ARRAYS", "Writer",
           "array_shapes", "consolidate", "create", "direct_chunk_folder", "example_facts", "fact_shapes", "location",
           "remove_partials", "target_array_shapes", "write_block", "write_example", "write_row"]
