r"""A dynamic cardiac phantom written as real multi-file DICOM: the embedded default sample.

The phantom is a short-axis (SAX) stack through an analytic chest: body ellipse (subcutaneous fat
around soft tissue), lungs, liver, spine, descending aorta, and the heart (LV blood pool,
myocardium with papillary muscles, RV crescent, patchy epicardial fat).  The LV is a truncated
prolate ellipsoid, so slices from base to apex shrink; the RV fades out towards the apex (slices
above the base repeat the base, slices beyond the apex show no heart).
Edges are analytic soft steps half an acquired pixel wide (anti-aliasing without super-sampling),
a few smooth random sinusoids give tissue texture, and a smooth receive-bias field multiplies it
all, so nothing is piecewise flat.

Two kinds
---------
``cine``
    bright-blood (SSFP-like) contrast, one periodic cardiac cycle of ``n_frames`` phases: the
    endocardial radius follows a periodic contraction curve ``c(phi)`` and the myocardium keeps its
    area (so the wall thickens in systole); frame ``t`` is at phase ``phi = t / n_frames``, so frame
    ``n_frames`` would equal frame 0.  Breath-held: nothing outside the heart moves.
``perfusion``
    first-pass saturation-recovery contrast (dark blood before contrast), one frame per heartbeat;
    each slice is read at its own trigger delay, so at its own, fixed cardiac phase.  Gamma-variate
    concentrations (signal ``s0 + (smax - s0)(1 - exp(-2 C))``) reach the RV first, then the LV and
    aorta, then the myocardium (lower, later, slow washout); the apical half of the stack has a
    subendocardial defect sector with a quarter of the normal uptake; free breathing moves heart
    and liver by a few mm.  For series shorter than ``_BOLUS_BEATS`` frames the bolus is
    time-compressed (frame ``t`` is bolus time ``t * 30 / T`` beats) so every series shows the
    whole first pass; breathing runs in real beats.

The design follows the MRXCAT idea (analytic anatomy + tissue signal models + scanner effects;
Wissmann et al., J Cardiovasc Magn Reson 2014;16:63) on a far simpler, 2D analytic anatomy.

From image to DICOM
-------------------
``phantom_images`` renders the *acquired* matrix (``spec.acquired``, pixel size
``fov / acquired``), band-limited to it (even-size Nyquist lines zeroed, so its zero-filled
interpolation is real).  ``acquired_images`` adds thermal noise when ``spec.snr`` is set (complex
white Gaussian, standard deviation ``1 / snr`` of the full-scale magnitude 1.0; the default is
none).  ``write_phantom`` then does what scanners do: zero-fills k-space to the stored matrix
(:func:`zero_fill`), keeps the magnitude (Rician where there is noise), scales by
``SIGNAL_SCALE`` and quantises with ``RescaleSlope = 0.5``, so
``stored * slope + intercept = SIGNAL_SCALE * zero_fill(acquired_images(spec))`` up
to quantisation and the outer k-space of every stored image is (nearly) empty.  Cine pixels are
unsigned (12 bits stored), perfusion pixels signed 16-bit, like the scanners they imitate.  Cine
files carry ``TriggerTime`` = phase * RR and ``CardiacNumberOfImages = T``; perfusion files carry
each slice's trigger delay (constant over frames), ``CardiacNumberOfImages = 1`` and
``TemporalPositionIdentifier`` / ``NumberOfTemporalPositions``; both carry ``AcquisitionTime``
increasing in acquisition order.

Geometry conventions
--------------------
* Image axes (rows, cols) = (y, x); the phantom's in-plane origin is pixel ``(N // 2, M // 2)``
  (the ``fft2c`` centre), so zero-filling keeps every structure where it was.
* Stored pixels are square: ``PixelSpacing = fov_mm / max(matrix)``; the acquired matrix covers
  the same field of view with coarser (possibly anisotropic) pixels.
* Slice ``s`` is centred at ``P0 + (s - (S - 1) / 2) * slice_spacing_mm * n``, with
  ``n = row_dir x col_dir`` the normal of the oblique ``ImageOrientationPatient``; ``s`` runs from
  base towards apex.  ``SliceLocation = P . n``.
* ``AcquisitionMatrix`` follows the DICOM order (frequency rows, frequency columns, phase rows,
  phase columns): phase encoding runs along the smaller acquired dimension, so
  ``acquired = (64, 56)`` is ``ROW`` phase encoding, ``[0, 64, 56, 0]`` (rows = 64 frequency
  samples, cols = 56 phase lines); ``acquired = (56, 64)`` is ``COL``, ``[64, 0, 0, 56]``.

Instance numbers follow acquisition order (cine: slice-major; perfusion: heartbeat-major) and file
names are hashes of the SOP Instance UID, so readers must order by the tags, never by file name.

Modules
-------
* :mod:`~synth.io.phantom.render`: :class:`PhantomSpec`, the seed-drawn anatomy, the cine and
  perfusion physiology, and the images (:func:`phantom_images`, :func:`acquired_images`,
  :func:`phantom_labels`, :func:`zero_fill`, :func:`draw_snr`).
* :mod:`~synth.io.phantom.write`: :func:`write_phantom`, the images as a scanner's DICOM files,
  and :func:`describe`.
"""

from synth.io.phantom.render import (KINDS, LABELS, RESCALE_INTERCEPT, RESCALE_SLOPE, SIGNAL_SCALE, PhantomSpec,
                                     acquired_images, draw_snr, phantom_images, phantom_labels, zero_fill)
from synth.io.phantom.write import describe, write_phantom

__all__ = ["KINDS", "LABELS", "RESCALE_INTERCEPT", "RESCALE_SLOPE", "SIGNAL_SCALE", "PhantomSpec", "acquired_images",
           "describe", "draw_snr", "phantom_images", "phantom_labels", "write_phantom", "zero_fill"]
