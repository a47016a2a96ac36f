"""The whole chain through the real `dsnn-job` command on a tiny configuration, then re-runs.

One job (synthesize -> Beam prepare -> DSNN training -> tune the beam decoder -> eval -> export ->
transcribe -> bench -> summary) is shared by the tests of this module; each checks one artifact. A second invocation with
identical arguments must skip every step; a changed benchmark parameter re-runs only the benchmark.
"""
import json
import pathlib
import subprocess
import sys

import pytest

from dsnn_job.artifacts import ARTIFACT_FILE, read_record
from dsnn_job.job import STEPS
from dsnn_keras.beam_search import DecoderSettings

pytestmark = pytest.mark.large   # whole dsnn-job runs

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEVELS = [0.0, 0.5, 0.9]
# The shipped route (unit granularity, sliced export), three levels, a tiny model and corpus.
TINY = ["--config", str(ROOT / "configs" / "tiny.yaml"), "--num_utterances", "40",
        "--set", "training.total_steps=40", "--set", "training.eval_every=20", "--set", "pruning.begin_step=8",
        "--set", "pruning.end_step=28", "--set", f"pruning.levels={LEVELS}", "--set", "pruning.granularity=unit",
        "--baselines", "dense", "--bench_threads", "1", "--bench_repeats", "1", "--bench_utterances", "2"]


def _job(out: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsnn_job.cli", "--out", str(out), *TINY, *extra],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)


def _job_here(out: pathlib.Path, capsys, *extra: str) -> subprocess.CompletedProcess:
    """The same entry point in this process: the module's job ran as a real command already, and a
    re-run is not about the process boundary (each new process costs seconds of imports)."""
    from dsnn_job.cli import main

    capsys.readouterr()
    code = main(["--out", str(out), *TINY, *extra])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["dsnn-job", *extra], code, captured.out, captured.err)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "demo"
    first = _job(out)
    assert first.returncode == 0, first.stderr[-4000:]
    return out, first


def test_every_step_ran_and_recorded_its_inputs(job):
    out, first = job
    for name, directory in [("synth", "corpus"), ("prepare", "data"), ("train", "run"), ("tune", "decoder"),
                            ("eval", "eval"),
                            ("export", "export"), ("transcribe", "transcribe"), ("bench", "bench")]:
        record = read_record(out / directory)
        assert record is not None, f"{directory}/{ARTIFACT_FILE} missing"
        assert record["name"] == name and record["status"] == "ran"
        assert len(record["fingerprint"]) == 64 and record["files"]
    train = read_record(out / "run")
    assert set(train["inputs"]) == {"data", "config"}
    assert train["inputs"]["data"] == read_record(out / "data")["fingerprint"]
    assert "training.total_steps=40" in train["params"]["overrides"]
    assert "==> step 8/8: bench" in first.stderr
    assert read_record(out / "eval")["inputs"]["decoder"] == read_record(out / "decoder")["fingerprint"]


def test_dataset_checkpoint_and_eval_artifacts(job):
    out, _ = job
    dataset = json.loads((out / "data" / "dataset.json").read_text())
    assert set(dataset["splits"]) == {"train", "dev", "test"}
    assert list((out / "run" / "checkpoints").glob("ckpt-40.index"))
    assert list((out / "run" / "tensorboard").glob("events.out.tfevents.*"))
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    assert evaluation["split"] == "test" and len(evaluation["levels"]) == len(LEVELS)
    assert all(0.0 <= level["wer"] for level in evaluation["levels"])


def test_the_tflite_transcribes_at_every_level(job):
    from tflite.runtime import Recognizer

    out, _ = job
    transcripts = json.loads((out / "transcribe" / "transcripts.json").read_text())
    assert [entry["level"] for entry in transcripts["levels"]] == list(range(len(LEVELS)))
    assert pathlib.Path(transcripts["audio"]).is_file() and "/test/" in transcripts["audio"]
    recognizer = Recognizer(out / "export" / "model.tflite", decoder="greedy")
    assert recognizer.metadata.raw["export"]["design"] == "if_tree_sliced"
    assert [level["realisation"] for level in recognizer.levels] == ["sliced"] * len(LEVELS)
    beam = Recognizer(out / "export" / "model.tflite")   # the file's default: the beam decoder it carries
    assert beam.decoder == "beam"
    for entry in transcripts["levels"]:
        assert recognizer.transcribe(transcripts["audio"], level=entry["level"]) == entry["text"]
        assert beam.transcribe(transcripts["audio"], level=entry["level"]) == entry["beam_text"]
    assert [p.name for p in (out / "export" / "single").glob("*.tflite")] == ["level_0.tflite"]


def test_summary_json_has_a_row_per_level_and_plots_are_pngs(job):
    out, first = job
    summary = json.loads((out / "summary.json").read_text())
    assert [row["sparsity"] for row in summary["levels"]] == LEVELS
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    bench = json.loads((out / "bench" / "bench.json").read_text())
    for row, ev in zip(summary["levels"], evaluation["levels"]):
        assert row["wer"] == ev["wer"] and row["cer"] == ev["cer"]
        assert row["latency_ms_median"] > 0 and row["rtf"] > 0
        timing = [r for r in bench["rows"] if r["kind"] == "multi" and r["level"] == row["level"]]
        assert row["latency_ms_median"] == timing[0]["median_ms"]
    nonzero = [row["nonzero_weights"] for row in summary["levels"]]
    assert nonzero == sorted(nonzero, reverse=True) and nonzero[0] > nonzero[-1]
    assert summary["model"]["size_bytes"] == (out / "export" / "model.tflite").stat().st_size
    for path in summary["plots"].values():
        assert pathlib.Path(path).read_bytes()[:8] == PNG_MAGIC
    assert (out / "bench" / "bench.png").read_bytes()[:8] == PNG_MAGIC
    beam = json.loads((out / "eval" / "eval_beam.json").read_text())
    assert beam["decoder"] == "beam" and beam["decoder_config"]["lm"] == str(out / "decoder" / "lm")
    settings = DecoderSettings.read(out / "decoder")
    for row, ev in zip(summary["levels"], beam["levels"]):
        assert row["beam_wer"] == ev["wer"] and row["decoder_ms_median"] > 0
        level_beam = settings.beam_for(row["level"])
        assert row["beam"] == {"lm_weight": level_beam.lm_weight, "word_bonus": level_beam.word_bonus,
                               "beam_width": level_beam.beam_width}
    assert summary["decoder"]["tuned_on"] == "dev" and not summary["decoder"]["tuned_on_eval_split"]
    assert "| level | sparsity | nonzero weights | WER % | CER % | beam WER % |" in first.stdout
    assert (out / "summary.md").read_text().startswith("# dsnn-job summary")


def test_rerun_skips_every_step_and_a_changed_parameter_reruns_only_its_step(job, capsys):
    out, _ = job
    before = {d: read_record(out / d)["finished"] for d in ("corpus", "data", "run", "eval", "export")}
    again = _job_here(out, capsys)
    assert again.returncode == 0, again.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    made = [name for name in STEPS if name != "push"]   # push runs only with --push_dir
    assert {s["name"]: s["status"] for s in summary["steps"]} == {name: "cached" for name in made}
    changed = _job_here(out, capsys, "--bench_repeats", "2")  # overrides the earlier --bench_repeats 1
    assert changed.returncode == 0, changed.stderr[-4000:]
    statuses = {s["name"]: s["status"] for s in json.loads((out / "summary.json").read_text())["steps"]}
    assert statuses == {**{name: "cached" for name in made}, "bench": "ran"}
    assert json.loads((out / "bench" / "bench.json").read_text())["repeats"] == 2
    assert {d: read_record(out / d)["finished"] for d in before} == before


def test_push_step_refuses_a_model_worse_than_the_pushed_one_then_pushes_it_once_within_tolerance(job, tmp_path,
                                                                                                  capsys):
    from dsnn_job.cli import main
    from dsnn_job.push import eval_set_fingerprint

    def run(*extra):   # dsnn-job in this process (the module's job has every other step up to date)
        code = main(["--out", str(out), *TINY, *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-4000:]
        return captured

    out, _ = job
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    assert any(level["wer"] > 0 for level in evaluation["levels"])
    # Version 1, as an earlier job would have pushed it: another model, WER 0 at every level on
    # the same utterances.
    models = tmp_path / "models"
    (models / "1").mkdir(parents=True)
    (models / "1" / "model.tflite").write_bytes(b"an earlier model")
    (models / "1" / "eval.json").write_text(json.dumps(
        {**evaluation, "levels": [{**level, "wer": 0.0} for level in evaluation["levels"]]}))
    (models / "1" / "push.json").write_text(json.dumps({"version": 1, "model_sha256": "0" * 64, "eval": {
        "eval_set_sha256": eval_set_fingerprint(out / "eval" / "eval_hypotheses.jsonl")}}))

    refused = run("--push_dir", str(models))
    assert "==> step 9/9: push" in refused.err
    worse = next(level for level in evaluation["levels"] if level["wer"] > 0)
    assert (f"push: not pushed: level {worse['level']} (sparsity {worse['sparsity']:g}) WER {worse['wer']:.4f} > "
            "pushed version 1: 0.0000 + tolerance 0.0000") in refused.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 3 and summary["push"]["status"] == "not_pushed"
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == ["1"]

    pushed = run("--push_dir", str(models), "--push_tolerance", "1.0")
    assert "push: pushed version 2: every level within tolerance 1.0000 of pushed version 1" in pushed.out
    version = models / "2"
    assert (version / "model.tflite").read_bytes() == (out / "export" / "model.tflite").read_bytes()
    assert json.loads((version / "eval.json").read_text())["levels"] == evaluation["levels"]
    card = (version / "model_card.md").read_text()
    assert card.startswith("# Model card: version 2") and f"{(version / 'model.tflite').stat().st_size:,} bytes" in card
    assert f"| {worse['level']} | {worse['sparsity']:.2f} |" in card and "`train`:" in card
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["push"]["status"], summary["push"]["version"]) == ("pushed", 2)
    assert "Push (`" in (out / "summary.md").read_text()

    run("--push_dir", str(models), "--push_tolerance", "1.0")   # the same run again: not pushed twice
    assert "is already version 2" in json.loads((out / "summary.json").read_text())["push"]["reason"]
    assert sorted(p.name for p in models.iterdir() if not p.name.startswith(".")) == ["1", "2"]


def test_the_job_runs_and_pushes_with_every_path_on_a_remote_filesystem(job, capsys):
    """dsnn-job --out/--push_dir on ``ram://`` (same `tf.io.gfile` / Beam FileSystems calls as ``gs://``).

    The module's finished job is copied to the URL: its steps are found up to date there (records read
    remotely). Then a corpus on the URL: prepare (Beam), train (checkpoints; warm-started from the
    module's run), eval, export, transcribe and bench run again on the URL, and the push step writes
    version 1 of a remote push directory.
    """
    from ram_filesystem import new_root, upload_tree

    from dsnn_job.cli import main
    from dsnn_keras import fileio

    out, _ = job
    url = new_root("job")
    remote, models = f"{url}/demo", f"{url}/models"
    for name in ("corpus", "data", "run", "decoder", "eval", "export", "transcribe", "bench"):
        upload_tree(out / name, f"{remote}/{name}")

    def run(*extra):
        code = main(["--out", remote, *TINY, *extra])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-4000:]
        return json.loads(fileio.read_text(f"{remote}/summary.json"))

    cached = run()
    assert {s["name"]: s["status"] for s in cached["steps"]} == {name: "cached" for name in STEPS if name != "push"}
    # A shorter training than the module's (a changed --set re-makes train anyway): the point is the paths.
    # Then a real --corpus on the URL (the synthetic train and dev speakers in one LibriSpeech tree, the
    # dev speaker held out: the same training text, so the same tokenizer), warm-started from the
    # module's local run: the scheduled "retrain on new data" case, end to end, every step remade.
    corpus = f"{url}/speech"
    for split in ("train", "dev"):
        upload_tree(out / "corpus" / split, corpus)
    summary = run("--corpus", corpus, "--dev_speakers", "spk0004", "--set", "training.total_steps=12",
                  "--set", "pruning.begin_step=2", "--set", "pruning.end_step=8", "--push_dir", models,
                  "--warm_start", str(out / "run"))
    statuses = {s["name"]: s["status"] for s in summary["steps"]}
    assert statuses == {name: "ran" for name in STEPS[1:]}
    assert summary["eval_split"] == "dev" and summary["transcribed"]["audio"].startswith(f"{corpus}/spk0004/")
    assert [row["sparsity"] for row in summary["levels"]] == LEVELS and summary["model"]["size_bytes"] > 0
    assert summary["decoder"]["tuned_on_eval_split"]   # a real corpus: tuned on the held-out dev it reports
    assert summary["push"]["status"] == "pushed" and summary["push"]["version"] == 1
    model = fileio.read_bytes(f"{remote}/export/model.tflite")
    assert fileio.read_bytes(f"{models}/1/model.tflite") == model
    assert json.loads(fileio.read_text(f"{models}/1/push.json"))["model_sha256"] == summary["push"]["model_sha256"]
    for name in ("data", "run", "decoder", "eval", "export", "bench", "push"):
        record = read_record(f"{remote}/{name}")
        assert record is not None and record["status"] == "ran", name
        assert {f["path"] for f in record["files"]} <= set(fileio.walk_files(f"{remote}/{name}"))
    assert fileio.isfile(f"{remote}/run/checkpoints/checkpoint")
    assert summary["warm_start"]["run_dir"] == str((out / "run").resolve())
    assert summary["warm_start"]["masks"] == "restored and frozen"
    assert "Warm start: from" in fileio.read_text(f"{models}/1/model_card.md")
    assert fileio.read_bytes(f"{remote}/plots/wer_vs_sparsity.png").startswith(PNG_MAGIC)
    assert not [p for p in fileio.walk_files(url) if ".partial" in p]   # no staging left behind
