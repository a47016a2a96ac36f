"""Which weights are prunable: tfmot's registry + EinsumDense + PrunableLayer, embeddings excluded."""
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras.prunable_layer import PrunableLayer

from dsnn_keras.sparsity import registry as reg
from harness import ScaledDense


@pytest.mark.parametrize(
    "layer, paths",
    [
        (keras.layers.Dense(2), ["kernel"]),
        (keras.layers.Conv1D(2, 3), ["kernel"]),
        (keras.layers.Conv2D(2, 3), ["kernel"]),
        (keras.layers.LSTM(2), ["cell.kernel", "cell.recurrent_kernel"]),
        (keras.layers.GRU(2), ["cell.kernel", "cell.recurrent_kernel"]),
        (keras.layers.EinsumDense("ab,bc->ac", output_shape=2), ["kernel"]),
        (keras.layers.MultiHeadAttention(2, 4),
         ["_query_dense.kernel", "_key_dense.kernel", "_value_dense.kernel", "_output_dense.kernel"]),
        (keras.layers.Embedding(10, 4), []),
        (keras.layers.LayerNormalization(), []),
        (keras.layers.Dropout(0.1), []),
    ],
)
def test_default_paths_prune_kernels_not_biases_norms_or_embeddings(layer, paths):
    assert reg.supports(layer)
    assert reg.default_weight_paths(layer) == paths
    assert reg.has_prunable_weights(layer) == bool(paths)


def test_custom_prunable_layer_reports_its_own_weights():
    layer = ScaledDense()
    layer.build((None, 4))
    assert reg.supports(layer) and reg.default_weight_paths(layer) is None
    assert reg.prunable_variables(layer) == [layer.w, layer.v]


def test_wrappers_and_unknown_weighted_layers_are_unsupported():
    bidi = keras.layers.Bidirectional(keras.layers.LSTM(2))
    bidi.build((None, 5, 3))
    assert not reg.supports(bidi)
    assert reg.unsupported_layers([bidi, keras.layers.Dense(2)]) == [bidi]


def test_explicit_paths_can_prune_embeddings_and_biases():
    emb = keras.layers.Embedding(10, 4)
    emb.build((None,))
    assert reg.prunable_variables(emb, ["embeddings"]) == [emb.embeddings]
    dense = keras.layers.Dense(2)
    dense.build((None, 3))
    assert reg.prunable_variables(dense, ["kernel", "bias"]) == [dense.kernel, dense.bias]
    with pytest.raises(ValueError, match="has no weight 'gamma'"):
        reg.prunable_variables(dense, ["gamma"])


def test_locates_each_weight_by_attribute_path():
    lstm = keras.layers.LSTM(3)
    lstm.build((None, 4, 2))
    owner, attribute, path = reg.locate_variable(lstm, lstm.cell.recurrent_kernel)
    assert owner is lstm.cell and attribute == "recurrent_kernel" and path == "cell.recurrent_kernel"
    stacked = keras.layers.RNN([keras.layers.LSTMCell(2), keras.layers.LSTMCell(2)])
    stacked.build((None, 4, 2))
    assert reg.default_weight_paths(stacked) == [
        "cell.cells.0.kernel", "cell.cells.0.recurrent_kernel", "cell.cells.1.kernel", "cell.cells.1.recurrent_kernel"]
    assert reg.locate_variable(stacked, stacked.cell.cells[1].kernel)[2] == "cell.cells.1.kernel"


def test_weight_not_held_in_an_attribute_is_a_clear_type_error():
    class Hidden(keras.layers.Layer, PrunableLayer):
        def build(self, input_shape):
            self.ws = {"k": self.add_weight("k", shape=(2, 2))}

        def get_prunable_weights(self):
            return [self.ws["k"]]

    layer = Hidden()
    layer.build((None, 2))
    with pytest.raises(TypeError, match="not held in an attribute"):
        reg.locate_variable(layer, layer.ws["k"])
