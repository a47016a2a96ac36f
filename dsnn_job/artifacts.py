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
import pathlib
import shutil
import time
from typing import Any, Callable, Mapping, Optional

from dsnn_keras.errors import DsnnError

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
    path = pathlib.Path(path)
    if not path.is_file():
        raise StepError(f"input file not found: {path}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint_tree(path: str | os.PathLike) -> str:
    """Fingerprint of a directory's file listing: relative path, size and mtime of every file.

    Cheap on a large corpus (no file contents are read) and changes when a file is added, removed,
    replaced or edited. A missing directory is a `StepError` naming it.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise StepError(f"input directory not found: {root}")
    listing = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = pathlib.Path(dirpath) / name
            stat = full.stat()
            listing.append((full.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
    return fingerprint_of(listing)


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
    out: pathlib.Path
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
    out: pathlib.Path
    fingerprint: str
    status: str
    seconds: float
    finished: str


def read_record(out: pathlib.Path) -> Optional[dict[str, Any]]:
    """The parsed ``_artifact.json`` of a step directory, or None if absent or unreadable."""
    try:
        return json.loads((pathlib.Path(out) / ARTIFACT_FILE).read_text())
    except (OSError, ValueError):
        return None


def _read_in_progress(out: pathlib.Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((out / IN_PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def previous_dir(out: pathlib.Path) -> pathlib.Path:
    """Where a resumable step's last finished artifact is kept when the step is re-made."""
    return out.with_name(out.name + ".previous")


def staging_dir(out: pathlib.Path) -> pathlib.Path:
    """Where a non-resumable step makes its new output before it replaces ``out``."""
    return out.with_name("." + out.name + STAGING_SUFFIX)


def _replaced_dir(out: pathlib.Path) -> pathlib.Path:
    return out.with_name("." + out.name + REPLACED_SUFFIX)


def _check_replaceable(spec: StepSpec) -> None:
    """Refuses an output path that is not a directory, or a directory dsnn-job did not make."""
    out = spec.out
    if not out.exists():
        return
    if not out.is_dir():
        raise StepError(f"{spec.name}: output path {out} exists and is not a directory")
    made_by_job = (out / ARTIFACT_FILE).exists() or (out / IN_PROGRESS_FILE).exists()
    if not made_by_job and any(out.iterdir()):
        raise StepError(f"{spec.name}: refusing to replace {out}: it is not empty and was not written by "
                        f"dsnn-job (no {ARTIFACT_FILE}); move it away or choose another --out")


def _recover(spec: StepSpec, log: Callable[[str], None]) -> None:
    """Completes a swap a killed job left half done; removes a dead run's staging directories."""
    out, staging, replaced = spec.out, staging_dir(spec.out), _replaced_dir(spec.out)
    if staging.is_dir() and not out.exists() and read_record(staging) is not None:
        staging.rename(out)  # the new output was complete: finish the swap
        log(f"{spec.name}: completed the interrupted replacement of {out}")
    for leftover in (staging, replaced):
        if leftover.is_dir():
            shutil.rmtree(leftover)


def _swap(staging: pathlib.Path, out: pathlib.Path) -> None:
    """Puts the complete ``staging`` in place of ``out`` (two renames; see `_recover`)."""
    replaced = _replaced_dir(out)
    if out.exists():
        out.rename(replaced)
    staging.rename(out)
    if replaced.exists():
        shutil.rmtree(replaced)


def _clear(spec: StepSpec, log: Callable[[str], None]) -> None:
    out = spec.out
    if not out.exists():
        return
    _check_replaceable(spec)
    if spec.resumable and (out / ARTIFACT_FILE).exists():
        # A finished training is expensive: a changed (or mistyped) flag must not silently delete it.
        keep = previous_dir(out)
        if keep.exists():
            shutil.rmtree(keep)
        out.rename(keep)
        log(f"{spec.name}: kept the previous finished artifact as {keep}")
        return
    shutil.rmtree(out)


def _listing(out: pathlib.Path) -> list[dict[str, Any]]:
    files = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.name in (ARTIFACT_FILE, IN_PROGRESS_FILE):
            continue
        files.append({"path": path.relative_to(out).as_posix(), "size_bytes": path.stat().st_size})
    return files


def _missing_files(out: pathlib.Path, record: dict[str, Any]) -> list[str]:
    """Recorded output files that are gone or have another size (edited or truncated)."""
    missing = []
    for entry in record.get("files", []):
        path = out / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size_bytes"]:
            missing.append(entry["path"])
    return missing


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_artifact(directory: pathlib.Path, spec: StepSpec, seconds: float, finished: str, status: str) -> None:
    artifact = {"format_version": FORMAT_VERSION, **spec.to_json(), "finished": finished,
                "seconds": round(seconds, 3), "status": status, "files": _listing(directory)}
    tmp = directory / (ARTIFACT_FILE + ".tmp")
    tmp.write_text(json.dumps(artifact, indent=1))
    os.replace(tmp, directory / ARTIFACT_FILE)
    (directory / IN_PROGRESS_FILE).unlink(missing_ok=True)


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
    if not out.is_dir() or (out / ARTIFACT_FILE).exists() or (out / IN_PROGRESS_FILE).exists():
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
    if not spec.resumable or not out.is_dir() or (out / ARTIFACT_FILE).exists() or (out / IN_PROGRESS_FILE).exists():
        return False
    (out / IN_PROGRESS_FILE).write_text(json.dumps({**spec.to_json(), "started": _now()}, indent=1))
    log(f"{spec.name}: resuming the existing unfinished output {out}")
    return True


def run_step(spec: StepSpec, action: Callable[[pathlib.Path], None], log: Callable[[str], None] = print,
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
        staging.mkdir(parents=True)
        (staging / IN_PROGRESS_FILE).write_text(json.dumps({**spec.to_json(), "started": _now()}, indent=1))
        start = time.monotonic()
        action(staging)
        seconds, finished = time.monotonic() - start, _now()
        _write_artifact(staging, spec, seconds, finished, "ran")
        _swap(staging, spec.out)
        return StepRecord(spec.name, spec.out, fingerprint, "ran", seconds, finished)
    in_progress = _read_in_progress(spec.out) if spec.out.is_dir() else None
    status = "ran"
    if not force and record is None and in_progress and in_progress.get("fingerprint") == fingerprint:
        status = "resumed"
        log(f"{spec.name}: resuming the interrupted step in {spec.out}")
    else:
        _clear(spec, log)
        spec.out.mkdir(parents=True, exist_ok=True)
        (spec.out / IN_PROGRESS_FILE).write_text(json.dumps({**spec.to_json(), "started": _now()}, indent=1))
    start = time.monotonic()
    action(spec.out)
    seconds, finished = time.monotonic() - start, _now()
    _write_artifact(spec.out, spec, seconds, finished, status)
    return StepRecord(spec.name, spec.out, fingerprint, status, seconds, finished)
