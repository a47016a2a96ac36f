"""Audio for the runtime: decode with soundfile, mix to mono, resample with soxr. No TensorFlow.

Example:
    >>> samples = load_audio("utt.flac", sample_rate=16000)
    >>> samples.dtype, samples.ndim
    (dtype('float32'), 1)
"""
from __future__ import annotations

import pathlib
from typing import Union

import numpy as np


class AudioError(ValueError):
    """An audio file cannot be read, or an array is not mono float audio."""


def to_mono_float(samples, source: str = "audio") -> np.ndarray:
    """Returns float32 mono samples from a 1-D ``[n]`` or 2-D ``[n, channels]`` array."""
    array = np.asarray(samples)
    if array.ndim == 2:
        array = array.mean(axis=1)
    if array.ndim != 1:
        raise AudioError(f"{source}: expected [num_samples] or [num_samples, channels], got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        array = array / float(np.iinfo(array.dtype).max)
    return np.ascontiguousarray(array, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resamples mono float32 audio with soxr (returned unchanged when the rates match)."""
    if int(rate) <= 0:
        raise AudioError(f"sample rate must be > 0, got {rate}")
    if int(rate) == int(target_rate) or samples.size == 0:
        return samples
    import soxr

    return np.asarray(soxr.resample(samples, int(rate), int(target_rate), quality="HQ"), np.float32)


def load_audio(path: Union[str, pathlib.Path], sample_rate: int) -> np.ndarray:
    """Reads an audio file (WAV, FLAC, OGG, ...) as mono float32 at ``sample_rate``.

    Args:
        path: The file.
        sample_rate: Target rate in Hz; other rates are resampled.

    Returns:
        float32 ``[num_samples]`` in [-1, 1].

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: libsndfile cannot decode it.
    """
    import soundfile

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: cannot decode audio ({error})") from None
    return resample(to_mono_float(samples, str(path)), rate, sample_rate)
