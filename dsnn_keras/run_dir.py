"""Loading a trained run directory (written by ``dsnn-train``) for evaluation and export.

RUN_DIR holds ``config.yaml`` (resolved config), ``dataset.json`` and ``tokenizer.model`` (copies
from the prepared dataset), ``cmvn.json`` (the CMVN constants built into the model),
``checkpoints/`` (tf.train.CheckpointManager), ``train_log.jsonl``, ``tensorboard/`` and, after
``dsnn-eval``, ``eval.json``.

RUN_DIR may be local or a URL `tf.io.gfile` reaches (``gs://...``): every file is read through
`dsnn_keras.fileio`, and the paths below are `pathlib.Path` when local, URL strings when remote.

Checkpoints are found by listing ``checkpoints/ckpt-<step>.index`` files, not by trusting the
``checkpoints/checkpoint`` index file (a garbled index must not hide them), and the newest one that
restores is used: an unreadable one (truncated, corrupt) is skipped with a message naming it and
why (`restore_newest`).

Example:
    >>> run = load_run("runs/an4_dsnn")
    >>> run.levels, run.blank_id
    ((0.0, 0.5, 0.7, 0.9), 128)
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Optional

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError

if TYPE_CHECKING:   # heavy (TensorFlow): for the annotations only
    import tf_keras as keras

    from dsnn_keras.config import Config
    from dsnn_keras.eval_report import EvalReport
    from dsnn_keras.frontend import FeatureConfig

CHECKPOINT_NAME = "ckpt"  # tf.train.CheckpointManager's default prefix: checkpoints/ckpt-<step>
_CHECKPOINT_INDEX = re.compile(r"^" + CHECKPOINT_NAME + r"-(\d+)\.index$")


class RunDirError(DsnnError, ValueError):
    """A run directory is missing files or has no checkpoint."""


def list_checkpoints(directory) -> list[tuple[int, fileio.AnyPath]]:
    """``(step, prefix)`` of every ``ckpt-<step>`` in ``directory``, newest first, found by listing.

    The ``checkpoint`` index file that `tf.train.CheckpointManager` keeps is not read: a garbled or
    stale one must neither hide checkpoints nor point at a missing one. ``directory`` may be remote
    (``gs://...``); the prefixes are then URL strings.
    """
    directory = fileio.as_path(directory)
    if not fileio.isdir(directory):
        return []
    found = []
    for entry in fileio.listdir(directory):
        match = _CHECKPOINT_INDEX.match(entry)
        if match and fileio.isfile(fileio.join(directory, entry)):
            found.append((int(match.group(1)), fileio.join(directory, f"{CHECKPOINT_NAME}-{match.group(1)}")))
    return sorted(found, key=lambda item: item[0], reverse=True)


def _reason(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def restore_newest(checkpoint, directory, expect_partial: bool = False,
                   warn: Optional[Callable[[str], None]] = None) -> tuple[Optional[fileio.AnyPath], list[tuple[fileio.AnyPath, str]]]:
    """Restores the newest checkpoint in ``directory`` that restores completely into ``checkpoint``.

    Checkpoints are tried newest first (`list_checkpoints`); one that cannot be read or does not
    match every object of ``checkpoint`` is skipped, with a message naming it and why.

    Args:
        checkpoint: A `tf.train.Checkpoint` whose objects are already built (so restoring reads
            every value now and a truncated file fails here, not later).
        directory: The checkpoint directory.
        expect_partial: The checkpoint may hold more objects than ``checkpoint`` (e.g. the optimizer).
        warn: Where the skip messages go. Defaults to stderr.

    Returns:
        ``(restored prefix or None, [(skipped prefix, reason), ...])``. None with an empty list
        means there is no checkpoint at all; None with skipped entries means none could be restored.
    """
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    skipped: list[tuple[fileio.AnyPath, str]] = []
    for _, prefix in list_checkpoints(directory):
        try:
            status = checkpoint.restore(str(prefix))
            if expect_partial:
                status = status.expect_partial()
            status.assert_existing_objects_matched()
        except Exception as error:  # noqa: BLE001 - any failure to read a checkpoint means: try an older one
            reason = _reason(error)
            skipped.append((prefix, reason))
            warn(f"warning: skipping checkpoint {prefix}: it cannot be restored ({reason})")
            continue
        return prefix, skipped
    return None, skipped


def no_restorable_checkpoint_message(directory, skipped: list[tuple[fileio.AnyPath, str]]) -> str:
    """The one-line error for a checkpoint directory none of whose checkpoints restores."""
    names = ", ".join(f"{fileio.name(prefix)} ({reason})" for prefix, reason in skipped)
    return (f"{directory}: none of the {len(skipped)} checkpoint(s) can be restored: {names}; they were left "
            "untouched (move them away to start the run over)")


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A trained run restored from its latest checkpoint.

    Attributes:
        model: The nested-wrapped Keras model (weights and level codes from the checkpoint).
        config: The run's `dsnn_keras.config.Config`.
        levels: Sparsity of each level (index = level).
        feature_config: The `FeatureConfig` the model expects.
        tokenizer_path: The run's copy of ``tokenizer.model`` (a URL string for a remote run).
        pieces: SentencePiece piece per token id.
        blank_id: The CTC blank (= vocab_size, the last output).
        eval_results: ``RUN_DIR/eval.json`` as parsed JSON, or None before evaluation (typed:
            `eval_report`).
        run_dir: The directory (`pathlib.Path`, or the URL string of a remote run).
        step: Training step of the restored checkpoint.
        checkpoint: Path prefix of the restored checkpoint.
    """

    model: keras.Model
    config: Config
    levels: tuple[float, ...]
    feature_config: FeatureConfig
    tokenizer_path: fileio.AnyPath
    pieces: list[str]
    blank_id: int
    eval_results: Optional[dict[str, Any]]
    run_dir: fileio.AnyPath
    step: int
    checkpoint: str

    @property
    def eval_report(self) -> Optional[EvalReport]:
        """`eval_results` as an `EvalReport` (None before evaluation).

        Raises:
            EvalReportError: the eval.json does not match the schema (the message names it).
        """
        from dsnn_keras.eval_report import EvalReport

        if self.eval_results is None:
            return None
        return EvalReport.from_dict(self.eval_results, where=str(fileio.join(self.run_dir, "eval.json")))

    @property
    def granularity(self) -> str:
        """The run's mask granularity: "weight", "block" or "unit"."""
        return self.config.pruning.effective_granularity


def _read_cmvn(path: fileio.AnyPath) -> dict:
    try:
        cmvn = json.loads(fileio.read_text(path))
        values = [float(v) for key in ("mean", "std") for v in cmvn[key]]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise RunDirError(f"{path}: cannot read the CMVN statistics ({_reason(error)})") from None
    if not all(math.isfinite(v) for v in values):
        raise RunDirError(f"{path}: non-finite (NaN/Inf) CMVN statistics; this run cannot be used "
                          "(train again on a dataset whose cmvn.json is finite)")
    return cmvn


def load_run(run_dir, warn: Optional[Callable[[str], None]] = None) -> TrainedRun:
    """Rebuilds the model from RUN_DIR's config and restores the newest checkpoint that restores.

    Args:
        run_dir: A directory written by ``dsnn-train`` (local, or ``gs://...``: `dsnn_keras.fileio`).
        warn: Where a message about a skipped (unreadable) checkpoint goes. Defaults to stderr.

    Returns:
        A `TrainedRun`.

    Raises:
        RunDirError: naming the missing file, the empty checkpoint directory, or the checkpoints
            none of which restores.
    """
    import sentencepiece as spm
    import tensorflow as tf

    from dsnn_keras.config import load_config
    from dsnn_keras.frontend import FeatureConfig
    from dsnn_keras.model import build_pruned_model

    root = fileio.as_path(run_dir)
    for name in ("config.yaml", "dataset.json", "tokenizer.model", "cmvn.json"):
        if not fileio.isfile(fileio.join(root, name)):
            raise RunDirError(f"{root}: missing {name}; is this a run directory written by dsnn-train?")
    config = load_config(fileio.join(root, "config.yaml"))
    meta = json.loads(fileio.read_text(fileio.join(root, "dataset.json")))
    cmvn = _read_cmvn(fileio.join(root, "cmvn.json"))
    feature_config = FeatureConfig.from_dict(meta["feature_config"])
    vocab_size = int(meta["tokenizer"]["vocab_size"])
    checkpoints = fileio.join(root, "checkpoints")
    if not list_checkpoints(checkpoints):
        raise RunDirError(f"{checkpoints}: no checkpoint found; train first with dsnn-train")
    model = build_pruned_model(config, feature_config, vocab_size, cmvn["mean"], cmvn["std"])
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    restored, skipped = restore_newest(tf.train.Checkpoint(model=model, step=step), checkpoints,
                                       expect_partial=True, warn=warn)
    if restored is None:
        raise RunDirError(no_restorable_checkpoint_message(checkpoints, skipped))
    latest = str(restored)
    tokenizer_path = fileio.join(root, "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_proto=fileio.read_bytes(tokenizer_path))
    eval_path = fileio.join(root, "eval.json")
    return TrainedRun(
        model=model, config=config, levels=tuple(config.effective_levels), feature_config=feature_config,
        tokenizer_path=tokenizer_path,
        pieces=[sp.id_to_piece(i) for i in range(sp.get_piece_size())], blank_id=vocab_size,
        eval_results=json.loads(fileio.read_text(eval_path)) if fileio.isfile(eval_path) else None,
        run_dir=root, step=int(step.numpy()), checkpoint=latest)
