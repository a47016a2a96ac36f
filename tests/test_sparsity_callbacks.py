"""UpdateNestedPruningStep drives the schedule in fit; NestedPruningSummaries logs per-level sparsity."""
import glob

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from dsnn_keras import NestedPolynomialDecay, NestedPruningSummaries, UpdateNestedPruningStep, prune_nested
from dsnn_keras.sparsity.callbacks import write_nested_summaries
from dsnn_keras.sparsity.prune import measured_sparsities

LEVELS = (0.0, 0.5, 0.75)
RNG = np.random.default_rng(2)
X = RNG.normal(size=(16, 5, 4)).astype("float32")
Y = RNG.normal(size=(16, 3)).astype("float32")


def small_model(end_step=4):
    inp = keras.Input((5, 4))
    out = keras.layers.Dense(3, name="out")(keras.layers.LSTM(4, name="lstm")(inp))
    model = prune_nested(keras.Model(inp, out), NestedPolynomialDecay(LEVELS, begin_step=0, end_step=end_step, frequency=2))
    model.compile(keras.optimizers.SGD(0.01), "mse")
    return model


def read_scalars(log_dir):
    values = {}
    for path in glob.glob(f"{log_dir}/metrics/events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for v in event.summary.value:
                values.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
    return values


def test_fit_with_update_step_reaches_final_levels():
    model = small_model()
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0, callbacks=[UpdateNestedPruningStep()])
    wrapper = model.get_layer("nested_prune_low_magnitude_out")
    assert int(wrapper.pruning_step.numpy()) == 7  # steps 0..7, set before each batch
    assert measured_sparsities(model)["total"] == pytest.approx(list(LEVELS), abs=0.01)


def test_fit_without_wrappers_is_refused():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="no NestedPruneLowMagnitude"):
        plain.fit(np.ones((2, 3)), np.ones((2, 1)), verbose=0, callbacks=[UpdateNestedPruningStep()])


def test_summaries_log_measured_and_target_sparsity_per_level(tmp_path):
    model = small_model()
    model.fit(X, Y, batch_size=4, epochs=2, verbose=0,
              callbacks=[UpdateNestedPruningStep(), NestedPruningSummaries(str(tmp_path))])
    scalars = read_scalars(tmp_path)
    for i, s in enumerate(LEVELS):
        assert scalars[f"nested/level_{i}/sparsity"][-1] == (8, pytest.approx(s, abs=0.01))
        assert scalars[f"nested/level_{i}/target"][-1][1] == pytest.approx(s, abs=1e-6)
        assert f"nested/lstm/cell.recurrent_kernel/level_{i}" in scalars
    assert len(scalars["nested/level_2/sparsity"]) == 2  # one per epoch


def test_write_nested_summaries_for_custom_loops(tmp_path):
    model = small_model(end_step=0)
    model.layers[-1].update_masks(0)
    model.get_layer("nested_prune_low_magnitude_lstm").update_masks(0)
    writer = tf.summary.create_file_writer(str(tmp_path / "metrics"))
    written = write_nested_summaries(model, step=3, writer=writer)
    assert written["nested/level_1/sparsity"] == pytest.approx(0.5, abs=0.01)
    assert read_scalars(tmp_path)["nested/level_1/sparsity"] == [(3, pytest.approx(0.5, abs=0.01))]


def test_summaries_need_a_log_dir():
    with pytest.raises(ValueError, match="log_dir"):
        NestedPruningSummaries("")
