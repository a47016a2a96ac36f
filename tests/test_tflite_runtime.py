"""tflite.runtime.Recognizer: levels from metadata, transcripts at any level, resampling, clear errors."""
import numpy as np
import pytest
import soundfile

import harness_tflite as h


@pytest.fixture(scope="module")
def recognizer():
    from tflite.runtime import Recognizer

    return Recognizer(h.exported("float"))


def _keras_text(level: int, audio: np.ndarray) -> str:
    from dsnn_keras.decoding import ids_to_text

    log_probs = h.keras_log_probs(h.reference_models()[level], h.features_of(audio))
    return ids_to_text(h.greedy(log_probs), h.PIECES)


def test_levels_come_from_the_file_metadata(recognizer):
    assert recognizer.num_levels == len(h.LEVELS)
    assert [level["sparsity"] for level in recognizer.levels] == list(h.LEVELS)
    assert recognizer.sample_rate == 16000


def test_transcribes_every_level_like_keras(recognizer):
    audio = h.speechlike(1.3, seed=11)
    for level in range(len(h.LEVELS)):
        result = recognizer.recognize(audio, level)
        assert result.level == level
        assert result.text == _keras_text(level, audio)
        assert recognizer.transcribe(audio, level) == result.text      # independent invokes


def test_reads_files_and_resamples_other_rates(recognizer, tmp_path):
    import soxr

    audio = h.speechlike(1.0, seed=12)
    at_16k, at_8k = tmp_path / "a16.wav", tmp_path / "a8.flac"
    soundfile.write(at_16k, audio, 16000, subtype="FLOAT")
    low = soxr.resample(audio, 16000, 8000).astype(np.float32)
    soundfile.write(at_8k, np.stack([low, low], axis=1), 8000)          # stereo, 8 kHz, FLAC
    assert recognizer.transcribe(at_16k, 1) == recognizer.transcribe(audio, 1)
    from_file = recognizer.recognize(at_8k, 1)
    expected = recognizer.recognize(soxr.resample(low, 8000, 16000).astype(np.float32), 1)
    np.testing.assert_allclose(from_file.log_probs, expected.log_probs, atol=2e-3)
    # The same 8 kHz samples given as an array with their rate are resampled too.
    as_array = recognizer.recognize(low, 1, sample_rate=8000)
    assert as_array.log_probs.shape == expected.log_probs.shape


@pytest.mark.parametrize("level", [-1, 3, 1.5, "1", True])
def test_bad_level_is_a_clear_error(recognizer, level):
    from tflite.runtime import RecognizerError

    with pytest.raises(RecognizerError, match="level"):
        recognizer.transcribe(np.zeros(1600, np.float32), level)


def test_missing_and_unreadable_audio_are_clear_errors(recognizer, tmp_path):
    from tflite.audio import AudioError

    with pytest.raises(FileNotFoundError, match="audio file not found: .*nope.wav"):
        recognizer.transcribe(tmp_path / "nope.wav", 0)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file" * 10)
    with pytest.raises(AudioError, match="garbage.wav: unreadable: "):   # the reason dsnn-prepare records
        recognizer.transcribe(garbage, 0)


def test_missing_or_foreign_model_file_is_a_clear_error(tmp_path):
    from tflite.metadata import MetadataError
    from tflite.runtime import Recognizer

    with pytest.raises(FileNotFoundError, match="model file not found"):
        Recognizer(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(MetadataError, match="not a TFLite flatbuffer"):
        Recognizer(junk)
