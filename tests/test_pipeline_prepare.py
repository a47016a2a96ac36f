"""End to end: dsnn-prepare on slices of AN4 and FSDD plus deliberately broken files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.examples import parse_example
from pipeline.prepare import main, run
from pipeline.tokenizer import load_tokenizer

AN4_UTTS = 20
FSDD_UTTS = 20
EXPECTED_REJECTS = {"unreadable": 1, "empty_file": 1, "truncated": 1, "too_short": 1, "missing_file": 1,
                    "malformed_line": 2, "empty_transcript": 1, "non_ascii_transcript": 1}


def _an4_slice(data_dir, root):
    """A LibriSpeech-layout copy (symlinks) of the first AN4 utterances of two speakers."""
    count = 0
    transcripts = sorted((data_dir / "an4" / "train").rglob("*.trans.txt"))
    for trans in [t for t in transcripts if len(t.read_text().splitlines()) >= AN4_UTTS // 2][:2]:
        target = root / trans.parent.relative_to(data_dir / "an4" / "train")
        target.mkdir(parents=True)
        lines = trans.read_text().splitlines()[: AN4_UTTS // 2]
        (target / trans.name).write_text("\n".join(lines) + "\n")
        for line in lines:
            utt = line.split()[0]
            os.symlink(trans.parent / f"{utt}.flac", target / f"{utt}.flac")
            count += 1
    assert count == AN4_UTTS


def _fsdd_slice(data_dir, root):
    """FSDD's manifest.tsv format (header; paths relative to the manifest) + one malformed row."""
    root.mkdir()
    os.symlink(data_dir / "fsdd" / "recordings", root / "recordings")
    rows = (data_dir / "fsdd" / "manifest.tsv").read_text().splitlines()
    picked = rows[1:: (len(rows) - 1) // FSDD_UTTS][:FSDD_UTTS]
    (root / "manifest.tsv").write_text("\n".join([rows[0], *picked, "recordings/only_a_path.wav"]) + "\n")


def _broken(root):
    """A NeMo manifest of broken inputs, one per reject reason (plus a malformed JSON line)."""
    root.mkdir()
    rate = 16000
    tone = (0.3 * np.sin(2 * np.pi * 500 * np.arange(rate) / rate)).astype(np.float32)
    sf.write(root / "good.flac", tone, rate)
    flac = (root / "good.flac").read_bytes()
    (root / "truncated.flac").write_bytes(flac[: len(flac) // 3])
    (root / "garbage.wav").write_bytes(os.urandom(4000))
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "short.wav", tone[:400], rate)
    entries = [("garbage.wav", "hello"), ("empty.wav", "hello"), ("truncated.flac", "hello"),
               ("short.wav", "hello"), ("missing.wav", "hello"), ("good.flac", " ?! "),
               ("good.flac", "naïve")]
    lines = [json.dumps({"audio_filepath": p, "text": t, "duration": 1.0}) for p, t in entries]
    (root / "broken.jsonl").write_text("\n".join(lines[:3] + ["{oops"] + lines[3:]) + "\n")


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prepare")
    _an4_slice(data_dir, tmp / "an4")
    _fsdd_slice(data_dir, tmp / "fsdd")
    _broken(tmp / "broken")
    argv = ["--input", str(tmp / "an4"), "--input", f"train={tmp / 'broken' / 'broken.jsonl'}",
            "--input", f"dev={tmp / 'fsdd' / 'manifest.tsv'}", "--out", str(tmp / "out"),
            "--vocab_size", "64", "--num_shards", "2"]
    result = run(argv)
    return tmp / "out", result, argv


def _read_split(out, dataset, split):
    from apache_beam.io.tfrecordio import _TFRecordUtil  # reads without TensorFlow

    examples = []
    for rel in dataset["splits"][split]["files"]:
        with open(out / rel, "rb") as f:
            while (blob := _TFRecordUtil.read_record(f)) is not None:
                examples.append(parse_example(blob, dataset["feature_config"]["num_mel_bins"]))
    return examples


def test_writes_the_contract_directory_and_counts_add_up(prepared):
    out, result, _ = prepared
    dataset = json.loads((out / "dataset.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == [
        "cmvn.json", "dataset.json", "dev", "lm", "rejects.jsonl", "tokenizer.model", "train"]
    assert not list(out.parent.glob("out.tmp-*"))
    assert dataset["splits"]["train"]["num_utterances"] == AN4_UTTS
    assert dataset["splits"]["dev"]["num_utterances"] == FSDD_UTTS
    assert dataset["splits"]["train"]["files"] == ["train/data-00000-of-00002.tfrecord",
                                                   "train/data-00001-of-00002.tfrecord"]
    assert dataset["rejects"] == {"total": sum(EXPECTED_REJECTS.values()), "by_reason": EXPECTED_REJECTS}
    assert dataset["input_count"] == AN4_UTTS + FSDD_UTTS + 1 + 8
    assert dataset["input_count"] == sum(s["num_utterances"] for s in dataset["splits"].values()) \
        + dataset["rejects"]["total"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejects) == sorted(k for k, n in EXPECTED_REJECTS.items() for _ in range(n))
    assert all(set(r) == {"path", "reason", "detail"} for r in rejects)
    assert result["metrics"]["utterances_written"] == AN4_UTTS + FSDD_UTTS
    assert result["metrics"]["rejected_truncated"] == 1


def test_examples_features_tokens_and_cmvn(prepared, data_dir):
    out, _, _ = prepared
    dataset = json.loads((out / "dataset.json").read_text())
    train = _read_split(out, dataset, "train")
    dev = _read_split(out, dataset, "dev")
    assert len(train) == AN4_UTTS and len(dev) == FSDD_UTTS
    assert sum(e["num_frames"] for e in train) == dataset["splits"]["train"]["num_frames"]
    sp = load_tokenizer((out / "tokenizer.model").read_bytes())
    assert dataset["tokenizer"]["vocab_size"] == sp.get_piece_size() <= 64
    an4_text = {}
    for trans in (data_dir / "an4" / "train").rglob("*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt, text = line.split(" ", 1)
            an4_text[utt] = text.strip().lower()
    for ex in train:
        assert ex["transcript"] == an4_text[ex["utt_id"]]
        assert sp.decode(ex["token_ids"]) == ex["transcript"]
        assert ex["speaker"] == ex["utt_id"].split("-")[0]
    # FSDD is 8 kHz: resampled to 16 kHz, so frames follow the 16 kHz length.
    fsdd = {e["utt_id"]: e for e in dev}
    ex = next(iter(fsdd.values()))
    n8 = sf.info(str(data_dir / "fsdd" / "recordings" / f"{ex['utt_id']}.wav")).frames
    assert abs(ex["num_frames"] - (1 + (2 * n8 - 400) // 160)) <= 1
    assert ex["speaker"] == ex["utt_id"].split("_")[1]
    feats = np.concatenate([e["features"] for e in train]).astype(np.float64)
    cmvn = json.loads((out / "cmvn.json").read_text())
    assert cmvn["num_frames"] == feats.shape[0]
    np.testing.assert_allclose(cmvn["mean"], feats.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cmvn["std"], feats.std(0), rtol=1e-5, atol=1e-5)


def test_tflite_frontend_matches_beam_features_on_an4(prepared, data_dir):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram

    out, _, _ = prepared
    dataset = json.loads((out / "dataset.json").read_text())
    config = FeatureConfig.from_dict(dataset["feature_config"])
    fn = tf.function(lambda audio: {"features": log_mel_spectrogram(audio, config)},
                     input_signature=[tf.TensorSpec([None], tf.float32, name="audio")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # builtin ops only
    interpreter = Interpreter(model_content=converter.convert())
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
    for ex in _read_split(out, dataset, "train")[:4]:
        speaker = ex["utt_id"].split("-")[0]
        flac = next((data_dir / "an4" / "train" / speaker).rglob(f"{ex['utt_id']}.flac"))
        audio, rate = sf.read(str(flac), dtype="float32")
        assert rate == 16000
        interpreter.resize_tensor_input(inp["index"], [audio.size])
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], audio)
        interpreter.invoke()
        lite = interpreter.get_tensor(outp["index"])
        assert lite.shape == ex["features"].shape
        np.testing.assert_allclose(lite, ex["features"], atol=1e-3)


def test_existing_output_is_refused_without_overwrite(prepared, capsys):
    out, _, argv = prepared
    before = (out / "dataset.json").read_text()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dsnn-prepare: error:") and "--overwrite" in err[-1]
    assert (out / "dataset.json").read_text() == before


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nope.tsv"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"dsnn-prepare: error: --input {tmp_path / 'nope.tsv'}: no such file"
    (tmp_path / "m.tsv").write_text("a.wav\tX\n")
    assert main(["--input", f"dev={tmp_path / 'm.tsv'}", "--out", str(tmp_path / "o")]) == 2
    assert "no train split" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_help_does_not_import_tensorflow():
    code = ("import sys; from pipeline.prepare import build_parser; build_parser().format_help(); "
            "import pipeline, pipeline.sources, pipeline.splits; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    res = subprocess.run([os.path.join(os.path.dirname(sys.executable), "dsnn-prepare"), "--help"],
                         capture_output=True, text=True, check=True)
    assert "--dev_speakers" in res.stdout and "--num_shards" in res.stdout


def test_the_job_writes_the_word_lm_of_the_train_transcripts(prepared):
    """The CountNgrams Beam step + WriteLM give the LM dsnn-lm computes from the written train split."""
    import sentencepiece as spm

    from dsnn_keras.ngram_lm import ArpaModel, LmBundle, build_lm, dataset_transcripts

    out, _, _ = prepared
    written = LmBundle.read_dir(out / "lm")
    tokenizer = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    expected = build_lm(dataset_transcripts(out, "train"), 3, lambda w: tokenizer.encode(w, out_type=str))
    assert written.arpa == expected.arpa
    assert written.lexicon == expected.lexicon and written.info["order"] == 3
    assert set(ArpaModel(written.arpa).vocabulary) == set(written.lexicon) | {"<s>", "</s>", "<unk>"}


# ---- remote paths: Beam's FileSystems on ram:// (tests/ram_filesystem.py; gs:// takes the same calls) ----
def _remote_librispeech(url: str, count: int = 12) -> str:
    """``url/ls/spk{0,1}/0/spk{s}-0-NNNN.wav`` + ``spk{s}-0.trans.txt``: a LibriSpeech prefix of WAVs."""
    import io

    from dsnn_keras import fileio

    rng = np.random.default_rng(0)
    for speaker in ("spk0", "spk1"):
        chapter, lines = f"{url}/ls/{speaker}/0", []
        for i in range(count // 2):
            utt = f"{speaker}-0-{i:04d}"
            t = np.arange(8000) / 16000
            buffer = io.BytesIO()
            sf.write(buffer, (0.3 * np.sin(2 * np.pi * (300 + 50 * i) * t)
                              + 0.01 * rng.standard_normal(t.size)).astype(np.float32), 16000, format="WAV")
            fileio.atomic_write(f"{chapter}/{utt}.wav", buffer.getvalue())
            lines.append(f"{utt} {['YES', 'NO', 'GO STOP'][i % 3]}")
        fileio.atomic_write(f"{chapter}/{speaker}-0.trans.txt", "\n".join(lines) + "\n")
    return f"{url}/ls"


def test_prepares_a_remote_librispeech_prefix_into_a_remote_out(caplog):
    from ram_filesystem import files_under, new_root

    from dsnn_keras import fileio

    url = new_root("prep")
    corpus = _remote_librispeech(url)   # no trailing '/': a prefix with objects under it is a directory
    before = {p: fileio.read_bytes(p) for p in files_under(corpus)}
    assert main(["--input", corpus, "--out", f"{url}/out", "--dev_speakers", "spk1", "--vocab_size", "16"]) == 0
    dataset = json.loads(fileio.read_text(f"{url}/out/dataset.json"))
    # The audio is .wav, found by listing each chapter once (a .flac guess would reject all 12).
    assert dataset["input_count"] == 12 and dataset["rejects"]["total"] == 0
    assert {s: v["num_utterances"] for s, v in dataset["splits"].items()} == {"train": 6, "dev": 6}
    for name in ("cmvn.json", "tokenizer.model", "rejects.jsonl", *dataset["splits"]["dev"]["files"]):
        assert fileio.isfile(f"{url}/out/{name}"), name
    assert not [p for p in files_under(url) if ".tmp-" in p]     # the out.tmp-XXXXXXXX prefix is gone
    assert {p: fileio.read_bytes(p) for p in files_under(corpus)} == before
    assert "cannot be locked" in caplog.text


def test_a_remote_out_holding_other_objects_is_never_replaced(tmp_path, capsys):
    from ram_filesystem import new_root

    from dsnn_keras import fileio

    manifest = tmp_path / "m.tsv"
    manifest.write_text("a.wav\tyes\n")
    out = f"{new_root('prep')}/results"
    fileio.atomic_write(f"{out}/keep/notes.txt", "not a dataset")
    assert main(["--input", str(manifest), "--out", out]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["--input", str(manifest), "--out", out, "--overwrite"]) == 2
    assert "is not a prepared dataset (no dataset.json)" in capsys.readouterr().err
    assert fileio.read_text(f"{out}/keep/notes.txt") == "not a dataset"
