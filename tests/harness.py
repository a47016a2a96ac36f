"""Reusable checks for nested-mask layers and models (in the spirit of keras-hub's TestCase).

- `run_nested_layer_test(layer_factory, inputs)`: wraps one layer in a tiny functional model and
  checks, at every sparsity level: exact kept counts, nesting, scope == stored level == strip,
  stored weights never overwritten, zero gradients to masked weights.
- `run_serialization_test(model, inputs, tmp_path)`: `.keras`, SavedModel and tf.train.Checkpoint
  round trips keep weights, codes, step and schedule; outputs identical at every level.
- `outputs_per_level(model, inputs)`: the model's outputs at each level (for parity checks, e.g.
  against an exported TFLite model).
- `causal_recognizer()`, `unit_pruned_recognizer()`, `random_features(frames)` and
  `zero_pruned_state(state, kept)`: a small streamable model, pruned by whole units at
  `STREAM_LEVELS`, its inputs, and the streaming state a level switch hands on (the streaming and
  level-switch tests).

Example:
    >>> from harness import run_nested_layer_test   # tests/ is on sys.path under pytest
    >>> run_nested_layer_test(lambda: keras.layers.Dense(4), np.ones([2, 3], "float32"))
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras.prunable_layer import PrunableLayer

from dsnn_keras import (
    NestedPolynomialDecay,
    level_codes,
    prune_nested,
    set_sparsity_level,
    sparsity_level_scope,
    sparsity_levels,
    strip_nested,
    update_nested_masks,
)
from dsnn_keras.sparsity.wrapper import collect_nested_wrappers

DEFAULT_LEVELS = (0.0, 0.5, 0.75)


def one_shot_schedule(levels: Sequence[float] = DEFAULT_LEVELS) -> NestedPolynomialDecay:
    """A schedule that applies the final levels at step 0."""
    return NestedPolynomialDecay(levels, begin_step=0, end_step=0, frequency=1)


def expected_kept(num_items: int, sparsity: float) -> int:
    """The documented rule: Python's round (half to even) of N * (1 - s)."""
    return round(num_items * (1.0 - sparsity))


def outputs_per_level(model, inputs, **call_kwargs) -> list[np.ndarray]:
    """The model's output at every level (through `sparsity_level_scope`)."""
    outs = []
    for level in range(len(sparsity_levels(model))):
        with sparsity_level_scope(model, level):
            outs.append(np.asarray(model(inputs, **call_kwargs)))
    return outs


def _as_list(inputs):
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def build_wrapped_model(layer_factory: Callable[[], keras.layers.Layer], inputs, levels=DEFAULT_LEVELS,
                        block_size=(1, 1), call: Callable | None = None):
    """A functional model around one fresh layer, and its nested-wrapped version.

    Args:
        layer_factory: Returns a fresh, unbuilt layer.
        inputs: One array or a list of arrays (batch first).
        levels: Sparsity levels. Defaults to DEFAULT_LEVELS.
        block_size: Passed to `prune_nested`.
        call: `call(layer, input_tensors) -> output tensor`. Defaults to `layer(*input_tensors)`.

    Returns:
        `(base_model, wrapped_model)`; the wrapped model shares the base model's weights.
    """
    arrays = _as_list(inputs)
    keras_inputs = [keras.Input(a.shape[1:], dtype=a.dtype) for a in arrays]
    layer = layer_factory()
    out = call(layer, keras_inputs) if call else layer(*keras_inputs)
    base = keras.Model(keras_inputs, out)
    return base, prune_nested(base, one_shot_schedule(levels), block_size=block_size)


def run_nested_layer_test(layer_factory, inputs, levels=DEFAULT_LEVELS, block_size=(1, 1), call=None,
                          atol: float = 1e-5, expect_weights: int | None = None):
    """Wraps one layer and checks the nested-mask contract at every level.

    Returns:
        The wrapped model (masks computed at the final levels).
    """
    arrays = _as_list(inputs)
    feed = arrays if len(arrays) > 1 else arrays[0]
    base, model = build_wrapped_model(layer_factory, inputs, levels, block_size, call)
    wrappers = collect_nested_wrappers(model)
    assert len(wrappers) == 1, f"expected one wrapper, got {[w.name for w in wrappers]}"
    wrapper = wrappers[0]
    if expect_weights is not None:
        assert len(wrapper.nested_weights) == expect_weights, [w.key for w in wrapper.nested_weights]

    # Before any mask update every level is dense: identical to the unwrapped model.
    dense_out = np.asarray(base(feed))
    for out in outputs_per_level(model, feed):
        np.testing.assert_allclose(out, dense_out, atol=atol)

    update_nested_masks(model, 0)
    stored = {id(w.variable): w.variable.numpy().copy() for w in wrapper.nested_weights}
    codes = level_codes(model)
    for w in wrapper.nested_weights:
        c = codes[w.key]
        assert c.dtype == np.uint8 and c.shape == tuple(w.variable.shape)
        assert c.min() >= 0 and c.max() <= len(levels)
        masks = [c > i for i in range(len(levels))]
        for i in range(1, len(levels)):
            assert not np.any(masks[i] & ~masks[i - 1]), f"{w.key}: level {i} not nested in level {i - 1}"
        if tuple(block_size) == (1, 1):
            for i, s in enumerate(levels):
                assert masks[i].sum() == expected_kept(c.size, s), (w.key, i, masks[i].sum(), c.size, s)

    per_level = outputs_per_level(model, feed)
    for level in range(len(levels)):
        set_sparsity_level(model, level)
        np.testing.assert_allclose(np.asarray(model(feed)), per_level[level], atol=atol)
        stripped = strip_nested(model, level)
        assert not collect_nested_wrappers(stripped)
        np.testing.assert_allclose(np.asarray(stripped(feed)), per_level[level], atol=atol)
    set_sparsity_level(model, 0)

    # Gradients to weights masked at the active level are zero; stored weights are untouched.
    top = len(levels) - 1
    with tf.GradientTape() as tape:
        with sparsity_level_scope(model, top):
            loss = tf.reduce_sum(tf.square(tf.cast(model(feed, training=True), tf.float32)))
    grads = tape.gradient(loss, [w.variable for w in wrapper.nested_weights])
    for w, g in zip(wrapper.nested_weights, grads):
        assert g is not None, f"no gradient for {w.key}"
        g = tf.convert_to_tensor(g).numpy()
        pruned = codes[w.key] <= top
        assert np.all(g[pruned] == 0), f"{w.key}: gradient leaks into weights pruned at level {top}"
        np.testing.assert_array_equal(w.variable.numpy(), stored[id(w.variable)])
    if levels[0] == 0.0:
        assert any(np.any(w.variable.numpy()[codes[w.key] <= top] != 0) for w in wrapper.nested_weights), \
            "the dense weights were overwritten by the sparse level"
    return model


def run_serialization_test(model, inputs, tmp_path, formats=("keras", "savedmodel", "checkpoint"), atol=0.0):
    """Round-trips a nested-wrapped model and checks outputs, codes, step and schedule.

    Args:
        model: A built nested-wrapped model (ideally with masks updated).
        inputs: Model inputs.
        tmp_path: A pathlib.Path to write into.
        formats: Any of "keras", "savedmodel", "checkpoint".
        atol: Output tolerance. Defaults to 0 (identical).

    Returns:
        The restored models, by format.
    """
    reference = outputs_per_level(model, inputs)
    codes = level_codes(model)
    wrappers = collect_nested_wrappers(model)
    steps = [int(w.pruning_step.numpy()) for w in wrappers]
    schedules = [w.pruning_schedule.get_config() for w in wrappers]
    restored = {}
    if "keras" in formats:
        path = str(tmp_path / "model.keras")
        model.save(path)
        restored["keras"] = keras.models.load_model(path)
    if "savedmodel" in formats:
        path = str(tmp_path / "savedmodel")
        model.save(path, save_format="tf")
        restored["savedmodel"] = keras.models.load_model(path)
    if "checkpoint" in formats:
        prefix = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt" / "ckpt"))
        clone = keras.models.clone_model(model)
        clone(inputs)  # build every variable before restoring
        tf.train.Checkpoint(model=clone).restore(prefix).assert_existing_objects_matched()
        restored["checkpoint"] = clone
    for name, other in restored.items():
        other_codes = level_codes(other)
        assert list(other_codes) == list(codes), (name, list(other_codes))
        for key in codes:
            np.testing.assert_array_equal(other_codes[key], codes[key], err_msg=f"{name}: codes of {key}")
        other_wrappers = collect_nested_wrappers(other)
        assert [int(w.pruning_step.numpy()) for w in other_wrappers] == steps, name
        assert [w.pruning_schedule.get_config() for w in other_wrappers] == schedules, name
        for level, (got, want) in enumerate(zip(outputs_per_level(other, inputs), reference)):
            np.testing.assert_allclose(got, want, atol=atol, err_msg=f"{name}: level {level}")
    return restored


class ScaledDense(keras.layers.Layer, PrunableLayer):
    """A custom prunable layer (two prunable weights, one not), for registry and wrapper tests."""

    def __init__(self, units=3, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight("w", shape=(input_shape[-1], self.units))
        self.v = self.add_weight("v", shape=(self.units, self.units))
        self.scale = self.add_weight("scale", shape=(self.units,), initializer="ones")

    def call(self, x):
        return tf.matmul(tf.matmul(x, self.w), self.v) * self.scale

    def get_prunable_weights(self):
        return [self.w, self.v]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def _same_width_padding(width: int, kernel: int, stride: int) -> tuple[int, int]:
    out = (width + stride - 1) // stride
    total = max((out - 1) * stride + kernel - width, 0)
    return total // 2, total - total // 2


def causal_recognizer(seed: int = 0, time_padding=None, conv_padding: str = "valid", bins: int = 20,
                      classes: int = 7, end_padding: int = 0, running_mean_frames: int = 0) -> keras.Model:
    """A small streamable recognizer: CMVN -> 2 x (left pad, stride-2 valid Conv2D) -> 2 LSTMs -> Dense.

    ``conv_padding="same"`` gives the look-ahead front-end instead (no pad layers);
    ``end_padding=1`` (with ``time_padding=1``) the fixed one-frame look-ahead of ``conv_padding: lookahead``;
    ``running_mean_frames`` > 0 a `RunningMeanNorm` after the CMVN.
    """
    from dsnn_keras.model import CMVN
    from dsnn_keras.subsampling import RunningMeanNorm

    keras.utils.set_random_seed(seed)
    features = keras.Input([None, bins])
    x = CMVN(np.zeros(bins), np.ones(bins), name="cmvn")(features)
    if running_mean_frames:
        x = RunningMeanNorm(running_mean_frames, name="running_mean")(x)
    x = keras.layers.Reshape([-1, bins, 1], name="add_channel")(x)
    width = bins
    for i in range(2):
        if conv_padding == "valid":
            top = 2 if time_padding is None else time_padding
            x = keras.layers.ZeroPadding2D(((top, end_padding), _same_width_padding(width, 3, 2)),
                                           name=f"conv_{i}_pad")(x)
        x = keras.layers.Conv2D(8, 3, strides=2, padding=conv_padding, activation="relu", name=f"conv_{i}")(x)
        width = (width + 1) // 2
    x = keras.layers.Reshape([-1, width * 8], name="flatten_freq")(x)
    x = keras.layers.LSTM(16, return_sequences=True, name="lstm_0")(x)
    x = keras.layers.LSTM(12, return_sequences=True, name="lstm_1")(x)
    return keras.Model(features, keras.layers.Dense(classes, name="logits")(x))


STREAM_LEVELS = (0.0, 0.5, 0.7, 0.9)


def random_features(frames: int, seed: int = 0, bins: int = 20) -> np.ndarray:
    """``frames`` x ``bins`` standard-normal features (``causal_recognizer``'s default 20 bins)."""
    return np.random.default_rng(seed).normal(size=[frames, bins]).astype(np.float32)


def unit_pruned_recognizer(running_mean_frames: int = 0) -> keras.Model:
    """``causal_recognizer(seed=1)`` pruned by whole units (convolutions and LSTMs) at every level of
    `STREAM_LEVELS`, its masks set (a finished run's shape)."""
    base = causal_recognizer(seed=1, running_mean_frames=running_mean_frames)
    schedule = NestedPolynomialDecay(STREAM_LEVELS, begin_step=0, end_step=0)
    model = prune_nested(base, schedule, prune_layers=["conv_0", "conv_1", "lstm_0", "lstm_1"],
                         granularity="unit")
    update_nested_masks(model, 0)
    return model


def zero_pruned_state(state: dict, kept: dict) -> dict:
    """The masked model's state with every unit the level prunes set to 0 (the documented mapping)."""
    positions = {"state_conv_1_frames": ("conv_0", 2), "state_lstm_0_h": ("lstm_0", 0),
                 "state_lstm_0_c": ("lstm_0", 0), "state_lstm_1_h": ("lstm_1", 0), "state_lstm_1_c": ("lstm_1", 0)}
    out = {}
    for name, value in state.items():
        value = np.array(value)
        if name in positions:
            layer, axis = positions[name]
            keep = np.zeros(value.shape[axis], bool)
            keep[kept[layer]] = True
            shape = [1] * value.ndim
            shape[axis] = -1
            value = value * keep.reshape(shape)
        out[name] = value
    return out
