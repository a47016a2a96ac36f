"""Weight counts and estimated multiply-adds of one level's Keras model.

Every layer with weights is costed or named in an error: a model with a layer this module does not
know fails loudly instead of reporting too few multiply-adds.

Example:
    >>> level_cost(model, FeatureConfig())
    {'total_weights': 2013, 'nonzero_weights': 1010, 'macs_per_second': 151200}
"""
from __future__ import annotations

import numpy as np
import tf_keras as keras

from dsnn_keras.errors import DsnnError


class CostError(DsnnError, ValueError):
    """A layer whose multiply-adds cannot be counted (the metadata's MACs would be too low)."""

# Layers whose weights only scale or shift element-wise: their work is not counted.
ELEMENTWISE = (keras.layers.LayerNormalization, keras.layers.BatchNormalization, keras.layers.Normalization)
COSTED = (keras.layers.LSTM, keras.layers.MultiHeadAttention, keras.layers.DepthwiseConv1D,
          keras.layers.DepthwiseConv2D, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Dense)


def _nonzero(array) -> int:
    return int(np.count_nonzero(np.asarray(array)))


def _kernels(layer) -> list:
    return [w for w in layer.weights if w.name.split("/")[-1].split(":")[0] == "kernel"]


def level_cost(model: keras.Model, feature_config) -> dict:
    """Counts weights and estimates the multiply-adds for one second of audio.

    Multiply-adds count the nonzero weights of Conv1D/Conv2D (depthwise too), Dense, LSTM and
    MultiHeadAttention kernels (what a kernel that skips zeros would have to do), plus the
    attention's score and context products (``2 × T² × heads × key_dim`` for self-attention over T
    frames). Element-wise work (normalisation, activations, biases) is ignored.

    Args:
        model: A plain (unwrapped) functional tf_keras model ``[1, frames, bins] -> logits``.
        feature_config: The `FeatureConfig` (frames per second of audio).

    Returns:
        ``{"total_weights", "nonzero_weights", "macs_per_second"}`` (ints).

    Raises:
        CostError: a layer with weights that is neither costed nor element-wise (named).
    """
    weights = model.get_weights()
    total = int(sum(np.size(w) for w in weights))
    nonzero = int(sum(_nonzero(w) for w in weights))
    unknown = sorted({f"{layer.name} ({type(layer).__name__})" for layer in model.layers
                      if layer.weights and not isinstance(layer, COSTED + ELEMENTWISE)})
    if unknown:
        raise CostError(f"cannot estimate multiply-adds of layer(s) {', '.join(unknown)}: "
                        f"tflite.cost covers {', '.join(t.__name__ for t in COSTED)}")
    frames = feature_config.num_frames(feature_config.sample_rate)
    costed = [layer for layer in model.layers if isinstance(layer, COSTED)]
    if not costed:
        return {"total_weights": total, "nonzero_weights": nonzero, "macs_per_second": 0}
    lstms = [layer for layer in costed if isinstance(layer, keras.layers.LSTM)]
    probe = keras.Model(model.inputs, [layer.input for layer in lstms] + [layer.output for layer in costed])
    shapes = [np.shape(t) for t in probe(np.zeros([1, frames, feature_config.num_mel_bins], np.float32))]
    lstm_inputs = dict(zip((id(layer) for layer in lstms), shapes[:len(lstms)]))
    macs = 0
    for layer, out_shape in zip(costed, shapes[len(lstms):]):
        if isinstance(layer, keras.layers.LSTM):
            cell = layer.cell
            steps = int(lstm_inputs[id(layer)][1])
            macs += steps * (_nonzero(cell.kernel) + _nonzero(cell.recurrent_kernel))
        elif isinstance(layer, keras.layers.MultiHeadAttention):
            steps = int(out_shape[1])   # self-attention: queries = keys = values = T frames
            config = layer.get_config()
            heads, key_dim = config["num_heads"], config["key_dim"]
            value_dim = config.get("value_dim") or key_dim
            macs += steps * sum(_nonzero(kernel) for kernel in _kernels(layer))
            macs += steps * steps * heads * (key_dim + value_dim)
        elif isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
            macs += int(np.prod(out_shape[1:-1])) * _nonzero(layer.depthwise_kernel)
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
            macs += int(np.prod(out_shape[1:-1])) * _nonzero(layer.kernel)
        else:   # Dense
            macs += int(np.prod(out_shape[:-1])) * _nonzero(layer.kernel)
    return {"total_weights": total, "nonzero_weights": nonzero, "macs_per_second": int(macs)}
