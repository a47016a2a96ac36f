"""Audio decoding and validation: WAV, FLAC and OGG through soundfile, mono, resampled with soxr.

Every failure raises `RejectError` with a typed reason code (see `RejectReason`), so the pipeline
can route the input to ``rejects.jsonl`` instead of failing.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct

import numpy as np
import soundfile as sf
import soxr

from pipeline.records import RejectError, RejectReason

SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg")
SUPPORTED_CONTAINERS = ("WAV", "WAVEX", "FLAC", "OGG")


@dataclasses.dataclass(frozen=True)
class AudioConfig:
    """Decoding and validation limits.

    Args:
        sample_rate: Output sample rate in Hz; other rates are resampled. Defaults to 16000.
        min_duration_s: Shorter clips are rejected (``too_short``). Defaults to 0.1.
        max_duration_s: Longer clips are rejected (``too_long``). Defaults to 30.0.
        resample_quality: soxr quality (``"VHQ"``, ``"HQ"``, ``"MQ"``, ``"LQ"``). Defaults to "HQ".

    Example:
        >>> AudioConfig(max_duration_s=20.0).max_duration_s
        20.0
    """

    sample_rate: int = 16000
    min_duration_s: float = 0.1
    max_duration_s: float = 30.0
    resample_quality: str = "HQ"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"AudioConfig.sample_rate must be > 0, got {self.sample_rate}")
        if not 0 <= self.min_duration_s < self.max_duration_s:
            raise ValueError(
                "AudioConfig needs 0 <= min_duration_s < max_duration_s, got "
                f"{self.min_duration_s}, {self.max_duration_s}")
        if self.resample_quality not in ("VHQ", "HQ", "MQ", "LQ", "QQ"):
            raise ValueError(
                f"AudioConfig.resample_quality must be VHQ, HQ, MQ, LQ or QQ, got {self.resample_quality!r}")


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


def _open_bytes(path: str) -> tuple[bytes | None, int]:
    """Returns (file bytes for remote paths, size); raises missing/empty rejects."""
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems
        if not FileSystems.exists(path):
            raise RejectError(RejectReason.MISSING_FILE, "no such file")
        with FileSystems.open(path, compression_type="uncompressed") as f:
            data = f.read()
        size = len(data)
    else:
        if not os.path.isfile(path):
            raise RejectError(RejectReason.MISSING_FILE, "no such file")
        data, size = None, os.path.getsize(path)
    if size == 0:
        raise RejectError(RejectReason.EMPTY_FILE, "0 bytes")
    return data, size


def load_audio(path: str, config: AudioConfig = AudioConfig()) -> np.ndarray:
    """Decodes, validates, down-mixes and resamples one audio file.

    Args:
        path: A local path or a URL Beam's FileSystems can open (``gs://...``).
        config: Limits and output rate. Defaults to `AudioConfig()`.

    Returns:
        float32 mono samples in [-1, 1] at ``config.sample_rate``.

    Raises:
        RejectError: with reason ``missing_file``, ``empty_file``, ``wrong_format``,
            ``unreadable``, ``truncated``, ``empty_audio``, ``too_short`` or ``too_long``.

    Example:
        >>> load_audio("clip.flac").dtype  # doctest: +SKIP
        dtype('float32')
    """
    ext = os.path.splitext(path)[1].lower()
    data, size = _open_bytes(path)
    if ext not in SUPPORTED_EXTENSIONS:
        raise RejectError(RejectReason.WRONG_FORMAT,
                          f"extension {ext or '(none)'!r}; expected one of {list(SUPPORTED_EXTENSIONS)}")
    source = io.BytesIO(data) if data is not None else path
    try:
        handle = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise RejectError(RejectReason.UNREADABLE, str(e).replace(str(path), "<file>")) from None
    with handle:
        if handle.format not in SUPPORTED_CONTAINERS:
            raise RejectError(RejectReason.WRONG_FORMAT,
                              f"container {handle.format}; expected one of {list(SUPPORTED_CONTAINERS)}")
        declared, rate = handle.frames, handle.samplerate
        if handle.format in ("WAV", "WAVEX"):
            if data is None:
                with open(path, "rb") as f:
                    head = f.read(65536)
            else:
                head = data[:65536]
            missing = _wav_data_shortfall(head, size)
            if missing:
                raise RejectError(RejectReason.TRUNCATED, f"WAV data chunk is {missing} bytes short")
        if declared == 0:
            raise RejectError(RejectReason.EMPTY_AUDIO, "0 samples")
        duration = declared / rate
        if duration < config.min_duration_s:
            raise RejectError(RejectReason.TOO_SHORT,
                              f"{duration:.3f} s < --min_duration {config.min_duration_s} s")
        if duration > config.max_duration_s:
            raise RejectError(RejectReason.TOO_LONG,
                              f"{duration:.3f} s > --max_duration {config.max_duration_s} s")
        try:
            samples = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise RejectError(RejectReason.TRUNCATED, f"decoding failed: {e}") from None
    if samples.shape[0] < declared:
        raise RejectError(RejectReason.TRUNCATED,
                          f"decoded {samples.shape[0]} of {declared} samples declared in the header")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if rate != config.sample_rate:
        mono = soxr.resample(mono, rate, config.sample_rate, quality=config.resample_quality)
    return np.ascontiguousarray(mono, dtype=np.float32)
