"""Warm start: begin a new run from a finished run's weights and nested pruning masks.

The scheduled "retrain on new data" case: ``dsnn-train --warm_start OLD_RUN`` (and ``dsnn-job
--warm_start``) builds the new run's model, then restores into it, from ``OLD_RUN``'s newest
checkpoint that restores, every model variable: the weights and the wrappers' level codes (the
nested masks of every level). The optimizer (Adam moments), the step counter, the data position
and the learning-rate schedule start fresh (step 0, warm-up included).

The restored masks are kept for the whole new run: the source run's pruning ramp already chose
them, and re-running a ramp from step 0 would first make every level dense again. So a warm-started
run never recomputes masks (its ``pruning.begin_step``/``end_step``/``frequency`` are not used);
every level is fine-tuned jointly on the new data with the source's masks. The architecture must
match: the ``model`` and ``features`` config sections, the levels, the pruning granularity,
block size and pruned layers, and the tokenizer's pieces (token ids are output units); a mismatch
is a `WarmStartError` naming both run directories and each differing key. The new dataset's CMVN
statistics are used (they are constants of the model, not weights).

The source is recorded in ``RUN_DIR/warm_start.json`` (`WARM_START_FILE`); a run directory is
resumed only with the same ``--warm_start`` it was started with.

Example:
    >>> source = check_warm_start("runs/an4_v1", config, dataset)     # doctest: +SKIP
    >>> restore_warm_start(trainer.model, source)                      # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import TYPE_CHECKING, Any, Callable, Optional

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError

if TYPE_CHECKING:
    from dsnn_keras.config import Config
    from dsnn_keras.dataset import PreparedDataset

WARM_START_FILE = "warm_start.json"
FORMAT_VERSION = 1


class WarmStartError(DsnnError, ValueError):
    """A ``--warm_start`` run directory cannot be used (missing, no checkpoint, another architecture)."""


@dataclasses.dataclass(frozen=True)
class WarmStartSource:
    """A checked warm-start source.

    Args:
        run_dir: The source run directory (resolved).
        checkpoint: Prefix of its newest listed checkpoint (``checkpoints/ckpt-<step>``).
        step: That checkpoint's training step.
        fingerprint: SHA-256 of the run directory path, the step and the checkpoint's ``.index``
            file (which holds every tensor's checksum): changes when the source is trained further.
    """

    run_dir: fileio.AnyPath        # a URL string for a remote (gs://) run
    checkpoint: fileio.AnyPath
    step: int
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "checkpoint": str(self.checkpoint), "step": self.step,
                "fingerprint": self.fingerprint}


def _resolved(path: str | os.PathLike) -> fileio.AnyPath:
    """Local: absolute, symlinks followed. Remote (``gs://...``): the URL (without a trailing ``/``)."""
    if not fileio.is_local(path):
        return os.fspath(path).rstrip("/")
    return pathlib.Path(os.path.expanduser(os.fspath(path))).resolve(strict=False)


def _architecture(config: "Config") -> dict[str, Any]:
    """What the model's variables (and their shapes) depend on, besides the tokenizer."""
    values = config.to_dict()
    p = config.pruning
    return {"model": values["model"], "features": values["features"],
            "levels": list(config.effective_levels), "pruning.granularity": p.effective_granularity,
            "pruning.block_size": list(p.block_size),
            "pruning.prune_layers": None if p.prune_layers is None else list(p.prune_layers)}


def _differences(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [f"{prefix}: {a!r} (warm start) vs {b!r} (this run)"]


def source_fingerprint(run_dir: str | os.PathLike) -> Optional[str]:
    """`WarmStartSource.fingerprint` of a run directory's newest listed checkpoint; None if it has none.

    Cheap (reads one ``.index`` file); the job uses it as the training step's input.
    """
    from dsnn_keras.run_dir import list_checkpoints

    root = _resolved(run_dir)
    found = list_checkpoints(fileio.join(root, "checkpoints"))
    if not found:
        return None
    step, prefix = found[0]
    digest = hashlib.sha256()
    digest.update(json.dumps({"run_dir": str(root), "step": step}).encode())
    digest.update(fileio.read_bytes(f"{prefix}.index"))
    return digest.hexdigest()


def check_warm_start(source: str | os.PathLike, config: "Config", dataset: "PreparedDataset") -> WarmStartSource:
    """Checks that ``source`` is a trained run whose model matches ``config`` and ``dataset``.

    Reads files only (no model is built): the source's ``config.yaml``, ``tokenizer.model`` and
    checkpoint listing.

    Args:
        source: The ``--warm_start`` run directory.
        config: The new run's config.
        dataset: The new run's prepared dataset (its tokenizer must have the source's pieces).

    Returns:
        A `WarmStartSource`.

    Raises:
        WarmStartError: naming ``source`` and what is missing or each differing key.
    """
    from dsnn_keras.config import ConfigError, load_config
    from dsnn_keras.run_dir import list_checkpoints

    root = _resolved(source)
    where = f"--warm_start {source}"
    if not fileio.isdir(root):
        raise WarmStartError(f"{where}: no such run directory")
    for name in ("config.yaml", "tokenizer.model"):
        if not fileio.isfile(fileio.join(root, name)):
            raise WarmStartError(f"{where}: missing {name}; is this a run directory written by dsnn-train?")
    found = list_checkpoints(fileio.join(root, "checkpoints"))
    if not found:
        raise WarmStartError(f"{where}: no checkpoint in {fileio.join(root, 'checkpoints')}; train it first")
    try:
        previous = load_config(fileio.join(root, "config.yaml"))
    except ConfigError as error:
        raise WarmStartError(f"{where}: {error}") from None
    diff = _differences(_architecture(previous), _architecture(config), "")
    if diff:
        raise WarmStartError(f"{where}: its model does not match this run's, so its weights cannot be "
                             f"loaded: {'; '.join(diff)}")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=fileio.read_bytes(fileio.join(root, "tokenizer.model")))
    theirs = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    mine = dataset.pieces()
    if theirs != mine:
        first = next((i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b), min(len(theirs), len(mine)))
        detail = (f"{len(theirs)} vs {len(mine)} pieces" if len(theirs) != len(mine) else
                  f"id {first} is {theirs[first]!r} there, {mine[first]!r} here")
        raise WarmStartError(f"{where}: its tokenizer differs from {dataset.tokenizer_path} ({detail}); the "
                             "output units would mean other tokens. Prepare the new data with the same pieces")
    step, prefix = found[0]
    return WarmStartSource(run_dir=root, checkpoint=prefix, step=step, fingerprint=source_fingerprint(root))


def restore_warm_start(model, source: WarmStartSource,
                       warn: Optional[Callable[[str], None]] = None) -> tuple[fileio.AnyPath, int]:
    """Restores every variable of ``model`` (weights and level codes) from ``source``'s newest
    checkpoint that restores; the optimizer and step counter in the checkpoint are ignored.

    Args:
        model: The new run's built, nested-wrapped model.
        source: From `check_warm_start`.
        warn: Where a message about a skipped (unreadable) checkpoint goes. Defaults to stderr.

    Returns:
        ``(restored checkpoint prefix, its step)``.

    Raises:
        WarmStartError: no checkpoint of the source restores into ``model``.
    """
    import tensorflow as tf

    from dsnn_keras.run_dir import no_restorable_checkpoint_message, restore_newest

    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoints = fileio.join(source.run_dir, "checkpoints")
    restored, skipped = restore_newest(tf.train.Checkpoint(model=model, step=step), checkpoints,
                                       expect_partial=True, warn=warn)
    if restored is None:
        raise WarmStartError(f"--warm_start {source.run_dir}: "
                             + no_restorable_checkpoint_message(checkpoints, skipped))
    return restored, int(step.numpy())


def read_warm_start(run_dir: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The parsed ``RUN_DIR/warm_start.json``, or None for a run that was not warm-started."""
    path = fileio.join(run_dir, WARM_START_FILE)
    if not fileio.isfile(path):
        return None
    try:
        return json.loads(fileio.read_text(path))
    except ValueError as error:
        raise WarmStartError(f"{path}: not valid JSON ({error})") from None


def write_warm_start(run_dir: str | os.PathLike, source: WarmStartSource, restored: fileio.AnyPath,
                     restored_step: int) -> dict[str, Any]:
    """Writes ``RUN_DIR/warm_start.json`` (temp file, then rename) and returns what it holds."""
    record = {"format_version": FORMAT_VERSION, **source.to_dict(), "restored_checkpoint": str(restored),
              "restored_step": restored_step, "masks": "restored and frozen",
              "optimizer": "fresh", "step_counter": "fresh (0)"}
    fileio.atomic_write(fileio.join(run_dir, WARM_START_FILE), json.dumps(record, indent=1) + "\n")
    return record


def check_resume(run_dir: str | os.PathLike, warm_start: Optional[str | os.PathLike],
                 has_checkpoints: bool) -> Optional[dict[str, Any]]:
    """Checks that resuming ``run_dir`` uses the ``--warm_start`` it was started with.

    Args:
        run_dir: The run directory being (re)started.
        warm_start: This invocation's ``--warm_start`` (None: none).
        has_checkpoints: Whether ``run_dir`` already has checkpoints of its own.

    Returns:
        The recorded ``warm_start.json`` of a run that resumes from its own checkpoints, else None.

    Raises:
        WarmStartError: the run was started with another (or no) ``--warm_start``.
    """
    recorded = read_warm_start(run_dir)
    if recorded is not None and (warm_start is None or str(_resolved(warm_start)) != recorded["run_dir"]):
        given = "no --warm_start" if warm_start is None else f"--warm_start {_resolved(warm_start)}"
        raise WarmStartError(f"{run_dir}: this run directory was warm-started from {recorded['run_dir']}, "
                             f"but {given} was given; resume with the same --warm_start or use a new --out")
    if recorded is None and warm_start is not None and has_checkpoints:
        raise WarmStartError(f"{run_dir}: this run directory was started without --warm_start and has "
                             f"checkpoints; use a new --out to warm-start from {warm_start}")
    return recorded if has_checkpoints else None
