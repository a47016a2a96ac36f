"""One error family for every dsnn library call and command.

Every error dsnn raises for a condition a user can act on derives from `DsnnError` (each class
also keeps its builtin base, `ValueError` or `RuntimeError`, so existing ``except`` clauses still
work). A ``dsnn-*`` command reports one as a single ``PROG: error: MESSAGE`` line on stderr, no
traceback, and exits with the error's `exit_code`:

| code | meaning |
|---|---|
| 0 | success |
| 1 | the work failed, or an input file (audio, manifest, config, dataset, run directory, model) is bad |
| 2 | the command line is wrong and nothing was touched (`DsnnUsageError`) |
| 130 / 143 | interrupted by SIGINT / SIGTERM, partial output removed |

This module imports nothing heavy: `tflite.runtime` (LiteRT only, no TensorFlow) uses it.

Example:
    >>> from dsnn_keras.errors import DsnnError
    >>> try:
    ...     recognizer = Recognizer("model.tflite")
    ... except DsnnError as error:      # any dsnn problem a user can act on
    ...     print(f"cannot load: {error}")
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class DsnnError(Exception):
    """Base of every error dsnn raises for a condition a user can act on."""

    exit_code: int = EXIT_FAILURE


class DsnnUsageError(DsnnError):
    """The command line or call is wrong (a flag, a value, an output overlapping an input)."""

    exit_code: int = EXIT_USAGE
