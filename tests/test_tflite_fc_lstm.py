"""tflite.fc_lstm: the FC-loop LSTM equals keras LSTM, and the sparse-speed export keeps parity."""
import numpy as np
import pytest

import harness_tflite as h


def test_fc_loop_lstm_matches_keras_lstm():
    from tflite.fc_lstm import replace_lstms

    model = h.level_models(levels=(0.5,))[0]
    features = h.features_of(h.speechlike(0.8, seed=21))[None]
    fc_model = replace_lstms(model)
    assert not any(type(layer).__name__ == "LSTM" for layer in fc_model.layers)
    np.testing.assert_allclose(fc_model(features).numpy(), model(features).numpy(), atol=1e-5)


def test_rejects_an_lstm_it_cannot_express():
    import tf_keras as keras

    from tflite.fc_lstm import FCLoopLSTM

    layer = keras.layers.LSTM(4, activation="relu")
    layer(np.zeros([1, 2, 3], np.float32))
    with pytest.raises(ValueError, match="activation must be tanh"):
        FCLoopLSTM(layer)


def test_sparse_speed_export_uses_fc_ops_sparse_storage_and_matches_every_level():
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer
    from tflite.metadata import read_metadata

    path = h.exported("sparse")
    data = path.read_bytes()
    names = {op.name for op in flatbuffer.operators(data)}
    assert {"WHILE", "FULLY_CONNECTED", "IF"} <= names
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" not in names
    assert all(op.is_builtin for op in flatbuffer.operators(data))
    assert flatbuffer.sparse_tensor_count(data) > 0
    assert read_metadata(path).raw["export"]["design"] == "if_tree_fc_loop"
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(1.1, seed=22))
    h.assert_level_parity(runner, h.reference_models(), features)
    first = runner(features=features, sparsity_level=np.int32(1))["log_probs"]
    runner(features=features[:20], sparsity_level=np.int32(1))
    np.testing.assert_array_equal(first, runner(features=features, sparsity_level=np.int32(1))["log_probs"])
