"""The CTC speech recognizer: CMVN -> Conv2D subsampling (4x in time) -> encoder -> Dense.

A functional tf_keras model on raw log-mel features ``[batch, frames, num_mel_bins]``; its output
is logits ``[batch, ceil(ceil(frames/2)/2), vocab_size + 1]`` with the CTC blank last. The encoder
is either a stack of plain ``keras.layers.LSTM`` layers (unidirectional, so TFLite converts them to
fused LSTM ops) or causal Conformer blocks built from stock Keras layers. Both encoders are causal
(an encoder frame never depends on a later one), so the model streams with the subsampling
front-end's small look-ahead: two stride-2 'same' convolutions, whose windows reach a few input
frames ahead and are placed by the parity of the input length. That placement is why zero-padding
a batch changes the outputs slightly (docs/evaluation.md, "Padding").

Example:
    >>> model = build_model(config.model, feature_config, vocab_size=128, cmvn_mean=m, cmvn_std=s)
    >>> pruned = build_pruned_model(config, feature_config, 128, m, s)   # nested-mask wrapped
    >>> output_lengths(np.array([100, 101]))
    array([25, 26])
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

OUTPUT_LAYER = "logits"


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
class GatedLinearUnit(keras.layers.Layer):
    """GLU over the last axis: the first half times the sigmoid of the second half.

    Call arguments:
        inputs: ``[..., 2 * d]``; returns ``[..., d]``.
    """

    def call(self, inputs):
        value, gate = tf.split(inputs, 2, axis=-1)
        return value * tf.sigmoid(gate)


def _feed_forward(x, dim: int, mult: int, dropout: float, prefix: str):
    """Half-step (Macaron) feed-forward module: ``x + 0.5 * FF(LN(x))``."""
    y = keras.layers.LayerNormalization(name=f"{prefix}_norm")(x)
    y = keras.layers.Dense(dim * mult, activation="swish", name=f"{prefix}_in")(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(y)
    y = keras.layers.Dense(dim, name=f"{prefix}_out")(y)
    y = keras.layers.Rescaling(0.5, name=f"{prefix}_half")(y)
    return keras.layers.Add(name=f"{prefix}_residual")([x, y])


def _conformer_block(x, cfg, dropout: float, prefix: str):
    """One causal Conformer block (Gulati et al., 2020): FF/2, causal MHSA, causal conv, FF/2, LN.

    Causal: the attention is masked to past and present frames and the depthwise convolution is
    padded on the left only. There is no explicit positional encoding; the causal mask and the
    convolution give the model its sense of order.
    """
    x = _feed_forward(x, cfg.dim, cfg.ff_mult, dropout, f"{prefix}_ff1")
    y = keras.layers.LayerNormalization(name=f"{prefix}_mhsa_norm")(x)
    y = keras.layers.MultiHeadAttention(cfg.heads, cfg.dim // cfg.heads, dropout=dropout,
                                        name=f"{prefix}_mhsa")(y, y, use_causal_mask=True)
    x = keras.layers.Add(name=f"{prefix}_mhsa_residual")([x, y])
    y = keras.layers.LayerNormalization(name=f"{prefix}_conv_norm")(x)
    y = keras.layers.Dense(2 * cfg.dim, name=f"{prefix}_pointwise_in")(y)
    y = GatedLinearUnit(name=f"{prefix}_glu")(y)
    y = keras.layers.ZeroPadding1D((cfg.conv_kernel - 1, 0), name=f"{prefix}_causal_pad")(y)
    y = keras.layers.DepthwiseConv1D(cfg.conv_kernel, name=f"{prefix}_depthwise")(y)
    y = keras.layers.LayerNormalization(name=f"{prefix}_depthwise_norm")(y)
    y = keras.layers.Activation("swish", name=f"{prefix}_swish")(y)
    y = keras.layers.Dense(cfg.dim, name=f"{prefix}_pointwise_out")(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{prefix}_conv_dropout")(y)
    x = keras.layers.Add(name=f"{prefix}_conv_residual")([x, y])
    x = _feed_forward(x, cfg.dim, cfg.ff_mult, dropout, f"{prefix}_ff2")
    return keras.layers.LayerNormalization(name=f"{prefix}_norm")(x)


def output_lengths(num_frames):
    """Output frames of the model for ``num_frames`` input frames (two stride-2 'same' convs).

    Works on Python ints, numpy arrays and integer tensors: ``ceil(ceil(n / 2) / 2)``.
    """
    once = (num_frames + 1) // 2
    return (once + 1) // 2


def build_model(model_config, feature_config, vocab_size: int, cmvn_mean, cmvn_std,
                name: str = "dsnn_asr") -> keras.Model:
    """Builds the unpruned functional model.

    Args:
        model_config: `dsnn_keras.config.ModelConfig`.
        feature_config: `FeatureConfig` (its ``num_mel_bins`` is the input width).
        vocab_size: SentencePiece vocabulary size; the model has ``vocab_size + 1`` outputs.
        cmvn_mean: ``[num_mel_bins]`` CMVN mean.
        cmvn_std: ``[num_mel_bins]`` CMVN standard deviation.
        name: Model name. Defaults to "dsnn_asr".

    Returns:
        A `keras.Model` mapping ``[batch, frames, bins]`` to logits ``[batch, out_frames, vocab+1]``.
        Layer names: ``cmvn``, ``conv_0``, ``conv_1``, then ``lstm_<i>`` or ``conformer_input``
        and ``conformer_<i>_*``, ``projection`` (optional), ``logits``.
    """
    bins = feature_config.num_mel_bins
    features = keras.Input([None, bins], dtype=tf.float32, name="features")
    x = CMVN(cmvn_mean, cmvn_std, name="cmvn")(features)
    x = keras.layers.Reshape([-1, bins, 1], name="add_channel")(x)
    width = bins
    for i, channels in enumerate(model_config.conv_channels):
        x = keras.layers.Conv2D(channels, model_config.conv_kernel, strides=2, padding="same",
                                activation="relu", name=f"conv_{i}")(x)
        width = (width + 1) // 2
    x = keras.layers.Reshape([-1, width * model_config.conv_channels[-1]], name="flatten_freq")(x)
    if model_config.encoder == "conformer":
        conformer = model_config.conformer
        x = keras.layers.Dense(conformer.dim, name="conformer_input")(x)
        if model_config.dropout > 0:
            x = keras.layers.Dropout(model_config.dropout, name="conformer_input_dropout")(x)
        for i in range(conformer.blocks):
            x = _conformer_block(x, conformer, model_config.dropout, f"conformer_{i}")
    else:
        for i, units in enumerate(model_config.lstm_units):
            x = keras.layers.LSTM(units, return_sequences=True, name=f"lstm_{i}")(x)
            if model_config.dropout > 0:
                x = keras.layers.Dropout(model_config.dropout, name=f"dropout_{i}")(x)
    if model_config.projection_units:
        x = keras.layers.Dense(model_config.projection_units, activation="relu", name="projection")(x)
    logits = keras.layers.Dense(vocab_size + 1, name=OUTPUT_LAYER)(x)
    return keras.Model(features, logits, name=name)


def default_prune_layers(model: keras.Model, granularity: str = "weight") -> list[str]:
    """Names of every LSTM and Dense layer except the output layer; with unit granularity the
    Conv2D layers too (their channels must shrink for a sparse level to be cheap: they are ~18 %
    of the LSTM model's multiply-adds)."""
    kinds = (keras.layers.LSTM, keras.layers.Dense)
    if granularity == "unit":
        kinds = kinds + (keras.layers.Conv2D,)
    return [layer.name for layer in model.layers if isinstance(layer, kinds) and layer.name != OUTPUT_LAYER]


def build_pruned_model(config, feature_config, vocab_size: int, cmvn_mean, cmvn_std,
                       prune_layers: Optional[Sequence[str]] = None) -> keras.Model:
    """Builds the model and wraps its prunable layers with nested-mask wrappers.

    Args:
        config: `dsnn_keras.config.Config` (model architecture, levels, pruning schedule, mode).
        feature_config: `FeatureConfig`.
        vocab_size: SentencePiece vocabulary size.
        cmvn_mean: CMVN mean.
        cmvn_std: CMVN standard deviation.
        prune_layers: Layer names to prune; defaults to ``config.pruning.prune_layers`` or, when
            that is null, `default_prune_layers`.

    Returns:
        The wrapped model; its levels are ``config.effective_levels``.
    """
    import dsnn_keras

    model = build_model(config.model, feature_config, vocab_size, cmvn_mean, cmvn_std)
    granularity = config.pruning.effective_granularity
    names = list(prune_layers or config.pruning.prune_layers or default_prune_layers(model, granularity))
    existing = {layer.name for layer in model.layers}
    missing = sorted(set(names) - existing)
    if missing:
        raise ValueError(f"pruning.prune_layers: no layer named {missing}; the model has {sorted(existing)}")
    p = config.pruning
    schedule = dsnn_keras.NestedPolynomialDecay(
        sparsity_levels=tuple(config.effective_levels), begin_step=p.begin_step, end_step=p.end_step,
        frequency=p.frequency, power=p.power)
    return dsnn_keras.prune_nested(model, schedule, block_size=tuple(p.block_size), prune_layers=names,
                                   granularity="unit" if granularity == "unit" else "weight")
