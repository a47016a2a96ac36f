"""Tests for the shared log-mel frontend."""
import functools

import numpy as np
import pytest
import tensorflow as tf

from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram, log_mel_stream_step, stream_state_size


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


def _stream(audio: np.ndarray, chunk_sizes, config: FeatureConfig, step_fn=log_mel_stream_step):
    """Feeds ``audio`` in chunks of the given sizes (cycled), the last call ending the stream."""
    state = (np.zeros([stream_state_size(config)], np.float32), np.int32(0), np.int32(0))
    frames, start, i = [], 0, 0
    while True:
        size = chunk_sizes[i % len(chunk_sizes)]
        i += 1
        chunk = audio[start:start + size]
        start += size
        end = start >= len(audio)
        features, *state = step_fn(tf.constant(chunk), *state, end, config)
        assert np.shape(state[0]) == (stream_state_size(config),)   # fixed-shape state
        frames.append(np.asarray(features))
        if end:
            return np.concatenate(frames), state


@functools.lru_cache(maxsize=None)
def _graph_step(config: FeatureConfig):
    """`log_mel_stream_step` traced once with a fixed signature, as the export runs it: the eager
    call costs ~10x more per chunk, and the test feeds up to a thousand chunks per utterance."""
    size = stream_state_size(config)

    @tf.function(autograph=False,
                 input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([size], tf.float32),
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.bool)])
    def step(chunk, buffer, buffered, frames_done, end):
        return log_mel_stream_step(chunk, buffer, buffered, frames_done, end, config)

    return lambda chunk, buffer, buffered, frames_done, end, _config: step(
        chunk, tf.constant(buffer), tf.constant(buffered, tf.int32), tf.constant(frames_done, tf.int32),
        tf.constant(bool(end)))


@pytest.mark.parametrize("num_samples", [0, 5, 399, 400, 401, 560, 4321])
@pytest.mark.parametrize("chunk_sizes", [[1], [0, 7], [160], [2560], [0, 1, 3000, 37, 0, 400]])
def test_streaming_frames_equal_the_whole_utterance(num_samples, chunk_sizes):
    config = FeatureConfig()
    if chunk_sizes == [1] and num_samples > 600:
        chunk_sizes = [17]   # keeps the test quick; single samples are covered by the short clips
    audio = (0.1 * np.random.default_rng(num_samples).standard_normal(num_samples)).astype(np.float32)
    streamed, (buffer, buffered, frames_done) = _stream(audio, chunk_sizes, config, step_fn=_graph_step(config))
    whole = log_mel_spectrogram(tf.constant(audio), config).numpy()
    assert streamed.shape == whole.shape
    # Same frames, same arithmetic; but the FFT/matmul kernels may round differently for a batch
    # of one frame than for a batch of many, depending on the CPU (bit-equal on the machine this
    # was written on, up to 2.4e-7 apart on an AVX2-only EPYC), so "equal" is to float32 rounding.
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)
    assert int(buffered) == 0 and int(frames_done) == whole.shape[0]


def test_the_eager_streaming_step_equals_the_whole_utterance():
    config = FeatureConfig()
    audio = (0.1 * np.random.default_rng(7).standard_normal(1500)).astype(np.float32)
    streamed, _ = _stream(audio, [0, 1, 399, 160, 2560], config)
    np.testing.assert_allclose(streamed, log_mel_spectrogram(tf.constant(audio), config).numpy(), rtol=0, atol=1e-5)


def test_streaming_holds_back_an_incomplete_window_until_more_audio_arrives():
    config = FeatureConfig()
    state = (np.zeros([stream_state_size(config)], np.float32), 0, 0)
    features, buffer, buffered, done = log_mel_stream_step(tf.zeros([config.frame_length - 1]), *state, False, config)
    assert features.shape[0] == 0 and int(buffered) == config.frame_length - 1 and int(done) == 0
    features, buffer, buffered, done = log_mel_stream_step(tf.zeros([1]), buffer, buffered, done, False, config)
    assert features.shape[0] == 1 and int(buffered) == config.frame_length - config.frame_step


def test_streaming_step_converts_to_builtin_tflite_ops_and_matches():
    from ai_edge_litert.interpreter import Interpreter

    config = FeatureConfig()
    size = stream_state_size(config)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([size], tf.float32),
                                  tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.int32)])
    def step(chunk, buffer, buffered, frames_done, end_of_stream):
        features, buffer, buffered, frames_done = log_mel_stream_step(
            chunk, buffer, buffered, frames_done, end_of_stream, config)
        return {"features": features, "buffer": buffer, "buffered": buffered, "frames_done": frames_done}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([step.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    runner = Interpreter(model_content=converter.convert()).get_signature_runner()

    def lite_step(chunk, buffer, buffered, frames_done, end, _config):
        out = runner(chunk=np.asarray(chunk, np.float32), buffer=np.asarray(buffer, np.float32),
                     buffered=np.int32(buffered), frames_done=np.int32(frames_done), end_of_stream=np.int32(end))
        return out["features"], out["buffer"], out["buffered"], out["frames_done"]

    audio = (0.1 * np.random.default_rng(3).standard_normal(5000)).astype(np.float32)
    streamed, _ = _stream(audio, [0, 1, 1234, 160, 2560], config, step_fn=lite_step)
    whole = log_mel_spectrogram(tf.constant(audio), config).numpy()
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
