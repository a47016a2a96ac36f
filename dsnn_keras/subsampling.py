"""The model's subsampling front-end: CMVN, then a stack of stride-2 Conv2D layers over (time, mel).

The front-end turns raw log-mel features ``[batch, frames, num_mel_bins]`` into encoder input
``[batch, out_frames, width * channels]``. Every convolution has stride 2 and 'same' padding, so
each one halves the frame count, rounding up: ``n -> ceil(n / 2)``. The front-end therefore knows
its own time reduction, ``2 ** len(model_config.conv_channels)`` (4x with the default two
convolutions), and the exact output length of every input length (`output_lengths`), which the
trainer (CTC logit lengths, too-short utterances), the dataset filter and the evaluation use.

With ``conv_padding: same`` (the default) a stride-2 window reaches a few input frames ahead and is
placed by the parity of the input length: that is the model's only look-ahead, and why
zero-padding a batch changes the outputs slightly (docs/evaluation.md, "Padding"). With
``conv_padding: causal`` each convolution is a ``ZeroPadding2D`` (``kernel - 1`` frames on the
left in time; 'same' in frequency) and a ``valid`` Conv2D: no look-ahead, the same output lengths,
and the model streams exactly (`dsnn_keras.streaming`).

Example:
    >>> time_reduction(ModelConfig(conv_channels=(32, 32, 32)))
    8
    >>> output_lengths(np.array([100, 101]))             # the default: two convolutions
    array([25, 26])
    >>> output_lengths(101, ModelConfig(conv_channels=(32,)))
    51
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

STRIDE = 2          # every subsampling convolution halves the frame count ...
PADDING = "same"    # ... rounding up: 'same' padding gives ceil(n / STRIDE) output frames
DEFAULT_NUM_CONVS = 2   # `ModelConfig`'s default conv_channels has two entries


@keras.utils.register_keras_serializable(package="dsnn")
class CMVN(keras.layers.Layer):
    """Per-bin mean/variance normalisation with constants: ``(x - mean) / std``.

    Args:
        mean: ``num_mel_bins`` floats (from ``cmvn.json``).
        std: ``num_mel_bins`` positive floats.

    Call arguments:
        inputs: float32 ``[..., num_mel_bins]``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(v) for v in np.asarray(mean).reshape(-1)]
        self.std = [float(v) for v in np.asarray(std).reshape(-1)]
        if len(self.mean) != len(self.std):
            raise ValueError(f"CMVN: mean has {len(self.mean)} values but std has {len(self.std)}")
        if min(self.std) <= 0:
            raise ValueError("CMVN: every std must be > 0")
        self._scale = np.float32(1.0) / np.asarray(self.std, np.float32)
        self._mean = np.asarray(self.mean, np.float32)

    def call(self, inputs):
        return (inputs - tf.constant(self._mean)) * tf.constant(self._scale)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mean": list(self.mean), "std": list(self.std)}


@keras.utils.register_keras_serializable(package="dsnn")
class RunningMeanNorm(keras.layers.Layer):
    """Subtracts the running per-bin mean of the frames so far: ``x_t - sum(x_1..x_t) / (prior + t)``.

    Causal: frame t's output depends on frames 1..t only, so trailing batch padding does not change
    the valid frames and the layer streams with two numbers of state per utterance (the running sum
    and the frame count; `dsnn_keras.streaming`). The ``prior_frames`` term shrinks the first frames'
    mean toward 0 (the global CMVN mean), so a short start is not normalised by one frame's value.

    Args:
        prior_frames: Frames of prior weight at 0 (> 0).

    Call arguments:
        inputs: float32 ``[batch, frames, bins]``.

    Example:
        >>> RunningMeanNorm(2)(tf.constant([[[1.0], [3.0]]])).numpy().ravel()   # 1 - 1/3, 3 - 4/4
        array([0.6666666, 2.       ], dtype=float32)
    """

    def __init__(self, prior_frames: int, **kwargs):
        super().__init__(**kwargs)
        if int(prior_frames) <= 0:
            raise ValueError(f"RunningMeanNorm: prior_frames must be > 0, got {prior_frames}")
        self.prior_frames = int(prior_frames)

    def call(self, inputs):
        return running_mean_step(inputs, tf.zeros_like(inputs[:, 0]), tf.zeros([], inputs.dtype), self.prior_frames)[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "prior_frames": self.prior_frames}


def running_mean_step(x, total, count, prior_frames: int):
    """One chunk of `RunningMeanNorm`: ``x [batch, frames, bins]`` after ``count`` frames summing to
    ``total [batch, bins]``; returns ``(normalised x, new total, new count)``."""
    total, count = tf.cast(total, x.dtype), tf.cast(count, x.dtype)
    sums = total[:, tf.newaxis] + tf.cumsum(x, axis=1)
    counts = count + tf.range(1, tf.shape(x)[1] + 1, dtype=x.dtype)
    out = x - sums / (prior_frames + counts)[tf.newaxis, :, tf.newaxis]
    return out, total + tf.reduce_sum(x, axis=1), count + tf.cast(tf.shape(x)[1], x.dtype)


def num_convs(model_config: Optional[Any] = None) -> int:
    """Stride-2 convolutions of the front-end: ``len(model_config.conv_channels)``.

    Args:
        model_config: `dsnn_keras.config.ModelConfig`, or None for the default two convolutions.

    Returns:
        The number of convolutions.
    """
    return DEFAULT_NUM_CONVS if model_config is None else len(model_config.conv_channels)


def time_reduction(model_config: Optional[Any] = None) -> int:
    """How many input frames make one output frame: ``STRIDE ** num_convs`` (4 by default).

    Args:
        model_config: `dsnn_keras.config.ModelConfig`, or None for the default two convolutions.

    Returns:
        The time-reduction factor; ``output_lengths(n) == ceil(n / time_reduction())``.

    Example:
        >>> time_reduction()
        4
    """
    return STRIDE ** num_convs(model_config)


def output_lengths(num_frames: Any, model_config: Optional[Any] = None) -> Any:
    """Output frames of the model for ``num_frames`` input frames.

    Each stride-2 convolution maps ``n`` frames to ``ceil(n / 2) = (n + 1) // 2`` ('same', or
    ``kernel - 1`` frames of left padding and 'valid': the same count); applied once per
    convolution (``ceil(ceil(n / 2) / 2)`` for the default two).

    Args:
        num_frames: Input frame counts: a Python int, a numpy integer array or an integer tensor
            (inside a ``tf.function`` too).
        model_config: `dsnn_keras.config.ModelConfig` (its ``conv_channels`` set the number of
            convolutions), or None for the default two convolutions.

    Returns:
        The output frame counts, of the same kind as ``num_frames``.

    Example:
        >>> output_lengths(np.array([1, 4, 5]), ModelConfig(conv_channels=(8, 8, 8)))
        array([1, 1, 1])
    """
    lengths = num_frames
    for _ in range(num_convs(model_config)):
        lengths = (lengths + (STRIDE - 1)) // STRIDE   # PADDING 'same': ceil(n / STRIDE)
    return lengths


def same_padding(size: int, kernel: int, stride: int = STRIDE) -> tuple[int, int]:
    """The (before, after) zero padding 'same' uses along an axis of ``size`` (TensorFlow's split).

    Example:
        >>> same_padding(80, 3)
        (0, 1)
    """
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def build_subsampling(features: Any, model_config: Any, cmvn_mean: Any, cmvn_std: Any) -> Any:
    """Appends the front-end to a functional graph: CMVN, one Conv2D per ``conv_channels`` entry.

    Args:
        features: Symbolic ``[batch, frames, num_mel_bins]`` float32 input.
        model_config: `dsnn_keras.config.ModelConfig` (``conv_channels``, ``conv_kernel``).
        cmvn_mean: ``[num_mel_bins]`` CMVN mean.
        cmvn_std: ``[num_mel_bins]`` CMVN standard deviation.

    Returns:
        Symbolic ``[batch, output_lengths(frames), width * conv_channels[-1]]``, where ``width`` is
        ``num_mel_bins`` halved (rounding up) once per convolution. Layers: ``cmvn``,
        ``running_mean`` (only with ``model_config.running_mean_frames``), ``add_channel``,
        ``conv_<i>`` (relu; with causal padding preceded by ``conv_<i>_pad``), ``flatten_freq``.
    """
    bins = int(features.shape[-1])
    x = CMVN(cmvn_mean, cmvn_std, name="cmvn")(features)
    if getattr(model_config, "running_mean_frames", 0):
        x = RunningMeanNorm(model_config.running_mean_frames, name="running_mean")(x)
    x = keras.layers.Reshape([-1, bins, 1], name="add_channel")(x)
    width = bins
    kernel = model_config.conv_kernel
    mode = getattr(model_config, "conv_padding", PADDING)
    # causal: kernel - 1 zero frames before; lookahead: kernel - 2 before and one after (a fixed
    # one-frame look-ahead). Both give 'same''s ceil(n / 2) frames.
    time_padding = {"causal": (kernel - 1, 0), "lookahead": (kernel - 2, 1)}.get(mode)
    for i, channels in enumerate(model_config.conv_channels):
        if time_padding is not None:
            x = keras.layers.ZeroPadding2D((time_padding, same_padding(width, kernel)), name=f"conv_{i}_pad")(x)
        x = keras.layers.Conv2D(channels, kernel, strides=STRIDE, padding="valid" if time_padding else PADDING,
                                activation="relu", name=f"conv_{i}")(x)
        width = (width + STRIDE - 1) // STRIDE
    return keras.layers.Reshape([-1, width * model_config.conv_channels[-1]], name="flatten_freq")(x)
