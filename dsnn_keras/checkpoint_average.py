"""Checkpoint averaging: one model from the mean weights of a run's last checkpoints.

A finished run keeps its last ``training.keep_checkpoints`` checkpoints (one every
``training.checkpoint_every`` steps). Averaging the trainable weights of the last few of them, taken
after the masks stopped changing, is a free accuracy lever (no extra training step): the average
sits nearer the middle of the minimum the learning rate's tail wanders around (stochastic weight
averaging, Izmailov et al. 2018; checkpoint averaging in NMT/ASR recipes).

``average_checkpoints(RUN_DIR, OUT, last=K)`` writes ``OUT``, a run directory every reader of a run
accepts (`dsnn-eval`, `dsnn-export`, `load_run`): the source's ``config.yaml``, ``dataset.json``,
``tokenizer.model`` and ``cmvn.json``, one checkpoint ``checkpoints/ckpt-<newest step>`` holding the
model (the mean of the K checkpoints' trainable weights; every other variable, the nested masks
among them, from the newest) and ``averaged.json`` (what was averaged). It holds no optimizer
state: it is not a run to train on (`dsnn-train` refuses it, naming the source to resume instead).

The nested masks of every averaged checkpoint must be the newest's: a window reaching back into
the pruning ramp (before ``pruning.end_step``) averages weights under different masks, and is
refused with an error naming the first checkpoint whose masks differ.

The source's tuned beam decoder (``decoder.json`` and ``lm/``, written by ``dsnn-eval --tune``) is
copied when present: it was tuned on the newest checkpoint's model, so re-tune the average for its
own best settings.

The source run is only read. ``OUT`` is written complete beside its final place and then moved
there; an ``OUT`` that already holds an average (its ``averaged.json``), or the files of an
interrupted one, is replaced only then; any other existing non-empty ``OUT`` is refused. On
``gs://`` (no directory rename) the files are moved in one by one, ``averaged.json`` last.

Example:
    >>> info = average_checkpoints("runs/an4/job/run", "runs/an4/avg", last=4)   # doctest: +SKIP
    >>> info["steps"]                                                            # doctest: +SKIP
    [4400, 4300, 4200, 4100]
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from typing import Any, Optional

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError, DsnnUsageError

AVERAGED_FILE = "averaged.json"
FORMAT_VERSION = 1
RUN_FILES = ("config.yaml", "dataset.json", "tokenizer.model", "cmvn.json")
OPTIONAL_FILES = ("decoder.json",)   # the source's tuned beam decoder (dsnn-eval --tune), and its lm/
OPTIONAL_DIRS = ("lm",)


class CheckpointAverageError(DsnnError, ValueError):
    """The checkpoints cannot be averaged (too few, masks differ, output in the way)."""


def read_averaged(run_dir: fileio.PathLike) -> Optional[dict[str, Any]]:
    """``RUN_DIR/averaged.json`` as a dict, or None for a run directory that is not an average."""
    path = fileio.join(run_dir, AVERAGED_FILE)
    if not fileio.isfile(path):
        return None
    try:
        record = json.loads(fileio.read_text(path))
    except ValueError as error:
        raise CheckpointAverageError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise CheckpointAverageError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def _is_mask(variable) -> bool:
    return "level_code" in variable.name


def average_checkpoints(run_dir: fileio.PathLike, out: fileio.PathLike, last: int = 2) -> dict[str, Any]:
    """Writes the run directory ``out`` whose model is the mean of ``run_dir``'s last ``last`` checkpoints.

    Args:
        run_dir: A run directory written by ``dsnn-train`` (local or ``gs://``).
        out: The new run directory (local or ``gs://``); must not be ``run_dir`` or inside it.
        last: How many of the newest checkpoints to average (>= 1; 1 copies the newest).

    Returns:
        The ``averaged.json`` record: ``source``, ``checkpoints`` (names, newest first), ``steps``,
        ``step`` (the newest's, the averaged checkpoint's number), ``created``.

    Raises:
        DsnnUsageError: ``last`` < 1, or ``out`` overlaps ``run_dir``.
        RunDirError: ``run_dir`` is not a run directory or has no checkpoint.
        CheckpointAverageError: fewer than ``last`` checkpoints, masks that differ, an unreadable
            checkpoint, or an existing ``out`` that is not an earlier average.
    """
    import numpy as np
    import tensorflow as tf

    from dsnn_keras.run_dir import list_checkpoints, load_run

    if last < 1:
        raise DsnnUsageError(f"last must be >= 1, got {last}")
    source, target = fileio.as_path(run_dir), fileio.as_path(out)
    _check_apart(source, target)
    _check_replaceable(target)
    checkpoints_dir = fileio.join(source, "checkpoints")
    run = load_run(source)
    available = list_checkpoints(checkpoints_dir)
    chosen = available[:last]
    if len(chosen) < last:
        raise CheckpointAverageError(
            f"{checkpoints_dir}: {len(available)} checkpoint(s) ({', '.join(fileio.name(p) for _, p in available)}), "
            f"cannot average the last {last}; train with a larger training.keep_checkpoints")
    if fileio.name(chosen[0][1]) != fileio.name(run.checkpoint):
        raise CheckpointAverageError(f"{chosen[0][1]}: the newest checkpoint cannot be restored "
                                     f"(the run restores {run.checkpoint}); it cannot be averaged")
    model = run.model
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, step=step)
    masks = [v for v in model.variables if _is_mask(v)]
    totals: list[np.ndarray] = []
    newest_masks: list[np.ndarray] = []
    for index, (number, prefix) in enumerate(chosen):
        try:
            checkpoint.restore(str(prefix)).expect_partial().assert_existing_objects_matched()
        except Exception as error:  # noqa: BLE001 - any failure to read one checkpoint is reported as such
            raise CheckpointAverageError(f"{prefix}: cannot be restored ({' '.join(str(error).split())[:200]})") from None
        if index == 0:
            newest_masks = [m.numpy() for m in masks]
            totals = [v.numpy().astype(np.float64) for v in model.trainable_variables]
            continue
        for mask, expected in zip(masks, newest_masks):
            if not np.array_equal(mask.numpy(), expected):
                raise CheckpointAverageError(
                    f"{prefix}: its nested masks differ from {fileio.name(chosen[0][1])}'s ({mask.name}): the window "
                    f"reaches back into the pruning ramp (pruning.end_step {run.config.pruning.end_step}); "
                    f"average fewer checkpoints")
        for total, variable in zip(totals, model.trainable_variables):
            total += variable.numpy()
    checkpoint.restore(str(chosen[0][1])).expect_partial().assert_existing_objects_matched()
    for total, variable in zip(totals, model.trainable_variables):
        variable.assign((total / len(chosen)).astype(variable.dtype.as_numpy_dtype))
    record = {"format_version": FORMAT_VERSION,
              "source": os.path.abspath(source) if fileio.is_local(source) else str(source),
              "checkpoints": [fileio.name(prefix) for _, prefix in chosen],
              "steps": [number for number, _ in chosen], "step": chosen[0][0],
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_run(source, target, checkpoint, record)
    return record


def _check_apart(source: fileio.AnyPath, target: fileio.AnyPath) -> None:
    if fileio.is_local(source) and fileio.is_local(target):
        a, b = os.path.realpath(source), os.path.realpath(target)
        overlap = a == b or b.startswith(a + os.sep) or a.startswith(b + os.sep)
    else:
        a, b = str(source).rstrip("/"), str(target).rstrip("/")
        overlap = a == b or b.startswith(a + "/") or a.startswith(b + "/")
    if overlap:
        raise DsnnUsageError(f"--out {target} overlaps the source run {source}; write the average elsewhere")


def _check_replaceable(target: fileio.AnyPath) -> None:
    if not fileio.exists(target):
        return
    if not fileio.isdir(target):
        raise CheckpointAverageError(f"{target}: exists and is not a directory; not replaced")
    entries = {entry.rstrip("/") for entry in fileio.listdir(target)}
    ours = set(RUN_FILES) | set(OPTIONAL_FILES) | set(OPTIONAL_DIRS) | {"checkpoints", AVERAGED_FILE}
    if entries and not fileio.isfile(fileio.join(target, AVERAGED_FILE)) and not entries <= ours:
        raise CheckpointAverageError(f"{target}: exists, is not empty and holds no {AVERAGED_FILE} (not an earlier "
                                     "average); nothing was written. Choose another --out")


def _write_run(source: fileio.AnyPath, target: fileio.AnyPath, checkpoint, record: dict[str, Any]) -> None:
    import tensorflow as tf

    try:
        _stage_and_move(source, target, checkpoint, record)
    except (OSError, tf.errors.OpError) as error:   # a full disk, a read-only parent, a remote permission
        raise CheckpointAverageError(f"{target}: cannot write the average ({' '.join(str(error).split())[:200]})") from None


def _stage_and_move(source: fileio.AnyPath, target: fileio.AnyPath, checkpoint, record: dict[str, Any]) -> None:
    """Writes the run into a staging directory, then moves it to ``target``.

    Locally the staging directory is ``target``'s sibling and the move is one rename (an earlier
    average is renamed aside first, then removed). Remotely (no directory rename) the staged files
    are copied to a sibling prefix and moved in one by one with ``averaged.json`` last, so a
    directory without it is an incomplete average, which the next run replaces.
    """
    from dsnn_keras.run_dir import CHECKPOINT_NAME

    local = fileio.is_local(target)
    if local:
        parent = os.path.dirname(os.path.abspath(target))
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(target))}.", dir=parent)
        os.chmod(staging, 0o777 & ~fileio.current_umask())   # mkdtemp's 0700 would become the run directory's mode
    else:
        staging = tempfile.mkdtemp(prefix="dsnn-average-")
    try:
        for name in RUN_FILES:
            fileio.copy(fileio.join(source, name), os.path.join(staging, name))
        for name in OPTIONAL_FILES:
            if fileio.isfile(fileio.join(source, name)):
                fileio.copy(fileio.join(source, name), os.path.join(staging, name))
        for name in OPTIONAL_DIRS:
            if fileio.isdir(fileio.join(source, name)):
                fileio.copy_tree(fileio.join(source, name), os.path.join(staging, name))
        os.makedirs(os.path.join(staging, "checkpoints"))
        checkpoint.write(os.path.join(staging, "checkpoints", f"{CHECKPOINT_NAME}-{record['step']}"))
        with open(os.path.join(staging, AVERAGED_FILE), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
            handle.write("\n")
        if not local:
            remote_staging = f"{str(target).rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
            fileio.copy_tree(staging, remote_staging)
            if fileio.exists(target):
                fileio.rmtree(target)
            fileio.move_tree(remote_staging, target, last=AVERAGED_FILE)
            return
        if os.path.isdir(target):
            old = f"{os.path.abspath(target)}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)          # an earlier average or an empty directory (checked above)
            os.rename(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)

