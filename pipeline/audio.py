"""Audio decoding and validation: WAV, FLAC and OGG through soundfile, mono, resampled with soxr.

The policy itself is `dsnn_keras.audio.decode` (shared with the runtime); this module adds the dataset's
duration limits and remote files.

Every failure raises `RejectError` with a typed reason code (see `RejectReason`), so the pipeline
can route the input to ``rejects.jsonl`` instead of failing.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from dsnn_keras.audio import SUPPORTED_CONTAINERS, SUPPORTED_EXTENSIONS, AudioDecodeError, decode
from pipeline.records import RejectError, RejectReason

__all__ = ["AudioConfig", "SUPPORTED_CONTAINERS", "SUPPORTED_EXTENSIONS", "load_audio"]


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


def _remote_bytes(path: str) -> bytes:
    """The bytes of a ``scheme://`` file read through Beam's FileSystems; ``missing_file`` if absent."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise RejectError(RejectReason.MISSING_FILE, "no such file")
    with FileSystems.open(path, compression_type="uncompressed") as f:
        return f.read()


def load_audio(path: str, config: AudioConfig = AudioConfig()) -> np.ndarray:
    """Decodes, validates, down-mixes and resamples one audio file.

    The decoding policy is `dsnn_keras.audio.decode`, shared with the runtime (``tflite.audio``): the
    runtime refuses the same files for the same reasons; only the duration limits are preparation's.

    Args:
        path: A local path or a URL Beam's FileSystems can open (``gs://...``).
        config: Limits and output rate. Defaults to `AudioConfig()`.

    Returns:
        float32 mono samples in [-1, 1] at ``config.sample_rate``.

    Raises:
        RejectError: with reason ``missing_file``, ``empty_file``, ``wrong_format``,
            ``unreadable``, ``truncated``, ``empty_audio``, ``non_finite_samples``, ``too_short``
            or ``too_long``.

    Example:
        >>> load_audio("clip.flac").dtype  # doctest: +SKIP
        dtype('float32')
    """
    data = _remote_bytes(path) if "://" in path else None
    try:
        return decode(path, config.sample_rate, data=data, min_duration_s=config.min_duration_s,
                      max_duration_s=config.max_duration_s, resample_quality=config.resample_quality)
    except AudioDecodeError as e:
        raise RejectError(e.reason, e.detail) from None
