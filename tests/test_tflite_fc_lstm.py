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


@pytest.mark.large
def test_sparse_speed_export_runs_sparse_levels_as_fc_loops_and_matches_every_level():
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer
    from tflite.metadata import read_metadata

    path = h.exported("sparse")
    data = path.read_bytes()
    names = {op.name for op in flatbuffer.operators(data)}
    # Harness levels 0 / 50 / 90 %: below the default 0.6 threshold the fused kernel is kept.
    assert {"WHILE", "FULLY_CONNECTED", "IF", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= names
    assert all(op.is_builtin for op in flatbuffer.operators(data))
    assert flatbuffer.sparse_tensor_count(data) > 0
    export = read_metadata(path).raw["export"]
    assert export["design"] == "if_tree_fc_loop"
    assert export["lstm_kernels"] == ["fused_lstm", "fused_lstm", "fc_loop"]
    assert export["sparse_speed_min_sparsity"] == 0.6
    interpreter = Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(1.1, seed=22))
    h.assert_level_parity(runner, h.reference_models(), features)
    first = runner(features=features, sparsity_level=np.int32(1))["log_probs"]
    runner(features=features[:20], sparsity_level=np.int32(1))
    np.testing.assert_array_equal(first, runner(features=features, sparsity_level=np.int32(1))["log_probs"])


def test_sparse_speed_min_sparsity_zero_runs_every_level_as_fc_loop(tmp_path):
    from tflite import flatbuffer
    from tflite.export import ExportOptions, export_levels
    from tflite.metadata import read_metadata

    models = h.level_models(levels=(0.0, 0.5))
    path = tmp_path / "all_fc.tflite"
    export_levels(models, path, sparsities=(0.0, 0.5), feature_config=h.feature_config(), pieces=h.PIECES,
                  blank_id=h.BLANK_ID, options=ExportOptions(sparse_speed=True, sparse_speed_min_sparsity=0.0))
    names = {op.name for op in flatbuffer.operators(path.read_bytes())}
    assert "WHILE" in names and "UNIDIRECTIONAL_SEQUENCE_LSTM" not in names
    assert read_metadata(path).raw["export"]["lstm_kernels"] == ["fc_loop", "fc_loop"]


def test_sparse_speed_with_no_level_above_the_threshold_is_the_fused_design(tmp_path):
    from tflite import flatbuffer
    from tflite.export import ExportOptions, export_levels
    from tflite.metadata import read_metadata

    path = tmp_path / "fused.tflite"
    export_levels(h.level_models(levels=(0.0, 0.5)), path, sparsities=(0.0, 0.5), feature_config=h.feature_config(),
                  pieces=h.PIECES, blank_id=h.BLANK_ID, options=ExportOptions(sparse_speed=True))
    data = path.read_bytes()
    assert "WHILE" not in {op.name for op in flatbuffer.operators(data)}
    assert flatbuffer.sparse_tensor_count(data) == 0
    export = read_metadata(path).raw["export"]
    assert export["design"] == "if_tree_fused_lstm" and export["lstm_kernels"] == ["fused_lstm", "fused_lstm"]


def test_rejects_a_sparse_speed_threshold_outside_zero_to_one():
    from tflite.export import ExportOptions

    with pytest.raises(ValueError, match="sparse_speed_min_sparsity must be in"):
        ExportOptions(sparse_speed=True, sparse_speed_min_sparsity=1.5)


def test_cli_refuses_a_sparse_speed_threshold_outside_zero_to_one(tmp_path, capsys):
    from tflite.cli import export_main

    code = export_main([str(tmp_path), "--out", str(tmp_path / "m.tflite"), "--sparse_speed",
                        "--sparse_speed_min_sparsity", "-0.1"])
    assert code == 1
    assert "sparse_speed_min_sparsity must be in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()
