"""The causal Conformer encoder (model.encoder: conformer): streamable, nested-pruned, trainable, exportable."""
import io

import numpy as np
import pytest
import tf_keras as keras

from dsnn_keras.config import ConfigError, apply_overrides
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.model import build_model, build_pruned_model, default_prune_layers
from fixtures_data import SMALL_CONFORMER, build_prepared_dataset, small_config

MEAN, STD = np.zeros(80, np.float32), np.ones(80, np.float32)


def _config(**sections):
    model = {**SMALL_CONFORMER, **sections.pop("model", {})}
    return small_config(model=model, **sections)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return build_prepared_dataset(tmp_path_factory.mktemp("conformer") / "prepared", num_train=32, num_dev=6)


def test_encoder_output_frames_do_not_depend_on_later_frames():
    model = build_model(_config(model={"dropout": 0.0}).model, FeatureConfig(), 10, MEAN, STD)
    # The encoder alone (input projection -> blocks -> logits), so the front-end's stride-2
    # convolutions, which look a few frames ahead, are not part of the check.
    encoder = keras.Model(model.get_layer("conformer_input").input, model.output)
    rng = np.random.default_rng(0)
    frames = rng.normal(size=[2, 13, encoder.input_shape[-1]]).astype(np.float32)
    for extra in (1, 2, 5):
        longer = np.concatenate([frames, rng.normal(size=[2, extra, frames.shape[-1]]).astype(np.float32)], 1)
        np.testing.assert_allclose(encoder(frames).numpy(), encoder(longer).numpy()[:, :13], atol=1e-5)
    assert np.abs(encoder(frames).numpy()).max() > 1e-3


def test_dense_layers_are_pruned_and_attention_is_left_dense():
    model = build_model(_config().model, FeatureConfig(), 10, MEAN, STD)
    names = default_prune_layers(model)
    assert "conformer_input" in names and "conformer_1_ff2_out" in names and "conformer_0_pointwise_in" in names
    assert not any("mhsa" in name for name in names) and "logits" not in names
    pruned = build_pruned_model(_config(), FeatureConfig(), 10, MEAN, STD)
    wrapped = [layer.name for layer in pruned.layers if layer.name.startswith("nested_prune")]
    assert len(wrapped) == len(names) == 1 + 2 * 6


def test_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match="model.conformer.heads"):
        apply_overrides(_config(), ["model.conformer.heads=3"])


def test_lstm_units_are_not_required_by_the_conformer():
    assert apply_overrides(_config(), ["model.lstm_units=[]"]).model.encoder == "conformer"
    with pytest.raises(ConfigError, match="model.lstm_units"):
        apply_overrides(small_config(), ["model.lstm_units=[]"])


@pytest.fixture(scope="module")
def trained_run(prepared, tmp_path_factory):
    from dsnn_keras.trainer import train

    # 30 steps (was 80; measured: the loss is down to ~0.27x its first window at both levels by
    # step 30, against the 0.7x the test asks, and the 80-step run only went on to ~0.15x).
    config = _config(
        pruning={"levels": [0.0, 0.8], "begin_step": 8, "end_step": 18, "frequency": 2},
        training={"total_steps": 30, "learning_rate": 0.003, "warmup_steps": 5, "checkpoint_every": 30,
                  "log_every": 5, "distillation_weight": 0.5, "final_learning_rate": 0.0005})
    run_dir = tmp_path_factory.mktemp("conformer_run") / "run"
    train(config, prepared, run_dir, stream=io.StringIO())
    return run_dir


@pytest.mark.large
def test_loss_decreases_at_every_level(trained_run):
    import json

    rows = [json.loads(line) for line in (trained_run / "train_log.jsonl").read_text().splitlines()]
    windows = [r for r in rows if r["event"] == "train"]
    first, last = windows[0]["loss"], windows[-1]["loss"]
    for level in ("0", "1"):
        assert last[level] < 0.7 * first[level], (level, first, last)
    np.testing.assert_allclose(windows[-1]["sparsity"], [0.0, 0.8], atol=0.01)


@pytest.mark.large
def test_run_exports_to_one_tflite_whose_levels_match_keras(trained_run, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from tflite.export import check_builtin_ops, export_run

    report = export_run(trained_run, tmp_path / "conformer.tflite")
    assert len(report.verification) == 2
    for level in report.verification:
        assert level["max_abs_diff"] <= 1e-3 and level["token_flips"] == 0, report.verification
    data = report.path.read_bytes()
    assert "FULLY_CONNECTED" in check_builtin_ops(data)   # raises on any custom or Flex op
    runner = Interpreter(model_content=data).get_signature_runner("recognize_features")
    features = np.random.default_rng(0).normal(size=[120, 80]).astype(np.float32)
    dense, sparse = (runner(features=features, sparsity_level=np.array(i, np.int32)) for i in (0, 1))
    assert dense.keys() == sparse.keys()
    assert any(not np.array_equal(dense[key], sparse[key]) for key in dense)


@pytest.mark.large
def test_shared_weights_design_handles_attention_sublayers_and_matches_keras(trained_run, tmp_path):
    from tflite.export import ExportOptions, export_run
    from tflite.shared_weights import DESIGN_SHARED

    report = export_run(trained_run, tmp_path / "shared.tflite", options=ExportOptions(design="shared"))
    assert report.metadata["export"]["design"] == DESIGN_SHARED
    assert report.metadata["export"]["shared_weights"]
    for level in report.verification:
        assert level["max_abs_diff"] <= 1e-3 and level["token_flips"] == 0, report.verification
