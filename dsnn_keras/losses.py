"""The training losses: CTC and in-place distillation from the densest level.

Both return a sum over the batch (the trainer divides by the global batch size across replicas), so
they are plain functions of tensors, usable inside a ``tf.function`` and under ``tf.distribute``.

Example:
    >>> total = ctc_loss(labels, logits, label_lengths, logit_lengths, blank_id) / global_batch
    >>> teacher = distillation_targets(dense_logits)
    >>> total += weight * distillation_loss(level_logits, teacher, logit_lengths) / global_batch
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

KL_EPSILON = 1e-8   # keeps log(teacher) finite where the teacher's probability is 0


def ctc_loss(labels: Any, logits: Any, label_lengths: Any, logit_lengths: Any, blank_id: int) -> Any:
    """CTC negative log-likelihood summed over the batch (``tf.nn.ctc_loss``, batch-major logits).

    Args:
        labels: int32 ``[batch, max_labels]`` token ids (padding beyond ``label_lengths`` ignored).
        logits: float32 ``[batch, frames, classes]`` unnormalised scores.
        label_lengths: int32 ``[batch]`` tokens per utterance.
        logit_lengths: int32 ``[batch]`` valid frames per utterance (`dsnn_keras.model.output_lengths`).
        blank_id: The blank class (the last one in this project).

    Returns:
        A float32 scalar: the sum of the per-utterance losses.
    """
    per_utterance = tf.nn.ctc_loss(labels=labels, logits=logits, label_length=label_lengths,
                                   logit_length=logit_lengths, logits_time_major=False,
                                   blank_index=blank_id)
    return tf.reduce_sum(per_utterance)


def distillation_targets(teacher_logits: Any) -> Any:
    """The teacher's posteriors, without gradient: ``stop_gradient(softmax(teacher_logits))``.

    Computed once per step from the densest level and shared by every other level's
    `distillation_loss`.
    """
    return tf.stop_gradient(tf.nn.softmax(teacher_logits))


def distillation_loss(student_logits: Any, teacher_probs: Any, logit_lengths: Any) -> Any:
    """KL(teacher ‖ student) per frame, summed over the valid frames of the batch.

    ``sum_t mask_t * sum_c p_c (log(p_c + 1e-8) - log_softmax(student)_c)``, where ``p`` is the
    teacher's posteriors and ``mask`` drops the padded frames.

    Args:
        student_logits: float32 ``[batch, frames, classes]``.
        teacher_probs: float32 ``[batch, frames, classes]`` from `distillation_targets`.
        logit_lengths: int32 ``[batch]`` valid frames per utterance.

    Returns:
        A float32 scalar.
    """
    valid = tf.sequence_mask(logit_lengths, tf.shape(student_logits)[1], tf.float32)
    kl = tf.reduce_sum(teacher_probs * (tf.math.log(teacher_probs + KL_EPSILON)
                                        - tf.nn.log_softmax(student_logits)), -1)
    return tf.reduce_sum(kl * valid)
