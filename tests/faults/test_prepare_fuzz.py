"""Hypothesis fuzz of the manifest readers: a clear error or a correct result, never a traceback.

"Clear error": a `Reject` record (one per input row, with a reason) or a ``ValueError`` that names the
manifest (what `dsnn-prepare` reports as a one-line user error). "Correct": every other item is an
`Utterance` with string fields and a non-empty id, and the number of items equals the number of
records the format's own rules see (JSON lines, tab-separated lines, `csv` module records).
"""
import csv
import io
import json
import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.records import Reject, RejectReason, Utterance
from pipeline.sources import InputSpec, check_input, read_source

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_DIR = pathlib.Path(tempfile.mkdtemp(prefix="dsnn-fuzz-"))

# Characters that matter to the three formats, plus a few that must pass through untouched.
_CHARS = st.sampled_from(list('ab ."\',\t\r\n{}[]:\\/0é\x00-') + ["path", "text", "transcript", "audio",
                                                                  "utt_id", "id", "speaker", ".wav",
                                                                  "null", "true", '""'])
_TEXT = st.lists(_CHARS, max_size=40).map("".join)

_SCALAR = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | _TEXT
_ANY = _SCALAR | st.lists(_SCALAR, max_size=2) | st.dictionaries(_TEXT, _SCALAR, max_size=2)
_JSON_ROW = st.fixed_dictionaries({}, optional={
    "audio_filepath": _TEXT | _ANY, "text": _TEXT | _ANY, "utt_id": st.none() | _ANY, "id": _ANY, "speaker": _ANY,
    "speaker_id": _ANY, "duration": _ANY})
_JSONL_LINE = st.one_of(_JSON_ROW.map(json.dumps), _ANY.map(json.dumps), _TEXT.map(lambda s: s.replace("\n", " ")))


def _read(text: str, fmt: str):
    path = _DIR / f"m.{fmt}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    spec = InputSpec("train", str(path), fmt)
    try:
        check_input(spec)
        items = list(read_source(spec))
    except ValueError as e:  # the project's user error: must name the manifest, on one line
        assert str(path) in str(e) and "\n" not in str(e), e
        return path, None
    for item in items:
        assert isinstance(item, (Utterance, Reject)), item
        if isinstance(item, Reject):
            assert item.reason in RejectReason.ALL and item.path.startswith(f"{path}:"), item
            json.loads(item.to_json())
        else:
            assert all(isinstance(v, str) for v in (item.utt_id, item.path, item.transcript, item.speaker))
            assert item.utt_id.strip() and item.utt_id != "None", item
    return path, items


def _nonblank_lines(text: str):
    return [line for line in io.StringIO(text, newline="") if line.strip()]


@SETTINGS
@given(st.lists(_JSONL_LINE, max_size=8))
def test_jsonl_reader_never_raises_and_yields_one_record_per_line(lines):
    text = "\n".join(lines) + "\n"
    _, items = _read(text, "jsonl")
    assert items is not None
    assert len(items) == len([line for line in text.splitlines() if line.strip()])


@SETTINGS
@given(_TEXT)
def test_tsv_reader_never_raises_and_yields_one_record_per_line(text):
    _, items = _read(text, "tsv")
    if items is None:
        return
    rows = [line for line in _nonblank_lines(text)]
    header = rows and any(c.strip().lower() in ("path", "audio", "audio_filepath", "file")
                          for c in rows[0].rstrip("\r\n").split("\t"))
    assert len(items) == len(rows) - bool(header)


def _csv_records(text: str):
    """The non-blank records the `csv` module sees (``strict=True``), or None if it cannot parse them."""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines, strict=True)
    records, seen = [], 0
    try:
        for row in reader:
            raw = "".join(lines[seen:reader.line_num])
            seen = reader.line_num
            if raw.strip():
                records.append(row)
    except csv.Error:
        return None
    return records


def _is_header(row):
    return any(c.strip().lower() in ("path", "audio", "audio_filepath", "file") for c in row)


@SETTINGS
@given(_TEXT)
def test_csv_reader_never_raises_and_agrees_with_the_csv_module(text):
    _, items = _read(text, "csv")
    records = _csv_records(text)
    if items is None or records is None:
        return  # a clear error, or malformed somewhere: the reader rejected rows instead (checked in _read)
    header = bool(records) and _is_header(records[0])
    assert len(items) == len(records) - header
    for item, record in zip(items, records[header:]):
        if isinstance(item, Utterance) and not header:
            assert (item.transcript, item.speaker) == (record[1], record[2].strip() if len(record) > 2 else "")


# no bare '\r': csv.writer (QUOTE_MINIMAL, lineterminator '\n') leaves it unquoted, and no reader reads that back
_FIELD = st.text(st.sampled_from(list('ab ,"\n\t.é')), max_size=12)


@SETTINGS
@given(st.lists(st.tuples(_FIELD.filter(lambda s: s.strip() and "/" not in s), _FIELD, _FIELD), max_size=6),
       st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
       st.sampled_from(["\n", "\r\n"]))
def test_csv_written_by_the_csv_module_reads_back_exactly(rows, quoting, terminator):
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=quoting, lineterminator=terminator)
    writer.writerow(["path", "transcript", "speaker"])
    writer.writerows(rows)
    path, items = _read(buffer.getvalue(), "csv")
    assert items is not None
    expected = [(str(_DIR / p.strip()) if p.strip() not in (".", "..") else None, t, s.strip())
                for p, t, s in rows]
    assert len(items) == len(rows)
    for item, (want_path, transcript, speaker) in zip(items, expected):
        if isinstance(item, Reject):  # only a path with no file name to take an id from
            assert "no file name" in item.detail, item
            continue
        assert (item.transcript, item.speaker) == (transcript, speaker)
        if want_path is not None:
            assert item.path == want_path
