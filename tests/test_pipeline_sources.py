"""Input readers: LibriSpeech dirs, TSV/CSV (with and without header) and NeMo JSON-lines."""
import json

import pytest

from pipeline.records import Reject, RejectReason, Utterance
from pipeline.sources import InputSpec, check_input, detect_format, read_source, resolve_path


def _read(path, fmt, split="train"):
    return list(read_source(InputSpec(split, str(path), fmt)))


def test_detects_format_from_path(tmp_path):
    assert detect_format(str(tmp_path)) == "librispeech"
    assert detect_format("a/b.tsv") == "tsv"
    assert detect_format("b.CSV") == "csv"
    assert detect_format("m.json") == "jsonl" and detect_format("m.jsonl") == "jsonl"
    with pytest.raises(ValueError, match="cannot tell the format"):
        detect_format("notes.txt")


def test_reads_librispeech_layout_recursively(tmp_path):
    d = tmp_path / "spk1" / "0"
    d.mkdir(parents=True)
    (d / "spk1-0-0000.flac").write_bytes(b"x")
    (d / "spk1-0.trans.txt").write_text("spk1-0-0000 HELLO WORLD\n\nspk1-0-0001\n")
    items = _read(tmp_path, "librispeech", "dev")
    assert items == [
        Utterance("spk1-0-0000", str(d / "spk1-0-0000.flac"), "HELLO WORLD", "spk1", "dev", "spk1-0.trans.txt:1"),
        Utterance("spk1-0-0001", str(d / "spk1-0-0001.flac"), "", "spk1", "dev", "spk1-0.trans.txt:3"),
    ]


def test_tsv_with_header_finds_columns_by_name_and_resolves_relative_paths(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text("speaker\ttext\taudio_filepath\nbob\tHI THERE\tclips/a.wav\nann\tYES\t/abs/b.wav\n")
    items = _read(m, "tsv")
    assert [(u.utt_id, u.path, u.transcript, u.speaker) for u in items] == [
        ("a", str(tmp_path / "clips" / "a.wav"), "HI THERE", "bob"),
        ("b", "/abs/b.wav", "YES", "ann"),
    ]


def test_tsv_without_header_is_path_transcript_speaker(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text("a.wav\tONE\tbob\nb.wav\tTWO\n")
    items = _read(m, "tsv")
    assert [(u.utt_id, u.transcript, u.speaker) for u in items] == [("a", "ONE", "bob"), ("b", "TWO", "")]


def test_malformed_manifest_lines_become_rejects(tmp_path):
    m = tmp_path / "m.csv"
    m.write_text('path,transcript\na.wav,"HELLO, WORLD"\nonly_one_field\n,EMPTY PATH\nc.wav,X,extra,more\n')
    items = _read(m, "csv")
    assert isinstance(items[0], Utterance) and items[0].transcript == "HELLO, WORLD"
    assert [type(i) for i in items[1:]] == [Reject, Reject, Reject]
    assert {i.reason for i in items[1:]} == {RejectReason.MALFORMED_LINE}
    assert items[1].path == f"{m}:3"


def test_header_without_transcript_column_is_refused(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text("path\twords\na.wav\tX\n")
    with pytest.raises(ValueError, match="no transcript column"):
        check_input(InputSpec("train", str(m), "tsv"))


def test_jsonl_nemo_manifest_with_malformed_lines(tmp_path):
    m = tmp_path / "m.jsonl"
    lines = [json.dumps({"audio_filepath": "a.flac", "text": "yes", "duration": 1.0}),
             "{not json", json.dumps([1, 2]), json.dumps({"audio_filepath": "b.wav"}),
             json.dumps({"audio_filepath": "c.wav", "text": "no", "speaker": 7, "utt_id": "u7"})]
    m.write_text("\n".join(lines) + "\n")
    items = _read(m, "jsonl")
    assert items[0] == Utterance("a", str(tmp_path / "a.flac"), "yes", "", "train", "m.jsonl:1")
    assert [i.reason for i in items[1:4]] == [RejectReason.MALFORMED_LINE] * 3
    assert (items[4].utt_id, items[4].speaker) == ("u7", "7")


def test_resolve_path_keeps_absolute_and_urls():
    assert resolve_path("/d", "/x/a.wav") == "/x/a.wav"
    assert resolve_path("/d", "gs://b/a.wav") == "gs://b/a.wav"
    assert resolve_path("gs://b/m", "a.wav") == "gs://b/m/a.wav"
