"""Unit granularity: nested masks over whole units, exact zeros downstream, narrow models."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import dsnn_keras
from dsnn_keras.sparsity import units as nested_units
from dsnn_keras.config import ModelConfig
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.model import build_model, default_prune_layers
from dsnn_keras.sparsity.wrapper import collect_nested_wrappers
from harness import outputs_per_level, run_serialization_test

LEVELS = (0.0, 0.5, 0.7, 0.9)
BINS = 20


def _unit_model(levels=LEVELS, seed=0):
    keras.utils.set_random_seed(seed)
    base = build_model(ModelConfig(conv_channels=(8, 6), conv_kernel=3, lstm_units=(24, 20), dropout=0.1),
                       FeatureConfig(num_mel_bins=BINS), 7, np.zeros(BINS), np.ones(BINS))
    schedule = dsnn_keras.NestedPolynomialDecay(levels, begin_step=0, end_step=0)
    model = dsnn_keras.prune_nested(base, schedule, prune_layers=default_prune_layers(base, "unit"),
                                    granularity="unit")
    dsnn_keras.update_nested_masks(model, 0)
    return model


def _features(frames=41, seed=0):
    return np.random.default_rng(seed).normal(size=[2, frames, BINS]).astype(np.float32)


def _unit_codes(model):
    return nested_units._unit_codes_now(nested_units.unit_plan(model), model)  # pylint: disable=protected-access


def test_groups_cover_each_unit_and_every_weight_that_reads_it():
    plan = nested_units.unit_plan(_unit_model())
    by_name = {g.name: g for g in plan.groups}
    assert list(by_name) == ["conv_0", "conv_1", "lstm_0", "lstm_1"]
    members = lambda g: {(m.layer, m.path, m.axis, m.own) for m in by_name[g].members}  # noqa: E731
    assert members("lstm_0") == {("lstm_0", "cell.kernel", 1, True), ("lstm_0", "cell.recurrent_kernel", 1, True),
                                 ("lstm_0", "cell.recurrent_kernel", 0, False), ("lstm_0", "cell.bias", 0, True),
                                 ("lstm_1", "cell.kernel", 0, False)}
    assert ("logits", "kernel", 0, False) in members("lstm_1")          # the unwrapped output layer is sliced too
    assert by_name["conv_1"].reshapes == ("flatten_freq",)             # row w * C + c reads channel c
    assert ("lstm_0", "cell.kernel", 0, False) in members("conv_1")


def test_keeps_exactly_the_planned_units_and_they_are_nested():
    model = _unit_model()
    plan = nested_units.unit_plan(model)
    planned = plan.kept_for(LEVELS).numpy()
    codes = _unit_codes(model)
    kept = dsnn_keras.units_kept(model)
    for gi, group in enumerate(plan.groups):
        assert kept[group.name] == [int(k) for k in planned[:, gi]]
        assert kept[group.name][0] == group.units
        sets = [set(np.flatnonzero(codes[group.name] > level)) for level in range(len(LEVELS))]
        for denser, sparser in zip(sets, sets[1:]):
            assert sparser <= denser
    # Level s means the fraction of prunable weights that are zero, as for weight granularity.
    # The plan's accounting is exact, and the nearest a width can get on this tiny model is ~1 %.
    measured = dsnn_keras.measured_sparsities(model)["total"]
    table = plan.sparsity_table[np.argmin(np.abs(plan.sparsity_table[None, :] - np.array(LEVELS)[:, None]), axis=1)]
    np.testing.assert_allclose(measured, table, atol=1e-12)
    np.testing.assert_allclose(measured, LEVELS, atol=0.015)


def test_ranks_units_by_the_norm_of_their_weights():
    model = _unit_model()
    lstm = next(w for w in model.layers if getattr(w, "layer", None) is not None and w.layer.name == "lstm_1").layer
    kernel, recurrent, bias = lstm.get_weights()
    units = recurrent.shape[0]
    scale = np.ones(units, np.float32)
    strong = [3, 17, 5]
    scale[:] = 0.01
    scale[strong] = 10.0
    lstm.set_weights([kernel * np.tile(scale, 4), recurrent * np.tile(scale, 4), bias])
    dsnn_keras.update_nested_masks(model, 0)
    codes = _unit_codes(model)["lstm_1"]
    sparsest = set(np.flatnonzero(codes > len(LEVELS) - 1))
    assert len(sparsest) == dsnn_keras.units_kept(model)["lstm_1"][-1] >= len(strong)
    assert set(strong) <= sparsest     # the three largest-norm units are kept at every level


def test_a_pruned_unit_contributes_nothing_downstream():
    model = _unit_model()
    x = _features()
    codes = _unit_codes(model)
    level = len(LEVELS) - 1
    producers = {g.name: g for g in nested_units.unit_plan(model).groups}
    wrappers = {w.layer.name: w for w in collect_nested_wrappers(model)}
    for name, group in producers.items():
        pruned = np.flatnonzero(codes[name] <= level)
        assert pruned.size
        probe = keras.Model(model.input, wrappers[name].output)
        with dsnn_keras.sparsity_level_scope(model, level):
            out = probe(x, training=False).numpy()
        assert np.all(out[..., pruned] == 0.0), name
        for m in group.members:
            if m.own or m.layer not in wrappers:
                continue
            weight = next(w for w in wrappers[m.layer].nested_weights if w.key == f"{m.layer}/{m.path}")
            masked = weight.variable.numpy() * (weight.code.numpy() > level)
            rows = np.flatnonzero(np.isin(np.arange(masked.shape[m.axis]) % group.units, pruned))
            assert np.all(np.take(masked, rows, axis=m.axis) == 0.0), (name, m)


def test_stored_weights_are_never_overwritten():
    model = _unit_model()
    before = [v.numpy().copy() for v in model.trainable_variables]
    with dsnn_keras.sparsity_level_scope(model, 3):
        model(_features(), training=True)
    dsnn_keras.update_nested_masks(model, 5)
    for a, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())


def test_narrow_model_of_each_level_equals_the_masked_model():
    model = _unit_model()
    x = _features()
    reference = outputs_per_level(model, x, training=False)
    kept = dsnn_keras.units_kept(model)
    for level, want in enumerate(reference):
        narrow = dsnn_keras.narrow_model(model, level)
        assert not collect_nested_wrappers(narrow)
        np.testing.assert_allclose(narrow(x, training=False).numpy(), want, atol=1e-5)
        layers = {l.name: l for l in narrow.layers}
        assert layers["conv_0"].filters == kept["conv_0"][level]
        assert layers["conv_1"].kernel.shape.as_list() == [3, 3, kept["conv_0"][level], kept["conv_1"][level]]
        assert layers["lstm_0"].cell.kernel.shape.as_list()[1] == 4 * kept["lstm_0"][level]
        assert layers["lstm_1"].cell.recurrent_kernel.shape.as_list() == [kept["lstm_1"][level], 4 * kept["lstm_1"][level]]
        assert layers["logits"].kernel.shape.as_list()[0] == kept["lstm_1"][level]
    dense_weights = sum(w.size for w in dsnn_keras.narrow_model(model, 0).get_weights())
    sparsest_weights = sum(w.size for w in dsnn_keras.narrow_model(model, 3).get_weights())
    assert sparsest_weights < 0.25 * dense_weights


def test_serialization_round_trip_keeps_unit_codes_and_outputs(tmp_path):
    model = _unit_model()
    restored = run_serialization_test(model, _features(), tmp_path, formats=("keras", "checkpoint"), atol=1e-6)
    for other in restored.values():
        assert {w.granularity for w in collect_nested_wrappers(other)} == {"unit"}
        assert dsnn_keras.units_kept(other) == dsnn_keras.units_kept(model)


def test_mask_update_runs_inside_a_tf_function_on_the_schedule():
    keras.utils.set_random_seed(0)
    base = build_model(ModelConfig(conv_channels=(4, 4), conv_kernel=3, lstm_units=(12,), dropout=0.0),
                       FeatureConfig(num_mel_bins=BINS), 5, np.zeros(BINS), np.ones(BINS))
    schedule = dsnn_keras.NestedPolynomialDecay((0.0, 0.8), begin_step=10, end_step=20, frequency=5)
    model = dsnn_keras.prune_nested(base, schedule, prune_layers=default_prune_layers(base, "unit"),
                                    granularity="unit")
    model(_features())
    update = tf.function(lambda step: dsnn_keras.update_nested_masks(model, step))
    update(tf.constant(0, tf.int64))
    assert dsnn_keras.measured_sparsities(model)["total"][1] == 0.0
    update(tf.constant(20, tf.int64))
    assert dsnn_keras.measured_sparsities(model)["total"][1] == pytest.approx(0.8, abs=0.03)


def test_a_single_wrapper_cannot_update_unit_masks_alone():
    model = _unit_model()
    wrapper = next(l for l in model.layers if isinstance(l, dsnn_keras.NestedPruneLowMagnitude))
    with pytest.raises(ValueError, match="update_nested_masks"):
        wrapper.update_masks(0)


def test_refuses_a_model_whose_units_feed_a_residual_sum():
    inputs = keras.Input([None, 8])
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Add()([inputs, hidden])
    schedule = dsnn_keras.NestedPolynomialDecay((0.0, 0.5), begin_step=0, end_step=0)
    with pytest.raises(nested_units.UnitPlanError, match="nothing to prune"):
        dsnn_keras.prune_nested(keras.Model(inputs, outputs), schedule, granularity="unit")


def test_unit_granularity_takes_no_blocks():
    base = keras.Sequential([keras.Input([4]), keras.layers.Dense(4), keras.layers.Dense(2)])
    schedule = dsnn_keras.NestedPolynomialDecay((0.0, 0.5), begin_step=0, end_step=0)
    with pytest.raises(ValueError, match="block_size"):
        dsnn_keras.prune_nested(base, schedule, block_size=(4, 1), granularity="unit")


def test_sequential_dense_stack_prunes_hidden_units():
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input([6]), keras.layers.Dense(10, activation="relu", name="a"),
                             keras.layers.Dropout(0.1), keras.layers.Dense(10, activation="tanh", name="b"),
                             keras.layers.Dense(3, name="out")])
    schedule = dsnn_keras.NestedPolynomialDecay((0.0, 0.6), begin_step=0, end_step=0)
    model = dsnn_keras.prune_nested(base, schedule, prune_layers=["a", "b"], granularity="unit")
    dsnn_keras.update_nested_masks(model, 0)
    x = np.random.default_rng(1).normal(size=[5, 6]).astype(np.float32)
    with dsnn_keras.sparsity_level_scope(model, 1):
        want = model(x, training=False).numpy()
    narrow = dsnn_keras.narrow_model(model, 1)
    np.testing.assert_allclose(narrow(x).numpy(), want, atol=1e-6)
    assert [l.units for l in narrow.layers if isinstance(l, keras.layers.Dense)][:2] == \
        [dsnn_keras.units_kept(model)["a"][1], dsnn_keras.units_kept(model)["b"][1]]


def test_evaluation_reports_units_and_kept_fraction_per_level():
    from dsnn_keras.evaluate import markdown_table, nonzero_fractions, units_per_level

    model = _unit_model()
    units = units_per_level(model)
    assert units == dsnn_keras.units_kept(model)
    measured = dsnn_keras.measured_sparsities(model)["total"]
    for level, sparsity in enumerate(measured):
        assert nonzero_fractions(model, level)["prunable_nonzero_fraction"] == pytest.approx(1 - sparsity)
    entry = {"level": 3, "sparsity": 0.9, "wer": 0.5, "cer": 0.25, "rtf": 0.01, "num_utterances": 2,
             "prunable_nonzero_fraction": 0.1, "units": {k: v[3] for k, v in units.items()}}
    assert f"lstm_0 {units['lstm_0'][3]}" in markdown_table({"levels": [entry]})


def test_a_zero_padding_layer_between_convolutions_keeps_the_channel_group():
    inputs = keras.Input([None, BINS, 1])
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv_0")(inputs)
    x = keras.layers.ZeroPadding2D(((2, 0), (1, 1)), name="conv_1_pad")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv_1")(x)
    base = keras.Model(inputs, x)
    schedule = dsnn_keras.NestedPolynomialDecay(LEVELS, begin_step=0, end_step=0)
    model = dsnn_keras.prune_nested(base, schedule, prune_layers=["conv_0"], granularity="unit")
    groups = {g.name: g for g in nested_units.unit_plan(model).groups}
    assert ("conv_1", "kernel", 2, False) in {(m.layer, m.path, m.axis, m.own) for m in groups["conv_0"].members}
