r"""Synthetic receive-coil sensitivity maps :math:`S_{c,i}(y, x)` for the M slices of an example.

Geometry and units
------------------
Positions are in units of the field of view's longer side ``L = max(Ny, Nx)`` pixels (square
pixels assumed): pixel ``(y, x)`` sits at :math:`\tilde y = (y - N_y/\!/2)/L`,
:math:`\tilde x = (x - N_x/\!/2)/L` (the DC-pixel convention of ``synth.physics.fft``), so the FOV is
the box :math:`|\tilde y| \le N_y/2L,\ |\tilde x| \le N_x/2L`, within :math:`[-1/2, 1/2]^2`.
Slice ``i`` of an SMS group lies at :math:`z_i` = ``slice_offsets[i]`` along the slice normal, in
the same units (e.g. ``distance_mm / (L * pixel_mm)``).  The maps are smooth functions of
:math:`(\tilde y, \tilde x, z)` evaluated at each slice's plane, so slices at different offsets get
smoothly different maps and slices at the same offset identical ones.  Every coil also has a
random position :math:`\zeta_c` along the normal: offsets are given relative to the slices' mean,
so the two slices of an M = 2 example sit at :math:`\pm z`, and coils exactly at ``z = 0`` would
see both alike.

Models
------
``circle``: C coils evenly spaced on a circle of radius :math:`\rho \sim U(0.8, 1.0)` around the
centre (outside the FOV, whose corners are at most 0.707 away), at angles
:math:`\theta_c = \theta_0 + 2\pi c / C` with a random global rotation
:math:`\theta_0 \sim U(0, 2\pi)`, each at height :math:`\zeta_c \sim U(-0.25, 0.25)`:

.. math:: S_{c,i} \propto d_{c,i}^{-3}\, e^{j(\angle(\mathbf r - \mathbf p_c) - \theta_c + \psi_c)},
          \qquad d_{c,i} = \sqrt{|\mathbf r - \mathbf p_c|^2 + (z_i - \zeta_c)^2}

The phase is the in-plane geometric angle of the pixel seen from the coil, as in
``sigpy.mri.sim.birdcage_maps``, plus a random per-coil offset :math:`\psi_c \sim U(0, 2\pi)`.

``blobs``: per coil an anisotropic 3D Gaussian with a smooth linear phase,

.. math:: S_{c,i} \propto \exp\Bigl(-\tfrac12 (\mathbf r - \boldsymbol\mu_c)^T \Sigma_c^{-1}
          (\mathbf r - \boldsymbol\mu_c) - \frac{(z_i - \zeta_c)^2}{2\sigma_{z,c}^2}\Bigr)\,
          e^{j(\psi_c + 2\pi\,\mathbf k_c \cdot (\tilde y, \tilde x, z_i))}

with centre :math:`\boldsymbol\mu_c` uniform in the FOV box enlarged by 1.2, :math:`\Sigma_c =
R(\alpha_c)\,\mathrm{diag}(\sigma_c^2, \rho_c \sigma_c^2)\,R(\alpha_c)^T`, primary standard
deviation :math:`\sigma_c \sim U(0.2, 0.6)`, eigenvalue ratio :math:`\rho_c \sim U(0.2, 1)`,
rotation :math:`\alpha_c \sim U(0, \pi)`, z-extent :math:`\sigma_{z,c} \sim U(0.2, 0.6)` and
z-centre :math:`\zeta_c \sim U(-0.25, 0.25)`, :math:`\psi_c \sim U(0, 2\pi)` and a
phase gradient :math:`\mathbf k_c` of random 3D direction and magnitude :math:`U(0, 0.5)` cycles
per FOV.

``mixed``: each example draws ``circle`` or ``blobs`` with probability 1/2
(:func:`draw_coil_kind`; call it yourself first if you want to record which was drawn, the
random stream is the same).

Normalisation: :math:`\sum_c |S_{c,i}(y, x)|^2 = 1` at every pixel of every slice, so the
root-sum-of-squares combination of the coil images returns the magnitude.  It is done in the
log domain (max-subtracted) so far-from-every-blob pixels cannot underflow to 0/0.
"""

from __future__ import annotations

import numpy as np

from synth.errors import ConfigError

KINDS = ("circle", "blobs", "mixed")

CIRCLE_RADIUS = (0.8, 1.0)
CIRCLE_POWER = 3
COIL_Z = (-0.25, 0.25)
BLOB_CENTRE_BOX = 1.2
BLOB_SIGMA = (0.2, 0.6)
BLOB_RATIO = (0.2, 1.0)
BLOB_Z_SIGMA = (0.2, 0.6)
BLOB_Z_CENTRE = COIL_Z
BLOB_PHASE_GRADIENT = (0.0, 0.5)

COIL_MODEL: dict = {
    "units": "positions in units of L = max(Ny, Nx) pixels; pixel (y, x) at ((y - Ny//2)/L, (x - Nx//2)/L); "
    "slice i at z = slice_offsets[i]",
    "normalisation": "sum_c |S_c|^2 = 1 at every pixel of every slice",
    "mixed": "circle or blobs with probability 1/2 each, per example",
    "circle": {
        "model": "S_c ~ d^-3 * exp(j(angle(r - p_c) - theta_c + psi_c)), d = sqrt(|r - p_c|^2 + (z - zeta_c)^2)",
        "radius": list(CIRCLE_RADIUS),
        "power": CIRCLE_POWER,
        "angles": "theta_c = theta_0 + 2 pi c / C, theta_0 ~ U(0, 2 pi)",
        "coil_z": list(COIL_Z),
        "phase_offset_rad": [0.0, float(2 * np.pi)],
    },
    "blobs": {
        "model": "S_c ~ exp(-(r-mu)^T Sigma^-1 (r-mu)/2 - (z-zeta)^2/(2 sigma_z^2)) * exp(j(psi + 2 pi k.(y,x,z)))",
        "centre": f"uniform in the FOV box scaled by {BLOB_CENTRE_BOX}",
        "sigma": list(BLOB_SIGMA),
        "eigenvalue_ratio": list(BLOB_RATIO),
        "rotation_rad": [0.0, float(np.pi)],
        "z_sigma": list(BLOB_Z_SIGMA),
        "z_centre": list(BLOB_Z_CENTRE),
        "phase_offset_rad": [0.0, float(2 * np.pi)],
        "phase_gradient_cycles_per_fov": list(BLOB_PHASE_GRADIENT),
    },
}


def _check(n_coils, shape, slice_offsets, rng) -> tuple[int, int, int, np.ndarray]:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if int(n_coils) < 1:
        raise ConfigError(f"--coils: must be >= 1, got {n_coils}")
    ny, nx = (int(s) for s in shape)
    if ny < 1 or nx < 1:
        raise ConfigError(f"--matrix: image shape must be positive, got {tuple(shape)}")
    z = np.asarray(slice_offsets, dtype=np.float64)
    if z.ndim != 1 or z.size < 1 or not np.isfinite(z).all():
        raise ValueError(f"slice_offsets must be a finite 1-D array (M,), got {slice_offsets!r}")
    return int(n_coils), ny, nx, z


def _grid(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    side = float(max(ny, nx))
    return (np.arange(ny) - ny // 2) / side, (np.arange(nx) - nx // 2) / side


def _normalise(log_mag: np.ndarray, phase_factor: np.ndarray) -> np.ndarray:
    """``exp(log_mag) * phase_factor`` scaled so that the sum over axis 0 of |.|^2 is 1."""
    # geometry in float64 (cheap, (C, Y, X)), the full-size arithmetic in float32
    mag = (log_mag - log_mag.max(0, keepdims=True)).astype(np.float32)
    np.exp(mag, out=mag)
    mag /= np.sqrt(np.einsum("c...,c...->...", mag, mag))[None]
    out = np.empty(np.broadcast_shapes(mag.shape, phase_factor.shape), np.complex64)
    np.multiply(mag, phase_factor.astype(np.complex64, copy=False), out=out)
    return out


def draw_coil_kind(kind: str, rng: np.random.Generator) -> str:
    """Resolve ``mixed`` to ``circle`` or ``blobs`` (probability 1/2, one draw); others pass through."""
    if kind not in KINDS:
        raise ConfigError(f"--csm: must be one of {KINDS}, got {kind!r}")
    if kind == "mixed":
        return "circle" if rng.random() < 0.5 else "blobs"
    return kind


def circle_maps(
    n_coils: int,
    shape: tuple[int, int],
    slice_offsets: np.ndarray,
    rng: np.random.Generator,
    *,
    normalize: bool = True,
) -> np.ndarray:
    r"""Coils evenly spaced on a circle around the FOV, magnitude :math:`1/d^3` (see module doc).

    Parameters
    ----------
    n_coils : int
        C.
    shape : (Ny, Nx)
    slice_offsets : float (M,)
        Slice positions along the normal, in units of ``L = max(Ny, Nx)`` pixels.
    rng : numpy.random.Generator
        Draws, in order: radius, global rotation, per-coil phase offsets (C,), per-coil heights (C,).
    normalize : bool
        False returns the raw :math:`d^{-3} e^{j\phi}` (``d`` in FOV units), for inspection and tests.

    Returns
    -------
    maps : complex64 (C, M, Y, X)
        :math:`\sum_c |S|^2 = 1` when ``normalize``.
    """
    c, ny, nx, z = _check(n_coils, shape, slice_offsets, rng)
    radius = rng.uniform(*CIRCLE_RADIUS)
    theta = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(c) / c
    psi = rng.uniform(0, 2 * np.pi, size=c)
    zeta = rng.uniform(*COIL_Z, size=c)
    y, x = _grid(ny, nx)
    # geometry per coil in float64, the (C, Y, X) arithmetic in float32 (complex128 arithmetic
    # on (C, Y, X) was 4 ms of an example's 5)
    dy = (y[None, :, None] - (radius * np.sin(theta))[:, None, None]).astype(np.float32)  # (C, Y, 1)
    dx = (x[None, None, :] - (radius * np.cos(theta))[:, None, None]).astype(np.float32)  # (C, 1, X)
    r2 = dy * dy + dx * dx  # (C, Y, X), > 0: the coils are outside the FOV
    # exp(j * angle(dx + j dy)) * exp(j (psi - theta)) without trigonometry
    inv = np.float32(1.0) / np.sqrt(r2)
    u, v = dx * inv, dy * inv  # cos, sin of the angle
    ca = np.cos(psi - theta).astype(np.float32)[:, None, None]
    sa = np.sin(psi - theta).astype(np.float32)[:, None, None]
    phase = np.empty(r2.shape, np.complex64)
    phase.real = u * ca - v * sa
    phase.imag = u * sa + v * ca
    # the full-size (C, M, Y, X) part in float32: a float64 log of it was most of this function
    d2 = r2[:, None] + ((z[None, :] - zeta[:, None]) ** 2).astype(np.float32)[:, :, None, None]
    log_mag = np.log(d2)
    log_mag *= np.float32(-0.5 * CIRCLE_POWER)
    if not normalize:
        return (np.exp(log_mag) * phase[:, None]).astype(np.complex64)
    return _normalise(log_mag, phase[:, None])


def blob_maps(
    n_coils: int,
    shape: tuple[int, int],
    slice_offsets: np.ndarray,
    rng: np.random.Generator,
    *,
    normalize: bool = True,
) -> np.ndarray:
    """Random anisotropic Gaussian blobs with a z-extent and a smooth linear phase (see module doc).

    Parameters
    ----------
    n_coils : int
        C.
    shape : (Ny, Nx)
    slice_offsets : float (M,)
        Slice positions along the normal, in units of ``L = max(Ny, Nx)`` pixels.
    rng : numpy.random.Generator
        Draws one (C, 11) block of uniforms: centre y/x, sigma, ratio, rotation, z-sigma,
        z-centre, phase offset, gradient direction (2) and magnitude.
    normalize : bool
        False returns the raw Gaussian times phase (peak magnitude 1 per coil).

    Returns
    -------
    maps : complex64 (C, M, Y, X)
        :math:`\\sum_c |S|^2 = 1` when ``normalize``.
    """
    c, ny, nx, z = _check(n_coils, shape, slice_offsets, rng)
    side = float(max(ny, nx))
    u = rng.random((c, 11))
    half = BLOB_CENTRE_BOX * np.array([ny, nx]) / (2 * side)
    mu_y = (2 * u[:, 0] - 1) * half[0]
    mu_x = (2 * u[:, 1] - 1) * half[1]
    sig = BLOB_SIGMA[0] + (BLOB_SIGMA[1] - BLOB_SIGMA[0]) * u[:, 2]
    ratio = BLOB_RATIO[0] + (BLOB_RATIO[1] - BLOB_RATIO[0]) * u[:, 3]
    alpha = np.pi * u[:, 4]
    sig_z = BLOB_Z_SIGMA[0] + (BLOB_Z_SIGMA[1] - BLOB_Z_SIGMA[0]) * u[:, 5]
    zeta = BLOB_Z_CENTRE[0] + (BLOB_Z_CENTRE[1] - BLOB_Z_CENTRE[0]) * u[:, 6]
    psi = 2 * np.pi * u[:, 7]
    # gradient direction uniform on the sphere, magnitude uniform
    cos_pol = 2 * u[:, 8] - 1
    azim = 2 * np.pi * u[:, 9]
    gmag = BLOB_PHASE_GRADIENT[0] + (BLOB_PHASE_GRADIENT[1] - BLOB_PHASE_GRADIENT[0]) * u[:, 10]
    sin_pol = np.sqrt(1 - cos_pol**2)
    k = 2 * np.pi * gmag[:, None] * np.stack([sin_pol * np.cos(azim), sin_pol * np.sin(azim), cos_pol], 1)

    y, x = _grid(ny, nx)
    dy = y[None, :, None] - mu_y[:, None, None]  # (C, Y, 1)
    dx = x[None, None, :] - mu_x[:, None, None]  # (C, 1, X)
    ca, sa = np.cos(alpha)[:, None, None], np.sin(alpha)[:, None, None]
    p = ca * dy + sa * dx  # along the primary axis
    q = -sa * dy + ca * dx
    quad = (p / sig[:, None, None]) ** 2 + (q / (sig * np.sqrt(ratio))[:, None, None]) ** 2  # (C, Y, X)
    zterm = ((z[None, :] - zeta[:, None]) / sig_z[:, None]) ** 2  # (C, M)
    log_mag = quad.astype(np.float32)[:, None] + zterm.astype(np.float32)[:, :, None, None]  # (C, M, Y, X)
    log_mag *= np.float32(-0.5)
    # the linear phase is separable: exp(j(k_y y + k_x x + psi)) = exp(j k_y y) exp(j k_x x) exp(j psi),
    # C*(Y+X) complex exponentials instead of C*Y*X; the z part is one constant per (coil, slice)
    ey = np.exp(1j * (k[:, 0, None] * y[None, :] + psi[:, None])).astype(np.complex64)  # (C, Y)
    ex = np.exp(1j * k[:, 1, None] * x[None, :]).astype(np.complex64)  # (C, X)
    phase = ((ey[:, :, None] * ex[:, None, :])[:, None]
             * np.exp(1j * k[:, 2:3] * z[None, :]).astype(np.complex64)[:, :, None, None])
    if not normalize:
        return (np.exp(log_mag) * phase).astype(np.complex64)
    return _normalise(log_mag, phase)


def coil_maps(
    kind: str, n_coils: int, shape: tuple[int, int], slice_offsets: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Sensitivity maps of one SMS example.

    Parameters
    ----------
    kind : {"circle", "blobs", "mixed"}
        ``mixed`` draws one of the two with probability 1/2 (:func:`draw_coil_kind`).
    n_coils : int
        C.
    shape : (Ny, Nx)
    slice_offsets : float (M,)
        Slice positions along the normal in units of ``L = max(Ny, Nx)`` pixels (the FOV's longer
        side), e.g. ``(position_mm - mean) / (L * pixel_spacing_mm)``.
    rng : numpy.random.Generator

    Returns
    -------
    maps : complex64 (C, M, Y, X)
        :math:`\\sum_c |S_{c,i}|^2 = 1` at every pixel of every slice.
    """
    kind = draw_coil_kind(kind, rng)
    if kind == "circle":
        return circle_maps(n_coils, shape, slice_offsets, rng)
    return blob_maps(n_coils, shape, slice_offsets, rng)
