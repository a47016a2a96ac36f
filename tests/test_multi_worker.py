"""Multi-worker training for real: two ``dsnn-train --strategy multi_worker`` processes on localhost.

Each worker is its own process with its own ``TF_CONFIG`` (free ports on localhost), one TF
thread each, `tf.distribute.MultiWorkerMirroredStrategy` over gRPC on the CPU, training a shrunk
configs/tiny.yaml for 6 steps (checkpoint every 2). One scenario, shared by the tests (each
TensorFlow process costs ~20 s of CPU to start and trace): the two workers start, worker 1 is
killed with SIGKILL as soon as the chief has written its first checkpoint, the chief stops with
one error line, both are restarted with the same command and finish. A one-worker run of the same
config (default strategy, in this process, while the chief waits to notice the lost worker) is
the reference.

Tolerance: at every step, each level's loss of the two-worker run matches the one-worker run's
within a relative 1e-4, and the final weights within an absolute 1e-4 (measured: relative
differences <= 2e-7: both train on the same global batches, the two workers each on half of its
rows, and only the order of the float sums differs). The restart resumes from the chief's last
checkpoint and loses at most ``training.checkpoint_every`` steps.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fixtures_data import build_prepared_dataset

from dsnn_keras.distribute import free_local_ports

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-c", "import sys; from dsnn_keras.cli import train_main; sys.exit(train_main())"]
CHECKPOINT_EVERY = 2
STEPS = 6
RUN = ["--config", REPO / "configs" / "tiny.yaml", "--set", "model.lstm_units=[16]",
       "--set", "pruning.levels=[0.0, 0.8]", "--set", f"training.total_steps={STEPS}",
       "--set", "pruning.begin_step=2", "--set", "pruning.end_step=4", "--set", "pruning.frequency=1",
       "--set", f"training.checkpoint_every={CHECKPOINT_EVERY}", "--set", "training.keep_checkpoints=5",
       "--set", "training.log_every=1", "--set", "training.eval_every=0",
       "--set", "training.eval_max_utterances=2"]
TIMEOUT = 900   # a guard against a hang; the scenario takes ~1 min on 2 idle cores

pytestmark = pytest.mark.large



def _env(tmp: pathlib.Path, tf_config=None) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", TMPDIR=str(tmp))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def _start(args, env, log: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(TRAIN + [str(a) for a in args], env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"))


def _start_workers(data, out, tmp: pathlib.Path, tag: str) -> list[subprocess.Popen]:
    """Worker 0 (the chief) and worker 1, each with its TF_CONFIG; both write --out's path."""
    addresses = [f"localhost:{port}" for port in free_local_ports(2)]
    procs = []
    for index in range(2):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        procs.append(_start(["--data", data, "--out", out, "--strategy", "multi_worker", *RUN],
                            _env(tmp / f"tmp-{tag}-{index}", config), tmp / f"{tag}-{index}.log"))
    return procs


def _wait(procs, timeout=TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (pathlib.Path(run_dir) / "train_log.jsonl").read_text().splitlines()]


def _losses(records) -> dict:
    """step -> {level: loss} of the "train" records (the last one of a step wins)."""
    return {r["step"]: r["loss"] for r in records if r["event"] == "train"}


def _weights(run_dir, step) -> dict:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(pathlib.Path(run_dir) / "checkpoints" / f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("model/")}


def _stderr(tmp, tag) -> str:
    return "\n".join(f"--- {p.name}\n" + p.read_text()[-3000:] for p in sorted(tmp.glob(f"{tag}-*.log")))


def _reference(data, out):
    """The one-worker run of the same config, in this process (saves a TensorFlow start-up)."""
    import io

    from dsnn_keras.config import apply_overrides, load_config
    from dsnn_keras.trainer import train

    overrides = [str(RUN[i + 1]) for i, flag in enumerate(RUN) if flag == "--set"]
    config = apply_overrides(load_config(RUN[1]), overrides)
    return train(config, data, out, stream=io.StringIO())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference run, then the two-worker run killed after its first checkpoint and restarted."""
    tmp = tmp_path_factory.mktemp("multi_worker")
    data = build_prepared_dataset(tmp / "prepared", num_train=16, num_dev=2)
    out = tmp / "two"
    first = _start_workers(data, out, tmp, "killed")
    try:
        marker = out / "checkpoints" / f"ckpt-{CHECKPOINT_EVERY}.index"
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists() and first[1].poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), _stderr(tmp, "killed")
        os.kill(first[1].pid, signal.SIGKILL)
        first[1].wait()
        # While the chief waits (idle) for the coordination service to miss worker 1's heartbeats
        # (~10 s), not beside the restarted workers, which need the cores.
        _reference(data, tmp / "one")
        chief_code = _wait(first[:1], timeout=TIMEOUT)[0]
    finally:
        _wait(first, timeout=1)
    before = _log(out)
    restarted = _start_workers(data, out, tmp, "restarted")
    codes = _wait(restarted)
    return {"tmp": tmp, "one": tmp / "one", "two": out, "before": before, "chief_code": chief_code,
            "codes": codes}


def test_two_workers_exit_0_and_only_the_chief_writes_one_checkpoint_series(runs):
    tmp = runs["tmp"]
    assert runs["codes"] == [0, 0], _stderr(tmp, "restarted")
    # Worker 1's scratch checkpoints (in its TMPDIR) are deleted after each save, and with them the
    # directory at the end; the killed worker 1 may have died between a save and its deletion, so
    # its TMPDIR (tmp-killed-1) may keep one: not part of the series.
    series = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*.index")
                    if not p.is_relative_to(tmp / "one") and not p.is_relative_to(tmp / "tmp-killed-1"))
    assert series == [f"two/checkpoints/ckpt-{s}.index" for s in range(CHECKPOINT_EVERY, STEPS + 1, CHECKPOINT_EVERY)]
    assert [p for p in tmp.glob("tmp-restarted-*/**/*")] == []
    starts = [r for r in _log(runs["two"]) if r["event"] == "start"]
    assert len(starts) == 2 and all(r["replicas"] == 2 and r["workers"] == 2 for r in starts)
    assert len(list((runs["two"] / "tensorboard").glob("events.*"))) == 2   # one per start, the chief's


def test_two_worker_losses_and_weights_match_one_worker_with_the_same_global_batch(runs):
    assert runs["codes"] == [0, 0], _stderr(runs["tmp"], "restarted")
    one, two = _losses(_log(runs["one"])), _losses(_log(runs["two"]))
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert one[step].keys() == two[step].keys()
        np.testing.assert_allclose([two[step][k] for k in one[step]], [one[step][k] for k in one[step]],
                                   rtol=1e-4, err_msg=f"step {step}")
    w1, w2 = _weights(runs["one"], STEPS), _weights(runs["two"], STEPS)
    assert w1.keys() == w2.keys() and w1
    for name in w1:
        np.testing.assert_allclose(w2[name], w1[name], atol=1e-4, rtol=0, err_msg=name)


def test_a_killed_worker_stops_the_chief_and_the_restart_loses_at_most_one_checkpoint_interval(runs):
    tmp, before = runs["tmp"], runs["before"]
    reached = max([r["step"] for r in before if r["event"] == "train"] or [0])
    if reached < STEPS:   # the kill came before the end: the chief fails with one clear line
        assert runs["chief_code"] == 1
        text = (tmp / "killed-0.log").read_text()
        assert "dsnn-train: error: worker:0: lost another worker" in text, text[-3000:]
    assert runs["codes"] == [0, 0], _stderr(tmp, "restarted")
    resumed = [r for r in _log(runs["two"]) if r["event"] == "start"][-1]["resumed_from"]
    assert CHECKPOINT_EVERY <= resumed and reached - resumed <= CHECKPOINT_EVERY, (reached, resumed)
