"""Faults and bad inputs of dsnn-train (and the run directories eval/export load), reproduced on the
real trainer, real checkpoints and real subprocesses.

One small run (4 checkpoints) is trained once per module; each test damages a copy of it. The
kill -9 test runs the tiny config (shrunk) in two processes at once: one uninterrupted, one killed
at a random point and re-run (in this process); their final weights and loss logs must be
bit-identical (resume is exact and training is deterministic under a busy CPU).
"""
import io
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dsnn_job.cli import main as job_main
from dsnn_keras.cli import train_main
from dsnn_keras.config import ConfigError, apply_overrides, config_from_dict, load_config
from dsnn_keras.dataset import DatasetError, PreparedDataset
from dsnn_keras.paths import exclusive_lock
from dsnn_keras.run_dir import RunDirError, load_run
from dsnn_keras.trainer import LOCK_NAME, UNREADABLE_DIR, Trainer, TrainingError, train
from fixtures_data import build_prepared_dataset, small_config

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "tiny.yaml"
TRAIN = [sys.executable, "-c", "import sys; from dsnn_keras.cli import train_main; sys.exit(train_main())"]
CONFIG = dict(training={"total_steps": 8, "checkpoint_every": 2, "keep_checkpoints": 5})


def _cli(args, capsys):
    """Runs the real dsnn-train entry point in this process (TensorFlow is already loaded here)."""
    capsys.readouterr()
    code = train_main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def _error_lines(stderr: str, prog: str = "dsnn-train") -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(prog)]


def _log(run_dir):
    return [json.loads(line) for line in (pathlib.Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


def _snapshot(directory: pathlib.Path) -> dict:
    """path -> (bytes, mtime_ns) of every file: equal snapshots mean nothing was rewritten."""
    return {p.relative_to(directory).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return build_prepared_dataset(tmp_path_factory.mktemp("train_faults") / "prepared", num_train=12, num_dev=2)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    run = tmp_path_factory.mktemp("trained") / "run"
    summary = train(small_config(**CONFIG), prepared, run, stream=io.StringIO())
    assert summary["step"] == 8
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == [
        f"ckpt-{n}.index" for n in (2, 4, 6, 8)]
    return run


@pytest.fixture
def run_copy(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def _truncate(path: pathlib.Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.read_bytes()


# ---- item 1: --out vs --data ------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["same", "inside", "contains", "symlink"])
def test_out_overlapping_data_is_refused_before_anything_is_written(prepared, tmp_path, layout, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    out = {"same": data, "inside": data / "run", "contains": tmp_path, "symlink": tmp_path / "link"}[layout]
    if layout == "symlink":
        out.symlink_to(data, target_is_directory=True)
    before = _snapshot(tmp_path)
    result = _cli(["--data", data, "--config", TINY, "--out", out], capsys)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--out" in lines[0] and "--data" in lines[0] and str(data.resolve()) in lines[0]
    assert _snapshot(tmp_path) == before  # no config.yaml (or anything else) written into the dataset
    assert not (data / "run").exists()


# ---- items 10 and 12: --set and config validation -------------------------------------------------
def test_bad_yaml_in_set_is_one_line_naming_the_flag(prepared, tmp_path, capsys):
    result = _cli(["--data", prepared, "--config", TINY, "--out", tmp_path / "run",
                   "--set", "training.learning_rate=["], capsys)
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "--set" in lines[0] and "training.learning_rate=[" in lines[0] and "not valid YAML" in lines[0]
    assert not (tmp_path / "run").exists()


def test_dsnn_job_rejects_bad_yaml_in_set_before_any_step(tmp_path, capsys):
    code = job_main(["--out", str(tmp_path / "job"), "--config", str(TINY), "--set", "training.learning_rate=["])
    stderr = capsys.readouterr().err
    assert code == 1 and "Traceback" not in stderr
    lines = _error_lines(stderr, "dsnn-job")
    assert len(lines) == 1 and "--set" in lines[0] and "training.learning_rate=[" in lines[0]
    assert not (tmp_path / "job").exists()  # refused before synthesis


@pytest.mark.parametrize("override, key", [
    ("training.sandwich_levels=5", "training.sandwich_levels"),   # tiny.yaml has 4 levels
    ("training.learning_rate=.nan", "training.learning_rate"),
    ("training.learning_rate=.inf", "training.learning_rate"),
    ("training.final_learning_rate=-.inf", "training.final_learning_rate"),
    ("training.clip_norm=.nan", "training.clip_norm"),
    ("pruning.levels=[0.0, .nan]", "pruning.levels[1]"),
])
def test_config_rejects_too_many_sandwich_levels_and_non_finite_numbers(override, key):
    with pytest.raises(ConfigError) as err:
        apply_overrides(load_config(TINY), [override], where="tiny.yaml with --set")
    assert key in str(err.value) and "tiny.yaml" in str(err.value)


def test_config_file_with_nan_learning_rate_names_key_and_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\ntraining: {learning_rate: .nan}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: training\.learning_rate must be a finite number"):
        load_config(path)
    # Single mode runs one level: a sandwich size meant for the DSNN run is not an error there.
    single = config_from_dict({"version": 1, "training": {"mode": "single", "sandwich_levels": 3}})
    assert single.num_sandwich_levels == 1


# ---- item 2: checkpoints found by listing, unreadable ones skipped and kept ------------------------
@pytest.mark.parametrize("garbage", [b"model_checkpoint_path: {{{ garbage", b"\x00\xff\xfe binary garbage"])
def test_garbled_checkpoint_index_resumes_from_the_newest_checkpoint_without_rewriting_any(prepared, run_copy,
                                                                                          garbage):
    (run_copy / "checkpoints" / "checkpoint").write_bytes(garbage)
    checkpoints = {k: v for k, v in _snapshot(run_copy / "checkpoints").items() if k.startswith("ckpt-")}
    stream = io.StringIO()
    summary = train(small_config(**CONFIG), prepared, run_copy, stream=stream)
    assert summary["resumed_from"] == 8 and summary["step"] == 8, stream.getvalue()
    after = _snapshot(run_copy / "checkpoints")
    assert {k: v for k, v in after.items() if k.startswith("ckpt-")} == checkpoints  # none overwritten
    assert [r["resumed_from"] for r in _log(run_copy) if r["event"] == "start"] == [0, 8]
    assert load_run(run_copy).step == 8


def test_truncated_latest_checkpoint_falls_back_and_is_kept_aside(prepared, run_copy, capsys):
    data = run_copy / "checkpoints" / "ckpt-8.data-00000-of-00001"
    truncated = _truncate(data)
    index = (run_copy / "checkpoints" / "ckpt-8.index").read_bytes()
    # eval and export load the run with load_run: the newest readable checkpoint, with a warning.
    run = load_run(run_copy)
    assert run.step == 6 and run.checkpoint.endswith("ckpt-6")
    warning = capsys.readouterr().err
    assert "skipping checkpoint" in warning and "ckpt-8" in warning and "cannot be restored" in warning
    # The trainer resumes from ckpt-6 and moves ckpt-8 aside, so saving step 8 again cannot overwrite it.
    stream = io.StringIO()
    trainer = Trainer(small_config(**CONFIG), PreparedDataset.from_dir(prepared), run_copy, stream=stream)
    assert trainer.restore() == 6
    text = stream.getvalue()
    assert "skipping checkpoint" in text and "ckpt-8" in text and "resuming from" in text and "ckpt-6" in text
    kept = run_copy / UNREADABLE_DIR
    assert (kept / "ckpt-8.data-00000-of-00001").read_bytes() == truncated
    assert (kept / "ckpt-8.index").read_bytes() == index
    assert not list((run_copy / "checkpoints").glob("ckpt-8.*"))
    assert trainer.manager.latest_checkpoint.endswith("ckpt-6")


def test_no_readable_checkpoint_is_a_one_line_error_and_nothing_is_touched(prepared, run_copy, capsys):
    for data in (run_copy / "checkpoints").glob("ckpt-*.data-*"):
        _truncate(data)
    (run_copy / "checkpoints" / "checkpoint").write_text("garbage")
    before = _snapshot(run_copy / "checkpoints")
    log_before = (run_copy / "train_log.jsonl").read_text()
    config = run_copy / "config.yaml"
    result = _cli(["--data", prepared, "--config", config, "--out", run_copy], capsys)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "none of the 4 checkpoint(s) can be restored" in lines[0] and "ckpt-8" in lines[0]
    after = _snapshot(run_copy / "checkpoints")
    assert {k: v for k, v in after.items() if k.startswith("ckpt-")} == \
        {k: v for k, v in before.items() if k.startswith("ckpt-")}
    assert (run_copy / "train_log.jsonl").read_text() == log_before
    assert not (run_copy / UNREADABLE_DIR).exists()
    with pytest.raises(RunDirError, match="none of the 4 checkpoint"):
        load_run(run_copy)


# ---- item 5: one dsnn-train per run directory ---------------------------------------------------
def test_second_dsnn_train_on_the_same_out_fails_at_once(prepared, run_copy, capsys):
    before = _snapshot(run_copy)
    # flock locks belong to an open file: this one conflicts with dsnn-train's own open, as another
    # process's would.
    with exclusive_lock(run_copy, LOCK_NAME, holder="the first dsnn-train"):
        start = time.monotonic()
        result = _cli(["--data", prepared, "--config", run_copy / "config.yaml", "--out", run_copy], capsys)
        seconds = time.monotonic() - start
    assert result.returncode == 1, result.stderr[-2000:]
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and "another dsnn-train is running on" in lines[0] and "Traceback" not in result.stderr
    assert seconds < 10  # before any model is built or step run
    after = _snapshot(run_copy)
    assert {k: v for k, v in after.items() if k != LOCK_NAME} == {k: v for k, v in before.items() if k != LOCK_NAME}


# ---- item 7: non-finite inputs are named as a data problem --------------------------------------
def test_nan_input_features_stop_naming_the_data_not_the_learning_rate(tmp_path):
    prepared = build_prepared_dataset(tmp_path / "nan", num_train=6, num_dev=1, nan_train_utterances=list(range(6)))
    with pytest.raises(TrainingError) as err:  # one level: the cheapest graph to trace
        train(small_config(training={"mode": "single"}), prepared, tmp_path / "run", stream=io.StringIO())
    message = str(err.value)
    assert "NaN/Inf input features" in message and str(prepared) in message and "'train'" in message
    assert "learning_rate" not in message
    bad = [r for r in _log(tmp_path / "run") if r["event"] == "nonfinite"]
    assert bad and all(r["nonfinite_inputs"] for r in bad)


def test_non_finite_cmvn_is_refused_at_load_naming_the_file(prepared, tmp_path, run_copy):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    cmvn = json.loads((data / "cmvn.json").read_text())
    cmvn["std"][3] = float("nan")
    (data / "cmvn.json").write_text(json.dumps(cmvn))  # json writes NaN, which json.loads reads back
    with pytest.raises(DatasetError, match=r"cmvn\.json: non-finite \(NaN/Inf\) values in std"):
        PreparedDataset.from_dir(data)
    cmvn = json.loads((run_copy / "cmvn.json").read_text())
    cmvn["mean"][0] = float("inf")
    (run_copy / "cmvn.json").write_text(json.dumps(cmvn))
    with pytest.raises(RunDirError, match=r"cmvn\.json: non-finite"):
        load_run(run_copy)


# ---- kill -9 at a random point; determinism under a busy CPU ------------------------------------
KILL_STEPS = 20   # checkpoints at 5, 10, 15, 20; the pruning ramp (5..15) spans the middle two
KILL_RUN = ["--config", TINY, "--set", "model.lstm_units=[16]", "--set", "pruning.levels=[0.0, 0.8]",
            "--set", f"training.total_steps={KILL_STEPS}", "--set", "pruning.begin_step=5",
            "--set", "pruning.end_step=15", "--set", "pruning.frequency=5", "--set", "training.checkpoint_every=5",
            "--set", "training.log_every=5", "--set", "training.eval_every=0", "--set", "training.eval_max_utterances=2"]


def _checkpoint_tensors(prefix) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith("save_counter")}


def _train_events(run_dir) -> dict:
    """step -> the last "train" log entry of that step (a resumed run logs redone steps again)."""
    return {r["step"]: {k: v for k, v in r.items() if k != "time"} for r in _log(run_dir) if r["event"] == "train"}


@pytest.mark.large
def test_kill_9_at_a_random_point_then_rerun_is_bit_identical_to_an_uninterrupted_run(prepared, tmp_path, capsys):
    """Runs A (uninterrupted) and B at once, each the other's busy CPU neighbour; B gets SIGKILL at a
    random point (before its first checkpoint, or a random delay after a random one) and is re-run
    (the real dsnn-train entry point in this process: the re-run is not about the process boundary)."""
    seed = int(os.environ.get("DSNN_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    after_checkpoint = rng.choice([None, 5, 10, 15])
    delay = rng.uniform(0.0, 1.5) if after_checkpoint else rng.uniform(1.0, 8.0)
    a, b = tmp_path / "a", tmp_path / "b"
    command = TRAIN + ["--data", str(prepared)] + [str(x) for x in KILL_RUN]
    first_a = subprocess.Popen(command + ["--out", str(a)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=REPO)
    killed = subprocess.Popen(command + ["--out", str(b)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=REPO)
    try:
        try:
            deadline = time.monotonic() + 300
            if after_checkpoint:
                marker = b / "checkpoints" / f"ckpt-{after_checkpoint}.index"
                while not marker.exists() and killed.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            time.sleep(delay)
        finally:
            if killed.poll() is None:
                os.kill(killed.pid, signal.SIGKILL)
            killed.wait()
        _, stderr_a = first_a.communicate(timeout=300)
    finally:
        if first_a.poll() is None:
            first_a.kill()
            first_a.wait()
    assert first_a.returncode == 0, stderr_a[-3000:]
    note = f"DSNN_FAULT_SEED={seed}: killed {delay:.2f} s after " + (
        f"ckpt-{after_checkpoint}" if after_checkpoint else "the start")
    again = _cli(["--data", prepared, *KILL_RUN, "--out", b], capsys)
    assert again.returncode == 0, note + "\n" + again.stderr[-3000:]
    starts = [r for r in _log(b) if r["event"] == "start"]
    if after_checkpoint:
        assert starts[-1]["resumed_from"] >= after_checkpoint and "resumed from" in again.stderr, note
    # The same final step, a loadable run, and bit-identical weights, optimizer state and losses.
    assert load_run(b).step == load_run(a).step == KILL_STEPS
    weights_a, weights_b = _checkpoint_tensors(a / "checkpoints" / f"ckpt-{KILL_STEPS}"), _checkpoint_tensors(
        b / "checkpoints" / f"ckpt-{KILL_STEPS}")
    assert weights_a.keys() == weights_b.keys()
    different = [name for name in weights_a if not np.array_equal(weights_a[name], weights_b[name])]
    assert different == [], note
    assert _train_events(a) == _train_events(b), note
