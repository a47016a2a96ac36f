"""pipeline.synth.audio: resampling, seeded augmentation, FLAC encoding."""
import io
import time

import numpy as np
import pytest
import soundfile

from pipeline.synth import audio


def _tone(rate, seconds=1.0, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def test_resample_to_16k_keeps_duration_and_frequency():
    y = audio.resample(_tone(22050), 22050)
    assert y.dtype == np.float32 and abs(y.size - 16000) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(y))) * 16000 / y.size
    assert abs(peak_hz - 440) < 2


def test_resample_is_deterministic():
    x = _tone(22050, freq=300)
    assert audio.resample(x, 22050).tobytes() == audio.resample(x, 22050).tobytes()


def test_augment_is_a_function_of_the_generator_seed():
    x = audio.resample(_tone(22050), 22050)
    aug = audio.Augmentation(noise_snr_db=(10.0, 10.0), gain_db=(-6.0, -6.0), pad_s=(0.2, 0.2))
    a = audio.augment(x, np.random.default_rng([1, 2]), aug)
    b = audio.augment(x, np.random.default_rng([1, 2]), aug)
    c = audio.augment(x, np.random.default_rng([1, 3]), aug)
    assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()
    assert a.size == x.size + 2 * 3200  # 0.2 s of padding on each side


def test_noise_is_added_at_the_requested_snr():
    x = audio.resample(_tone(22050), 22050)
    aug = audio.Augmentation(noise_snr_db=(20.0, 20.0), pad_s=(0.0, 0.0))
    y = audio.augment(x, np.random.default_rng(0), aug)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(20.0, abs=0.5)


def test_pink_noise_has_more_low_than_high_frequency_power():
    n = audio.pink_noise(np.random.default_rng(0), 32000)
    power = np.abs(np.fft.rfft(n)) ** 2
    assert power[10:1000].mean() > 10 * power[-1000:].mean()
    assert np.sqrt(np.mean(n ** 2)) == pytest.approx(1.0, rel=1e-3)


def test_flac_round_trips_and_has_no_timestamp():
    pcm = audio.to_pcm16(audio.resample(_tone(22050), 22050))
    first = audio.encode_flac(pcm)
    time.sleep(1.1)  # a timestamp in the header would change the bytes
    assert audio.encode_flac(pcm) == first
    decoded, rate = soundfile.read(io.BytesIO(first), dtype="int16")
    assert rate == 16000 and decoded.ndim == 1 and np.array_equal(decoded, pcm)


def test_bad_augmentation_ranges_name_the_field():
    with pytest.raises(ValueError, match="Augmentation.gain_db"):
        audio.Augmentation(gain_db=(3.0, -3.0))
    with pytest.raises(ValueError, match="Augmentation.pad_s"):
        audio.Augmentation(pad_s=(-1.0, 0.0))
