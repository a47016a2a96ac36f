"""Tests of dsnn_keras.specaugment."""
import numpy as np
import tensorflow as tf

from dsnn_keras.config import SpecAugmentConfig
from dsnn_keras.specaugment import spec_augment


def _batch():
    features = tf.random.stateless_normal([3, 50, 20], seed=[1, 2]) + 10.0
    return features, tf.constant([50, 30, 10])


def test_masks_fill_value_and_stay_inside_valid_frames():
    features, lengths = _batch()
    cfg = SpecAugmentConfig(freq_masks=2, freq_mask_width=4, time_masks=2, time_mask_width=6,
                            time_mask_max_ratio=0.5)
    fill = np.arange(20, dtype=np.float32)
    out = spec_augment(features, lengths, cfg, seed=[0, 1], fill_value=fill).numpy()
    changed = out != features.numpy()
    assert changed.any()
    np.testing.assert_array_equal(out[changed], np.broadcast_to(fill, out.shape)[changed])
    # Frequency masks cover whole columns; time-masked rows lie within each utterance.
    for row, length in enumerate(lengths.numpy()):
        full_rows = np.where(changed[row].all(axis=1))[0]
        assert (full_rows < length).all()
        masked_bins = changed[row][length:].any(axis=0).sum()  # padding: only frequency masks
        assert masked_bins <= 2 * 4


def test_same_seed_same_masks_other_seed_other_masks():
    features, lengths = _batch()
    cfg = SpecAugmentConfig()
    a = spec_augment(features, lengths, cfg, seed=[5, 7]).numpy()
    b = spec_augment(features, lengths, cfg, seed=[5, 7]).numpy()
    c = spec_augment(features, lengths, cfg, seed=[5, 8]).numpy()
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_zero_masks_leave_features_unchanged():
    features, lengths = _batch()
    cfg = SpecAugmentConfig(freq_masks=0, time_masks=0)
    np.testing.assert_array_equal(spec_augment(features, lengths, cfg, seed=[0, 0]).numpy(), features.numpy())


def test_a_replicas_rows_get_the_masks_they_get_in_the_whole_batch():
    features, lengths = _batch()
    cfg = SpecAugmentConfig(freq_mask_width=6, time_mask_width=8, time_mask_max_ratio=0.5)
    whole = spec_augment(features, lengths, cfg, seed=[3, 4]).numpy()
    parts = [spec_augment(features[a:b], lengths[a:b], cfg, seed=[3, 4], rows=tf.range(a, b), num_rows=3).numpy()
             for a, b in ((0, 1), (1, 3))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    # Without the rows, the second part would be masked as rows 0-1 of a batch of 2: other masks.
    assert (spec_augment(features[1:3], lengths[1:3], cfg, seed=[3, 4]).numpy() != whole[1:3]).any()
