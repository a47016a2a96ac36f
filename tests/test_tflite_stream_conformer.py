"""A Conformer run with a bounded attention context exports with the ``stream`` signature (real LiteRT)."""
from __future__ import annotations

import functools
import pathlib
import tempfile

import numpy as np
import pytest

import harness_tflite as h
from tflite import signatures as sig

_ROOT = pathlib.Path(tempfile.mkdtemp(prefix="dsnn_stream_conformer_"))
LEFT = 4
CONFORMER = {"encoder": "conformer", "lstm_units": [],
             "conformer": {"dim": 16, "blocks": 1, "heads": 2, "ff_mult": 2, "conv_kernel": 3, "left_context": LEFT}}


@functools.lru_cache(maxsize=1)
def _exported() -> pathlib.Path:
    from tflite.export import ExportOptions, export_run

    run = h.write_run_dir(_ROOT / "run", conv_padding="causal", model=CONFORMER)
    out = _ROOT / "conformer.tflite"
    export_run(run, out, options=ExportOptions(stream="on", measure_latency=False),
               verify_audio=[h.speechlike(1.2, seed=7)])
    return out


@functools.lru_cache(maxsize=1)
def _recognizer():
    from tflite import Recognizer

    return Recognizer(_exported())


def _stream(recognizer, audio, sizes, levels=(0,)):
    stream = recognizer.stream(level=levels[0])
    start, call = 0, 0
    while start < len(audio):
        size = sizes[call % len(sizes)]
        stream.set_level(levels[call % len(levels)])
        stream.accept(audio[start:start + size])
        start, call = start + size, call + 1
    stream.finish()
    return stream


@pytest.mark.large
def test_the_file_has_builtin_ops_and_lists_the_conformer_caches():
    from tflite.export import check_builtin_ops

    check_builtin_ops(_exported().read_bytes())   # raises on any custom or Flex op
    meta = _recognizer().metadata
    state = {s["name"]: (s["shape"], s["dtype"]) for s in meta.stream_state}
    assert state["state_conformer_0_mhsa_keys"] == ([LEFT, 2, 8], "float32")
    assert state["state_conformer_0_mhsa_values"] == ([LEFT, 2, 8], "float32")
    assert state["state_conformer_0_mhsa_valid"] == ([], "int32")
    assert state["state_conformer_0_depthwise_frames"] == ([2, 16], "float32")
    for entry in meta.raw["export"]["verification"]:   # the export checked the stream at every level
        assert entry["stream_max_abs_diff"] <= 1e-4 and entry["stream_token_errors"] == 0
    assert sig.STREAM in meta.raw["signatures"]


@pytest.mark.large
@pytest.mark.parametrize("sizes", [[160], [2560], [0, 1, 3000, 37, 700, 0, 5000]], ids=["10ms", "160ms", "random"])
def test_chunked_stream_equals_recognize_at_every_level(sizes):
    recognizer = _recognizer()
    audio = h.speechlike(1.6, seed=3)   # 40 encoder frames, ten times the left context
    for level in range(recognizer.num_levels):
        whole = recognizer.recognize(audio, level=level)
        stream = _stream(recognizer, audio, sizes, levels=(level,))
        assert stream.log_probs.shape == whole.log_probs.shape
        np.testing.assert_allclose(stream.log_probs, whole.log_probs, atol=1e-4)
        assert stream.tokens == whole.tokens


@pytest.mark.large
def test_a_level_switch_mid_stream_carries_the_caches():
    recognizer = _recognizer()
    audio = h.speechlike(1.6, seed=4)
    chunk = 4000   # 25 feature frames: 6 or 7 encoder frames per chunk
    switched = _stream(recognizer, audio, [chunk], levels=(0, 1))
    fixed = _stream(recognizer, audio, [chunk], levels=(0,))
    first = 1 + (chunk - 400) // 160 // 4   # encoder frames the first chunk (level 0 in both) completes
    np.testing.assert_allclose(switched.log_probs[:first], fixed.log_probs[:first], atol=1e-5)
    assert not np.allclose(switched.log_probs[first:2 * first], fixed.log_probs[first:2 * first], atol=1e-3)


def test_stream_on_refuses_a_conformer_without_left_context_naming_the_key():
    from tflite.errors import ExportError
    from tflite.export import ExportOptions, export_run

    model = {**CONFORMER, "conformer": {**CONFORMER["conformer"], "left_context": None}}
    run = h.write_run_dir(_ROOT / "run_unbounded", conv_padding="causal", model=model)
    with pytest.raises(ExportError, match=r"--stream on.*model\.conformer\.left_context"):
        export_run(run, _ROOT / "unbounded.tflite", options=ExportOptions(stream="on", measure_latency=False))
    assert not (_ROOT / "unbounded.tflite").exists()
