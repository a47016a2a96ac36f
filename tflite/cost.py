"""Weight counts and estimated multiply-adds of one level's Keras model.

Example:
    >>> level_cost(model, FeatureConfig())
    {'total_weights': 2013, 'nonzero_weights': 1010, 'macs_per_second': 151200}
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras


def _nonzero(array) -> int:
    return int(np.count_nonzero(np.asarray(array)))


def level_cost(model: keras.Model, feature_config) -> dict:
    """Counts weights and estimates the multiply-adds for one second of audio.

    Multiply-adds count only nonzero weights of Conv2D, Dense and LSTM kernels (what a kernel that
    skips zeros would have to do); element-wise work is ignored.

    Args:
        model: A plain (unwrapped) functional tf_keras model ``[1, frames, bins] -> logits``.
        feature_config: The `FeatureConfig` (frames per second of audio).

    Returns:
        ``{"total_weights", "nonzero_weights", "macs_per_second"}`` (ints).
    """
    weights = model.get_weights()
    total = int(sum(np.size(w) for w in weights))
    nonzero = int(sum(_nonzero(w) for w in weights))
    frames = feature_config.num_frames(feature_config.sample_rate)
    costed = [layer for layer in model.layers
              if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, keras.layers.LSTM))]
    if not costed:
        return {"total_weights": total, "nonzero_weights": nonzero, "macs_per_second": 0}
    probe = keras.Model(model.inputs, [layer.input for layer in costed] + [layer.output for layer in costed])
    shapes = [np.shape(t) for t in probe(np.zeros([1, frames, feature_config.num_mel_bins], np.float32))]
    inputs, outputs = shapes[:len(costed)], shapes[len(costed):]
    macs = 0
    for layer, in_shape, out_shape in zip(costed, inputs, outputs):
        if isinstance(layer, keras.layers.LSTM):
            cell = layer.cell
            macs += int(in_shape[1]) * (_nonzero(cell.kernel) + _nonzero(cell.recurrent_kernel))
        elif isinstance(layer, keras.layers.Conv2D):
            macs += int(np.prod(out_shape[1:3])) * _nonzero(layer.kernel)
        else:
            macs += int(np.prod(out_shape[:-1])) * _nonzero(layer.kernel)
    return {"total_weights": total, "nonzero_weights": nonzero, "macs_per_second": int(macs)}
