r"""``smssynth kspace2sms``: measured, fully sampled multi-coil cine k-space -> SMS examples.

Inputs: ISMRMRD, fastMRI-style HDF5 and CMRxRecon MATLAB v7.3 files, read by :mod:`synth.io.raw`
(one file = one series; each file's slices are combined with each other, as the slices of
a DICOM series are).  All k-space is taken as centred.

Per example (slices ``i = 0..M-1`` in ascending position; ``k_i`` (C, T, Ky, Kx) measured)::

    target[i]  = sqrt(sum_c |ifft2c(k_i)[c]|^2) / scale         root-sum-of-squares, max 1
    kspace[c]  = sum_i exp(-2j pi i kz[t,n] / M) k_i[c, t, n] / scale   (+ noise with --snr)
    csm[:, i]  = ESPIRiT (sigpy.mri.app.EspiritCalib, crop 0) of the frame-averaged k_i

with ``mask``/``kz``/noise drawn exactly as ``dicom2kspace`` draws them (the example's seed
spawned into phase, coils, mask, noise streams; the first two unused).  There is no ``phase``
array: the phase is in the data.  ``attrs["source"] = "measured"`` and ``attrs["measured"]``
records the input format and the coil-map method.  ``--matrix`` centre-crops/pads the coil
images, ``--frames`` crops or linearly interpolates frames (a linear operation, the same on
k-space and images).

Memory: files are read one slice at a time (a few slices cached, since combinations reuse them);
one example holds its M slices' k-space, the collapsed k-space and the ESPIRiT work arrays.
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

import synth
from synth.dataset import output
from synth.dataset import store as zstore
from synth.dataset.combos import ExamplePlan
from synth.dataset.config import SimConfig
from synth.errors import ConfigError, RawDataError
from synth.io.dicom import Catalog
from synth.io.raw import RawSliceInfo, catalog
from synth.io.resolution import crop_or_pad
from synth.physics.fft import fft2c, ifft2c
from synth.physics.masks import row_mask
from synth.physics.noise import add_noise, noise_sigma
from synth.physics.sms import caipi_phase_kz, kz_table

log = logging.getLogger("smssynth.raw")

ESPIRIT = {"calib_width": 24, "thresh": 0.02, "kernel_width": 6, "crop": 0.0}


def fit(k: np.ndarray, config: SimConfig) -> np.ndarray:
    """``--frames`` then ``--matrix`` on one slice's coil k-space complex64 (C, T, Ky, Kx)."""
    t = k.shape[1]
    if config.frames is not None and config.frames != t:
        if config.frames_mode == "crop":
            if t < config.frames:
                raise ConfigError(f"--frames {config.frames}: the data have only {t} frames; use --frames-mode resample")
            k = k[:, : config.frames]
        else:
            pos = np.linspace(0, t - 1, config.frames)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, t - 1)
            w = (pos - lo).astype(np.float32)[None, :, None, None]
            k = ((1 - w) * k[:, lo] + w * k[:, hi]).astype(np.complex64)
    if config.matrix is not None and tuple(config.matrix) != k.shape[-2:]:
        x = ifft2c(k)
        c, t = x.shape[:2]
        re = crop_or_pad(np.ascontiguousarray(x.real.reshape(c * t, *x.shape[-2:]), np.float32), config.matrix)
        im = crop_or_pad(np.ascontiguousarray(x.imag.reshape(c * t, *x.shape[-2:]), np.float32), config.matrix)
        k = fft2c((re + 1j * im).astype(np.complex64).reshape(c, t, *config.matrix))
    return np.ascontiguousarray(k, dtype=np.complex64)


def espirit_maps(k: np.ndarray) -> np.ndarray:
    """ESPIRiT coil maps complex64 (C, Y, X) of one slice's coil k-space (C, T, Ky, Kx), from its
    frame average; crop 0, so ``sum_c |csm_c|^2 = 1`` at every pixel."""
    EspiritCalib = _espirit_class()
    avg = k.mean(axis=1)
    width = int(min(ESPIRIT["calib_width"], avg.shape[-2], avg.shape[-1]))
    maps = EspiritCalib(avg, calib_width=width, thresh=ESPIRIT["thresh"], kernel_width=min(ESPIRIT["kernel_width"], width),
                        crop=ESPIRIT["crop"], show_pbar=False).run()
    maps = np.asarray(maps, np.complex64)
    norm = np.sqrt((np.abs(maps) ** 2).sum(axis=0))
    return np.where(norm > 0, maps / np.maximum(norm, 1e-12), np.complex64(1 / np.sqrt(maps.shape[0]))).astype(np.complex64)


def _espirit_class():
    """sigpy's EspiritCalib, imported without torch: sigpy imports torch whenever it is installed,
    and synth never loads torch (seconds and hundreds of MB); hidden while sigpy is first imported."""
    import sys

    import scipy.signal  # noqa: F401  (sigpy's dependencies first: scipy looks torch up in sys.modules)
    import scipy.stats  # noqa: F401

    hide = "torch" not in sys.modules and "sigpy" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # importlib.util.find_spec("torch") is then None; `import torch` fails
    try:
        from sigpy.mri.app import EspiritCalib
    except ImportError:
        raise ConfigError('ESPIRiT coil maps need sigpy: pip install "smssynth[zoo]" (or pip install sigpy)') from None
    finally:
        if hide:
            del sys.modules["torch"]
    return EspiritCalib


class RawCache:
    """The fitted k-space, RSS magnitude and coil maps of recently used slices."""

    def __init__(self, config: SimConfig, size: int):
        self.config, self.size = config, size
        self._data: OrderedDict = OrderedDict()

    def get(self, sl: RawSliceInfo):
        key = (sl.raw.path, sl.index)
        if key in self._data:
            self._data.move_to_end(key)
            return self._data[key]
        k = fit(sl.raw.read_slice(sl.index), self.config)
        rss = np.sqrt((np.abs(ifft2c(k)) ** 2).sum(axis=0)).astype(np.float32)  # (T, Y, X)
        got = (k, rss, espirit_maps(k))
        self._data[key] = got
        while len(self._data) > self.size:
            self._data.popitem(last=False)
        return got


def make_example(ex: ExamplePlan, cache: RawCache, config: SimConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(collapsed k-space complex64 (C, T, Ky, Kx), the example's other arrays) of one example."""
    from synth.dataset.pipeline import slice_offsets

    got = [cache.get(s.slice) for s in ex.sources]
    m = len(got)
    c, t, ny, nx = got[0][0].shape
    _, _, rng_mask, rng_noise = (np.random.default_rng(s) for s in ex.seed_sequence().spawn(4))
    mask = row_mask(config.mask, t, ny, config.accel, config.acs, rng_mask)
    kz = kz_table(config.caipi, mask, m)
    target = np.stack([g[1] for g in got])
    peak = float(target.max())
    scale = np.float32(peak if peak > 0 else 1.0)
    phases = caipi_phase_kz(kz, m)  # (T, M, Ky)
    y = np.zeros((c, t, ny, nx), np.complex64)
    for i, (k, _, _) in enumerate(got):  # slice by slice: one slice's product at a time
        y += k * phases[:, i, :, None]
    y /= scale
    sigma = 0.0
    if config.snr is not None:
        sigma = noise_sigma(y, config.snr)
        y = add_noise(y, config.snr, rng_noise).astype(np.complex64)
    arrays = {
        "mask": mask, "kz": kz, "target": np.divide(target, scale, dtype=np.float32),
        "csm": np.stack([g[2] for g in got], axis=1), "scale": scale, "noise_sigma": np.float32(sigma),
        "offsets": slice_offsets(ex, config, (ny, nx)),
    }
    return y, arrays


@dataclass
class RawSummary:
    written: int = 0
    already: int = 0
    n_examples: int = 0
    n_series: int = 0
    n_files: int = 0
    shape: tuple | None = None
    plan_skipped: list[str] = field(default_factory=list)
    skipped_inputs: list[str] = field(default_factory=list)  # unusable files and why (names masked)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (example index, reason): left incomplete
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    peak_rss_mb: float = 0.0


def store_attrs(config: SimConfig, plan, cat: Catalog) -> dict:
    import zarr

    fmts = Counter(s.slices[0].raw.fmt for s in cat.series)
    return {
        "generator": {"name": "smssynth", "version": synth.__version__, "command": "kspace2sms",
                      "numpy": np.__version__, "zarr": zarr.__version__, "python": platform.python_version()},
        "source": "measured",
        "params": config.to_dict(),
        "measured": {
            "formats": dict(fmts),
            "csm": {"method": "espirit", "implementation": "sigpy.mri.app.EspiritCalib", **ESPIRIT,
                    "from": "each slice's frame-averaged fully sampled k-space"},
            "target": "root-sum-of-squares of the fully sampled coil images, per slice",
            "phase": "measured (in the data; no phase array)",
        },
        "models": {},
        "inputs": {"files": cat.n_files, "series": len(cat.series),
                   "skipped": dict(Counter(s.category for s in cat.skipped)), "fallbacks": {}},
        "examples": [ex.to_dict() for ex in plan.examples],
    }


def kspace2sms(inputs: Sequence[str | Path], out: str | Path, config: SimConfig, *, salt: bytes,
               overwrite: bool = False, show_paths: bool = False, dataset: str | None = None,
               on_error: str = "skip", progress: Callable[[int, int], None] | None = None) -> RawSummary:
    """Convert raw k-space files into a new (or resumed) measured-data store at ``out``.

    ``on_error``: ``"skip"`` leaves out files that cannot be opened (``RawSummary.skipped_inputs``)
    and leaves incomplete the examples whose slices cannot be read (``RawSummary.failed``; the
    same command run again computes only those); ``"fail"`` stops at the first such error.
    """
    import resource

    from synth.dataset.pipeline import make_plan, open_to_resume

    t0 = time.perf_counter()
    summary = RawSummary()
    if config.phase != "none" or config.targets_only:
        raise ConfigError("kspace2sms: measured data have their own phase and need their k-space stored "
                          "(phase 'none', no targets-only)")
    replacement, resume = output.prepare_or_resume(out, formats=[zstore.FORMAT_NAME], overwrite=overwrite,
                                                   inputs=inputs)
    with replacement.guard():
        cat = catalog(inputs, salt=salt, show_paths=show_paths, dataset=dataset, on_error=on_error)
        summary.n_files, summary.n_series = cat.n_files, len(cat.series)
        summary.skipped_inputs = [str(s) for s in cat.skipped]
        plan = make_plan(cat, config)
        summary.plan_skipped, summary.n_examples, summary.shape = list(plan.skipped), len(plan.examples), plan.shape
        t, ny, nx = plan.shape
        coils = {s.slices[0].raw.coils for s in cat.series}
        if len(coils) > 1:
            raise ConfigError(f"the inputs have different coil counts {sorted(coils)}; one store needs one: convert "
                              f"them into separate stores")
        c = coils.pop()
        config = config.replace(coils=c)
        dims = {"N": len(plan.examples), "C": c, "M": config.sms, "T": t, "Ky": ny, "Kx": nx}
        attrs = store_attrs(config, plan, cat)
        if resume:
            root, todo = open_to_resume(replacement.target, {**attrs, "dims": dims})
            summary.already = len(plan.examples) - len(todo)
        else:
            root = zstore.create(replacement.target, dims, attrs, with_phase=False, kind="kspace")
            todo = set(range(len(plan.examples)))
        writer = zstore.Writer(root)
        cache = RawCache(config, size=config.sms + 2)
        for ex in plan.examples:
            if ex.index not in todo:
                continue
            try:
                y, arrays = make_example(ex, cache, config)
            except RawDataError as e:
                if on_error == "fail":
                    raise RawDataError(f"{e} (stopped at example {ex.index}: --on-error fail)") from None
                summary.failed.append((ex.index, str(e)))
                log.warning("example %d skipped: %s", ex.index, e)
                if progress:
                    progress(summary.written + len(summary.failed), len(todo))
                continue
            for ci in range(c):
                writer.coil(ex.index, ci, y[ci], None)
            writer.example(ex.index, arrays, coils_written=True)  # completion marker last
            summary.written += 1
            if progress:
                progress(summary.written + len(summary.failed), len(todo))
    replacement.finish(bool(summary.written or summary.already))
    summary.notes = list(replacement.notes)
    summary.wall_seconds = time.perf_counter() - t0
    summary.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return summary
