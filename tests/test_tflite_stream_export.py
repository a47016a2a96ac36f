"""The ``stream`` signature in exported files: dsnn-export adds it for causal models, the runtime streams.

Every check runs the real LiteRT interpreter on the written file.
"""
from __future__ import annotations

import functools
import pathlib
import tempfile

import numpy as np
import pytest

import harness_tflite as h
from tflite import signatures as sig
from harness_bench import load_bench_script

_ROOT = pathlib.Path(tempfile.mkdtemp(prefix="dsnn_stream_export_"))


@functools.lru_cache(maxsize=None)
def _run(unit: bool) -> pathlib.Path:
    """The causal run directory: weight granularity (the float and int8 exports), or unit (sliced)."""
    if unit:
        return h.write_run_dir(_ROOT / "run_unit", conv_padding="causal", granularity="unit", conv_channels=(16, 8))
    return h.write_run_dir(_ROOT / "run_float", conv_padding="causal", conv_channels=(4, 4))


@functools.lru_cache(maxsize=None)
def _export(kind: str) -> pathlib.Path:
    """A causal run exported once per kind: float (weight granularity), unit (sliced), int8 (the
    float kind's run, quantized)."""
    from tflite.export import ExportOptions, export_run

    if kind == "running":   # a unit run (sliced levels) with the running mean normalisation
        run = h.write_run_dir(_ROOT / "run_running", conv_padding="causal", granularity="unit", conv_channels=(16, 8),
                              model={"running_mean_frames": 30})
    else:
        run = _run(kind == "unit")
    options = ExportOptions(stream="on", quantize="dynamic-int8" if kind == "int8" else "none",
                            measure_latency=False)
    out = _ROOT / f"{kind}.tflite"
    export_run(run, out, options=options, verify_audio=[h.speechlike(1.2, seed=7)])
    return out


def _recognizer(kind: str):
    from tflite import Recognizer

    return Recognizer(_export(kind))


def _stream_text(recognizer, audio, chunk: int, levels=(0,)):
    stream = recognizer.stream(level=levels[0])
    for i, start in enumerate(range(0, len(audio), chunk)):
        stream.set_level(levels[i % len(levels)])
        stream.accept(audio[start:start + chunk])
    return stream.finish(), stream


def test_the_metadata_lists_the_state_the_signature_takes():
    recognizer = _recognizer("float")
    meta = recognizer.metadata
    assert meta.raw["stream"]["signature"] == sig.STREAM
    runner = recognizer._interpreter.get_signature_runner(sig.STREAM)   # pylint: disable=protected-access
    inputs = {name: detail for name, detail in runner.get_input_details().items() if name.startswith("state_")}
    outputs = {name for name in runner.get_output_details() if name.startswith("state_")}
    described = {s["name"]: s for s in meta.stream_state}
    assert set(described) == set(inputs) == outputs
    for name, detail in inputs.items():
        assert list(detail["shape_signature"]) == described[name]["shape"]
        assert np.dtype(detail["dtype"]).name == described[name]["dtype"]
    assert {"state_frontend_samples", "state_lstm_0_h", "state_lstm_1_c", "state_conv_1_frames",
            "state_ctc_previous"} <= set(described)
    assert sig.STREAM in meta.raw["signatures"]


def test_the_export_verified_the_stream_against_recognize_at_every_level():
    verification = _recognizer("float").metadata.raw["export"]["verification"]
    assert len(verification) == len(h.RUN_LEVELS)
    for entry in verification:
        assert entry["stream_max_abs_diff"] <= 1e-4
        assert entry["stream_token_errors"] == 0


@pytest.mark.parametrize("level", range(len(h.RUN_LEVELS)))
@pytest.mark.parametrize("chunk_ms", [10, 160, 2000])
def test_recognizer_stream_equals_recognize(level, chunk_ms):
    recognizer = _recognizer("float")
    audio = h.speechlike(1.5, seed=level)
    whole = recognizer.recognize(audio, level=level)
    text, stream = _stream_text(recognizer, audio, 16 * chunk_ms, levels=(level,))
    assert text == whole.text and stream.tokens == whole.tokens
    np.testing.assert_allclose(stream.log_probs, whole.log_probs, atol=1e-4)


def test_a_running_mean_model_streams_like_recognize_at_every_level():
    recognizer = _recognizer("running")
    described = {s["name"]: s for s in recognizer.metadata.stream_state}
    assert described["state_running_mean_sum"]["shape"] == [80] and described["state_running_mean_count"]["shape"] == []
    for entry in recognizer.metadata.raw["export"]["verification"]:
        assert entry["stream_max_abs_diff"] <= 1e-4 and entry["stream_token_errors"] == 0
    audio = h.speechlike(1.5, seed=11)
    for level in range(len(h.RUN_LEVELS)):
        whole = recognizer.recognize(audio, level=level)
        text, stream = _stream_text(recognizer, audio, 16 * 70, levels=(level,))
        assert text == whole.text and stream.tokens == whole.tokens
        np.testing.assert_allclose(stream.log_probs, whole.log_probs, atol=1e-4)


def test_single_sample_chunks_equal_recognize_on_a_short_clip():
    recognizer = _recognizer("float")
    audio = h.speechlike(0.06, seed=3)
    whole = recognizer.recognize(audio, level=1)
    text, stream = _stream_text(recognizer, audio, 1, levels=(1,))
    np.testing.assert_allclose(stream.log_probs, whole.log_probs, atol=1e-4)
    assert stream.tokens == whole.tokens


def test_two_streams_share_one_recognizer_without_interfering():
    recognizer = _recognizer("float")
    a, b = h.speechlike(1.0, seed=11), h.speechlike(0.8, seed=12)
    first, second = recognizer.stream(0), recognizer.stream(1)
    for start in range(0, len(a), 2560):
        first.accept(a[start:start + 2560])
        if start < len(b):
            second.accept(b[start:start + 2560])
    first.finish(), second.finish()
    for stream, audio, level in ((first, a, 0), (second, b, 1)):
        whole = recognizer.recognize(audio, level=level)
        assert stream.tokens == whole.tokens
        np.testing.assert_allclose(stream.log_probs, whole.log_probs, atol=1e-4)


def test_a_finished_stream_refuses_more_audio():
    from tflite import RecognizerError

    stream = _recognizer("float").stream()
    stream.finish(h.speechlike(0.3))
    with pytest.raises(RecognizerError, match="finished"):
        stream.accept(np.zeros(160, np.float32))


@pytest.mark.large
def test_sliced_unit_levels_stream_in_one_state_layout_and_switch_mid_stream():
    recognizer = _recognizer("unit")
    assert recognizer.metadata.design == "if_tree_sliced"
    audio = h.speechlike(1.6, seed=5)
    for level in range(recognizer.num_levels):
        _, stream = _stream_text(recognizer, audio, 2560, levels=(level,))
        np.testing.assert_allclose(stream.log_probs, recognizer.recognize(audio, level=level).log_probs, atol=1e-4)
    _, switched = _stream_text(recognizer, audio, 4000, levels=(0, 1))
    _, fixed = _stream_text(recognizer, audio, 4000, levels=(0,))
    frames_first_chunk = 1 + (4000 - 400) // 160 // 4   # chunk 0 runs level 0 in both
    np.testing.assert_allclose(switched.log_probs[:frames_first_chunk], fixed.log_probs[:frames_first_chunk], atol=1e-5)
    assert not np.allclose(switched.log_probs, fixed.log_probs, atol=1e-3)


@pytest.mark.large
def test_a_quantized_file_streams_with_its_frontend_float_in_both_signatures():
    recognizer = _recognizer("int8")
    export = recognizer.metadata.raw["export"]
    assert export["frontend"] == "float32"
    from tflite.metadata import read_metadata

    whole_only = read_metadata(h.exported("int8")).raw["export"]["frontend_constants_restored"]
    assert export["frontend_constants_restored"] == 2 * whole_only > 0   # recognize's and stream's frontends
    audio = h.speechlike(1.5, seed=9)
    text, stream = _stream_text(recognizer, audio, 2560)
    whole = recognizer.recognize(audio)
    assert stream.log_probs.shape == whole.log_probs.shape
    # The stream's gate FCs use the fused kernel's int8 weights and scales (shared, not a second
    # quantization), so the int8 stream computes what int8 recognize does.
    assert export["stream_weights_shared"] >= 4   # at least the 4 gates of one input matrix
    np.testing.assert_allclose(stream.log_probs, whole.log_probs, atol=1e-4)
    for entry in export["verification"]:
        assert entry["stream_token_errors"] == 0 and entry["stream_token_gate"] == "real clips"


def test_a_same_padded_model_exports_without_a_stream_by_default_and_refuses_stream_on(tmp_path):
    from tflite import ExportError
    from tflite.export import ExportOptions, export_levels

    models = h.level_models()[:1]
    with pytest.raises(ExportError, match=r"--stream on.*conv.*'same'"):
        export_levels(models, tmp_path / "m.tflite", sparsities=[0.0], feature_config=h.feature_config(),
                      pieces=h.PIECES, blank_id=h.BLANK_ID, options=ExportOptions(stream="on"))
    assert not (tmp_path / "m.tflite").exists()
    meta = _same_padded_float_metadata()
    assert meta.raw["stream"] is None and meta.stream_state is None and sig.STREAM not in meta.raw["signatures"]


def _same_padded_float_metadata():
    from tflite.metadata import read_metadata

    return read_metadata(h.exported("float"))


def _wav(tmp_path, seconds=1.2, seed=4) -> pathlib.Path:
    import soundfile

    path = tmp_path / "utt.wav"
    soundfile.write(path, h.speechlike(seconds, seed=seed), 16000)
    return path


def test_dsnn_transcribe_stream_prints_partials_and_the_same_final_text(tmp_path, capsys):
    from tflite.cli import transcribe_main

    wav = _wav(tmp_path)
    assert transcribe_main([str(_export("float")), str(wav), "--level", "1"]) == 0
    whole = capsys.readouterr().out
    assert transcribe_main([str(_export("float")), str(wav), "--level", "1", "--stream", "--chunk_ms", "80"]) == 0
    captured = capsys.readouterr()
    assert captured.out == whole
    final = whole.rstrip("\n").split("\t", 1)[1]
    partials = [line.split("\t") for line in captured.err.splitlines() if line.startswith(str(wav))]
    assert all(p[2] == "level 1" for p in partials)
    assert bool(partials) == bool(final)           # a partial line whenever the text grew
    if partials:
        assert partials[-1][3] == final


def test_dsnn_transcribe_stream_refuses_a_file_without_the_stream_signature(tmp_path, capsys):
    from tflite.cli import transcribe_main

    assert transcribe_main([str(h.exported("float")), str(_wav(tmp_path)), "--stream"]) == 1
    assert "no 'stream' signature" in capsys.readouterr().err
    assert transcribe_main([str(h.exported("float")), str(_wav(tmp_path)), "--stream", "--chunk_ms", "0"]) == 2


def test_dsnn_bench_stream_writes_per_level_and_chunk_figures(tmp_path, capsys):
    import json

    from tflite.cli import bench_main

    out = tmp_path / "bench"
    assert bench_main([str(_export("float")), "--stream", "--chunk_ms", "80", "160", "--repeats", "1",
                       "--limit", "2", "--out_dir", str(out)]) == 0
    result = json.loads((out / "bench_stream.json").read_text())
    assert {(r["level"], r["chunk_ms"]) for r in result["rows"]} == {
        (level, ms) for level in range(len(h.RUN_LEVELS)) for ms in (80, 160)}
    for row in result["rows"]:
        assert 0 < row["chunk_median_ms"] <= row["chunk_p90_ms"] and row["rtf"] > 0 and row["peak_rss_mb"] > 0
        if row["tokens"]:
            assert row["token_latency_median_ms"] >= 0
    assert (out / "bench_stream.md").is_file() and (out / "bench_stream.png").is_file()
    assert "| level |" in capsys.readouterr().out
    assert bench_main([str(h.exported("float")), "--stream", "--out_dir", str(tmp_path / "b2")]) == 1


def test_dsnn_transcribe_and_bench_stream_take_remote_paths_like_local_ones(tmp_path, capsys):
    """Model, audio and --out_dir on ram:// (tf.io.gfile, the code path of gs://): the same text and rows."""
    import json

    from ram_filesystem import files_under, new_root

    from dsnn_keras import fileio
    from tflite.cli import bench_main, transcribe_main

    url = new_root("stream")
    model, wav = f"{url}/float.tflite", f"{url}/audio/utt.wav"
    fileio.copy(_export("float"), model)
    fileio.makedirs(f"{url}/audio")
    fileio.copy(_wav(tmp_path), wav)
    stream = ["--level", "1", "--stream", "--chunk_ms", "80"]
    assert transcribe_main([str(_export("float")), str(_wav(tmp_path)), *stream]) == 0
    local_text = capsys.readouterr().out.split("\t", 1)[1]
    assert transcribe_main([model, wav, *stream]) == 0
    assert capsys.readouterr().out == f"{wav}\t{local_text}"
    args = ["--stream", "--chunk_ms", "160", "--repeats", "1", "--limit", "1"]
    assert bench_main([str(_export("float")), *args, "--utterances", str(tmp_path), "--out_dir",
                       str(tmp_path / "bench")]) == 0
    assert bench_main([model, *args, "--utterances", f"{url}/audio", "--out_dir", f"{url}/bench"]) == 0
    local = json.loads((tmp_path / "bench" / "bench_stream.json").read_text())
    remote = json.loads(fileio.read_text(f"{url}/bench/bench_stream.json"))
    assert remote["model"] == model and remote["utterances"] == [{**local["utterances"][0], "name": wav}]
    assert [(r["level"], r["chunk_ms"], r["tokens"]) for r in remote["rows"]] == \
        [(r["level"], r["chunk_ms"], r["tokens"]) for r in local["rows"]]
    assert files_under(f"{url}/bench") == [f"{url}/bench/bench_stream.{ext}" for ext in ("json", "md", "png")]


def test_stream_wer_bench_switches_on_schedule_and_counts_time_per_level():
    stream_wer = load_bench_script("stream_wer")
    assert stream_wer.level_schedule("flip", 4, 5) == [0, 3, 0, 3, 0]
    assert stream_wer.level_schedule("cycle", 3, 5) == [0, 1, 2, 0, 1]
    recognizer = _recognizer("float")
    audio = h.speechlike(1.3, seed=21)
    text, spent = stream_wer.stream_utterance(recognizer, audio, 2560, [0, 1, 0, 1, 0, 1], 4800)
    assert sum(spent) == len(audio) and spent[0] > 0 and spent[1] > 0
    fixed, _ = stream_wer.stream_utterance(recognizer, audio, 2560, None, 4800, level=0)
    assert fixed == recognizer.transcribe(audio, level=0)


def test_a_saved_state_resumes_on_another_interpreter():
    from ai_edge_litert.interpreter import Interpreter

    path = _export("float")
    audio = h.speechlike(1.4, seed=31)
    first = Interpreter(model_path=str(path)).get_signature_runner(sig.STREAM)
    state = {name: np.zeros([int(d) for d in detail["shape_signature"]], detail["dtype"])
             for name, detail in first.get_input_details().items() if name.startswith(sig.STATE_PREFIX)}
    outputs, cut = [], 11200
    for start, stop, runner in ((0, 6400, first), (6400, cut, first)):
        out = runner(audio=audio[start:stop], sparsity_level=np.int32(1), end_of_stream=np.int32(0), **state)
        outputs.append(out["log_probs"])
        state = {name: np.array(out[name]) for name in state}
    saved = {name: value.tobytes() for name, value in state.items()}      # e.g. written to disk
    second = Interpreter(model_path=str(path)).get_signature_runner(sig.STREAM)
    restored = {name: np.frombuffer(saved[name], value.dtype).reshape(value.shape) for name, value in state.items()}
    out = second(audio=audio[cut:], sparsity_level=np.int32(1), end_of_stream=np.int32(1), **restored)
    outputs.append(out["log_probs"])
    whole = _recognizer("float").recognize(audio, level=1)
    np.testing.assert_allclose(np.concatenate(outputs), whole.log_probs, atol=1e-4)


def test_stream_chunks_take_integer_pcm_and_refuse_nan_like_recognize():
    from tflite import AudioError, RecognizerError

    recognizer = _recognizer("float")
    audio = h.speechlike(0.8, seed=41)
    pcm = np.round(audio * 32767).astype(np.int16)
    stream = recognizer.stream(level=0)
    stream.accept(pcm[:6000])
    stream.finish(pcm[6000:])
    np.testing.assert_allclose(stream.log_probs, recognizer.recognize(pcm, level=0).log_probs, atol=1e-4)
    with pytest.raises(AudioError):
        recognizer.stream().accept(np.array([0.0, np.nan], np.float32))
    with pytest.raises(RecognizerError, match="1-D"):
        recognizer.stream().finish(np.zeros([100, 2], np.float32))


def test_the_stream_shares_the_fused_lstm_weights_instead_of_storing_a_copy():
    from tflite import flatbuffer
    from tflite.export import ExportOptions, export_run

    without = _ROOT / "float_nostream.tflite"
    # The file to compare with only needs its buffers: not verified (the float file is, with its stream).
    export_run(_run(False), without, options=ExportOptions(stream="off", measure_latency=False, verify=False))

    def weight_buffers(path):
        model = flatbuffer.unpack(path.read_bytes())
        return {i for g in model.subgraphs for t in g.tensors
                for i in [int(t.buffer)] if len(t.shape) == 2 and model.buffers[i].data is not None
                and len(model.buffers[i].data) >= 1024}

    with_stream = weight_buffers(_export("float"))
    alone = weight_buffers(without)
    assert len(with_stream) == len(alone)   # no weight matrix stored twice


def _stream_with_flips(monkeypatch, flipped_clip_lengths, extra_tokens=1):
    """Wraps the real stream runner so clips of the given lengths stream ``extra_tokens`` more tokens
    per chunking (1: a near-tie flip; many: a broken stream), the rest unchanged."""
    import tflite.export as export

    real = export._stream_clip

    def flipping(stream, clip, sizes, level):
        log_probs, tokens = real(stream, clip, sizes, level)
        return log_probs, tokens + [1] * extra_tokens if len(clip) in flipped_clip_lengths else tokens

    monkeypatch.setattr(export, "_stream_clip", flipping)


@pytest.mark.large
def test_quantized_stream_token_gate_counts_real_speech_not_the_builtin_probe(monkeypatch):
    from tflite.export import ExportError, ExportOptions, probe_audio, verify_stream

    data = _export("int8").read_bytes()
    rate = h.feature_config().sample_rate
    builtin = [probe_audio(rate), np.zeros(rate // 2, np.float32)]
    speech = h.speechlike(1.2, seed=7)
    options = ExportOptions(quantize="dynamic-int8", stream="on")
    _stream_with_flips(monkeypatch, {len(builtin[0])})
    checks = verify_stream(data, 2, h.feature_config(), options, builtin + [speech], builtin_clips=2)
    for entry in checks:   # the probe's flips are recorded, not gated; the real clip streams exactly
        assert entry["stream_token_errors_builtin"] >= 3 and entry["stream_token_gate"] == "real clips"
        assert entry["stream_token_errors"] == 0 and entry["stream_tokens"] > 0
    alone = verify_stream(data, 1, h.feature_config(), options, builtin, builtin_clips=2)[0]
    assert alone["stream_token_gate"] == "built-in clips (loose)" and alone["stream_token_errors_builtin"] >= 3
    with pytest.raises(ValueError, match="builtin_clips must be in"):
        verify_stream(data, 1, h.feature_config(), options, builtin, builtin_clips=3)
    _stream_with_flips(monkeypatch, {len(speech)})
    with pytest.raises(ExportError, match=r"level 0: streamed tokens differ .* over the 1 real speech clip"):
        verify_stream(data, 1, h.feature_config(), options, builtin + [speech], builtin_clips=2)
    # A stream broken on the built-in clips (many made-up tokens) is refused even with no real clip.
    _stream_with_flips(monkeypatch, {len(builtin[0]), len(builtin[1])}, extra_tokens=10)
    with pytest.raises(ExportError, match=r"level 0: .* on the built-in synthetic clip and silence .* broken"):
        verify_stream(data, 1, h.feature_config(), options, builtin, builtin_clips=2)


@pytest.mark.large
def test_export_cli_says_when_a_quantized_stream_had_no_real_speech_to_gate_its_tokens(tmp_path, capsys):
    from tflite.cli import export_main
    from tflite.metadata import read_metadata

    out = tmp_path / "int8.tflite"
    assert export_main([str(_run(False)), "--out", str(out), "--quantize", "dynamic-int8", "--stream", "on",
                        "--no_decoder"]) == 0
    assert "'stream' signature was compared with recognize on the built-in synthetic clip" in capsys.readouterr().err
    gates = {v["stream_token_gate"] for v in read_metadata(out).raw["export"]["verification"]}
    assert gates == {"built-in clips (loose)"}


def test_padded_wer_bench_pads_each_clip_at_its_own_floor_and_decodes_it():
    padded_wer = load_bench_script("padded_wer")
    assert padded_wer.parse_pads("0,0.3,1") == [0.0, 0.3, 1.0]
    with pytest.raises(SystemExit, match="--pad_s"):
        padded_wer.parse_pads("0,-1")
    rate = h.feature_config().sample_rate
    audio = h.speechlike(0.8, seed=5)
    np.testing.assert_array_equal(padded_wer.padded(audio, 0.0, rate), audio)
    longer = padded_wer.padded(audio, 0.25, rate)
    start = int(0.25 * rate)
    assert len(longer) == len(audio) + 2 * start
    np.testing.assert_array_equal(longer[start:start + len(audio)], audio)
    assert isinstance(_recognizer("float").transcribe(longer, level=1), str)
