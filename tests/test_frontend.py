"""Tests for the shared log-mel frontend."""
import numpy as np
import pytest
import tensorflow as tf

from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram


def test_default_config_matches_the_design():
    cfg = FeatureConfig()
    assert (cfg.sample_rate, cfg.num_mel_bins, cfg.frame_length, cfg.frame_step, cfg.fft_length) == (
        16000, 80, 400, 160, 512)


def test_frame_count_follows_num_frames():
    cfg = FeatureConfig()
    for n in (0, 1, 399, 400, 401, 559, 560, 16000, 16123):
        feats = log_mel_spectrogram(np.zeros(n, np.float32), cfg)
        assert feats.shape == (cfg.num_frames(n), 80), n


def test_empty_and_short_audio_give_one_finite_frame():
    feats = log_mel_spectrogram(np.zeros(0, np.float32)).numpy()
    assert feats.shape == (1, 80)
    assert np.all(np.isfinite(feats))


def test_batched_input_equals_per_example():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 8000)).astype(np.float32) * 0.1
    batched = log_mel_spectrogram(audio).numpy()
    for i in range(2):
        np.testing.assert_allclose(batched[i], log_mel_spectrogram(audio[i]).numpy(), atol=1e-5)


def test_tone_energy_lands_in_the_right_mel_bin():
    cfg = FeatureConfig()
    t = np.arange(16000) / 16000.0
    low = log_mel_spectrogram(np.sin(2 * np.pi * 300 * t).astype(np.float32)).numpy().mean(0)
    high = log_mel_spectrogram(np.sin(2 * np.pi * 4000 * t).astype(np.float32)).numpy().mean(0)
    assert np.argmax(low) < np.argmax(high)
    assert np.argmax(low) < cfg.num_mel_bins // 3


def test_traces_in_tf_function_with_unknown_length():
    fn = tf.function(lambda x: log_mel_spectrogram(x),
                     input_signature=[tf.TensorSpec([None], tf.float32)])
    out = fn(tf.zeros([3200]))
    assert out.shape == (FeatureConfig().num_frames(3200), 80) == (18, 80)


def test_from_dict_rejects_unknown_keys_naming_them():
    with pytest.raises(ValueError, match="num_mels"):
        FeatureConfig.from_dict({"num_mels": 40})


@pytest.mark.parametrize("kwargs, field", [
    ({"fft_length": 256}, "fft_length"),
    ({"num_mel_bins": 0}, "num_mel_bins"),
    ({"upper_edge_hz": 9000.0}, "upper_edge_hz"),
])
def test_invalid_config_values_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FeatureConfig(**kwargs)


def test_round_trips_through_dict():
    cfg = FeatureConfig(num_mel_bins=40, upper_edge_hz=7000.0)
    assert FeatureConfig.from_dict(cfg.to_dict()) == cfg
