"""tflite.cost: multiply-adds of every layer with weights, or a loud error."""
import numpy as np
import pytest
import tf_keras as keras

from dsnn_keras.frontend import FeatureConfig
from tflite.cost import CostError, level_cost

FC = FeatureConfig()
T = FC.num_frames(FC.sample_rate)   # frames in one second of audio


def _model(*layers_after_input):
    inp = keras.Input((None, FC.num_mel_bins))
    x = keras.layers.Dense(8, name="proj")(inp)
    for make in layers_after_input:
        x = make(x)
    return keras.Model(inp, keras.layers.Dense(5, name="out")(x))


def test_attention_and_depthwise_convolution_are_counted():
    attention = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4, name="mha")
    model = _model(lambda x: attention(x, x),
                   keras.layers.LayerNormalization(),
                   keras.layers.DepthwiseConv1D(3, padding="same", name="dw"))
    macs = level_cost(model, FC)["macs_per_second"]
    projections = 4 * (8 * 2 * 4)            # query, key, value [8, 2, 4]; output [2, 4, 8]
    scores_and_context = T * T * 2 * (4 + 4)
    expected = T * FC.num_mel_bins * 8 + T * projections + scores_and_context + T * 3 * 8 + T * 8 * 5
    assert macs == expected


def test_zeros_in_the_kernels_are_not_counted():
    model = _model(keras.layers.Conv1D(8, 3, padding="same", name="conv"))
    before = level_cost(model, FC)["macs_per_second"]
    kernel = model.get_layer("conv").kernel
    kernel.assign(np.where(np.arange(kernel.shape[-1]) < 4, kernel.numpy(), 0.0))   # half the filters zero
    assert level_cost(model, FC)["macs_per_second"] == before - T * 3 * 8 * 4


def test_a_layer_it_cannot_cost_is_named_in_the_error():
    model = _model(keras.layers.GRU(6, return_sequences=True, name="gru"))
    with pytest.raises(CostError, match=r"gru \(GRU\)"):
        level_cost(model, FC)
