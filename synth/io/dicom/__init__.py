"""DICOM ingestion: files and folders -> series -> slices -> frames in temporal order.

:func:`scan` reads headers only and returns a :class:`Catalog`; :func:`load_slice` decodes one
slice's frames to a float32 ``(T, rows, cols)`` array of magnitudes with the rescale applied.

Grouping
--------
* **Series**: (StudyInstanceUID, SeriesInstanceUID).
* **Slices**: position along the slice normal ``n = row_cosines x col_cosines`` (from
  ImageOrientationPatient), ``position = ImagePositionPatient . n`` in mm.  Positions within
  :data:`POSITION_TOL_MM` (0.01 mm) of a slice's first position belong to that slice.  When an
  image's IPP/IOP is missing or malformed, the series is refused under ``on_error="fail"`` (the
  message names the file and the attribute); under ``"skip"`` its slices are separated by
  SliceLocation instead (counted in ``Catalog.fallbacks`` and warned once per series).  All
  images of a series must share one orientation (normals within about 0.8 degrees).
* **Frames**: grouped by position first, then ordered in time, because trigger times differ
  from slice to slice (Sunnybrook).  The time key is chosen per series: TriggerTime
  (Enhanced MR: CardiacSynchronizationSequence NominalCardiacTriggerDelayTime), else
  AcquisitionDate/Time (Enhanced: FrameContentSequence FrameAcquisitionDateTime), else
  TemporalPositionIndex (Enhanced only), else InstanceNumber (then frame index); a key is used
  only if every frame has it and it separates every slice's frames.  Falling back names the
  key used in a warning.  Clock times are reported relative to the series' earliest frame,
  so no acquisition time of day leaves this module.

Enhanced (multi-frame) MR/CT files give the same slices as single-frame files: each frame's
position, orientation, pixel spacing, timing and rescale come from its per-frame functional
groups, falling back to the shared ones.  Frames that are not magnitude images (phase, real,
imaginary, e.g. the B0 field-map half of a Philips fMAP file) are left out with a warning;
so are single-frame phase/real/imaginary images (skipped as ``non-image``).

Images that may show identifiers in their pixels are never used (category ``burned-in``:
skipped and counted, or refused under ``on_error="fail"``):

* ``BurnedInAnnotation`` is ``YES``;
* the SOP class is a Secondary Capture (single- or multi-frame): screen shots and scanned
  documents, whatever their other attributes;
* an MR/CT image whose ImageType value 2 is ``SECONDARY`` *and* a later value names a screen
  capture or report (``SCREEN SHOT``, ``SCREEN SAVE``, ``SC``, ``CAPTURE``, ``REPORT``...).
  ``DERIVED\\SECONDARY`` alone is *not* refused: scanners write it for legitimate reformats,
  averages and subtractions, which are ordinary images.

Pixel data must hold exactly Rows x Columns x SamplesPerPixel x NumberOfFrames x BitsAllocated/8
bytes (plus the one padding byte that makes an odd length even); shorter (truncated) or longer
data is ``corrupt``.  Deflated Explicit VR Little Endian files are inflated incrementally and
never past the size their header implies (plus :data:`DEFLATE_SLACK`), so a small "deflate bomb"
is refused after inflating a few MB instead of GBs.

Privacy: nothing returned, logged or raised carries a patient identifier.  Series, studies and
patients are named by :func:`synth.io.deid.pseudonym` keys; files and folders (which real exports
name after the patient) by :class:`synth.io.deid.PathNames`: salted hashes per path component
unless ``show_paths`` is set.  Messages otherwise hold only SOP class and transfer syntax names,
attribute names, numbers and keys.  pydicom's own warnings (which quote element values such as
UIDs) are silenced while reading.  The records keep the real paths (``FrameRef.path``,
``Skip.path``) for reading; their ``name`` is what messages use.

Modules
-------
* :mod:`~synth.io.dicom.scan`: the public records (:class:`FrameRef`, :class:`SliceInfo`,
  :class:`SeriesInfo`, :class:`Skip`, :class:`Catalog`), :func:`scan`, and the assembly of
  frames into series, slices and time order.
* :mod:`~synth.io.dicom.probe`: one file at a time: is it a usable MR/CT magnitude image, and
  its frames' header facts; deflated files (bounded inflation), pixel data and decoder checks.
* :mod:`~synth.io.dicom.pixels`: :func:`load_slice`, decoding a scanned slice's frames.
* :mod:`~synth.io.dicom.values`: tolerant parsers of header values (numbers, orientation,
  acquisition matrix, DICOM dates and times).
"""

from synth.io.dicom.pixels import load_slice
from synth.io.dicom.probe import DEFLATE_HEADER_CAP, DEFLATE_SLACK
from synth.io.dicom.scan import (NEVER_FATAL, ON_ERROR, ORIENTATION_TOL, POSITION_TOL_MM, SKIP_CATEGORIES, Catalog,
                                 FrameRef, SeriesInfo, SliceInfo, Skip, scan)

__all__ = ["Catalog", "DEFLATE_HEADER_CAP", "DEFLATE_SLACK", "FrameRef", "NEVER_FATAL", "ON_ERROR", "ORIENTATION_TOL",
           "POSITION_TOL_MM", "SKIP_CATEGORIES", "SeriesInfo", "SliceInfo", "Skip", "load_slice", "scan"]
