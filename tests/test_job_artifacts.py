"""dsnn_job.artifacts: fingerprints, skipping up-to-date steps, re-running changed ones, resuming."""
import json
import os

import pytest

from dsnn_job.artifacts import (ARTIFACT_FILE, IN_PROGRESS_FILE, StepError, StepSpec, fingerprint_file,
                                fingerprint_of, fingerprint_tree, previous_dir, read_record, run_step,
                                staging_dir)


def _writer(out, text, calls):
    def action(directory):
        assert directory.parent == out.parent  # the step directory or its staging sibling
        calls.append(text)
        (directory / "result.txt").write_text(text)
    return action


def test_fingerprint_ignores_key_order_but_not_values():
    assert fingerprint_of({"a": 1, "b": [1, 2]}) == fingerprint_of({"b": [1, 2], "a": 1})
    assert fingerprint_of({"a": 1}) != fingerprint_of({"a": 2})
    assert StepSpec("s", "x", params={"a": 1}).fingerprint != StepSpec("s", "x", params={"a": 2}).fingerprint
    assert StepSpec("s", "x", inputs={"d": "1"}).fingerprint != StepSpec("s", "x", inputs={"d": "2"}).fingerprint


def test_tree_fingerprint_changes_when_a_file_is_added_edited_or_removed(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "spk" / "0").mkdir(parents=True)
    (corpus / "spk" / "0" / "a.flac").write_bytes(b"123")
    first = fingerprint_tree(corpus)
    assert fingerprint_tree(corpus) == first
    (corpus / "spk" / "0" / "b.flac").write_bytes(b"4")
    second = fingerprint_tree(corpus)
    assert second != first
    (corpus / "spk" / "0" / "b.flac").write_bytes(b"45")
    assert fingerprint_tree(corpus) != second
    (corpus / "spk" / "0" / "b.flac").unlink()
    os.utime(corpus / "spk" / "0" / "a.flac", ns=(1, 1))
    assert fingerprint_tree(corpus) != first  # same names and sizes, new mtime


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(StepError, match="input directory not found: .*nowhere"):
        fingerprint_tree(tmp_path / "nowhere")
    with pytest.raises(StepError, match="input file not found: .*missing.yaml"):
        fingerprint_file(tmp_path / "missing.yaml")


def test_runs_once_then_skips_an_up_to_date_step(tmp_path):
    out, calls = tmp_path / "step", []
    spec = StepSpec("prepare", out, params={"vocab": 8}, inputs={"corpus": "abc"})
    first = run_step(spec, _writer(out, "one", calls), log=lambda m: None)
    assert first.status == "ran" and calls == ["one"]
    record = read_record(out)
    assert record["fingerprint"] == spec.fingerprint and record["params"] == {"vocab": 8}
    assert record["inputs"] == {"corpus": "abc"}
    assert record["files"] == [{"path": "result.txt", "size_bytes": 3}]
    assert not (out / IN_PROGRESS_FILE).exists()
    messages = []
    second = run_step(spec, _writer(out, "two", calls), log=messages.append)
    assert second.status == "cached" and calls == ["one"]
    assert second.seconds == record["seconds"] and second.finished == record["finished"]
    assert (out / "result.txt").read_text() == "one"
    assert "up to date" in messages[0]


def test_a_changed_input_reruns_the_step_in_a_clean_directory(tmp_path):
    out, calls = tmp_path / "step", []
    run_step(StepSpec("train", out, inputs={"data": "v1"}), _writer(out, "v1", calls), log=lambda m: None)
    (out / "stale.txt").write_text("from v1")
    messages = []
    record = run_step(StepSpec("train", out, inputs={"data": "v2"}), _writer(out, "v2", calls),
                      log=messages.append)
    assert record.status == "ran" and calls == ["v1", "v2"]
    assert not (out / "stale.txt").exists()
    assert any("changed" in m for m in messages)


def test_force_reruns_an_up_to_date_step(tmp_path):
    out, calls = tmp_path / "step", []
    spec = StepSpec("eval", out)
    run_step(spec, _writer(out, "a", calls), log=lambda m: None)
    assert run_step(spec, _writer(out, "b", calls), log=lambda m: None, force=True).status == "ran"
    assert calls == ["a", "b"]


def test_a_failed_step_leaves_no_record_and_runs_again(tmp_path):
    out = tmp_path / "step"
    spec = StepSpec("export", out)

    def fail(directory):
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        run_step(spec, fail, log=lambda m: None)
    assert read_record(out) is None and not out.exists()
    assert json.loads((staging_dir(out) / IN_PROGRESS_FILE).read_text())["fingerprint"] == spec.fingerprint
    calls = []
    assert run_step(spec, _writer(out, "ok", calls), log=lambda m: None).status == "ran"
    assert calls == ["ok"]


def test_an_interrupted_resumable_step_keeps_its_directory(tmp_path):
    out = tmp_path / "run"
    spec = StepSpec("train", out, params={"steps": 10}, resumable=True)
    with pytest.raises(KeyboardInterrupt):
        run_step(spec, lambda d: ((d / "ckpt-5").write_text("5"), (_ for _ in ()).throw(KeyboardInterrupt)),
                 log=lambda m: None)
    seen = []
    record = run_step(spec, lambda d: seen.append((d / "ckpt-5").exists()), log=lambda m: None)
    assert record.status == "resumed" and seen == [True]
    # A different spec does not resume from the old checkpoint.
    out2 = tmp_path / "run2"
    spec2 = StepSpec("train", out2, params={"steps": 10}, resumable=True)
    with pytest.raises(KeyboardInterrupt):
        run_step(spec2, lambda d: ((d / "ckpt-5").write_text("5"), (_ for _ in ()).throw(KeyboardInterrupt)),
                 log=lambda m: None)
    seen = []
    changed = StepSpec("train", out2, params={"steps": 20}, resumable=True)
    assert run_step(changed, lambda d: seen.append((d / "ckpt-5").exists()), log=lambda m: None).status == "ran"
    assert seen == [False]


def test_refuses_to_replace_a_directory_it_did_not_make(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(StepError, match="refusing to replace .*precious"):
        run_step(StepSpec("synth", out), lambda d: None, log=lambda m: None)
    assert (out / "thesis.tex").read_text() == "do not delete"
    assert not (out / ARTIFACT_FILE).exists()


def test_an_empty_existing_directory_is_used(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert run_step(StepSpec("synth", out), lambda d: None, log=lambda m: None).status == "ran"
    assert read_record(out)["files"] == []


def test_a_step_whose_output_file_was_deleted_runs_again(tmp_path):
    out, calls = tmp_path / "step", []
    spec = StepSpec("export", out)
    run_step(spec, _writer(out, "model", calls), log=lambda m: None)
    (out / "result.txt").unlink()
    messages = []
    assert run_step(spec, _writer(out, "model", calls), log=messages.append).status == "ran"
    assert calls == ["model", "model"] and (out / "result.txt").is_file()
    assert any("missing" in m and "result.txt" in m for m in messages)


def test_a_finished_resumable_step_made_again_keeps_the_old_artifact_aside(tmp_path):
    out, calls = tmp_path / "run", []
    run_step(StepSpec("train", out, params={"lr": 1}, resumable=True), _writer(out, "model-1", calls),
             log=lambda m: None)
    messages = []
    run_step(StepSpec("train", out, params={"lr": 2}, resumable=True), _writer(out, "model-2", calls),
             log=messages.append)
    assert (out / "result.txt").read_text() == "model-2"
    assert (previous_dir(out) / "result.txt").read_text() == "model-1"
    assert read_record(previous_dir(out))["params"] == {"lr": 1}
    assert any(".previous" in m for m in messages)


# The same contract on a remote output (``ram://``: TensorFlow's in-memory filesystem, reached through
# the same `tf.io.gfile` calls as ``gs://``), where no directory can be renamed.

def _remote_root():
    import uuid

    return f"ram://artifacts-{uuid.uuid4().hex[:8]}"


def _remote_writer(text, calls):
    from dsnn_keras import fileio

    def action(directory):
        calls.append(text)
        fileio.atomic_write(fileio.join(directory, "sub", "result.txt"), text)
    return action


def test_a_remote_step_is_made_aside_then_cached_and_a_changed_input_replaces_it():
    from dsnn_keras import fileio

    out, calls = fileio.join(_remote_root(), "step"), []
    first = run_step(StepSpec("prepare", out, inputs={"corpus": "v1"}), _remote_writer("v1", calls), log=lambda m: None)
    assert first.status == "ran" and fileio.read_text(fileio.join(out, "sub", "result.txt")) == "v1"
    assert read_record(out)["files"] == [{"path": "sub/result.txt", "size_bytes": 2}]
    assert fileio.walk_files(out) == [ARTIFACT_FILE, "sub/result.txt"]
    assert fileio.walk_files(staging_dir(out)) == []
    assert run_step(StepSpec("prepare", out, inputs={"corpus": "v1"}), _remote_writer("x", calls),
                    log=lambda m: None).status == "cached"
    fileio.atomic_write(fileio.join(out, "stale.txt"), "from v1")
    assert run_step(StepSpec("prepare", out, inputs={"corpus": "v2"}), _remote_writer("v2", calls),
                    log=lambda m: None).status == "ran"
    assert calls == ["v1", "v2"] and fileio.read_text(fileio.join(out, "sub", "result.txt")) == "v2"
    assert not fileio.exists(fileio.join(out, "stale.txt"))
    assert read_record(out)["inputs"] == {"corpus": "v2"}


def test_a_failed_remote_step_keeps_the_previous_output():
    from dsnn_keras import fileio

    out, calls = fileio.join(_remote_root(), "export"), []
    run_step(StepSpec("export", out, params={"q": 1}), _remote_writer("old", calls), log=lambda m: None)

    def fail(directory):
        fileio.atomic_write(fileio.join(directory, "sub", "result.txt"), "half")
        raise RuntimeError("converter crashed")

    with pytest.raises(RuntimeError, match="converter crashed"):
        run_step(StepSpec("export", out, params={"q": 2}), fail, log=lambda m: None)
    assert fileio.read_text(fileio.join(out, "sub", "result.txt")) == "old"
    assert read_record(out)["params"] == {"q": 1}


def test_a_remote_swap_killed_half_way_is_completed_by_the_next_run():
    from dsnn_job import artifacts
    from dsnn_keras import fileio

    out, calls = fileio.join(_remote_root(), "eval"), []
    run_step(StepSpec("eval", out, params={"v": 1}), _remote_writer("v1", calls), log=lambda m: None)
    new = StepSpec("eval", out, params={"v": 2})
    staging = staging_dir(out)
    _remote_writer("v2", calls)(staging)
    fileio.atomic_write(fileio.join(staging, "extra.txt"), "new file")
    artifacts._write_artifact(staging, new, 1.0, "now", "ran")
    # Killed after the swap deleted the old record and moved one new file in.
    fileio.remove(fileio.join(out, ARTIFACT_FILE))
    fileio.rename(fileio.join(staging, "extra.txt"), fileio.join(out, "extra.txt"))
    messages = []
    record = run_step(new, _remote_writer("never", calls), log=messages.append)
    assert record.status == "cached" and calls == ["v1", "v2"]
    assert any("completed the interrupted replacement" in m for m in messages)
    assert fileio.read_text(fileio.join(out, "sub", "result.txt")) == "v2"
    assert fileio.read_text(fileio.join(out, "extra.txt")) == "new file"
    assert fileio.walk_files(staging) == []


def test_a_remote_resumable_step_resumes_in_place_and_keeps_a_finished_one_aside():
    from dsnn_keras import fileio

    out = fileio.join(_remote_root(), "run")
    spec = StepSpec("train", out, params={"steps": 10}, resumable=True)

    def interrupted(directory):
        fileio.atomic_write(fileio.join(directory, "ckpt-5"), "5")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_step(spec, interrupted, log=lambda m: None)
    seen = []
    assert run_step(spec, lambda d: seen.append(fileio.isfile(fileio.join(d, "ckpt-5"))),
                    log=lambda m: None).status == "resumed"
    assert seen == [True]
    messages = []
    run_step(StepSpec("train", out, params={"steps": 20}, resumable=True), _remote_writer("model-2", []),
             log=messages.append)
    assert fileio.read_text(fileio.join(previous_dir(out), "ckpt-5")) == "5"
    assert read_record(previous_dir(out))["params"] == {"steps": 10}
    assert not fileio.exists(fileio.join(out, "ckpt-5"))
    assert any("kept the previous finished artifact" in m for m in messages)


def test_refuses_to_replace_a_remote_prefix_it_did_not_make():
    from dsnn_keras import fileio

    out = fileio.join(_remote_root(), "precious")
    fileio.atomic_write(fileio.join(out, "thesis.tex"), "do not delete")
    with pytest.raises(StepError, match="refusing to replace ram://.*precious"):
        run_step(StepSpec("synth", out), lambda d: None, log=lambda m: None)
    assert fileio.read_text(fileio.join(out, "thesis.tex")) == "do not delete"


def test_remote_tree_fingerprint_follows_the_listing():
    from dsnn_keras import fileio

    corpus = fileio.join(_remote_root(), "corpus")
    fileio.atomic_write(fileio.join(corpus, "spk", "a.flac"), b"123")
    first = fingerprint_tree(corpus)
    fileio.atomic_write(fileio.join(corpus, "spk", "b.flac"), b"4")
    assert fingerprint_tree(corpus) != first
    with pytest.raises(StepError, match="input directory not found: ram://"):
        fingerprint_tree(fileio.join(_remote_root(), "nowhere"))
