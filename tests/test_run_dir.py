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
    # 3 steps with the pruning ramp over steps 0..2: level 1's codes are at their final 80 % by the
    # last checkpoint (what load_run must restore), with fewer steps and epochs than the default ramp.
    config = small_config(pruning={"begin_step": 0, "end_step": 2, "frequency": 1}, training={"total_steps": 3})
    trainer = Trainer(config, PreparedDataset.from_dir(prepared), tmp_path / "run", stream=io.StringIO())
    trainer.run()
    assert dsnn_keras.measured_sparsities(trainer.model)["total"] == pytest.approx([0.0, 0.8], abs=0.01)
    (tmp_path / "run" / "eval.json").write_text(json.dumps({"split": "dev", "levels": []}))
    run = load_run(tmp_path / "run")
    assert run.step == 3 and run.levels == (0.0, 0.8)
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
