"""Tests of the dsnn-train command (dsnn_keras.cli.train_main) as a user runs it.

kill -9 and re-running the same command: tests/faults/test_train_faults.py (bit-identical resume).
"""
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-c", "import sys; from dsnn_keras.cli import train_main; sys.exit(train_main())"]


def test_help_documents_flags_without_importing_tensorflow():
    code = ("import sys; from dsnn_keras import cli\n"
            "try:\n    cli.train_main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False")
    for flag in ("--data", "--config", "--out", "--max_steps", "--set", "--strategy", "--tpu"):
        assert flag in out.stdout


def test_bad_config_fails_with_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("version: 1\ntraining: {lr: 1}\n")
    out = subprocess.run(TRAIN + ["--data", str(tmp_path / "data"), "--config", str(tmp_path / "c.yaml"),
                                  "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = [l for l in out.stderr.splitlines() if l.startswith("dsnn-train")]
    assert lines == [lines[0]] and "training.lr" in lines[0] and "c.yaml" in lines[0]
    assert "Traceback" not in out.stderr
