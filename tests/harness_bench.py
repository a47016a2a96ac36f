"""Loads a script of ``bench/`` as a module, so a test calls the functions and the ``main(argv)`` that
``python bench/NAME.py`` runs (in the test's process, where TensorFlow may be loaded already).

Example:
    >>> from harness_bench import load_bench_script   # tests/ is on sys.path under pytest
    >>> load_bench_script("stream_wer").level_schedule("flip", 4, 5)
    [0, 3, 0, 3, 0]
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType
from typing import Optional

BENCH_DIR = pathlib.Path(__file__).resolve().parents[1] / "bench"


def load_bench_script(name: str, module_name: Optional[str] = None) -> ModuleType:
    """``bench/NAME.py`` executed as a module and registered in ``sys.modules`` as ``module_name``
    (default: ``name``), where dataclasses and pickling look their module up."""
    module_name = module_name or name
    spec = importlib.util.spec_from_file_location(module_name, BENCH_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
