"""The LSTM encoder (``model.encoder: lstm``): a stack of unidirectional ``keras.layers.LSTM``.

Plain Keras LSTMs, so TFLite converts them to fused LSTM ops; unidirectional, so the encoder is
causal and streams. One layer per ``model.lstm_units`` entry, named ``lstm_<i>``, each followed by
``dropout_<i>`` when ``model.dropout > 0`` (training only).

State: each layer carries its hidden state ``h`` and cell state ``c`` (``units`` floats each) from
one frame to the next.

Example:
    >>> [s.name for s in state(ModelConfig(lstm_units=(256, 128)))]
    ['lstm_0/h', 'lstm_0/c', 'lstm_1/h', 'lstm_1/c']
"""
from __future__ import annotations

from typing import Any

import tf_keras as keras

from dsnn_keras.encoders import Encoder, StateSpec


def build(x: Any, model_config: Any) -> Any:
    """Appends the LSTM stack to a functional graph.

    Args:
        x: Symbolic ``[batch, frames, width]``.
        model_config: `dsnn_keras.config.ModelConfig` (``lstm_units``, ``dropout``).

    Returns:
        Symbolic ``[batch, frames, lstm_units[-1]]``.
    """
    for i, units in enumerate(model_config.lstm_units):
        x = keras.layers.LSTM(units, return_sequences=True, name=f"lstm_{i}")(x)
        if model_config.dropout > 0:
            x = keras.layers.Dropout(model_config.dropout, name=f"dropout_{i}")(x)
    return x


def state(model_config: Any) -> tuple[StateSpec, ...]:
    """``lstm_<i>/h`` and ``lstm_<i>/c``, ``(units,)`` recurrent vectors, for every layer."""
    return tuple(StateSpec(f"lstm_{i}/{part}", "recurrent", (int(units),))
                 for i, units in enumerate(model_config.lstm_units) for part in ("h", "c"))


ENCODER = Encoder("lstm", build, state)
