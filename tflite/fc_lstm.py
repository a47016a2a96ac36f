"""An LSTM written as FULLY_CONNECTED ops in a while loop, so TFLite's sparse FC kernel can apply.

The stock fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` kernel multiplies dense weights whatever their
zeros (docs/measured.md). This formulation computes the input projection of all frames as one
``FULLY_CONNECTED`` op and each recurrent step as one ``FULLY_CONNECTED`` op on the previous output,
inside a builtin ``WHILE`` loop; with the converter's ``EXPERIMENTAL_SPARSITY`` optimization, weights
pruned in 1x4 blocks (4 consecutive inputs of one unit; in the Keras ``[in, out]`` kernel layout
that is a 4x1 block) are stored sparse and run on the sparse FC kernel. State lives in loop
variables, so every invoke starts from zeros.

Example:
    >>> fc_model = replace_lstms(model)      # same outputs as `model`, LSTMs as FC loops
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.compiler.tf2xla.python import xla


class FCLoopLSTM(keras.layers.Layer):
    """Inference-only copy of a ``keras.layers.LSTM`` (batch 1) built from FC ops and a while loop.

    Args:
        lstm: The built LSTM layer to copy (tanh / sigmoid activations, not stateful, forward).

    Call arguments:
        inputs: float32 ``[1, frames, features]``.
    """

    def __init__(self, lstm: keras.layers.LSTM, **kwargs):
        super().__init__(name=f"{lstm.name}_fc_loop", **kwargs)
        cell = lstm.cell
        problems = []
        if keras.activations.serialize(cell.activation) != "tanh":
            problems.append("activation must be tanh")
        if keras.activations.serialize(cell.recurrent_activation) != "sigmoid":
            problems.append("recurrent_activation must be sigmoid")
        if lstm.go_backwards or lstm.stateful or lstm.return_state:
            problems.append("go_backwards/stateful/return_state are not supported")
        if problems:
            raise ValueError(f"FCLoopLSTM: layer {lstm.name!r}: " + "; ".join(problems))
        weights = lstm.get_weights()
        self.units = int(cell.units)
        self.return_sequences = bool(lstm.return_sequences)
        self.kernel = np.asarray(weights[0], np.float32)
        self.recurrent_kernel = np.asarray(weights[1], np.float32)
        self.bias = (np.asarray(weights[2], np.float32) if cell.use_bias
                     else np.zeros([4 * self.units], np.float32))

    def call(self, inputs):
        units = self.units
        features = tf.reshape(inputs, [-1, self.kernel.shape[0]])
        projected = tf.matmul(features, tf.constant(self.kernel)) + tf.constant(self.bias)
        steps = tf.shape(projected)[0]
        recurrent = tf.constant(self.recurrent_kernel)

        # Outputs are written in place with DYNAMIC_UPDATE_SLICE: TensorArray ops do not lower to
        # builtins inside IF branches.
        def body(t, h, c, outputs):
            z = tf.slice(projected, tf.stack([t, 0]), [1, 4 * units]) + tf.matmul(h, recurrent)
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            return t + 1, h, c, xla.dynamic_update_slice(outputs, h, tf.stack([t, 0]))

        zeros = tf.zeros([1, units])
        _, h, _, outputs = tf.while_loop(
            lambda t, *_: t < steps, body,
            [tf.constant(0), zeros, zeros, tf.zeros(tf.stack([steps, units]))],
            shape_invariants=[tf.TensorShape([]), tf.TensorShape([1, units]), tf.TensorShape([1, units]),
                              tf.TensorShape([None, units])])
        if self.return_sequences:
            return outputs[tf.newaxis]
        return h


def replace_lstms(model: keras.Model) -> keras.Model:
    """Returns a functional copy of ``model`` whose ``keras.layers.LSTM`` layers are `FCLoopLSTM`s.

    Other layers are shared with ``model`` (not copied). Batch size must be 1 at call time.

    Args:
        model: A functional or Sequential tf_keras model.

    Returns:
        A `keras.Model` with the same outputs (to float rounding).
    """

    def clone(layer):
        if type(layer) is keras.layers.LSTM:
            return FCLoopLSTM(layer)
        return layer

    return keras.models.clone_model(model, clone_function=clone)
