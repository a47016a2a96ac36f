"""Streaming the causal Conformer with a bounded attention context (model.conformer.left_context)."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import dsnn_keras
from dsnn_keras.config import ConfigError, ConformerConfig, ModelConfig, apply_overrides
from dsnn_keras.encoders import encoder_state
from dsnn_keras.encoders.conformer import LocalAttentionMask
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.model import build_model
from dsnn_keras.streaming import StreamingError, StreamingModel
from fixtures_data import SMALL_CONFORMER, small_config
from harness_tflite import stream_step_tflite

BINS = 20
CLASSES = 7
LEFT = 3
LEVELS = (0.0, 0.5, 0.9)


def _model_config(left_context=LEFT, blocks=2, conv_kernel=5) -> ModelConfig:
    conformer = ConformerConfig(dim=16, blocks=blocks, heads=2, ff_mult=2, conv_kernel=conv_kernel,
                                left_context=left_context)
    return ModelConfig(conv_channels=(4, 4), conv_padding="causal", encoder="conformer", conformer=conformer,
                       dropout=0.0)


def _conformer(seed: int = 0, **kwargs) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_model(_model_config(**kwargs), FeatureConfig(num_mel_bins=BINS), CLASSES - 1,
                        np.zeros(BINS, np.float32), np.ones(BINS, np.float32))
    for layer in model.layers:   # LayerNorm scales and offsets away from 1 and 0, so they matter
        if isinstance(layer, keras.layers.LayerNormalization):
            gamma, beta = layer.get_weights()
            rng = np.random.default_rng(seed)
            layer.set_weights([gamma + rng.normal(0, 0.3, gamma.shape), beta + rng.normal(0, 0.3, beta.shape)])
    return model


@functools.lru_cache(maxsize=None)
def _compiled(stream: StreamingModel):
    """The stream's step as one tf.function (what the export converts), traced once."""
    specs = {s.name: tf.TensorSpec(s.shape, getattr(tf, s.dtype), name=s.name) for s in stream.state_specs}

    @tf.function(input_signature=[tf.TensorSpec([None, BINS], tf.float32), specs])
    def step(features, state):
        return stream.step(features, state)

    return step


def _stream(stream: StreamingModel, features: np.ndarray, cuts, state=None):
    state = stream.initial_state() if state is None else state
    step, outputs = _compiled(stream), []
    for start, stop in zip([0, *cuts], [*cuts, len(features)]):
        out, state = step(features[start:stop], state)
        outputs.append(out.numpy())
    return np.concatenate(outputs), state


def _features(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=[frames, BINS]).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _tiny():
    model = _conformer()
    return model, StreamingModel(model)


def _random_cuts(frames: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts, at = [], 0
    while at < frames:
        at += int(rng.integers(0, 9))   # 0: an empty chunk
        cuts.append(min(at, frames))
    return cuts[:-1]


@pytest.mark.parametrize("cuts", ["every_frame", "every_3", "every_8", "random", "random_other", "with_empty"])
def test_chunked_conformer_equals_the_whole_utterance(cuts):
    model, stream = _tiny()
    frames = 61   # 16 encoder frames: several times the left context of 3
    features = _features(frames, seed=1)
    cuts = {"every_frame": list(range(1, frames)), "every_3": list(range(3, frames, 3)),
            "every_8": list(range(8, frames, 8)), "random": _random_cuts(frames, 0),
            "random_other": _random_cuts(frames, 1), "with_empty": [0, 0, 5, 5, 5, 30, 30, 61]}[cuts]
    streamed, _ = _stream(stream, features, cuts)
    whole = model(features[np.newaxis])[0].numpy()
    assert whole.shape[0] == 16 and streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
    assert np.abs(whole).max() > 0.1


def test_state_is_fixed_shape_caches_and_zero_at_the_start():
    _, stream = _tiny()
    specs = {s.name: (s.shape, s.dtype) for s in stream.state_specs if "conformer" in s.name}
    assert specs == {f"state_conformer_{i}_{part}": shape for i in range(2) for part, shape in [
        ("mhsa_keys", ((LEFT, 2, 8), "float32")), ("mhsa_values", ((LEFT, 2, 8), "float32")),
        ("mhsa_valid", ((), "int32")), ("depthwise_frames", ((4, 16), "float32"))]}
    assert all(not value.any() for value in stream.initial_state().values())
    # The front-end's Conv2D state is there too, as for the LSTM model.
    assert {"state_conv_0_frames", "state_conv_1_seen"} <= {s.name for s in stream.state_specs}


def test_the_cache_holds_the_last_left_context_frames_and_counts_them():
    model, stream = _tiny()
    features = _features(20, seed=2)   # 5 encoder frames
    _, state = _stream(stream, features[:4], [])   # 1 encoder frame
    assert int(state["state_conformer_0_mhsa_valid"]) == 1
    keys = np.asarray(state["state_conformer_0_mhsa_keys"])
    assert not keys[:LEFT - 1].any() and keys[LEFT - 1].any()   # the newest frame sits last
    _, state = _stream(stream, features, [4, 4, 13])
    assert int(state["state_conformer_0_mhsa_valid"]) == LEFT
    # The cached keys are the key projection of the last LEFT frames entering the attention.
    inner = keras.Model(model.input, model.get_layer("conformer_0_mhsa_norm").output)(features[np.newaxis])
    want = model.get_layer("conformer_0_mhsa")._key_dense(inner)[0, -LEFT:].numpy()   # pylint: disable=protected-access
    np.testing.assert_allclose(np.asarray(state["state_conformer_0_mhsa_keys"]), want, atol=1e-5)


def test_empty_chunks_emit_nothing_and_keep_the_state():
    _, stream = _tiny()
    _, state = _stream(stream, _features(23, seed=3), [])
    out, after = _compiled(stream)(_features(0), state)
    assert out.shape[0] == 0
    for name, value in state.items():
        np.testing.assert_array_equal(np.asarray(after[name]), np.asarray(value), err_msg=name)


def test_unbounded_attention_is_refused_naming_the_key():
    with pytest.raises(StreamingError, match=r"conformer_0_mhsa.*whole past.*model\.conformer\.left_context"):
        StreamingModel(_conformer(left_context=None, blocks=1))


def test_left_context_zero_means_the_whole_past_as_before():
    unbounded = _conformer(left_context=None, blocks=1)
    zero = _conformer(left_context=0, blocks=1)
    assert [layer.name for layer in zero.layers] == [layer.name for layer in unbounded.layers]
    assert not any(isinstance(layer, LocalAttentionMask) for layer in zero.layers)
    assert [s.shape[0] for s in encoder_state(_model_config(left_context=0)) if s.kind == "attention_cache"] == \
        [None] * 4


def test_the_whole_utterance_attention_reads_only_left_context_frames_back():
    def encoder(left_context):
        model = _conformer(left_context=left_context, blocks=1, conv_kernel=1)
        return keras.Model(model.get_layer("conformer_input").input, model.output)

    rng = np.random.default_rng(4)
    frames = rng.normal(size=[1, 12, 20]).astype(np.float32)
    changed = frames.copy()
    changed[:, :5] += 1.0   # frames 0..4; frame 9 reads 6..9 with a left context of 3
    bounded = encoder(LEFT)
    np.testing.assert_allclose(bounded(frames).numpy()[:, 8:], bounded(changed).numpy()[:, 8:], atol=1e-6)
    assert not np.allclose(bounded(frames).numpy()[:, 7], bounded(changed).numpy()[:, 7], atol=1e-4)
    whole_past = encoder(None)
    assert not np.allclose(whole_past(frames).numpy()[:, 8:], whole_past(changed).numpy()[:, 8:], atol=1e-4)


def test_local_attention_mask_is_a_causal_band_and_serializes():
    mask = LocalAttentionMask(2)(tf.zeros([1, 5, 3]))[0].numpy()
    want = np.array([[j <= i and j >= i - 2 for j in range(5)] for i in range(5)])
    np.testing.assert_array_equal(mask, want)
    assert LocalAttentionMask.from_config(LocalAttentionMask(2).get_config()).left_context == 2
    with pytest.raises(ValueError, match="left_context"):
        LocalAttentionMask(0)


def test_a_bounded_conformer_round_trips_through_its_keras_config():
    model = _conformer(blocks=1)
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    assert copy.get_layer("conformer_0_mhsa_mask").left_context == LEFT
    features = _features(30, seed=8)[np.newaxis]
    np.testing.assert_allclose(copy(features).numpy(), model(features).numpy(), atol=1e-6)


def test_left_context_is_validated_in_the_config():
    config = small_config(model={**SMALL_CONFORMER, "conformer": {**SMALL_CONFORMER["conformer"], "left_context": 8}})
    assert config.model.conformer.left_context == 8 and config.model.conformer.attention_left_context == 8
    assert apply_overrides(config, ["model.conformer.left_context=0"]).model.conformer.attention_left_context is None
    assert apply_overrides(config, ["model.conformer.left_context=null"]).model.conformer.left_context is None
    assert ConformerConfig().left_context is None   # existing configs keep attending to the whole past
    with pytest.raises(ConfigError, match="model.conformer.left_context"):
        apply_overrides(config, ["model.conformer.left_context=-1"])
    with pytest.raises(ConfigError, match="model.conformer.left_context"):
        apply_overrides(config, ["model.conformer.left_context=2.5"])


def test_every_pruning_level_streams_exactly_in_one_state_layout():
    base = _conformer(seed=5, blocks=1)
    schedule = dsnn_keras.NestedPolynomialDecay(LEVELS, begin_step=0, end_step=0)
    names = dsnn_keras.model.default_prune_layers(base)
    model = dsnn_keras.prune_nested(base, schedule, prune_layers=names)
    dsnn_keras.update_nested_masks(model, 0)
    features = _features(45, seed=6)
    outputs, layouts = [], []
    for level in range(len(LEVELS)):
        plain = dsnn_keras.strip_nested(model, level)
        stream = StreamingModel(plain)
        layouts.append(stream.state_specs)
        state, streamed = stream.initial_state(), []
        for start, stop in [(0, 2), (2, 9), (9, 9), (9, 30), (30, 45)]:   # eager: no tracing per level
            out, state = stream.step(features[start:stop], state)
            streamed.append(out.numpy())
        whole = plain(features[np.newaxis])[0].numpy()
        np.testing.assert_allclose(np.concatenate(streamed), whole, atol=1e-4)
        outputs.append(whole)
    assert layouts[0] == layouts[1] == layouts[2]
    assert not np.allclose(outputs[0], outputs[-1], atol=1e-2)   # the masks reach the stream: levels differ


def test_a_residual_block_with_an_lstm_inside_is_refused_naming_the_layer():
    inputs = keras.Input([None, 4])
    y = keras.layers.LSTM(4, return_sequences=True, name="inner_lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Add(name="residual")([inputs, y]))
    with pytest.raises(StreamingError, match="inner_lstm.*residual or multi-input block"):
        StreamingModel(model)


def test_a_conv_padded_on_the_right_inside_a_block_is_refused():
    inputs = keras.Input([None, 4])
    y = keras.layers.ZeroPadding1D((1, 1), name="centred_pad")(inputs)
    y = keras.layers.Conv1D(4, 3, name="centred")(y)
    model = keras.Model(inputs, keras.layers.Add()([inputs, y]))
    with pytest.raises(StreamingError, match=r"centred_pad.*\(2, 0\)"):
        StreamingModel(model)


@pytest.mark.large
def test_the_conformer_step_converts_to_builtin_ops_and_streams_through_litert():
    from ai_edge_litert.interpreter import Interpreter

    from tflite import flatbuffer

    model, stream = _tiny()
    data = stream_step_tflite(stream, BINS)
    assert all(op.is_builtin for op in flatbuffer.operators(data))
    runner = Interpreter(model_content=data).get_signature_runner()
    features = _features(61, seed=7)
    state, outputs = stream.initial_state(), []
    for start, stop in [(0, 1), (1, 1), (1, 4), (4, 4), (4, 17), (17, 18), (18, 61)]:
        result = runner(features=features[start:stop], **state)
        outputs.append(result.pop("logits"))
        state = result
    np.testing.assert_allclose(np.concatenate(outputs), model(features[np.newaxis])[0].numpy(), atol=1e-4)
