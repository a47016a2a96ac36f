"""`dsnn-prepare` under signals (issue 15: items 10, 11 and kill -9 at a random point).

The job runs as a real child process on a small generated corpus; the tests signal it while it
works, then look at what is left beside ``--out``.
"""
import os
import random
import signal
import subprocess
import sys
import textwrap

import pytest

from pipeline import outdir
from pipeline.prepare import main, run
from prepare_corpus import REPO, read_dataset, spawn_prepare, tsv_corpus, wait_for

ARGS = ("--vocab_size", "16", "--num_shards", "1")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    return tsv_corpus(root / "corpus", count=30)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run (in-process) to compare with."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run(["--input", str(corpus), "--out", str(out), *ARGS])
    return read_dataset(out)


def _temporaries(parent, name="out"):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(name + ".tmp-") or
                  p.name.startswith(name + ".old-"))


def _interrupt_while_working(corpus, out, signum):
    proc = spawn_prepare("--input", str(corpus), "--out", str(out), *ARGS)
    try:
        started = wait_for(lambda: _temporaries(out.parent), timeout=120, proc=proc)
        assert started, f"the job never created its temporary directory: {proc.communicate()}"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stdout, stderr


@pytest.mark.parametrize("signum,code,word", [(signal.SIGINT, 130, "interrupted (SIGINT)"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_signal_while_working_exits_with_one_line_and_removes_its_temporaries(tmp_path, corpus, signum, code,
                                                                              word):
    out = tmp_path / "out"
    rc, _, stderr = _interrupt_while_working(corpus, out, signum)
    assert rc == code, stderr
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"dsnn-prepare: {word}") and "nothing written to" in last, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no out, no out.tmp-*, no lock file


def _start_and_die(out, how: str, overwrite: bool = False) -> subprocess.Popen:
    """A real process that claims a temporary directory for ``out`` and dies (or lives on)."""
    code = textwrap.dedent(f"""
        import os, signal, sys, time
        from pipeline import outdir
        tmp = outdir.start({str(out)!r}, overwrite={overwrite!r})
        open(os.path.join(tmp, "partial.tfrecord"), "wb").write(b"x" * 1000)
        print(tmp, flush=True)
        if {how!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_stale_temporaries_of_a_dead_run_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    dead = _start_and_die(out, "kill")
    dead_tmp = dead.stdout.readline().strip()
    dead.wait()
    assert dead.returncode == -signal.SIGKILL and os.path.isdir(dead_tmp)
    alive = _start_and_die(out, "live")
    try:
        alive_tmp = alive.stdout.readline().strip()
        # things that are not ours, or whose owner cannot be proven dead, stay
        (tmp_path / "out.tmp-legacy1").mkdir()          # an older dsnn-prepare's temporary: no lock
        (tmp_path / "outer.tmp-12345678").mkdir()       # another --out
        (tmp_path / "out.tmp-notes.txt").write_text("a user's file")
        tmp = outdir.start(str(out), overwrite=False)
        try:
            assert not os.path.exists(dead_tmp) and not os.path.exists(dead_tmp + ".lock")
            assert os.path.isdir(alive_tmp) and os.path.exists(alive_tmp + ".lock")
            assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
                [os.path.basename(alive_tmp), os.path.basename(alive_tmp) + ".lock", os.path.basename(tmp),
                 os.path.basename(tmp) + ".lock", "out.tmp-legacy1", "outer.tmp-12345678", "out.tmp-notes.txt"])
        finally:
            outdir.abort(tmp)
        assert not os.path.exists(tmp) and not os.path.exists(tmp + ".lock")
    finally:
        alive.kill()
        alive.wait()


def test_a_dead_commit_is_rolled_back_to_the_previous_output(tmp_path):
    """Killed between moving the old output aside and moving the new one in: the old one comes back."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "dataset.json").write_text("old")
    dead = _start_and_die(out, "kill", overwrite=True)
    dead_tmp = dead.stdout.readline().strip()
    dead.wait()
    os.rename(out, dead_tmp + ".old")  # the state commit() leaves if killed after its first rename
    with pytest.raises(FileExistsError):
        outdir.start(str(out), overwrite=False)
    assert (out / "dataset.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.large
def test_kill_9_at_a_random_point_then_rerun_equals_an_uninterrupted_run(tmp_path, corpus, reference):
    seed = int(os.environ.get("DSNN_FAULT_SEED", random.randrange(1 << 30)))
    delay = random.Random(seed).uniform(0.0, 4.0)
    out = tmp_path / "out"
    proc = spawn_prepare("--input", str(corpus), "--out", str(out), *ARGS)
    try:
        # a random point between "the job has claimed its temporary directory" and well past the end
        wait_for(lambda: _temporaries(tmp_path), timeout=120, proc=proc)
        wait_for(lambda: False, timeout=delay, proc=proc)
        proc.kill()
    finally:
        proc.communicate()
    state = f"DSNN_FAULT_SEED={seed} (killed {delay:.2f} s after start of work, rc {proc.returncode})"
    if out.exists():  # atomic: either no output or a complete one
        assert read_dataset(out)["records"] == reference["records"], state
    assert main(["--input", str(corpus), "--out", str(out), "--overwrite", *ARGS]) == 0, state  # the next run
    result = read_dataset(out)
    assert sorted(result["records"]) == sorted(reference["records"]), state
    assert result["records"] == reference["records"], state
    assert result["cmvn"] == reference["cmvn"] and result["rejects"] == reference["rejects"], state
    for key in ("splits", "input_count", "rejects", "tokenizer"):
        assert result["dataset"][key] == reference["dataset"][key], state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], state  # nothing left behind
