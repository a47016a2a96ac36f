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
import math
import pathlib
import threading
import time
from typing import Optional, Union

import numpy as np

from dsnn_keras.errors import DsnnError
from tflite.audio import AudioError, load_audio, resample, to_mono_float
from tflite.metadata import DsnnMetadata, MetadataError, parse, read_lm, read_model_bytes
from tflite.signatures import AUDIO, LEVEL, LOG_PROBS, RECOGNIZE, RECOGNIZE_FEATURES, SPARSITY_LEVEL, TOKENS


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


def zero_stream_state(runner) -> dict:
    """The start of a stream: an all-zero array for every ``state_*`` input of a ``stream`` runner."""
    from tflite.signatures import STATE_PREFIX

    return {name: np.zeros([int(d) for d in detail["shape_signature"]], detail["dtype"])
            for name, detail in runner.get_input_details().items() if name.startswith(STATE_PREFIX)}


def load_interpreter(path: Union[str, pathlib.Path], num_threads: int = 1, model_content: Optional[bytes] = None):
    """A LiteRT interpreter for ``path``; MetadataError (one line naming the file) if LiteRT refuses it.

    LiteRT verifies the whole flatbuffer here, so a truncated or corrupt file fails at load time.
    A local file is opened by path (LiteRT maps it); a remote one (``gs://...``, `dsnn_keras.fileio`)
    is read into memory and loaded from its bytes (``model_content``), as are the bytes given.

    Args:
        path: The .tflite file (named in errors).
        num_threads: Interpreter threads. Defaults to 1.
        model_content: The file's bytes, when the caller has read them already. Defaults to None
            (read a remote ``path``; open a local one by path).
    """
    from ai_edge_litert.interpreter import Interpreter

    from dsnn_keras import fileio

    if model_content is None and not fileio.is_local(path):
        model_content = read_model_bytes(path)
    source = {"model_path": str(path)} if model_content is None else {"model_content": model_content}
    try:
        return Interpreter(**source, num_threads=int(num_threads))
    except (ValueError, RuntimeError) as error:
        detail = " ".join(str(error).split())[:200]
        raise MetadataError(f"{path}: LiteRT cannot load the model ({detail})") from None


class RecognizerError(DsnnError, ValueError):
    """A bad level, argument or input for `Recognizer`."""


@dataclasses.dataclass(frozen=True)
class Recognition:
    """One utterance's result.

    Attributes:
        text: The transcript.
        tokens: Token ids of the decoding (greedy CTC, or the beam search's best path).
        log_probs: float32 ``[out_frames, vocab_size + 1]`` per-frame log posteriors.
        level: The level that ran.
        decoder_seconds: Wall-clock seconds of the beam search (0.0 for greedy).
    """

    text: str
    tokens: list
    log_probs: np.ndarray
    level: int
    decoder_seconds: float = 0.0


DEFAULT_WINDOW_SECONDS = 30.0


class Recognizer:
    """Loads an exported .tflite once and transcribes at any of its sparsity levels.

    **Threads.** One `Recognizer` may be shared by any number of threads: each call holds the
    recognizer's lock while it uses the interpreter (a LiteRT interpreter is not thread-safe: shared
    unlocked, it crashes or returns garbage), so calls on one recognizer run one at a time, each with
    the result it would have had alone. For parallel throughput create one `Recognizer` per thread
    (each holds its own interpreter and arena); ``num_threads`` parallelizes inside one call.

    **Long audio.** Audio longer than ``window_seconds`` (default 30 s, the longest utterance
    ``dsnn-prepare`` keeps for training) runs in consecutive windows of that length, so the memory a
    call needs is bounded by one window's arena plus 4 bytes per sample of input (and the returned
    log-posteriors), whatever the length. The windows overlap by one analysis window minus one hop, so
    the features and the number of output frames are exactly those of one pass; what changes at each
    boundary is the model's context: the recurrent state restarts from zero and the subsampling
    convolution sees padding across it (a word spanning a boundary may be misrecognized). Tokens are
    the greedy CTC path over the concatenated log-posteriors (repeats merged across boundaries).

    **Decoders.** ``decoder="greedy"`` takes the file's greedy ``tokens``. ``decoder="beam"`` runs the
    CTC prefix beam search (`dsnn_keras.beam_search`, flashlight-text; no TensorFlow) over the
    signature's ``log_probs``, with the word LM and lexicon the file carries (``dsnn_lm`` buffer) and
    its tuned weights (metadata ``decoder``; a level with its own settings in ``decoder.levels``
    decodes with those), or lexicon-free without LM if the file has none.
    ``"auto"`` (the default) is the file's ``decoder.default``: beam for files exported from a run
    tuned with ``dsnn-eval --tune``, greedy otherwise.

    Args:
        path: The .tflite file written by ``dsnn-export``: a local path, or a URL `tf.io.gfile` reaches
            (``gs://...``; read once into memory and loaded from its bytes).
        num_threads: Interpreter threads. Defaults to 1.
        window_seconds: Longest audio run in one invoke; longer audio is cut in windows of this length
            (rounded down to a multiple of 16 hops). Defaults to 30.0.
        decoder: ``"auto"``, ``"greedy"`` or ``"beam"``. Defaults to "auto".
        beam: Overrides of the file's beam settings, e.g. ``{"beam_width": 8}`` (`BeamSearchConfig`
            fields). Defaults to none.
        hotwords: Phrases the beam search favours (needs the file's LM). Defaults to none.
        hotword_weight: Bonus per hot-phrase word (log-probability units). Defaults to 0.0.

    Raises:
        FileNotFoundError: the file does not exist.
        MetadataError: the file is not a usable DSNN export (unreadable, truncated or corrupt, no or
            invalid ``dsnn`` metadata, or a model LiteRT cannot load); one line naming the file.
        RecognizerError: a bad ``num_threads``, ``window_seconds``, decoder or beam setting.
    """

    def __init__(self, path: Union[str, pathlib.Path], num_threads: int = 1,
                 window_seconds: float = DEFAULT_WINDOW_SECONDS, decoder: str = "auto",
                 beam: Optional[dict] = None, hotwords=(), hotword_weight: float = 0.0):
        from dsnn_keras import fileio

        self.path = fileio.as_path(path)   # a Path, or a gs://-style URL string
        remote = not fileio.is_local(self.path)
        if not remote and not self.path.is_file():
            raise FileNotFoundError(f"model file not found: {self.path}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
            raise RecognizerError(f"num_threads must be an int >= 1, got {num_threads!r}")
        model_bytes = read_model_bytes(self.path)
        self.metadata: DsnnMetadata = parse(model_bytes, str(self.path))
        self.beams = self._beam_decoder(model_bytes, decoder, beam, hotwords, hotword_weight)
        # Windows hold a multiple of 16 hops, so any time subsampling up to 16x splits evenly.
        quantum = 16 * self.metadata.frame_step
        if (isinstance(window_seconds, bool) or not isinstance(window_seconds, (int, float))
                or not math.isfinite(window_seconds) or window_seconds * self.sample_rate < quantum):
            raise RecognizerError(f"window_seconds must be a number >= {quantum / self.sample_rate} "
                                  f"(16 hops), got {window_seconds!r}")
        self.window_samples = int(window_seconds * self.sample_rate) // quantum * quantum
        # A remote file is loaded from the bytes read above (one download); a local one by path.
        self._interpreter = load_interpreter(self.path, int(num_threads), model_bytes if remote else None)
        signatures = self._interpreter.get_signature_list()
        if RECOGNIZE not in signatures:
            raise MetadataError(f"{self.path}: no '{RECOGNIZE}' signature (has {sorted(signatures)})")
        self._lock = threading.Lock()
        self._runner = self._interpreter.get_signature_runner(RECOGNIZE)
        self._features_runner = (self._interpreter.get_signature_runner(RECOGNIZE_FEATURES)
                                 if RECOGNIZE_FEATURES in signatures else None)
        classes = self._runner.get_output_details().get(LOG_PROBS, {}).get("shape_signature", [])
        if len(classes) and int(classes[-1]) > 0 and int(classes[-1]) != len(self.metadata.pieces) + 1:
            raise MetadataError(f"{self.path}: the model outputs {int(classes[-1])} classes but the metadata "
                                f"has {len(self.metadata.pieces)} token pieces (+1 blank)")
        # Single-level baseline files keep fused-LSTM state between invokes; reset it ourselves.
        self._reset_after_invoke = not self.metadata.state_reset_in_graph
        if self._reset_after_invoke:
            prime_all_signatures(self._interpreter)

    def _beam_decoder(self, model_bytes: bytes, decoder: str, overrides: Optional[dict], hotwords, hotword_weight):
        """The `BeamDecoder` the ``decoder`` argument asks for, or None for greedy."""
        if decoder not in ("auto", "greedy", "beam"):
            raise RecognizerError(f"decoder must be 'auto', 'greedy' or 'beam', got {decoder!r}")
        entry = self.metadata.decoder
        if decoder == "auto":
            decoder = entry["default"] if entry else "greedy"
        if decoder == "greedy":
            if overrides or hotwords:
                raise RecognizerError("beam settings and hot words need decoder='beam'")
            return None
        from dsnn_keras.beam_search import BeamDecoder, BeamSearchConfig, BeamSearchError, LevelDecoders, \
            level_beams_from_dict

        try:
            overrides = dict(overrides or {})
            values = {**(entry["beam"] if entry else {}), **overrides}
            config = BeamSearchConfig.from_dict(values, where=f"{self.path}: beam settings")
            default = BeamDecoder(self.metadata.pieces, self.metadata.blank_id, config,
                                  lm=read_lm(model_bytes, self.metadata, str(self.path)),
                                  hotwords=hotwords, hotword_weight=hotword_weight)
            level_beams = (level_beams_from_dict(entry["levels"], BeamSearchConfig.from_dict(entry["beam"]),
                                                 where=f"{self.path}: decoder.levels")
                           if entry and entry.get("levels") else None)
            return LevelDecoders(default, level_beams, overrides)
        except BeamSearchError as error:
            raise RecognizerError(str(error)) from None

    @property
    def decoder(self) -> str:
        """``"beam"`` or ``"greedy"``: what `recognize` decodes with."""
        return "greedy" if self.beams is None else "beam"

    @property
    def beam(self):
        """The default level's `dsnn_keras.beam_search.BeamDecoder` (None for greedy); `beam_for` a level's."""
        return None if self.beams is None else self.beams.default

    def beam_for(self, level: int):
        """The `dsnn_keras.beam_search.BeamDecoder` level ``level`` decodes with (the file's
        ``decoder.levels`` entry for it, else ``decoder.beam``), or None for greedy."""
        return None if self.beams is None else self.beams[self.check_level(level)]

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

    def check_level(self, level) -> int:
        """Returns ``level`` as an int, or raises `RecognizerError` if it is not one of the file's levels."""
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise RecognizerError(f"level must be an int in 0..{self.num_levels - 1}, got {level!r}")
        if not 0 <= int(level) < self.num_levels:
            raise RecognizerError(
                f"level {int(level)} out of range: this model has levels 0..{self.num_levels - 1} "
                f"(sparsities {self.metadata.sparsities})")
        return int(level)

    def _invoke(self, runner, **inputs) -> dict:
        # One call at a time per interpreter; the state reset of single-level files belongs to the call.
        with self._lock:
            result = runner(**inputs)
            if self._reset_after_invoke:
                self._interpreter.reset_all_variables()
        return result

    def _windows(self, samples: np.ndarray):
        """Consecutive windows of ``window_samples`` hops, each with the next frame's overlap."""
        overlap = max(self.metadata.frame_length - self.metadata.frame_step, 0)
        if samples.size <= self.window_samples + overlap:
            yield samples
            return
        # A window starts only where at least one whole analysis frame fits (start <= N - frame_length):
        # a shorter tail would be zero-padded to a frame the single pass does not have.
        for start in range(0, samples.size - self.metadata.frame_length + 1, self.window_samples):
            yield samples[start:start + self.window_samples + overlap]

    def recognize(self, audio_or_path, level: int = 0, sample_rate: Optional[int] = None) -> Recognition:
        """Runs one utterance (thread-safe; long audio in windows, see the class docstring).

        Args:
            audio_or_path: A file path or ``gs://``-style URL (WAV, FLAC or OGG at any rate: the decoder policy of
                ``dsnn-prepare``) or a real, finite array ``[num_samples]`` or ``[num_samples, channels]``
                (channels last and averaged; ``[channels, num_samples]`` is refused: pass ``.T``).
            level: Sparsity level index. Defaults to 0 (densest).
            sample_rate: Rate of an array input; resampled if it differs from the model's.
                Defaults to the model's rate.

        Returns:
            A `Recognition`.

        Raises:
            RecognizerError: bad level. FileNotFoundError / AudioError: a missing or refused input
                (``AudioError.reason`` is the reject reason ``dsnn-prepare`` would record).
        """
        from dsnn_keras.decoding import greedy_ctc_decode, ids_to_text

        level = self.check_level(level)
        if isinstance(audio_or_path, (str, pathlib.Path)):
            samples = load_audio(audio_or_path, self.sample_rate)
        else:
            samples = to_mono_float(audio_or_path)
            samples = resample(samples, self.sample_rate if sample_rate is None else sample_rate,
                               self.sample_rate)
        outputs = [self._invoke(self._runner, **{AUDIO: window, SPARSITY_LEVEL: np.int32(level)})
                   for window in self._windows(samples)]
        if len(outputs) == 1:
            log_probs = np.array(outputs[0][LOG_PROBS])
            tokens = [int(t) for t in outputs[0][TOKENS]]
        else:
            log_probs = np.concatenate([out[LOG_PROBS] for out in outputs])
            tokens = [int(t) for t in greedy_ctc_decode(log_probs[None], None, self.metadata.blank_id)[0]]
        if self.beams is not None:
            start = time.perf_counter()
            with self._lock:   # a BeamDecoder is not thread-safe
                result = self.beams[level].decode(log_probs)
            return Recognition(text=result.text, tokens=result.tokens, log_probs=log_probs,
                               level=int(outputs[0][LEVEL]), decoder_seconds=time.perf_counter() - start)
        try:
            text = ids_to_text(tokens, self.metadata.pieces)
        except ValueError as error:
            raise MetadataError(f"{self.path}: the model emitted a token the metadata cannot spell ({error})") from None
        return Recognition(text=text, tokens=tokens, log_probs=log_probs, level=int(outputs[0][LEVEL]))

    def transcribe(self, audio_or_path, level: int = 0, sample_rate: Optional[int] = None) -> str:
        """Returns the transcript of one utterance (see `recognize`)."""
        return self.recognize(audio_or_path, level, sample_rate).text

    def stream(self, level: int = 0) -> "RecognizerStream":
        """Starts a live stream through the file's ``stream`` signature (see `RecognizerStream`).

        Raises:
            RecognizerError: a bad level, or a file without a ``stream`` signature (exported from a
                model whose front-end looks ahead).
        """
        return RecognizerStream(self, level)


class RecognizerStream:
    """One live utterance: feed audio chunks as they arrive, read the text so far, switch level.

    The state lives in this object (explicit ``state_*`` tensors of the file's ``stream``
    signature), so any number of streams can share one `Recognizer` and its interpreter; each call
    holds the recognizer's lock. One stream is not meant to be fed from two threads at once.
    Chunks are 1-D samples at the model's rate (float in [-1, 1] or integer PCM, as `recognize`
    takes), any length (0 included). For a float32 file and an utterance up to ``window_seconds``
    long, the result equals `Recognizer.recognize` on the whole utterance at the same level (tested
    to 1e-4 on the log-probs, identical tokens); `recognize` cuts longer audio into windows that
    restart the recurrent state, the stream does not. A quantized file's stream quantizes its LSTMs
    differently from the whole-utterance kernel: close, checked at export within the token gate.
    With the recognizer's beam decoder the search runs incrementally on each chunk's log-probs
    (flashlight's ``decode_step``); the text after a chunk is the current best hypothesis (it may
    still change), and `finish` gives the same result as the beam search over the whole utterance.
    The search keeps the settings of the level the stream started at (a file tuned per level has
    one per level): `set_level` switches the model's level, not the search's LM weight.

    Args:
        recognizer: The loaded `Recognizer`.
        level: The level to start at. Defaults to 0.

    Example:
        >>> stream = recognizer.stream(level=0)
        >>> for chunk in microphone_chunks():        # e.g. 160 ms each
        ...     print(stream.accept(chunk))          # the text so far
        ...     if battery_saver_on(): stream.set_level(3)
        >>> stream.finish()
        'yes no go'
    """

    def __init__(self, recognizer: Recognizer, level: int = 0):
        signatures = recognizer._interpreter.get_signature_list()   # pylint: disable=protected-access
        if "stream" not in signatures:
            raise RecognizerError(f"{recognizer.path}: no 'stream' signature (this export has {sorted(signatures)}); "
                                  "export a causal model to stream")
        self._recognizer = recognizer
        self._runner = recognizer._interpreter.get_signature_runner("stream")   # pylint: disable=protected-access
        self._state = zero_stream_state(self._runner)
        self.level = recognizer.check_level(level)
        self.tokens: list[int] = []
        self._log_probs: list[np.ndarray] = []
        self.finished = False
        # The beam search runs incrementally on each chunk's log-probs (flashlight's decode_step).
        # The stream keeps the start level's decoder settings: one search runs the whole utterance.
        self._beam = recognizer.beams[self.level].stream() if recognizer.beams is not None else None
        self._beam_text = ""

    def set_level(self, level: int) -> None:
        """Runs the following chunks at ``level`` (the state carries over)."""
        self.level = self._recognizer.check_level(level)

    @property
    def log_probs(self) -> np.ndarray:
        """float32 ``[frames so far, vocab + 1]``."""
        classes = len(self._recognizer.metadata.pieces) + 1
        return np.concatenate(self._log_probs) if self._log_probs else np.zeros([0, classes], np.float32)

    @property
    def text(self) -> str:
        from dsnn_keras.decoding import ids_to_text

        if self._beam is not None:
            return self._beam_text
        try:
            return ids_to_text(self.tokens, self._recognizer.metadata.pieces)
        except ValueError as error:
            raise MetadataError(f"{self._recognizer.path}: the model emitted a token the metadata cannot spell "
                                f"({error})") from None

    def _call(self, chunk, end: bool) -> str:
        if self.finished:
            raise RecognizerError("this stream is finished; start a new one with Recognizer.stream()")
        if np.ndim(chunk) != 1:
            raise RecognizerError(f"a stream chunk must be 1-D mono samples, got shape {np.shape(chunk)}")
        # As recognize: int16 PCM scaled to [-1, 1], NaN/inf refused (AudioError).
        chunk = to_mono_float(chunk, "stream chunk") if np.size(chunk) else np.zeros([0], np.float32)
        out = self._recognizer._invoke(self._runner, audio=chunk, sparsity_level=np.int32(self.level),   # pylint: disable=protected-access
                                       end_of_stream=np.int32(end), **self._state)
        self._log_probs.append(np.array(out["log_probs"]))
        self._state = {name: np.array(out[name]) for name in self._state}
        if self._beam is None:
            self.tokens.extend(int(t) for t in out["tokens"])
        else:
            with self._recognizer._lock:   # pylint: disable=protected-access
                self._beam.accept(self._log_probs[-1])
                result = self._beam.finish() if end else self._beam.partial()
            self.tokens, self._beam_text = list(result.tokens), result.text
        self.finished = end
        return self.text

    def accept(self, chunk) -> str:
        """Feeds one chunk (1-D samples at the model's rate: float in [-1, 1] or integer PCM); returns
        the text so far.

        Raises:
            RecognizerError: a finished stream or a chunk that is not 1-D. AudioError: NaN/inf samples.
        """
        return self._call(chunk, end=False)

    def finish(self, chunk=()) -> str:
        """Feeds the last chunk (optional) and ends the utterance; returns the final text."""
        return self._call(chunk, end=True)


__all__ = ["AudioError", "DEFAULT_WINDOW_SECONDS", "load_interpreter", "Recognition", "Recognizer", "RecognizerError",
           "RecognizerStream", "prime_all_signatures", "zero_stream_state"]
