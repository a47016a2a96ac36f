"""bench/an4_comparison.py's steps use dsnn-job's caching (dsnn_job.artifacts): fingerprinted,
skipped when up to date, made again with what follows when an input changes, and outputs of the
older script (no _artifact.json) recorded as they are. The commands are faked (no training here)."""
import json
import pathlib

import pytest

from dsnn_job.artifacts import read_record
from harness_bench import load_bench_script


def _load_script():
    return load_bench_script("an4_comparison", "an4_comparison_steps")


cmp = _load_script()
EVAL = {"split": "dev", "levels": [{"level": 0, "sparsity": 0.0, "wer": 0.2, "cer": 0.1}]}


@pytest.fixture
def fake_tools(monkeypatch):
    """run_logged replaced by fakes that write what each command writes; returns the calls."""
    calls = []

    def fake_run_logged(name, argv, log_path, env=None):
        calls.append(name)
        out = pathlib.Path(argv[argv.index("--out") + 1]) if "--out" in argv else None
        if name == "prepare":
            (out / "dataset.json").write_text(json.dumps({"splits": {}}))
        elif name.startswith("train"):
            (out / "checkpoints").mkdir(exist_ok=True)
            (out / "checkpoints" / "ckpt-1.index").write_text("x")
        elif name.startswith("eval"):
            (pathlib.Path(argv[1]) / "eval.json").write_text(json.dumps(EVAL))
        elif name.startswith("beam"):
            out.write_text(json.dumps(EVAL))
            decoder_dir = pathlib.Path(argv[argv.index("--decoder_dir") + 1])
            decoder_dir.mkdir(parents=True, exist_ok=True)
            (decoder_dir / "decoder.json").write_text(json.dumps({"lm_weight": 1.0, "word_bonus": 1.0}))
        return {"wall_s": 1.0, "cpu_user_s": 1.0, "cpu_system_s": 0.0, "cpu_s": 1.0}

    monkeypatch.setattr(cmp, "run_logged", fake_run_logged)
    monkeypatch.setattr(cmp, "write_run_config", lambda base, overrides, path: None)
    return calls


@pytest.fixture
def plan(tmp_path):
    (tmp_path / "an4" / "train" / "fash").mkdir(parents=True)
    (tmp_path / "an4" / "train" / "fash" / "a.flac").write_bytes(b"x")
    (tmp_path / "base.yaml").write_text("version: 1\n")

    def make(**changes):
        args = dict(out_dir=tmp_path / "out", an4=tmp_path / "an4", base_config=tmp_path / "base.yaml",
                    dev_speakers=["fash"], vocab_size=32, tokenizer_type="char",
                    feature_config={"sample_rate": 16000}, log=lambda _m: None)
        return cmp.ComparisonSteps(**{**args, **changes})
    return make


def _run_all(steps, spec):
    steps.prepare()
    steps.train(spec)
    steps.evaluate(spec)


def test_a_second_run_skips_every_step_and_a_changed_override_retrains_and_reevaluates(plan, fake_tools):
    spec = cmp.RunSpec("dsnn", "dsnn", ("training.total_steps=5",))
    _run_all(plan(), spec)
    assert fake_tools == ["prepare", "train dsnn", "eval dsnn"]
    out = plan().out_dir
    assert read_record(out / "runs" / "dsnn")["inputs"]["data"] == read_record(out / "data")["fingerprint"]
    assert json.loads((out / "runs" / "dsnn" / "eval.json").read_text()) == EVAL
    assert json.loads((out / "runs" / "dsnn" / "train_time.json").read_text())["cpu_s"] == 1.0
    _run_all(plan(), spec)
    assert fake_tools == ["prepare", "train dsnn", "eval dsnn"]   # all cached
    _run_all(plan(), cmp.RunSpec("dsnn", "dsnn", ("training.total_steps=6",)))
    assert fake_tools[3:] == ["train dsnn", "eval dsnn"]
    assert (out / "runs" / "dsnn.previous" / "train_time.json").is_file()   # the finished run is kept


def test_a_changed_dataset_parameter_reprepares_and_retrains(plan, fake_tools):
    spec = cmp.RunSpec("single_00", "single", ())
    _run_all(plan(), spec)
    _run_all(plan(vocab_size=64), spec)
    assert fake_tools == ["prepare", "train single_00", "eval single_00"] * 2


def test_a_missing_run_eval_json_is_made_again(plan, fake_tools):
    spec = cmp.RunSpec("dsnn", "dsnn", ())
    _run_all(plan(), spec)
    (plan().out_dir / "runs" / "dsnn" / "eval.json").unlink()
    _run_all(plan(), spec)
    assert fake_tools == ["prepare", "train dsnn", "eval dsnn", "eval dsnn"]


def test_outputs_of_the_older_script_are_recorded_not_made_again(plan, fake_tools):
    steps = plan()
    run_dir = steps.out_dir / "runs" / "dsnn"
    (steps.out_dir / "data").mkdir(parents=True)
    (steps.out_dir / "data" / "dataset.json").write_text("{}")
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "train_time.json").write_text(json.dumps({"cpu_s": 9.0}))
    (run_dir / "eval.json").write_text(json.dumps(EVAL))
    _run_all(steps, cmp.RunSpec("dsnn", "dsnn", ()))
    assert fake_tools == []
    assert json.loads((run_dir / "train_time.json").read_text()) == {"cpu_s": 9.0}
    assert read_record(steps.out_dir / "evals" / "dsnn")["status"] == "adopted"
    unfinished = steps.out_dir / "runs" / "single_00"
    (unfinished / "checkpoints").mkdir(parents=True)
    steps.train(cmp.RunSpec("single_00", "single", ()))
    assert fake_tools == ["train single_00"] and steps.trained["single_00"].status == "resumed"


def test_eval_without_a_finished_training_is_a_clear_error(plan, fake_tools):
    steps = plan()
    steps.prepare()
    with pytest.raises(cmp.ComparisonError, match="no finished training; run the train stage first"):
        steps.evaluate(cmp.RunSpec("dsnn", "dsnn", ()))


def test_beam_step_tunes_outside_the_run_directory_and_follows_a_retraining(plan, fake_tools):
    spec = cmp.RunSpec("dsnn", "dsnn", ("training.total_steps=5",))
    steps = plan()
    _run_all(steps, spec)
    steps.evaluate_beam(spec)
    out = steps.out_dir
    assert fake_tools[-1] == "beam dsnn"
    assert json.loads((out / "evals_beam" / "dsnn" / "eval_beam.json").read_text()) == EVAL
    assert (out / "evals_beam" / "dsnn" / "decoder" / "decoder.json").is_file()
    assert not (out / "runs" / "dsnn" / "decoder.json").exists()   # the run is left as trained
    again = plan()
    _run_all(again, spec)
    again.evaluate_beam(spec)
    assert fake_tools.count("beam dsnn") == 1                       # up to date: skipped
    changed = cmp.RunSpec("dsnn", "dsnn", ("training.total_steps=6",))
    retrained = plan()
    _run_all(retrained, changed)
    retrained.evaluate_beam(changed)
    assert fake_tools[-3:] == ["train dsnn", "eval dsnn", "beam dsnn"]


def test_a_new_search_or_speed_grid_retunes_the_beam_step_only(plan, fake_tools, monkeypatch):
    from dsnn_keras import beam_search, evaluate

    spec = cmp.RunSpec("dsnn", "dsnn", ("training.total_steps=5",))
    steps = plan()
    _run_all(steps, spec)
    steps.evaluate_beam(spec)
    monkeypatch.setattr(beam_search, "SEARCH_VERSION", beam_search.SEARCH_VERSION + 1)
    again = plan()
    _run_all(again, spec)
    again.evaluate_beam(spec)
    assert fake_tools.count("train dsnn") == 1 and fake_tools.count("beam dsnn") == 2
    monkeypatch.setattr(evaluate, "DEFAULT_TUNE_TOKEN_MIN_LOGPS", (None, -7.0))
    third = plan()
    _run_all(third, spec)
    third.evaluate_beam(spec)
    assert fake_tools.count("train dsnn") == 1 and fake_tools.count("beam dsnn") == 3


def test_beam_without_a_finished_training_is_a_clear_error(plan, fake_tools):
    steps = plan()
    steps.prepare()
    with pytest.raises(cmp.ComparisonError, match="beam dsnn: .* no finished training"):
        steps.evaluate_beam(cmp.RunSpec("dsnn", "dsnn", ()))
