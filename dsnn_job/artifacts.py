"""Step artifacts for the end-to-end job: each step's output directory, fingerprinted, TFX-style.

A step is identified by a *fingerprint*: the SHA-256 of its name, its parameters (command-line
arguments, config file contents) and the fingerprints of its inputs (upstream artifacts, or the
file listing of an external corpus directory). When a step finishes, ``OUT/_artifact.json`` records
the fingerprint, the spec it was made from, timings and the files written. Re-running the job skips a
step whose record matches; a changed input or parameter gives a new fingerprint, so the step and
everything downstream of it re-run.

A recorded step whose output files are gone or changed in size is re-run too.

A step replaces its output only when the new one is complete: a non-resumable step is made in a
sibling staging directory ``.<out>.partial`` (``_step.json`` there records the spec it started
with) and swapped into place once it succeeded (the old output goes to ``.<out>.replaced`` for the
length of the swap, then is removed). A failed or interrupted step leaves the previous output as it
was; its staging directory is removed by the next run (an interrupted swap is completed). A
resumable step (training: it continues from its last checkpoint) runs in place: an interrupted one
leaves ``_step.json`` and no ``_artifact.json`` in ``out``, and re-running it with an unchanged
spec keeps the directory; otherwise its last *finished* artifact is moved to ``<out>.previous``
before it starts again. A directory is only ever replaced if the job made it (it holds one of
those two files, or is empty).

Remote outputs (``gs://...``, anything `dsnn_keras.fileio` reaches): an object store has no
directory rename, so a swap deletes the old output's ``_artifact.json`` first (it no longer counts
as made), then its files, then moves the staging files one by one with ``_artifact.json`` last. A
step is complete exactly when its ``_artifact.json`` is there, as locally; a job killed half way
through a swap finishes it on the next run (the staging directory still holds the record).

Example:
    >>> spec = StepSpec("prepare", pathlib.Path("out/data"), params={"vocab": 128},
    ...                 inputs={"corpus": corpus_record.fingerprint})
    >>> record = run_step(spec, lambda: prepare(...), log=print)
    >>> record.status                       # "ran", "resumed" or "cached"
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable, Mapping, Optional

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError
from dsnn_keras.fileio import AnyPath

ARTIFACT_FILE = "_artifact.json"
IN_PROGRESS_FILE = "_step.json"
STAGING_SUFFIX = ".partial"    # OUT/.<step dir>.partial: a non-resumable step being made
REPLACED_SUFFIX = ".replaced"  # OUT/.<step dir>.replaced: the old output during the swap
FORMAT_VERSION = 1


class StepError(DsnnError, RuntimeError):
    """A step failed, or its output directory cannot be used; the message names the step and path."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint_of(value: Any) -> str:
    """SHA-256 hex digest of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(_canonical(value).encode("utf-8")).hexdigest()


def fingerprint_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes; a missing file is a `StepError` naming it."""
    if not fileio.isfile(path):
        raise StepError(f"input file not found: {os.fspath(path)}")
    return hashlib.sha256(fileio.read_bytes(path)).hexdigest()


def fingerprint_tree(path: str | os.PathLike) -> str:
    """Fingerprint of a directory's file listing: relative path, size and mtime of every file.

    Cheap on a large corpus (no file contents are read) and changes when a file is added, removed,
    replaced or edited. A missing directory is a `StepError` naming it.
    """
    if not fileio.isdir(path):
        raise StepError(f"input directory not found: {os.fspath(path)}")
    return fingerprint_of([list(entry) for entry in fileio.walk_file_stats(path)])


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What a step is made from.

    Args:
        name: Step name (``synth``, ``prepare``, ``train``, ...).
        out: The step's output directory: its artifact.
        params: JSON-serialisable parameters that determine the output (arguments, config contents).
        inputs: Input name -> fingerprint (an upstream step's, or `fingerprint_tree` of a corpus).
        resumable: Keep a half-written output directory made from the same spec (the step resumes),
            and keep the last finished artifact as ``<out>.previous`` when the step is re-made.
    """

    name: str
    out: AnyPath
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    resumable: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint_of({"format_version": FORMAT_VERSION, "name": self.name,
                               "params": dict(self.params), "inputs": dict(self.inputs)})

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "out": str(self.out), "params": dict(self.params),
                "inputs": dict(self.inputs), "resumable": self.resumable,
                "fingerprint": self.fingerprint}


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """The outcome of `run_step`: ``status`` is ``ran``, ``resumed`` or ``cached``.

    ``seconds`` is how long making the artifact took (for a cached step: when it was made).
    """

    name: str
    out: AnyPath
    fingerprint: str
    status: str
    seconds: float
    finished: str


def _read_json(path: AnyPath) -> Optional[dict[str, Any]]:
    try:
        return json.loads(fileio.read_text(path))
    except (OSError, ValueError):
        return None


def read_record(out: AnyPath) -> Optional[dict[str, Any]]:
    """The parsed ``_artifact.json`` of a step directory, or None if absent or unreadable."""
    return _read_json(fileio.join(out, ARTIFACT_FILE))


def _read_in_progress(out: AnyPath) -> Optional[dict[str, Any]]:
    return _read_json(fileio.join(out, IN_PROGRESS_FILE))


def _has(out: AnyPath, name: str) -> bool:
    return fileio.isfile(fileio.join(out, name))


def _sibling(out: AnyPath, name: str) -> AnyPath:
    return fileio.join(fileio.parent(out), name)


def previous_dir(out: AnyPath) -> AnyPath:
    """Where a resumable step's last finished artifact is kept when the step is re-made."""
    return _sibling(out, fileio.name(out) + ".previous")


def staging_dir(out: AnyPath) -> AnyPath:
    """Where a non-resumable step makes its new output before it replaces ``out``."""
    return _sibling(out, "." + fileio.name(out) + STAGING_SUFFIX)


def _replaced_dir(out: AnyPath) -> AnyPath:
    return _sibling(out, "." + fileio.name(out) + REPLACED_SUFFIX)


def _exists(path: AnyPath) -> bool:
    """Locally: anything at ``path``. Remotely: a file under the prefix (an emptied prefix may linger)."""
    return fileio.exists(path) if fileio.is_local(path) else bool(fileio.walk_files(path)) or fileio.isfile(path)


def _check_replaceable(spec: StepSpec) -> None:
    """Refuses an output path that is not a directory, or a directory dsnn-job did not make."""
    out = spec.out
    if not _exists(out):
        return
    if not fileio.isdir(out):
        raise StepError(f"{spec.name}: output path {out} exists and is not a directory")
    made_by_job = _has(out, ARTIFACT_FILE) or _has(out, IN_PROGRESS_FILE)
    if not made_by_job and (fileio.listdir(out) if fileio.is_local(out) else fileio.walk_files(out)):
        raise StepError(f"{spec.name}: refusing to replace {out}: it is not empty and was not written by "
                        f"dsnn-job (no {ARTIFACT_FILE}); move it away or choose another --out")


def _recover(spec: StepSpec, log: Callable[[str], None]) -> None:
    """Completes a swap a killed job left half done; removes a dead run's staging directories."""
    out, staging, replaced = spec.out, staging_dir(spec.out), _replaced_dir(spec.out)
    if fileio.is_local(out):
        if staging.is_dir() and not out.exists() and read_record(staging) is not None:
            staging.rename(out)  # the new output was complete: finish the swap
            log(f"{spec.name}: completed the interrupted replacement of {out}")
    elif read_record(staging) is not None and not _has(out, ARTIFACT_FILE):
        _swap(staging, out)      # killed between deleting the old record and moving the new one
        log(f"{spec.name}: completed the interrupted replacement of {out}")
    for leftover in (staging, replaced):
        if _exists(leftover):
            fileio.rmtree(leftover)


def _swap(staging: AnyPath, out: AnyPath) -> None:
    """Puts the complete ``staging`` in place of ``out`` (see the module notes and `_recover`)."""
    if fileio.is_local(out):
        replaced = _replaced_dir(out)
        if out.exists():
            out.rename(replaced)
        staging.rename(out)
        if replaced.exists():
            fileio.rmtree(replaced)
        return
    # No directory rename: the old output stops counting as made (its record goes first), its files
    # go (but any the new output already moved in), then the new files move, the record last.
    fileio.remove(fileio.join(out, ARTIFACT_FILE), missing_ok=True)
    record = read_record(staging) or {}
    incoming = (set(fileio.walk_files(staging))
                | {entry["path"] for entry in record.get("files", [])})   # already moved by a killed swap
    for relative in fileio.walk_files(out):
        if relative not in incoming:
            fileio.remove(fileio.join(out, relative), missing_ok=True)
    fileio.move_tree(staging, out, last=ARTIFACT_FILE)


def _clear(spec: StepSpec, log: Callable[[str], None]) -> None:
    out = spec.out
    if not _exists(out):
        return
    _check_replaceable(spec)
    if spec.resumable and _has(out, ARTIFACT_FILE):
        # A finished training is expensive: a changed (or mistyped) flag must not silently delete it.
        keep = previous_dir(out)
        if _exists(keep):
            fileio.rmtree(keep)
        fileio.move_tree(out, keep, last=ARTIFACT_FILE)
        log(f"{spec.name}: kept the previous finished artifact as {keep}")
        return
    fileio.rmtree(out)


def _listing(out: AnyPath) -> list[dict[str, Any]]:
    return [{"path": relative, "size_bytes": size} for relative, size, _ in fileio.walk_file_stats(out)
            if fileio.name(relative) not in (ARTIFACT_FILE, IN_PROGRESS_FILE)]


def _missing_files(out: AnyPath, record: dict[str, Any]) -> list[str]:
    """Recorded output files that are gone or have another size (edited or truncated)."""
    sizes = {relative: size for relative, size, _ in fileio.walk_file_stats(out)}
    return [entry["path"] for entry in record.get("files", []) if sizes.get(entry["path"]) != entry["size_bytes"]]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_artifact(directory: AnyPath, spec: StepSpec, seconds: float, finished: str, status: str) -> None:
    artifact = {"format_version": FORMAT_VERSION, **spec.to_json(), "finished": finished,
                "seconds": round(seconds, 3), "status": status, "files": _listing(directory)}
    fileio.atomic_write(fileio.join(directory, ARTIFACT_FILE), json.dumps(artifact, indent=1))
    fileio.remove(fileio.join(directory, IN_PROGRESS_FILE), missing_ok=True)


def _write_in_progress(directory: AnyPath, spec: StepSpec) -> None:
    fileio.atomic_write(fileio.join(directory, IN_PROGRESS_FILE),
                        json.dumps({**spec.to_json(), "started": _now()}, indent=1))


def adopt(spec: StepSpec, log: Callable[[str], None] = print) -> bool:
    """Records a complete output made without a record (by an older version of the orchestrating
    script, which judged completeness by a file it wrote last) as the artifact of ``spec``.

    The caller decides that the output is complete and was made from ``spec``; `run_step` with the
    same spec then finds it up to date.

    Returns:
        True if it was adopted; False (nothing done) if ``spec.out`` is not a directory or already
        holds ``_artifact.json`` or ``_step.json``.
    """
    out = spec.out
    if not fileio.isdir(out) or _has(out, ARTIFACT_FILE) or _has(out, IN_PROGRESS_FILE):
        return False
    _write_artifact(out, spec, 0.0, _now(), "adopted")
    log(f"{spec.name}: recorded the existing output {out} (made before artifacts were recorded)")
    return True


def adopt_in_progress(spec: StepSpec, log: Callable[[str], None] = print) -> bool:
    """Marks an unfinished output made without a record as an interrupted run of the resumable ``spec``,
    so that `run_step` resumes it in place instead of refusing to replace it.

    Returns:
        True if it was marked; False (nothing done) if ``spec`` is not resumable, ``spec.out`` is not
        a directory or already holds ``_artifact.json`` or ``_step.json``.
    """
    out = spec.out
    if not spec.resumable or not fileio.isdir(out) or _has(out, ARTIFACT_FILE) or _has(out, IN_PROGRESS_FILE):
        return False
    _write_in_progress(out, spec)
    log(f"{spec.name}: resuming the existing unfinished output {out}")
    return True


def run_step(spec: StepSpec, action: Callable[[AnyPath], None], log: Callable[[str], None] = print,
             force: bool = False) -> StepRecord:
    """Runs ``action`` to (re)make ``spec.out`` unless an up-to-date artifact is already there.

    Args:
        spec: The step's spec.
        action: ``action(directory)`` writes the step's outputs into ``directory`` (created before
            it runs) and raises on failure. ``directory`` is ``spec.out`` for a resumable step and
            the staging directory (`staging_dir`) otherwise.
        log: Progress messages.
        force: Re-run even if the artifact is up to date.

    Returns:
        A `StepRecord`. On failure the exception propagates, no ``_artifact.json`` is written (the
        next run does the step again) and a non-resumable step's previous output is left as it was.
    """
    fingerprint = spec.fingerprint
    _recover(spec, log)
    record = read_record(spec.out)
    if record and record.get("fingerprint") == fingerprint and not force:
        missing = _missing_files(spec.out, record)
        if not missing:
            log(f"{spec.name}: up to date in {spec.out} (made {record.get('finished', '?')}), skipped")
            return StepRecord(spec.name, spec.out, fingerprint, "cached", float(record.get("seconds", 0.0)),
                              record.get("finished", ""))
        log(f"{spec.name}: {len(missing)} recorded output file(s) missing or changed in size "
            f"(e.g. {missing[0]}); re-running")
        force = True
    if record is not None and not force:
        log(f"{spec.name}: inputs or parameters changed since {record.get('finished', '?')}; re-running")
    if not spec.resumable:
        # Made aside and swapped in only once complete: a failure keeps the previous output.
        _check_replaceable(spec)
        staging = staging_dir(spec.out)
        fileio.makedirs(staging)
        _write_in_progress(staging, spec)
        start = time.monotonic()
        action(staging)
        seconds, finished = time.monotonic() - start, _now()
        _write_artifact(staging, spec, seconds, finished, "ran")
        _swap(staging, spec.out)
        return StepRecord(spec.name, spec.out, fingerprint, "ran", seconds, finished)
    in_progress = _read_in_progress(spec.out)
    status = "ran"
    if not force and record is None and in_progress and in_progress.get("fingerprint") == fingerprint:
        status = "resumed"
        log(f"{spec.name}: resuming the interrupted step in {spec.out}")
    else:
        _clear(spec, log)
        fileio.makedirs(spec.out)
        _write_in_progress(spec.out, spec)
    start = time.monotonic()
    action(spec.out)
    seconds, finished = time.monotonic() - start, _now()
    _write_artifact(spec.out, spec, seconds, finished, status)
    return StepRecord(spec.name, spec.out, fingerprint, status, seconds, finished)
