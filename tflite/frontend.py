"""The float32 log-mel frontend as TFLite and as constants: the reference every export is checked against.

Quantized exports keep their in-graph frontend in float32 (`tflite.rewrites.keep_frontend_float`
puts `frontend_constants` back); verification feeds ``recognize_features`` the features of
`frontend_tflite` to prove it. TensorFlow is imported inside the functions only.

Example:
    >>> features = run_frontend_tflite(FeatureConfig(), [clip])[0]
    >>> features.shape
    (98, 80)
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from tflite.signatures import AUDIO, FEATURES


@functools.lru_cache(maxsize=8)
def frontend_tflite(feature_config) -> bytes:
    """The log-mel frontend alone, converted in float32 (cached per config): ``frontend(audio)``.

    Its output is the float frontend `tflite.export.verify_levels` feeds ``recognize_features`` to
    check the file's own frontend.

    Args:
        feature_config: A (hashable, frozen) `FeatureConfig`.

    Returns:
        The .tflite bytes of ``frontend(audio: float32[n]) -> {"features": float32[frames, bins]}``.
    """
    import tensorflow as tf

    from dsnn_keras.frontend import log_mel_spectrogram

    @tf.function(autograph=False, input_signature=[tf.TensorSpec([None], tf.float32, name=AUDIO)])
    def frontend(audio):
        return {FEATURES: log_mel_spectrogram(audio, feature_config)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frontend.get_concrete_function()], frontend)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def run_frontend_tflite(feature_config, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Features of each clip from `frontend_tflite` on one LiteRT interpreter.

    Args:
        feature_config: The `FeatureConfig`.
        clips: float32 mono clips at ``feature_config.sample_rate``.

    Returns:
        One ``[frames, num_mel_bins]`` array per clip.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=frontend_tflite(feature_config))
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    features = []
    for audio in clips:
        audio = np.asarray(audio, np.float32)
        interpreter.resize_tensor_input(index, [audio.shape[0]])
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, audio)
        interpreter.invoke()
        features.append(interpreter.get_tensor(output).copy())
    return features


def frontend_constants(feature_config) -> list:
    """The float32 constants of the log-mel frontend: mel filterbank (both layouts), window, log floor.

    The exact values `tflite.rewrites.keep_frontend_float` puts back where a quantized conversion
    rounded them.

    Args:
        feature_config: The `FeatureConfig`.

    Returns:
        ``[mel [bins_fft, mel], mel.T, window, log_floor]`` as float32 arrays.
    """
    import tensorflow as tf

    mel = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=feature_config.num_mel_bins, num_spectrogram_bins=feature_config.fft_length // 2 + 1,
        sample_rate=feature_config.sample_rate, lower_edge_hertz=feature_config.lower_edge_hz,
        upper_edge_hertz=feature_config.upper_edge_hz).numpy()
    window = tf.signal.hann_window(feature_config.frame_length, dtype=tf.float32).numpy()
    return [mel, np.ascontiguousarray(mel.T), window, np.asarray(feature_config.log_floor, np.float32)]
