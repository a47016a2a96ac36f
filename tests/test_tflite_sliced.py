"""The sliced export of a unit-granularity model: each level's branch holds only its kept units."""
from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import functools

import numpy as np
import pytest

from harness_tflite import BLANK_ID, PIECES, feature_config, features_of, greedy, keras_log_probs, speechlike

LEVELS = (0.0, 0.5, 0.9)


@functools.lru_cache(maxsize=None)
def _unit_model():
    import tf_keras as keras

    import dsnn_keras
    from dsnn_keras.config import ModelConfig
    from dsnn_keras.model import build_model, default_prune_layers

    keras.utils.set_random_seed(0)
    bins = feature_config().num_mel_bins
    base = build_model(ModelConfig(conv_channels=(6, 4), conv_kernel=3, lstm_units=(24, 24), dropout=0.0),
                       feature_config(), len(PIECES), np.zeros(bins), np.ones(bins))
    kernel, bias = base.get_layer("logits").get_weights()
    base.get_layer("logits").set_weights([kernel * 4.0, bias])
    schedule = dsnn_keras.NestedPolynomialDecay(LEVELS, begin_step=0, end_step=0)
    model = dsnn_keras.prune_nested(base, schedule, prune_layers=default_prune_layers(base, "unit"),
                                    granularity="unit")
    dsnn_keras.update_nested_masks(model, 0)
    return model


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    import dsnn_keras
    from tflite.export import ExportOptions, export_levels

    model = _unit_model()
    kept = dsnn_keras.units_kept(model)
    units = [{name: counts[level] for name, counts in kept.items()} for level in range(len(LEVELS))]
    narrow = [dsnn_keras.narrow_model(model, level) for level in range(len(LEVELS))]
    path = tmp_path_factory.mktemp("sliced") / "unit.tflite"
    report = export_levels(narrow, path, sparsities=LEVELS, feature_config=feature_config(), pieces=PIECES,
                           blank_id=BLANK_ID, options=ExportOptions(), units=units,
                           verify_audio=[speechlike(1.2, seed=3)])
    return path, report, kept


@pytest.mark.large
def test_sliced_file_records_design_units_and_relative_latency(sliced):
    path, report, kept = sliced
    export = report.metadata["export"]
    assert export["design"] == "if_tree_sliced"
    for level, entry in enumerate(report.metadata["levels"]):
        assert entry["realisation"] == "sliced"
        assert entry["units"] == {name: counts[level] for name, counts in kept.items()}
        assert entry["relative_latency"] > 0
    assert report.metadata["levels"][0]["relative_latency"] == 1.0
    macs = [entry["relative_macs"] for entry in report.metadata["levels"]]
    assert macs[0] == 1.0 and macs[1] < 0.7 and macs[2] < 0.25


@pytest.mark.large
def test_branches_hold_the_smaller_weight_shapes(sliced):
    from tflite.flatbuffer import unpack

    path, _, kept = sliced
    model = unpack(path.read_bytes())
    tensors = [tuple(int(x) for x in t.shape) for subgraph in model.subgraphs for t in subgraph.tensors
               if t.shape is not None]
    for level in range(len(LEVELS)):
        units = kept["lstm_1"][level]
        # The fused LSTM's recurrent-to-gate weights of lstm_1 at this level: [units, units].
        assert (units, units) in tensors, (level, units)
        # The output layer reads only the kept units of lstm_1.
        assert (BLANK_ID + 1, units) in tensors or (units, BLANK_ID + 1) in tensors, level


@pytest.mark.large
def test_every_level_matches_the_masked_keras_model_on_speech(sliced):
    import dsnn_keras
    from ai_edge_litert.interpreter import Interpreter

    path, _, _ = sliced
    model = _unit_model()
    runner = Interpreter(model_path=str(path)).get_signature_runner("recognize_features")
    features = features_of(speechlike(1.5, seed=7))
    for level in range(len(LEVELS)):
        with dsnn_keras.sparsity_level_scope(model, level):
            want = keras_log_probs(model, features)
        got = runner(features=features, sparsity_level=np.int32(level))
        assert np.max(np.abs(got["log_probs"] - want)) < 1e-3, level
        assert got["tokens"].tolist() == greedy(want), level


def test_shared_design_refuses_sliced_levels(tmp_path):
    from tflite.export import ExportError, ExportOptions, export_levels

    import dsnn_keras

    model = _unit_model()
    narrow = [dsnn_keras.narrow_model(model, level) for level in range(len(LEVELS))]
    with pytest.raises(ExportError, match="shared"):
        export_levels(narrow, tmp_path / "x.tflite", sparsities=LEVELS, feature_config=feature_config(),
                      pieces=PIECES, blank_id=BLANK_ID, options=ExportOptions(design="shared"),
                      units=[{}] * len(LEVELS))


@pytest.mark.large
def test_dynamic_int8_sliced_file_keeps_every_level_and_is_small(sliced, tmp_path):
    import dsnn_keras
    from tflite.export import ExportOptions, export_levels

    float_path, float_report, kept = sliced
    model = _unit_model()
    units = [{name: counts[level] for name, counts in kept.items()} for level in range(len(LEVELS))]
    narrow = [dsnn_keras.narrow_model(model, level) for level in range(len(LEVELS))]
    report = export_levels(narrow, tmp_path / "unit_int8.tflite", sparsities=LEVELS,
                           feature_config=feature_config(), pieces=PIECES, blank_id=BLANK_ID,
                           options=ExportOptions(quantize="dynamic-int8", measure_latency=False), units=units)
    assert report.metadata["export"]["design"] == "if_tree_sliced"
    assert report.metadata["export"]["frontend"] == "float32"
    # Each level is nearest its own Keras level and the audio path stays within the token gate.
    assert [v["nearest_level"] for v in report.verification] == list(range(len(LEVELS)))
    assert all("relative_latency" not in entry for entry in report.metadata["levels"])
    assert report.size_bytes < float_report.size_bytes


@pytest.fixture(scope="module")
def unit_run(tmp_path_factory):
    """A real `dsnn_keras.train` run of a small config with unit granularity (8 steps, 2 levels)."""
    import io

    from fixtures_data import build_prepared_dataset, small_config

    import dsnn_keras

    root = tmp_path_factory.mktemp("unit_run")
    data = build_prepared_dataset(root / "data", num_train=12, num_dev=4)
    config = small_config(pruning={"granularity": "unit"})
    dsnn_keras.train(config, data, root / "run", stream=io.StringIO())
    return root / "run"


@pytest.mark.large
def test_a_trained_unit_run_exports_sliced_levels_and_refuses_the_shared_design(unit_run, tmp_path):
    from dsnn_keras.run_dir import load_run
    from tflite.export import ExportError, ExportOptions, export_run

    run = load_run(unit_run)
    assert run.granularity == "unit"
    report = export_run(unit_run, tmp_path / "unit.tflite")
    levels = report.metadata["levels"]
    assert report.metadata["export"]["design"] == "if_tree_sliced"
    assert levels[0]["units"]["lstm_0"] == 24 and 0 < levels[1]["units"]["lstm_0"] < 24
    assert levels[1]["units"]["conv_1"] < 4    # the Conv2D channels are pruned too
    assert [v["level"] for v in report.verification] == [0, 1]
    with pytest.raises(ExportError, match="shared"):
        export_run(unit_run, tmp_path / "shared.tflite", options=ExportOptions(design="shared"))
    assert not (tmp_path / "shared.tflite").exists()
