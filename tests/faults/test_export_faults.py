"""Fault suite, export: quantized files keep a float frontend, and verification catches it if not.

Issue 15 item 0: every ``--quantize dynamic-int8`` file transcribed audio through ``recognize`` at
~65 % WER (float: ~21 %) because dynamic-range quantization reached the in-graph mel filterbank.
"""
import os
import pathlib

import numpy as np
import pytest

import harness_tflite as h

_AN4_CLIPS = ("fash/0/fash-0-0000.flac", "fbbh/0/fbbh-0-0001.flac", "fclc/0/fclc-0-0002.flac")


def _real_speech(data_dir: pathlib.Path) -> list:
    from tflite.audio import load_audio

    return [load_audio(data_dir / "an4" / "train" / clip, 16000) for clip in _AN4_CLIPS]


def _quantized_file(design: str) -> pathlib.Path:
    return h.exported("int8") if design == "if_tree" else h.exported_shared("dynamic-int8")


def _levels_of(design: str) -> list:
    return list(range(len(h.INT8_LEVELS))) if design == "if_tree" else list(range(len(h.LEVELS)))


@pytest.mark.parametrize("design", ["if_tree", "shared"])
def test_int8_recognize_audio_equals_recognize_features_of_the_float_frontend(design, data_dir):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(_quantized_file(design)))
    audio_runner = interpreter.get_signature_runner("recognize")
    features_runner = interpreter.get_signature_runner("recognize_features")
    clips = _real_speech(data_dir) + [h.speechlike(1.2, seed=3)]
    for level in _levels_of(design):
        for clip in clips:
            via_audio = audio_runner(audio=clip, sparsity_level=np.int32(level))
            via_features = features_runner(features=h.features_of(clip), sparsity_level=np.int32(level))
            assert via_audio["log_probs"].shape == via_features["log_probs"].shape
            assert np.abs(via_audio["log_probs"] - via_features["log_probs"]).max() <= 1e-3, (design, level)
            assert via_audio["tokens"].tolist() == via_features["tokens"].tolist(), (design, level)


@pytest.mark.parametrize("quantize", ["dynamic-int8", "float16"])
def test_quantized_files_keep_the_mel_filterbank_in_float32(quantize):
    from ai_edge_litert import schema_py_generated as schema

    from tflite import flatbuffer
    from tflite.metadata import read_metadata

    path = h.exported("int8") if quantize == "dynamic-int8" else h.exported_shared("float16")
    data = path.read_bytes()
    bins, spectrum = h.feature_config().num_mel_bins, h.feature_config().fft_length // 2 + 1
    model = flatbuffer.unpack(data)
    graph = model.subgraphs[flatbuffer.signature_subgraph(data, "recognize")]
    filterbanks = [t for t in graph.tensors if sorted(int(d) for d in t.shape) == sorted([bins, spectrum])]
    assert filterbanks, "no mel filterbank tensor found in the recognize subgraph"
    live = {int(i) for op in graph.operators for i in op.inputs if i >= 0}
    used = [t for i, t in enumerate(graph.tensors) if i in live and t in filterbanks]
    assert used and all(t.type == schema.TensorType.FLOAT32 for t in used)
    export = read_metadata(path).raw["export"]
    assert export["frontend"] == "float32" and export["frontend_constants_restored"] >= 1


def _requantize_filterbank(data: bytes) -> bytes:
    """The int8 file with its mel filterbank quantized the way the converter used to (the bug)."""
    from ai_edge_litert import schema_py_generated as schema

    from tflite import flatbuffer

    model = flatbuffer.unpack(data)
    graph = model.subgraphs[flatbuffer.signature_subgraph(data, "recognize")]
    bins = h.feature_config().num_mel_bins
    for tensor in graph.tensors:
        if tensor.type == schema.TensorType.FLOAT32 and [int(d) for d in tensor.shape] == [bins, 257]:
            values = np.frombuffer(np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(),
                                   np.float32).reshape(bins, 257)
            scale = np.maximum(np.abs(values).max(axis=1), 1e-12) / 127.0
            quantized = np.round(values / scale[:, None]).astype(np.int8)
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(quantized.tobytes(), np.uint8)
            model.buffers.append(buffer)
            tensor.buffer = len(model.buffers) - 1
            tensor.type = schema.TensorType.INT8
            tensor.quantization = schema.QuantizationParametersT()
            tensor.quantization.scale = scale.astype(np.float32)
            tensor.quantization.zeroPoint = np.zeros(bins, np.int64)
            tensor.quantization.quantizedDimension = 0
            return flatbuffer.pack(model, len(data))
    raise AssertionError("no float32 filterbank to requantize")


def test_verification_rejects_a_file_whose_frontend_is_quantized():
    from tflite.export import ExportError, ExportOptions, probe_audio, verify_levels

    broken = _requantize_filterbank(h.exported("int8").read_bytes())
    models = [h.reference_models()[i] for i in h.INT8_LEVELS]
    with pytest.raises(ExportError, match="frontend"):
        verify_levels(broken, models, h.feature_config(), ExportOptions(quantize="dynamic-int8"),
                      [probe_audio(16000)])


def test_frontend_restoration_puts_back_the_exact_float_values():
    from tflite import flatbuffer
    from tflite.export import frontend_constants, keep_frontend_float

    broken = _requantize_filterbank(h.exported("int8").read_bytes())
    fixed, restored = keep_frontend_float(broken, h.feature_config())
    assert restored == 1
    model = flatbuffer.unpack(fixed)
    graph = model.subgraphs[flatbuffer.signature_subgraph(fixed, "recognize")]
    mel_t = frontend_constants(h.feature_config())[1]
    stored = [flatbuffer._constant_values(model, t) for t in graph.tensors
              if [int(d) for d in t.shape] == list(mel_t.shape)]
    assert any(v is not None and v.dtype == np.float32 and np.array_equal(v, mel_t) for v in stored)


def test_verification_gates_on_tokens_not_only_on_distances():
    """A quantized file whose transcripts drift from Keras fails, even if each level is 'nearest'."""
    from tflite.export import ExportError, ExportOptions, probe_audio, verify_levels

    data = h.exported("int8").read_bytes()
    other = h.level_models(seed=1)            # same architecture, other weights: other tokens
    models = [other[i] for i in h.INT8_LEVELS]
    with pytest.raises(ExportError, match="tokens differ from Keras"):
        verify_levels(data, models, h.feature_config(), ExportOptions(quantize="dynamic-int8"),
                      [probe_audio(16000), h.speechlike(1.0, seed=5)])


def test_token_edit_distance_counts_substitutions_insertions_and_deletions():
    from tflite.export import token_edit_distance

    assert token_edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert token_edit_distance([1, 2, 3], [1, 4, 3]) == 1
    assert token_edit_distance([1, 2, 3], [1, 3]) == 1
    assert token_edit_distance([1, 2], [1, 2, 2, 5]) == 2
    assert token_edit_distance([], [7, 8]) == 2
    assert token_edit_distance([7, 8], []) == 2


def test_written_model_gets_the_umask_mode_not_0600(tmp_path):
    from tflite.export import _write_atomically

    previous = os.umask(0o027)
    try:
        _write_atomically(tmp_path / "model.tflite", b"TFL3")
    finally:
        os.umask(previous)
    assert (tmp_path / "model.tflite").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["model.tflite"]


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from tflite.export import _write_atomically

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    stale = tmp_path / f".model.tflite.{int(dead.stdout)}.abc123.tmp"   # its writer has exited
    stale.write_bytes(b"partial")
    live = tmp_path / f".model.tflite.{os.getppid()}.def456.tmp"      # a running process's: kept
    live.write_bytes(b"in progress")
    other = tmp_path / ".other.tflite.1.x.tmp"                           # another output's: kept
    other.write_bytes(b"x")
    _write_atomically(tmp_path / "model.tflite", b"TFL3")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.tflite", live.name, other.name])
