"""Tests of dsnn_keras.model: shapes, output lengths, CMVN, which layers are pruned, serialization."""
import numpy as np
import pytest
import tf_keras as keras

import dsnn_keras
from dsnn_keras.config import ModelConfig
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.model import CMVN, build_model, build_pruned_model, default_prune_layers, output_lengths
from fixtures_data import SMALL_CONFORMER, small_config

MEAN, STD = np.linspace(-1, 1, 80).astype(np.float32), np.full(80, 2.0, np.float32)


@pytest.mark.parametrize("frames", [1, 2, 5, 8, 33])
def test_output_frames_match_output_lengths(frames):
    model = build_model(ModelConfig(conv_channels=(4, 4), lstm_units=(8,), dropout=0.0),
                        FeatureConfig(), vocab_size=10, cmvn_mean=MEAN, cmvn_std=STD)
    logits = model(np.zeros([2, frames, 80], np.float32))
    assert logits.shape == (2, output_lengths(frames), 11)
    assert output_lengths(np.array([frames]))[0] == logits.shape[1]


def test_cmvn_normalises_and_round_trips_its_config():
    layer = CMVN(MEAN, STD)
    x = np.tile(MEAN + 2 * STD, (1, 3, 1))
    np.testing.assert_allclose(layer(x).numpy(), 2.0, rtol=1e-6)
    clone = CMVN.from_config(layer.get_config())
    np.testing.assert_allclose(clone(x).numpy(), layer(x).numpy())


def test_default_pruned_layers_are_lstm_and_dense_but_not_the_output():
    model = build_model(ModelConfig(conv_channels=(4, 4), lstm_units=(8, 8), projection_units=6),
                        FeatureConfig(), 10, MEAN, STD)
    assert default_prune_layers(model) == ["lstm_0", "lstm_1", "projection"]


def test_pruned_model_wraps_chosen_layers_and_keeps_levels():
    config = small_config(pruning={"levels": [0.0, 0.5, 0.9]})
    model = build_pruned_model(config, FeatureConfig(), 10, MEAN, STD)
    wrapped = {l.name for l in model.layers if isinstance(l, dsnn_keras.NestedPruneLowMagnitude)}
    assert len(wrapped) == 1 and "logits" not in " ".join(wrapped) and "conv" not in " ".join(wrapped)
    assert dsnn_keras.sparsity_levels(model) == (0.0, 0.5, 0.9)
    single = build_pruned_model(small_config(training={"mode": "single"}, pruning={"single_sparsity": 0.7}),
                                FeatureConfig(), 10, MEAN, STD)
    assert dsnn_keras.sparsity_levels(single) == (0.7,)
    with pytest.raises(ValueError, match="no layer named"):
        build_pruned_model(small_config(pruning={"prune_layers": ["lstm_9"]}), FeatureConfig(), 10, MEAN, STD)


def test_pruning_block_size_from_config_prunes_whole_blocks():
    config = small_config(pruning={"levels": [0.0, 0.75], "block_size": [4, 1], "begin_step": 0,
                                   "end_step": 1, "frequency": 1})
    model = build_pruned_model(config, FeatureConfig(), 10, MEAN, STD)
    dsnn_keras.update_nested_masks(model, 1)
    codes = dsnn_keras.level_codes(model)
    assert codes
    for key, code in codes.items():
        matrix = code.reshape(-1, code.shape[-1])
        rows = matrix.shape[0] - matrix.shape[0] % 4
        blocks = matrix[:rows].reshape(rows // 4, 4, -1)
        # Every 4x1 block of the [inputs, outputs] view is kept or pruned as a whole.
        assert (blocks == blocks[:, :1, :]).all(), key
        assert 0.2 < (matrix > 1).mean() < 0.3, key   # level 1 (75 %) keeps about a quarter


@pytest.mark.parametrize("model_section", [{}, SMALL_CONFORMER], ids=["lstm", "conformer"])
def test_pruned_model_saves_and_loads_without_custom_objects(tmp_path, model_section):
    model = build_pruned_model(small_config(model=model_section), FeatureConfig(), 10, MEAN, STD)
    x = np.random.default_rng(0).normal(size=[1, 40, 80]).astype(np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-5)
