"""`Recognizer`: run an exported DSNN .tflite at any level with LiteRT, no TensorFlow needed.

Detokenizes with the token pieces stored in the file's ``dsnn`` metadata (no sentencepiece), so
the .tflite is the only file a device needs.

Example:
    >>> recognizer = Recognizer("model.tflite", num_threads=1)
    >>> [level["sparsity"] for level in recognizer.levels]
    [0.0, 0.5, 0.7, 0.9]
    >>> recognizer.transcribe("utt.wav", level=2)
    'yes no go'
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional, Union

import numpy as np

from tflite.audio import AudioError, load_audio, resample, to_mono_float
from tflite.metadata import DsnnMetadata, MetadataError, parse


def prime_all_signatures(interpreter) -> None:
    """Invokes every signature once on a tiny input, then resets variable tensors.

    ``reset_all_variables()`` fails on subgraphs that were never allocated, so files whose state
    must be reset by the caller (single-level exports) are primed once after loading.
    """
    signatures = interpreter.get_signature_list()
    for key in signatures:
        runner = interpreter.get_signature_runner(key)
        details = runner.get_input_details()
        inputs = {}
        for name, detail in details.items():
            shape = [max(int(d), 1) for d in detail["shape_signature"]] if len(detail["shape_signature"]) else []
            inputs[name] = np.zeros(shape, detail["dtype"])
        runner(**inputs)
    interpreter.reset_all_variables()


class RecognizerError(ValueError):
    """A bad level or input for `Recognizer`."""


@dataclasses.dataclass(frozen=True)
class Recognition:
    """One utterance's result.

    Attributes:
        text: The transcript.
        tokens: Greedy CTC token ids.
        log_probs: float32 ``[out_frames, vocab_size + 1]`` per-frame log posteriors.
        level: The level that ran.
    """

    text: str
    tokens: list
    log_probs: np.ndarray
    level: int


class Recognizer:
    """Loads an exported .tflite once and transcribes at any of its sparsity levels.

    Args:
        path: The .tflite file written by ``dsnn-export``.
        num_threads: Interpreter threads. Defaults to 1.

    Raises:
        FileNotFoundError: the file does not exist.
        MetadataError: the file is not a DSNN export (no ``dsnn`` metadata).
    """

    def __init__(self, path: Union[str, pathlib.Path], num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if int(num_threads) < 1:
            raise RecognizerError(f"num_threads must be >= 1, got {num_threads}")
        self.metadata: DsnnMetadata = parse(self.path.read_bytes(), str(self.path))
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=int(num_threads))
        signatures = self._interpreter.get_signature_list()
        if "recognize" not in signatures:
            raise MetadataError(f"{self.path}: no 'recognize' signature (has {sorted(signatures)})")
        self._runner = self._interpreter.get_signature_runner("recognize")
        self._features_runner = (self._interpreter.get_signature_runner("recognize_features")
                                 if "recognize_features" in signatures else None)
        # Single-level baseline files keep fused-LSTM state between invokes; reset it ourselves.
        self._reset_after_invoke = not self.metadata.raw["export"].get("state_reset_in_graph", True)
        if self._reset_after_invoke:
            prime_all_signatures(self._interpreter)

    @property
    def levels(self) -> list[dict]:
        """The metadata's level table (sparsity, nonzero weights, multiply-adds, dev WER)."""
        return self.metadata.levels

    @property
    def num_levels(self) -> int:
        return self.metadata.num_levels

    @property
    def sample_rate(self) -> int:
        return self.metadata.sample_rate

    def _check_level(self, level) -> int:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise RecognizerError(f"level must be an int in 0..{self.num_levels - 1}, got {level!r}")
        if not 0 <= int(level) < self.num_levels:
            raise RecognizerError(
                f"level {int(level)} out of range: this model has levels 0..{self.num_levels - 1} "
                f"(sparsities {self.metadata.sparsities})")
        return int(level)

    def _invoke(self, runner, **inputs) -> dict:
        result = runner(**inputs)
        if self._reset_after_invoke:
            self._interpreter.reset_all_variables()
        return result

    def recognize(self, audio_or_path, level: int = 0, sample_rate: Optional[int] = None) -> Recognition:
        """Runs one utterance.

        Args:
            audio_or_path: A file path (any libsndfile format, any rate) or a float array
                ``[num_samples]`` (or ``[num_samples, channels]``).
            level: Sparsity level index. Defaults to 0 (densest).
            sample_rate: Rate of an array input; resampled if it differs from the model's.
                Defaults to the model's rate.

        Returns:
            A `Recognition`.

        Raises:
            RecognizerError: bad level. FileNotFoundError / AudioError: unreadable input.
        """
        from dsnn_keras.decoding import ids_to_text

        level = self._check_level(level)
        if isinstance(audio_or_path, (str, pathlib.Path)):
            samples = load_audio(audio_or_path, self.sample_rate)
        else:
            samples = to_mono_float(audio_or_path)
            samples = resample(samples, sample_rate or self.sample_rate, self.sample_rate)
        out = self._invoke(self._runner, audio=samples, sparsity_level=np.int32(level))
        tokens = [int(t) for t in out["tokens"]]
        return Recognition(text=ids_to_text(tokens, self.metadata.pieces), tokens=tokens,
                           log_probs=np.array(out["log_probs"]), level=int(out["level"]))

    def transcribe(self, audio_or_path, level: int = 0, sample_rate: Optional[int] = None) -> str:
        """Returns the transcript of one utterance (see `recognize`)."""
        return self.recognize(audio_or_path, level, sample_rate).text


__all__ = ["AudioError", "Recognition", "Recognizer", "RecognizerError", "prime_all_signatures"]
