"""tflite.export: one .tflite, level as a signature input, builtin ops, per-level parity with Keras."""
import numpy as np
import pytest

import harness_tflite as h


@pytest.fixture(scope="module")
def float_file():
    return h.exported("float")


@pytest.fixture(scope="module")
def interpreter(float_file):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(float_file))


@pytest.fixture(scope="module")
def models():
    return h.reference_models()


def test_written_file_uses_builtin_ops_only(float_file, interpreter):
    from tflite import flatbuffer

    ops = flatbuffer.operators(float_file.read_bytes())
    assert ops and all(op.is_builtin for op in ops), [op for op in ops if not op.is_builtin]
    names = {op.name for op in ops}
    # Level selection through IF, fused LSTM kernels kept inside the branches, frontend in-graph.
    assert {"IF", "UNIDIRECTIONAL_SEQUENCE_LSTM", "RFFT2D", "LOG_SOFTMAX", "ARG_MAX"} <= names
    assert "CUSTOM" not in names and not any(op.startswith("Flex") for op in names)
    # The interpreter's own view of the main graph agrees: no Flex / custom ops.
    assert not any("Flex" in d["op_name"] or d["op_name"] == "CUSTOM" for d in interpreter._get_ops_details())


def test_signatures_take_audio_or_features_and_a_level(interpreter):
    signatures = interpreter.get_signature_list()
    assert sorted(signatures["recognize"]["inputs"]) == ["audio", "sparsity_level"]
    assert sorted(signatures["recognize_features"]["inputs"]) == ["features", "sparsity_level"]
    for name in ("recognize", "recognize_features"):
        assert sorted(signatures[name]["outputs"]) == ["level", "log_probs", "tokens"]


def test_every_level_matches_its_keras_model(interpreter, models):
    runner = interpreter.get_signature_runner("recognize_features")
    for seed in (1, 2):
        h.assert_level_parity(runner, models, h.features_of(h.speechlike(1.2, seed)))


def test_recognize_on_audio_matches_keras_on_frontend_features(interpreter, models):
    runner = interpreter.get_signature_runner("recognize")
    audio = h.speechlike(0.9, seed=3)
    features = h.features_of(audio)
    for level, model in enumerate(models):
        out = runner(audio=audio, sparsity_level=np.int32(level))
        want = h.keras_log_probs(model, features)
        assert np.abs(out["log_probs"] - want).max() <= 1e-3
        assert out["tokens"].tolist() == h.greedy(want)


def test_levels_give_different_outputs(interpreter):
    runner = interpreter.get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(1.0, seed=4))
    outs = [runner(features=features, sparsity_level=np.int32(i))["log_probs"] for i in range(len(h.LEVELS))]
    assert np.abs(outs[0] - outs[-1]).max() > 0.1


def test_repeated_invokes_of_the_same_input_are_identical(interpreter):
    runner = interpreter.get_signature_runner("recognize")
    long, short = h.speechlike(1.5, seed=5), h.speechlike(0.6, seed=6)
    for level in range(len(h.LEVELS)):
        first = runner(audio=short, sparsity_level=np.int32(level))
        runner(audio=long, sparsity_level=np.int32(level))        # a different utterance in between
        runner(audio=short, sparsity_level=np.int32(level))
        again = runner(audio=short, sparsity_level=np.int32(level))
        np.testing.assert_array_equal(first["log_probs"], again["log_probs"])
        np.testing.assert_array_equal(first["tokens"], again["tokens"])


def test_level_switch_between_invokes_runs_the_requested_level(interpreter, models):
    runner = interpreter.get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(1.0, seed=7))
    wanted = {level: h.keras_log_probs(m, features) for level, m in enumerate(models)}
    for level in (2, 0, 2, 1, 0, 1):
        out = runner(features=features, sparsity_level=np.int32(level))
        assert int(out["level"]) == level
        assert np.abs(out["log_probs"] - wanted[level]).max() <= 1e-3


def test_out_of_range_levels_are_clamped(interpreter):
    runner = interpreter.get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(0.5, seed=8))
    top = len(h.LEVELS) - 1
    for asked, expected in ((-7, 0), (top + 1, top), (2**31 - 1, top)):
        out = runner(features=features, sparsity_level=np.int32(asked))
        ref = runner(features=features, sparsity_level=np.int32(expected))
        assert int(out["level"]) == expected
        np.testing.assert_array_equal(out["log_probs"], ref["log_probs"])


@pytest.mark.parametrize("audio", [np.zeros(0, np.float32), np.full(3000, np.nan, np.float32),
                                   np.full(10, np.inf, np.float32), np.zeros(7, np.float32)],
                         ids=["empty", "nan", "inf", "tiny"])
def test_nan_inf_empty_and_tiny_audio_give_a_defined_result(interpreter, audio):
    runner = interpreter.get_signature_runner("recognize")
    silence = runner(audio=np.zeros(max(audio.size, 400), np.float32), sparsity_level=np.int32(0))
    out = runner(audio=audio, sparsity_level=np.int32(0))
    assert out["log_probs"].shape[0] >= 1 and np.isfinite(out["log_probs"]).all()
    # NaN/inf samples count as zeros: the result is that of silence of the same length.
    np.testing.assert_allclose(out["log_probs"], silence["log_probs"], atol=1e-5)


def test_metadata_describes_levels_tokens_and_verification(float_file, models):
    from tflite.metadata import read_metadata

    meta = read_metadata(float_file)
    assert meta.sparsities == list(h.LEVELS)
    assert meta.pieces == h.PIECES and meta.blank_id == h.BLANK_ID
    assert [level["dev_wer"] for level in meta.levels] == pytest.approx([0.2, 0.3, 0.4])
    nonzero = [level["nonzero_weights"] for level in meta.levels]
    assert nonzero == [int(sum(np.count_nonzero(w) for w in m.get_weights())) for m in models]
    macs = [level["macs_per_second"] for level in meta.levels]
    assert macs[0] > macs[1] > macs[2] > 0
    assert meta.feature_config == h.feature_config().to_dict()
    export = meta.raw["export"]
    assert export["design"] == "if_tree_fused_lstm" and export["quantize"] == "none"
    assert [v["level"] for v in export["verification"]] == [0, 1, 2]
    assert all(v["repeat_identical"] and v["max_abs_diff"] <= 1e-3 for v in export["verification"])
    assert meta.raw["versions"]["tensorflow"]


@pytest.mark.large
def test_dynamic_int8_keeps_every_level_and_shrinks_the_file(float_file, models):
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer

    int8_file = h.exported("int8")
    # Two int8 levels vs three float ones; tensors under 1024 weights (and the metadata) stay as they
    # are in a tiny model. Stored bytes without the frontend's mel filterbank, which is float32 in both
    # (quantized files keep the frontend in float; it made up the margin of a 0.6x file-size bound).
    assert h.stored_bytes_without_filterbank(int8_file.read_bytes()) < \
        0.7 * h.stored_bytes_without_filterbank(float_file.read_bytes())
    assert all(op.is_builtin for op in flatbuffer.operators(int8_file.read_bytes()))
    runner = Interpreter(model_path=str(int8_file)).get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(1.0, seed=9))
    for level, original in enumerate(h.INT8_LEVELS):
        got = runner(features=features, sparsity_level=np.int32(level))["log_probs"]
        distances = [np.abs(got - h.keras_log_probs(m, features)).mean() for m in models]
        assert int(np.argmin(distances)) == original
        assert distances[original] < 0.1


def test_rejects_models_with_the_wrong_output_size(tmp_path, models):
    from tflite.export import ExportError, export_levels

    with pytest.raises(ExportError, match="output must be"):
        export_levels(models, tmp_path / "x.tflite", sparsities=h.LEVELS, feature_config=h.feature_config(),
                      pieces=h.PIECES[:-1], blank_id=len(h.PIECES) - 1)
    with pytest.raises(ExportError, match="one each"):
        export_levels(models, tmp_path / "x.tflite", sparsities=h.LEVELS[:2], feature_config=h.feature_config(),
                      pieces=h.PIECES, blank_id=h.BLANK_ID)
    assert not (tmp_path / "x.tflite").exists()


def test_wer_gate_refuses_a_level_above_the_limit():
    from tflite.export import WerGateError, check_wer_gate

    results = {"split": "dev", "levels": [{"level": 0, "wer": 0.2}, {"level": 1, "wer": 0.35}]}
    assert check_wer_gate(results, 2, 0.4) == [0.2, 0.35]
    with pytest.raises(WerGateError, match="level 1: WER 0.3500 exceeds --max_wer 0.3"):
        check_wer_gate(results, 2, 0.3)
    with pytest.raises(WerGateError, match="no eval.json"):
        check_wer_gate(None, 2, 0.3)
    with pytest.raises(WerGateError, match="no WER for level 2"):
        check_wer_gate(results, 3, 0.5)


def test_options_reject_unknown_quantization():
    from tflite.export import ExportOptions

    with pytest.raises(ValueError, match="quantize must be one of"):
        ExportOptions(quantize="int4")


def _integrating_lstm_model(units: int = 4):
    """An LSTM whose cell state counts: +1 per loud frame (features +5), -1 per quiet one (-5).

    Input, forget and output gates are held open (bias 20) and the cell input is
    ``tanh(0.1 * sum(features))`` = ±1, so after 60 loud and 30 quiet frames Keras' cell state is
    30 and its output +1, while a kernel clamping the cell state to [-10, 10] (the converter's
    default for Keras LSTMs) has fallen to -10 with output -1: a trained model's |c| reached 69.
    """
    import tf_keras as keras

    bins = h.feature_config().num_mel_bins
    inputs = keras.Input([None, bins], name="features")
    lstm = keras.layers.LSTM(units, return_sequences=True)
    dense = keras.layers.Dense(h.BLANK_ID + 1)
    model = keras.Model(inputs, dense(lstm(inputs)))
    kernel = np.zeros([bins, 4 * units], np.float32)
    kernel[:, 2 * units:3 * units] = 0.1                   # Keras gate order: i, f, c, o
    bias = np.full([4 * units], 20.0, np.float32)
    bias[2 * units:3 * units] = 0.0
    lstm.set_weights([kernel, np.zeros([units, 4 * units], np.float32), bias])
    dense_kernel = np.zeros([units, h.BLANK_ID + 1], np.float32)
    dense_kernel[:, 1], dense_kernel[:, h.BLANK_ID] = 1.0, -1.0
    dense.set_weights([dense_kernel, np.zeros([h.BLANK_ID + 1], np.float32)])
    return model


def _loud_then_quiet(bins: int = 80) -> np.ndarray:
    return np.concatenate([np.full([60, bins], 5.0), np.full([30, bins], -5.0)]).astype(np.float32)


def _lstm_cell_clips(data: bytes) -> list[float]:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    lstm = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    return [float(op.builtinOptions.cellClip) for subgraph in model.subgraphs for op in subgraph.operators
            if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                   model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == lstm]


def test_keras_lstm_conversion_clips_the_cell_state_and_disabling_the_clip_restores_parity():
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from tflite.export import disable_lstm_cell_clip

    model = _integrating_lstm_model()
    features = _loud_then_quiet()[None]
    want = model(features).numpy()
    assert want[0, -1, 1] > 3.9                              # Keras: cell state 30, output +1
    function = tf.function(lambda x: model(x, training=False),
                           input_signature=[tf.TensorSpec([1, None, 80], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    raw = converter.convert()
    assert _lstm_cell_clips(raw) == [10.0], "converter default changed; revisit disable_lstm_cell_clip"
    patched, cleared = disable_lstm_cell_clip(raw)
    assert cleared == 1 and _lstm_cell_clips(patched) == [0.0]
    assert len(patched) == len(raw)

    def run(data):
        runner = Interpreter(model_content=data).get_signature_runner()
        (name,) = runner.get_input_details()
        return next(iter(runner(**{name: features}).values()))

    assert np.abs(run(raw) - want).max() > 5.0               # clipped: output -1 instead of +1
    np.testing.assert_allclose(run(patched), want, atol=1e-5)
    assert disable_lstm_cell_clip(patched)[1] == 0           # idempotent


@pytest.mark.large
@pytest.mark.parametrize("options", [{}, {"sparse_speed": True, "sparse_speed_min_sparsity": 0.0},
                                     {"design": "shared"}],
                         ids=["fused_lstm", "sparse_speed", "shared_weights"])
def test_export_matches_keras_when_the_lstm_cell_state_exceeds_ten(tmp_path, options):
    from ai_edge_litert.interpreter import Interpreter

    from tflite.export import ExportOptions, export_levels

    model = _integrating_lstm_model()
    path = tmp_path / "integrating.tflite"
    export_levels([model], path, sparsities=[0.0], feature_config=h.feature_config(), pieces=h.PIECES,
                  blank_id=h.BLANK_ID, options=ExportOptions(**options))
    data = path.read_bytes()
    assert all(clip == 0.0 for clip in _lstm_cell_clips(data))
    # Fused LSTM ops (whose clip must be off) in every design but the FC loop.
    assert (len(_lstm_cell_clips(data)) == 0) == bool(options.get("sparse_speed"))
    runner = Interpreter(model_path=str(path)).get_signature_runner("recognize_features")
    h.assert_level_parity(runner, [model], _loud_then_quiet(), tolerance=1e-4)
