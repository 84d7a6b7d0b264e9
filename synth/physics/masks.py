r"""Cartesian ky-row undersampling masks for dynamic (cine) imaging.

Rows are **array indices** ``n = 0..Ny-1`` of centred k-space (``synth.physics.fft``: DC row ``Ny // 2``).
Every frame keeps the ``acs`` rows ``n0 .. n0 + acs - 1`` with ``n0 = Ny//2 - acs//2`` (for even
``acs`` one more row below DC than above it) fully sampled, for coil calibration.

``uniform``
    Row ``n`` of frame ``t`` is sampled when :math:`(n - o - t) \bmod R = 0`, with a random
    initial offset :math:`o \sim U\{0..R-1\}` from the generator: every R-th row, the pattern
    shifted by one row per frame (a sheared, "kt" lattice, so that R consecutive frames together
    cover all rows).  Rows per frame: ``floor(Ny/R)`` or ``ceil(Ny/R)`` lattice rows plus the
    ACS rows that are not on the lattice.
``random``
    Per frame, :math:`\max(0, \mathrm{round}(N_y/R) - \mathrm{acs})` rows drawn uniformly
    without replacement among the non-ACS rows, anew for every frame, so each frame has exactly
    ``max(round(Ny/R), acs)`` rows (round half up).  Uniform density outside the ACS: the ACS
    already supplies the low-frequency oversampling.
``vd``
    Variable-density random lines, the masks of CRNN-MRI (Schlemper et al., IEEE TMI 2018;
    ``cartesian_mask`` in ``utils/compressed_sensing.py`` of js3611/Deep-MRI-Reconstruction):
    per frame, anew for every frame, the same exact budget as ``random``
    (:math:`\max(0, \mathrm{round}(N_y/R) - \mathrm{acs})` non-ACS rows, so ``max(round(Ny/R),
    acs)`` in all) drawn without replacement with probability proportional to :func:`vd_density`:
    a Gaussian of standard deviation ``Ny/10`` around the DC row plus a uniform floor
    ``1/(2R)`` (CRNN-MRI's ``lmda/N`` with ``lmda = N/(2R)``), zero on the ACS, which is always
    sampled.  The draw is weighted sampling without replacement (Efraimidis & Spirakis 2006:
    the ``k`` largest keys ``log(u)/w``, ``u ~ U(0, 1)``), the same distribution as drawing rows one
    at a time with probability proportional to ``w`` among those left, as CRNN-MRI's
    ``np.random.choice(..., replace=False, p=pdf)`` does.

``R = 1`` samples every row.  The total acceleration of an SMS acquisition is ``R * M``.
"""

from __future__ import annotations

import numpy as np

from synth.errors import ConfigError

KINDS = ("uniform", "random", "vd")
# standard deviation of vd_density's Gaussian, in units of Ny (CRNN-MRI: sensitivity 0.5/(N/10)^2)
VD_SIGMA = 0.1


def acs_rows(ny: int, acs: int) -> slice:
    """The fully sampled centre rows: ``slice(Ny//2 - acs//2, Ny//2 - acs//2 + acs)``."""
    start = ny // 2 - acs // 2
    return slice(start, start + acs)


def rows_per_frame(ny: int, accel: int) -> int:
    """``round(Ny / R)``, half up: the row budget of a ``random`` frame (before the ACS floor)."""
    return int(np.floor(ny / accel + 0.5))


def vd_density(ny: int, accel: int) -> np.ndarray:
    """Unnormalised sampling density of the ``vd`` mask, float64 (Ny,).

    ``exp(-(n - Ny//2)^2 / (2 (Ny/10)^2)) + 1/(2R)`` for row ``n``: CRNN-MRI's ``normal_pdf`` around
    the centre plus its uniform floor ``lmda/N``, ``lmda = N/(2R)``, with the centre at this
    project's DC row ``Ny // 2``.  Before the ACS is taken out (``row_mask`` zeroes it).
    """
    n = np.arange(int(ny)) - int(ny) // 2
    sigma = VD_SIGMA * int(ny)
    return np.exp(-0.5 * (n / sigma) ** 2) + 1.0 / (2 * int(accel))


def row_mask(kind: str, n_frames: int, ny: int, accel: int, acs: int, rng: np.random.Generator) -> np.ndarray:
    """Undersampling mask of one example.

    Parameters
    ----------
    kind : {"uniform", "random", "vd"}
    n_frames : int
        T >= 1.
    ny : int
        Ny, number of ky rows.
    accel : int
        R, in-plane acceleration, ``1 <= R <= Ny``.
    acs : int
        Fully sampled centre rows, ``0 <= acs <= Ny``.
    rng : numpy.random.Generator
        ``uniform`` draws its initial offset, ``random`` and ``vd`` one (T, Ny - acs) block of
        uniforms.

    Returns
    -------
    mask : bool (T, Ny)
        True where row ``n`` of frame ``t`` is sampled.

    Raises
    ------
    ConfigError
        Unknown kind (``--mask``), ``R < 1`` or ``R > Ny`` (``--accel``), ``acs`` outside
        ``[0, Ny]`` (``--acs``), ``T < 1`` (``--frames``).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if kind not in KINDS:
        raise ConfigError(f"--mask: must be one of {KINDS}, got {kind!r}")
    t, ny, r, acs = int(n_frames), int(ny), int(accel), int(acs)
    if t < 1:
        raise ConfigError(f"--frames: must be >= 1, got {n_frames}")
    if ny < 1:
        raise ConfigError(f"--matrix: need at least one ky row, got Ny = {ny}")
    if r < 1 or r > ny:
        raise ConfigError(f"--accel: must be between 1 and Ny = {ny} (the number of ky rows), got {accel}; "
                          "lower --accel or use a larger --matrix")
    if acs < 0 or acs > ny:
        raise ConfigError(f"--acs: must be between 0 and Ny = {ny} (the number of ky rows), got {acs}")

    mask = np.zeros((t, ny), bool)
    if kind == "uniform":
        offset = int(rng.integers(r))
        n = np.arange(ny)[None, :]
        frames = np.arange(t)[:, None]
        mask[...] = (n - offset - frames) % r == 0
    else:
        centre = np.zeros(ny, bool)
        centre[acs_rows(ny, acs)] = True
        outside = np.flatnonzero(~centre)
        k = min(max(rows_per_frame(ny, r) - acs, 0), outside.size)
        keys = rng.random((t, outside.size))
        if kind == "vd":
            # weighted sampling without replacement: the k smallest -log(u)/w (u in (0, 1]) are
            # the k largest Efraimidis-Spirakis keys u^(1/w); a plain uniform subset for "random"
            keys = -np.log1p(-keys) / vd_density(ny, r)[outside]
        if k == outside.size:
            mask[:, outside] = True
        elif k > 0:
            # the k smallest of the i.i.d. keys per frame, vectorised
            pick = np.argpartition(keys, k - 1, axis=1)[:, :k]
            mask[np.arange(t)[:, None], outside[pick]] = True
    mask[:, acs_rows(ny, acs)] = True
    return mask
