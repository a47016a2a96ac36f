"""Promotion for scheduled retraining: TFX Evaluator "blessing" + Pusher semantics.

``dsnn-job --push_dir DIR`` ends with a ``push`` step that copies the exported ``model.tflite``,
its ``eval.json`` and a generated ``model_card.md`` into ``DIR/<version>/`` (plus ``push.json``,
the version's record) — but only if the model is *blessed*: every level's WER is no worse than the
latest pushed version's by more than the tolerance, evaluated on the same data.

- **Blessing** (`bless`, a pure function of two `EvalReport`s): WER is a fraction (0.25 = 25 %)
  and the tolerance is absolute in the same unit (``--push_tolerance 0.01`` allows one WER point
  worse per level; default 0.0: no level may be worse, equal passes). Compared only when the
  evaluations are comparable: the same split name, the same evaluated utterances (a SHA-256 of the
  sorted utterance ids and references of ``eval_hypotheses.jsonl``, when both sides know it) and the
  same levels (index and sparsity). Otherwise the model is not pushed, with the reason, unless
  ``force`` (``--push_force``), which pushes without comparing. With no version pushed yet the first
  model is blessed.
- **Versions** are the integers 1, 2, 3, ... (directory names), one more than the largest present.
  A version is written into ``DIR/.staging-<version>-<pid>/`` and renamed into place when complete,
  so a reader never sees a half-written version; the whole check-and-push holds ``DIR/.dsnn-push.lock``
  (`dsnn_keras.paths.exclusive_lock`, waited for up to `LOCK_WAIT_SECONDS`), so two concurrent
  pushes never claim the same number (and ``rename`` onto an existing version fails anyway).
  Staging directories of a killed push are removed by the next push.
- **Idempotent**: a model whose file SHA-256 equals a pushed version's is not pushed again (status
  ``already_pushed``, naming that version).

Example:
    >>> decision = push_model("models/asr", "demo/export/model.tflite", "demo/eval/eval.json",
    ...                       card=lambda version, reason: f"# version {version}\\n", tolerance=0.0)
    >>> decision.status, decision.version, decision.reason
    ('pushed', 1, 'pushed version 1: no version was pushed yet in models/asr')
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError, DsnnUsageError
from dsnn_keras.fileio import AnyPath

if TYPE_CHECKING:
    from dsnn_keras.eval_report import EvalReport

FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
EVAL_FILE = "eval.json"
CARD_FILE = "model_card.md"
RECORD_FILE = "push.json"       # written last into the staging directory
LOCK_FILE = ".dsnn-push.lock"
STAGING_PREFIX = ".staging-"
LOCK_WAIT_SECONDS = 120.0
WER_EPSILON = 1e-9              # float noise, far below one word in any evaluation set
_VERSION = re.compile(r"^[1-9][0-9]*$")


class PushError(DsnnError, RuntimeError):
    """The push directory cannot be used (not a directory, unreadable version, lock not obtained)."""


class PushArgumentError(DsnnUsageError, ValueError):
    """A bad ``--push_tolerance`` (negative or not finite)."""


def check_tolerance(tolerance: float) -> float:
    """Returns ``tolerance`` as a float; raises `PushArgumentError` unless finite and >= 0."""
    value = float(tolerance)
    if not math.isfinite(value) or value < 0:
        raise PushArgumentError(f"--push_tolerance must be a finite WER fraction >= 0 (0.01 = one WER point), "
                                f"got {tolerance!r}")
    return value


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    if not fileio.is_local(path):
        return hashlib.sha256(fileio.read_bytes(path)).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def eval_set_fingerprint(hypotheses: str | os.PathLike) -> Optional[str]:
    """SHA-256 of the sorted ``(utt_id, reference)`` pairs of a ``dsnn-eval`` hypotheses file.

    Two evaluations with the same fingerprint decoded the same utterances against the same
    references. None if the file does not exist.
    """
    if not fileio.isfile(hypotheses):
        return None
    pairs = sorted((entry["utt_id"], entry["reference"]) for entry in
                   (json.loads(line) for line in fileio.read_text(hypotheses).splitlines() if line.strip()))
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class LevelComparison:
    """One level's WER against the pushed version's.

    Args:
        level: Level index.
        sparsity: The level's sparsity.
        wer: The candidate's WER (fraction).
        pushed_wer: The pushed version's WER at the level (fraction).
        blessed: ``wer <= pushed_wer + tolerance``.
    """

    level: int
    sparsity: float
    wer: float
    pushed_wer: float
    blessed: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Blessing:
    """The outcome of `bless`.

    Args:
        blessed: Whether the candidate may be pushed.
        reason: One sentence: why (names the first failing level, or the mismatch).
        comparisons: Per level, when the two evaluations were comparable.
        forced: Pushed by ``force`` without (or despite) the comparison.
    """

    blessed: bool
    reason: str
    comparisons: tuple[LevelComparison, ...] = ()
    forced: bool = False


def _levels(report: "EvalReport") -> list[tuple[int, float]]:
    return sorted((entry.level, round(entry.sparsity, 6)) for entry in report.levels)


def bless(candidate: "EvalReport", pushed: Optional["EvalReport"], *, tolerance: float = 0.0,
          force: bool = False, pushed_version: Optional[int] = None,
          candidate_eval_set: Optional[str] = None, pushed_eval_set: Optional[str] = None) -> Blessing:
    """Decides whether ``candidate`` may replace the pushed model (TFX Evaluator's "blessing").

    Args:
        candidate: The new model's evaluation.
        pushed: The latest pushed version's evaluation, or None if nothing is pushed yet.
        tolerance: How much worse (absolute, WER fraction) a level may be. Defaults to 0.0.
        force: Bless whatever the comparison says (and even when the evaluations are not
            comparable). Defaults to False.
        pushed_version: The pushed version's number, for the reason. Defaults to None.
        candidate_eval_set: `eval_set_fingerprint` of the candidate's evaluation, if known.
        pushed_eval_set: `eval_set_fingerprint` of the pushed version's evaluation, if known.

    Returns:
        A `Blessing`.

    Example:
        >>> bless(new_report, pushed_report, tolerance=0.0, pushed_version=2).reason
        'level 3 (sparsity 0.9) WER 0.3100 > pushed version 2: 0.2900 + tolerance 0.0000'
    """
    tolerance = check_tolerance(tolerance)
    name = "the pushed version" if pushed_version is None else f"pushed version {pushed_version}"
    if pushed is None:
        return Blessing(True, "no version was pushed yet", forced=False)
    mismatch = None
    if candidate.split != pushed.split:
        mismatch = f"evaluated on split {candidate.split!r}, {name} on {pushed.split!r}"
    elif candidate_eval_set and pushed_eval_set and candidate_eval_set != pushed_eval_set:
        mismatch = (f"evaluated on other utterances of split {candidate.split!r} than {name} "
                    f"({candidate.num_utterances} vs {pushed.num_utterances} utterances, different ids or "
                    "references), so the WERs are not comparable")
    elif _levels(candidate) != _levels(pushed):
        mismatch = f"levels (index, sparsity) {_levels(candidate)} differ from {name}'s {_levels(pushed)}"
    if mismatch is not None:
        if force:
            return Blessing(True, f"forced (--push_force) although {mismatch}", forced=True)
        return Blessing(False, f"{mismatch}; use --push_force to push anyway")
    comparisons = []
    for entry in sorted(candidate.levels, key=lambda e: e.level):
        old = pushed.level(entry.level)
        comparisons.append(LevelComparison(entry.level, entry.sparsity, entry.wer, old.wer,
                                           entry.wer <= old.wer + tolerance + WER_EPSILON))
    worse = [c for c in comparisons if not c.blessed]
    if worse:
        first = worse[0]
        reason = (f"level {first.level} (sparsity {first.sparsity:g}) WER {first.wer:.4f} > {name}: "
                  f"{first.pushed_wer:.4f} + tolerance {tolerance:.4f}")
        if len(worse) > 1:
            reason += f" (and {len(worse) - 1} more level(s))"
        if force:
            return Blessing(True, f"forced (--push_force) although {reason}", tuple(comparisons), forced=True)
        return Blessing(False, reason, tuple(comparisons))
    spread = ", ".join(f"L{c.level} {c.wer:.4f} <= {c.pushed_wer:.4f}" for c in comparisons)
    return Blessing(True, f"every level within tolerance {tolerance:.4f} of {name} ({spread})", tuple(comparisons))


@dataclasses.dataclass(frozen=True)
class PushedVersion:
    """A complete version in the push directory: ``DIR/<version>/`` with its ``push.json``."""

    version: int
    path: AnyPath
    record: Mapping[str, Any]

    def eval_report(self) -> "EvalReport":
        from dsnn_keras.eval_report import EvalReport

        return EvalReport.read(fileio.join(self.path, EVAL_FILE))


def pushed_versions(push_dir: str | os.PathLike) -> list[PushedVersion]:
    """The complete versions in ``push_dir``, oldest first (a missing directory has none).

    A version directory is complete when it holds ``push.json`` (written last, before the rename
    that makes the version visible).

    Raises:
        PushError: ``push_dir`` is not a directory, or a ``push.json`` is not JSON.
    """
    root = fileio.as_path(push_dir)
    if not fileio.exists(root):
        return []
    if not fileio.isdir(root):
        raise PushError(f"--push_dir {root} exists and is not a directory")
    found = []
    for entry_name in fileio.listdir(root):
        entry = fileio.join(root, entry_name)
        record_path = fileio.join(entry, RECORD_FILE)
        if _VERSION.match(entry_name) and fileio.isfile(record_path):
            try:
                record = json.loads(fileio.read_text(record_path))
            except ValueError as error:
                raise PushError(f"{record_path}: not valid JSON ({error})") from None
            found.append(PushedVersion(int(entry_name), entry, record))
    return sorted(found, key=lambda v: v.version)


def push_dir_fingerprint(push_dir: str | os.PathLike) -> str:
    """SHA-256 of the push directory's versions (number and model SHA-256): the push step's input."""
    listing = [(v.version, v.record.get("model_sha256")) for v in pushed_versions(push_dir)]
    return hashlib.sha256(json.dumps(listing).encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class PushDecision:
    """What the push step did and why.

    Args:
        status: ``pushed`` (a new version), ``not_pushed`` (not blessed) or ``already_pushed``
            (the same model file is a pushed version).
        version: The new version, the existing version with the same model, or None.
        reason: One line, e.g. ``pushed version 3: every level within tolerance ...`` or
            ``not pushed: level 3 (sparsity 0.9) WER 0.3100 > pushed version 2: 0.2900 + tolerance 0.0000``.
        push_dir: The push directory.
        compared_to: The pushed version compared against, or None.
        tolerance: The WER tolerance (absolute fraction).
        forced: ``--push_force`` made the push.
        model_sha256: SHA-256 of the candidate model file.
        comparisons: Per-level WERs against ``compared_to``.
    """

    status: str
    version: Optional[int]
    reason: str
    push_dir: str
    compared_to: Optional[int]
    tolerance: float
    forced: bool
    model_sha256: str
    comparisons: tuple[LevelComparison, ...] = ()

    @property
    def pushed(self) -> bool:
        return self.status == "pushed"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["comparisons"] = [c.to_dict() for c in self.comparisons]
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PushDecision":
        values = dict(values)
        values["comparisons"] = tuple(LevelComparison(**c) for c in values.get("comparisons", ()))
        return cls(**values)


@contextlib.contextmanager
def _push_lock(push_dir: AnyPath, wait: float) -> Iterator[None]:
    """`exclusive_lock` on the push directory, retried until ``wait`` seconds have passed."""
    from dsnn_keras.paths import LockedError, exclusive_lock

    deadline = time.monotonic() + wait
    while True:
        entered = False
        try:
            with exclusive_lock(push_dir, LOCK_FILE, holder="push"):
                entered = True
                yield
            return
        except LockedError as error:
            if entered:
                raise
            if time.monotonic() >= deadline:
                raise PushError(f"{error} (waited {wait:.0f} s)") from None
            time.sleep(0.2)


def push_model(push_dir: str | os.PathLike, model: str | os.PathLike, eval_json: str | os.PathLike, *,
               card: Callable[[int, str], str], tolerance: float = 0.0, force: bool = False,
               eval_set: Optional[str] = None, extra: Optional[Mapping[str, Any]] = None,
               lock_wait: float = LOCK_WAIT_SECONDS) -> PushDecision:
    """Pushes ``model`` (with ``eval_json`` and a model card) as the next version if it is blessed.

    Args:
        push_dir: The push directory (created if missing).
        model: The ``.tflite`` file to push.
        eval_json: Its evaluation (``dsnn-eval``'s ``eval.json``).
        card: ``card(version, reason)`` returns the Markdown model card of the version being
            written (``reason``: why it is pushed).
        tolerance: Per-level WER tolerance, absolute fraction (`bless`). Defaults to 0.0.
        force: Push even if not blessed (`bless`). Defaults to False.
        eval_set: `eval_set_fingerprint` of the evaluation, recorded and compared. Defaults to None.
        extra: More JSON-serialisable facts for ``push.json`` (e.g. the job's config). Defaults to none.
        lock_wait: Seconds to wait for another push to finish. Defaults to `LOCK_WAIT_SECONDS`.

    Returns:
        A `PushDecision` (also for a model that is not pushed: that is not an error).

    Raises:
        PushError: the push directory cannot be used or is locked for longer than ``lock_wait``.
        EvalReportError: ``eval_json`` or a pushed version's ``eval.json`` does not match the schema.
        OSError: copying failed (no version is visible then).
    """
    from dsnn_keras.eval_report import EvalReport

    tolerance = check_tolerance(tolerance)
    root = fileio.as_path(push_dir)
    if fileio.isfile(root):
        raise PushError(f"--push_dir {root} exists and is not a directory")
    candidate = EvalReport.read(eval_json)
    digest = sha256_file(model)
    with _push_lock(root, lock_wait):
        fileio.makedirs(root)   # the lock made it locally; a remote one is not locked
        # Holding the lock: any staging directory is a dead push's.
        for leftover in fileio.listdir(root):
            if leftover.startswith(STAGING_PREFIX):
                fileio.rmtree(fileio.join(root, leftover))
        versions = pushed_versions(root)

        def decision(status, version, reason, compared_to=None, blessing=None):
            return PushDecision(status, version, reason, str(root), compared_to, tolerance,
                                bool(blessing and blessing.forced), digest,
                                blessing.comparisons if blessing else ())

        same = next((v for v in versions if v.record.get("model_sha256") == digest), None)
        if same is not None:
            return decision("already_pushed", same.version,
                            f"not pushed: this model.tflite (sha256 {digest[:12]}) is already version {same.version}")
        latest = versions[-1] if versions else None
        blessing = bless(candidate, None if latest is None else latest.eval_report(), tolerance=tolerance,
                         force=force, pushed_version=None if latest is None else latest.version,
                         candidate_eval_set=eval_set,
                         pushed_eval_set=None if latest is None else latest.record.get("eval", {}).get("eval_set_sha256"))
        compared = None if latest is None else latest.version
        if not blessing.blessed:
            return decision("not_pushed", None, f"not pushed: {blessing.reason}", compared, blessing)
        # A remote version half moved into place (no push.json: not a version yet) still takes its number.
        taken = [int(entry) for entry in fileio.listdir(root) if _VERSION.match(entry)]
        version = max(taken, default=0) + 1
        reason = f"pushed version {version}: {blessing.reason}" + (f" in {root}" if latest is None else "")
        staging = fileio.join(root, f"{STAGING_PREFIX}{version}-{os.getpid()}")
        if fileio.is_local(staging):
            staging.mkdir()
        else:
            fileio.makedirs(staging)
        try:
            fileio.copy(model, fileio.join(staging, MODEL_FILE))
            fileio.copy(eval_json, fileio.join(staging, EVAL_FILE))
            fileio.atomic_write(fileio.join(staging, CARD_FILE), card(version, blessing.reason))
            record = {"format_version": FORMAT_VERSION, "version": version,
                      "pushed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "model_sha256": digest, "model_size_bytes": fileio.file_size(fileio.join(staging, MODEL_FILE)),
                      "files": [MODEL_FILE, EVAL_FILE, CARD_FILE],
                      "eval": {"split": candidate.split, "num_utterances": candidate.num_utterances,
                               "eval_set_sha256": eval_set,
                               "levels": [{"level": e.level, "sparsity": e.sparsity, "wer": e.wer, "cer": e.cer}
                                          for e in candidate.levels]},
                      "blessing": {"reason": blessing.reason, "compared_to": compared, "tolerance": tolerance,
                                   "forced": blessing.forced,
                                   "comparisons": [c.to_dict() for c in blessing.comparisons]},
                      **dict(extra or {})}
            fileio.atomic_write(fileio.join(staging, RECORD_FILE), json.dumps(record, indent=1) + "\n")
            if fileio.is_local(staging):
                for path in staging.iterdir():   # on disk before the version becomes visible
                    with open(path, "rb") as stream:
                        os.fsync(stream.fileno())
                os.rename(staging, root / str(version))   # fails if the name exists: never over a version
            else:
                # No directory rename on object stores: files one by one, push.json (what makes the
                # version count) last. Remote push directories are not locked (see `_push_lock`).
                fileio.move_tree(staging, fileio.join(root, str(version)), last=RECORD_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                fileio.rmtree(staging)
            raise
        return decision("pushed", version, reason, compared, blessing)


def _fmt(value: Optional[float], pattern: str = ".4f") -> str:
    return "–" if value is None else format(value, pattern)


def model_card(version: int, *, report: "EvalReport", model_path: str | os.PathLike,
               metadata: Optional[Mapping[str, Any]] = None, config: Optional[Mapping[str, Any]] = None,
               data: Optional[Mapping[str, Any]] = None, blessing: Optional[str] = None,
               warm_start: Optional[Mapping[str, Any]] = None, latency: Optional[Mapping[int, float]] = None,
               versions: Optional[Mapping[str, Optional[str]]] = None,
               source: Optional[Mapping[str, Any]] = None) -> str:
    """The Markdown model card of a pushed version.

    Args:
        version: The version number.
        report: The evaluation (per-level WER/CER, split, utterances).
        model_path: The ``.tflite`` file (its size and SHA-256 are listed).
        metadata: The file's ``dsnn`` metadata as a dict (design, quantize, levels with nonzero weights).
        config: The training config (``config.yaml`` as a dict).
        data: The prepared dataset's ``dataset.json`` (splits with utterances and hours).
        blessing: Why it was pushed.
        warm_start: ``RUN_DIR/warm_start.json`` of a warm-started run.
        latency: Level -> median ms per utterance (one thread), if benchmarked.
        versions: Package versions.
        source: Where it came from (job directory, corpus, config file, overrides).

    Returns:
        The Markdown text.
    """
    path = fileio.as_path(model_path)
    meta_levels = {int(e["level"]): e for e in (metadata or {}).get("levels", [])}
    lines = [f"# Model card: version {version}", "",
             f"- Date (UTC): {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}",
             f"- File: `{MODEL_FILE}`, {fileio.file_size(path):,} bytes, sha256 `{sha256_file(path)}`"]
    if metadata:
        lines.append(f"- Export: design `{metadata.get('design')}`, quantize `{metadata.get('quantize')}`; "
                     "inputs `audio` (float32 16 kHz mono, -1..1) and `sparsity_level` (int32 level index)")
    if blessing:
        lines.append(f"- Pushed because: {blessing}")
    if source:
        lines += [f"- {key.replace('_', ' ').capitalize()}: `{value}`" for key, value in source.items()]
    if warm_start:
        lines.append(f"- Warm start: from `{warm_start.get('run_dir')}` (checkpoint step {warm_start.get('restored_step')}; "
                     "masks restored and frozen, optimizer and step counter fresh)")
    lines += ["", f"## Levels: WER and CER on `{report.split}` ({report.num_utterances} utterances, Keras "
              "model, greedy CTC, no LM)", ""]
    header = "| level | sparsity | nonzero weights | WER % | CER % |" + (" latency ms |" if latency else "")
    lines += [header, "|---:|---:|---:|---:|---:|" + ("---:|" if latency else "")]
    for entry in sorted(report.levels, key=lambda e: e.level):
        meta = meta_levels.get(entry.level, {})
        nonzero = meta.get("nonzero_weights")
        row = (f"| {entry.level} | {entry.sparsity:.2f} | {'–' if nonzero is None else f'{nonzero:,}'} | "
               f"{100 * entry.wer:.2f} | {100 * entry.cer:.2f} |")
        if latency:
            row += f" {_fmt(latency.get(entry.level), '.2f')} |"
        lines.append(row)
    if config:
        model, pruning, training = config.get("model", {}), config.get("pruning", {}), config.get("training", {})
        lines += ["", "## Training config", "",
                  f"- Model: {json.dumps(model, sort_keys=True)}",
                  f"- Pruning: levels {pruning.get('levels')}, granularity {pruning.get('granularity')}, "
                  f"ramp steps {pruning.get('begin_step')}..{pruning.get('end_step')}",
                  f"- Training: mode {training.get('mode')}, {training.get('total_steps')} steps, "
                  f"learning rate {training.get('learning_rate')}, seed {training.get('seed')}"]
    if data:
        lines += ["", "## Data", ""]
        for split, info in (data.get("splits") or {}).items():
            lines.append(f"- `{split}`: {info.get('num_utterances')} utterances, "
                         f"{_fmt(info.get('hours'), '.3f')} h")
        tokenizer = data.get("tokenizer") or {}
        lines.append(f"- Tokenizer: {tokenizer.get('model_type')}, {tokenizer.get('vocab_size')} pieces")
    if versions:
        lines += ["", "## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items())]
    return "\n".join(lines) + "\n"
