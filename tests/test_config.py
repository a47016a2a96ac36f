"""Tests of dsnn_keras.config: versioned YAML configs validated on load."""
import pathlib

import pytest

from dsnn_keras.config import (ConfigError, apply_overrides, config_from_dict, dump_config,
                               load_config)

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["tiny.yaml", "synth.yaml", "an4.yaml", "an4_2200.yaml", "an4_1800.yaml", "an4_1200.yaml", "demo.yaml"])
def test_shipped_configs_load_and_validate(name):
    config = load_config(CONFIGS / name)
    assert config.version == 1
    assert config.pruning.levels[0] < config.pruning.levels[-1]
    assert config.pruning.end_step < config.training.total_steps


def test_unknown_key_is_an_error_naming_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\ntraining:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*training\.learning_rat"):
        load_config(path)


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\noptimiser: {}\n")
    with pytest.raises(ConfigError, match="optimiser"):
        load_config(path)


@pytest.mark.parametrize("text, key", [
    ("training: {mode: both}", "training.mode"),
    ("training: {total_steps: ten}", "training.total_steps"),
    ("training: {warmup_steps: 10, decay_begin_step: 5}", "training.decay_begin_step"),
    ("training: {total_steps: 100, decay_begin_step: 100}", "training.decay_begin_step"),
    ("pruning: {levels: [0.5, 0.2]}", "pruning.levels"),
    ("pruning: {levels: [0.0, 1.0]}", "pruning.levels"),
    ("pruning: {begin_step: 10, end_step: 5}", "begin_step"),
    ("pruning: {block_size: [4, 0]}", "pruning.block_size"),
    ("pruning: {block_size: [4]}", "pruning.block_size"),
    ("pruning: {granularity: channel}", "pruning.granularity"),
    ("pruning: {granularity: unit, block_size: [4, 1]}", "pruning.granularity"),
    ("pruning: {granularity: block}", "pruning.granularity"),
    ("model: {lstm_units: []}", "model.lstm_units"),
    ("data: {specaugment: {freq_masks: -1}}", "data.specaugment.freq_masks"),
    ("features: {num_mel_bins: 0}", "num_mel_bins"),
    ("features: {mel_bins: 40}", "mel_bins"),
])
def test_bad_values_are_errors_naming_the_key(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text("version: 1\n" + text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and "c.yaml" in str(err.value)


def test_version_is_required_and_checked():
    with pytest.raises(ConfigError, match="version"):
        config_from_dict({"training": {}})
    with pytest.raises(ConfigError, match="version must be 1"):
        config_from_dict({"version": 2})


def test_single_mode_has_one_effective_level():
    config = config_from_dict({"version": 1, "training": {"mode": "single"},
                               "pruning": {"single_sparsity": 0.7}})
    assert config.effective_levels == (0.7,)
    assert config.num_sandwich_levels == 1


def test_overrides_apply_dotted_keys_and_revalidate():
    config = load_config(CONFIGS / "tiny.yaml")
    changed = apply_overrides(config, ["training.total_steps=12", "pruning.levels=[0.0, 0.6]"])
    assert changed.training.total_steps == 12 and changed.pruning.levels == (0.0, 0.6)
    with pytest.raises(ConfigError, match="training.bogus"):
        apply_overrides(config, ["training.bogus=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(config, ["training.total_steps"])


def test_dumped_config_reloads_identically(tmp_path):
    config = apply_overrides(load_config(CONFIGS / "an4.yaml"), ["training.distillation_weight=0.5"])
    dump_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == config


@pytest.mark.parametrize("pruning, expected", [
    ({}, "weight"),
    ({"block_size": [4, 1]}, "block"),
    ({"granularity": "block", "block_size": [4, 1]}, "block"),
    ({"granularity": "unit"}, "unit"),
])
def test_granularity_defaults_to_what_the_block_size_implies(pruning, expected):
    assert config_from_dict({"version": 1, "pruning": pruning}).pruning.effective_granularity == expected
