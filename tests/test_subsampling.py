"""The subsampling front-end (dsnn_keras.subsampling): it knows its own time reduction, for any
number of stride-2 convolutions, and every caller (trainer, dataset filter, dsnn-eval) uses it."""
import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf

from dsnn_keras.config import ConfigError, ModelConfig
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.model import build_model, output_lengths, time_reduction
from fixtures_data import build_prepared_dataset, small_config

MEAN, STD = np.zeros(80, np.float32), np.ones(80, np.float32)
LENGTHS = np.arange(1, 42)


@pytest.mark.parametrize("padding", ["same", "causal", "lookahead"])
@pytest.mark.parametrize("convs", [1, 2, 3])
def test_output_lengths_match_the_built_models_frames_for_every_length(convs, padding):
    model_config = ModelConfig(conv_channels=(2,) * convs, lstm_units=(3,), dropout=0.0, conv_padding=padding)
    model = build_model(model_config, FeatureConfig(), 5, MEAN, STD)
    frames = [model(np.zeros([1, n, 80], np.float32)).shape[1] for n in LENGTHS]
    assert output_lengths(LENGTHS, model_config).tolist() == frames
    assert [output_lengths(int(n), model_config) for n in LENGTHS] == frames
    assert frames == [-(-int(n) // 2 ** convs) for n in LENGTHS]   # ceil(n / 2^convs)
    assert time_reduction(model_config) == 2 ** convs


def test_the_default_is_the_two_convolution_front_end():
    assert time_reduction() == 4 == time_reduction(ModelConfig())
    assert output_lengths(LENGTHS).tolist() == output_lengths(LENGTHS, ModelConfig()).tolist()
    assert output_lengths(np.array([100, 101])).tolist() == [25, 26]


def test_output_lengths_work_on_tensors_inside_a_tf_function():
    model_config = ModelConfig(conv_channels=(2, 2, 2))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def lengths(n):
        return output_lengths(n, model_config)

    assert lengths(tf.constant([1, 8, 9, 17], tf.int32)).numpy().tolist() == [1, 1, 2, 3]


def test_any_positive_number_of_convolutions_is_a_valid_config():
    for channels in ([4], [4, 4, 4]):
        assert small_config(model={"conv_channels": channels}).model.conv_channels == tuple(channels)
    for bad in ([], [4, 0]):
        with pytest.raises(ConfigError, match="model.conv_channels must be a non-empty list"):
            small_config(model={"conv_channels": bad})


def test_trainer_and_dsnn_eval_use_the_configs_time_reduction(tmp_path, monkeypatch):
    import dsnn_keras.evaluate as evaluate
    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.trainer import Trainer

    data = build_prepared_dataset(tmp_path / "prepared", num_train=8, num_dev=2)
    config = small_config(model={"conv_channels": [4]}, training={"total_steps": 1, "checkpoint_every": 1})
    trainer = Trainer(config, PreparedDataset.from_dir(data), tmp_path / "run", stream=io.StringIO())
    frames = [trainer.model(np.zeros([1, n, 80], np.float32)).shape[1] for n in (7, 8, 9)]
    assert np.asarray(trainer.output_lengths(np.array([7, 8, 9]))).tolist() == frames == [4, 4, 5]
    assert trainer.run()["step"] == 1

    seen = {}
    real = evaluate.evaluate_model

    def spy(*args, **kwargs):
        seen["lengths"] = np.asarray(kwargs["output_lengths"](np.array([7, 8, 9]))).tolist()
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_model", spy)
    evaluate.evaluate_run(tmp_path / "run", data, split="dev", write=False)
    assert seen["lengths"] == [4, 4, 5]   # 2x, not the default front-end's 4x


def test_a_causal_front_end_never_looks_ahead_and_streams_exactly():
    from dsnn_keras.streaming import StreamingModel

    model_config = ModelConfig(conv_channels=(4, 4), lstm_units=(6,), dropout=0.0, conv_padding="causal")
    model = build_model(model_config, FeatureConfig(num_mel_bins=20), 5, MEAN[:20], STD[:20])
    features = np.random.default_rng(0).normal(size=[1, 37, 20]).astype(np.float32)
    whole = model(features)[0].numpy()
    prefix = model(features[:, :21])[0].numpy()          # output frames 0..5 only see frames 0..20
    np.testing.assert_allclose(prefix, whole[:prefix.shape[0]], atol=1e-6)
    stream, state, outputs = StreamingModel(model), None, []
    state = stream.initial_state()
    for start in range(0, 37, 5):
        out, state = stream.step(features[0, start:start + 5], state)
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs), whole, atol=1e-6)


def test_the_same_padded_front_end_looks_ahead():
    model = build_model(ModelConfig(conv_channels=(4, 4), lstm_units=(6,), dropout=0.0),
                        FeatureConfig(num_mel_bins=20), 5, MEAN[:20], STD[:20])
    features = np.random.default_rng(0).normal(size=[1, 37, 20]).astype(np.float32)
    whole, prefix = model(features)[0].numpy(), model(features[:, :22])[0].numpy()
    assert not np.allclose(prefix[-1], whole[prefix.shape[0] - 1], atol=1e-4)


def test_a_lookahead_front_end_sees_exactly_three_frames_ahead_and_streams_with_a_flush():
    from dsnn_keras.streaming import StreamingModel

    model_config = ModelConfig(conv_channels=(4, 4), lstm_units=(6,), dropout=0.0, conv_padding="lookahead")
    model = build_model(model_config, FeatureConfig(num_mel_bins=20), 5, MEAN[:20], STD[:20])
    features = np.random.default_rng(1).normal(size=[1, 40, 20]).astype(np.float32)
    whole = model(features)[0].numpy()
    # Output frame u reads feature frames up to 4u + 3: a prefix of 4u + 4 frames gives it exactly.
    prefix = model(features[:, :24])[0].numpy()
    np.testing.assert_allclose(prefix[:6], whole[:6], atol=1e-6)
    assert not np.allclose(model(features[:, :23])[0].numpy()[5], whole[5], atol=1e-4)
    stream, outputs = StreamingModel(model), []
    state = stream.initial_state()
    for start in range(0, 40, 7):
        out, state = stream.step(features[0, start:start + 7], state, start + 7 >= 40)
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs), whole, atol=1e-6)


def test_conv_padding_is_validated():
    with pytest.raises(ConfigError, match="model.conv_padding must be one of"):
        small_config(model={"conv_padding": "left"})


def test_running_mean_norm_subtracts_the_mean_so_far_with_its_prior():
    from dsnn_keras.subsampling import RunningMeanNorm

    x = np.random.default_rng(2).normal(size=[2, 9, 3]).astype(np.float32)
    got = RunningMeanNorm(4)(x).numpy()
    t = np.arange(1, 10, dtype=np.float32)[None, :, None]
    np.testing.assert_allclose(got, x - np.cumsum(x, axis=1) / (4 + t), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="prior_frames must be > 0"):
        RunningMeanNorm(0)


def test_a_fixed_channel_offset_fades_as_prior_over_prior_plus_frames():
    # A microphone's frequency response adds a constant per mel bin to log-mel features: after
    # t frames only prior / (prior + t) of it is left, whatever the speech under it.
    from dsnn_keras.subsampling import RunningMeanNorm

    x = np.random.default_rng(3).normal(size=[1, 200, 5]).astype(np.float32)
    offset = np.array([3.0, -2.0, 0.5, 0.0, 1.0], np.float32)
    layer = RunningMeanNorm(10)
    left = (layer(x + offset).numpy() - layer(x).numpy())[0]
    t = np.arange(1, 201, dtype=np.float32)[:, None]
    np.testing.assert_allclose(left, offset * 10 / (10 + t), rtol=1e-4, atol=1e-5)
    assert np.abs(left[-1]).max() < 0.05 * np.abs(offset).max()


def test_a_running_mean_front_end_is_causal_serialises_and_streams_exactly():
    import tf_keras as keras

    from dsnn_keras.streaming import StreamingModel

    model_config = ModelConfig(conv_channels=(4, 4), lstm_units=(6,), dropout=0.0, conv_padding="causal",
                               running_mean_frames=16)
    model = build_model(model_config, FeatureConfig(num_mel_bins=20), 5, MEAN[:20], STD[:20])
    assert model.get_layer("running_mean").prior_frames == 16
    features = np.random.default_rng(4).normal(size=[1, 37, 20]).astype(np.float32)
    whole = model(features)[0].numpy()
    prefix = model(features[:, :21])[0].numpy()
    np.testing.assert_allclose(prefix, whole[:prefix.shape[0]], atol=1e-6)
    plain = build_model(dataclasses.replace(model_config, running_mean_frames=0), FeatureConfig(num_mel_bins=20),
                        5, MEAN[:20], STD[:20])
    plain.set_weights(model.get_weights())
    assert not np.allclose(plain(features)[0].numpy(), whole, atol=1e-3)
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(features)[0].numpy(), whole, atol=1e-6)
    stream = StreamingModel(model)
    assert [(s.name, s.shape) for s in stream.state_specs[:2]] == [("state_running_mean_sum", (20,)),
                                                                    ("state_running_mean_count", ())]
    state, outputs = stream.initial_state(), []
    for start, stop in [(0, 1), (1, 1), (1, 6), (6, 20), (20, 37)]:
        out, state = stream.step(features[0, start:stop], state)
        outputs.append(out.numpy())
    np.testing.assert_allclose(np.concatenate(outputs), whole, atol=1e-5)
    assert float(state["state_running_mean_count"]) == 37.0


def test_running_mean_frames_is_validated():
    with pytest.raises(ConfigError, match="model.running_mean_frames must be 0"):
        small_config(model={"running_mean_frames": -1})
