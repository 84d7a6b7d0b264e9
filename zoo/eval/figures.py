"""Figures of reconstructions: zero-filled, reconstruction and truth of every SMS slice, with errors.

Per example and SMS slice: zero-filled, reconstruction and truth side by side with the error maps
``|zero-filled - truth|`` and ``|recon - truth|`` magnified ``error_scale`` times, the slice's
metrics in the titles.  :func:`save_png` draws a grid of a few frames, :func:`save_gif` animates
every frame (Pillow, through matplotlib's ``PillowWriter``).  ``smssynth recon --png/--gif``
(:func:`zoo.eval.recon.run_recon`) calls them for every reconstructed example.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from zoo.metrics import nmse, psnr

if TYPE_CHECKING:
    from zoo.eval.recon import Reconstruction

__all__ = ["save_gif", "save_png"]


def _slice_metrics(mag: Tensor, ref: Tensor) -> list[str]:
    """Per SMS slice: NMSE, PSNR and SSIM over its frames, PSNR/SSIM with the example's data range.

    ``mag``, ``ref`` float (M, T, Y, X).  The slices are scored as a batch of M one-slice examples.
    """
    from zoo.metrics import ssim_frames

    p, r = mag[:, None].double(), ref[:, None].double()  # (M, 1, T, Y, X)
    dr = float(ref.max()) or 1.0
    n, ps = nmse(p, r).tolist(), psnr(p, r, dr).tolist()
    try:
        ss = [f"{v:.3f}" for v in ssim_frames(p, r, torch.full((len(p),), dr, dtype=torch.float64)).mean(1).tolist()]
    except ValueError:  # images smaller than the SSIM window
        ss = ["n/a"] * len(p)
    return [f"NMSE {a:.3g}  PSNR {b:.2f} dB  SSIM {c}" for a, b, c in zip(n, ps, ss)]


def _panels(rec: Reconstruction, error_scale: float):
    """Per SMS slice: the five panels (title, (T, Y, X) stack, display maximum, colormap)."""
    vmax = float(rec.target.max()) or 1.0
    zf_txt, rc_txt = _slice_metrics(rec.zero_filled, rec.target), _slice_metrics(rec.magnitude, rec.target)
    out = []
    for i in range(rec.target.shape[0]):
        zf, rc, tg = rec.zero_filled[i].numpy(), rec.magnitude[i].numpy(), rec.target[i].numpy()
        out.append([
            (f"zero-filled\n{zf_txt[i]}", zf, vmax, "gray"),
            (f"reconstruction\n{rc_txt[i]}", rc, vmax, "gray"),
            ("ground truth", tg, vmax, "gray"),
            (f"|zero-filled - truth| x{error_scale:g}", np.abs(zf - tg), vmax / error_scale, "inferno"),
            (f"|recon - truth| x{error_scale:g}", np.abs(rc - tg), vmax / error_scale, "inferno"),
        ])
    return out


def _figure(n_rows: int, ny: int, nx: int):
    from matplotlib.figure import Figure

    w = 5 * 2.6
    h = n_rows * 2.6 * ny / nx + 1.4
    return Figure(figsize=(w, h), layout="constrained")


def _show(ax, panel, frame: int, titled: bool = True):
    """Draw frame ``frame`` of one panel (title, (T, Y, X) stack, display maximum, colormap) on ``ax``."""
    title, stack, vmax, cmap = panel
    im = ax.imshow(stack[frame], cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if titled:
        ax.set_title(title, fontsize=7)
    return im


def _name(rec: Reconstruction, i: int, suffix: str) -> str:
    return f"example-{rec.index:04d}-slice-{i}{suffix}"


def save_png(rec: Reconstruction, out_dir: str | Path, *, label: str = "", error_scale: float = 5.0,
             n_frames: int = 4, dpi: int = 100) -> list[Path]:
    """One PNG per SMS slice: rows = ``n_frames`` evenly spaced frames, columns = the five panels.

    Returns the paths written (``example-NNNN-slice-I.png`` in ``out_dir``, created).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m, t, ny, nx = rec.magnitude.shape
    frames = sorted(set(np.linspace(0, t - 1, min(n_frames, t)).round().astype(int).tolist()))
    paths = []
    for i, panels in enumerate(_panels(rec, error_scale)):
        fig = _figure(len(frames), ny, nx)
        axes = fig.subplots(len(frames), len(panels), squeeze=False)
        for r, f in enumerate(frames):
            for c, panel in enumerate(panels):
                _show(axes[r, c], panel, f, titled=r == 0)
                if c == 0:
                    axes[r, c].set_ylabel(f"frame {f}", fontsize=8)
        fig.suptitle(f"{label}  example {rec.index}  SMS slice {i} of {m}", fontsize=9)
        path = out_dir / _name(rec, i, ".png")
        fig.savefig(path, dpi=dpi)
        paths.append(path)
    return paths


def save_gif(rec: Reconstruction, out_dir: str | Path, *, label: str = "", error_scale: float = 5.0,
             fps: float = 5.0, dpi: int = 80) -> list[Path]:
    """One animated GIF per SMS slice, one GIF frame per time frame (T frames), the five panels.

    Returns the paths written (``example-NNNN-slice-I.gif`` in ``out_dir``, created).
    """
    from matplotlib.animation import PillowWriter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m, t, ny, nx = rec.magnitude.shape
    paths = []
    for i, panels in enumerate(_panels(rec, error_scale)):
        fig = _figure(1, ny, nx)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        images = [_show(ax, panel, 0) for ax, panel in zip(axes, panels)]
        # the frame number in the title also keeps Pillow from merging identical consecutive frames
        sup = fig.suptitle("", fontsize=9)
        path = out_dir / _name(rec, i, ".gif")
        writer = PillowWriter(fps=fps)
        with writer.saving(fig, str(path), dpi):
            for f in range(t):
                for im, (_, stack, _, _) in zip(images, panels):
                    im.set_data(stack[f])
                sup.set_text(f"{label}  example {rec.index}  SMS slice {i} of {m}  frame {f + 1}/{t}")
                writer.grab_frame()
        paths.append(path)
    return paths
