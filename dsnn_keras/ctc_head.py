"""The CTC head: an optional Dense projection, then the output Dense over the vocabulary and blank.

The model's output is logits ``[batch, frames, vocab_size + 1]``: one class per SentencePiece
token, and the CTC blank last (class ``vocab_size``). The CTC loss (`dsnn_keras.losses`) and the one
greedy CTC decoder (`dsnn_keras.decoding`) read it.

Example:
    >>> logits = build_ctc_head(encoded, model_config, vocab_size=128)   # [batch, frames, 129]
    >>> blank_id(128)
    128
"""
from __future__ import annotations

from typing import Any

import tf_keras as keras

OUTPUT_LAYER = "logits"
PROJECTION_LAYER = "projection"


def blank_id(vocab_size: int) -> int:
    """The CTC blank class: the last one, after the ``vocab_size`` token classes."""
    return int(vocab_size)


def build_ctc_head(x: Any, model_config: Any, vocab_size: int) -> Any:
    """Appends the head to a functional graph.

    Args:
        x: Symbolic encoder output ``[batch, frames, channels]``.
        model_config: `dsnn_keras.config.ModelConfig` (``projection_units``: 0 for no projection).
        vocab_size: SentencePiece vocabulary size.

    Returns:
        Symbolic logits ``[batch, frames, vocab_size + 1]`` from the layer named ``logits``
        (after ``projection``, a relu Dense of ``projection_units``, when that is > 0).
    """
    if model_config.projection_units:
        x = keras.layers.Dense(model_config.projection_units, activation="relu", name=PROJECTION_LAYER)(x)
    return keras.layers.Dense(vocab_size + 1, name=OUTPUT_LAYER)(x)
