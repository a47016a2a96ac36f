"""dsnn-transcribe, dsnn-bench, dsnn-synth and dsnn-lm with every path on ``ram://``.

TensorFlow's ``ram://`` filesystem goes through the same `tf.io.gfile` code as ``gs://``
(`dsnn_keras.fileio`). Each test runs the command's real entry point (``main(argv)``) once on local
paths and once with its inputs copied to ``ram://`` and its outputs written there, and checks that
the outputs are the same. (dsnn-prepare, -train, -eval and -export on ``ram://``: tests/test_fileio.py;
``dsnn-bench --stream`` and ``dsnn-transcribe --stream``: tests/test_tflite_stream_export.py.)
"""
from __future__ import annotations

import io
import json
import shutil

import soundfile

import harness_tflite as h
from ram_filesystem import files_under, new_root, upload_tree

from dsnn_keras import fileio


def _audio_dir(root):
    """Two utterances (a WAV and a FLAC one level down) under the local directory ``root``."""
    (root / "more").mkdir(parents=True)
    soundfile.write(root / "a.wav", h.speechlike(1.0, seed=41), 16000)
    soundfile.write(root / "more" / "b.flac", h.speechlike(0.8, seed=42), 16000)
    return root


def _lines(text: str) -> list[list[str]]:
    return [line.split("\t", 1) for line in text.splitlines()]


def test_transcribe_reads_a_remote_model_and_remote_audio_like_local_files(tmp_path, capsys):
    from tflite.cli import transcribe_main

    audio = _audio_dir(tmp_path / "audio")
    local = [str(audio / "a.wav"), str(audio / "more" / "b.flac")]
    url = new_root("transcribe")
    model = f"{url}/models/float.tflite"
    fileio.copy(h.exported("float"), model)
    remote = [f"{upload_tree(audio, f'{url}/audio')}/a.wav", f"{url}/audio/more/b.flac"]

    assert transcribe_main([str(h.exported("float")), *local, "--level", "2"]) == 0
    want = _lines(capsys.readouterr().out)
    assert transcribe_main([model, *remote, "--level", "2"]) == 0
    got = _lines(capsys.readouterr().out)
    assert [path for path, _ in got] == remote                      # each line names the URL given
    assert [text for _, text in got] == [text for _, text in want]  # and has the local transcript
    assert fileio.listdir(f"{url}/models") == ["float.tflite"]     # nothing else written beside it


def test_a_missing_remote_model_or_audio_file_is_one_error_line_naming_the_url(tmp_path, capsys):
    from tflite.cli import bench_main, transcribe_main

    url = new_root("missing")
    buffer = io.BytesIO()
    soundfile.write(buffer, h.speechlike(0.5), 16000, format="WAV")
    wav = f"{url}/utt.wav"
    fileio.atomic_write(wav, buffer.getvalue())
    model = f"{url}/m.tflite"
    fileio.copy(h.exported("float"), model)
    fileio.makedirs(f"{url}/dir.tflite")

    assert transcribe_main([f"{url}/none.tflite", wav]) == 1
    assert transcribe_main([f"{url}/dir.tflite", wav]) == 1
    assert transcribe_main([model, wav, f"{url}/none.wav"]) == 1   # the other file is still transcribed
    assert bench_main([f"{url}/none.tflite", "--out_dir", f"{url}/bench"]) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert errors == [f"dsnn-transcribe: error: model file not found: {url}/none.tflite",
                      f"dsnn-transcribe: error: {url}/dir.tflite: is a directory, not a .tflite file",
                      f"dsnn-transcribe: error: audio file not found: {url}/none.wav",
                      f"dsnn-bench: error: model file not found: {url}/none.tflite"]
    assert captured.out.startswith(f"{wav}\t")
    assert not fileio.exists(f"{url}/bench")


def test_bench_with_every_path_remote_writes_the_reports_of_a_local_run(tmp_path, capsys):
    from tflite.cli import bench_main

    audio = _audio_dir(tmp_path / "audio")
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(h.exported("single"), single / "level_0.tflite")
    args = ["--threads", "1", "--repeats", "1", "--limit", "2"]
    assert bench_main([str(h.exported("float")), "--baseline_dir", str(single), "--utterances", str(audio),
                       "--out_dir", str(tmp_path / "bench"), *args]) == 0
    url = new_root("bench")
    model = f"{url}/export/float.tflite"
    fileio.copy(h.exported("float"), model)
    upload_tree(single, f"{url}/export/single")
    upload_tree(audio, f"{url}/audio")
    out = f"{url}/bench"
    assert bench_main([model, "--baseline_dir", f"{url}/export/single", "--utterances", f"{url}/audio",
                       "--out_dir", out, *args]) == 0
    local = json.loads((tmp_path / "bench" / "bench.json").read_text())
    remote = json.loads(fileio.read_text(f"{out}/bench.json"))
    assert remote.keys() == local.keys() and remote["model"] == model
    assert [(r["kind"], r["file"], r["level"], r["sparsity"]) for r in remote["rows"]] == \
        [(r["kind"], r["file"], r["level"], r["sparsity"]) for r in local["rows"]]
    assert {name: info["size_bytes"] for name, info in remote["files"].items()} == \
        {name: info["size_bytes"] for name, info in local["files"].items()}
    assert [u["name"] for u in remote["utterances"]] == [f"{url}/audio/a.wav", f"{url}/audio/more/b.flac"]
    assert [u["seconds"] for u in remote["utterances"]] == [u["seconds"] for u in local["utterances"]]
    # Exactly the three reports, complete (no temporary left beside them); the inputs untouched.
    assert files_under(out) == [f"{out}/bench.json", f"{out}/bench.md", f"{out}/bench.png"]
    assert fileio.read_bytes(f"{out}/bench.png")[:4] == b"\x89PNG"
    assert fileio.read_text(f"{out}/bench.md").startswith("# dsnn-bench: float.tflite")
    assert fileio.read_bytes(model) == h.exported("float").read_bytes()
    assert "| float.tflite | multi | 2 |" in capsys.readouterr().out


def test_synth_writes_the_same_corpus_to_a_remote_directory_and_replaces_it_only_whole(tmp_path, capsys):
    from pipeline.synth.cli import main

    args = ["--num_utterances", "4", "--seed", "3", "--jobs", "1", "--quiet"]
    assert main(["--out", str(tmp_path / "corpus"), *args]) == 0
    local = {path: (tmp_path / "corpus" / path).read_bytes() for path in fileio.walk_files(tmp_path / "corpus")}
    url = new_root("synth")
    out = f"{url}/corpus"
    assert main(["--out", out, *args]) == 0
    assert f"to {out}" in capsys.readouterr().out
    assert {path: fileio.read_bytes(f"{out}/{path}") for path in fileio.walk_files(out)} == local
    # Not empty: refused without --overwrite, and left as it was.
    assert main(["--out", out, "--num_utterances", "2", "--jobs", "1"]) == 2
    assert f"--out: {out}: directory exists and is not empty" in capsys.readouterr().err
    assert fileio.walk_files(out) == sorted(local)
    # --overwrite with a smaller corpus: the old files are gone, no staging prefix is left beside it.
    assert main(["--out", out, "--num_utterances", "2", "--seed", "4", "--jobs", "1", "--quiet", "--overwrite"]) == 0
    manifest = json.loads(fileio.read_text(f"{out}/corpus.json"))
    assert manifest["num_utterances"] == 2
    assert len([p for p in fileio.walk_files(out) if p.endswith(".flac")]) == 2
    assert fileio.listdir(url) == ["corpus"]
    # A URL that is a file is refused before anything is synthesized.
    fileio.atomic_write(f"{url}/a_file", "x")
    assert main(["--out", f"{url}/a_file", *args]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_lm_reads_a_remote_dataset_and_writes_the_lm_a_local_run_writes(tmp_path, capsys):
    from fixtures_data import build_prepared_dataset

    from dsnn_keras.cli import lm_main

    data = build_prepared_dataset(tmp_path / "data", num_train=8, num_dev=2)
    remote = upload_tree(data, f"{new_root('lm')}/data")
    assert lm_main(["--data", str(data), "--order", "2"]) == 0
    assert lm_main(["--data", remote, "--order", "2", "--out", f"{remote}/lm2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{remote}/lm2"
    names = sorted(p.name for p in (data / "lm").iterdir())
    assert fileio.listdir(f"{remote}/lm2") == names
    for name in names:
        local, written = (data / "lm" / name).read_text(), fileio.read_text(f"{remote}/lm2/{name}")
        if name.endswith(".json"):   # records where it came from, and when
            local, written = json.loads(local), json.loads(written)
            assert written.pop("source") == remote and local.pop("source") == str(data)
            assert written.pop("tokenizer") == f"{remote}/tokenizer.model"
            assert local.pop("tokenizer") == str(data / "tokenizer.model")
            written.pop("created"), local.pop("created")
        assert written == local, name

