"""tflite.cli's typed functions (export_model, benchmark): the checks dsnn-export / dsnn-bench make
before any work, as DsnnErrors with the commands' exit codes."""
import pytest

from dsnn_keras.errors import EXIT_FAILURE, EXIT_USAGE
from dsnn_keras.run_dir import RunDirError
from tflite.cli import BenchInputError, CommandArgumentError, baseline_files, benchmark, export_model


def test_export_model_refuses_a_negative_gate_a_missing_run_and_an_unwritable_output(tmp_path):
    with pytest.raises(CommandArgumentError, match="--max_wer must be >= 0"):
        export_model(tmp_path, tmp_path / "m.tflite", max_wer=-0.1)
    with pytest.raises(RunDirError, match="run directory not found"):
        export_model(tmp_path / "missing", tmp_path / "m.tflite")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(CommandArgumentError, match="--out"):
        export_model(tmp_path, tmp_path / "a_file" / "m.tflite")
    assert CommandArgumentError.exit_code == EXIT_USAGE and RunDirError.exit_code == EXIT_FAILURE


def test_benchmark_refuses_bad_counts_an_empty_baseline_dir_and_a_missing_model(tmp_path):
    with pytest.raises(CommandArgumentError, match="must be >= 1"):
        benchmark(tmp_path / "m.tflite", repeats=0, out_dir=tmp_path / "b")
    with pytest.raises(CommandArgumentError, match="must be >= 1"):
        benchmark(tmp_path / "m.tflite", threads=(), out_dir=tmp_path / "b")
    with pytest.raises(BenchInputError, match="no level_\\*.tflite files"):
        benchmark(tmp_path / "m.tflite", baseline_dir=tmp_path, out_dir=tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="model file not found"):
        benchmark(tmp_path / "m.tflite", out_dir=tmp_path / "b")
    (tmp_path / "level_1.tflite").write_bytes(b"")
    (tmp_path / "level_0.tflite").write_bytes(b"")
    assert [p.name for p in baseline_files(tmp_path)] == ["level_0.tflite", "level_1.tflite"]
