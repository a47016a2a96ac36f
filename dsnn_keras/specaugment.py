"""SpecAugment frequency and time masks for training batches (Park et al., 2019, without warping).

Applied by the trainer to raw log-mel batches, never inside the model, so evaluation and export
are unaffected. Masked cells are set to ``fill_value`` (the CMVN mean, i.e. 0 after CMVN).

Randomness is stateless: the masks are a pure function of ``seed`` (the trainer derives it from
the run seed and the step), so a resumed run draws the same masks it would have. A replica holding
rows of a larger global batch passes ``rows`` and ``num_rows``: the draws are made for the global
batch and its rows taken, so the masks do not depend on how the batch is split.

Example:
    >>> out = spec_augment(features, num_frames, SpecAugmentConfig(), seed=[0, 17], fill_value=cmvn_mean)
"""
from __future__ import annotations

import tensorflow as tf


def _bands(seed, rows, num_rows, count: int, max_width, extent, size):
    """A [len(rows), size] bool mask: ``count`` random bands per row, width <= max_width, inside extent.

    The uniforms are drawn for ``num_rows`` rows and ``rows`` of them used.
    """
    max_width = tf.cast(max_width, tf.float32)
    extent = tf.cast(extent, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    draw = lambda s: tf.gather(tf.random.stateless_uniform([num_rows, count], s), rows)  # noqa: E731
    widths = tf.floor(draw(seeds[0]) * (max_width[:, None] + 1.0))
    widths = tf.minimum(widths, extent[:, None])
    starts = tf.floor(draw(seeds[1]) * (extent[:, None] - widths + 1.0))
    pos = tf.cast(tf.range(size), tf.float32)[None, None, :]
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])
    return tf.reduce_any(inside, axis=1)


def spec_augment(features: tf.Tensor, num_frames: tf.Tensor, config, seed,
                 fill_value=0.0, rows=None, num_rows=None) -> tf.Tensor:
    """Applies random frequency and time masks to a padded batch.

    Args:
        features: float32 ``[batch, frames, bins]``.
        num_frames: int ``[batch]`` valid frames per row (time masks stay inside them).
        config: `dsnn_keras.config.SpecAugmentConfig`.
        seed: int ``[2]`` tensor or list: the stateless random seed.
        fill_value: Scalar or ``[bins]`` value written into masked cells. Defaults to 0.
        rows: int32 ``[batch]``: the rows' indices in a global batch of ``num_rows`` rows whose
            masks these are (a replica's share). Defaults to None: the batch is the whole batch.
        num_rows: int32 scalar, the global batch's rows (with ``rows``). Defaults to None.

    Returns:
        The masked features, same shape and dtype.
    """
    shape = tf.shape(features)
    batch, frames, bins = shape[0], shape[1], shape[2]
    if rows is None:
        rows, num_rows = tf.range(batch), batch
    fill = tf.broadcast_to(tf.cast(fill_value, features.dtype), tf.shape(features))
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    mask = tf.zeros([batch, frames, bins], tf.bool)
    if config.freq_masks > 0 and config.freq_mask_width > 0:
        f = _bands(seeds[0], rows, num_rows, config.freq_masks, tf.fill([batch], config.freq_mask_width),
                   tf.fill([batch], bins), bins)
        mask |= f[:, None, :]
    if config.time_masks > 0 and config.time_mask_width > 0:
        lengths = tf.cast(num_frames, tf.float32)
        widest = tf.minimum(float(config.time_mask_width), tf.floor(lengths * config.time_mask_max_ratio))
        t = _bands(seeds[1], rows, num_rows, config.time_masks, widest, lengths, frames)
        mask |= t[:, :, None]
    return tf.where(mask, fill, features)
