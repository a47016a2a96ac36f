"""Streaming a causal recognizer chunk by chunk with explicit state (dsnn_keras.streaming)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import dsnn_keras
from dsnn_keras.sparsity.units import kept_unit_indices, narrow_model
from dsnn_keras.streaming import StreamingError, StreamingModel
from harness import STREAM_LEVELS, causal_recognizer, random_features
from harness import unit_pruned_recognizer, zero_pruned_state
from harness_tflite import stream_step_tflite

BINS = 20   # causal_recognizer's default


def _stream(stream: StreamingModel, features: np.ndarray, cuts, state=None, step=None):
    state = stream.initial_state() if state is None else state
    step = step or stream.step
    outputs = []
    for start, stop in zip([0, *cuts], [*cuts, len(features)]):
        out, state = step(features[start:stop], state)
        outputs.append(np.asarray(out))
    return np.concatenate(outputs), state


@functools.lru_cache(maxsize=None)
def _traced_stream():
    """One causal recognizer and its `StreamingModel.step` traced once (chunks of any length), as the
    export traces it: the 35 chunkings below call it up to 60 times each, ~10x cheaper than eagerly
    (the eager step has tests of its own below)."""
    model = causal_recognizer()
    stream = StreamingModel(model)
    state = {s.name: tf.TensorSpec(s.shape, getattr(tf, s.dtype)) for s in stream.state_specs}
    step = tf.function(stream.step, autograph=False,
                       input_signature=[tf.TensorSpec([None, BINS], tf.float32), state])
    return model, stream, step


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5, 17, 60])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100])
def test_chunked_outputs_equal_the_whole_utterance(frames, chunk):
    model, stream, step = _traced_stream()
    features = random_features(frames)
    streamed, _ = _stream(stream, features, list(range(chunk, frames, chunk)), step=step)
    whole = model(features[np.newaxis])[0].numpy()
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_empty_chunks_emit_nothing_and_keep_the_state():
    stream = StreamingModel(causal_recognizer())
    features = random_features(9)
    state = stream.initial_state()
    _, state = stream.step(features[:5], state)
    out, after = stream.step(features[:0], state)
    assert out.shape[0] == 0
    for name, value in state.items():
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(value))


def test_less_left_padding_than_kernel_minus_one_still_streams_exactly():
    model = causal_recognizer(time_padding=1)
    features = random_features(21)
    streamed, _ = _stream(StreamingModel(model), features, [1, 2, 3, 8, 13])
    np.testing.assert_allclose(streamed, model(features[np.newaxis])[0].numpy(), atol=1e-6)


def test_state_specs_name_every_tensor_with_fixed_shapes_and_start_at_zero():
    stream = StreamingModel(causal_recognizer())
    specs = {s.name: (s.shape, s.dtype) for s in stream.state_specs}
    assert specs == {
        "state_conv_0_frames": ((2, 21, 1), "float32"), "state_conv_0_seen": ((), "int32"),
        "state_conv_1_frames": ((2, 11, 8), "float32"), "state_conv_1_seen": ((), "int32"),
        "state_lstm_0_h": ((16,), "float32"), "state_lstm_0_c": ((16,), "float32"),
        "state_lstm_1_h": ((12,), "float32"), "state_lstm_1_c": ((12,), "float32")}
    assert all(not value.any() for value in stream.initial_state().values())


def test_same_time_padding_is_refused_naming_the_layer_and_the_fix():
    with pytest.raises(StreamingError, match=r"conv_0.*'same'.*causal"):
        StreamingModel(causal_recognizer(conv_padding="same"))


def test_a_residual_block_of_framewise_layers_streams_exactly():
    inputs = keras.Input([None, 4])
    y = keras.layers.Dense(4, name="inner")(inputs)
    model = keras.Model(inputs, keras.layers.Add(name="residual")([inputs, y]))
    stream = StreamingModel(model)
    assert stream.state_specs == []
    features = np.random.default_rng(0).normal(size=[9, 4]).astype(np.float32)
    streamed, _ = _stream(stream, features, [0, 1, 4])
    np.testing.assert_allclose(streamed, model(features[np.newaxis])[0].numpy(), atol=1e-6)


def test_a_reshape_that_mixes_frames_is_refused():
    inputs = keras.Input([None, 4])
    x = keras.layers.Dense(4, name="inner")(inputs)
    model = keras.Model(inputs, keras.layers.Reshape([-1, 8], name="pairs")(x))   # two frames per row
    with pytest.raises(StreamingError, match="pairs.*mixes frames"):
        StreamingModel(model)


def _sliced_streams(model):
    widths = {"conv_0": 8, "conv_1": 8, "lstm_0": 16, "lstm_1": 12}
    return [StreamingModel(narrow_model(model, level), state_units=widths,
                           kept_units=kept_unit_indices(model, level)) for level in range(len(STREAM_LEVELS))]


def test_sliced_levels_share_the_dense_state_layout_and_equal_the_masked_model():
    model = unit_pruned_recognizer()
    features = random_features(23, seed=2)
    sliced = _sliced_streams(model)
    for level, stream in enumerate(sliced):
        masked = StreamingModel(dsnn_keras.strip_nested(model, level))
        assert [(s.name, s.shape) for s in stream.state_specs] == [(s.name, s.shape) for s in masked.state_specs]
        out_sliced, state_sliced = _stream(stream, features, [3, 3, 10])
        out_masked, state_masked = _stream(masked, features, [3, 3, 10])
        np.testing.assert_allclose(out_sliced, out_masked, atol=1e-5)
        for name in state_masked:   # pruned units hold exactly 0 in both
            np.testing.assert_allclose(np.asarray(state_sliced[name]), np.asarray(state_masked[name]), atol=1e-5)


@pytest.mark.parametrize("running_mean_frames", [0, 6])
def test_switching_level_mid_stream_continues_from_the_shared_state(running_mean_frames):
    # With a running mean normalisation its sum and count are the stream's, whatever the level.
    model = unit_pruned_recognizer(running_mean_frames)
    features = random_features(40, seed=3)
    sliced = _sliced_streams(model)
    masked = [StreamingModel(dsnn_keras.strip_nested(model, level)) for level in range(len(STREAM_LEVELS))]
    kept = [kept_unit_indices(model, level) for level in range(len(STREAM_LEVELS))]
    plan = [(0, 0, 9), (3, 9, 21), (1, 21, 30), (0, 30, 40)]
    outputs = {"sliced": [], "masked": []}
    states = {"sliced": sliced[0].initial_state(), "masked": masked[0].initial_state()}
    for level, start, stop in plan:
        out, states["sliced"] = sliced[level].step(features[start:stop], states["sliced"])
        outputs["sliced"].append(out.numpy())
        out, states["masked"] = masked[level].step(features[start:stop],
                                                   zero_pruned_state(states["masked"], kept[level]))
        outputs["masked"].append(out.numpy())
        for name, value in zero_pruned_state(states["sliced"], kept[level]).items():
            np.testing.assert_array_equal(value, np.asarray(states["sliced"][name]))   # pruned units hold 0
    switched = np.concatenate(outputs["sliced"])
    np.testing.assert_allclose(switched, np.concatenate(outputs["masked"]), atol=1e-5)
    # From the switch on, the outputs are level 3's, not level 0's.
    fixed_zero, _ = _stream(sliced[0], features, [9, 21, 30])
    assert not np.allclose(switched[3:6], fixed_zero[3:6], atol=1e-3)


def test_the_step_converts_to_builtin_tflite_ops_and_streams_through_litert():
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer

    model = causal_recognizer()
    stream = StreamingModel(model)
    data = stream_step_tflite(stream, BINS)
    assert all(op.is_builtin for op in flatbuffer.operators(data))
    runner = Interpreter(model_content=data).get_signature_runner()
    features = random_features(40)
    state, outputs = stream.initial_state(), []
    for start, stop in [(0, 1), (1, 1), (1, 7), (7, 40)]:
        result = runner(features=features[start:stop], **state)
        outputs.append(result.pop("logits"))
        state = result
    np.testing.assert_allclose(np.concatenate(outputs), model(features[np.newaxis])[0].numpy(), atol=1e-5)
