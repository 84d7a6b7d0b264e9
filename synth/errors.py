"""One error hierarchy for the simulator.

Every error a user can cause derives from :class:`SmssynthError` *and* from the builtin it
refines (``ValueError``, ``FileNotFoundError``...), so callers may catch either.  Messages say
what was expected, what was found, and what to do; the CLI prints them without a traceback.
Messages never carry patient identifiers (names, IDs, dates, UIDs): only file paths the user
gave, pseudonymous keys and numbers.
"""


class SmssynthError(Exception):
    """Base class of every error smssynth raises on purpose."""


class ConfigError(SmssynthError, ValueError):
    """An option or parameter has an invalid value or an invalid combination."""


class DicomError(SmssynthError, ValueError):
    """A DICOM file or series cannot be used (corrupt, truncated, inconsistent)."""


class NiftiError(DicomError):
    """A NIfTI file cannot be used (a DicomError so every per-file handler treats it alike)."""


class RawDataError(SmssynthError, ValueError):
    """A raw k-space file (ISMRMRD, fastMRI HDF5, CMRxRecon .mat) cannot be used."""


class MissingDecoderError(DicomError, ImportError):
    """Pixel data uses a transfer syntax whose decoder plugin is not installed."""


class NoInputError(SmssynthError, FileNotFoundError):
    """No usable DICOM series was found under the given inputs."""


class StoreError(SmssynthError, ValueError):
    """A store does not follow the documented format, or is incomplete."""


class StoreExistsError(StoreError, FileExistsError):
    """The output store already exists and overwriting was not asked for."""


class ClusterError(SmssynthError, RuntimeError):
    """The dask cluster could not be started or reached."""
