"""The per-example fact arrays of a store (format 1.4): split, pseudonymous patient/study/series,
draw, source slices, slice positions, frame times, pixel spacing, field of view and slice
thickness, derived from ``attrs["examples"]``."""

from __future__ import annotations

import numpy as np


def _joined(values) -> str:
    """Distinct non-empty values in first-seen order, joined by '+' (an across-series example's patients)."""
    return "+".join(dict.fromkeys(str(v) for v in values if v))


def _working_times(times, params: dict, t: int) -> np.ndarray:
    """A source's frame times (ms, as recorded) mapped onto the store's ``t`` frames, as
    :func:`synth.io.resolution.fit_frames` maps the frames themselves (first ``t``, or linear
    interpolation over the same span); NaN where unknown."""
    out = np.full(t, np.nan)
    if not times:
        return out
    v = np.asarray(times, dtype=float)
    frames = params.get("frames")
    if frames is None or int(frames) == len(v):
        if len(v) == t:
            out[:] = v
        return out
    if int(frames) != t:
        return out
    if params.get("frames_mode", "crop") == "crop":
        if len(v) >= t:
            out[:] = v[:t]
        return out
    if len(v) == 1:
        out[:] = v[0]
    else:
        out[:] = np.interp(np.linspace(0, len(v) - 1, t), np.arange(len(v)), v)
    return out


def example_facts(examples: list[dict], dims: dict[str, int], params: dict) -> dict[str, np.ndarray]:
    """The per-example fact arrays (format 1.4) of a store, from its ``attrs["examples"]``.

    Parameters
    ----------
    examples : ``attrs["examples"]``: per example its ``index``, ``draw``, ``split`` (optional) and
        ``sources`` (one per SMS slice, in slice order: pseudonymous ``patient``/``study``/``series``
        keys, ``slice`` index, ``position_mm``, ``position_source``, ``stored_shape``,
        ``acquisition_matrix``, ``pixel_spacing_mm``, ``times_ms`` and ``slice_thickness_mm``; the
        last four may be absent or null).
    dims : the store's ``N``, ``M``, ``T``, ``Ky``, ``Kx``.
    params : the store's ``params`` (``resolution``, ``frames``, ``frames_mode`` say how the
        stored frames and pixels relate to the input's).

    Returns
    -------
    ``split``, ``patient``, ``study``, ``series`` : unicode (N,); ``""`` where unknown (no split).
        An example whose slices come from several series/patients (``--combine across-series``)
        lists their distinct keys in slice order joined by ``+``.
    ``draw`` : int32 (N,), the draw index; ``source_slice`` int32 (N, M), each SMS slice's index
        within its series (-1 unknown).
    ``slice_position_mm`` : float64 (N, M), each SMS slice's position along its series' slice
        normal, mm, as the input recorded it (NaN when the input has no geometry: fastMRI-style
        and CMRxRecon raw k-space record slice indices).
    ``frame_time_ms`` : float64 (N, T), each stored frame's time, ms (trigger delay, or the
        acquisition clock relative to the series' first frame), after ``--frames``; the mean over
        the SMS slices, which an SMS acquisition excites at once; NaN when unknown.
    ``pixel_spacing_mm`` : float64 (N, 2), (row, column) size of a stored pixel, mm: the input's
        spacing times stored size over the acquired matrix kept by ``--resolution acquired``
        (``--matrix`` changes the FOV, not the pixel size); of the example's first slice.
    ``fov_mm`` : float64 (N, 2), ``(Ky, Kx) * pixel_spacing_mm``: the field of view of the stored grid.
    ``slice_thickness_mm`` : float64 (N,), the input's slice thickness (of the first slice), NaN unknown.
    """
    from synth.io.resolution import acquired_shape

    n, m, t, ny, nx = (int(dims[k]) for k in ("N", "M", "T", "Ky", "Kx"))
    text = {k: [""] * n for k in ("split", "patient", "study", "series")}
    draw = np.full(n, -1, np.int32)
    source_slice = np.full((n, m), -1, np.int32)
    position = np.full((n, m), np.nan)
    times = np.full((n, t), np.nan)
    spacing = np.full((n, 2), np.nan)
    thickness = np.full(n, np.nan)
    for row, ex in enumerate(examples or []):
        i = int(ex.get("index", row))
        if not 0 <= i < n:
            continue
        src = list(ex.get("sources") or [])
        text["split"][i] = str(ex.get("split") or "")
        for key in ("patient", "study", "series"):
            text[key][i] = _joined(s.get(key) for s in src)
        if ex.get("draw") is not None:
            draw[i] = int(ex["draw"])
        for j, s in enumerate(src[:m]):
            if s.get("slice") is not None:
                source_slice[i, j] = int(s["slice"])
            known = not str(s.get("position_source", "")).startswith("slice index")
            if known and s.get("position_mm") is not None:
                position[i, j] = float(s["position_mm"])
        if src:
            per = np.stack([_working_times(s.get("times_ms"), params, t) for s in src])
            times[i] = per.mean(axis=0)  # NaN where any slice's time is unknown
            s0 = src[0]
            if s0.get("slice_thickness_mm") is not None:
                thickness[i] = float(s0["slice_thickness_mm"])
            if s0.get("pixel_spacing_mm") and s0.get("stored_shape"):
                stored = tuple(int(v) for v in s0["stored_shape"])
                acq = s0.get("acquisition_matrix")
                kept = acquired_shape(stored, None if acq is None else tuple(acq), params.get("resolution", "acquired"))
                spacing[i] = [float(d) * st / max(k, 1) for d, st, k in zip(s0["pixel_spacing_mm"], stored, kept)]
    out = {k: np.array(v, dtype=f"<U{max([1, *map(len, v)])}") for k, v in text.items()}
    out.update(draw=draw, source_slice=source_slice, slice_position_mm=position, frame_time_ms=times,
               pixel_spacing_mm=spacing, fov_mm=spacing * np.array([ny, nx], float), slice_thickness_mm=thickness)
    return out
