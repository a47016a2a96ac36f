"""Tests of dsnn_keras.run_dir.load_run on a freshly trained run."""
import io
import json

import numpy as np
import pytest

import dsnn_keras
from dsnn_keras.run_dir import RunDirError, load_run
from dsnn_keras.trainer import Trainer
from dsnn_keras.dataset import PreparedDataset
from fixtures_data import build_prepared_dataset, small_config


def test_load_run_restores_weights_codes_and_metadata(tmp_path):
    prepared = build_prepared_dataset(tmp_path / "prepared", num_train=12, num_dev=2)
    trainer = Trainer(small_config(training={"total_steps": 6}), PreparedDataset.from_dir(prepared),
                      tmp_path / "run", stream=io.StringIO())
    trainer.run()
    (tmp_path / "run" / "eval.json").write_text(json.dumps({"split": "dev", "levels": []}))
    run = load_run(tmp_path / "run")
    assert run.step == 6 and run.levels == (0.0, 0.8)
    assert run.blank_id == len(run.pieces) == trainer.dataset.vocab_size
    assert run.feature_config == trainer.dataset.feature_config
    assert run.eval_results == {"split": "dev", "levels": []}
    for a, b in zip(run.model.weights, trainer.model.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    x = np.random.default_rng(0).normal(size=[1, 20, 80]).astype(np.float32)
    for level in range(2):
        with dsnn_keras.sparsity_level_scope(run.model, level), \
                dsnn_keras.sparsity_level_scope(trainer.model, level):
            np.testing.assert_allclose(run.model(x).numpy(), trainer.model(x).numpy(), atol=1e-6)


def test_load_run_names_what_is_missing(tmp_path):
    with pytest.raises(RunDirError, match="missing config.yaml"):
        load_run(tmp_path)
