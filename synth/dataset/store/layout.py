"""The store format: name and version, every array's dims and dtype, shapes and chunks, and the
conventions written into every store (``attrs["conventions"]``); see :mod:`synth.dataset.store` and
``docs/store-format.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zarr.codecs import BloscCodec

from synth.dataset.output import register_format

FORMAT_NAME = "smssynth.sms-kspace"
FORMAT_VERSION = "1.4"  # 1.4: per-example fact arrays (FACT_ARRAYS) and consolidated metadata
KINDS = ("kspace", "targets")  # attrs["kind"]; stores before 1.2 are "kspace"
# readers accept any 1.x store; a major bump means an incompatible change
SUPPORTED_MAJOR = 1

CONVENTIONS = {
    "fft": "centred orthonormal: fftshift(fft2(ifftshift(x, (-2,-1)), norm='ortho'), (-2,-1)); DC at (Ky//2, Kx//2)",
    "caipi_sign": -1,
    "caipi_model": "kspace[c,t,n,:] = sum_i exp(caipi_sign*2j*pi*i*kz[t,n]/M) * fft2c(x[c,i,t])[n,:] (+ noise)",
    "caipi_row_index": "n = array index 0..Ky-1 of the centred k-space row (not the signed frequency)",
    "caipi_kz": ("kz[t,n] in 0..M-1, stored for every row; params.caipi 'row': kz = n % M; 'acquired': a sampled "
                 "row carries (its rank among frame t's sampled rows, ascending n, ACS included) % M, an "
                 "unsampled row n % M. Stores of format 1.0 have no kz array and mean 'row'"),
    "sms_3d": "kspace[...,t,n,:] = sqrt(M) * fft(fft2c(x), axis=slice, norm='ortho')[..., kz[t,n], t, n, :]",
    "coil_image": "x[c,i,t] = target[i,t] * csm[c,i] * exp(1j*phase[c,i,t])",
    "target_normalisation": "per example: magnitudes / max over (M,T,Ky,Kx); scale holds that max in DICOM units",
    "noise": "complex circular Gaussian, E|n|^2 = noise_sigma^2, sigma = rms(clean kspace)/snr, i.i.d. over coils",
    "mask": "mask[t, n] true where ky row n of frame t is sampled; kspace itself holds every row",
    "mask_3d": "3D sampling pattern: mask3[kz, t, n] = mask[t, n] & (kz == kz[t, n])",
    "slice_order": "SMS slice i = 0..M-1 in ascending position along the series' slice normal",
}

ARRAYS: dict[str, dict[str, Any]] = {
    "kspace": {"dims": ["example", "coil", "time", "ky", "kx"], "dtype": "complex64"},
    "mask": {"dims": ["example", "time", "ky"], "dtype": "bool"},
    "kz": {"dims": ["example", "time", "ky"], "dtype": "int8"},
    "target": {"dims": ["example", "slice", "time", "y", "x"], "dtype": "float32"},
    "csm": {"dims": ["example", "coil", "slice", "y", "x"], "dtype": "complex64"},
    "phase": {"dims": ["example", "coil", "slice", "time", "y", "x"], "dtype": "float32"},
    "scale": {"dims": ["example"], "dtype": "float32"},
    "noise_sigma": {"dims": ["example"], "dtype": "float32"},
    "offsets": {"dims": ["example", "slice"], "dtype": "float64"},
    "complete": {"dims": ["example"], "dtype": "bool"},
    # targets stores only
    "slices": {"dims": ["slice_id", "time", "y", "x"], "dtype": "float32"},
    "labels": {"dims": ["slice_id", "time", "y", "x"], "dtype": "uint8"},
    "example_slices": {"dims": ["example", "slice"], "dtype": "int32"},
    # per-example facts (1.4+, both kinds; example_facts): "str" is fixed-length unicode (numpy <U)
    "split": {"dims": ["example"], "dtype": "str"},
    "patient": {"dims": ["example"], "dtype": "str"},
    "study": {"dims": ["example"], "dtype": "str"},
    "series": {"dims": ["example"], "dtype": "str"},
    "draw": {"dims": ["example"], "dtype": "int32"},
    "source_slice": {"dims": ["example", "slice"], "dtype": "int32"},
    "slice_position_mm": {"dims": ["example", "slice"], "dtype": "float64"},
    "frame_time_ms": {"dims": ["example", "time"], "dtype": "float64"},
    "pixel_spacing_mm": {"dims": ["example", "yx"], "dtype": "float64"},
    "fov_mm": {"dims": ["example", "yx"], "dtype": "float64"},
    "slice_thickness_mm": {"dims": ["example"], "dtype": "float64"},
}
DATA_ARRAYS = ("kspace", "mask", "kz", "target", "csm", "phase", "scale", "noise_sigma", "offsets")
TARGET_ARRAYS = ("example_slices", "offsets", "scale")  # per-example arrays of a targets store
FACT_ARRAYS = ("split", "patient", "study", "series", "draw", "source_slice", "slice_position_mm", "frame_time_ms",
               "pixel_spacing_mm", "fov_mm", "slice_thickness_mm")
FACT_CHUNK = 4096  # examples per chunk of a fact array (written once, by create: chunks may span examples)
# arrays a store of an older 1.x minor version may lack: name -> the version that added it
ADDED_IN = {"kz": (1, 1), "offsets": (1, 2), **{name: (1, 4) for name in FACT_ARRAYS}}
COIL_ARRAYS = ("kspace", "phase")  # chunked one coil per chunk; written coil by coil
register_format(FORMAT_NAME, ARRAYS)  # what --overwrite may replace (synth.dataset.output)


def _codecs(name: str):
    """Compression per array.

    The large arrays are stored uncompressed: complex k-space and the float32 phase, target and
    coil maps look like noise to a lossless compressor.  Blosc-zstd (level 1, byte shuffle) saved
    8 % of the bytes; without it ``generate`` ran 1.42x faster on Sunnybrook (see
    docs/store-format.md).  The boolean mask and the small kz table compress well.
    """
    if name in ("mask", "kz", "labels"):
        return [BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")]
    return None


def array_shapes(n: int, c: int, m: int, t: int, ny: int, nx: int, with_phase: bool = True):
    """name -> (shape, chunks) for a store of ``n`` examples."""
    out = {
        "kspace": ((n, c, t, ny, nx), (1, 1, t, ny, nx)),
        "mask": ((n, t, ny), (1, t, ny)),
        "kz": ((n, t, ny), (1, t, ny)),
        "target": ((n, m, t, ny, nx), (1, 1, t, ny, nx)),
        "csm": ((n, c, m, ny, nx), (1, c, m, ny, nx)),
        "phase": ((n, c, m, t, ny, nx), (1, 1, m, t, ny, nx)),
        "scale": ((n,), (1,)),
        "noise_sigma": ((n,), (1,)),
        "offsets": ((n, m), (1, m)),
        "complete": ((n,), (1,)),
    }
    if not with_phase:
        del out["phase"]
    return out


def target_array_shapes(n: int, s: int, m: int, t: int, ny: int, nx: int, with_labels: bool):
    """name -> (shape, chunks) for a targets store of ``n`` examples over ``s`` distinct slices."""
    out = {
        "slices": ((s, t, ny, nx), (1, t, ny, nx)),
        "labels": ((s, t, ny, nx), (1, t, ny, nx)),
        "example_slices": ((n, m), (1, m)),
        "offsets": ((n, m), (1, m)),
        "scale": ((n,), (1,)),
        "complete": ((n,), (1,)),
    }
    if not with_labels:
        del out["labels"]
    return out


def fact_shapes(n: int, m: int, t: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """name -> (shape, chunks) of the per-example fact arrays (1.4+) of a store of ``n`` examples."""
    rows = max(1, min(n, FACT_CHUNK))
    shapes = {"split": (n,), "patient": (n,), "study": (n,), "series": (n,), "draw": (n,), "source_slice": (n, m),
              "slice_position_mm": (n, m), "frame_time_ms": (n, t), "pixel_spacing_mm": (n, 2), "fov_mm": (n, 2),
              "slice_thickness_mm": (n,)}
    return {k: (v, (rows, *v[1:])) for k, v in shapes.items()}


def _shapes_of(dims: dict, kind: str, with_phase: bool, with_labels: bool):
    if kind == "targets":
        return target_array_shapes(dims["N"], dims["S"], dims["M"], dims["T"], dims["Ky"], dims["Kx"], with_labels)
    return array_shapes(dims["N"], dims["C"], dims["M"], dims["T"], dims["Ky"], dims["Kx"], with_phase)


def location(path: str | Path) -> str:
    """A local path for ``file://`` URLs (zarr's LocalStore creates folders), else the URL as given."""
    path = str(path)
    return path[len("file://"):] if path.startswith("file://") else path
