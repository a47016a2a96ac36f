"""Faults in audio decoding: one decoder policy for preparation and the runtime (issue 15, items 7, 12).

Real files written with soundfile; the same file must be rejected by `pipeline.audio.load_audio` (as a
`RejectError` with a reason code for ``rejects.jsonl``) and by `tflite.audio.load_audio` /
`Recognizer` (as an `AudioError` whose message is ``PATH: reason: detail``, the same reason text).
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import AudioConfig
from pipeline.audio import load_audio as prepare_load
from pipeline.records import RejectError, RejectReason


def _tone(seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _bad_files(root):
    """name -> (path, reject reason) for every kind of unusable file both decoders must refuse."""
    good = _tone(1.0)
    files = {}

    def add(name, reason):
        files[name] = (root / name, reason)

    nan = good.copy()
    nan[100] = np.nan
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    add("nan.wav", "non_finite_samples")
    inf = np.stack([good, good], 1)
    inf[5000:5003, 1] = np.inf                                   # one channel only, mid-file
    sf.write(root / "inf.wav", inf, 16000, subtype="DOUBLE")
    add("inf.wav", "non_finite_samples")
    sf.write(root / "g.wav", good, 16000)
    wav = (root / "g.wav").read_bytes()
    (root / "trunc.wav").write_bytes(wav[: len(wav) // 2])
    add("trunc.wav", "truncated")
    sf.write(root / "g.flac", good, 16000)
    flac = (root / "g.flac").read_bytes()
    (root / "trunc.flac").write_bytes(flac[: len(flac) // 2])
    add("trunc.flac", "truncated")
    (root / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    add("garbage.wav", "unreadable")
    (root / "empty.wav").write_bytes(b"")
    add("empty.wav", "empty_file")
    (root / "clip.mp3").write_bytes(b"ID3" + bytes(100))
    add("clip.mp3", "wrong_format")
    sf.write(root / "aiff.wav", good, 16000, format="AIFF")
    add("aiff.wav", "wrong_format")
    sf.write(root / "zero.wav", np.zeros(0, np.float32), 16000)
    add("zero.wav", "empty_audio")
    return files


def test_every_decoder_reason_is_a_reject_reason():
    from dsnn_keras import audio

    assert set(audio.REASONS) <= set(RejectReason.ALL)
    assert RejectReason.NON_FINITE_SAMPLES == "non_finite_samples"


def test_non_finite_samples_are_rejected_by_preparation(tmp_path):
    # Before: decoded as is, and one such file made every value of cmvn.json NaN.
    files = _bad_files(tmp_path)
    for name in ("nan.wav", "inf.wav"):
        with pytest.raises(RejectError) as info:
            prepare_load(str(files[name][0]))
        assert info.value.reason == RejectReason.NON_FINITE_SAMPLES
    with pytest.raises(RejectError, match=r"1 of 16000 samples are NaN or infinite \(the first at 0\.006 s\)"):
        prepare_load(str(files["nan.wav"][0]))
    with pytest.raises(RejectError, match=r"3 of 32000 samples .*the first at 0\.31\d s"):
        prepare_load(str(files["inf.wav"][0]))


def test_the_runtime_rejects_exactly_what_preparation_rejects_with_the_same_text(tmp_path):
    # Before: the runtime decoded truncated WAVs (the readable half) and NaN files without a word.
    from tflite.audio import AudioError
    from tflite.audio import load_audio as runtime_load

    for name, (path, reason) in _bad_files(tmp_path).items():
        with pytest.raises(RejectError) as prepared:
            prepare_load(str(path))
        assert prepared.value.reason == reason, name
        with pytest.raises(AudioError) as runtime:
            runtime_load(path, 16000)
        assert str(runtime.value) == f"{path}: {reason}: {prepared.value.detail}", name
        assert runtime.value.reason == reason


def test_recognizer_and_transcribe_refuse_a_truncated_wav(tmp_path):
    import harness_tflite as h
    from tflite.audio import AudioError
    from tflite.runtime import Recognizer

    files = _bad_files(tmp_path)
    recognizer = Recognizer(h.exported("float"))
    with pytest.raises(AudioError, match=r"trunc.wav: truncated: WAV data chunk is \d+ bytes short"):
        recognizer.transcribe(files["trunc.wav"][0])
    with pytest.raises(AudioError, match=r"nan.wav: non_finite_samples"):
        recognizer.transcribe(files["nan.wav"][0])


def test_duration_limits_are_preparation_policy_only(tmp_path):
    from tflite.audio import load_audio as runtime_load

    sf.write(tmp_path / "long.wav", _tone(31.0), 16000)
    sf.write(tmp_path / "short.wav", _tone(0.05), 16000)
    with pytest.raises(RejectError, match="too_long"):
        prepare_load(str(tmp_path / "long.wav"))
    with pytest.raises(RejectError, match="too_short"):
        prepare_load(str(tmp_path / "short.wav"))
    assert runtime_load(tmp_path / "long.wav", 16000).size == 31 * 16000
    assert runtime_load(tmp_path / "short.wav", 16000).size == 800


def test_decoding_in_blocks_gives_the_samples_of_one_read(tmp_path):
    """The decoder reads (and down-mixes, and checks) in blocks; the result equals one full read."""
    from dsnn_keras.audio import decode

    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal([70001, 3]) * 0.2).astype(np.float32)
    sf.write(tmp_path / "s.flac", stereo, 22050, subtype="PCM_24")
    full, rate = sf.read(str(tmp_path / "s.flac"), dtype="float32", always_2d=True)
    expected = full.mean(axis=1, dtype=np.float32)
    for block in (1000, 4096, 1 << 20):
        got = decode(str(tmp_path / "s.flac"), None, block_frames=block)
        np.testing.assert_array_equal(got, expected)
    resampled = prepare_load(str(tmp_path / "s.flac"), AudioConfig(max_duration_s=10.0))
    assert abs(resampled.size - 70001 * 16000 / 22050) <= 1


def test_runtime_audio_modules_do_not_import_tensorflow():
    code = ("import sys, tflite.audio, tflite.runtime, dsnn_keras.audio\n"
            "print('TF' if 'tensorflow' in sys.modules else 'noTF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=pathlib.Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "noTF"


def test_a_forged_frame_count_in_a_flac_header_is_a_reject_not_a_memory_error(tmp_path):
    """STREAMINFO's 36-bit total-samples field set to 2**36 - 1: the decoder used to allocate it up front."""
    from dsnn_keras.audio import AudioDecodeError, decode

    path = tmp_path / "forged.flac"
    sf.write(path, np.zeros(1600, np.float32) + 0.1, 16000, format="FLAC")
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    field = 8 + 10                                   # "fLaC" + block header, then 10 bytes into STREAMINFO
    bits = int.from_bytes(data[field:field + 8], "big")
    bits |= (1 << 36) - 1                            # the low 36 bits: total samples
    data[field:field + 8] = bits.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == (1 << 36) - 1
    with pytest.raises(AudioDecodeError) as error:
        decode(str(path), 16000)
    assert error.value.reason == "truncated"
