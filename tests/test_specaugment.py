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
