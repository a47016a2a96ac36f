"""SpecAugment frequency and time masks for training batches (Park et al., 2019, without warping).

Applied by the trainer to raw log-mel batches, never inside the model, so evaluation and export
are unaffected. Masked cells are set to ``fill_value`` (the CMVN mean, i.e. 0 after CMVN).

Randomness is stateless: the masks are a pure function of ``seed`` (the trainer derives it from
the run seed, the step and the replica), so a resumed run draws the same masks it would have.

Example:
    >>> out = spec_augment(features, num_frames, SpecAugmentConfig(), seed=[0, 17], fill_value=cmvn_mean)
"""
from __future__ import annotations

import tensorflow as tf


def _bands(seed, batch, count: int, max_width, extent, size):
    """A [batch, size] bool mask: ``count`` random bands per row, width <= max_width, inside extent."""
    max_width = tf.cast(max_width, tf.float32)
    extent = tf.cast(extent, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    widths = tf.floor(tf.random.stateless_uniform([batch, count], seeds[0]) * (max_width[:, None] + 1.0))
    widths = tf.minimum(widths, extent[:, None])
    starts = tf.floor(tf.random.stateless_uniform([batch, count], seeds[1])
                      * (extent[:, None] - widths + 1.0))
    pos = tf.cast(tf.range(size), tf.float32)[None, None, :]
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return tf.reduce_any(inside, axis=1)


def spec_augment(features: tf.Tensor, num_frames: tf.Tensor, config, seed,
                 fill_value=0.0) -> tf.Tensor:
    """Applies random frequency and time masks to a padded batch.

    Args:
        features: float32 ``[batch, frames, bins]``.
        num_frames: int ``[batch]`` valid frames per row (time masks stay inside them).
        config: `dsnn_keras.config.SpecAugmentConfig`.
        seed: int ``[2]`` tensor or list: the stateless random seed.
        fill_value: Scalar or ``[bins]`` value written into masked cells. Defaults to 0.

    Returns:
        The masked features, same shape and dtype.
    """
    shape = tf.shape(features)
    batch, frames, bins = shape[0], shape[1], shape[2]
    fill = tf.broadcast_to(tf.cast(fill_value, features.dtype), tf.shape(features))
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    mask = tf.zeros([batch, frames, bins], tf.bool)
    if config.freq_masks > 0 and config.freq_mask_width > 0:
        f = _bands(seeds[0], batch, config.freq_masks, tf.fill([batch], config.freq_mask_width),
                   tf.fill([batch], bins), bins)
        mask |= f[:, None, :]
    if config.time_masks > 0 and config.time_mask_width > 0:
        lengths = tf.cast(num_frames, tf.float32)
        widest = tf.minimum(float(config.time_mask_width), tf.floor(lengths * config.time_mask_max_ratio))
        t = _bands(seeds[1], batch, config.time_masks, widest, lengths, frames)
        mask |= t[:, :, None]
    return tf.where(mask, fill, features)
