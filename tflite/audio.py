"""Audio for the runtime: the preparation's decoder policy, arrays checked, resampling with soxr. No TensorFlow.

Files go through `dsnn_keras.audio.decode`, the decoder ``dsnn-prepare`` uses, so the runtime refuses
exactly the files preparation rejects (truncated, unreadable, wrong format, empty, NaN/inf samples), with
the same reason code and text: ``PATH: reason: detail``. Only preparation's duration limits do not apply
(long recordings are run in windows by `tflite.runtime.Recognizer`).

Example:
    >>> samples = load_audio("utt.flac", sample_rate=16000)
    >>> samples.dtype, samples.ndim
    (dtype('float32'), 1)
"""
from __future__ import annotations

import pathlib
from typing import Optional, Union

import numpy as np

from dsnn_keras.audio import UNREADABLE, AudioDecodeError, check_finite, decode
from dsnn_keras.errors import DsnnError


class AudioError(DsnnError, ValueError):
    """An audio file or array the runtime refuses.

    Attributes:
        reason: The decoder policy's reason code (``truncated``, ``non_finite_samples``, ...), or
            ``bad_array`` for an array of the wrong shape or dtype.
    """

    def __init__(self, message: str, reason: str = "bad_array"):
        super().__init__(message)
        self.reason = reason


def to_mono_float(samples, source: str = "audio") -> np.ndarray:
    """Returns float32 mono samples from a real, finite array.

    Layout: 1-D ``[num_samples]``, or 2-D ``[num_samples, channels]`` (channels last, as soundfile
    reads them; the channels are averaged). A 2-D array with at least as many channels as samples,
    e.g. ``(2, 16000)``, is refused as ambiguous: that is ``[channels, num_samples]``; pass ``.T``.
    Integer arrays are scaled by their type's maximum (int16 PCM -> [-1, 1]).

    Raises:
        AudioError: another shape, a non-numeric or complex dtype, or NaN/inf samples.
    """
    array = np.asarray(samples)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.floating)
                                   or np.issubdtype(array.dtype, np.integer)):
        raise AudioError(f"{source}: expected real-valued samples (float or int), got dtype {array.dtype}")
    if array.ndim == 2:
        if array.shape[1] > 1 and array.shape[0] <= array.shape[1]:
            raise AudioError(
                f"{source}: got shape {array.shape}; a 2-D array must be [num_samples, channels] with more "
                f"samples than channels (for [channels, num_samples] pass array.T)")
    elif array.ndim != 1:
        raise AudioError(f"{source}: expected [num_samples] or [num_samples, channels], got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        try:
            check_finite(array)
        except AudioDecodeError as error:
            raise AudioError(f"{source}: {error.reason}: {error.detail}", error.reason) from None
    scale = float(np.iinfo(array.dtype).max) if np.issubdtype(array.dtype, np.integer) else None
    if array.ndim == 2:
        array = array.mean(axis=1)
    if scale is not None:
        array = array / scale
    return np.ascontiguousarray(array, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Resamples mono float32 audio with soxr (returned unchanged when the rates match)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or int(rate) <= 0:
        raise AudioError(f"sample rate must be an int > 0, got {rate!r}")
    if int(rate) == int(target_rate) or samples.size == 0:
        return samples
    import soxr

    return np.asarray(soxr.resample(samples, int(rate), int(target_rate), quality="HQ"), np.float32)


def load_audio(path: Union[str, pathlib.Path], sample_rate: Optional[int]) -> np.ndarray:
    """Reads an audio file (WAV, FLAC or OGG) as mono float32 at ``sample_rate``.

    Args:
        path: The file: a local path, or a URL `tf.io.gfile` reaches (``gs://...``; its bytes are
            read with `dsnn_keras.fileio` and decoded from memory by the same decoder).
        sample_rate: Target rate in Hz; other rates are resampled.

    Returns:
        float32 ``[num_samples]``.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: the decoder policy refuses it; ``str(error)`` is ``PATH: reason: detail`` and
            ``error.reason`` the reason code (the one ``dsnn-prepare`` writes to rejects.jsonl).
    """
    from dsnn_keras import fileio

    data = None
    if fileio.is_local(path):
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
    else:
        path = str(path)
        try:
            data = fileio.read_bytes(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"audio file not found: {path}") from None
        except OSError as error:   # e.g. a directory, or no permission: one line naming the URL
            raise AudioError(f"{path}: {UNREADABLE}: cannot read ({error.strerror or error})", UNREADABLE) from None
    try:
        return decode(str(path), sample_rate, data=data)
    except AudioDecodeError as error:
        raise AudioError(f"{path}: {error.reason}: {error.detail}", error.reason) from None
