"""dsnn_keras.eval_report: eval.json as frozen dataclasses (round trip, unknown keys, old files)."""
import json

import pytest

from dsnn_keras.errors import DsnnError
from dsnn_keras.eval_report import SCHEMA_VERSION, EvalReport, EvalReportError, LevelResult

# What dsnn-eval wrote before schema_version existed (keys and order of a real eval.json).
OLD_EVAL = {
    "format_version": 1, "split": "dev",
    "levels": [{"level": 0, "sparsity": 0.0, "wer": 0.25, "cer": 0.125, "rtf": 0.01, "cpu_rtf": 0.02,
                "num_utterances": 4, "compute_seconds": 0.5, "substitutions": 1, "deletions": 0,
                "insertions": 0, "reference_words": 4, "char_errors": 2, "reference_chars": 16,
                "prunable_nonzero_fraction": 1.0, "model_nonzero_fraction": 1.0, "prunable_params": 800,
                "model_params": 1000, "units": {"lstm_0": 32},
                "examples": [{"utt_id": "a", "reference": "yes", "hypothesis": "yes"}]},
               {"level": 1, "sparsity": 0.9, "wer": 0.5, "cer": 0.25, "rtf": None, "cpu_rtf": None,
                "num_utterances": 4, "compute_seconds": 0.4, "substitutions": 2, "deletions": 0,
                "insertions": 0, "reference_words": 4, "char_errors": 4, "reference_chars": 16,
                "prunable_nonzero_fraction": None, "model_nonzero_fraction": None, "prunable_params": 0,
                "model_params": 1000, "examples": []}],
    "num_utterances": 4, "audio_seconds": 6.5, "batch_size": 1, "decoder": "greedy_ctc",
    "run_dir": "run", "data_dir": "data", "files": {"json": "run/eval.json"},
    "created_by": {"command": ["dsnn-eval", "run"], "versions": {"dsnn": "0.1"}, "time": "2026-01-01T00:00:00+00:00"},
}


def test_an_old_eval_json_loads_and_writes_back_every_key_in_order_plus_schema_version():
    report = EvalReport.from_dict(OLD_EVAL)
    assert report.levels[0].units == {"lstm_0": 32} and report.levels[1].rtf is None
    written = report.to_dict()
    assert written.pop("schema_version") == SCHEMA_VERSION
    assert json.dumps(written) == json.dumps(OLD_EVAL)   # same keys, values and order


def test_round_trip_through_a_file_is_the_identity(tmp_path):
    report = EvalReport.from_dict(OLD_EVAL)
    report.write(tmp_path / "eval.json")
    again = EvalReport.read(tmp_path / "eval.json")
    assert again == report and again.to_dict() == report.to_dict()


def test_a_minimal_report_needs_only_the_level_rates():
    report = EvalReport.from_dict({"levels": [{"level": 0, "sparsity": 0.5, "wer": 0.2, "cer": 0.1}]})
    assert report.at_sparsity(0.5).wer == 0.2 and report.level(0).cer == 0.1 and report.split is None
    assert "split" not in report.to_dict()
    assert report.level(3) is None and report.at_sparsity(0.9) is None


@pytest.mark.parametrize("values, named", [
    ({**OLD_EVAL, "wer_total": 1}, "wer_total"),
    ({**OLD_EVAL, "levels": [{**OLD_EVAL["levels"][0], "latency": 3}]}, "levels[0].latency"),
    ({"split": "dev", "levels": [{"level": 0, "sparsity": 0.0, "wer": 0.1}]}, "levels[0].cer"),
    ({"split": "dev"}, "levels"),
    ({"split": "dev", "levels": [{"level": 0, "sparsity": "dense", "wer": 0.1, "cer": 0.1}]}, "levels[0].sparsity"),
    ({**OLD_EVAL, "schema_version": SCHEMA_VERSION + 1}, "schema_version"),
])
def test_an_unknown_missing_or_mistyped_key_is_an_error_naming_the_file_and_key(tmp_path, values, named):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(values))
    with pytest.raises(EvalReportError) as caught:
        EvalReport.read(path)
    assert str(path) in str(caught.value) and named in str(caught.value)
    assert isinstance(caught.value, DsnnError) and isinstance(caught.value, ValueError)


def test_level_results_are_frozen_and_reject_negative_rates():
    level = LevelResult(level=0, sparsity=0.0, wer=0.1, cer=0.1)
    with pytest.raises(AttributeError):
        level.wer = 0.2
    with pytest.raises(EvalReportError, match="wer and cer"):
        LevelResult(level=0, sparsity=0.0, wer=-0.1, cer=0.1)


def test_a_trained_runs_eval_results_read_as_a_report(tmp_path):
    import dataclasses

    from dsnn_keras.run_dir import TrainedRun

    fields = {f.name: None for f in dataclasses.fields(TrainedRun)}
    run = TrainedRun(**{**fields, "run_dir": tmp_path, "eval_results": OLD_EVAL})
    assert run.eval_report == EvalReport.from_dict(OLD_EVAL)
    assert dataclasses.replace(run, eval_results=None).eval_report is None
