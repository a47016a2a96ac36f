"""Audio decoding, resampling, down-mixing and the typed reject reasons."""
import os

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import AudioConfig, load_audio
from pipeline.records import RejectError, RejectReason


def _tone(seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _reason(path, config=AudioConfig()):
    with pytest.raises(RejectError) as info:
        load_audio(str(path), config)
    return info.value.reason


def test_resamples_8khz_fsdd_to_16khz(data_dir):
    path = data_dir / "fsdd" / "recordings" / "0_george_0.wav"
    n8 = sf.info(str(path)).frames
    audio = load_audio(str(path))
    assert audio.dtype == np.float32
    assert abs(audio.size - 2 * n8) <= 1


def test_decodes_an4_flac_at_native_rate(data_dir):
    path = sorted((data_dir / "an4" / "train").rglob("*.flac"))[0]
    raw, rate = sf.read(str(path), dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(load_audio(str(path)), raw)


def test_stereo_ogg_is_downmixed_and_resampled(tmp_path):
    left, right = _tone(0.5, 22050), np.zeros(int(0.5 * 22050), np.float32)
    sf.write(tmp_path / "s.ogg", np.stack([left, right], 1), 22050, format="OGG")
    audio = load_audio(str(tmp_path / "s.ogg"))
    assert abs(audio.size - 8000) <= 2
    assert 0.15 < np.abs(audio).max() < 0.35  # half of the 0.5 tone


def test_broken_files_get_typed_reasons(tmp_path):
    good = _tone(1.0, 16000)
    sf.write(tmp_path / "g.flac", good, 16000)
    data = (tmp_path / "g.flac").read_bytes()
    (tmp_path / "trunc.flac").write_bytes(data[: len(data) // 2])
    sf.write(tmp_path / "g.wav", good, 16000)
    wav = (tmp_path / "g.wav").read_bytes()
    (tmp_path / "trunc.wav").write_bytes(wav[: len(wav) // 2])
    (tmp_path / "garbage.wav").write_bytes(os.urandom(3000))
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "clip.mp3").write_bytes(b"ID3" + os.urandom(100))
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "short.wav", good[:800], 16000)
    sf.write(tmp_path / "g.aiff.wav", good, 16000, format="AIFF")
    assert _reason(tmp_path / "trunc.flac") == RejectReason.TRUNCATED
    assert _reason(tmp_path / "trunc.wav") == RejectReason.TRUNCATED
    assert _reason(tmp_path / "garbage.wav") == RejectReason.UNREADABLE
    assert _reason(tmp_path / "empty.wav") == RejectReason.EMPTY_FILE
    assert _reason(tmp_path / "missing.wav") == RejectReason.MISSING_FILE
    assert _reason(tmp_path / "clip.mp3") == RejectReason.WRONG_FORMAT
    assert _reason(tmp_path / "g.aiff.wav") == RejectReason.WRONG_FORMAT
    assert _reason(tmp_path / "zero.wav") == RejectReason.EMPTY_AUDIO
    assert _reason(tmp_path / "short.wav") == RejectReason.TOO_SHORT
    assert _reason(tmp_path / "g.wav", AudioConfig(max_duration_s=0.5)) == RejectReason.TOO_LONG
    assert load_audio(str(tmp_path / "g.wav")).size == 16000


def test_audio_config_rejects_bad_limits():
    with pytest.raises(ValueError, match="min_duration_s < max_duration_s"):
        AudioConfig(min_duration_s=5, max_duration_s=1)
