"""pipeline.synth.espeak: espeak-ng through ctypes, one forked child per utterance."""
import ctypes

import numpy as np
import pytest

from pipeline.synth import espeak


def test_synthesize_returns_22khz_int16_speech():
    samples = espeak.synthesize("ENTER SIX TWO FOUR", espeak.VoiceSettings("en-us", "m3"))
    assert samples.dtype == np.int16
    seconds = samples.size / espeak.SAMPLE_RATE
    assert 0.5 < seconds < 4.0
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 500  # well above silence


def test_same_request_is_byte_identical_even_after_the_process_state_changes():
    settings = espeak.VoiceSettings("en-gb-scotland", "f1", rate=190, pitch=30)
    first = espeak.synthesize("ERASE C K C W FOURTEEN", settings)
    libc = ctypes.CDLL(None)
    for _ in range(5):
        libc.rand()  # espeak-ng uses libc rand(); the child must not inherit this state
    junk = [bytes(n) for n in range(1, 5000, 3)]  # and must not depend on the heap's history
    second = espeak.synthesize("ERASE C K C W FOURTEEN", settings)
    del junk
    assert first.tobytes() == second.tobytes()


def test_rate_and_pitch_change_the_audio():
    base = espeak.synthesize("YES", espeak.VoiceSettings("en-us", rate=175, pitch=50))
    slow = espeak.synthesize("YES", espeak.VoiceSettings("en-us", rate=100, pitch=50))
    high = espeak.synthesize("YES", espeak.VoiceSettings("en-us", rate=175, pitch=90))
    assert slow.size > base.size
    assert high.tobytes() != base.tobytes()


def test_unknown_voice_is_detected_and_refused():
    assert espeak.voice_exists("en-us")
    assert not espeak.voice_exists("xx-nonexistent")
    with pytest.raises(espeak.EspeakError, match="xx-nonexistent"):
        espeak.synthesize("YES", espeak.VoiceSettings("xx-nonexistent"))


def test_variants_with_breath_noise_are_flagged_as_not_reproducible():
    assert espeak.variant_exists("m3") and not espeak.variant_exists("zz9")
    assert espeak.variant_uses_breath("f3") and not espeak.variant_uses_breath("m3")
    assert "f3" not in espeak.reproducible_variants() and "f4" in espeak.reproducible_variants()


def test_english_voices_are_listed():
    voices = espeak.english_voices()
    assert {"en", "en-us", "en-gb-scotland"} <= set(voices)


def test_voice_settings_reject_out_of_range_values():
    with pytest.raises(ValueError, match="VoiceSettings.pitch"):
        espeak.VoiceSettings("en-us", pitch=120)
    with pytest.raises(ValueError, match="VoiceSettings.rate"):
        espeak.VoiceSettings("en-us", rate=10)
    assert espeak.VoiceSettings("en-us", "f4").voice_name == "en-us+f4"
