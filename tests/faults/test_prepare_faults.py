"""Fault and bad-input tests for `dsnn-prepare` (issue 15: items 1, 7, 8, 9, 12).

Each test drives the real CLI (`pipeline.prepare.main` / `run`) or the real readers on real files.
"""
import json
import math
import os

import numpy as np
import pytest
import soundfile as sf

from pipeline.prepare import main, run
from pipeline.records import Reject, RejectReason, Utterance
from pipeline.sources import InputSpec, read_source
from prepare_corpus import RATE, librispeech_corpus, snapshot, tone, tsv_corpus, write_wavs


def _one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("dsnn-prepare: error: "), err
    return err[0]


# --- item 1: --out that equals, contains or is inside an input is refused before anything is touched


@pytest.mark.parametrize("layout", ["same", "parent_of_input", "inside_input", "symlink_to_input"])
def test_out_overlapping_a_corpus_directory_is_refused_and_the_corpus_kept(tmp_path, capsys, layout):
    corpus = librispeech_corpus(tmp_path / "corpus")
    before = snapshot(tmp_path)
    out = {"same": corpus, "parent_of_input": tmp_path, "inside_input": corpus / "spk" / "prepared",
           "symlink_to_input": tmp_path / "link"}[layout]
    if layout == "symlink_to_input":
        os.symlink(corpus, out)
        before = snapshot(tmp_path)
    assert main(["--input", str(corpus), "--out", str(out), "--overwrite"]) == 2
    line = _one_error_line(capsys)
    assert "--out" in line and "--input" in line and str(corpus) in line
    assert snapshot(tmp_path) == before  # nothing deleted, nothing added (no OUT.tmp-*)


@pytest.mark.parametrize("layout", ["manifest_dir", "audio_dir", "parent_of_audio_dir", "the_manifest"])
def test_out_overlapping_a_manifest_or_its_audio_is_refused(tmp_path, capsys, layout):
    # The manifest lives in meta/, its audio in audio/ (referenced as ../audio/uttNNN.wav).
    rows = write_wavs(tmp_path / "data" / "audio", 4)
    (tmp_path / "data" / "meta").mkdir()
    manifest = tmp_path / "data" / "meta" / "train.tsv"
    manifest.write_text("".join(f"../audio/{p}\t{t}\t{s}\n" for p, t, s in rows))
    before = snapshot(tmp_path)
    out = {"manifest_dir": manifest.parent, "audio_dir": tmp_path / "data" / "audio",
           "parent_of_audio_dir": tmp_path / "data", "the_manifest": manifest}[layout]
    assert main(["--input", str(manifest), "--out", str(out), "--overwrite"]) == 2
    line = _one_error_line(capsys)
    assert "--out" in line and str(manifest) in line
    assert snapshot(tmp_path) == before


def test_out_beside_a_manifest_is_allowed(tmp_path):
    """The usual layout (``corpus/train.tsv`` -> ``corpus/prepared``) is not an overlap."""
    manifest = tsv_corpus(tmp_path / "corpus", count=6)
    dataset = run(["--input", str(manifest), "--out", str(tmp_path / "corpus" / "prepared"),
                   "--vocab_size", "16"])
    assert dataset["splits"]["train"]["num_utterances"] == 6


# --- item 7: non-finite audio never reaches cmvn.json


def _nan_corpus(root):
    rows = write_wavs(root, 6)
    rng = np.random.default_rng(1)
    bad = tone(0.3, 440, rng)
    bad[100:110] = np.nan
    bad[200] = np.inf
    sf.write(root / "nan.wav", bad, RATE, subtype="FLOAT")
    huge = np.full(int(0.3 * RATE), 1e30, np.float32)  # finite samples whose power overflows float32
    sf.write(root / "huge.wav", huge, RATE, subtype="FLOAT")
    rows += [("nan.wav", "one two", "spk9"), ("huge.wav", "three", "spk9")]
    manifest = root / "manifest.tsv"
    manifest.write_text("".join(f"{p}\t{t}\t{s}\n" for p, t, s in rows))
    return manifest


def _rejects_by_name(out):
    lines = (out / "rejects.jsonl").read_text().splitlines()
    return {os.path.basename(r["path"]): r for r in map(json.loads, lines)}


@pytest.fixture(scope="module")
def nan_prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nan")
    manifest = _nan_corpus(tmp / "corpus")
    out = tmp / "out"
    return out, run(["--input", str(manifest), "--out", str(out), "--vocab_size", "16"])


def test_nan_wav_is_rejected_as_non_finite_samples_and_cmvn_is_finite(nan_prepared):
    out, dataset = nan_prepared
    rejects = _rejects_by_name(out)
    assert rejects["nan.wav"]["reason"] == "non_finite_samples"
    assert dataset["input_count"] == 8
    assert dataset["input_count"] == dataset["splits"]["train"]["num_utterances"] + dataset["rejects"]["total"]
    cmvn = json.loads((out / "cmvn.json").read_text())  # strict JSON: NaN would not even parse as finite
    assert cmvn["num_frames"] > 0
    assert all(math.isfinite(v) for v in cmvn["mean"] + cmvn["std"])


def test_finite_audio_whose_features_overflow_is_rejected_by_name(nan_prepared):
    out, dataset = nan_prepared
    rejects = _rejects_by_name(out)
    assert rejects["huge.wav"]["reason"] == "non_finite_features"
    assert "not finite" in rejects["huge.wav"]["detail"]
    assert dataset["splits"]["train"]["num_utterances"] == 6


def test_non_finite_cmvn_statistics_are_never_written(tmp_path):
    from pipeline.cmvn import CmvnCombineFn
    from pipeline.transforms import NonFiniteStatisticsError, _write_cmvn

    fn = CmvnCombineFn()
    acc = fn.add_input(fn.create_accumulator(), np.ones([5, 3], np.float32))
    with np.errstate(invalid="ignore"):
        acc = fn.add_input(acc, np.array([[1.0, np.nan, 2.0], [1.0, 2.0, np.inf]], np.float32))
    path = tmp_path / "cmvn.json"
    with pytest.raises(NonFiniteStatisticsError, match=r"cmvn.json.*not finite.*bins \[1, 2\].*7 train frames"):
        _write_cmvn(fn.extract_output(acc), str(path))
    assert not path.exists()


# --- item 8: misspelled flags are errors; Beam's own flags still pass


@pytest.mark.parametrize("flag,value,suggestion", [("--tokenizer-type", "char", "--tokenizer_type"),
                                                   ("--dev-speakers", "0.1", "--dev_speakers"),
                                                   ("--vocab-size", "32", "--vocab_size"),
                                                   ("--num_shard", "2", "--num_shards")])
def test_misspelled_flag_is_an_error_naming_it_and_the_close_match(tmp_path, capsys, flag, value, suggestion):
    manifest = tsv_corpus(tmp_path / "c", count=2)
    assert main(["--input", str(manifest), "--out", str(tmp_path / "o"), flag, value]) == 2
    line = _one_error_line(capsys)
    assert f"unrecognized argument {flag}" in line and f"did you mean {suggestion}?" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_misspelled_runner_is_an_error_before_the_job_starts(tmp_path, capsys):
    manifest = tsv_corpus(tmp_path / "c", count=2)
    assert main(["--input", str(manifest), "--out", str(tmp_path / "o"), "--runner=DataflowRuner"]) == 2
    assert "--runner DataflowRuner: not a Beam runner; did you mean DataflowRunner?" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_stray_positional_argument_is_an_error(tmp_path, capsys):
    manifest = tsv_corpus(tmp_path / "c", count=2)
    assert main(["--input", str(manifest), "--out", str(tmp_path / "o"), "extra"]) == 2
    assert "unrecognized argument extra" in _one_error_line(capsys)


def test_bad_flag_values_are_one_line_errors(tmp_path, capsys):
    manifest = tsv_corpus(tmp_path / "c", count=2)
    assert main(["--input", str(manifest), "--out", str(tmp_path / "o"), "--vocab_size", "many"]) == 2
    assert "--vocab_size" in _one_error_line(capsys)
    assert main(["--out", str(tmp_path / "o")]) == 2
    assert "--input" in _one_error_line(capsys)
    assert main(["--input", str(manifest), "--out", str(tmp_path / "o"), "--direct_num_workers", "two"]) == 2
    assert "--direct_num_workers" in _one_error_line(capsys)


def test_beam_pipeline_options_pass_through():
    from apache_beam.options.pipeline_options import (DirectOptions, GoogleCloudOptions, SetupOptions,
                                                      StandardOptions)

    from pipeline.prepare import build_parser, pipeline_options

    argv = ["--input", "x.tsv", "--out", "gs://b/prep", "--runner=DataflowRunner", "--project", "p",
            "--region", "europe-west4", "--temp_location", "gs://b/tmp", "--setup_file", "./setup.py",
            "--direct_running_mode", "multi_processing", "--direct_num_workers=2",
            "--experiments", "use_runner_v2", "--no_use_public_ips"]
    _, beam_args = build_parser().parse_known_args(argv)
    options = pipeline_options(beam_args)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    gcp = options.view_as(GoogleCloudOptions)
    assert (gcp.project, gcp.region, gcp.temp_location) == ("p", "europe-west4", "gs://b/tmp")
    assert options.view_as(SetupOptions).setup_file == "./setup.py"
    assert options.view_as(DirectOptions).direct_num_workers == 2


def test_beam_flag_runs_the_local_job(tmp_path):
    manifest = tsv_corpus(tmp_path / "c", count=4)
    dataset = run(["--input", str(manifest), "--out", str(tmp_path / "o"), "--vocab_size", "16",
                   "--direct_running_mode", "in_memory"])
    assert dataset["splits"]["train"]["num_utterances"] == 4


# --- item 9: CSV follows the csv module's rules; malformed rows are rejected, never merged


def _read(path, fmt):
    return list(read_source(InputSpec("train", str(path), fmt)))


def test_csv_quoted_field_with_a_newline_keeps_the_whole_transcript(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text('path,transcript,speaker\n'
                 'a.wav,"hello\nworld, again",bob\nb.wav,"say ""hi""",ann\nc.wav,bye,cid\n')
    items = _read(m, "csv")
    assert [(u.utt_id, u.transcript, u.speaker, u.source) for u in items] == [
        ("a", "hello\nworld, again", "bob", "m.csv:2"), ("b", 'say "hi"', "ann", "m.csv:4"),
        ("c", "bye", "cid", "m.csv:5")]


def test_csv_unterminated_quote_is_rejected_and_the_following_rows_kept(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text('path,transcript\na.wav,"never closed\nb.wav,two\nc.wav,"three"\nd.wav,four\ne.wav,"open\n')
    items = _read(m, "csv")
    rejects = [i for i in items if isinstance(i, Reject)]
    utts = [i for i in items if isinstance(i, Utterance)]
    assert [(r.path, r.reason) for r in rejects] == [(f"{m}:2", RejectReason.MALFORMED_LINE),
                                                     (f"{m}:6", RejectReason.MALFORMED_LINE)]
    assert "quote" in rejects[0].detail
    assert [(u.utt_id, u.transcript) for u in utts] == [("b", "two"), ("c", "three"), ("d", "four")]
    assert len(items) == 5  # one record per data line: counts still reconcile


def test_csv_text_after_a_closing_quote_is_rejected(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text('a.wav,"quoted" tail\nb.wav,fine\n')
    items = _read(m, "csv")
    assert isinstance(items[0], Reject) and items[0].reason == RejectReason.MALFORMED_LINE
    assert isinstance(items[1], Utterance) and items[1].transcript == "fine"


def test_tsv_keeps_quotes_literally(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text('a.wav\t"unbalanced quote\tbob\nb.wav\ttwo\n')
    items = _read(m, "tsv")
    assert [(u.utt_id, u.transcript, u.speaker) for u in items] == [("a", '"unbalanced quote', "bob"),
                                                                     ("b", "two", "")]


# --- item 12: JSONL null / empty ids are missing ids


def test_jsonl_null_or_empty_utt_id_and_speaker_are_treated_as_missing(tmp_path):
    m = tmp_path / "m.jsonl"
    rows = [{"audio_filepath": "a.wav", "text": "x", "utt_id": None, "speaker": None},
            {"audio_filepath": "b.wav", "text": "x", "utt_id": "", "id": "bee"},
            {"audio_filepath": "c.wav", "text": "x", "utt_id": "  "},
            {"audio_filepath": "d.wav", "text": "x", "id": None, "speaker_id": "sd"},
            {"audio_filepath": "e.wav", "text": "x", "utt_id": 5, "speaker": 7},
            {"audio_filepath": "f.wav", "text": "x", "utt_id": ["f"]},
            {"audio_filepath": "g.wav", "text": "x", "speaker": {"name": "g"}}]
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = _read(m, "jsonl")
    assert [(u.utt_id, u.speaker) for u in items[:5]] == [("a", ""), ("bee", ""), ("c", ""), ("d", "sd"),
                                                          ("5", "7")]
    assert [(r.reason, r.path) for r in items[5:]] == [(RejectReason.MALFORMED_LINE, f"{m}:6"),
                                                       (RejectReason.MALFORMED_LINE, f"{m}:7")]
    assert "utt_id" in items[5].detail and "speaker" in items[6].detail


def test_audio_path_without_a_file_name_is_rejected_when_no_utt_id_is_given(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"audio_filepath": "clips/", "text": "x"}) + "\n")
    (item,) = _read(m, "jsonl")
    assert isinstance(item, Reject) and item.reason == RejectReason.MALFORMED_LINE
    assert "utt_id" in item.detail


@pytest.mark.parametrize("layout", ["user_directory", "file"])
def test_overwrite_never_replaces_what_is_not_a_prepared_dataset(tmp_path, layout):
    """`--overwrite` on a directory dsnn-prepare did not make (no dataset.json) used to delete it."""
    from pipeline import outdir

    out = tmp_path / "work"
    if layout == "file":
        out.write_text("notes")
    else:
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(FileExistsError, match="refusing to replace|not a prepared dataset"):
        outdir.start(str(out), overwrite=True)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_overwrite_replaces_an_empty_directory_or_an_earlier_dataset(tmp_path):
    from pipeline import outdir

    for name, files in (("empty", {}), ("dataset", {"dataset.json": "{}"})):
        out = tmp_path / name
        out.mkdir()
        for file, text in files.items():
            (out / file).write_text(text)
        tmp = outdir.start(str(out), overwrite=True)
        outdir.abort(tmp)


def test_a_second_prepare_on_the_same_out_fails_at_once(tmp_path):
    """Two runs on one --out used to interleave their commits and could strand the previous dataset."""
    from dsnn_keras.paths import exclusive_lock

    corpus = librispeech_corpus(tmp_path / "corpus", count=4)
    out = tmp_path / "out"
    with exclusive_lock(tmp_path, ".out.dsnn-prepare.lock", holder="dsnn-prepare", remove=True):
        assert main(["--input", str(corpus), "--out", str(out)]) == 1
    assert not out.exists()
    assert main(["--input", str(corpus), "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "out"]
