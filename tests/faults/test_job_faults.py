"""Faults and bad inputs of dsnn-job, on the real command with the cheapest chain: 10 synthetic
utterances, 4 training steps of a shrunk tiny config (2 levels), the dense baseline only, a
one-utterance benchmark.

Two jobs start together as real processes: A runs uninterrupted, B is killed with SIGKILL at a
random point; B is then run again (the same `dsnn_job.cli.main`, in this process: TensorFlow is
loaded here already) and must finish with the same results as A and leave nothing half-made behind.
"""
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

from dsnn_job.artifacts import ARTIFACT_FILE, fingerprint_tree, read_record
from dsnn_job.cli import main as job_main
from dsnn_job.job import STEPS

pytestmark = pytest.mark.large   # whole dsnn-job runs

REPO = pathlib.Path(__file__).resolve().parents[2]
CHEAP = ["--config", str(REPO / "configs" / "tiny.yaml"), "--num_utterances", "10",
         "--set", "training.total_steps=4", "--set", "training.eval_every=0", "--set", "training.checkpoint_every=1",
         "--set", "pruning.begin_step=1", "--set", "pruning.end_step=3", "--set", "pruning.frequency=1",
         "--set", "model.lstm_units=[16]", "--set", "pruning.levels=[0.0, 0.8]", "--baselines", "dense", "--bench_threads", "1",
         "--bench_repeats", "1", "--bench_utterances", "1"]
STEP_DIRS = {"synth": "corpus", "prepare": "data", "train": "run", "tune": "decoder", "eval": "eval", "export": "export",
             "transcribe": "transcribe", "bench": "bench"}
MADE = [name for name in STEPS if name in STEP_DIRS]   # the push step runs only with --push_dir


def _args(out: pathlib.Path, *extra: str) -> list[str]:
    return ["--out", str(out), *CHEAP, *extra]


def _command(out: pathlib.Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dsnn_job.cli", *_args(out, *extra)]


def _job(out: pathlib.Path, capsys, *extra: str) -> subprocess.CompletedProcess:
    """The real dsnn-job entry point in this process (TensorFlow is loaded here already; a re-run is
    not about the process boundary, the kill is): its exit status and what it printed."""
    capsys.readouterr()
    code = job_main(_args(out, *extra))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(_args(out, *extra), code, captured.out, captured.err)


def _snapshot(directory: pathlib.Path) -> dict:
    return {p.relative_to(directory).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _leftovers(out: pathlib.Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith((".partial", ".replaced")))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """A: one uninterrupted job. B: the same job, killed at a random point (while A runs beside it)."""
    root = tmp_path_factory.mktemp("job_faults")
    a, b = root / "a", root / "b"
    seed = int(os.environ.get("DSNN_FAULT_SEED", random.randrange(1 << 30)))
    kill_after = random.Random(seed).uniform(2.0, 35.0)  # a minimal job takes ~35 s alone on 2 cores
    start = time.monotonic()
    first_a = subprocess.Popen(_command(a), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    killed = subprocess.Popen(_command(b), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        try:
            killed.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        stdout, stderr = first_a.communicate(timeout=600)
    finally:
        for process in (killed, first_a):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert first_a.returncode == 0, stderr[-4000:]
    print(f"job B killed after {kill_after:.1f} s (DSNN_FAULT_SEED={seed}); "
          f"A took {time.monotonic() - start:.1f} s")
    return a, b, seed, killed.returncode


def test_kill_9_at_a_random_point_then_rerun_gives_the_uninterrupted_result(jobs, capsys):
    a, b, seed, code = jobs
    again = _job(b, capsys)
    assert again.returncode == 0, f"seed {seed}, first exit {code}:\n" + again.stderr[-4000:]
    assert _leftovers(b) == []
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    for step in summary_b["steps"]:
        assert step["status"] in ("ran", "resumed", "cached")
    for name in MADE:
        assert read_record(b / STEP_DIRS[name])["fingerprint"] == read_record(a / STEP_DIRS[name])["fingerprint"]
    # Training resumed to the same step count, and the whole chain gives the uninterrupted figures.
    assert list((b / "run" / "checkpoints").glob("ckpt-4.index"))
    for row_a, row_b in zip(summary_a["levels"], summary_b["levels"]):
        for key in ("sparsity", "nonzero_weights", "wer", "cer", "transcript", "beam_wer", "beam_transcript"):
            assert row_a[key] == row_b[key], (seed, key, row_a, row_b)


def test_a_failing_max_wer_keeps_the_previous_export(jobs, capsys):
    a, *_ = jobs
    export = a / "export"
    before = _snapshot(export)
    assert {"model.tflite", "single/level_0.tflite", ARTIFACT_FILE} <= set(before)
    failed = _job(a, capsys, "--max_wer", "0.0")  # the 4-step model's WER is far above 0
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "dsnn-job: error: dsnn-export failed" in failed.stderr
    assert _snapshot(export) == before  # the good model.tflite and single/ are untouched
    ok = _job(a, capsys)  # the previous flags: the kept export is still up to date
    assert ok.returncode == 0, ok.stderr[-3000:]
    statuses = {s["name"]: s["status"] for s in json.loads((a / "summary.json").read_text())["steps"]}
    assert statuses == {name: "cached" for name in MADE}
    assert _leftovers(a) == []


@pytest.mark.parametrize("layout", ["inside", "same", "contains"])
def test_out_overlapping_the_corpus_is_refused_before_anything_is_written(tmp_path, layout, capsys):
    corpus = tmp_path / "corpus"
    (corpus / "spk1" / "1").mkdir(parents=True)
    (corpus / "spk1" / "1" / "spk1-1.trans.txt").write_text("spk1-1-0000 HELLO\n")
    (corpus / "spk1" / "1" / "spk1-1-0000.flac").write_bytes(b"not audio")
    out = {"inside": corpus / "out", "same": corpus, "contains": tmp_path}[layout]
    fingerprint, before = fingerprint_tree(corpus), _snapshot(tmp_path)
    code = job_main(["--corpus", str(corpus), "--out", str(out)])  # the real entry point, in this process
    stderr = capsys.readouterr().err
    assert code == 2 and "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("dsnn-job")]
    assert len(lines) == 1 and "--out" in lines[0] and "--corpus" in lines[0]
    # Nothing written: an --out inside the corpus would change its fingerprint on every run (no
    # step ever cached, an interrupted training discarded).
    assert fingerprint_tree(corpus) == fingerprint and _snapshot(tmp_path) == before


@pytest.mark.parametrize("code", [130, 143])
def test_an_interrupted_step_interrupts_the_job_instead_of_failing_it(code):
    """`dsnn-prepare` exits 130/143 on SIGINT/SIGTERM; the job must report an interruption (exit 130)."""
    from dsnn_job.job import _check

    with pytest.raises(KeyboardInterrupt):
        _check("dsnn-prepare", code)
    from dsnn_job.artifacts import StepError

    with pytest.raises(StepError, match="exit status 1"):
        _check("dsnn-prepare", 1)
