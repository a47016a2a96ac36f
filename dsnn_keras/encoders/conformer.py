"""The causal Conformer encoder (``model.encoder: conformer``, Gulati et al., 2020), stock Keras layers.

A Dense input projection to ``model.conformer.dim`` (``conformer_input``, then
``conformer_input_dropout`` when ``model.dropout > 0``), then ``model.conformer.blocks`` blocks
``conformer_<i>_*``: a half-step feed-forward module, multi-head self-attention masked to past and
present frames, a convolution module (pointwise Dense -> GLU -> depthwise conv padded on the left
only -> LayerNorm -> swish -> pointwise Dense), a second half-step feed-forward module and a
LayerNorm. Causal, so it streams like the LSTMs. There is no explicit positional encoding; the
causal mask and the convolution give the model its sense of order.

With ``model.conformer.left_context: L`` each frame attends to itself and the ``L`` frames before
it only (a ``conformer_<i>_mhsa_mask`` layer, `LocalAttentionMask`, gives the attention a band
mask); without it (the default) to the whole past.

State per block: the attention's keys and values of the last ``L`` frames (with the default
unbounded context, of every earlier frame: that cache grows with the utterance, so such a model does
not stream), and the last ``conv_kernel - 1`` frames entering the depthwise convolution.
`dsnn_keras.streaming.StreamingModel` runs the blocks chunk by chunk with these caches.

Example:
    >>> [s.name for s in state(ModelConfig(encoder="conformer", conformer=ConformerConfig(blocks=1)))]
    ['conformer_0_mhsa/key', 'conformer_0_mhsa/value', 'conformer_0_depthwise/input']
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from dsnn_keras.encoders import Encoder, StateSpec


@keras.utils.register_keras_serializable(package="dsnn")
class GatedLinearUnit(keras.layers.Layer):
    """GLU over the last axis: the first half times the sigmoid of the second half.

    Call arguments:
        inputs: ``[..., 2 * d]``; returns ``[..., d]``.
    """

    def call(self, inputs):
        value, gate = tf.split(inputs, 2, axis=-1)
        return value * tf.sigmoid(gate)


@keras.utils.register_keras_serializable(package="dsnn")
class LocalAttentionMask(keras.layers.Layer):
    """A causal band mask for self-attention: frame ``i`` attends to frames ``i - left_context .. i``.

    Args:
        left_context: Earlier frames each frame may attend to besides itself (>= 1).

    Call arguments:
        inputs: ``[batch, frames, ...]`` (only the number of frames is read); returns bool
            ``[1, frames, frames]``, the ``attention_mask`` of a ``MultiHeadAttention`` call.

    Example:
        >>> LocalAttentionMask(1)(tf.zeros([1, 3, 4]))[0].numpy().astype(int)
        array([[1, 0, 0],
               [1, 1, 0],
               [0, 1, 1]])
    """

    def __init__(self, left_context: int, **kwargs):
        super().__init__(**kwargs)
        if isinstance(left_context, bool) or not isinstance(left_context, int) or left_context < 1:
            raise ValueError(f"LocalAttentionMask: left_context must be an int >= 1, got {left_context!r}")
        self.left_context = left_context

    def call(self, inputs):
        frames = tf.range(tf.shape(inputs)[1])
        query, key = frames[:, tf.newaxis], frames[tf.newaxis, :]
        return tf.logical_and(key <= query, key >= query - self.left_context)[tf.newaxis]

    def get_config(self):
        return {**super().get_config(), "left_context": self.left_context}


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
    """One causal Conformer block: FF/2, causal MHSA, causal conv, FF/2, LN.

    Causal: the attention is masked to past and present frames (the last ``cfg.left_context``
    ones when bounded) and the depthwise convolution is padded on the left only.
    """
    x = _feed_forward(x, cfg.dim, cfg.ff_mult, dropout, f"{prefix}_ff1")
    y = keras.layers.LayerNormalization(name=f"{prefix}_mhsa_norm")(x)
    attention = keras.layers.MultiHeadAttention(cfg.heads, cfg.dim // cfg.heads, dropout=dropout,
                                                name=f"{prefix}_mhsa")
    if cfg.attention_left_context is None:
        y = attention(y, y, use_causal_mask=True)
    else:
        mask = LocalAttentionMask(cfg.attention_left_context, name=f"{prefix}_mhsa_mask")(y)
        y = attention(y, y, attention_mask=mask)
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


def build(x: Any, model_config: Any) -> Any:
    """Appends the input projection and the Conformer blocks to a functional graph.

    Args:
        x: Symbolic ``[batch, frames, width]``.
        model_config: `dsnn_keras.config.ModelConfig` (``conformer``: a `ConformerConfig`; ``dropout``).

    Returns:
        Symbolic ``[batch, frames, conformer.dim]``.
    """
    conformer = model_config.conformer
    x = keras.layers.Dense(conformer.dim, name="conformer_input")(x)
    if model_config.dropout > 0:
        x = keras.layers.Dropout(model_config.dropout, name="conformer_input_dropout")(x)
    for i in range(conformer.blocks):
        x = _conformer_block(x, conformer, model_config.dropout, f"conformer_{i}")
    return x


def state(model_config: Any) -> tuple[StateSpec, ...]:
    """Per block: ``conformer_<i>_mhsa/key`` and ``/value`` (``(left_context, heads, dim // heads)``;
    ``(None, ...)``, unbounded, without a left context) and ``conformer_<i>_depthwise/input``
    (``(conv_kernel - 1, dim)``; absent when ``conv_kernel`` is 1: that convolution sees the
    current frame only)."""
    cfg = model_config.conformer
    specs = []
    for i in range(cfg.blocks):
        head = (cfg.attention_left_context, int(cfg.heads), int(cfg.dim // cfg.heads))
        specs += [StateSpec(f"conformer_{i}_mhsa/key", "attention_cache", head),
                  StateSpec(f"conformer_{i}_mhsa/value", "attention_cache", head)]
        if cfg.conv_kernel > 1:
            specs.append(StateSpec(f"conformer_{i}_depthwise/input", "conv_cache",
                                   (int(cfg.conv_kernel - 1), int(cfg.dim))))
    return tuple(specs)


ENCODER = Encoder("conformer", build, state)
