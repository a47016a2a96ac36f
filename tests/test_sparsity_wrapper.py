"""NestedPruneLowMagnitude: masked kernel for the call only, every supported layer, levels, config."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_callbacks, pruning_schedule
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from dsnn_keras import NestedPruneLowMagnitude, level_codes, sparsity_level_scope, update_nested_masks
from harness import build_wrapped_model, one_shot_schedule, outputs_per_level, run_nested_layer_test
from harness import ScaledDense

RNG = np.random.default_rng(0)
SEQ = RNG.normal(size=(2, 5, 6)).astype("float32")


@pytest.mark.parametrize(
    "factory, inputs, n_weights",
    [
        (lambda: keras.layers.Dense(5), RNG.normal(size=(3, 7)).astype("float32"), 1),
        (lambda: keras.layers.Conv1D(4, 3, padding="same"), SEQ, 1),
        (lambda: keras.layers.Conv2D(3, (3, 3)), RNG.normal(size=(2, 6, 6, 2)).astype("float32"), 1),
        (lambda: keras.layers.LSTM(4, return_sequences=True), SEQ, 2),
        (lambda: keras.layers.GRU(4), SEQ, 2),
        (lambda: keras.layers.EinsumDense("btd,de->bte", output_shape=(None, 4)), SEQ, 1),
        (lambda: ScaledDense(4), RNG.normal(size=(3, 7)).astype("float32"), 2),
    ],
    ids=["dense", "conv1d", "conv2d", "lstm", "gru", "einsum_dense", "custom_prunable"],
)
def test_every_level_is_nested_exact_and_matches_strip(factory, inputs, n_weights):
    run_nested_layer_test(factory, inputs, expect_weights=n_weights)


def test_multi_head_attention_prunes_its_four_projections():
    run_nested_layer_test(
        lambda: keras.layers.MultiHeadAttention(2, 3), [SEQ, SEQ[:, :3]],
        call=lambda layer, xs: layer(xs[0], xs[1]), expect_weights=4)


def test_level_zero_can_be_sparse():
    run_nested_layer_test(lambda: keras.layers.Dense(4), RNG.normal(size=(2, 9)).astype("float32"), levels=(0.2, 0.6))


def test_block_sparsity_keeps_whole_blocks():
    model = run_nested_layer_test(lambda: keras.layers.Dense(8, name="blocky"), RNG.normal(size=(2, 6)).astype("float32"),
                                  block_size=(1, 4))
    codes = level_codes(model)["blocky/kernel"]
    blocks = codes.reshape(6, 2, 4)
    assert np.all(blocks == blocks[..., :1])
    assert [(blocks[..., 0] > i).sum() for i in range(3)] == [12, 6, 3]


def test_training_at_a_sparse_level_never_overwrites_or_updates_pruned_weights():
    x = RNG.normal(size=(8, 6)).astype("float32")
    _, model = build_wrapped_model(lambda: keras.layers.Dense(3), x)
    update_nested_masks(model, 0)
    wrapper = model.layers[-1]
    kernel = wrapper.nested_weights[0].variable
    before = kernel.numpy().copy()
    pruned = level_codes(model)[wrapper.nested_weights[0].key] <= 2
    opt = keras.optimizers.Adam(0.1)
    for _ in range(3):
        with tf.GradientTape() as tape, sparsity_level_scope(model, 2):
            loss = tf.reduce_mean(tf.square(model(x, training=True) - 1.0))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    after = kernel.numpy()
    np.testing.assert_array_equal(after[pruned], before[pruned])  # dense values survive, untouched
    assert np.all(after[pruned] != 0)
    assert np.any(after[~pruned] != before[~pruned])


def test_one_traced_graph_runs_any_level_from_a_tensor():
    _, model = build_wrapped_model(lambda: keras.layers.LSTM(3), SEQ)
    update_nested_masks(model, 0)
    expected = outputs_per_level(model, SEQ)
    traces = []

    @tf.function
    def run(x, level):
        traces.append(1)
        with sparsity_level_scope(model, level):
            return model(x)

    for level in (2, 0, 1):
        np.testing.assert_allclose(run(SEQ, tf.constant(level)).numpy(), expected[level], atol=1e-6)
    assert len(traces) == 1


def test_lstm_mask_is_applied_once_per_call_not_per_timestep():
    _, model = build_wrapped_model(lambda: keras.layers.LSTM(3), np.zeros((1, 40, 6), "float32"))
    graph = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec([1, 40, 6])).graph
    outer = [op for op in graph.get_operations() if op.type == "Greater"]
    assert len(outer) == 2  # one per prunable weight (kernel, recurrent_kernel), outside the time loop
    for fn in graph._functions.values():  # pylint: disable=protected-access
        assert not [op for op in fn.graph.get_operations() if op.type == "Greater"]


def test_is_a_tfmot_wrapper_that_tfmot_callbacks_cannot_damage():
    x = RNG.normal(size=(4, 5)).astype("float32")
    _, model = build_wrapped_model(lambda: keras.layers.Dense(3), x)
    assert isinstance(model.layers[-1], PruneLowMagnitude)
    update_nested_masks(model, 0)
    kernel = model.layers[-1].nested_weights[0].variable.numpy().copy()
    callback = pruning_callbacks.UpdatePruningStep()
    callback.set_model(model)
    callback.on_train_begin()
    callback.on_epoch_end(0)
    np.testing.assert_array_equal(model.layers[-1].nested_weights[0].variable.numpy(), kernel)


def test_config_round_trip_rebuilds_an_equivalent_wrapper():
    wrapper = NestedPruneLowMagnitude(keras.layers.Dense(3), one_shot_schedule((0.1, 0.6)), block_size=(1, 2))
    clone = NestedPruneLowMagnitude.from_config(wrapper.get_config())
    assert clone.get_config() == wrapper.get_config()
    assert clone.block_size == (1, 2) and clone.pruning_schedule == wrapper.pruning_schedule


def test_explicit_weight_paths_prune_a_bias():
    wrapper = NestedPruneLowMagnitude(keras.layers.Dense(4, name="d"), one_shot_schedule((0.0, 0.5)),
                                      weight_paths=["kernel", "bias"])
    wrapper(np.ones((1, 3), "float32"))
    wrapper.layer.bias.assign([1.0, -2.0, 3.0, -4.0])
    wrapper.update_masks(0)
    assert [w.key for w in wrapper.nested_weights] == ["d/kernel", "d/bias"]
    assert wrapper.nested_weights[1].code.numpy().tolist() == [1, 1, 2, 2]  # |b| ranks 4, 3 first


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: NestedPruneLowMagnitude(NestedPruneLowMagnitude(keras.layers.Dense(2), one_shot_schedule()),
                                         one_shot_schedule()), ValueError, "already wrapped"),
        (lambda: NestedPruneLowMagnitude(keras.Sequential([keras.layers.Dense(2)]), one_shot_schedule()),
         TypeError, "not models"),
        (lambda: NestedPruneLowMagnitude(keras.layers.Dense(2), pruning_schedule.ConstantSparsity(0.5, 0)),
         TypeError, "NestedPruningSchedule"),
        (lambda: NestedPruneLowMagnitude(keras.layers.Dense(2), one_shot_schedule(), block_size=(0, 4)),
         ValueError, "block_size"),
        (lambda: NestedPruneLowMagnitude(keras.layers.Bidirectional(keras.layers.LSTM(2)), one_shot_schedule()),
         ValueError, "not supported"),
    ],
    ids=["twice", "model", "schedule", "block", "unsupported"],
)
def test_bad_wrapping_is_a_clear_error(make, error, message):
    with pytest.raises(error, match=message):
        make()
