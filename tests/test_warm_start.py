"""dsnn_keras.warm_start: a new run starts from a finished run's weights and nested masks (restored
exactly, masks kept frozen while it trains, optimizer and step fresh) and refuses a source whose
architecture, levels or tokenizer differ."""
import io
import json

import numpy as np
import pytest

import dsnn_keras
from dsnn_keras.cli import train_main
from dsnn_keras.config import dump_config
from dsnn_keras.dataset import PreparedDataset
from dsnn_keras.run_dir import load_run
from dsnn_keras.trainer import Trainer
from dsnn_keras.warm_start import WARM_START_FILE, WarmStartError, check_resume, check_warm_start
from fixtures_data import build_prepared_dataset, small_config


def _config(**sections):
    """small_config without the dev evaluation (not what is tested here; it costs seconds)."""
    return small_config(**{"data": {"dev_split": ""}, **sections})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A run directory whose checkpoint (step 8) holds masks at the final levels (0 and 0.8).

    Made without training steps (they cost tens of seconds here): the trainer's model gets its
    end-of-ramp masks from `update_nested_masks` at the config's end_step, then its checkpoint
    manager saves it, as a finished run's last save does.
    """
    root = tmp_path_factory.mktemp("warm")
    data = build_prepared_dataset(root / "data", num_train=16, num_dev=2)
    run_dir = root / "source"
    trainer = Trainer(_config(), PreparedDataset.from_dir(data), run_dir, stream=io.StringIO())
    dsnn_keras.update_nested_masks(trainer.model, _config().pruning.end_step)
    trainer.state.step.assign(8)
    trainer.manager.save(checkpoint_number=8)
    return data, run_dir


def _variables(model):
    return {v.name: np.array(v) for v in model.weights}


def test_warm_start_restores_every_weight_and_mask_with_a_fresh_optimizer_and_step(source, tmp_path):
    data, source_dir = source
    old = load_run(source_dir)
    old_codes = dsnn_keras.level_codes(old.model)
    assert np.mean(np.concatenate([c.ravel() for c in old_codes.values()]) == 1) > 0.5   # level 1 prunes 80 %
    trainer = Trainer(_config(), PreparedDataset.from_dir(data), tmp_path / "new", stream=io.StringIO(),
                      warm_start=source_dir)
    summary = trainer.run(max_steps=0)    # restores, saves step 0, trains nothing
    assert summary["step"] == 0 and summary["warm_start"]["run_dir"] == str(source_dir.resolve())
    assert summary["warm_start"]["restored_step"] == 8
    assert int(trainer.optimizer.iterations.numpy()) == 0 and int(trainer.state.step.numpy()) == 0
    new = _variables(trainer.model)
    for name, value in _variables(old.model).items():
        np.testing.assert_array_equal(new[name], value, err_msg=name)
    for name, codes in dsnn_keras.level_codes(trainer.model).items():
        np.testing.assert_array_equal(codes, old_codes[name], err_msg=name)
    record = json.loads((tmp_path / "new" / WARM_START_FILE).read_text())
    assert record["run_dir"] == str(source_dir.resolve()) and record["optimizer"] == "fresh"
    start = json.loads((tmp_path / "new" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["warm_start"]["restored_step"] == 8

    # The run resumes from its own checkpoint only with the same --warm_start.
    with pytest.raises(WarmStartError, match="was warm-started from .* but no --warm_start was given"):
        Trainer(_config(), PreparedDataset.from_dir(data), tmp_path / "new", stream=io.StringIO())
    resumed = Trainer(_config(), PreparedDataset.from_dir(data), tmp_path / "new", stream=io.StringIO(),
                      warm_start=source_dir)
    assert resumed.restore() == 0 and resumed._warm_record["restored_step"] == 8


@pytest.mark.large   # three traced training steps: ~30 s on a loaded 2-core machine
def test_a_warm_started_run_trains_its_weights_but_keeps_the_restored_masks(source, tmp_path):
    data, source_dir = source
    old = load_run(source_dir)
    old_codes = dsnn_keras.level_codes(old.model)
    # Three steps across the config's ramp start (begin_step 2, frequency 2): a cold run would
    # recompute the masks at step 2 (nearly dense); a warm-started one keeps the source's.
    trainer = Trainer(_config(), PreparedDataset.from_dir(data), tmp_path / "new", stream=io.StringIO(),
                      warm_start=source_dir)
    assert trainer.run(max_steps=3)["step"] == 3
    for name, codes in dsnn_keras.level_codes(trainer.model).items():
        np.testing.assert_array_equal(codes, old_codes[name], err_msg=name)
    moved = [n for n, v in _variables(old.model).items()
             if "kernel" in n and not np.array_equal(_variables(trainer.model)[n], v)]
    assert moved


@pytest.mark.parametrize("sections, key", [
    ({"model": {"lstm_units": [32]}}, "model.lstm_units: [24] (warm start) vs [32] (this run)"),
    ({"pruning": {"levels": [0.0, 0.5]}}, "levels: [0.0, 0.8] (warm start) vs [0.0, 0.5] (this run)"),
    ({"pruning": {"granularity": "unit"}}, "pruning.granularity: 'weight' (warm start) vs 'unit'"),
])
def test_a_source_with_another_architecture_is_refused_naming_it_and_the_difference(source, tmp_path,
                                                                                    sections, key):
    data, source_dir = source
    with pytest.raises(WarmStartError, match="--warm_start .*source: its model does not match") as error:
        check_warm_start(source_dir, _config(**sections), PreparedDataset.from_dir(data))
    assert key in str(error.value)
    # Through dsnn-train: one error line, exit 1, no run directory written.
    config = tmp_path / "config.yaml"
    dump_config(_config(**sections), config)
    assert train_main(["--data", str(data), "--config", str(config), "--out", str(tmp_path / "run"),
                       "--warm_start", str(source_dir)]) == 1
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_source_with_another_tokenizer_or_no_checkpoint_is_refused(source, tmp_path):
    data, source_dir = source
    other = build_prepared_dataset(tmp_path / "other", num_train=6, num_dev=2, seed=5, vocab_size=18)
    with pytest.raises(WarmStartError, match="tokenizer differs"):
        check_warm_start(source_dir, _config(), PreparedDataset.from_dir(other))
    with pytest.raises(WarmStartError, match="no such run directory"):
        check_warm_start(tmp_path / "missing", _config(), PreparedDataset.from_dir(data))
    (tmp_path / "empty").mkdir()
    for name in ("config.yaml", "tokenizer.model"):
        (tmp_path / "empty" / name).write_bytes((source_dir / name).read_bytes())
    with pytest.raises(WarmStartError, match="no checkpoint"):
        check_warm_start(tmp_path / "empty", _config(), PreparedDataset.from_dir(data))


def test_a_cold_run_with_checkpoints_cannot_become_warm_started(tmp_path):
    assert check_resume(tmp_path / "fresh", None, has_checkpoints=False) is None
    with pytest.raises(WarmStartError, match="started without --warm_start"):
        check_resume(tmp_path / "cold", tmp_path / "source", has_checkpoints=True)
