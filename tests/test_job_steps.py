"""dsnn_job.job: the steps call the typed functions behind the dsnn-* commands (no argv, no stdout
parsing) and turn their errors into StepErrors naming the command."""
import json
import pathlib

import pytest

from dsnn_job.artifacts import StepError
from dsnn_job.job import Job, JobConfig, failing_as
from dsnn_keras.errors import DsnnError


@pytest.fixture
def job(tmp_path, monkeypatch):
    job = Job(JobConfig(out=tmp_path / "out", overrides=("training.total_steps=7",)), log=lambda _m: None)
    utterance = {"utt_id": "u1", "path": str(tmp_path / "u1.flac"), "reference": "YES"}
    monkeypatch.setattr(Job, "held_out", lambda self: [utterance])
    return job


class _Metadata:
    sparsities = [0.0, 0.5, 0.9]


def test_transcribe_step_records_the_text_the_recognizer_returns_at_every_level(job, tmp_path, monkeypatch):
    import tflite.metadata
    import tflite.runtime

    calls = []

    class FakeRecognizer:
        def __init__(self, path, num_threads=1, decoder="auto"):
            self.path, self.decoder = pathlib.Path(path), decoder

        def check_level(self, level):
            return level

        def transcribe(self, audio, level=0):
            calls.append((str(self.path), audio, level, self.decoder))
            return f"{self.decoder} text at level {level}"

    monkeypatch.setattr(tflite.runtime, "Recognizer", FakeRecognizer)
    monkeypatch.setattr(tflite.metadata, "read_metadata", lambda path: _Metadata())
    job._transcribe(tmp_path)
    transcripts = json.loads((tmp_path / "transcripts.json").read_text())
    assert [(e["level"], e["sparsity"], e["text"], e["beam_text"]) for e in transcripts["levels"]] == [
        (level, sparsity, f"greedy text at level {level}", f"beam text at level {level}")
        for level, sparsity in enumerate(_Metadata.sparsities)]
    assert calls == [(str(job.model_path), str(tmp_path / "u1.flac"), level, decoder)
                     for level in range(3) for decoder in ("greedy", "beam")]
    assert transcripts["reference"] == "YES" and transcripts["utt_id"] == "u1"


def test_a_dsnn_error_of_a_step_function_fails_the_step_naming_the_command(job, tmp_path, monkeypatch):
    import tflite.metadata
    import tflite.runtime
    from tflite.runtime import RecognizerError

    class BrokenRecognizer:
        def __init__(self, path, num_threads=1, decoder="auto"):
            raise RecognizerError(f"{path}: not a DSNN export")

    monkeypatch.setattr(tflite.runtime, "Recognizer", BrokenRecognizer)
    monkeypatch.setattr(tflite.metadata, "read_metadata", lambda path: _Metadata())
    with pytest.raises(StepError, match="dsnn-transcribe failed: .*model.tflite: not a DSNN export"):
        job._transcribe(tmp_path)
    assert not (tmp_path / "transcripts.json").exists()


def test_train_step_calls_train_run_with_the_jobs_paths_and_overrides(job, tmp_path, monkeypatch):
    import dsnn_keras.train_run

    seen = {}

    def fake_train_run(data_dir, config_path, run_dir, *, overrides=(), max_steps=None, stream=None,
                       warm_start=None):
        seen.update(data=data_dir, config=config_path, run=run_dir, overrides=tuple(overrides),
                    warm_start=warm_start)
        return {"step": 7, "dev": [{"sparsity": 0.0, "wer": 0.5}]}

    monkeypatch.setattr(dsnn_keras.train_run, "train_run", fake_train_run)
    job._train(tmp_path / "run")
    assert seen == {"data": job.out / "data", "config": job.config.config, "run": tmp_path / "run",
                    "overrides": ("training.total_steps=7",), "warm_start": None}


def test_bench_step_calls_benchmark_with_the_held_out_files(job, tmp_path, monkeypatch):
    import tflite.bench
    import tflite.cli

    seen = {}

    def fake_benchmark(model, **kwargs):
        seen.update(model=model, **kwargs)
        return {"rows": []}

    monkeypatch.setattr(tflite.cli, "benchmark", fake_benchmark)
    monkeypatch.setattr(tflite.bench, "to_markdown", lambda result: "")
    job._bench(tmp_path / "bench")
    assert seen["model"] == job.model_path and seen["utterances"] == [str(tmp_path / "u1.flac")]
    assert seen["baseline_dir"] == job.out / "export" / "single" and seen["out_dir"] == tmp_path / "bench"
    assert (seen["threads"], seen["repeats"], seen["limit"]) == ((1, 2), 5, 8)


def test_failing_as_keeps_step_errors_and_lets_interrupts_and_bugs_through():
    with pytest.raises(StepError, match="^dsnn-x failed: no such file$"):
        with failing_as("dsnn-x"):
            raise FileNotFoundError("no such file")
    with pytest.raises(StepError, match="^dsnn-eval failed: dataset.json has no key 'splits'$"):
        with failing_as("dsnn-eval"):
            raise KeyError("dataset.json has no key 'splits'")
    with pytest.raises(StepError, match="^already a step error$"):
        with failing_as("dsnn-x"):
            raise StepError("already a step error")
    for passing in (KeyboardInterrupt, TypeError):
        with pytest.raises(passing):
            with failing_as("dsnn-x"):
                raise passing("x")
    assert issubclass(StepError, DsnnError)


def test_a_greedy_job_transcribes_once_per_level_and_a_bad_decoder_is_refused(tmp_path, monkeypatch):
    import tflite.metadata
    import tflite.runtime

    made = []

    class GreedyOnly:
        def __init__(self, path, num_threads=1, decoder="auto"):
            made.append(decoder)

        def check_level(self, level):
            return level

        def transcribe(self, audio, level=0):
            return "yes"

    job = Job(JobConfig(out=tmp_path / "out", decoder="greedy"), log=lambda _m: None)
    monkeypatch.setattr(Job, "held_out", lambda self: [{"utt_id": "u1", "path": str(tmp_path / "u1.flac"),
                                                        "reference": "YES"}])
    monkeypatch.setattr(tflite.runtime, "Recognizer", GreedyOnly)
    monkeypatch.setattr(tflite.metadata, "read_metadata", lambda path: _Metadata())
    job._transcribe(tmp_path)
    assert made == ["greedy"] * 3
    assert all("beam_text" not in e for e in json.loads((tmp_path / "transcripts.json").read_text())["levels"])
    with pytest.raises(StepError, match="--decoder must be one of"):
        JobConfig(out=tmp_path / "o", decoder="viterbi")
    with pytest.raises(StepError, match="--force tune: there is no tune step with --decoder greedy"):
        JobConfig(out=tmp_path / "o", decoder="greedy", force=("tune",))
