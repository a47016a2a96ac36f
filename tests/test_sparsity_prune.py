"""prune_nested / update_nested_masks / levels / strip_nested / level_codes, serialization, distribution."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from dsnn_keras import (
    NestedPolynomialDecay,
    NestedPruneLowMagnitude,
    level_codes,
    prune_nested,
    set_sparsity_level,
    sparsity_level_scope,
    sparsity_levels,
    strip_nested,
    update_nested_masks,
)
from dsnn_keras.sparsity.prune import measured_sparsities
from harness import one_shot_schedule, outputs_per_level, run_serialization_test

LEVELS = (0.0, 0.5, 0.7, 0.9)
RNG = np.random.default_rng(1)
X = RNG.normal(size=(2, 8, 6)).astype("float32")


def asr_like_model():
    """Conv2D subsampling -> LSTM -> Dense, functional (the shape of the project's ASR model)."""
    inp = keras.Input((8, 6))
    x = keras.layers.Reshape((8, 6, 1))(inp)
    x = keras.layers.Conv2D(2, 3, strides=(2, 1), padding="same", name="conv")(x)
    x = keras.layers.Reshape((4, 12))(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.LSTM(6, return_sequences=True, name="lstm")(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(inp, keras.layers.Dense(5, name="out")(x), name="asr")


def test_wraps_only_layers_with_prunable_weights_and_keeps_weights():
    base = asr_like_model()
    model = prune_nested(base, one_shot_schedule(LEVELS))
    wrapped = sorted(l.layer.name for l in model.layers if isinstance(l, NestedPruneLowMagnitude))
    assert wrapped == ["conv", "lstm", "out"]
    assert model.get_layer("norm") is base.get_layer("norm")
    np.testing.assert_allclose(model(X).numpy(), base(X).numpy(), atol=1e-6)
    assert sparsity_levels(model) == LEVELS
    assert sorted(level_codes(model)) == ["conv/kernel", "lstm/cell.kernel", "lstm/cell.recurrent_kernel", "out/kernel"]


def test_sequential_models_and_single_layers_are_wrapped():
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.ReLU(), keras.layers.Dense(2)])
    model = prune_nested(seq, one_shot_schedule(LEVELS))
    assert [type(l).__name__ for l in model.layers] == ["NestedPruneLowMagnitude", "ReLU", "NestedPruneLowMagnitude"]
    assert isinstance(prune_nested(keras.layers.Dense(2), one_shot_schedule()), NestedPruneLowMagnitude)


def test_prune_layers_restricts_wrapping_by_name_or_predicate():
    by_name = prune_nested(asr_like_model(), one_shot_schedule(), prune_layers=["lstm"])
    assert list(level_codes(by_name)) == ["lstm/cell.kernel", "lstm/cell.recurrent_kernel"]
    by_pred = prune_nested(asr_like_model(), one_shot_schedule(), prune_layers=lambda l: l.name == "out")
    assert list(level_codes(by_pred)) == ["out/kernel"]
    with pytest.raises(ValueError, match=r"not in the model: \['nope'\]"):
        prune_nested(asr_like_model(), one_shot_schedule(), prune_layers=["nope"])


def test_update_follows_the_ramp_then_freezes():
    model = prune_nested(asr_like_model(), NestedPolynomialDecay(LEVELS, begin_step=0, end_step=4, frequency=2))
    kernel = model.get_layer("nested_prune_low_magnitude_out").nested_weights[0].variable
    n = kernel.shape.num_elements()
    for step in range(7):
        update_nested_masks(model, step)
        codes = level_codes(model)["out/kernel"]
        done = min(step - step % 2 if step < 4 else 4, 4) / 4  # updates at 0, 2, 4
        expected = [round(n * (1 - s * (1 - (1 - done) ** 3))) for s in LEVELS]
        assert [(codes > i).sum() for i in range(4)] == expected, step
        kernel.assign(tf.random.normal(kernel.shape))  # after end_step, new weights do not move masks
        if step >= 4:
            np.testing.assert_array_equal(level_codes(model)["out/kernel"], codes)
    wrapper = model.get_layer("nested_prune_low_magnitude_out")
    assert int(wrapper.pruning_step.numpy()) == 6 and int(wrapper.mask_update_step.numpy()) == 4


def test_missed_end_step_is_caught_up_once():
    model = prune_nested(asr_like_model(), NestedPolynomialDecay(LEVELS, begin_step=0, end_step=10, frequency=3))
    update_nested_masks(model, 0)
    update_nested_masks(model, 25)  # resumed past end_step without ever reaching it
    assert measured_sparsities(model)["out/kernel"] == pytest.approx(list(LEVELS), abs=0.02)


def test_update_and_levels_work_inside_tf_function():
    model = prune_nested(asr_like_model(), NestedPolynomialDecay(LEVELS, begin_step=0, end_step=2, frequency=1))

    @tf.function
    def step_fn(step, level):
        update_nested_masks(model, step)
        set_sparsity_level(model, level)
        return model(X)

    for step in range(3):
        out = step_fn(tf.constant(step, tf.int64), tf.constant(3))
    np.testing.assert_allclose(out.numpy(), outputs_per_level(model, X)[3], atol=1e-6)
    assert measured_sparsities(model)["total"] == pytest.approx(list(LEVELS), abs=0.02)


def test_strip_returns_plain_independent_model_masked_at_level():
    model = prune_nested(asr_like_model(), one_shot_schedule(LEVELS))
    update_nested_masks(model, 0)
    for level in range(4):
        plain = strip_nested(model, level)
        assert not any(isinstance(l, NestedPruneLowMagnitude) for l in plain.layers)
        np.testing.assert_allclose(plain(X).numpy(), outputs_per_level(model, X)[level], atol=1e-6)
        kernel = plain.get_layer("out").kernel.numpy()
        assert (kernel == 0).mean() == pytest.approx(LEVELS[level], abs=0.01)
    plain.get_layer("norm").gamma.assign(tf.zeros_like(plain.get_layer("norm").gamma))
    assert np.all(model.get_layer("norm").gamma.numpy() == 1.0)  # nothing shared


@pytest.mark.parametrize("make_layer, x", [
    (lambda: keras.layers.Dense(5), X[:, 0]),
    (lambda: keras.layers.LSTM(6, return_sequences=True), X),
    (lambda: keras.layers.Conv2D(3, 3, padding="same"), X[..., None]),
])
def test_strip_of_a_single_wrapper_is_a_built_layer_masked_at_level(make_layer, x):
    wrapper = prune_nested(make_layer(), one_shot_schedule(LEVELS))
    wrapper(x)
    update_nested_masks(wrapper, 0)
    for level in range(len(LEVELS)):
        plain = strip_nested(wrapper, level)
        assert plain.built and not isinstance(plain, NestedPruneLowMagnitude)
        with sparsity_level_scope(wrapper, level):
            expected = wrapper(x).numpy()
        np.testing.assert_allclose(plain(x).numpy(), expected, atol=1e-6)
        kernel = plain.weights[0].numpy()
        assert (kernel == 0).mean() == pytest.approx(LEVELS[level], abs=0.05)


def test_strip_of_an_unbuilt_wrapper_says_so():
    wrapper = prune_nested(keras.layers.Dense(5), one_shot_schedule(LEVELS))
    with pytest.raises(ValueError, match="not built"):
        strip_nested(wrapper, 0)


def test_level_validation_names_the_range():
    model = prune_nested(asr_like_model(), one_shot_schedule(LEVELS))
    with pytest.raises(ValueError, match=r"in \[0, 3\].*got 4"):
        set_sparsity_level(model, 4)
    with pytest.raises(ValueError, match="got -1"):
        with sparsity_level_scope(model, -1):
            pass
    with pytest.raises(ValueError, match="got 7"):
        set_sparsity_level(model, tf.constant(7))
    with pytest.raises(TypeError, match="int"):
        set_sparsity_level(model, 1.5)
    with pytest.raises(ValueError, match="got 9"):
        strip_nested(model, 9)

    @tf.function
    def bad(level):
        set_sparsity_level(model, level)

    with pytest.raises(tf.errors.InvalidArgumentError, match="sparsity level must be < 4"):
        bad(tf.constant(5))


def test_bad_models_are_refused_with_the_cause():
    model = prune_nested(asr_like_model(), one_shot_schedule())
    with pytest.raises(ValueError, match="already wrapped"):
        prune_nested(model, one_shot_schedule())

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed model"):
        prune_nested(Sub(), one_shot_schedule())
    with pytest.raises(TypeError, match="NestedPruningSchedule"):
        prune_nested(asr_like_model(), object())
    with pytest.raises(TypeError, match="tf_keras model or a tf_keras layer"):
        prune_nested("model", one_shot_schedule())
    with pytest.raises(ValueError, match="no NestedPruneLowMagnitude"):
        update_nested_masks(asr_like_model(), 0)


def test_unsupported_layers_are_all_listed_in_one_error():
    inp = keras.Input((5, 3))
    a = keras.layers.Bidirectional(keras.layers.LSTM(2), name="bidi")(inp)
    b = keras.layers.TimeDistributed(keras.layers.Dense(2), name="td")(inp)
    model = keras.Model(inp, [a, b])
    with pytest.raises(ValueError, match=r"2 unsupported layer\(s\): 'bidi' \(Bidirectional\), 'td' \(TimeDistributed\)"):
        prune_nested(model, one_shot_schedule())
    wrapped = prune_nested(model, one_shot_schedule(), prune_layers=[])  # excluded: fine
    assert not any(isinstance(l, NestedPruneLowMagnitude) for l in wrapped.layers)


def test_serialization_round_trips_keep_codes_step_schedule_and_outputs(tmp_path):
    model = prune_nested(asr_like_model(), NestedPolynomialDecay(LEVELS, begin_step=0, end_step=3, frequency=1))
    for step in range(3):
        update_nested_masks(model, step)
    set_sparsity_level(model, 2)
    restored = run_serialization_test(model, X, tmp_path)
    for other in restored.values():
        np.testing.assert_allclose(other(X).numpy(), model(X).numpy(), atol=0)  # stored level kept too


_DISTRIBUTED_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_keras as keras
    from dsnn_keras import (NestedPolynomialDecay, level_codes, prune_nested, set_sparsity_level,
                            sparsity_level_scope, update_nested_masks)

    LEVELS = (0.0, 0.5, 0.8)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 6, 3)).astype("float32")
    Y = rng.normal(size=(4, 2)).astype("float32")

    def run(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(1)
            inp = keras.Input((6, 3))
            out = keras.layers.Dense(2)(keras.layers.LSTM(8)(inp))
            model = prune_nested(keras.Model(inp, out),
                                 NestedPolynomialDecay(LEVELS, begin_step=0, end_step=4, frequency=2))
            opt = keras.optimizers.SGD(0.1)

        def replica_step(x, y):
            with tf.GradientTape() as tape:
                loss = 0.0
                for level in range(len(LEVELS)):  # sandwich: every level, one traced graph
                    with sparsity_level_scope(model, level):
                        loss += tf.reduce_sum(tf.square(model(x, training=True) - y)) / 4.0
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            set_sparsity_level(model, tf.constant(1))  # a write in replica context
            return loss

        def shard(ctx):
            n, i = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
            return X[i * 4 // n:(i + 1) * 4 // n], Y[i * 4 // n:(i + 1) * 4 // n]

        @tf.function
        def train_step(step):
            update_nested_masks(model, step)  # cross-replica context
            losses = strategy.run(replica_step, args=strategy.experimental_distribute_values_from_function(shard))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        for step in range(6):
            train_step(tf.constant(step, tf.int64))
        agree = all(
            all(np.array_equal(w.values[0].numpy(), v.numpy()) for v in w.values[1:])
            for w in model.weights if getattr(w, "values", None))
        with sparsity_level_scope(model, 2):
            out2 = model(X).numpy().tolist()
        return {"codes": [v.tolist() for v in level_codes(model).values()],
                "weights": [w.numpy().tolist() for w in model.trainable_variables],
                "replicas": strategy.num_replicas_in_sync, "replicas_agree": bool(agree),
                "active_level": int(model.layers[1].active_level.numpy()), "out_level2": out2}

    single = run(tf.distribute.get_strategy())
    mirrored = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    print("RESULT" + json.dumps({"single": single, "mirrored": mirrored}))
''')


@pytest.mark.large
def test_mirrored_strategy_on_two_devices_matches_one_device():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    root = pathlib.Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", _DISTRIBUTED_SCRIPT], capture_output=True, text=True,
                          env=env, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    single, mirrored = result["single"], result["mirrored"]
    assert mirrored["replicas"] == 2 and mirrored["replicas_agree"]
    assert single["active_level"] == mirrored["active_level"] == 1
    for a, b in zip(single["codes"], mirrored["codes"]):
        np.testing.assert_array_equal(a, b)
    codes = np.array(mirrored["codes"][0])
    assert [(codes > i).mean() for i in range(3)] == pytest.approx([1.0, 0.5, 0.2], abs=0.01)
    for a, b in zip(single["weights"], mirrored["weights"]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(single["out_level2"], mirrored["out_level2"], atol=1e-5)
