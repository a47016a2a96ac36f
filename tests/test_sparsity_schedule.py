"""NestedPolynomialDecay: cubic ramp shared by all levels, update steps, validation, config."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_schedule import PruningSchedule

from dsnn_keras import NestedPolynomialDecay
from dsnn_keras.sparsity.schedule import NestedPruningSchedule, deserialize_schedule, update_if_scheduled

LEVELS = (0.0, 0.5, 0.7, 0.9)


def test_is_a_tfmot_pruning_schedule_returning_float32_vector():
    schedule = NestedPolynomialDecay(LEVELS, begin_step=0, end_step=100)
    should, sparsities = schedule(tf.constant(0, tf.int64))
    assert isinstance(schedule, PruningSchedule) and isinstance(schedule, NestedPruningSchedule)
    assert should.dtype == tf.bool and sparsities.dtype == tf.float32 and sparsities.shape == (4,)


def test_follows_cubic_ramp_with_shared_progress():
    schedule = NestedPolynomialDecay(LEVELS, begin_step=10, end_step=110, power=3)
    for step in (0, 10, 35, 60, 109):
        p = min(max((step - 10) / 100, 0.0), 1.0)
        expected = [s * (1 - (1 - p) ** 3) for s in LEVELS]
        got = schedule.sparsities(step, tf.float64).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-12)
        assert np.all(np.diff(got[1:]) > 0) or step <= 10  # ordered at every step


def test_reaches_final_levels_exactly_and_stays_there():
    schedule = NestedPolynomialDecay(LEVELS, begin_step=0, end_step=50)
    for step in (50, 51, 10_000):
        assert schedule.sparsities(step, tf.float64).numpy().tolist() == list(LEVELS)


def test_level_zero_may_be_sparse():
    schedule = NestedPolynomialDecay((0.2, 0.6), begin_step=0, end_step=10)
    assert schedule.sparsities(10, tf.float64).numpy().tolist() == [0.2, 0.6]


def test_updates_every_frequency_steps_and_at_end_step_only_inside_range():
    schedule = NestedPolynomialDecay(LEVELS, begin_step=5, end_step=27, frequency=10)
    updates = [s for s in range(0, 60) if bool(schedule.should_prune(s))]
    assert updates == [5, 15, 25, 27]


def test_one_shot_schedule_applies_final_levels_at_begin_step():
    schedule = NestedPolynomialDecay(LEVELS, begin_step=3, end_step=3)
    assert schedule.sparsities(2, tf.float64).numpy().tolist() == [0.0] * 4
    assert schedule.sparsities(3, tf.float64).numpy().tolist() == list(LEVELS)
    assert [s for s in range(10) if bool(schedule.should_prune(s))] == [3]


def test_works_inside_tf_function():
    schedule = NestedPolynomialDecay(LEVELS, begin_step=0, end_step=10, frequency=5)
    fn = tf.function(lambda step: schedule(step))
    should, sparsities = fn(tf.constant(10, tf.int64))
    assert bool(should)
    np.testing.assert_allclose(sparsities.numpy(), LEVELS, atol=1e-7)


@pytest.mark.parametrize(
    "levels, message",
    [
        ((0.5, 0.5), "strictly increasing"),
        ((0.7, 0.5), "strictly increasing"),
        ((0.0, 1.0), r"sparsity_levels\[1\] must be in \[0, 1\)"),
        ((-0.1, 0.5), r"sparsity_levels\[0\] must be in \[0, 1\)"),
        ((), "at least one level"),
    ],
)
def test_rejects_bad_levels_naming_the_cause(levels, message):
    with pytest.raises(ValueError, match=message):
        NestedPolynomialDecay(levels, begin_step=0, end_step=10)


def test_rejects_non_numeric_levels():
    with pytest.raises(TypeError, match="sparsity_levels"):
        NestedPolynomialDecay("0.5", begin_step=0, end_step=10)
    with pytest.raises(TypeError, match=r"sparsity_levels\[1\]"):
        NestedPolynomialDecay((0.1, "x"), begin_step=0, end_step=10)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(begin_step=-1, end_step=10), ValueError, "begin_step"),
        (dict(begin_step=20, end_step=10), ValueError, "end_step must be >= begin_step"),
        (dict(begin_step=0), ValueError, "end_step is required"),
        (dict(begin_step=0, end_step=10, frequency=0), ValueError, "frequency"),
        (dict(begin_step=0, end_step=10, frequency=2.5), TypeError, "frequency"),
        (dict(begin_step=0, end_step=10, power=0), ValueError, "power"),
    ],
)
def test_rejects_bad_steps_naming_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        NestedPolynomialDecay(LEVELS, **kwargs)


def test_config_round_trip_keeps_everything():
    schedule = NestedPolynomialDecay((0.1, 0.4), begin_step=2, end_step=40, frequency=7, power=2)
    config = schedule.get_config()
    assert config["class_name"] == "NestedPolynomialDecay"
    assert NestedPolynomialDecay.from_config(config["config"]) == schedule
    assert NestedPolynomialDecay.from_config(config) == schedule
    assert deserialize_schedule(config) == schedule


def test_deserialize_rejects_unknown_schedule_class():
    with pytest.raises(ValueError, match="not a nested schedule"):
        deserialize_schedule({"class_name": "PolynomialDecay", "config": {}})


@pytest.mark.parametrize("eager", [True, False])
def test_update_if_scheduled_recomputes_on_schedule_and_once_after_a_missed_end(eager):
    schedule = NestedPolynomialDecay((0.0, 0.5), begin_step=0, end_step=10, frequency=5)
    calls = tf.Variable(0)

    def recompute():
        calls.assign_add(1)
        return tf.constant(True)

    def update(step, last):
        return update_if_scheduled(schedule, tf.constant(step, tf.int64), tf.constant(last, tf.int64), recompute)

    run = update if eager else tf.function(update)
    assert bool(run(5, 0)) and int(calls.numpy()) == 1          # a scheduled step
    assert not bool(run(6, 5)) and int(calls.numpy()) == 1      # between updates: nothing
    assert bool(run(13, 5)) and int(calls.numpy()) == 2         # end_step missed: catch up once
    assert not bool(run(14, 13)) and int(calls.numpy()) == 2    # caught up: nothing more
