"""Tests of the dsnn-train command (dsnn_keras.cli.train_main) as a user runs it."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from fixtures_data import build_prepared_dataset

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-c", "import sys; from dsnn_keras.cli import train_main; sys.exit(train_main())"]


def test_help_documents_flags_without_importing_tensorflow():
    code = ("import sys; from dsnn_keras import cli\n"
            "try:\n    cli.train_main(['--help'])\nexcept SystemExit as e:\n"
            "    assert e.code == 0\nprint('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False")
    for flag in ("--data", "--config", "--out", "--max_steps", "--set"):
        assert flag in out.stdout


def test_bad_config_fails_with_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("version: 1\ntraining: {lr: 1}\n")
    out = subprocess.run(TRAIN + ["--data", str(tmp_path / "data"), "--config", str(tmp_path / "c.yaml"),
                                  "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = [l for l in out.stderr.splitlines() if l.startswith("dsnn-train")]
    assert lines == [lines[0]] and "training.lr" in lines[0] and "c.yaml" in lines[0]
    assert "Traceback" not in out.stderr


def test_kill_9_then_same_command_resumes_from_the_last_checkpoint(tmp_path):
    prepared = build_prepared_dataset(tmp_path / "prepared", num_train=12, num_dev=2)
    run = tmp_path / "run"
    args = TRAIN + ["--data", str(prepared), "--config", str(REPO / "configs" / "tiny.yaml"), "--out", str(run),
                    "--set", "model.lstm_units=[16]", "--set", "pruning.levels=[0.0, 0.8]",
                    "--set", "training.checkpoint_every=2", "--set", "training.eval_every=0",
                    "--set", "training.total_steps=2000"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list((run / "checkpoints").glob("ckpt-4.index")):
            time.sleep(0.5)
        assert list((run / "checkpoints").glob("ckpt-4.index")), "no checkpoint appeared"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    out = subprocess.run(args + ["--max_steps", "1"],  # already past step 1: resume, train nothing
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    log = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines()]
    starts = [r for r in log if r["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from"] >= 4
    assert "resumed from" in out.stderr
