"""Faults in the LiteRT runtime (`tflite.Recognizer`) and the metadata reader (issue 15, items 6, 10, 12).

Real interpreter on real exported files (`harness_tflite.exported`); the thread and memory checks run in
a subprocess, so a crash of the interpreter fails the test instead of killing pytest.
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import harness_tflite as h


def _run_python(code: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def recognizer():
    from tflite.runtime import Recognizer

    return Recognizer(h.exported("float"))


# ---- item 6: one Recognizer shared by several threads ----------------------------------------------

_THREADS = """
import json, sys, threading
import numpy as np
from tflite.runtime import Recognizer

paths = sys.argv[1:]
report = {}
for path in paths:
    recognizer = Recognizer(path)
    levels = recognizer.num_levels
    rng = np.random.default_rng(0)
    clips = [(rng.standard_normal(8000 + 1600 * i) * 0.2).astype(np.float32) for i in range(5)]
    jobs = [(i, level) for i in range(len(clips)) for level in range(levels)]
    want = {job: recognizer.recognize(clips[job[0]], job[1]) for job in jobs}       # single-threaded
    errors, calls = [], [0]
    def work(seed):
        order = np.random.default_rng(seed)
        for _ in range(40):
            clip, level = jobs[order.integers(len(jobs))]
            got = recognizer.recognize(clips[clip], level)                          # level varies per call
            calls[0] += 1
            ref = want[(clip, level)]
            if (got.tokens != ref.tokens or got.level != level or got.text != ref.text
                    or not np.array_equal(got.log_probs, ref.log_probs)):
                errors.append((clip, level, got.tokens, ref.tokens))
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report[path] = {"calls": calls[0], "mismatches": len(errors), "first": errors[:1]}
print(json.dumps(report))
"""


@pytest.mark.large
def test_one_recognizer_shared_by_four_threads_gives_the_single_threaded_results():
    # Before the fix: segfault / heap abort / token ids outside the vocabulary (3 of 3 runs).
    # The single-level file also resets LSTM state after each invoke: that must be atomic with it.
    paths = [h.exported("float"), h.exported("single")]
    out = _run_python(_THREADS, *paths)
    assert out.returncode == 0, f"exit {out.returncode}: {out.stderr[-2000:]}"
    report = json.loads(out.stdout.strip().splitlines()[-1])
    for path in map(str, paths):
        assert report[path]["calls"] == 4 * 40
        assert report[path]["mismatches"] == 0, report[path]["first"]


# ---- item 12: long audio in bounded memory ---------------------------------------------------------

_MEMORY = """
import json, resource, sys
import numpy as np
from tflite.runtime import Recognizer

recognizer = Recognizer(sys.argv[1])
audio = (np.random.default_rng(0).standard_normal(16000 * 60 * int(sys.argv[2])) * 0.1).astype(np.float32)
recognizer.recognize(audio[:16000], 0)                      # model loaded and allocated once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result = recognizer.recognize(audio, 0)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"growth_mb": peak - before, "frames": result.log_probs.shape[0]}))
"""


def test_ten_minutes_of_audio_run_in_bounded_memory():
    # Before: the whole recording went through the graph at once (~75 MB per minute of audio:
    # 10 min -> ~0.8 GB, 30 min -> 2.6 GB). Now 30 s windows: the arena of one window, whatever the length.
    out = _run_python(_MEMORY, h.exported("float"), 10)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["frames"] == (1 + (16000 * 600 - 400) // 160 + 3) // 4
    assert report["growth_mb"] < 200, report


def test_long_audio_is_cut_in_windows_with_exact_features_and_a_documented_boundary(recognizer):
    from tflite.runtime import Recognizer

    audio = h.speechlike(3.3, seed=5)
    whole = recognizer.recognize(audio, 1)                                  # one 30 s window
    windowed = Recognizer(h.exported("float"), window_seconds=1.0).recognize(audio, 1)
    # The windows overlap by frame_length - frame_step samples, so the frames (and output frames) add
    # up to exactly those of one pass; only the model's context is cut at each boundary.
    assert windowed.log_probs.shape == whole.log_probs.shape
    frames_per_window = 16000 // 640                                         # 4x subsampling, 10 ms hop
    first = slice(0, frames_per_window - 2)                                 # away from the first boundary
    np.testing.assert_allclose(windowed.log_probs[first], whole.log_probs[first], atol=1e-5)
    assert not np.allclose(windowed.log_probs, whole.log_probs, atol=1e-5)   # the boundary effect exists
    # Greedy CTC over the concatenated posteriors: repeats merged across boundaries, blanks dropped.
    best = windowed.log_probs.argmax(axis=-1)
    merged = [int(t) for i, t in enumerate(best) if (i == 0 or t != best[i - 1]) and t != h.BLANK_ID]
    assert windowed.tokens == merged
    assert windowed.level == 1
    # Audio that fits in one window is one invoke, as before.
    short = h.speechlike(0.9, seed=6)
    assert Recognizer(h.exported("float"), window_seconds=1.0).recognize(short, 2).tokens == \
        recognizer.recognize(short, 2).tokens


@pytest.mark.parametrize("tail", [0, 1, 159, 160, 240, 241, 300, 399, 400, 401])
def test_windowed_frame_count_equals_one_pass_for_every_tail_length(tail):
    """Lengths k * window + tail, around one analysis frame (400 samples, hop 160), the off-by-one zone."""
    from tflite.runtime import Recognizer

    windowed = Recognizer(h.exported("float"), window_seconds=1.0)
    audio = h.speechlike(3.0, seed=9)[:2 * windowed.window_samples + tail]
    whole_frames = h.feature_config().num_frames(audio.size)
    features_in_windows = sum(h.feature_config().num_frames(w.size) for w in windowed._windows(audio))
    assert features_in_windows == whole_frames
    one_pass = Recognizer(h.exported("float"), window_seconds=30.0).recognize(audio, 0)
    assert windowed.recognize(audio, 0).log_probs.shape == one_pass.log_probs.shape


def test_window_seconds_is_validated():
    from tflite.runtime import Recognizer, RecognizerError

    for bad in (0, -1.0, float("nan"), 0.01):
        with pytest.raises(RecognizerError, match="window_seconds"):
            Recognizer(h.exported("float"), window_seconds=bad)


# ---- item 12: array layout -------------------------------------------------------------------------

def test_two_d_arrays_must_be_samples_by_channels(recognizer):
    from tflite.audio import AudioError

    mono = h.speechlike(1.0, seed=8)
    stereo = np.stack([mono, mono * 0.5], axis=1)                            # [num_samples, channels]
    np.testing.assert_allclose(recognizer.recognize(stereo, 0).log_probs,
                               recognizer.recognize(mono * 0.75, 0).log_probs, atol=1e-5)
    # Before: (2, 16000) was read as 2 samples of 16000 channels and transcribed as silence.
    with pytest.raises(AudioError, match=r"shape \(2, 16000\).*\[num_samples, channels\]"):
        recognizer.recognize(stereo.T, 0)
    with pytest.raises(AudioError, match=r"shape \(2, 2\)"):
        recognizer.recognize(np.zeros([2, 2], np.float32), 0)
    with pytest.raises(AudioError, match=r"shape \(1, 2, 3\)"):
        recognizer.recognize(np.zeros([1, 2, 3], np.float32), 0)


@pytest.mark.parametrize("bad, message", [
    (np.array(["a", "b"]), "dtype"),
    (np.zeros(100, np.complex64), "dtype"),
    (np.array([0.1, np.nan, 0.2, np.inf] * 400, np.float32), "non_finite_samples: 800 of 1600"),
])
def test_arrays_that_are_not_finite_real_audio_are_refused(recognizer, bad, message):
    from tflite.audio import AudioError

    with pytest.raises(AudioError, match=message):
        recognizer.recognize(bad, 0)


# ---- item 10: truncated or tampered .tflite --------------------------------------------------------

def _with_metadata(tmp_path, name, raw) -> str:
    from tflite import flatbuffer

    data = flatbuffer.add_metadata_entry(h.exported("float").read_bytes(), "dsnn",
                                         json.dumps(raw).encode() if not isinstance(raw, bytes) else raw)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _good_raw() -> dict:
    from tflite.metadata import read_metadata

    return read_metadata(h.exported("float")).raw


@pytest.mark.parametrize("field, value, message", [
    ("levels", "0.0,0.5,0.9", "'levels' must be a non-empty list"),
    ("levels", [{"level": 0, "sparsity": "half"}], r"levels\[0\].sparsity"),
    ("levels", [{"level": 0}], r"levels\[0\].sparsity"),
    ("levels", [{"level": 0, "sparsity": float("nan")}], r"levels\[0\].sparsity"),
    ("levels", [7], r"levels\[0\] must be an object"),
    ("tokens", {"pieces": "abc", "blank_id": 3}, "tokens.pieces"),
    ("tokens", {"pieces": ["a", "b"], "blank_id": "2"}, "tokens.blank_id"),
    ("tokens", {"pieces": ["a", "b"], "blank_id": 7}, "tokens.blank_id"),
    ("feature_config", {"sample_rate": "16k"}, "feature_config.sample_rate"),
    ("feature_config", [], "'feature_config' must be an object"),
    ("export", "if_tree", "'export' must be an object"),
    ("export", {"design": "if_tree_fused_lstm", "state_reset_in_graph": "no"}, "export.state_reset_in_graph"),
    ("format_version", True, "format_version True"),
])
def test_tampered_metadata_types_are_one_line_errors(tmp_path, field, value, message):
    from tflite.metadata import MetadataError, read_metadata
    from tflite.runtime import Recognizer

    raw = _good_raw()
    raw[field] = value
    path = _with_metadata(tmp_path, "tampered.tflite", raw)
    for load in (read_metadata, Recognizer):
        with pytest.raises(MetadataError, match=message) as info:
            load(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_truncated_model_files_are_one_line_errors(tmp_path):
    from tflite.metadata import MetadataError, read_metadata
    from tflite.runtime import Recognizer

    data = h.exported("float").read_bytes()
    intact = read_metadata(h.exported("float")).raw
    for fraction in (0.0, 0.001, 0.05, 0.3, 0.6, 0.9, 0.999):
        path = tmp_path / f"cut_{fraction}.tflite"
        path.write_bytes(data[:int(len(data) * fraction)])
        with pytest.raises(MetadataError) as info:                  # LiteRT verifies the whole file
            Recognizer(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
        try:                                                         # reads only what it needs
            assert read_metadata(path).raw == intact, fraction       # the cut spared the entry
        except MetadataError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


def test_an_unreadable_model_path_is_a_clear_error(tmp_path):
    from tflite.metadata import MetadataError, read_metadata
    from tflite.runtime import Recognizer

    with pytest.raises(MetadataError, match="is a directory"):
        read_metadata(tmp_path)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        Recognizer(tmp_path)


# ---- fuzz: the metadata reader never raises anything but MetadataError -----------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

_FIELDS = ("format_version", "levels", "tokens", "feature_config", "export", "versions")


def _use(meta) -> None:
    """Everything the runtime, the CLI and the benchmark read from a validated entry."""
    assert meta.num_levels == len(meta.levels) >= 1
    for level, sparsity in enumerate(meta.sparsities):
        assert isinstance(sparsity, float) and 0.0 <= sparsity < 1.0, (level, sparsity)
    assert all(isinstance(piece, str) for piece in meta.pieces)
    assert isinstance(meta.blank_id, int) and 0 <= meta.blank_id <= len(meta.pieces)
    assert isinstance(meta.sample_rate, int) and meta.sample_rate > 0
    assert isinstance(meta.feature_config, dict)
    assert isinstance(meta.frame_length, int) and isinstance(meta.frame_step, int)
    assert 0 < meta.frame_step and 0 < meta.frame_length
    assert isinstance(meta.design, str) and isinstance(meta.quantize, str)
    assert isinstance(meta.state_reset_in_graph, bool)
    assert meta.single_level_of is None or isinstance(meta.single_level_of, int)


def _valid_raw() -> dict:
    return {"format_version": 1, "levels": [{"level": 0, "sparsity": 0.0}, {"level": 1, "sparsity": 0.5}],
            "tokens": {"pieces": ["<unk>", "\u2581a"], "blank_id": 2},
            "feature_config": {"sample_rate": 16000}, "export": {"design": "if_tree_fused_lstm"}, "versions": {}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    _JSON,
    # A valid entry with one field (or one level / token entry) replaced by arbitrary JSON.
    st.tuples(st.sampled_from(_FIELDS), _JSON).map(lambda kv: {**_valid_raw(), kv[0]: kv[1]}),
    st.tuples(st.sampled_from(("level", "sparsity", "x")), _JSON).map(
        lambda kv: {**_valid_raw(), "levels": [{"level": 0, "sparsity": 0.0, kv[0]: kv[1]}]}),
    st.tuples(st.sampled_from(("pieces", "blank_id")), _JSON).map(
        lambda kv: {**_valid_raw(), "tokens": {**_valid_raw()["tokens"], kv[0]: kv[1]}}),
    st.tuples(st.sampled_from(("design", "quantize", "state_reset_in_graph", "single_level_of")), _JSON).map(
        lambda kv: {**_valid_raw(), "export": {"design": "x", kv[0]: kv[1]}}),
    st.tuples(st.sampled_from(("sample_rate", "frame_length_ms", "frame_step_ms")), _JSON).map(
        lambda kv: {**_valid_raw(), "feature_config": {"sample_rate": 16000, kv[0]: kv[1]}}),
))
def test_fuzz_validate_gives_a_metadata_error_or_a_usable_entry(raw):
    from tflite.metadata import MetadataError, validate

    try:
        meta = validate(raw, "fuzz")
    except MetadataError as error:
        assert str(error).startswith("fuzz: ") and "\n" not in str(error)
        return
    _use(meta)


@pytest.fixture(scope="module")
def model_bytes():
    return h.exported("float").read_bytes()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_parse_of_damaged_model_bytes_gives_a_metadata_error_or_a_usable_entry(model_bytes, data):
    from tflite.metadata import MetadataError, parse

    kind = data.draw(st.sampled_from(["random", "prefix", "truncated", "flipped", "json"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=512))
    elif kind == "prefix":                        # the file identifier, then garbage
        blob = data.draw(st.binary(min_size=4, max_size=4)) + b"TFL3" + data.draw(st.binary(max_size=512))
    elif kind == "truncated":
        blob = model_bytes[:data.draw(st.integers(0, len(model_bytes) - 1))]
    elif kind == "flipped":                       # a few bytes overwritten anywhere (header included)
        blob = bytearray(model_bytes)
        for _ in range(data.draw(st.integers(1, 8))):
            where = data.draw(st.integers(0, min(len(blob) - 1, data.draw(st.sampled_from([64, 4096, len(blob)])))))
            blob[where] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    else:                                         # arbitrary payload in the dsnn entry of a real model
        from tflite import flatbuffer

        payload = data.draw(st.one_of(st.binary(max_size=64), _JSON.map(lambda v: json.dumps(v).encode())))
        blob = flatbuffer.add_metadata_entry(model_bytes, "dsnn", payload)
    try:
        meta = parse(blob, "fuzz.tflite")
    except MetadataError as error:
        assert str(error).startswith("fuzz.tflite: ") and "\n" not in str(error)
        return
    _use(meta)
