"""The log-mel frontend: the only feature code in the project.

Beam calls it to prepare datasets, training reads its output, and the TFLite exporter puts the
same function inside the ``.tflite`` graph, so training and serving features cannot drift apart.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Log-mel filterbank settings.

    Args:
        sample_rate: Input sample rate in Hz. Defaults to 16000.
        num_mel_bins: Number of mel bands. Defaults to 80.
        frame_length_ms: Analysis window length in milliseconds. Defaults to 25.
        frame_step_ms: Hop between windows in milliseconds. Defaults to 10.
        fft_length: FFT size (must be >= the window in samples). Defaults to 512.
        lower_edge_hz: Lowest mel band edge. Defaults to 20.
        upper_edge_hz: Highest mel band edge (<= sample_rate / 2). Defaults to 7600.
        log_floor: Added to the mel energies before the log. Defaults to 1e-6.

    Example:
        >>> cfg = FeatureConfig.from_dict({"num_mel_bins": 40})
        >>> cfg.frame_length, cfg.frame_step
        (400, 160)
    """

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_step_ms: float = 10.0
    fft_length: int = 512
    lower_edge_hz: float = 20.0
    upper_edge_hz: float = 7600.0
    log_floor: float = 1e-6

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"FeatureConfig.sample_rate must be > 0, got {self.sample_rate}")
        if self.num_mel_bins <= 0:
            raise ValueError(f"FeatureConfig.num_mel_bins must be > 0, got {self.num_mel_bins}")
        if self.frame_step <= 0 or self.frame_length <= 0:
            raise ValueError("FeatureConfig.frame_length_ms and frame_step_ms must be > 0")
        if self.fft_length < self.frame_length:
            raise ValueError(
                f"FeatureConfig.fft_length ({self.fft_length}) must be >= the window "
                f"({self.frame_length} samples)")
        if not 0 <= self.lower_edge_hz < self.upper_edge_hz <= self.sample_rate / 2:
            raise ValueError(
                "FeatureConfig needs 0 <= lower_edge_hz < upper_edge_hz <= sample_rate/2, got "
                f"{self.lower_edge_hz}, {self.upper_edge_hz}")
        if self.log_floor <= 0:
            raise ValueError(f"FeatureConfig.log_floor must be > 0, got {self.log_floor}")

    @property
    def frame_length(self) -> int:
        return int(round(self.sample_rate * self.frame_length_ms / 1000.0))

    @property
    def frame_step(self) -> int:
        return int(round(self.sample_rate * self.frame_step_ms / 1000.0))

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples (inputs shorter than one window give 1)."""
        return 1 + max(num_samples - self.frame_length, 0) // self.frame_step

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "FeatureConfig":
        """Builds a config from a mapping; unknown keys are an error naming the key."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"FeatureConfig: unknown key(s) {unknown}; expected a subset of {sorted(known)}")
        return cls(**dict(values))


def log_mel_spectrogram(waveform: tf.Tensor, config: FeatureConfig = FeatureConfig()) -> tf.Tensor:
    """Computes log-mel filterbank features with ``tf.signal`` (TFLite builtin ops only).

    Args:
        waveform: float32 samples in [-1, 1] at ``config.sample_rate``, shape ``[..., num_samples]``.
        config: The `FeatureConfig`. Defaults to `FeatureConfig()`.

    Returns:
        float32 tensor ``[..., num_frames, num_mel_bins]`` with
        ``num_frames = config.num_frames(num_samples)``: no padding at the end, except that an input
        shorter than one window (even empty) is zero-padded to one window and gives one frame.

    Example:
        >>> feats = log_mel_spectrogram(tf.zeros([16000]))
        >>> feats.shape
        TensorShape([98, 80])
    """
    waveform = tf.convert_to_tensor(waveform, dtype=tf.float32)
    # Zero-pad inputs shorter than one window so empty or tiny audio has a defined result.
    shortfall = tf.maximum(config.frame_length - tf.shape(waveform)[-1], 0)
    paddings = tf.concat([tf.zeros([tf.rank(waveform) - 1, 2], tf.int32),
                          tf.reshape(tf.stack([0, shortfall]), [1, 2])], axis=0)
    waveform = tf.pad(waveform, paddings)
    return _log_mel_frames(waveform, config)


def _log_mel_frames(waveform: tf.Tensor, config: FeatureConfig) -> tf.Tensor:
    """Log-mel of every whole window of ``waveform`` (none when it is shorter than one window)."""
    stft = tf.signal.stft(
        waveform,
        frame_length=config.frame_length,
        frame_step=config.frame_step,
        fft_length=config.fft_length,
        window_fn=tf.signal.hann_window,
        pad_end=False,
    )
    power = tf.square(tf.abs(stft))
    mel_matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=config.num_mel_bins,
        num_spectrogram_bins=config.fft_length // 2 + 1,
        sample_rate=config.sample_rate,
        lower_edge_hertz=config.lower_edge_hz,
        upper_edge_hertz=config.upper_edge_hz,
    )
    mel = tf.tensordot(power, mel_matrix, axes=1)
    return tf.math.log(mel + config.log_floor)


def stream_state_size(config: FeatureConfig) -> int:
    """Samples the streaming frontend holds between calls: ``frame_length - 1``."""
    return config.frame_length - 1


def log_mel_stream_step(chunk: tf.Tensor, buffer: tf.Tensor, buffered: tf.Tensor, frames_done: tf.Tensor,
                        end_of_stream: tf.Tensor, config: FeatureConfig = FeatureConfig()):
    """One call of the streaming frontend: the frames a chunk of audio completes.

    Feeding an utterance in chunks of any sizes (empty included), the last call with
    ``end_of_stream`` true, gives exactly the frames of `log_mel_spectrogram` on the whole
    utterance: a frame is emitted once its window is complete, the samples after the last complete
    window wait in ``buffer``, and an utterance shorter than one window is zero-padded to one window
    at the end of the stream (as `log_mel_spectrogram` does). TFLite builtin ops only; every state
    tensor has a fixed shape, and all-zero state is the start of a stream.

    Args:
        chunk: float32 ``[n]`` new samples, ``n >= 0``.
        buffer: float32 ``[frame_length - 1]``: the unconsumed samples, first ``buffered`` valid.
        buffered: int32 ``[]``: how many samples of ``buffer`` are valid.
        frames_done: int32 ``[]``: frames emitted so far in this stream.
        end_of_stream: bool (or int) ``[]``: this is the last chunk.
        config: The `FeatureConfig`. Defaults to `FeatureConfig()`.

    Returns:
        ``(features [frames, num_mel_bins], buffer, buffered, frames_done)`` of the next state.

    Example:
        >>> size = stream_state_size(cfg)
        >>> feats, buf, n, done = log_mel_stream_step(chunk, tf.zeros([size]), 0, 0, False, cfg)
    """
    length, step = config.frame_length, config.frame_step
    chunk = tf.reshape(tf.cast(chunk, tf.float32), [-1])
    buffered = tf.cast(buffered, tf.int32)
    frames_done = tf.cast(frames_done, tf.int32)
    end_of_stream = tf.cast(end_of_stream, tf.bool)
    samples = tf.concat([buffer[:buffered], chunk], axis=0)
    total = tf.shape(samples)[0]
    # The whole-utterance rule for audio shorter than one window: pad it to one window, one frame.
    short_and_ending = tf.logical_and(end_of_stream, tf.equal(frames_done, 0))
    shortfall = tf.where(short_and_ending, tf.maximum(length - total, 0), 0)
    samples = tf.pad(samples, [[0, shortfall]])
    total = total + shortfall
    frames = tf.where(total >= length, 1 + tf.maximum(total - length, 0) // step, 0)
    # With no complete window, one window of zeros keeps the FFT's input well formed; 0 frames kept.
    window = tf.pad(samples, [[0, tf.maximum(length - total, 0)]])
    features = _log_mel_frames(window[:tf.maximum((frames - 1) * step + length, length)], config)
    # GATHER, not a slice: a STRIDED_SLICE output of 0 rows cannot be read back from LiteRT
    # ("Invalid tensor size", docs/measured.md).
    features = tf.gather(features, tf.range(frames))
    consumed = frames * step
    new_buffered = tf.where(end_of_stream, 0, total - consumed)   # the end of a stream drops its tail
    left = samples[consumed:consumed + new_buffered]
    new_buffer = tf.pad(left, [[0, length - 1 - new_buffered]])
    return features, new_buffer, new_buffered, frames_done + frames
