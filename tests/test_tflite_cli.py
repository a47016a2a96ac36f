"""tflite.cli: dsnn-export (from a run directory, WER gate), dsnn-transcribe, dsnn-bench."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile

import harness_tflite as h

RUN_LEVELS = h.RUN_LEVELS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return h.write_run_dir(tmp_path_factory.mktemp("cli") / "run")


def _write_eval(run_dir, wers):
    (run_dir / "eval.json").write_text(json.dumps({"split": "dev", "levels": [
        {"level": i, "sparsity": s, "wer": w, "cer": w / 2, "rtf": 0.01, "num_utterances": 4}
        for i, (s, w) in enumerate(zip(RUN_LEVELS, wers))]}))


@pytest.mark.parametrize("command", ["export_main", "transcribe_main", "bench_main"])
def test_help_documents_flags_without_importing_tensorflow(command):
    code = (f"import sys\nfrom tflite.cli import {command}\ntry:\n    {command}(['--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0\nprint('TF' if 'tensorflow' in sys.modules else 'noTF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("noTF")
    assert "usage: dsnn-" in out.stdout


def test_export_refuses_when_a_level_exceeds_max_wer(run_dir, tmp_path, capsys):
    from tflite.cli import export_main

    _write_eval(run_dir, [0.2, 0.45])
    out = tmp_path / "gated.tflite"
    assert export_main([str(run_dir), "--out", str(out), "--max_wer", "0.4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("dsnn-export: error: refusing to export: level 1: WER 0.4500 exceeds --max_wer 0.4 "
                       "(split 'dev')")
    assert not out.exists()


def test_export_gates_on_the_eval_file_given_with_eval(run_dir, tmp_path, capsys):
    from tflite.cli import export_main

    _write_eval(run_dir, [0.1, 0.1])               # RUN_DIR/eval.json would pass
    elsewhere = tmp_path / "held_out" / "eval.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps({"split": "test", "levels": [
        {"level": 0, "wer": 0.2}, {"level": 1, "wer": 0.45}]}))
    out = tmp_path / "gated.tflite"
    assert export_main([str(run_dir), "--out", str(out), "--eval", str(elsewhere), "--max_wer", "0.4"]) == 1
    assert "level 1: WER 0.4500 exceeds --max_wer 0.4 (split 'test')" in capsys.readouterr().err
    assert export_main([str(run_dir), "--out", str(out), "--eval", str(tmp_path / "none.json")]) == 1
    assert "--eval: no such file" in capsys.readouterr().err
    assert not out.exists()


def test_export_says_when_the_evaluation_covered_only_some_speakers(run_dir, tmp_path, capsys):
    from tflite.cli import export_main

    half = tmp_path / "half.json"
    half.write_text(json.dumps({"split": "dev", "speakers": ["fejs", "mcel"], "levels": [
        {"level": 0, "wer": 0.2}, {"level": 1, "wer": 0.45}]}))
    assert export_main([str(run_dir), "--out", str(tmp_path / "m.tflite"), "--eval", str(half), "--max_wer", "0.4"]) == 1
    err = capsys.readouterr().err
    assert f"the evaluation read ({half}) covers only speaker(s) fejs, mcel of its split" in err
    assert "level 1: WER 0.4500 exceeds --max_wer 0.4" in err
    half.write_text(json.dumps({"split": "dev", "speakers": "fejs", "levels": [{"level": 0, "wer": 0.2}]}))
    assert export_main([str(run_dir), "--out", str(tmp_path / "m.tflite"), "--eval", str(half)]) == 1
    assert "speakers must be a list of strings, got 'fejs'" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


def test_export_rejects_unknown_single_levels_before_converting(run_dir, tmp_path, capsys):
    from tflite.cli import export_main

    out = tmp_path / "m.tflite"
    assert export_main([str(run_dir), "--out", str(out), "--single_level_dir", str(tmp_path / "s"),
                        "--single_levels", "0,5"]) == 1
    assert "no level [5]; the run has levels 0..1" in capsys.readouterr().err
    assert export_main([str(run_dir), "--out", str(out), "--single_levels", "x"]) == 2
    assert "--single_levels: expected comma-separated level indices" in capsys.readouterr().err
    assert not out.exists()


def test_export_rejects_a_non_positive_tolerance_without_writing(tmp_path, capsys):
    from tflite.cli import export_main

    out = tmp_path / "m.tflite"
    assert export_main([str(tmp_path), "--out", str(out), "--tolerance", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tolerance" in err[0]
    assert not out.exists()


def test_export_with_max_wer_but_no_evaluation_says_so(run_dir, tmp_path, capsys):
    from tflite.cli import export_main

    (run_dir / "eval.json").unlink(missing_ok=True)
    assert export_main([str(run_dir), "--out", str(tmp_path / "m.tflite"), "--max_wer", "0.5"]) == 1
    assert "no eval.json; run dsnn-eval RUN_DIR first" in capsys.readouterr().err
    assert export_main([str(tmp_path / "nope"), "--out", str(tmp_path / "m.tflite")]) == 1
    assert "run directory not found" in capsys.readouterr().err


@pytest.mark.large
def test_export_from_run_dir_matches_stripped_levels(run_dir, tmp_path, capsys):
    from ai_edge_litert.interpreter import Interpreter

    from dsnn_keras import strip_nested
    from dsnn_keras.run_dir import load_run
    from tflite.cli import export_main
    from tflite.metadata import read_metadata

    _write_eval(run_dir, [0.2, 0.3])
    out = tmp_path / "model.tflite"
    assert export_main([str(run_dir), "--out", str(out), "--max_wer", "0.35"]) == 0
    assert str(out) in capsys.readouterr().out
    meta = read_metadata(out)
    run = load_run(run_dir)
    assert meta.sparsities == list(RUN_LEVELS) and meta.pieces == run.pieces and meta.blank_id == run.blank_id
    assert [level["dev_wer"] for level in meta.levels] == [0.2, 0.3]
    assert meta.raw["source"]["step"] == 1
    nonzero = [level["nonzero_weights"] for level in meta.levels]
    assert nonzero[0] > nonzero[1]
    runner = Interpreter(model_path=str(out)).get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(1.0, seed=31))
    for level in range(len(RUN_LEVELS)):
        want = h.keras_log_probs(strip_nested(run.model, level), features)
        got = runner(features=features, sparsity_level=np.int32(level))["log_probs"]
        assert np.abs(got - want).max() <= 1e-3


def test_export_reads_a_remote_run_and_gates_on_its_remote_eval_file(run_dir, capsys):
    """RUN_DIR, --eval and --out on ram:// (tf.io.gfile, the code path of gs://); the conversion to a
    remote --out runs in tests/test_fileio.py's command chain."""
    from ram_filesystem import new_root, upload_tree

    from dsnn_keras import fileio
    from tflite.cli import export_main

    url = new_root("export")
    remote = upload_tree(run_dir, f"{url}/run")
    fileio.atomic_write(f"{url}/held_out.json", json.dumps({"split": "test", "levels": [
        {"level": 0, "wer": 0.2}, {"level": 1, "wer": 0.45}]}))
    out = f"{url}/models/m.tflite"
    assert export_main([remote, "--out", out, "--eval", f"{url}/held_out.json", "--max_wer", "0.4"]) == 1
    assert "level 1: WER 0.4500 exceeds --max_wer 0.4 (split 'test')" in capsys.readouterr().err
    assert not fileio.exists(out)
    fileio.makedirs(f"{url}/models/dir.tflite")
    assert export_main([remote, "--out", f"{url}/models/dir.tflite"]) == 2
    assert f"--out {url}/models/dir.tflite: is a directory" in capsys.readouterr().err
    assert export_main([f"{url}/nope", "--out", out]) == 1
    assert f"run directory not found: {url}/nope" in capsys.readouterr().err


def test_transcribe_prints_file_and_text(tmp_path, capsys):
    from tflite.cli import transcribe_main
    from tflite.runtime import Recognizer

    wav = tmp_path / "utt.wav"
    audio = h.speechlike(1.0, seed=32)
    soundfile.write(wav, audio, 16000)
    model = h.exported("float")
    assert transcribe_main([str(model), str(wav), "--level", "2"]) == 0
    expected = Recognizer(model).transcribe(wav, 2)
    assert capsys.readouterr().out == f"{wav}\t{expected}\n"


def test_transcribe_errors_are_one_line(tmp_path, capsys):
    from tflite.cli import transcribe_main

    wav = tmp_path / "utt.wav"
    soundfile.write(wav, h.speechlike(0.5), 16000)
    model = str(h.exported("float"))
    assert transcribe_main([model, str(wav), "--level", "9"]) == 1
    assert transcribe_main([model, str(tmp_path / "missing.wav")]) == 1
    assert transcribe_main([str(tmp_path / "missing.tflite"), str(wav)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("dsnn-transcribe: error: ") for line in lines)
    assert "level 9 out of range" in lines[0] and "audio file not found" in lines[1]
    assert "model file not found" in lines[2]


def test_bench_writes_json_markdown_and_plot(tmp_path, capsys):
    from tflite.cli import bench_main

    wav = tmp_path / "u.wav"
    soundfile.write(wav, h.speechlike(1.0, seed=33), 16000)
    out_dir = tmp_path / "bench"
    assert bench_main([str(h.exported("float")), "--baselines", str(h.exported("single")),
                       "--utterances", str(tmp_path), "--threads", "1", "--repeats", "2",
                       "--out_dir", str(out_dir)]) == 0
    result = json.loads((out_dir / "bench.json").read_text())
    kinds = [(r["kind"], r["level"]) for r in result["rows"]]
    assert kinds == [("multi", 0), ("multi", 1), ("multi", 2), ("single", 0)]
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] and r["rtf"] > 0 for r in result["rows"])
    assert result["rows"][-1]["ratio_to_dense_single"] == pytest.approx(1.0)
    assert result["rows"][0]["ratio_to_own_level0"] == pytest.approx(1.0)
    assert result["rows"][2]["ratio_to_own_level0"] > 0 and result["rows"][-1]["ratio_to_own_level0"] is None
    assert result["rows"][0]["relative_macs"] == 1.0 and result["rows"][2]["relative_macs"] < 0.5
    assert all(info["memory"]["1"]["peak_rss_mb"] > 0 for info in result["files"].values())
    assert (out_dir / "bench.png").read_bytes()[:4] == b"\x89PNG"
    report = (out_dir / "bench.md").read_text()
    assert "| file | kind | level |" in report
    assert "| float.tflite | multi | 2 |" in capsys.readouterr().out
    decoder_rows = result["decoder"]["rows"]
    assert [r["level"] for r in decoder_rows] == [0, 1, 2]
    assert all(r["decoder_median_ms"] > 0 and r["decoder_to_model"] > 0 and r["paired_decoder_to_model"] > 0
               for r in decoder_rows)
    assert all(r["beam_width"] == result["decoder"]["decoder"]["beam_width"] for r in decoder_rows)
    settings = result["decoder"]["decoder"]
    assert (f"token beam {settings['token_beam']}, beam threshold {settings['beam_threshold']}, "
            f"blank skip {settings.get('blank_skip') or 'off'}" in report
            and "| beam / model | beam / model, paired |" in report)


@pytest.mark.large
def test_verify_audio_is_decoded_at_the_runs_sample_rate(tmp_path):
    from tflite.cli import export_main
    from tflite.metadata import read_metadata

    run_dir = h.write_run_dir(tmp_path / "run8k", sample_rate=8000)
    clip = tmp_path / "clip16k.wav"
    soundfile.write(clip, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    out = tmp_path / "m.tflite"
    assert export_main([str(run_dir), "--out", str(out), "--verify_audio", str(clip)]) == 0
    seconds = read_metadata(out).raw["export"]["verification_audio_s"]
    assert seconds[-1] == 1.0   # one second of 16 kHz audio, resampled to 8 kHz (at 16 kHz it would read 2.0)


def test_dsnn_export_and_dsnn_job_defaults_are_the_library_defaults():
    import dataclasses

    from dsnn_job.cli import _parser as job_parser
    from tflite.cli import _export_parser
    from tflite.export import ExportOptions

    defaults = ExportOptions()
    args = vars(_export_parser().parse_args(["RUN", "--out", "m.tflite"]))
    shared = {f.name for f in dataclasses.fields(ExportOptions)} & set(args)
    assert shared >= {"quantize", "design", "tolerance", "max_token_error_rate", "sparse_speed_min_sparsity"}
    assert {name: args[name] for name in shared} == {name: getattr(defaults, name) for name in shared}
    job = job_parser().parse_args([])
    assert (job.quantize, job.design) == (defaults.quantize, defaults.design)
