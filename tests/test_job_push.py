"""dsnn_job.push: blessing (per-level WER against the latest pushed version) and versioned, atomic,
idempotent pushes. The eval reports are built directly; the model files are arbitrary bytes (the
push copies them, it does not load them). The push through a whole dsnn-job is in test_job_e2e.py."""
import json
import pathlib
import subprocess
import sys

import pytest

from dsnn_job.job import JobConfig
from dsnn_job.push import (CARD_FILE, EVAL_FILE, MODEL_FILE, RECORD_FILE, PushArgumentError, PushError, bless,
                           eval_set_fingerprint, model_card, push_model, pushed_versions)
from dsnn_keras.eval_report import EvalReport, LevelResult
from dsnn_keras.paths import PathOverlapError

SPARSITIES = (0.0, 0.5, 0.9)
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _report(wers, split="test", sparsities=SPARSITIES, num_utterances=40) -> EvalReport:
    return EvalReport(split=split, num_utterances=num_utterances,
                      levels=tuple(LevelResult(level=i, sparsity=s, wer=w, cer=w / 2)
                                   for i, (s, w) in enumerate(zip(sparsities, wers))))


def _candidate(tmp_path, name, wers, **kwargs):
    """A model file (distinct bytes per name) and its eval.json."""
    directory = tmp_path / name
    directory.mkdir()
    (directory / "model.tflite").write_bytes(b"TFL3" + name.encode() * 100)
    _report(wers, **kwargs).write(directory / "eval.json")
    return directory / "model.tflite", directory / "eval.json"


def _push(push_dir, candidate, **kwargs):
    model, eval_json = candidate
    return push_model(push_dir, model, eval_json, card=lambda version, reason: f"# v{version}\n{reason}\n", **kwargs)


def _visible(push_dir):
    return sorted(p.name for p in pathlib.Path(push_dir).iterdir() if not p.name.startswith("."))


def test_refuses_a_worse_model_and_accepts_a_better_one(tmp_path):
    push_dir = tmp_path / "pushed"
    first = _push(push_dir, _candidate(tmp_path, "a", [0.20, 0.25, 0.29]))
    assert (first.status, first.version) == ("pushed", 1)
    assert "no version was pushed yet" in first.reason

    worse = _push(push_dir, _candidate(tmp_path, "b", [0.19, 0.25, 0.31]))
    assert (worse.status, worse.version, worse.compared_to) == ("not_pushed", None, 1)
    assert worse.reason == ("not pushed: level 2 (sparsity 0.9) WER 0.3100 > pushed version 1: 0.2900 + "
                            "tolerance 0.0000")
    assert [c.blessed for c in worse.comparisons] == [True, True, False]
    assert _visible(push_dir) == ["1"]

    better = _push(push_dir, _candidate(tmp_path, "c", [0.18, 0.25, 0.29]))   # level 1 equal: no worse
    assert (better.status, better.version, better.compared_to) == ("pushed", 2, 1)
    assert better.reason.startswith("pushed version 2: every level within tolerance 0.0000 of pushed version 1")
    assert _visible(push_dir) == ["1", "2"]
    version = push_dir / "2"
    assert sorted(p.name for p in version.iterdir()) == sorted([MODEL_FILE, EVAL_FILE, CARD_FILE, RECORD_FILE])
    assert (version / MODEL_FILE).read_bytes() == (tmp_path / "c" / "model.tflite").read_bytes()
    assert EvalReport.read(version / EVAL_FILE).level(0).wer == 0.18
    record = json.loads((version / RECORD_FILE).read_text())
    assert record["version"] == 2 and record["blessing"]["compared_to"] == 1
    assert [lvl["wer"] for lvl in record["eval"]["levels"]] == [0.18, 0.25, 0.29]


def test_the_tolerance_is_an_absolute_wer_fraction_per_level(tmp_path):
    push_dir = tmp_path / "pushed"
    _push(push_dir, _candidate(tmp_path, "a", [0.20, 0.25, 0.30]))
    within = _push(push_dir, _candidate(tmp_path, "b", [0.209, 0.25, 0.30]), tolerance=0.01)
    assert within.status == "pushed" and within.version == 2
    beyond = _push(push_dir, _candidate(tmp_path, "c", [0.209, 0.25, 0.321]), tolerance=0.01)
    assert beyond.status == "not_pushed"   # compared with version 2 now: level 2 0.321 > 0.30 + 0.01
    assert "level 2 (sparsity 0.9) WER 0.3210 > pushed version 2: 0.3000 + tolerance 0.0100" in beyond.reason
    with pytest.raises(PushArgumentError, match="--push_tolerance"):
        _push(push_dir, _candidate(tmp_path, "d", [0.1, 0.1, 0.1]), tolerance=-0.01)


@pytest.mark.parametrize("change, message", [
    ({"split": "dev"}, "evaluated on split 'dev', pushed version 1 on 'test'"),
    ({"sparsities": (0.0, 0.5, 0.8)}, "levels (index, sparsity)"),
    ({"num_utterances": 41, "eval_set": "other"}, "other utterances of split 'test'"),
])
def test_an_evaluation_on_other_data_or_levels_is_refused_unless_forced(tmp_path, change, message):
    pushed, kwargs = _report([0.3, 0.3, 0.3]), dict(change)
    eval_set = kwargs.pop("eval_set", "same")
    better = _report([0.1, 0.1, 0.1], **kwargs)
    refused = bless(better, pushed, pushed_version=1, candidate_eval_set=eval_set, pushed_eval_set="same")
    assert not refused.blessed and message in refused.reason and "--push_force" in refused.reason
    forced = bless(better, pushed, pushed_version=1, candidate_eval_set=eval_set, pushed_eval_set="same", force=True)
    assert forced.blessed and forced.forced and refused.reason.split(";")[0] in forced.reason


def test_a_forced_push_of_a_worse_model_says_so(tmp_path):
    push_dir = tmp_path / "pushed"
    _push(push_dir, _candidate(tmp_path, "a", [0.2, 0.2, 0.2]))
    forced = _push(push_dir, _candidate(tmp_path, "b", [0.2, 0.2, 0.5]), force=True)
    assert forced.status == "pushed" and forced.version == 2 and forced.forced
    assert "forced (--push_force) although level 2" in forced.reason


def test_the_same_model_is_never_pushed_twice(tmp_path):
    push_dir = tmp_path / "pushed"
    candidate = _candidate(tmp_path, "a", [0.2, 0.2, 0.2])
    assert _push(push_dir, candidate).version == 1
    again = _push(push_dir, candidate, force=True)
    assert (again.status, again.version) == ("already_pushed", 1)
    assert "is already version 1" in again.reason
    assert _visible(push_dir) == ["1"]


def test_a_failed_push_leaves_no_version_and_the_next_one_takes_the_next_number(tmp_path):
    push_dir = tmp_path / "pushed"
    _push(push_dir, _candidate(tmp_path, "a", [0.3, 0.3, 0.3]))
    model, eval_json = _candidate(tmp_path, "b", [0.2, 0.2, 0.2])

    def broken_card(version, reason):
        assert (push_dir / f".staging-{version}-{__import__('os').getpid()}" / MODEL_FILE).is_file()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        push_model(push_dir, model, eval_json, card=broken_card)
    assert sorted(p.name for p in push_dir.iterdir()) == [".dsnn-push.lock", "1"]
    # A push killed half way (no rename): its staging directory is not a version and goes away.
    dead = push_dir / ".staging-2-999999"
    dead.mkdir()
    (dead / MODEL_FILE).write_bytes(b"half")
    assert [v.version for v in pushed_versions(push_dir)] == [1]
    assert _push(push_dir, (model, eval_json)).version == 2
    assert not dead.exists() and _visible(push_dir) == ["1", "2"]
    # A version directory someone left without push.json is not a version, but its number is taken.
    (push_dir / "3").mkdir()
    assert _push(push_dir, _candidate(tmp_path, "c", [0.1, 0.1, 0.1])).version == 4


def test_concurrent_pushes_get_distinct_consecutive_versions(tmp_path):
    push_dir = tmp_path / "pushed"
    candidates = [_candidate(tmp_path, f"m{i}", [0.2, 0.2, 0.2]) for i in range(4)]
    script = ("import sys; from dsnn_job.push import push_model; "
              "d = push_model(sys.argv[1], sys.argv[2], sys.argv[3], card=lambda v, r: '# card', force=True); "
              "print(d.version)")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(push_dir), str(m), str(e)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for m, e in candidates]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outputs]
    assert sorted(int(o[0]) for o in outputs) == [1, 2, 3, 4]
    shas = {v.record["model_sha256"] for v in pushed_versions(push_dir)}
    assert len(shas) == 4 and _visible(push_dir) == ["1", "2", "3", "4"]


def test_a_push_dir_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PushError, match="exists and is not a directory"):
        _push(tmp_path / "file", _candidate(tmp_path, "a", [0.2, 0.2, 0.2]))


def test_eval_set_fingerprint_depends_on_ids_and_references_not_on_order_or_hypotheses(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return eval_set_fingerprint(path)

    a = {"utt_id": "u1", "reference": "yes", "hypotheses": {"0": "yes"}}
    b = {"utt_id": "u2", "reference": "no", "hypotheses": {"0": "no"}}
    assert write("1.jsonl", [a, b]) == write("2.jsonl", [b, {**a, "hypotheses": {"0": "yea"}}])
    assert write("3.jsonl", [a, b]) != write("4.jsonl", [a, {**b, "reference": "nope"}])
    assert eval_set_fingerprint(tmp_path / "missing.jsonl") is None


def test_the_model_card_lists_levels_wer_size_data_and_versions(tmp_path):
    model, _ = _candidate(tmp_path, "a", [0.2, 0.25, 0.3])
    card = model_card(3, report=_report([0.2, 0.25, 0.3]), model_path=model,
                      metadata={"design": "sliced", "quantize": "none",
                                "levels": [{"level": 0, "nonzero_weights": 1234}]},
                      config={"model": {"lstm_units": [48]}, "pruning": {"levels": [0.0, 0.5, 0.9]},
                              "training": {"total_steps": 40}},
                      data={"splits": {"train": {"num_utterances": 30, "hours": 0.01}},
                            "tokenizer": {"model_type": "char", "vocab_size": 30}},
                      blessing="no version was pushed yet", latency={0: 1.5},
                      versions={"tensorflow": "2.21.0"})
    assert card.startswith("# Model card: version 3\n")
    assert f"{model.stat().st_size:,} bytes" in card
    assert "| 0 | 0.00 | 1,234 | 20.00 | 10.00 | 1.50 |" in card
    assert "| 2 | 0.90 | – | 30.00 | 15.00 | – |" in card
    assert "`train`: 30 utterances" in card and "tensorflow 2.21.0" in card and "design `sliced`" in card


def test_job_flags_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(Exception, match="need --push_dir"):
        JobConfig(out=tmp_path / "out", push_force=True)
    with pytest.raises(PushArgumentError):
        JobConfig(out=tmp_path / "out", push_dir=tmp_path / "models", push_tolerance=float("nan"))
    with pytest.raises(PathOverlapError, match="--push_dir .* is inside --out"):
        JobConfig(out=tmp_path / "out", push_dir=tmp_path / "out" / "models")
    (tmp_path / "out" / "run").mkdir(parents=True)
    with pytest.raises(PathOverlapError, match="--out .* contains --warm_start"):
        JobConfig(out=tmp_path / "out", warm_start=tmp_path / "out" / "run")
