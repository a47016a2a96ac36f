"""Input corpora: LibriSpeech directories, TSV/CSV manifests and NeMo JSON-lines manifests.

Every input item (a transcript line or a manifest row) becomes exactly one `Utterance` or one
`Reject`, so the pipeline can check ``input count == written + rejected`` at the end. Blank lines
are not inputs and are skipped.

Formats (detected from the path by `detect_format`):

* ``librispeech`` -- a directory (searched recursively) of ``*.trans.txt`` files, each line
  ``UTT_ID TRANSCRIPT``; the audio is ``UTT_ID.flac`` (or ``.wav``/``.ogg``) next to the
  transcript file; the speaker is the part of ``UTT_ID`` before the first ``-``.
* ``tsv`` / ``csv`` -- one row per utterance. With a header row (the first row names a ``path``
  column: ``path``, ``audio``, ``audio_filepath`` or ``file``), columns are found by name:
  transcript (``transcript``, ``text`` or ``sentence``), optional ``speaker`` (``speaker_id``,
  ``client_id``) and optional ``utt_id`` (``id``). Without a header the columns are
  ``path, transcript[, speaker]``. Rows are records of the `csv` module (``strict=True``): CSV
  quoting (a quoted field may hold commas, ``""`` and newlines), TSV without quoting. A record the
  module cannot parse (e.g. an unterminated quote) is rejected (``malformed_line``, its first line)
  and parsing resumes on the next line, so it never merges the rows after it.
* ``jsonl`` -- NeMo style, one JSON object per line with ``audio_filepath`` and ``text``
  (``duration``, ``speaker`` and ``utt_id`` optional; the duration is re-measured from the audio).
  A null or blank ``utt_id``/``speaker`` counts as absent; any other non-string, non-number value
  is a ``malformed_line``.

Relative audio paths are relative to the manifest's directory. Without an ``utt_id`` (absent, null
or blank) the utterance id is the audio file's name without extension; a row whose path has no
file name either is a ``malformed_line``.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import io
import json
import os
import posixpath
from typing import Iterator

from pipeline.records import Reject, RejectReason, Utterance

FORMATS = ("librispeech", "tsv", "csv", "jsonl")
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg")

_PATH_COLUMNS = ("path", "audio", "audio_filepath", "file")
_TEXT_COLUMNS = ("transcript", "text", "sentence")
_SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")
_ID_COLUMNS = ("utt_id", "id")
_SPEAKER_KEYS = ("speaker", "speaker_id")  # JSON-lines


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One ``--input`` (or ``--corpus``): a corpus path, its format, the split its utterances go to,
    and the name of the corpus (``--corpus NAME=PATH``; ``""`` for an ``--input``)."""

    split: str
    path: str
    format: str
    corpus: str = ""


def _has_scheme(path: str) -> bool:
    return "://" in path


def _open_text(path: str) -> io.TextIOBase:
    if _has_scheme(path):
        from apache_beam.io.filesystems import FileSystems
        return io.TextIOWrapper(FileSystems.open(path), encoding="utf-8", errors="replace", newline="")
    return open(path, encoding="utf-8", errors="replace", newline="")


def _remote_exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.exists(path)


def _remote_has_files_under(directory: str) -> bool:
    """Whether any object lies under the ``scheme://`` prefix ``directory/`` (object stores have no
    directories: a LibriSpeech "directory" on GCS is a prefix)."""
    from apache_beam.io.filesystems import FileSystems
    return bool(FileSystems.match([directory.rstrip("/") + "/**"], limits=[1])[0].metadata_list)


def _dirname(path: str) -> str:
    return posixpath.dirname(path) if _has_scheme(path) else os.path.dirname(os.path.abspath(path))


def resolve_path(base_dir: str, path: str) -> str:
    """Resolves an audio path from a manifest against the manifest's directory.

    Example:
        >>> resolve_path("/data", "clips/a.wav")
        '/data/clips/a.wav'
    """
    if _has_scheme(path) or os.path.isabs(path):
        return path
    if _has_scheme(base_dir):
        return posixpath.join(base_dir, path)
    return os.path.normpath(os.path.join(base_dir, path))


def detect_format(path: str, flag: str = "--input") -> str:
    """Returns the input format of ``path``: a directory is ``librispeech``, else by extension.

    ``flag`` names the path in the error (``--input``, or ``--corpus NAME=`` for a named corpus).

    Raises:
        ValueError: naming the path when the format cannot be told.
    """
    if not _has_scheme(path) and os.path.isdir(path):
        return "librispeech"
    ext = os.path.splitext(path)[1].lower()
    by_ext = {".tsv": "tsv", ".csv": "csv", ".json": "jsonl", ".jsonl": "jsonl"}
    if ext in by_ext:
        return by_ext[ext]
    if _has_scheme(path) and (path.endswith("/") or _remote_has_files_under(path)):
        return "librispeech"
    raise ValueError(
        f"{flag}{'' if flag.endswith('=') else ' '}{path}: cannot tell the format; expected a LibriSpeech directory, "
        f"a .tsv/.csv manifest or a .json/.jsonl (NeMo) manifest")


def check_input(spec: InputSpec) -> None:
    """Cheap driver-side check that an input exists and (for TSV/CSV) that its header is usable.

    Raises:
        ValueError: naming the path and what is wrong.
    """
    where = f"--corpus {spec.corpus}={spec.path}" if spec.corpus else f"--input {spec.path}"
    if spec.format == "librispeech":
        if not _has_scheme(spec.path) and not os.path.isdir(spec.path):
            raise ValueError(f"{where}: not a directory")
        if _has_scheme(spec.path) and not _remote_has_files_under(spec.path):
            raise ValueError(f"{where}: no files under this prefix")
        return
    if not _has_scheme(spec.path) and not os.path.isfile(spec.path):
        raise ValueError(f"{where}: no such file")
    if _has_scheme(spec.path) and not _remote_exists(spec.path):
        raise ValueError(f"{where}: no such file")
    if spec.format in ("tsv", "csv"):
        with _open_text(spec.path) as f:
            first = next(_csv_rows(f, spec.format), None)
        if first is not None and first[1] is not None:
            _columns(first[1], spec.path)


class _Lines:
    """The manifest's lines for `csv.reader`, with the lines of the current record kept so that a
    malformed record can be rejected alone and the lines after its first one read again."""

    def __init__(self, stream):
        self._stream = iter(stream)
        self._pending: collections.deque[str] = collections.deque()
        self.taken: list[str] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._pending.popleft() if self._pending else next(self._stream)
        self.taken.append(line)
        return line

    def push_back(self, lines: list[str]) -> None:
        self._pending.extendleft(reversed(lines))


def _csv_rows(stream, fmt: str) -> Iterator[tuple[int, list[str] | None, str]]:
    """Yields ``(first line number, fields or None, detail)`` per non-blank record of ``stream``.

    Records follow the `csv` module's rules (``strict=True``): in CSV a quoted field may hold
    delimiters, doubled quotes and newlines; TSV has no quoting (quotes are ordinary characters).
    A record the module cannot parse (an unterminated quote, text after a closing quote, a field
    over `csv.field_size_limit`) comes back as ``None`` with the reason, covering its first line
    only: parsing resumes on the next line, so one bad quote never swallows the rows after it.
    """
    lines = _Lines(stream)
    delimiter = "\t" if fmt == "tsv" else ","
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    lineno = 1  # the number of the next unread line
    while True:
        reader = csv.reader(lines, delimiter=delimiter, quoting=quoting, strict=True)
        try:
            for row in reader:
                first, lineno = lineno, lineno + len(lines.taken)
                blank = not "".join(lines.taken).strip()  # blank lines are not inputs
                lines.taken = []
                if not blank:
                    yield first, row, ""
            return
        except csv.Error as e:
            bad = lines.taken[:1] or [""]
            lines.push_back(lines.taken[1:])
            lines.taken = []
            yield lineno, None, f"{_csv_problem(e)}: {bad[0].rstrip(chr(13) + chr(10))[:200]!r}"
            lineno += 1


def _csv_problem(error: csv.Error) -> str:
    message = str(error)
    if "end of data" in message:
        return f"unterminated quote (csv module: {message})"
    if "field larger" in message:
        return f"field over {csv.field_size_limit()} characters, an unterminated quote? (csv module: {message})"
    if "expected after" in message:
        return f"text after a closing quote (csv module: {message})"
    return f"csv module: {message}"


def _columns(row: list[str], path: str) -> dict[str, int] | None:
    """Maps role -> column index when ``row`` is a header row, else None."""
    names = [c.strip().lower() for c in row]
    if not any(n in _PATH_COLUMNS for n in names):
        return None
    cols = {}
    for role, options in (("path", _PATH_COLUMNS), ("transcript", _TEXT_COLUMNS),
                          ("speaker", _SPEAKER_COLUMNS), ("utt_id", _ID_COLUMNS)):
        for option in options:
            if option in names:
                cols[role] = names.index(option)
                break
    if "transcript" not in cols:
        raise ValueError(
            f"{path}: header row {row} has no transcript column; expected one of {list(_TEXT_COLUMNS)}")
    return cols


def _stem(path: str) -> str:
    return os.path.splitext(posixpath.basename(path.replace("\\", "/")))[0]


def _read_csv(spec: InputSpec) -> Iterator[Utterance | Reject]:
    base = _dirname(spec.path)
    name = os.path.basename(spec.path)
    with _open_text(spec.path) as f:
        cols = None
        for lineno, row, problem in _csv_rows(f, spec.format):
            where = f"{spec.path}:{lineno}"
            if row is None:
                yield Reject(where, RejectReason.MALFORMED_LINE, problem)
                continue
            if cols is None:  # the first parsed row: a header, or already data
                cols = _columns(row, spec.path)
                if cols is not None:
                    continue
                cols = {"path": 0, "transcript": 1, "speaker": 2}
            required = max(cols["path"], cols["transcript"]) + 1
            allowed = max(max(cols.values()) + 1, required)
            if not required <= len(row) <= allowed:
                yield Reject(where, RejectReason.MALFORMED_LINE,
                             f"expected {required} to {allowed} {spec.format.upper()} fields, got "
                             f"{len(row)}: {'|'.join(row)[:200]!r}")
                continue
            audio = row[cols["path"]].strip()
            if not audio:
                yield Reject(where, RejectReason.MALFORMED_LINE, "empty path field")
                continue
            speaker = row[cols["speaker"]].strip() if cols.get("speaker", allowed) < len(row) else ""
            utt_id = row[cols["utt_id"]].strip() if cols.get("utt_id", allowed) < len(row) else ""
            yield _utterance(where, utt_id, audio, base, row[cols["transcript"]], speaker, spec.split,
                             f"{name}:{lineno}")


def _utterance(where: str, utt_id: str, audio: str, base: str, transcript: str, speaker: str, split: str,
               source: str) -> Utterance | Reject:
    """An `Utterance`; without ``utt_id`` the id is the audio file's name without extension."""
    utt_id = utt_id or _stem(audio).strip()
    if not utt_id:
        return Reject(where, RejectReason.MALFORMED_LINE,
                      f"no utt_id, and the audio path {audio[:200]!r} has no file name to derive one from")
    return Utterance(utt_id=utt_id, path=resolve_path(base, audio), transcript=transcript, speaker=speaker,
                     split=split, source=source)


def _optional_string(obj: dict, keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` whose value is a non-blank string or a number, as a stripped string;
    ``""`` when every one is missing, null or blank; None when one holds another JSON type."""
    for key in keys:
        value = obj.get(key)
        if value is None or isinstance(value, str) and not value.strip():
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return None
        return value.strip() if isinstance(value, str) else str(value)
    return ""


def _read_jsonl(spec: InputSpec) -> Iterator[Utterance | Reject]:
    base = _dirname(spec.path)
    name = os.path.basename(spec.path)
    with _open_text(spec.path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{spec.path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield Reject(where, RejectReason.MALFORMED_LINE, f"invalid JSON: {e}")
                continue
            if not isinstance(obj, dict):
                yield Reject(where, RejectReason.MALFORMED_LINE, "expected a JSON object")
                continue
            audio, text = obj.get("audio_filepath"), obj.get("text")
            if not isinstance(audio, str) or not audio.strip() or not isinstance(text, str):
                yield Reject(where, RejectReason.MALFORMED_LINE,
                             "expected string fields 'audio_filepath' and 'text'")
                continue
            speaker = _optional_string(obj, _SPEAKER_KEYS)
            utt_id = _optional_string(obj, _ID_COLUMNS)
            if utt_id is None or speaker is None:
                yield Reject(where, RejectReason.MALFORMED_LINE,
                             f"'{'utt_id' if utt_id is None else 'speaker'}' must be a string or a number")
                continue
            yield _utterance(where, utt_id, audio.strip(), base, text, speaker, spec.split, f"{name}:{lineno}")


def _transcript_files(root: str) -> list[str]:
    if _has_scheme(root):
        from apache_beam.io.filesystems import FileSystems
        pattern = posixpath.join(root, "**", "*.trans.txt")
        return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".trans.txt")]
    return found


def _remote_names(directory: str) -> set[str]:
    """Names of the objects directly under the ``scheme://`` prefix ``directory/`` (one listing)."""
    from apache_beam.io.filesystems import FileSystems
    prefix = directory.rstrip("/") + "/"
    return {m.path[len(prefix):] for m in FileSystems.match([prefix + "*"])[0].metadata_list
            if m.path.startswith(prefix) and "/" not in m.path[len(prefix):]}


def _audio_for(directory: str, utt_id: str, remote_names: set[str] | None = None) -> str:
    for ext in AUDIO_EXTENSIONS:
        if remote_names is not None:
            if utt_id + ext in remote_names:
                return resolve_path(directory, utt_id + ext)
            continue
        candidate = os.path.join(directory, utt_id + ext)
        if os.path.exists(candidate):
            return candidate
    return resolve_path(directory, utt_id + ".flac")


def _read_librispeech(spec: InputSpec) -> Iterator[Utterance | Reject]:
    for trans in _transcript_files(spec.path):
        directory = _dirname(trans)
        remote_names = _remote_names(directory) if _has_scheme(directory) else None
        name = posixpath.basename(trans)
        with _open_text(trans) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                parts = line.strip().split(maxsplit=1)
                utt_id = parts[0]
                transcript = parts[1] if len(parts) > 1 else ""
                yield Utterance(utt_id=utt_id, path=_audio_for(directory, utt_id, remote_names),
                                transcript=transcript, speaker=utt_id.split("-")[0],
                                split=spec.split, source=f"{name}:{lineno}")


def read_source(spec: InputSpec) -> Iterator[Utterance | Reject]:
    """Yields one `Utterance` or `Reject` per input item of ``spec``.

    Args:
        spec: The input (path, format, split).

    Returns:
        An iterator of `Utterance` (audio path resolved, transcript as in the source) and `Reject`
        (``malformed_line``) records, in file order.

    Example:
        >>> recs = list(read_source(InputSpec("train", "manifest.tsv", "tsv")))  # doctest: +SKIP
    """
    readers = {"librispeech": _read_librispeech, "tsv": _read_csv, "csv": _read_csv,
               "jsonl": _read_jsonl}
    if spec.format not in readers:
        raise ValueError(f"InputSpec.format must be one of {FORMATS}, got {spec.format!r}")
    if not spec.corpus:
        yield from readers[spec.format](spec)
        return
    for item in readers[spec.format](spec):
        yield dataclasses.replace(item, corpus=spec.corpus) if isinstance(item, Utterance) else item
