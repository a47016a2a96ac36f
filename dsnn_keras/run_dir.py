"""Loading a trained run directory (written by ``dsnn-train``) for evaluation and export.

RUN_DIR holds ``config.yaml`` (resolved config), ``dataset.json`` and ``tokenizer.model`` (copies
from the prepared dataset), ``cmvn.json`` (the CMVN constants built into the model),
``checkpoints/`` (tf.train.CheckpointManager), ``train_log.jsonl``, ``tensorboard/`` and, after
``dsnn-eval``, ``eval.json``.

Example:
    >>> run = load_run("runs/an4_dsnn")
    >>> run.levels, run.blank_id
    ((0.0, 0.5, 0.7, 0.9), 128)
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Optional


class RunDirError(ValueError):
    """A run directory is missing files or has no checkpoint."""


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A trained run restored from its latest checkpoint.

    Attributes:
        model: The nested-wrapped Keras model (weights and level codes from the checkpoint).
        config: The run's `dsnn_keras.config.Config`.
        levels: Sparsity of each level (index = level).
        feature_config: The `FeatureConfig` the model expects.
        tokenizer_path: The run's copy of ``tokenizer.model``.
        pieces: SentencePiece piece per token id.
        blank_id: The CTC blank (= vocab_size, the last output).
        eval_results: Parsed ``eval.json``, or None before evaluation.
        run_dir: The directory.
        step: Training step of the restored checkpoint.
        checkpoint: Path prefix of the restored checkpoint.
    """

    model: Any
    config: Any
    levels: tuple[float, ...]
    feature_config: Any
    tokenizer_path: pathlib.Path
    pieces: list[str]
    blank_id: int
    eval_results: Optional[dict]
    run_dir: pathlib.Path
    step: int
    checkpoint: str


def load_run(run_dir) -> TrainedRun:
    """Rebuilds the model from RUN_DIR's config and restores the latest checkpoint.

    Args:
        run_dir: A directory written by ``dsnn-train``.

    Returns:
        A `TrainedRun`.

    Raises:
        RunDirError: naming the missing file or the empty checkpoint directory.
    """
    import sentencepiece as spm
    import tensorflow as tf

    from dsnn_keras.config import load_config
    from dsnn_keras.frontend import FeatureConfig
    from dsnn_keras.model import build_pruned_model

    root = pathlib.Path(run_dir)
    for name in ("config.yaml", "dataset.json", "tokenizer.model", "cmvn.json"):
        if not (root / name).is_file():
            raise RunDirError(f"{root}: missing {name}; is this a run directory written by dsnn-train?")
    config = load_config(root / "config.yaml")
    meta = json.loads((root / "dataset.json").read_text())
    cmvn = json.loads((root / "cmvn.json").read_text())
    feature_config = FeatureConfig.from_dict(meta["feature_config"])
    vocab_size = int(meta["tokenizer"]["vocab_size"])
    latest = tf.train.latest_checkpoint(str(root / "checkpoints"))
    if latest is None:
        raise RunDirError(f"{root / 'checkpoints'}: no checkpoint found; train first with dsnn-train")
    model = build_pruned_model(config, feature_config, vocab_size, cmvn["mean"], cmvn["std"])
    step = tf.Variable(0, dtype=tf.int64, trainable=False)
    tf.train.Checkpoint(model=model, step=step).restore(latest).expect_partial().assert_existing_objects_matched()
    sp = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))
    eval_path = root / "eval.json"
    return TrainedRun(
        model=model, config=config, levels=tuple(config.effective_levels), feature_config=feature_config,
        tokenizer_path=root / "tokenizer.model",
        pieces=[sp.id_to_piece(i) for i in range(sp.get_piece_size())], blank_id=vocab_size,
        eval_results=json.loads(eval_path.read_text()) if eval_path.is_file() else None,
        run_dir=root, step=int(step.numpy()), checkpoint=latest)
