"""tflite.shared_weights: one stored copy of the weights + level codes serves every level."""
import numpy as np
import pytest

import harness_tflite as h


def _buffers(data: bytes) -> list[bytes]:
    from tflite import flatbuffer

    model = flatbuffer._root(data)
    result = []
    for i in range(model.BuffersLength()):
        raw = model.Buffers(i).DataAsNumpy()
        result.append(raw.tobytes() if isinstance(raw, np.ndarray) else b"")
    return result


def _layouts(array: np.ndarray) -> list[bytes]:
    """The bytes a weight could be stored as: as is, transposed (fused-LSTM kernels are [4u, in]),
    or the transposed kernel's four per-gate row blocks (one variable per gate)."""
    chunks = [array.tobytes(), array.T.copy().tobytes()]
    if array.ndim == 2 and array.shape[1] % 4 == 0:
        chunks += [gate.copy().tobytes() for gate in np.split(array.T, 4, axis=0)]
    return chunks


def _stored_once(buffers: list[bytes], array: np.ndarray) -> bool:
    """Whether the weight is in the file exactly once: whole, or as its four gate blocks."""
    whole = [buffers.count(b) for b in _layouts(array)[:2]]
    gates = [buffers.count(b) for b in _layouts(array)[2:]]
    return sorted(whole) == [0, 1] and not any(gates) or (sum(whole) == 0 and gates == [1] * 4)


def test_level_codes_reproduce_every_level_and_skip_identical_tensors():
    from tflite.shared_weights import level_codes_from_models

    models = h.level_models()
    tensors = level_codes_from_models(models)
    per_level = [m.get_weights() for m in models]
    assert [t.codes is not None for t in tensors] == [w.ndim == 2 for w in per_level[0]]
    for tensor in tensors:
        if tensor.codes is None:
            continue
        assert tensor.codes.dtype == np.uint8 and tensor.codes.max() <= len(models)
        for level in range(len(models)):
            np.testing.assert_array_equal(np.where(tensor.codes > level, tensor.values, 0),
                                          per_level[level][tensor.index])


def test_rejects_levels_that_are_not_nested():
    from tflite.shared_weights import SharedWeightsError, level_codes_from_models

    models = h.level_models(levels=(0.5, 0.5))
    weights = models[1].get_weights()
    index = next(i for i, w in enumerate(weights) if w.ndim == 2)
    dropped = np.flatnonzero(weights[index].reshape(-1) == 0)[0]
    weights[index].reshape(-1)[dropped] = 1.0       # kept at the sparser level, dropped at the denser
    models[1].set_weights(weights)
    with pytest.raises(SharedWeightsError, match="nested mask"):
        level_codes_from_models(models)


@pytest.mark.large
def test_shared_float_matches_every_level_switches_and_repeats():
    from ai_edge_litert.interpreter import Interpreter

    from tflite.metadata import read_metadata

    path = h.exported_shared("none")
    meta = read_metadata(path).raw["export"]
    assert meta["design"] == "shared_weights_cached"
    assert meta["shared_weights"]["storage"] == "float32"
    assert all(v["repeat_identical"] and v["nearest_level"] == v["level"] for v in meta["verification"])
    runner = Interpreter(model_path=str(path)).get_signature_runner("recognize_features")
    models = h.reference_models()
    features = h.features_of(h.speechlike(1.2, seed=31))
    h.assert_level_parity(runner, models, features)
    # Level switches in both directions on one interpreter land on the right level.
    for level in (2, 0, 2, 1, 1, 0):
        got = runner(features=features, sparsity_level=np.int32(level))["log_probs"]
        assert np.abs(got - h.keras_log_probs(models[level], features)).max() <= 1e-3, level
    # Same input twice, and after a different-length utterance: identical (LSTM state is reset).
    first = runner(features=features, sparsity_level=np.int32(1))["log_probs"]
    np.testing.assert_array_equal(first, runner(features=features, sparsity_level=np.int32(1))["log_probs"])
    runner(features=features[:30], sparsity_level=np.int32(1))
    np.testing.assert_array_equal(first, runner(features=features, sparsity_level=np.int32(1))["log_probs"])
    clamped = runner(features=features, sparsity_level=np.int32(99))
    assert int(clamped["level"]) == len(models) - 1


def test_shared_file_stores_each_pruned_weight_once_with_builtin_ops_only():
    from tflite import flatbuffer
    from tflite.shared_weights import level_codes_from_models

    data = h.exported_shared("none").read_bytes()
    ops = flatbuffer.operators(data)
    assert all(op.is_builtin for op in ops)
    names = {op.name for op in ops}
    assert {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "IF", "UNIDIRECTIONAL_SEQUENCE_LSTM"} <= names
    buffers = _buffers(data)
    models = h.level_models()
    per_level = [m.get_weights() for m in models]
    for tensor in level_codes_from_models(models):
        if tensor.codes is None:
            continue
        # Level 0's values once (variable initial value and masking source deduplicated), the codes
        # once, and no other level's weights.
        assert _stored_once(buffers, tensor.values.astype(np.float32)), tensor.name
        assert _stored_once(buffers, tensor.codes), tensor.name
        for level in range(1, len(models)):
            other = per_level[level][tensor.index].astype(np.float32)
            assert not any(b in buffers for b in _layouts(other)), tensor.name


@pytest.mark.large
@pytest.mark.parametrize("quantize", ["none", "dynamic-int8", "float16"])
def test_fused_lstms_read_their_per_gate_variables_without_a_split_copy(quantize):
    from tflite import flatbuffer
    from tflite.metadata import read_metadata
    from tflite.shared_weights import _split_fed_lstm_inputs

    path = h.exported_shared(quantize)
    ops = flatbuffer.operators(path.read_bytes())
    lstm_subgraphs = {op.subgraph for op in ops if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM"}
    assert lstm_subgraphs
    for subgraph in lstm_subgraphs:
        names = [op.name for op in ops if op.subgraph == subgraph]
        assert "SPLIT_V" not in names
        # Per pruned LSTM layer: 4 gates x (kernel, recurrent kernel) variables, read once each per
        # invoke (every LSTM of the tiny model is pruned; plus one for the pruned Dense kernel).
        assert names.count("READ_VARIABLE") == 8 * names.count("UNIDIRECTIONAL_SEQUENCE_LSTM") + 1
    assert _split_fed_lstm_inputs(path.read_bytes()) == 0
    meta = read_metadata(path).raw["export"]["shared_weights"]
    # One CONCATENATION -> SPLIT_V pair folded per fused LSTM op and weight (kernel, recurrent kernel).
    assert meta["folded_concat_splits"] == 2 * sum(op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM" for op in ops)


def test_shared_int8_stores_int8_weights_and_keeps_each_level_nearest():
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer
    from tflite.metadata import read_metadata
    from tflite.shared_weights import level_codes_from_models

    path = h.exported_shared("dynamic-int8")
    data = path.read_bytes()
    assert all(op.is_builtin for op in flatbuffer.operators(data))
    meta = read_metadata(path).raw["export"]
    assert meta["shared_weights"]["storage"] == "int8" and meta["quantize"] == "dynamic-int8"
    buffers = _buffers(data)
    for tensor in level_codes_from_models(h.level_models()):
        if tensor.codes is not None:   # no float32 copy of any pruned weight is left in the file
            assert not any(b in buffers for b in _layouts(tensor.values.astype(np.float32))), tensor.name
    float_bytes = h.stored_bytes_without_filterbank(h.exported_shared("none").read_bytes())
    coded = meta["shared_weights"]["coded_weights"]
    # 4-byte floats became 1-byte ints (stored bytes; the frontend filterbank is float32 in both)
    assert h.stored_bytes_without_filterbank(data) <= float_bytes - 2 * coded
    runner = Interpreter(model_path=str(path)).get_signature_runner("recognize_features")
    models = h.reference_models()
    features = h.features_of(h.speechlike(1.2, seed=32))
    references = [h.keras_log_probs(m, features) for m in models]
    for level in (0, 2, 1, 0):
        got = runner(features=features, sparsity_level=np.int32(level))["log_probs"]
        distances = [np.abs(got - r).mean() for r in references]
        assert int(np.argmin(distances)) == level
        assert np.abs(got - references[level]).max() < 0.1


@pytest.mark.parametrize("quantize", ["dynamic-int8", "float16"])
def test_shared_quantized_storage_keeps_no_float_copy_not_even_as_initial_values(quantize):
    from tflite.metadata import read_metadata
    from tflite.shared_weights import CUT_MIN_ELEMENTS, _zero_initial_values, level_codes_from_models

    path = h.exported_shared(quantize)
    data = path.read_bytes()
    # The float32 caches' zero initial values are computed at load (FILL), not stored...
    assert _zero_initial_values(data, CUT_MIN_ELEMENTS) == 0
    width = 4 if quantize == "dynamic-int8" else 2   # float16 exports hold float16 zeros
    assert not [b for b in _buffers(data) if len(b) >= width * 256 and not any(b)]
    # ...no level's float32 weights are stored, in either layout...
    buffers = _buffers(data)
    per_level = [m.get_weights() for m in h.level_models()]
    for tensor in level_codes_from_models(h.level_models()):
        if tensor.codes is None:
            continue
        for weights in per_level:
            assert not any(b in buffers for b in _layouts(weights[tensor.index].astype(np.float32))), tensor.name
    # ...and none in another form either: every pruned weight costs at most its storage bytes + code.
    meta = read_metadata(path).raw["export"]["shared_weights"]
    assert meta["storage"] == {"dynamic-int8": "int8", "float16": "float16"}[quantize]
    coded = meta["coded_weights"]
    # Stored bytes, without the frontend's mel filterbank (float32 in every file, quantized or not):
    # ideally 3 (int8) / 2 (float16) bytes saved per coded weight; int8 keeps ~1.3 KB of other small
    # buffers here, so its bound is 2.5 bytes per weight.
    float_bytes = h.stored_bytes_without_filterbank(h.exported_shared("none").read_bytes())
    saved_per_weight = 2.5 if quantize == "dynamic-int8" else 2
    assert h.stored_bytes_without_filterbank(data) <= float_bytes - saved_per_weight * coded


@pytest.mark.parametrize("quantize", ["none", "dynamic-int8"])
def test_recognize_on_a_fresh_interpreter_materialises_the_level_first(quantize):
    from ai_edge_litert.interpreter import Interpreter

    path = h.exported_shared(quantize)
    audio = h.speechlike(1.3, seed=34)
    for level in (2, 1):
        # A fresh interpreter whose first call is `recognize` (the app's path): the weight caches
        # are written by that signature's own branch, before any read...
        fresh = Interpreter(model_path=str(path)).get_signature_runner("recognize")
        got = fresh(audio=audio, sparsity_level=np.int32(level))
        # ...equal to `recognize` on an interpreter whose caches `recognize_features` wrote.
        warm = Interpreter(model_path=str(path))
        warm.get_signature_runner("recognize_features")(features=h.features_of(audio),
                                                        sparsity_level=np.int32(level))
        want = warm.get_signature_runner("recognize")(audio=audio, sparsity_level=np.int32(level))
        assert int(got["level"]) == level
        np.testing.assert_allclose(got["log_probs"], want["log_probs"], atol=1e-6)
        assert got["tokens"].tolist() == want["tokens"].tolist()
        if quantize == "none":   # and right: the Keras level
            keras = h.keras_log_probs(h.reference_models()[level], h.features_of(audio))
            assert np.abs(got["log_probs"] - keras).max() < 1e-3


def test_shrink_computes_a_zero_initial_value_at_load_instead_of_storing_it(tmp_path):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer
    from tflite.shared_weights import _zero_initial_values, shrink_unread_initial_values

    class Cache(tf.Module):
        def __init__(self):
            super().__init__()
            self.cache = tf.Variable(np.zeros([64, 32], np.float32))

        @tf.function(input_signature=[tf.TensorSpec([64, 32], tf.float32)])
        def write_then_read(self, x):
            before = self.cache.read_value()     # the initial value is read: it must be zeros
            with tf.control_dependencies([before]):
                done = self.cache.assign(x * 2.0)
            with tf.control_dependencies([done]):
                return {"before": before, "y": self.cache.read_value() + 1.0}

    module = Cache()
    tf.saved_model.save(module, str(tmp_path), signatures={"run": module.write_then_read})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path), signature_keys=["run"])
    converter.experimental_enable_resource_variables = True
    data = converter.convert()
    assert _zero_initial_values(data, 1024) == 1
    small, cut = shrink_unread_initial_values(data, 1024)
    assert cut == 1 and _zero_initial_values(small, 1024) == 0
    assert len(small) <= len(data) - 4 * 64 * 32 + 512
    assert "FILL" in {op.name for op in flatbuffer.operators(small)}
    x = np.random.default_rng(0).normal(size=[64, 32]).astype(np.float32)
    for _ in range(3):   # fresh interpreters, repeated invokes (a re-sized variable corrupted the heap)
        runner = Interpreter(model_content=small).get_signature_runner("run")
        first = runner(x=x)
        np.testing.assert_array_equal(first["before"], np.zeros([64, 32], np.float32))
        np.testing.assert_allclose(first["y"], x * 2.0 + 1.0, rtol=1e-6)
        np.testing.assert_allclose(runner(x=-x)["before"], x * 2.0, rtol=1e-6)
    assert shrink_unread_initial_values(data, 4096)[1] == 0     # below min_elements: left alone


def test_shrink_cuts_only_all_zero_float_initial_values():
    from ai_edge_litert.interpreter import Interpreter

    from tflite.shared_weights import shrink_unread_initial_values

    # The float32-storage file's variables start at level 0's (non-zero) weights: nothing to cut.
    data = h.exported_shared("none").read_bytes()
    again, cut = shrink_unread_initial_values(data, 16)
    assert cut == 0
    runner = Interpreter(model_content=again).get_signature_runner("recognize_features")
    features = h.features_of(h.speechlike(0.9, seed=33))
    h.assert_level_parity(runner, h.reference_models(), features)


def test_cli_refuses_shared_design_with_sparse_speed(tmp_path, capsys):
    from tflite.cli import export_main

    code = export_main([str(tmp_path), "--out", str(tmp_path / "m.tflite"), "--design", "shared",
                        "--sparse_speed"])
    assert code == 2
    assert "--design shared cannot be combined with --sparse_speed" in capsys.readouterr().err
