"""The ``stream`` signature (tflite/streaming.py) converted and run on the real LiteRT interpreter."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from dsnn_keras.decoding import greedy_ctc_decode
from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram
from dsnn_keras.streaming import StreamingModel
from harness import causal_recognizer
from harness_tflite import convert_builtin
from tflite import flatbuffer
from tflite.streaming import StreamSignature

CONFIG = FeatureConfig(num_mel_bins=20)
CLASSES = 7   # blank = 6


@functools.lru_cache(maxsize=1)
def _two_levels():
    """Two 'levels' (different weights, same state layout) and the converted stream signature."""
    models = [causal_recognizer(seed=seed, bins=CONFIG.num_mel_bins, classes=CLASSES) for seed in (0, 1)]
    signature = StreamSignature([StreamingModel(m) for m in models], CONFIG, blank_id=CLASSES - 1)
    return models, signature, convert_builtin(signature.function)


def _runner():
    from ai_edge_litert.interpreter import Interpreter

    _, _, data = _two_levels()
    return Interpreter(model_content=data).get_signature_runner()


def _audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * CONFIG.sample_rate)) / CONFIG.sample_rate
    return (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def _whole(model, audio):
    features = log_mel_spectrogram(tf.constant(audio), CONFIG).numpy()
    log_probs = tf.nn.log_softmax(model(features[np.newaxis])[0], axis=-1).numpy()
    return log_probs, greedy_ctc_decode(log_probs[np.newaxis], None, CLASSES - 1)[0]


def _run_stream(runner, audio, sizes, levels=(0,), state=None):
    _, signature, _ = _two_levels()
    state = signature.initial_state() if state is None else state
    log_probs, tokens, start, call = [], [], 0, 0
    while True:
        size = sizes[call % len(sizes)]
        chunk = audio[start:start + size]
        start += size
        end = start >= len(audio)
        out = runner(audio=chunk, sparsity_level=np.int32(levels[call % len(levels)]),
                     end_of_stream=np.int32(end), **state)
        call += 1
        log_probs.append(out.pop("log_probs"))
        tokens.extend(out.pop("tokens").tolist())
        out.pop("level")
        state = out
        if end:
            return np.concatenate(log_probs), tokens, state


def test_stream_signature_uses_builtin_ops_only():
    _, _, data = _two_levels()
    assert all(op.is_builtin for op in flatbuffer.operators(data))


@pytest.mark.parametrize("sizes", [[160], [2560], [32000], [0, 1, 5000, 37, 700]])
@pytest.mark.parametrize("level", [0, 1])
def test_chunked_stream_equals_the_whole_utterance(sizes, level):
    models, _, _ = _two_levels()
    audio = _audio(1.3)
    log_probs, tokens, state = _run_stream(_runner(), audio, sizes, levels=(level,))
    want_log_probs, want_tokens = _whole(models[level], audio)
    assert log_probs.shape == want_log_probs.shape
    np.testing.assert_allclose(log_probs, want_log_probs, atol=1e-4)
    assert tokens == list(want_tokens)
    assert all(not np.any(value) for value in state.values())   # the end of a stream returns the start state


def test_single_sample_chunks_and_a_too_short_utterance_end_like_the_whole():
    models, _, _ = _two_levels()
    for seconds in (0.0, 0.01, 0.03):
        audio = _audio(seconds, seed=2)
        log_probs, tokens, _ = _run_stream(_runner(), audio, [1])
        want_log_probs, want_tokens = _whole(models[0], audio)
        np.testing.assert_allclose(log_probs, want_log_probs, atol=1e-4)
        assert tokens == list(want_tokens)


def test_two_interleaved_streams_on_one_interpreter_do_not_interfere():
    _, signature, _ = _two_levels()
    runner = _runner()
    a, b = _audio(0.9, seed=3), _audio(0.7, seed=4)
    alone_a = _run_stream(_runner(), a, [1600])
    alone_b = _run_stream(_runner(), b, [1600])
    states = {"a": signature.initial_state(), "b": signature.initial_state()}
    outputs = {"a": [], "b": []}
    for start in range(0, 16000, 1600):
        for name, audio in (("a", a), ("b", b)):
            if start >= len(audio):
                continue
            out = runner(audio=audio[start:start + 1600], sparsity_level=np.int32(0),
                         end_of_stream=np.int32(start + 1600 >= len(audio)), **states[name])
            outputs[name].append(out.pop("log_probs"))
            out.pop("tokens"), out.pop("level")
            states[name] = out
    np.testing.assert_array_equal(np.concatenate(outputs["a"]), alone_a[0])
    np.testing.assert_array_equal(np.concatenate(outputs["b"]), alone_b[0])


def test_a_level_switch_gives_the_new_levels_outputs_from_that_chunk_on():
    models, signature, _ = _two_levels()
    audio = _audio(1.0, seed=5)
    chunk = 3200   # 20 feature frames = 5 encoder frames per chunk
    switched, _, _ = _run_stream(_runner(), audio, [chunk], levels=(0, 1, 0, 1, 0))
    # The reference: Keras level models stepped with the same schedule on the same state.
    streams = [StreamingModel(m) for m in models]
    features = log_mel_spectrogram(tf.constant(audio), CONFIG).numpy()
    state, expected, done = streams[0].initial_state(), [], 0
    for call, start in enumerate(range(0, len(audio), chunk)):
        frames_now = CONFIG.num_frames(min(start + chunk, len(audio))) if start + chunk < len(audio) \
            else features.shape[0]
        frames_now = frames_now if start + chunk >= CONFIG.frame_length or start + chunk >= len(audio) else 0
        out, state = streams[(0, 1, 0, 1, 0)[call % 5]].step(features[done:frames_now], state)
        done = frames_now
        expected.append(tf.nn.log_softmax(out, axis=-1).numpy())
    np.testing.assert_allclose(switched, np.concatenate(expected), atol=1e-4)
    fixed, _, _ = _run_stream(_runner(), audio, [chunk], levels=(0,))
    assert not np.allclose(switched[5:10], fixed[5:10], atol=1e-3)   # the second chunk ran level 1
    np.testing.assert_allclose(switched[:5], fixed[:5], atol=1e-5)    # the first ran level 0


def test_a_lookahead_front_end_streams_exactly_with_the_flush_at_the_end():
    model = causal_recognizer(seed=3, bins=CONFIG.num_mel_bins, classes=CLASSES, time_padding=1, end_padding=1)
    signature = StreamSignature([StreamingModel(model)], CONFIG, blank_id=CLASSES - 1)
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=convert_builtin(signature.function)).get_signature_runner()
    audio = _audio(0.9, seed=8)
    state, outputs = signature.initial_state(), []
    for start in range(0, len(audio), 2000):
        out = runner(audio=audio[start:start + 2000], sparsity_level=np.int32(0),
                     end_of_stream=np.int32(start + 2000 >= len(audio)), **state)
        outputs.append(out.pop("log_probs"))
        out.pop("tokens"), out.pop("level")
        state = out
    want, _ = _whole(model, audio)
    np.testing.assert_allclose(np.concatenate(outputs), want, atol=1e-4)
