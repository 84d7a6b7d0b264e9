"""Errors of the model zoo, in the project's one hierarchy (:mod:`synth.errors`).

Each derives from :class:`~synth.errors.SmssynthError` *and* from the builtin it refines, so
callers may catch either; messages say what was expected, what was found, and what to do.
Invalid configurations (loss weights, model configs) raise :class:`~synth.errors.ConfigError`.
"""

from synth.errors import ConfigError, SmssynthError

__all__ = ["CheckpointError", "ChecksumError", "ConfigError", "SmssynthError", "UnknownWeightsError"]


class ChecksumError(SmssynthError, ValueError):
    """A file's SHA-256 differs from the one recorded for it (corrupt, truncated or swapped file)."""


class CheckpointError(SmssynthError, ValueError):
    """A checkpoint (``.safetensors`` + ``.json``) or the weights registry is missing, malformed or
    does not match the model code."""


class UnknownWeightsError(SmssynthError, KeyError):
    """No pretrained weights are registered under the requested name.

    ``KeyError`` quotes its argument in ``str()``; this class prints its message as given.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
