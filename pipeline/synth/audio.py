"""Post-processing of synthesised speech: resampling (to 16 kHz by default), mild augmentation, FLAC encoding.

Every random choice comes from a ``numpy.random.Generator`` the caller seeds from
``(corpus seed, utterance index)``, so an utterance's audio does not depend on which worker made
it or in what order.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

TARGET_RATE = 16000
"""Default sample rate of the corpus (Hz; `SynthConfig.sample_rate`); LibriSpeech and AN4 use 16 kHz mono."""


@dataclass(frozen=True)
class Augmentation:
    """Mild, seeded augmentation applied per utterance.

    Args:
        noise_snr_db: ``(low, high)`` SNR range in dB for added white or pink noise (colour and
            SNR drawn per utterance), or ``None`` for no noise. Defaults to ``None``.
        gain_db: ``(low, high)`` gain range in dB drawn per utterance, or ``None``. Defaults to ``None``.
        pad_s: ``(low, high)`` seconds of silence added before and (independently) after the
            speech, as a recording has. Defaults to ``(0.1, 0.3)``.

    Example:
        >>> Augmentation(noise_snr_db=(20.0, 30.0), gain_db=(-6.0, 0.0)).noise_snr_db
        (20.0, 30.0)
    """

    noise_snr_db: tuple[float, float] | None = None
    gain_db: tuple[float, float] | None = None
    pad_s: tuple[float, float] = (0.1, 0.3)

    def __post_init__(self):
        for name in ("noise_snr_db", "gain_db", "pad_s"):
            value = getattr(self, name)
            if value is None:
                continue
            if len(value) != 2 or not value[0] <= value[1]:
                raise ValueError(f"Augmentation.{name}: expected (low, high) with low <= high, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))
        if self.pad_s[0] < 0:
            raise ValueError(f"Augmentation.pad_s: expected non-negative seconds, got {self.pad_s!r}")
        if self.gain_db is not None and self.gain_db[1] > 12:
            raise ValueError(f"Augmentation.gain_db: expected at most +12 dB (mild), got {self.gain_db!r}")


def resample(pcm16: np.ndarray, from_rate: int, to_rate: int = TARGET_RATE) -> np.ndarray:
    """int16 samples at ``from_rate`` -> float32 in [-1, 1) at ``to_rate`` (soxr, high quality).

    soxr's resampler is a fixed polyphase filter, so the same input gives the same output.
    """
    import soxr

    x = pcm16.astype(np.float32) / 32768.0
    if from_rate == to_rate or x.size == 0:
        return x
    return soxr.resample(x, from_rate, to_rate, quality="HQ").astype(np.float32)


def pink_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise of ``n`` samples, shaped from white noise in the frequency domain."""
    if n == 0:
        return np.zeros(0, np.float32)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return (noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, aug: Augmentation, rate: int = TARGET_RATE) -> np.ndarray:
    """Pad with silence, then apply gain and additive noise, as configured.

    Args:
        x: float32 speech in [-1, 1].
        rng: the utterance's generator (seeded by the caller).
        aug: what to apply.
        rate: sample rate of ``x``.

    Returns:
        float32 audio, clipped to [-1, 1).
    """
    speech_rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
    before, after = (int(round(rng.uniform(*aug.pad_s) * rate)) for _ in range(2))
    y = np.concatenate([np.zeros(before, np.float32), x, np.zeros(after, np.float32)])
    if aug.gain_db is not None:
        gain = 10.0 ** (rng.uniform(*aug.gain_db) / 20.0)
        y = y * np.float32(gain)
        speech_rms *= gain
    if aug.noise_snr_db is not None and speech_rms > 0:
        snr_db = rng.uniform(*aug.noise_snr_db)
        noise = pink_noise(rng, y.size) if rng.random() < 0.5 else rng.standard_normal(y.size).astype(np.float32)
        y = y + noise * np.float32(speech_rms / 10.0 ** (snr_db / 20.0))
    return np.clip(y, -1.0, 32767.0 / 32768.0).astype(np.float32)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1) -> int16 (rounded, clipped)."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def encode_flac(pcm16: np.ndarray, rate: int = TARGET_RATE) -> bytes:
    """16-bit mono FLAC bytes for ``pcm16``.

    libsndfile writes no timestamp, so equal samples give byte-identical files (a test checks).
    """
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, pcm16, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()
