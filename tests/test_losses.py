"""The training losses (dsnn_keras.losses): CTC summed over the batch, and the in-place
distillation KL over valid frames; bit-identical to the formulas the trainer used inline."""
import numpy as np
import pytest
import tensorflow as tf

from dsnn_keras.losses import ctc_loss, distillation_loss, distillation_targets

BLANK = 5


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    logits = tf.constant(rng.normal(size=[3, 9, BLANK + 1]).astype(np.float32))
    labels = tf.constant([[1, 2, 2, 0], [4, 0, 0, 0], [3, 1, 0, 2]], tf.int32)
    label_lengths = tf.constant([3, 1, 4], tf.int32)
    logit_lengths = tf.constant([9, 4, 8], tf.int32)
    return logits, labels, label_lengths, logit_lengths


def test_ctc_loss_is_the_batch_sum_of_tf_nn_ctc_loss_bit_for_bit():
    logits, labels, label_lengths, logit_lengths = _batch()
    expected = tf.reduce_sum(tf.nn.ctc_loss(labels=labels, logits=logits, label_length=label_lengths,
                                            logit_length=logit_lengths, logits_time_major=False,
                                            blank_index=BLANK))
    got = ctc_loss(labels, logits, label_lengths, logit_lengths, BLANK)
    assert got.shape == () and got.numpy() == expected.numpy() and np.isfinite(got.numpy())


def test_ctc_loss_ignores_padding_beyond_the_lengths():
    logits, labels, label_lengths, logit_lengths = _batch()
    noisy_labels = tf.where(tf.sequence_mask(label_lengths, 4), labels, 4)
    noisy_logits = tf.where(tf.sequence_mask(logit_lengths, 9)[..., None], logits, 7.0)
    np.testing.assert_allclose(ctc_loss(noisy_labels, noisy_logits, label_lengths, logit_lengths, BLANK),
                               ctc_loss(labels, logits, label_lengths, logit_lengths, BLANK), rtol=1e-6)


def test_distillation_loss_is_the_trainers_formula_bit_for_bit():
    teacher_logits, _, _, lengths = _batch(0)
    student, _, _, _ = _batch(1)
    teacher = tf.stop_gradient(tf.nn.softmax(teacher_logits))
    valid = tf.sequence_mask(lengths, tf.shape(student)[1], tf.float32)
    kl = tf.reduce_sum(teacher * (tf.math.log(teacher + 1e-8) - tf.nn.log_softmax(student)), -1)
    expected = tf.reduce_sum(kl * valid)
    got = distillation_loss(student, distillation_targets(teacher_logits), lengths)
    assert got.numpy() == expected.numpy()


def test_distillation_loss_is_the_kl_divergence_over_valid_frames():
    teacher_logits, _, _, lengths = _batch(0)
    student, _, _, _ = _batch(1)
    p = tf.nn.softmax(teacher_logits).numpy().astype(np.float64)
    q = tf.nn.softmax(student).numpy().astype(np.float64)
    expected = sum((p[b, t] * np.log(p[b, t] / q[b, t])).sum()
                   for b, n in enumerate(lengths.numpy()) for t in range(n))
    got = distillation_loss(student, distillation_targets(teacher_logits), lengths).numpy()
    assert got == pytest.approx(expected, rel=1e-5) and got > 0
    same = distillation_loss(teacher_logits, distillation_targets(teacher_logits), lengths).numpy()
    assert abs(same) < 1e-4


def test_distillation_gradients_reach_the_student_only():
    teacher_logits, _, _, lengths = _batch(0)
    student = tf.Variable(_batch(1)[0])
    teacher = tf.Variable(teacher_logits)
    with tf.GradientTape() as tape:
        loss = distillation_loss(student, distillation_targets(teacher), lengths)
    grad_student, grad_teacher = tape.gradient(loss, [student, teacher])
    assert grad_teacher is None
    grad = grad_student.numpy()
    assert np.abs(grad[0]).max() > 0 and np.abs(grad[1, 4:]).max() == 0   # padded frames: no gradient
