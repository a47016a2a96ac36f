"""The exported graph: frontend, level selection through a builtin ``IF`` tree, greedy CTC in-graph.

One `tf.Module` with two ``tf.function`` signatures:

* ``recognize(audio: float32[num_samples], sparsity_level: int32[])``
* ``recognize_features(features: float32[num_frames, num_mel_bins], sparsity_level: int32[])``

both returning ``log_probs`` (float32 ``[out_frames, vocab_size + 1]``, log-softmax, blank last),
``tokens`` (int32 ``[n]``, greedy CTC: argmax, repeats merged, blanks dropped) and ``level`` (int32,
the level actually run after clamping ``sparsity_level`` to ``0..K-1``).

Each level is its own Keras model with constant weights; a chain of ``tf.cond`` (builtin ``IF``)
selects one, so every level keeps the dense kernels' speed (docs/measured.md; ``tf.switch_case`` does
not convert). Non-finite samples are replaced by 0 and features are padded (with the log floor,
i.e. silence) to the fewest frames the model accepts, so NaN, empty or tiny inputs give a defined
result.
"""
from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf

from dsnn_keras.decoding import greedy_ctc_graph
from tflite import signatures as sig

_FLOAT32_MAX = 3.0e38


class RecognizerModule(tf.Module):
    """Wraps per-level Keras models into the two exported signatures.

    Args:
        models: K same-architecture models ``[1, frames, bins] -> [1, out_frames, vocab + 1]``.
        feature_config: `dsnn_keras.frontend.FeatureConfig` used by ``recognize``.
        blank_id: The CTC blank (the last output class).
        min_frames: Features shorter than this are padded with silence. Defaults to 1.
        force_if: Wrap a single model in an ``IF`` too (an ``IF`` re-allocates its branch on every
            invoke, which zeroes the fused LSTM state). Defaults to True.
        stream: A `tflite.streaming.StreamSignature` to add as the ``stream`` signature. Defaults
            to None (no streaming).

    Example:
        >>> module = RecognizerModule([m0, m1], FeatureConfig(), blank_id=128)
        >>> out = module.recognize(tf.zeros([16000]), tf.constant(1))
    """

    def __init__(self, models: Sequence, feature_config, blank_id: int, min_frames: int = 1,
                 force_if: bool = True, stream=None):
        super().__init__(name="dsnn_recognizer")
        if not models:
            raise ValueError("RecognizerModule: need at least one model")
        self._models = list(models)
        self._config = feature_config
        self._blank_id = int(blank_id)
        self._min_frames = int(min_frames)
        self._force_if = force_if
        bins = feature_config.num_mel_bins
        # The converter names signatures after the Python functions, so the closures carry the names.
        def recognize(audio, sparsity_level):
            return self._recognize(audio, sparsity_level)

        def recognize_features(features, sparsity_level):
            return self._recognize_features(features, sparsity_level)

        recognize.__name__, recognize_features.__name__ = sig.RECOGNIZE, sig.RECOGNIZE_FEATURES
        self.recognize = tf.function(recognize, autograph=False, input_signature=[
            tf.TensorSpec([None], tf.float32, name=sig.AUDIO),
            tf.TensorSpec([], tf.int32, name=sig.SPARSITY_LEVEL)])
        self.recognize_features = tf.function(recognize_features, autograph=False, input_signature=[
            tf.TensorSpec([None, bins], tf.float32, name=sig.FEATURES),
            tf.TensorSpec([], tf.int32, name=sig.SPARSITY_LEVEL)])
        self._stream = stream
        if stream is not None:
            self.stream = stream.function

    @property
    def stream_signature(self):
        """The `tflite.streaming.StreamSignature` of the ``stream`` signature, or None."""
        return self._stream

    @property
    def num_levels(self) -> int:
        return len(self._models)

    def concrete_functions(self) -> dict:
        """``{signature_key: concrete function}`` for the converter."""
        functions = {sig.RECOGNIZE: self.recognize.get_concrete_function(),
                     sig.RECOGNIZE_FEATURES: self.recognize_features.get_concrete_function()}
        if self._stream is not None:
            functions[sig.STREAM] = self.stream.get_concrete_function()
        return functions

    def _recognize(self, audio, sparsity_level):
        from dsnn_keras.frontend import log_mel_spectrogram

        finite = tf.less_equal(tf.abs(audio), _FLOAT32_MAX)  # False for NaN and +-inf
        audio = tf.where(finite, audio, tf.zeros_like(audio))
        return self._recognize_features(log_mel_spectrogram(audio, self._config), sparsity_level)

    def _recognize_features(self, features, sparsity_level):
        level = tf.clip_by_value(sparsity_level, 0, self.num_levels - 1)
        if self._min_frames > 1:
            missing = tf.maximum(self._min_frames - tf.shape(features)[0], 0)
            features = tf.pad(features, [[0, missing], [0, 0]],
                              constant_values=math.log(self._config.log_floor))
        batch = features[tf.newaxis]
        logits = self._select(level, batch)[0]
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        return {sig.LOG_PROBS: log_probs, sig.TOKENS: greedy_ctc_graph(log_probs, self._blank_id), sig.LEVEL: level}

    def _select(self, level, batch):
        models = self._models

        def branch(i):
            if i == len(models) - 1:
                return models[i](batch, training=False)
            return tf.cond(level <= i, lambda: models[i](batch, training=False),
                           lambda: branch(i + 1))

        if len(models) == 1 and self._force_if:
            return tf.cond(level <= 0, lambda: models[0](batch, training=False),
                           lambda: models[0](batch, training=False))
        return branch(0)
