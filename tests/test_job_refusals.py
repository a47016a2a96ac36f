"""dsnn-job's refusals: a bad argument is one clear error line (exit 1, no traceback) and nothing is
written. Its entry point in this process: a refusal is not about the process boundary, and the
whole-job tests (tests/test_job_e2e.py) are `large`, which `make test-fast` skips."""


def _refused(capsys, *argv: str) -> str:
    """dsnn-job with these arguments, in this process: exit 1, one error line, no traceback; its stderr."""
    from dsnn_job.cli import main

    capsys.readouterr()
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert "dsnn-job: error:" in err and "Traceback" not in err
    return err


def test_a_bad_corpus_path_is_a_clear_error(tmp_path, capsys):
    err = _refused(capsys, "--out", str(tmp_path / "o"), "--corpus", str(tmp_path / "missing"))
    assert "--corpus: no such directory" in err and "missing" in err
    assert not (tmp_path / "o").exists()


def test_out_that_is_a_file_and_a_busy_out_are_clear_errors(tmp_path, capsys):
    import fcntl

    a_file = tmp_path / "not_a_dir"
    a_file.write_text("x")
    assert "exists and is not a directory" in _refused(capsys, "--out", str(a_file))
    assert a_file.read_text() == "x"
    busy = tmp_path / "busy"
    busy.mkdir()
    # flock locks belong to an open file description: the job's own open() of the lock file conflicts
    # with this one although both are in this process, as another job's would.
    with open(busy / ".dsnn-job.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert "another dsnn-job is running on" in _refused(capsys, "--out", str(busy))
    corpus = tmp_path / "corpus"   # a real corpus directory beside --out: only --force synth is wrong
    corpus.mkdir()
    assert "--force synth" in _refused(capsys, "--out", str(tmp_path / "o"), "--corpus", str(corpus),
                                       "--force", "synth")
