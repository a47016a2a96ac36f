"""The one error family (dsnn_keras.errors): every dsnn error derives from DsnnError, and every
command reports one as a single line with the error's exit code."""
import importlib
import inspect
import pkgutil

import pytest

import harness_tflite as h
from dsnn_keras.errors import EXIT_FAILURE, EXIT_USAGE, DsnnError, DsnnUsageError

PACKAGES = ["dsnn_keras", "tflite", "pipeline", "dsnn_job"]
NOT_ERRORS = {"pipeline.prepare.Interrupted"}   # a signal, a BaseException on purpose


def _error_classes():
    found = {}
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            mod = importlib.import_module(info.name)
            for name, obj in vars(mod).items():
                if (inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == mod.__name__):
                    found[f"{obj.__module__}.{name}"] = obj
    return found


def test_every_error_class_dsnn_defines_derives_from_dsnn_error():
    classes = _error_classes()
    assert len(classes) >= 20   # the walk found the modules
    outside = sorted(name for name, cls in classes.items()
                     if name not in NOT_ERRORS and not issubclass(cls, DsnnError))
    assert outside == []


def test_usage_errors_exit_2_and_the_others_exit_1():
    from dsnn_keras.config import ConfigError
    from dsnn_keras.paths import PathOverlapError
    from tflite.metadata import MetadataError

    assert issubclass(PathOverlapError, DsnnUsageError) and PathOverlapError.exit_code == EXIT_USAGE
    assert ConfigError.exit_code == MetadataError.exit_code == EXIT_FAILURE
    assert issubclass(ConfigError, ValueError)   # existing `except ValueError` callers still catch it


def test_dsnn_export_reports_a_bad_config_in_the_run_dir_in_one_line(tmp_path, capsys):
    from tflite.cli import export_main

    run_dir = h.write_run_dir(tmp_path / "run")
    config = run_dir / "config.yaml"
    config.write_text(config.read_text() + "surprise_key: 1\n")
    assert export_main([str(run_dir), "--out", str(tmp_path / "m.tflite")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dsnn-export: error:")]
    assert len(lines) == 1 and "surprise_key" in lines[0], lines
    assert not (tmp_path / "m.tflite").exists()
