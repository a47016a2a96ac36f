"""The encoder registry (dsnn_keras.encoders): built-ins, registration by name, and the streaming
state each encoder reports (checked against the layers it actually builds)."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from dsnn_keras.config import ConfigError, ConformerConfig, ModelConfig
from dsnn_keras.encoders import (BUILTIN_ENCODERS, EncoderError, StateSpec, encoder_names, encoder_state,
                                 get_encoder, register_encoder, unregister_encoder)
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.losses import ctc_loss
from dsnn_keras.model import build_model, build_pruned_model, output_lengths
from fixtures_data import small_config

MEAN, STD = np.zeros(80, np.float32), np.ones(80, np.float32)
REPO = pathlib.Path(__file__).resolve().parents[1]


def _dense_stack(x, model_config):
    """A toy stateless encoder: one relu Dense per ``lstm_units`` entry, frame by frame."""
    for i, units in enumerate(model_config.lstm_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_stack_{i}")(x)
    return x


@pytest.fixture
def dense_stack():
    register_encoder("dense_stack", _dense_stack, state=lambda model_config: ())
    yield "dense_stack"
    unregister_encoder("dense_stack")


def test_registry_lists_the_built_in_encoders_each_in_its_module():
    assert encoder_names()[:2] == ("lstm", "conformer")
    for name, module in BUILTIN_ENCODERS.items():
        encoder = get_encoder(name)
        assert encoder.name == name and encoder.build.__module__ == module


def test_registry_and_model_config_validation_import_no_tensorflow():
    code = ("import sys; from dsnn_keras.encoders import encoder_names; from dsnn_keras.config import ModelConfig\n"
            "ModelConfig(encoder='conformer').validate('x'); print(encoder_names(), 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "('lstm', 'conformer') False"


def test_unknown_encoder_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"model.encoder must be 'lstm' or 'conformer', got 'gru'"):
        small_config(model={"encoder": "gru"})
    with pytest.raises(EncoderError, match="known encoders: lstm, conformer"):
        build_model(ModelConfig(encoder="gru"), FeatureConfig(), 5, MEAN, STD)


def test_registration_refuses_built_in_and_taken_names(dense_stack):
    with pytest.raises(EncoderError, match="built in"):
        register_encoder("lstm", _dense_stack, state=lambda c: ())
    with pytest.raises(EncoderError, match="already registered"):
        register_encoder(dense_stack, _dense_stack, state=lambda c: ())
    assert register_encoder(dense_stack, _dense_stack, state=lambda c: (), replace=True).name == dense_stack
    with pytest.raises(EncoderError, match="identifier"):
        register_encoder("dense stack", _dense_stack, state=lambda c: ())
    with pytest.raises(EncoderError, match="callable"):
        register_encoder("broken", _dense_stack, state=None)
    with pytest.raises(EncoderError, match="not added"):
        unregister_encoder("conformer")


def test_a_registered_encoder_builds_and_trains_by_name(dense_stack):
    config = small_config(model={"encoder": dense_stack, "lstm_units": [6, 5], "conv_channels": [3]})
    assert dense_stack in encoder_names() and encoder_state(config.model) == ()
    model = build_pruned_model(config, FeatureConfig(), 7, MEAN, STD)
    names = [layer.name for layer in build_model(config.model, FeatureConfig(), 7, MEAN, STD).layers]
    assert names[-3:] == ["dense_stack_0", "dense_stack_1", "logits"]
    features = tf.constant(np.random.default_rng(0).normal(size=[2, 11, 80]).astype(np.float32))
    lengths = output_lengths(tf.constant([11, 9]), config.model)
    labels, label_lengths = tf.constant([[1, 2], [3, 0]]), tf.constant([2, 1])
    optimizer = keras.optimizers.SGD(0.1)
    losses = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)
            loss = ctc_loss(labels, logits, label_lengths, lengths, blank_id=7)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        losses.append(float(loss))
    assert logits.shape == (2, 6, 8) and losses[1] < losses[0]


def test_an_unregistered_encoder_is_no_longer_a_valid_config():
    register_encoder("short_lived", _dense_stack, state=lambda c: ())
    assert small_config(model={"encoder": "short_lived"}).model.encoder == "short_lived"
    unregister_encoder("short_lived")
    with pytest.raises(ConfigError, match="model.encoder"):
        small_config(model={"encoder": "short_lived"})


def test_lstm_state_is_h_and_c_of_each_layers_units():
    model_config = ModelConfig(conv_channels=(2,), lstm_units=(6, 4), dropout=0.0)
    specs = encoder_state(model_config)
    assert [(s.name, s.kind, s.shape) for s in specs] == [
        ("lstm_0/h", "recurrent", (6,)), ("lstm_0/c", "recurrent", (6,)),
        ("lstm_1/h", "recurrent", (4,)), ("lstm_1/c", "recurrent", (4,))]
    model = build_model(model_config, FeatureConfig(), 5, MEAN, STD)
    for spec in specs:
        assert model.get_layer(spec.name.split("/")[0]).units == spec.shape[0]
    assert all(spec.bounded for spec in specs)


def test_conformer_state_is_unbounded_attention_caches_and_a_conv_cache():
    conformer = ConformerConfig(dim=8, blocks=2, heads=2, ff_mult=1, conv_kernel=4)
    model_config = ModelConfig(conv_channels=(2,), encoder="conformer", conformer=conformer, dropout=0.0)
    specs = {s.name: s for s in encoder_state(model_config)}
    assert sorted(specs) == sorted(f"conformer_{i}_{part}" for i in range(2)
                                   for part in ("mhsa/key", "mhsa/value", "depthwise/input"))
    model = build_model(model_config, FeatureConfig(), 5, MEAN, STD)
    for i in range(2):
        key = specs[f"conformer_{i}_mhsa/key"]
        attention = model.get_layer(f"conformer_{i}_mhsa").get_config()
        assert key.kind == "attention_cache" and not key.bounded
        assert key.shape == (None, attention["num_heads"], attention["key_dim"]) == specs[f"conformer_{i}_mhsa/value"].shape
        conv = specs[f"conformer_{i}_depthwise/input"]
        depthwise = model.get_layer(f"conformer_{i}_depthwise")
        assert conv.kind == "conv_cache" and conv.shape == (depthwise.kernel_size[0] - 1, depthwise.input_shape[-1]) == (3, 8)
    pointwise = ModelConfig(encoder="conformer", conformer=ConformerConfig(dim=8, blocks=1, heads=2, conv_kernel=1))
    assert [s.kind for s in encoder_state(pointwise)] == ["attention_cache", "attention_cache"]


def test_a_left_context_bounds_the_conformer_attention_caches():
    conformer = ConformerConfig(dim=8, blocks=1, heads=2, ff_mult=1, conv_kernel=4, left_context=6)
    specs = encoder_state(ModelConfig(encoder="conformer", conformer=conformer))
    assert [(s.name, s.shape, s.bounded) for s in specs] == [
        ("conformer_0_mhsa/key", (6, 2, 4), True), ("conformer_0_mhsa/value", (6, 2, 4), True),
        ("conformer_0_depthwise/input", (3, 8), True)]


def test_state_specs_are_validated():
    assert StateSpec("x/h", "recurrent", [3]).shape == (3,)
    assert StateSpec("x/k", "attention_cache", (5, 2, 3)).bounded
    for kind, shape in [("recurrent", (None,)), ("recurrent", (3, 2)), ("attention_cache", (4, 2)),
                        ("attention_cache", (0, 2, 3)), ("attention_cache", (None, 2)),
                        ("conv_cache", (0, 2)), ("conv_cache", (2,)), ("hidden", (2,))]:
        with pytest.raises(EncoderError, match="StateSpec x"):
            StateSpec("x", kind, shape)
    with pytest.raises(EncoderError, match="non-empty"):
        StateSpec("", "recurrent", (2,))


def test_encoder_state_refuses_duplicate_names(dense_stack):
    register_encoder(dense_stack, _dense_stack, replace=True,
                     state=lambda c: (StateSpec("a/h", "recurrent", (2,)), StateSpec("a/h", "recurrent", (2,))))
    with pytest.raises(EncoderError, match="unique"):
        encoder_state(ModelConfig(encoder=dense_stack))
