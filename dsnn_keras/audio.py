"""The one audio decoder policy: what preparation (``pipeline``) and the runtime (``tflite``) accept.

WAV, FLAC and OGG through soundfile, read in blocks (down-mixed to mono and checked block by block, so a
long multi-channel file never sits in memory as float32 frames x channels), resampled with soxr. Every
refusal is an `AudioDecodeError` carrying a reason code, the same code ``dsnn-prepare`` writes to
``rejects.jsonl``: ``missing_file``, ``empty_file``, ``wrong_format``, ``unreadable``, ``truncated``,
``empty_audio``, ``non_finite_samples``, and (only when limits are given: a dataset's policy, not the
runtime's) ``too_short`` / ``too_long``. No TensorFlow here, nor in anything it imports.

Example:
    >>> samples = decode("clip.flac", 16000)            # doctest: +SKIP
    >>> samples.dtype, samples.ndim
    (dtype('float32'), 1)
"""
from __future__ import annotations

import io
import os
import struct
from typing import Optional

import numpy as np

from dsnn_keras.errors import DsnnError

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg")
SUPPORTED_CONTAINERS = ("WAV", "WAVEX", "FLAC", "OGG")
BLOCK_FRAMES = 1 << 18          # frames per read: 1 MB per channel of float32
_INITIAL_FRAMES = 1 << 24       # 64 MB of float32 samples (17 min at 16 kHz) before the buffer grows

MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
WRONG_FORMAT = "wrong_format"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
EMPTY_AUDIO = "empty_audio"
NON_FINITE_SAMPLES = "non_finite_samples"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
REASONS = (MISSING_FILE, EMPTY_FILE, WRONG_FORMAT, UNREADABLE, TRUNCATED, EMPTY_AUDIO, NON_FINITE_SAMPLES,
           TOO_SHORT, TOO_LONG)


class AudioDecodeError(DsnnError, ValueError):
    """An audio input refused by the decoder policy.

    Attributes:
        reason: One of `REASONS` (the ``rejects.jsonl`` code).
        detail: What was wrong, in words (never the path: callers add it).
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _wav_data_shortfall(head: bytes, file_size: int) -> int:
    """Bytes missing from a RIFF/WAVE ``data`` chunk (0 when complete or not parseable)."""
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
        return 0
    endian = "<" if head[:4] == b"RIFF" else ">"
    offset = 12
    while offset + 8 <= len(head):
        chunk_id = head[offset:offset + 4]
        (size,) = struct.unpack(endian + "I", head[offset + 4:offset + 8])
        if chunk_id == b"data":
            if size == 0xFFFFFFFF or size == 0:  # streamed/unknown length
                return 0
            return max(0, offset + 8 + size - file_size)
        offset += 8 + size + (size & 1)
    return 0


def check_finite(samples: np.ndarray, rate: Optional[int] = None, block: int = BLOCK_FRAMES) -> None:
    """Raises ``non_finite_samples`` if any of ``samples`` (``[frames]`` or ``[frames, channels]``) is NaN/inf.

    Checked in blocks of frames, so a long recording needs no full-size boolean copy.
    """
    frames = samples.shape[0] if samples.ndim else 0
    bad, first = 0, -1
    for start in range(0, frames, block):
        finite = np.isfinite(samples[start:start + block])
        if not finite.all():
            rows = finite.reshape(finite.shape[0], -1).all(axis=1)
            first = start + int(np.argmin(rows)) if first < 0 else first
            bad += int(finite.size - np.count_nonzero(finite))
    if bad:
        raise AudioDecodeError(NON_FINITE_SAMPLES, _non_finite_detail(bad, samples.size, first, rate))


def _non_finite_detail(bad: int, total: int, first: int, rate: Optional[int]) -> str:
    where = f"{first / rate:.3f} s" if rate else f"sample {first}"
    return f"{bad} of {total} samples are NaN or infinite (the first at {where})"


def decode(path: str, sample_rate: Optional[int], *, data: Optional[bytes] = None,
           min_duration_s: Optional[float] = None, max_duration_s: Optional[float] = None,
           resample_quality: str = "HQ", block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """Decodes, validates, down-mixes and resamples one audio file.

    Args:
        path: The file (its extension is checked even when ``data`` is given).
        sample_rate: Output rate in Hz; other rates are resampled. None keeps the file's rate.
        data: The file's bytes, when it is not a local file (e.g. read through Beam's FileSystems).
        min_duration_s: Refuse shorter files (``too_short``). Defaults to no limit.
        max_duration_s: Refuse longer files (``too_long``). Defaults to no limit.
        resample_quality: soxr quality. Defaults to "HQ".
        block_frames: Frames read per block. Defaults to `BLOCK_FRAMES`.

    Returns:
        float32 mono samples (the channels' mean).

    Raises:
        AudioDecodeError: with one of `REASONS`.
    """
    import soundfile as sf

    if data is None:
        if not os.path.isfile(path):
            raise AudioDecodeError(MISSING_FILE, "no such file")
        size = os.path.getsize(path)
    else:
        size = len(data)
    if size == 0:
        raise AudioDecodeError(EMPTY_FILE, "0 bytes")
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise AudioDecodeError(WRONG_FORMAT,
                               f"extension {ext or '(none)'!r}; expected one of {list(SUPPORTED_EXTENSIONS)}")
    try:
        handle = sf.SoundFile(io.BytesIO(data) if data is not None else str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, OSError) as e:
        raise AudioDecodeError(UNREADABLE, str(e).replace(str(path), "<file>")) from None
    with handle:
        if handle.format not in SUPPORTED_CONTAINERS:
            raise AudioDecodeError(WRONG_FORMAT,
                                   f"container {handle.format}; expected one of {list(SUPPORTED_CONTAINERS)}")
        declared, rate, channels = handle.frames, handle.samplerate, handle.channels
        if handle.format in ("WAV", "WAVEX"):
            if data is None:
                with open(path, "rb") as f:
                    head = f.read(65536)
            else:
                head = data[:65536]
            missing = _wav_data_shortfall(head, size)
            if missing:
                raise AudioDecodeError(TRUNCATED, f"WAV data chunk is {missing} bytes short")
        if declared == 0:
            raise AudioDecodeError(EMPTY_AUDIO, "0 samples")
        duration = declared / rate
        if min_duration_s is not None and duration < min_duration_s:
            raise AudioDecodeError(TOO_SHORT, f"{duration:.3f} s < --min_duration {min_duration_s} s")
        if max_duration_s is not None and duration > max_duration_s:
            raise AudioDecodeError(TOO_LONG, f"{duration:.3f} s > --max_duration {max_duration_s} s")
        # The header's frame count is not trusted for the allocation (a forged FLAC/OGG header can
        # declare terabytes): start at most _INITIAL_FRAMES and grow with what is really decoded.
        mono = np.empty(min(declared, _INITIAL_FRAMES), np.float32)
        done, bad, first_bad = 0, 0, -1
        while done < declared:
            try:
                block = handle.read(min(block_frames, declared - done), dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as e:
                raise AudioDecodeError(TRUNCATED, f"decoding failed: {e}") from None
            if block.shape[0] == 0:
                break
            finite = np.isfinite(block)
            if not finite.all():
                first_bad = done + int(np.argmin(finite.all(axis=1))) if first_bad < 0 else first_bad
                bad += int(finite.size - np.count_nonzero(finite))
            if done + block.shape[0] > mono.size:
                grown = np.empty(min(declared, max(2 * mono.size, done + block.shape[0])), np.float32)
                grown[:done] = mono[:done]
                mono = grown
            mono[done:done + block.shape[0]] = (block.mean(axis=1, dtype=np.float32) if channels > 1
                                                else block[:, 0])
            done += block.shape[0]
    if done < declared:
        raise AudioDecodeError(TRUNCATED, f"decoded {done} of {declared} samples declared in the header")
    mono = mono[:done]
    if bad:
        raise AudioDecodeError(NON_FINITE_SAMPLES, _non_finite_detail(bad, declared * channels, first_bad, rate))
    if sample_rate is not None and rate != sample_rate:
        import soxr

        mono = soxr.resample(mono, rate, sample_rate, quality=resample_quality)
    return np.ascontiguousarray(mono, dtype=np.float32)
