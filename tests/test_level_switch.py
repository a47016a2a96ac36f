"""dsnn_keras.level_switch: the training model's forward pass of a level switch mid-utterance."""
from __future__ import annotations

import numpy as np
import pytest

import dsnn_keras
from dsnn_keras.level_switch import LevelSwitchError, check_switchable, switch_draw, switched_logits
from dsnn_keras.sparsity.units import kept_unit_indices
from dsnn_keras.streaming import StreamingModel
from harness import STREAM_LEVELS, causal_recognizer, random_features
from harness import unit_pruned_recognizer, zero_pruned_state


def _at_level(model, features, level):
    with dsnn_keras.sparsity_level_scope(model, level):
        return model(features[np.newaxis], training=False)[0].numpy()


def test_a_switch_to_the_same_level_is_that_level_s_model():
    model = unit_pruned_recognizer()
    features = random_features(40, seed=4)
    for level in range(len(STREAM_LEVELS)):
        out = switched_logits(model, features[np.newaxis], level, level, 4, training=False)[0].numpy()
        np.testing.assert_array_equal(out, _at_level(model, features, level))


@pytest.mark.parametrize("level_a, level_b, cut", [(0, 3, 4), (3, 0, 4), (1, 2, 7), (0, 3, 1)])
def test_a_switch_equals_the_stream_that_switches_level_at_that_frame(level_a, level_b, cut):
    # The runtime's semantics (docs/streaming.md): the state carries over, the units the new level
    # prunes read as 0. Output frame `cut` is the first one whose input frames end at 4 * cut.
    model = unit_pruned_recognizer()
    features = random_features(40, seed=5)
    streams = [StreamingModel(dsnn_keras.strip_nested(model, level)) for level in (level_a, level_b)]
    first, state = streams[0].step(features[:4 * cut], streams[0].initial_state())
    second, _ = streams[1].step(features[4 * cut:], zero_pruned_state(state, kept_unit_indices(model, level_b)))
    expected = np.concatenate([first.numpy(), second.numpy()])
    out = switched_logits(model, features[np.newaxis], level_a, level_b, cut, training=False)[0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(out[:cut], _at_level(model, features, level_a)[:cut])   # causal: level a's
    assert not np.allclose(out[cut:], _at_level(model, features, level_b)[cut:], atol=1e-3)   # not a fresh b


def test_a_model_that_looks_ahead_or_is_not_a_chain_is_refused_naming_the_layer():
    import tf_keras as keras

    schedule = dsnn_keras.NestedPolynomialDecay(STREAM_LEVELS, begin_step=0, end_step=0)
    same = dsnn_keras.prune_nested(causal_recognizer(conv_padding="same"), schedule,
                                   prune_layers=["conv_0", "conv_1", "lstm_0", "lstm_1"], granularity="unit")
    with pytest.raises(LevelSwitchError, match=r"conv_0.*'same'.*conv_padding: causal"):
        check_switchable(same)
    inputs = keras.Input([None, 4])
    branch = keras.layers.Dense(4, name="branch")(inputs)
    merged = keras.layers.Add(name="merge")([inputs, branch])
    with pytest.raises(LevelSwitchError, match="'merge' does not read the layer before it"):
        check_switchable(keras.Model(inputs, merged))
    check_switchable(unit_pruned_recognizer())   # the causal LSTM recognizer is accepted


def test_an_unpruned_convolution_in_a_pruned_model_is_refused():
    schedule = dsnn_keras.NestedPolynomialDecay(STREAM_LEVELS, begin_step=0, end_step=0)
    partly = dsnn_keras.prune_nested(causal_recognizer(seed=1), schedule, prune_layers=["conv_0", "lstm_0", "lstm_1"],
                                     granularity="unit")
    with pytest.raises(LevelSwitchError, match="'conv_1' is not pruned"):
        check_switchable(partly)


def test_the_drawn_switch_is_two_different_levels_and_a_cut_inside_the_frames_repeatably():
    seen_pairs = set()
    for step in range(200):
        for levels, frames in ((2, 2), (3, 9), (4, 60)):
            a, b, cut = (int(v) for v in switch_draw(0, step, levels, frames))
            assert 0 <= a < levels and 0 <= b < levels and a != b
            assert 1 <= cut <= frames - 1 and (frames < 8 or frames // 4 <= cut <= 3 * frames // 4)
            if levels == 4:
                seen_pairs.add((a, b))
    assert len(seen_pairs) == 12   # every ordered pair of 4 levels
    assert [int(v) for v in switch_draw(3, 17, 4, 60)] == [int(v) for v in switch_draw(3, 17, 4, 60)]
    assert [int(v) for v in switch_draw(3, 17, 4, 60)] != [int(v) for v in switch_draw(4, 17, 4, 60)]
    with pytest.raises(LevelSwitchError, match="two or more levels"):
        switch_draw(0, 0, 1, 10)


def test_with_weight_masks_a_switch_carries_the_whole_state_like_the_stream():
    # Weight granularity keeps every unit at every level (its masks zero weights, not units), so the
    # state crosses the switch whole, as in the masked streams the export builds for such a run.
    schedule = dsnn_keras.NestedPolynomialDecay(STREAM_LEVELS, begin_step=0, end_step=0)
    model = dsnn_keras.prune_nested(causal_recognizer(seed=2), schedule, prune_layers=["conv_0", "conv_1", "lstm_0",
                                                                                      "lstm_1"])
    dsnn_keras.update_nested_masks(model, 0)
    features = random_features(36, seed=6)
    streams = [StreamingModel(dsnn_keras.strip_nested(model, level)) for level in (0, 3)]
    first, state = streams[0].step(features[:16], streams[0].initial_state())
    second, _ = streams[1].step(features[16:], state)
    out = switched_logits(model, features[np.newaxis], 0, 3, 4, training=False)[0].numpy()
    np.testing.assert_allclose(out, np.concatenate([first.numpy(), second.numpy()]), atol=1e-5)
    assert not np.allclose(out[4:], _at_level(model, features, 3)[4:], atol=1e-3)
