"""The export's errors, in a module of their own so every tflite module can raise them without
importing `tflite.export` (which imports the designs, which raise them).

Example:
    >>> from tflite.errors import ExportError
    >>> raise ExportError("level 2: max |Δ log-posterior| 3.1e-02 > tolerance 1e-03")
"""
from __future__ import annotations

from dsnn_keras.errors import DsnnError


class ExportError(DsnnError, RuntimeError):
    """The models cannot be exported, or the converted file failed verification."""


class WerGateError(ExportError):
    """A level's dev WER exceeds ``--max_wer`` (or there is no evaluation to check)."""


__all__ = ["ExportError", "WerGateError"]
