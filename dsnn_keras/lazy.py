"""Lazy re-exports for a package's public API (PEP 562), so importing it costs nothing until a
name is used (the commands' ``--help`` and ``tflite.runtime`` never pay for TensorFlow).

Example:
    >>> _EXPORTS = {"Recognizer": "tflite.runtime"}
    >>> __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
"""
from __future__ import annotations

import importlib
import sys
from typing import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: The package's ``__name__``.
        exports: Public name -> the module (absolute name) that defines it.

    Returns:
        ``(__getattr__, __dir__)``: the first imports a name's module on first use and caches the
        value on the package.
    """

    def __getattr__(name: str):
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
