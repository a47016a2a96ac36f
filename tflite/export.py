"""Export K per-level Keras models to ONE .tflite file whose sparsity level is a signature input.

The core (`export_levels`) takes plain tf_keras models (one per level, e.g. from
``dsnn_keras.strip_nested(model, i)``) plus metadata; `export_run` does the same from a run
directory written by ``dsnn-train``. The layout of the levels in the file is an export design
(`tflite.designs`: the options select one, `resolve_design`); every design's result is converted
with builtin TFLite ops only, rewritten by `tflite.rewrites`, checked level by level against Keras
on the final bytes, and carries a ``dsnn`` metadata entry.

Example:
    >>> report = export_levels([m0, m1, m2, m3], "model.tflite", sparsities=(0, .5, .7, .9),
    ...                        feature_config=FeatureConfig(), pieces=pieces, blank_id=len(pieces))
    >>> report.size_bytes, report.verification[0]["max_abs_diff"]
    (1534208, 2.4e-07)
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
from typing import Any, Optional, Sequence, Union

import numpy as np

from dsnn_keras import fileio
from dsnn_keras.versions import package_versions
from tflite import signatures as sig
from tflite.convert import check_builtin_ops
from tflite.designs import DESIGN_CHOICES, DesignRequest, ExportDesign, get_design, resolve_design
from tflite.errors import ExportError, WerGateError
from tflite.frontend import run_frontend_tflite
from tflite.rewrites import disable_lstm_cell_clip, keep_frontend_float, share_quantized_lstm_weights
# Names that moved, still importable from here (callers, tests, bench/): design names and LSTM kernel
# names (tflite.designs), the frontend reference (tflite.frontend).
from tflite.designs import (DESIGN_FC_LOOP, DESIGN_FUSED, DESIGN_SHARED, DESIGN_SINGLE,  # noqa: F401
                            DESIGN_SLICED, KERNEL_FC_LOOP, KERNEL_FUSED_LSTM)
from tflite.frontend import frontend_constants, frontend_tflite  # noqa: F401

MIN_TOKEN_ERRORS_ALLOWED = 2   # the token gate never refuses a level for 2 or fewer differing tokens
# Quantized files: recognize(audio) may differ from recognize_features(float frontend(audio)) by up to
# this share of the level's own quantization error (features path vs Keras). Dynamic-range int8
# quantizes activations per invoke, so float-rounding differences (1e-6) between the in-graph and the
# reference frontend can move a value across a rounding step: on the AN4 model 8e-2 at two levels,
# against a quantization error of 0.46-0.80 (and exactly 0 at the other two). A quantized filterbank
# (the issue-15 bug) differs by far more than its file's share (tested on the tiny model: 0.09-0.82
# against a quantization error of 5e-7).
QUANTIZED_FRONTEND_SHARE = 0.5
QUANTIZE_CHOICES = ("none", "dynamic-int8", "float16")
STREAM_CHOICES = ("auto", "on", "off")
REALISATION_MASKED = "masked"   # full-width layers with the level's zeros stored in them
REALISATION_SLICED = "sliced"   # only the units the level keeps: physically smaller layers
LATENCY_PROBE_FRAMES = 300      # 3 s of features: the clip length the metadata's relative_latency uses


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to convert.

    Args:
        quantize: ``"none"`` (float32), ``"dynamic-int8"`` (dynamic-range int8 weights) or
            ``"float16"`` (float16 weights). Defaults to "none".
        sparse_speed: Express the LSTMs of the sparse levels as FULLY_CONNECTED ops in a while loop
            and store sparse weights (``EXPERIMENTAL_SPARSITY``) so zeros can save time; otherwise
            fused LSTM kernels (dense speed at every level). Defaults to False.
        sparse_speed_min_sparsity: With ``sparse_speed``, the levels whose sparsity is at least
            this use the FC loop; less sparse levels keep the fused LSTM kernel, because TFLite's
            sparse FC kernel is slower than the dense one below ~60 % zeros (docs/export.md).
            Defaults to 0.6.
        verify: Check every level of the written bytes against Keras. Defaults to True.
        tolerance: Largest allowed max |Δ log-posterior| for float32 exports, and for every export
            between ``recognize(audio)`` and ``recognize_features`` fed the float frontend's
            features (the in-graph frontend stays float32 in quantized files; for those the bound
            is the larger of this and half the level's own quantization error,
            ``QUANTIZED_FRONTEND_SHARE``). Defaults to 1e-3.
        max_token_error_rate: Largest allowed token edit distance of ``recognize(audio)``'s greedy
            tokens from Keras' (the Keras model on the float frontend), over all verification
            clips of a level, as a fraction of Keras' tokens (2 differing tokens are always allowed,
            so a near-tie on a short synthetic clip does not refuse a good file; give real speech
            with ``verify_audio`` for a meaningful gate). The gate that catches a quantized file
            transcribing worse than its float model. Defaults to 0.1.
        design: ``"if_tree"`` (per-level constant weights under an ``IF`` tree; a unit-granularity
            run's levels are sliced to the units they keep, ``if_tree_sliced``) or ``"shared"``
            (one stored copy of the weights + level codes, `tflite.shared_weights`; weight and
            block runs only); with ``sparse_speed`` and the unit-run case this picks a registered
            design through `tflite.designs.DESIGN_TABLE`. Defaults to "if_tree".
        stream: ``"auto"`` (add the ``stream`` signature when every level's model can run chunk by
            chunk: a causal front-end, `dsnn_keras.streaming`), ``"on"`` (required: refuse a model
            that cannot) or ``"off"``. Single-level baseline files never stream. Defaults to "auto".
        measure_latency: Time every level on the export machine (1 thread, a 3 s feature input,
            interleaved rounds, medians) and record ``relative_latency`` (to level 0) per level
            in the metadata, so an app can pick a level by budget. Defaults to True.
    """

    quantize: str = "none"
    sparse_speed: bool = False
    sparse_speed_min_sparsity: float = 0.6
    verify: bool = True
    tolerance: float = 1e-3
    design: str = "if_tree"
    max_token_error_rate: float = 0.1
    measure_latency: bool = True
    stream: str = "auto"

    def __post_init__(self) -> None:
        if self.stream not in STREAM_CHOICES:
            raise ValueError(f"ExportOptions.stream must be one of {STREAM_CHOICES}, got {self.stream!r}")
        if self.design not in DESIGN_CHOICES:
            raise ValueError(f"ExportOptions.design must be one of {DESIGN_CHOICES}, got {self.design!r}")
        if self.design == "shared" and self.sparse_speed:
            raise ValueError("ExportOptions: design 'shared' and sparse_speed cannot be combined")
        if self.quantize not in QUANTIZE_CHOICES:
            raise ValueError(f"ExportOptions.quantize must be one of {QUANTIZE_CHOICES}, got {self.quantize!r}")
        if not 0.0 <= self.sparse_speed_min_sparsity <= 1.0:
            raise ValueError("ExportOptions.sparse_speed_min_sparsity must be in [0, 1], got "
                             f"{self.sparse_speed_min_sparsity}")
        if not self.tolerance > 0:
            raise ValueError(f"ExportOptions.tolerance must be > 0, got {self.tolerance}")
        if not 0.0 <= self.max_token_error_rate <= 1.0:
            raise ValueError(f"ExportOptions.max_token_error_rate must be in [0, 1], got {self.max_token_error_rate}")


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What was written.

    Attributes:
        path: The .tflite file (a `pathlib.Path`, or the URL string of a remote one).
        size_bytes: Its size.
        metadata: The ``dsnn`` metadata object written into it.
        verification: One dict per level (max_abs_diff, tokens_equal, repeat_identical, ...).
    """

    path: fileio.AnyPath
    size_bytes: int
    metadata: dict
    verification: list


def check_wer_gate(eval_results: Optional[dict], num_levels: int, max_wer: float) -> list[float]:
    """Refuses export when any level's dev WER exceeds ``max_wer``.

    Args:
        eval_results: Parsed ``eval.json`` (``{"split", "levels": [{"level", "wer", ...}]}``) or None.
        num_levels: Levels the model has; each must have a WER.
        max_wer: Largest allowed WER (a fraction, e.g. 0.3 = 30 %).

    Returns:
        The WER of each level.

    Raises:
        WerGateError: no evaluation, a level without a WER, or a WER above ``max_wer``.
    """
    if eval_results is None:
        raise WerGateError(
            f"--max_wer {max_wer} given but the run has no eval.json; run dsnn-eval RUN_DIR first")
    by_level = {int(entry["level"]): entry for entry in eval_results.get("levels", [])}
    wers = []
    for level in range(num_levels):
        if level not in by_level or by_level[level].get("wer") is None:
            raise WerGateError(f"eval.json has no WER for level {level}; rerun dsnn-eval")
        wers.append(float(by_level[level]["wer"]))
    bad = [f"level {i}: WER {w:.4f}" for i, w in enumerate(wers) if w > max_wer]
    if bad:
        raise WerGateError(
            f"refusing to export: {', '.join(bad)} exceeds --max_wer {max_wer} "
            f"(split {eval_results.get('split', '?')!r})")
    return wers


def probe_audio(sample_rate: int, seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal (harmonics with a moving pitch, bursts, noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.1 * t) ** 2
    signal = 0.15 * envelope * voiced + 0.01 * rng.standard_normal(t.shape)
    return signal.astype(np.float32)


def _min_frames(model, bins: int) -> int:
    for frames in range(1, 65):
        try:
            out = model(np.zeros([1, frames, bins], np.float32), training=False)
        except Exception:  # noqa: BLE001 - too short for a valid conv; try longer
            continue
        if int(np.shape(out)[1]) >= 1:
            return frames
    raise ExportError("the model gives no output frame for any input of 1..64 frames")


def _validate_models(models, sparsities, feature_config, pieces, blank_id, sliced: bool = False) -> None:
    if not models:
        raise ExportError("no models given; need one per sparsity level")
    if len(models) != len(sparsities):
        raise ExportError(f"{len(models)} models but {len(sparsities)} sparsities; need one each")
    if list(sparsities) != sorted(sparsities):
        raise ExportError(f"sparsities must be non-decreasing, got {list(sparsities)}")
    if blank_id != len(pieces):
        raise ExportError(f"blank_id must be len(pieces) = {len(pieces)} (blank last), got {blank_id}")
    reference = None
    for i, model in enumerate(models):
        in_shape = tuple(model.input_shape)
        out_shape = tuple(model.output_shape)
        if len(in_shape) != 3 or in_shape[-1] != feature_config.num_mel_bins:
            raise ExportError(
                f"level {i}: model input must be [batch, frames, {feature_config.num_mel_bins}], got {in_shape}")
        if len(out_shape) != 3 or out_shape[-1] != blank_id + 1:
            raise ExportError(
                f"level {i}: model output must be [batch, frames, {blank_id + 1}] (vocab + blank), "
                f"got {out_shape}")
        signature = ([type(layer).__name__ for layer in model.layers] if sliced
                     else [tuple(w.shape) for w in model.get_weights()])
        if reference is None:
            reference = signature
        elif signature != reference:
            raise ExportError(f"level {i}: {'layers' if sliced else 'weight shapes'} differ from level 0; "
                              "models must share an architecture")


def _keras_reference(model, features: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    logits = model(features[np.newaxis], training=False)
    return tf.nn.log_softmax(logits, axis=-1).numpy()[0]


def token_edit_distance(reference: Sequence[int], hypothesis: Sequence[int]) -> int:
    """Substitutions + deletions + insertions turning one token-id sequence into the other (jiwer)."""
    import jiwer

    reference = [str(int(t)) for t in reference]
    hypothesis = [str(int(t)) for t in hypothesis]
    if not reference:
        return len(hypothesis)
    if not hypothesis:
        return len(reference)
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return int(out.substitutions + out.deletions + out.insertions)


def _unexplained_token_flips(reference: np.ndarray, actual: np.ndarray, margin: float) -> int:
    """Frames whose argmax differs although Keras' top-2 gap exceeds ``margin``."""
    ref_best, act_best = reference.argmax(-1), actual.argmax(-1)
    top2 = np.sort(reference, axis=-1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    return int(np.sum((ref_best != act_best) & (gap > margin)))


def verify_levels(data: bytes, models: Sequence, feature_config, options: ExportOptions,
                  audio: Sequence[np.ndarray], reset_state: bool = False) -> list[dict]:
    """Runs every level of the converted bytes against its Keras model.

    For each level and each probe clip: ``recognize_features`` on the same features Keras sees
    (model parity), ``recognize`` on the audio (end to end, frontend included), each invoked twice
    on one interpreter to prove invokes are independent, and ``recognize_features`` fed the float
    frontend's features (`frontend_tflite`). Every export: ``recognize(audio)`` within
    ``options.tolerance`` of ``recognize_features(float frontend(audio))`` (the in-graph frontend is
    float32, quantized or not; a quantized file within the larger of that and
    ``QUANTIZED_FRONTEND_SHARE`` of the level's quantization error, since per-invoke activation
    quantization turns float-rounding differences into rounding steps), and ``recognize(audio)``'s
    greedy tokens within ``options.max_token_error_rate`` (token edit distance) of Keras'. Float exports must also be
    within ``options.tolerance`` of Keras with the same greedy tokens; quantized exports must be
    closer to their own level's Keras output than to any other level's (catches quantization
    breaking a level).
    ``reset_state`` resets the interpreter's variable tensors after every invoke (for
    single-level files, whose fused LSTM state otherwise persists).

    Returns:
        One dict per level: ``max_abs_diff`` (features path), ``max_abs_diff_audio``,
        ``audio_vs_float_frontend``, ``mean_abs_diff``, ``token_flips``, ``token_error_rate_audio``,
        ``reference_tokens``, ``repeat_identical``, ``nearest_level``.

    Raises:
        ExportError: naming the level and the failed check.
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from dsnn_keras.decoding import greedy_ctc_decode
    from dsnn_keras.frontend import log_mel_spectrogram

    interpreter = Interpreter(model_content=data)
    if reset_state:
        from tflite.runtime import prime_all_signatures

        prime_all_signatures(interpreter)
    features_runner = interpreter.get_signature_runner(sig.RECOGNIZE_FEATURES)
    audio_runner = interpreter.get_signature_runner(sig.RECOGNIZE)
    clips = [np.asarray(a, np.float32) for a in audio]
    feats = [log_mel_spectrogram(tf.constant(a), feature_config).numpy() for a in clips]
    frontend_feats = run_frontend_tflite(feature_config, clips)
    references = [[_keras_reference(m, f) for f in feats] for m in models]
    def run(runner, **inputs):
        result = runner(**inputs)
        if reset_state:
            interpreter.reset_all_variables()
        return result

    results = []
    for level in range(len(models)):
        max_diff = max_diff_audio = mean_diff = audio_vs_frontend = 0.0
        flips = token_errors = reference_tokens = 0
        identical = True
        own_distance = 0.0
        other_distance = np.full(len(models), 0.0)
        for clip_index, (clip, feat) in enumerate(zip(clips, feats)):
            outputs = [run(features_runner, **{sig.FEATURES: feat, sig.SPARSITY_LEVEL: np.int32(level)}) for _ in range(2)]
            audio_outputs = [run(audio_runner, **{sig.AUDIO: clip, sig.SPARSITY_LEVEL: np.int32(level)}) for _ in range(2)]
            for first, second in (outputs, audio_outputs):
                identical &= bool(np.array_equal(first[sig.LOG_PROBS], second[sig.LOG_PROBS])
                                  and np.array_equal(first[sig.TOKENS], second[sig.TOKENS]))
            got = outputs[0][sig.LOG_PROBS]
            want = references[level][clip_index]
            if got.shape != want.shape:
                raise ExportError(f"level {level}: TFLite log_probs shape {got.shape} != Keras {want.shape}")
            diff = np.abs(got - want)
            max_diff = max(max_diff, float(diff.max()))
            mean_diff = max(mean_diff, float(diff.mean()))
            max_diff_audio = max(max_diff_audio, float(np.abs(audio_outputs[0][sig.LOG_PROBS] - want).max()))
            # The file's own frontend must be the float frontend, whatever the quantization.
            via_float_frontend = run(features_runner, **{sig.FEATURES: frontend_feats[clip_index],
                                                         sig.SPARSITY_LEVEL: np.int32(level)})
            if via_float_frontend[sig.LOG_PROBS].shape != audio_outputs[0][sig.LOG_PROBS].shape:
                raise ExportError(f"level {level}: recognize(audio) gives {audio_outputs[0][sig.LOG_PROBS].shape} "
                                  f"frames but recognize_features(frontend(audio)) "
                                  f"{via_float_frontend[sig.LOG_PROBS].shape}")
            audio_vs_frontend = max(audio_vs_frontend, float(np.abs(
                audio_outputs[0][sig.LOG_PROBS] - via_float_frontend[sig.LOG_PROBS]).max()))
            keras_tokens = greedy_ctc_decode(want[np.newaxis], None, want.shape[-1] - 1)[0]
            token_errors += token_edit_distance(keras_tokens, audio_outputs[0][sig.TOKENS])
            reference_tokens += len(keras_tokens)
            flips += _unexplained_token_flips(want, got, 2 * options.tolerance)
            own_distance += float(diff.mean())
            other_distance += [float(np.abs(got - references[j][clip_index]).mean()) for j in range(len(models))]
            if int(outputs[0][sig.LEVEL]) != level:
                raise ExportError(f"level {level}: the model reports running level {int(outputs[0][sig.LEVEL])}")
        nearest = int(np.argmin(other_distance))
        token_error_rate = token_errors / max(reference_tokens, 1)
        entry = {"level": level, "max_abs_diff": max_diff, "max_abs_diff_audio": max_diff_audio,
                 "audio_vs_float_frontend": audio_vs_frontend, "mean_abs_diff": mean_diff,
                 "token_flips": flips, "token_error_rate_audio": token_error_rate,
                 "reference_tokens": reference_tokens, "repeat_identical": identical,
                 "nearest_level": nearest}
        results.append(entry)
        if not identical:
            raise ExportError(f"level {level}: two invokes of the same input differ (state leaks between invokes)")
        frontend_bound = (options.tolerance if options.quantize == "none"
                          else max(options.tolerance, QUANTIZED_FRONTEND_SHARE * max_diff))
        entry["audio_vs_float_frontend_bound"] = frontend_bound
        if audio_vs_frontend > frontend_bound:
            raise ExportError(
                f"level {level}: recognize(audio) differs from recognize_features(float frontend(audio)) by "
                f"max |Δ log-posterior| {audio_vs_frontend:.2e} > {frontend_bound:.2e}: the file's in-graph "
                "frontend is not the float frontend (was it quantized?)")
        # At least MIN_TOKEN_ERRORS_ALLOWED: on a few synthetic clips one near-tie flip is not a regression.
        if token_errors > max(options.max_token_error_rate * reference_tokens, MIN_TOKEN_ERRORS_ALLOWED):
            raise ExportError(
                f"level {level}: recognize(audio) tokens differ from Keras in {token_errors} of "
                f"{reference_tokens} ({token_error_rate:.1%} > {options.max_token_error_rate:.1%}, "
                "token edit distance over the verification clips)")
        if options.quantize == "none":
            if max_diff > options.tolerance:
                raise ExportError(
                    f"level {level}: max |Δ log-posterior| {max_diff:.2e} > tolerance {options.tolerance:.0e}")
            if flips:
                raise ExportError(f"level {level}: {flips} frame(s) decode to a different token than Keras")
        elif nearest != level and other_distance[nearest] < other_distance[level]:
            raise ExportError(
                f"level {level}: the {options.quantize} output is closer to Keras level {nearest} than to "
                f"level {level}; quantization broke the level selection")
    return results


def measure_level_latency(data: bytes, num_levels: int, bins: int, frames: int = LATENCY_PROBE_FRAMES,
                          rounds: int = 9) -> list[tuple[float, float]]:
    """``[(median ms, median ratio to level 0)]`` per level of ``recognize_features`` on a fixed
    ``[frames, bins]`` input: 1 thread, levels interleaved in shuffled order each round, every timed
    invoke after an untimed one, ratios taken within a round (so load on the machine cancels)."""
    import time

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data, num_threads=1)
    runner = interpreter.get_signature_runner(sig.RECOGNIZE_FEATURES)
    features = np.random.default_rng(0).normal(-4.0, 2.0, [frames, bins]).astype(np.float32)
    times = np.zeros([rounds, num_levels])
    order = np.random.default_rng(1)
    for level in range(num_levels):
        runner(**{sig.FEATURES: features, sig.SPARSITY_LEVEL: np.int32(level)})
    for r in range(rounds):
        for level in order.permutation(num_levels):
            runner(**{sig.FEATURES: features, sig.SPARSITY_LEVEL: np.int32(level)})
            start = time.perf_counter()
            runner(**{sig.FEATURES: features, sig.SPARSITY_LEVEL: np.int32(level)})
            times[r, level] = time.perf_counter() - start
    ratios = times / times[:, :1]
    return [(float(np.median(times[:, i]) * 1e3), float(np.median(ratios[:, i]))) for i in range(num_levels)]


def _level_entries(models, sparsities, feature_config, eval_results) -> tuple[list, Optional[dict]]:
    from tflite.cost import level_cost

    by_level = {}
    evaluation = None
    if eval_results:
        by_level = {int(e["level"]): e for e in eval_results.get("levels", [])}
        evaluation = {"split": eval_results.get("split"),
                      "num_utterances": next((e.get("num_utterances") for e in by_level.values()), None)}
        if eval_results.get("speakers"):   # dsnn-eval --speakers: the WERs are those speakers' only
            evaluation["speakers"] = list(eval_results["speakers"])
    entries = []
    for i, (model, sparsity) in enumerate(zip(models, sparsities)):
        cost = level_cost(model, feature_config)
        entries.append({"level": i, "sparsity": float(sparsity), **cost,
                        "dev_wer": by_level.get(i, {}).get("wer"), "dev_cer": by_level.get(i, {}).get("cer")})
    dense = entries[0]["macs_per_second"] or 1
    for entry in entries:
        entry["relative_macs"] = round(entry["macs_per_second"] / dense, 4)
    return entries, evaluation


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_temporaries(path: pathlib.Path) -> list[pathlib.Path]:
    """Removes ``.NAME.<pid>.*.tmp`` beside a local ``path`` left by writers that died (kill -9)."""
    import glob

    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid_text = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def _write_atomically(path: fileio.AnyPath, data: bytes) -> None:
    """Writes ``path`` through a temporary sibling and one rename: readers see the old or the new file.

    The temporary is named ``.NAME.<pid>.<random>.tmp`` (`dsnn_keras.fileio.atomic_write`). Locally,
    one that a killed writer left behind is removed by the next write of the same file; a remote
    (``gs://``) one is left (no process can be asked whether its writer is alive).
    """
    if fileio.is_local(path):
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(pathlib.Path(path))
    fileio.atomic_write(path, data)


def _stream_entry(state: Optional[Sequence]) -> Optional[dict]:
    """The metadata's ``stream`` entry for a file whose stream state is ``state`` (None: no stream)."""
    if state is None:
        return None
    size = sum(int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize for spec in state)
    return {"signature": sig.STREAM, "state": [spec.to_dict() for spec in state], "state_bytes": int(size),
            "start": "pass every state_* tensor as zeros",
            "end_of_stream": "1 on the last call: ends the utterance as recognize does and returns the all-zero state"}


STREAM_TOLERANCE = 1e-4         # a float file's stream vs recognize: max |Δ log-prob| (issue 17's bound)
STREAM_CHUNKS_S = (0.16, 0.05)   # verification streams every clip in chunks of these lengths ...
STREAM_RANDOM_SEED = 0           # ... and in random lengths (0 to 0.5 s)
# A quantized stream vs recognize on the built-in probe and silence (not speech: near-tie tokens):
# the loose bound that still refuses a stream that is broken, not one near tie flipped.
BUILTIN_STREAM_TOKEN_ERROR_RATE = 0.5


def _stream_clip(runner, audio: np.ndarray, sizes: Sequence[int], level: int) -> tuple[np.ndarray, list[int]]:
    from tflite.runtime import zero_stream_state

    state = zero_stream_state(runner)
    log_probs, tokens, start, call = [], [], 0, 0
    while True:
        size = int(sizes[call % len(sizes)])
        call += 1
        end = start + size >= len(audio)
        out = runner(**{sig.AUDIO: audio[start:start + size], sig.SPARSITY_LEVEL: np.int32(level),
                        sig.END_OF_STREAM: np.int32(end)}, **state)
        start += size
        log_probs.append(out[sig.LOG_PROBS])
        tokens += [int(t) for t in out[sig.TOKENS]]
        state = {name: out[name] for name in state}
        if end:
            return np.concatenate(log_probs), tokens


def verify_stream(data: bytes, num_levels: int, feature_config, options: ExportOptions,
                  audio: Sequence[np.ndarray], builtin_clips: int = 0) -> list[dict]:
    """Streams every clip through the ``stream`` signature at every level, against ``recognize``.

    Chunks of 160 ms, 50 ms and random lengths (0 to 0.5 s, empty chunks included). A float file must
    give ``recognize``'s log-probs within ``min(options.tolerance, STREAM_TOLERANCE)`` and the same
    tokens; a quantized file
    (whose stream path quantizes its activations per chunk, the fused kernel per utterance) must
    stay within ``options.max_token_error_rate`` of ``recognize``'s tokens on the real speech clips,
    and within the loose `BUILTIN_STREAM_TOKEN_ERROR_RATE` on the first ``builtin_clips`` clips (the
    built-in synthetic probe and silence), whose greedy tokens are near ties (the probe is not
    speech): on the AN4 int8 file of 2026-12-06 one of the probe's five tokens flipped at level 1 in
    each of the three chunkings (3 of the 18 tokens of probe and silence, 16.7 %), while on all 128
    dev utterances its streamed text equalled ``recognize``'s on 98.4-100 % per level.

    Args:
        data: The .tflite bytes.
        num_levels: Levels to stream.
        feature_config: The model's `FeatureConfig`.
        options: `ExportOptions` (tolerances, quantization).
        audio: Clips at the feature sample rate.
        builtin_clips: How many leading clips of ``audio`` are built-in (not speech). Defaults to 0.

    Returns:
        One dict per level: ``stream_max_abs_diff``, ``stream_token_errors``, ``stream_tokens`` (over
        the real clips), ``stream_token_errors_builtin``, ``stream_tokens_builtin`` and
        ``stream_token_gate`` (``"every clip"`` for a float file; for a quantized one ``"real clips"``,
        or ``"built-in clips (loose)"`` when no real clip was given).

    Raises:
        ExportError: naming the level, the chunking and the failed check.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    whole = interpreter.get_signature_runner(sig.RECOGNIZE)
    stream = interpreter.get_signature_runner(sig.STREAM)
    rate = feature_config.sample_rate
    rng = np.random.default_rng(STREAM_RANDOM_SEED)
    chunkings = [[max(int(seconds * rate), 1)] for seconds in STREAM_CHUNKS_S]
    chunkings.append([0, *rng.integers(0, rate // 2, size=15)])
    results = []
    if not 0 <= builtin_clips <= len(audio):
        raise ValueError(f"builtin_clips must be in [0, {len(audio)}] (the clips given), got {builtin_clips}")
    quantized = options.quantize != "none"
    real = len(audio) - builtin_clips
    for level in range(num_levels):
        max_diff, errors, total, builtin_errors, builtin_total = 0.0, 0, 0, 0, 0
        for clip_index, clip in enumerate(audio):
            builtin = clip_index < builtin_clips
            clip = np.asarray(clip, np.float32)
            reference = whole(**{sig.AUDIO: clip, sig.SPARSITY_LEVEL: np.int32(level)})
            want_tokens = [int(t) for t in reference[sig.TOKENS]]
            for sizes in chunkings:
                got, tokens = _stream_clip(stream, clip, sizes, level)
                label = f"level {level}: stream in chunks of {sizes[:3]}{'...' if len(sizes) > 3 else ''} samples"
                if got.shape != reference[sig.LOG_PROBS].shape:
                    raise ExportError(f"{label} gives {got.shape} log-probs, recognize {reference[sig.LOG_PROBS].shape}")
                max_diff = max(max_diff, float(np.abs(got - reference[sig.LOG_PROBS]).max()) if got.size else 0.0)
                if builtin:
                    builtin_errors += token_edit_distance(want_tokens, tokens)
                    builtin_total += len(want_tokens)
                else:
                    errors += token_edit_distance(want_tokens, tokens)
                    total += len(want_tokens)
                bound = min(options.tolerance, STREAM_TOLERANCE)
                if options.quantize == "none" and (max_diff > bound or tokens != want_tokens):
                    raise ExportError(f"{label}: differs from recognize (max |Δ| {max_diff:.2e} > {bound} "
                                      f"or tokens {tokens} != {want_tokens})")
        rate_errors = errors / max(total, 1)
        if errors > MIN_TOKEN_ERRORS_ALLOWED and rate_errors > options.max_token_error_rate:
            raise ExportError(f"level {level}: streamed tokens differ from recognize's by {rate_errors:.1%} "
                              f"(> {options.max_token_error_rate:.0%}) over the {real} real speech clip(s)")
        builtin_rate = builtin_errors / max(builtin_total, 1)
        if (quantized and builtin_errors > MIN_TOKEN_ERRORS_ALLOWED
                and builtin_rate > BUILTIN_STREAM_TOKEN_ERROR_RATE):
            raise ExportError(f"level {level}: streamed tokens differ from recognize's by {builtin_rate:.1%} on the "
                              f"built-in synthetic clip and silence (> {BUILTIN_STREAM_TOKEN_ERROR_RATE:.0%}, the "
                              "loose bound for clips that are not speech): the stream is broken")
        gate = "every clip" if not quantized else ("real clips" if real else "built-in clips (loose)")
        results.append({"stream_max_abs_diff": max_diff, "stream_token_errors": errors, "stream_tokens": total,
                        "stream_token_errors_builtin": builtin_errors, "stream_tokens_builtin": builtin_total,
                        "stream_token_gate": gate})
    return results


def export_levels(models: Sequence, out_path, *, sparsities: Sequence[float], feature_config,
                  pieces: Sequence[str], blank_id: int, options: ExportOptions = ExportOptions(),
                  eval_results: Optional[dict] = None, source: Optional[dict] = None,
                  verify_audio: Optional[Sequence[np.ndarray]] = None,
                  single_level: bool = False, single_level_of: int = 0,
                  units: Optional[Sequence[dict]] = None,
                  design: Union[str, ExportDesign, None] = None,
                  unit_indices: Optional[Sequence[dict]] = None, decoder: Optional[tuple] = None) -> ExportReport:
    """Writes ONE .tflite that runs any of the given levels, selected by ``sparsity_level``.

    The layout is an export design (`tflite.designs`): the one the options select
    (`tflite.designs.resolve_design`), or ``design``. Every design's file then gets the same
    rewrites (fused LSTMs' cell clip off; a quantized file's frontend back to float32), operator
    check, metadata, verification and atomic write.

    Args:
        models: One plain tf_keras model per level (same architecture), input raw log-mel
            ``[1, frames, num_mel_bins]``, output logits ``[1, out_frames, len(pieces) + 1]``.
        out_path: Where to write the file (parent directories are created; written atomically).
        sparsities: Sparsity of each level (non-decreasing).
        feature_config: The `FeatureConfig` of the in-graph frontend.
        pieces: SentencePiece piece of each token id (stored for on-device detokenizing).
        blank_id: CTC blank id; must be ``len(pieces)``.
        options: `ExportOptions`. Defaults to float32, fused LSTMs, verified.
        eval_results: Parsed ``eval.json`` for per-level dev WER in the metadata. Defaults to None.
        source: Provenance for the metadata (run_dir, step, checkpoint). Defaults to None.
        verify_audio: Clips (float32 at the feature sample rate) to verify with; a synthetic clip
            plus silence are always used. Defaults to None.
        single_level: Export ``models[0]`` alone, the usual way (no ``IF``; the fused LSTM state
            then persists between invokes and callers must reset it). For baselines. Defaults to False.
        single_level_of: With ``single_level``, the DSNN level index the file stands for (recorded
            in the metadata for the benchmark). Defaults to 0.
        units: Per level, ``{layer: units kept}`` of a unit-granularity run whose ``models`` are
            the levels' narrow models (`dsnn_keras.narrow_model`): the levels may then differ in
            shape, the design is ``if_tree_sliced`` and each level entry records its units and
            ``realisation: sliced``. Defaults to None (same-shape models).
        design: A registered design name (`tflite.designs.design_names`) or an `ExportDesign` to
            use instead of the one the options select. Defaults to None.

        unit_indices: Per level, ``{layer: indices of the kept units}`` of a unit run's sliced
            levels (`dsnn_keras.sparsity.kept_unit_indices`), so the ``stream`` signature can keep
            every level's state in one layout. Defaults to None (sliced levels then do not stream).
        decoder: ``(DecoderSettings, LmBundle or None)`` of a run tuned with ``dsnn-eval --tune``: the
            settings go into the ``decoder`` metadata entry, the LM into the ``dsnn_lm`` buffer.
            Defaults to None (no decoder entry: runtimes decode greedily).

    Returns:
        An `ExportReport`.

    Raises:
        ExportError: invalid models, a combination no design takes, an unknown design, conversion
            failure, non-builtin ops or failed verification.
    """
    from tflite import metadata as metadata_lib

    sliced = units is not None
    if sliced and len(units) != len(models):
        raise ExportError(f"units: {len(units)} entries for {len(models)} levels")
    if design is None:
        chosen = resolve_design(options, sparsities, single_level=single_level, units=units)
    else:
        chosen = get_design(design) if isinstance(design, str) else design
    _validate_models(models, sparsities, feature_config, pieces, blank_id, sliced=sliced)
    chosen.check(models, options, units)
    min_frames = _min_frames(models[0], feature_config.num_mel_bins)
    request = DesignRequest(models=tuple(models), sparsities=tuple(sparsities), feature_config=feature_config,
                            blank_id=blank_id, min_frames=min_frames, options=options,
                            units=tuple(units) if sliced else None, single_level_of=single_level_of,
                            unit_indices=tuple(unit_indices) if sliced and unit_indices is not None else None)
    built = chosen.build(request)
    if options.stream == "on" and built.stream_state is None and not single_level:
        raise ExportError(f"--stream on: the {chosen.name} design has no stream signature")
    # Every design's fused LSTMs get the converter's cell_clip=10, which Keras never applies.
    data, _ = disable_lstm_cell_clip(built.data)
    frontend_restored = 0
    if options.quantize != "none":
        data, frontend_restored = keep_frontend_float(data, feature_config)
    stream_weights_shared = 0
    if options.quantize == "dynamic-int8" and built.stream_state is not None:
        data, stream_weights_shared = share_quantized_lstm_weights(data)
    op_names = check_builtin_ops(data)
    levels, evaluation = _level_entries(models, sparsities, feature_config, eval_results)
    for i, entry in enumerate(levels):
        entry["realisation"] = REALISATION_SLICED if sliced else REALISATION_MASKED
        if sliced:
            entry["units"] = {name: int(count) for name, count in units[i].items()}
    if options.measure_latency and len(models) > 1:
        latency = measure_level_latency(data, len(models), feature_config.num_mel_bins)
        for entry, (ms, relative) in zip(levels, latency):
            entry["latency_ms_export_machine"] = round(ms, 3)
            entry["relative_latency"] = round(relative, 3)
    described = dict(built.export)
    raw = {
        "format_version": metadata_lib.FORMAT_VERSION,
        "signatures": sig.signature_doc(feature_config.num_mel_bins, feature_config.sample_rate, len(models),
                                        stream=built.stream_state is not None),
        "stream": _stream_entry(built.stream_state),
        "levels": levels,
        "level_clamping": f"sparsity_level < 0 runs level 0; > {len(models) - 1} runs level {len(models) - 1}",
        "evaluation": evaluation,
        "tokens": {"pieces": list(pieces), "blank_id": int(blank_id), "word_boundary": "\u2581"},
        "feature_config": feature_config.to_dict(),
        "export": {"design": chosen.name, "quantize": options.quantize, "sparse_speed": options.sparse_speed,
                   "sparse_speed_min_sparsity": options.sparse_speed_min_sparsity if options.sparse_speed else None,
                   "lstm_kernels": described.pop("lstm_kernels"),
                   "min_frames": min_frames, "state_reset_in_graph": described.pop("state_reset_in_graph"),
                   "frontend": "float32" if options.quantize == "none" or frontend_restored else options.quantize,
                   "frontend_constants_restored": frontend_restored,
                   **({"stream_weights_shared": stream_weights_shared} if built.stream_state is not None else {}),
                   "single_level_of": described.pop("single_level_of"),
                   "operators": op_names, "verification": [], **described},
        "source": source,
        "versions": package_versions(["dsnn", "tensorflow", "tf-keras", "ai-edge-litert"]),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    final = metadata_lib.embed(data, raw)
    if options.verify:
        sample_rate = feature_config.sample_rate
        builtin = [probe_audio(sample_rate), np.zeros(sample_rate // 2, np.float32)]
        clips = builtin + list(verify_audio or [])
        verification = verify_levels(final, models, feature_config, options, clips,
                                     reset_state=not chosen.state_reset_in_graph)
        if built.stream_state is not None:
            stream_checks = verify_stream(final, len(models), feature_config, options, clips,
                                          builtin_clips=len(builtin))
            for entry, stream_check in zip(verification, stream_checks):
                entry.update(stream_check)
        raw["export"]["verification"] = verification
        # Durations at the model's rate: a clip decoded at the wrong rate shows here.
        raw["export"]["verification_audio_s"] = [round(len(clip) / sample_rate, 3) for clip in clips]
        final = metadata_lib.embed(data, raw)
    if decoder is not None:
        # The word LM and lexicon travel as a second metadata buffer; the dsnn entry's "decoder" names it.
        final = metadata_lib.embed_decoder(final, raw, *decoder)
    out_path = fileio.as_path(out_path)
    _write_atomically(out_path, final)
    return ExportReport(path=out_path, size_bytes=len(final), metadata=raw,
                        verification=raw["export"]["verification"])


def export_run(run_dir, out_path, *, options: ExportOptions = ExportOptions(),
               max_wer: Optional[float] = None, verify_audio: Optional[Sequence[np.ndarray]] = None,
               verify_audio_files: Sequence = (),
               single_level_dir=None, single_levels: Optional[Sequence[int]] = None, eval_path=None,
               log: Any = None, with_decoder: bool = True, decoder_dir=None) -> ExportReport:
    """Exports a trained run directory (``dsnn-train`` output) to one .tflite.

    Args:
        run_dir: The run directory.
        out_path: The .tflite to write.
        options: `ExportOptions`.
        max_wer: If set, refuse (`WerGateError`) unless every level's dev WER in eval.json is <= it;
            checked before any conversion work. Defaults to None.
        verify_audio: Extra verification clips (float32 at the run's feature sample rate). Defaults
            to None.
        verify_audio_files: Audio files to verify with too, decoded and resampled to the run's
            feature sample rate (`tflite.audio.load_audio`; real held-out speech is what catches a
            file that transcribes worse than its Keras model). Defaults to none.
        single_level_dir: If set, also write each level exported alone the usual way
            (``level_<i>.tflite``: fused LSTMs, no IF, same quantization) for ``dsnn-bench``.
            Defaults to None.
        single_levels: Which levels to write into ``single_level_dir``. Defaults to all.
        eval_path: The ``eval.json`` to gate on and record in the metadata, instead of
            ``RUN_DIR/eval.json`` (e.g. one written with ``dsnn-eval --out``). Defaults to None.
        log: Callable taking a progress string. Defaults to None.
        with_decoder: Carry the run's tuned decoder (``RUN_DIR/decoder.json``, its LM and lexicon) in
            the file, if it has one. Defaults to True.
        decoder_dir: Read ``decoder.json`` and its LM from this directory instead of the run
            (``dsnn-eval --tune --decoder_dir DIR``); it must hold a ``decoder.json``. Defaults to None.

    Returns:
        An `ExportReport` for the multi-level file.
    """
    from dsnn_keras import strip_nested
    from dsnn_keras.run_dir import load_run

    say = log or (lambda message: None)
    run = load_run(run_dir)
    if eval_path is not None:
        eval_path = fileio.as_path(eval_path)
        if not fileio.isfile(eval_path):
            raise FileNotFoundError(f"--eval: no such file: {eval_path}")
        try:
            run = dataclasses.replace(run, eval_results=json.loads(fileio.read_text(eval_path)))
        except ValueError as error:
            raise ExportError(f"{eval_path}: not a valid eval.json ({error})") from error
    if run.eval_results and run.eval_results.get("speakers") is not None:
        speakers = run.eval_results["speakers"]
        if not isinstance(speakers, list) or not all(isinstance(item, str) for item in speakers):
            raise ExportError(f"{eval_path or fileio.join(run.run_dir, 'eval.json')}: speakers must be a list of "
                              f"strings, got {speakers!r}")
        say(f"note: the evaluation read ({eval_path or fileio.join(run.run_dir, 'eval.json')}) covers only speaker(s) "
            f"{', '.join(run.eval_results['speakers'])} of its split (dsnn-eval --speakers); the file's dev_wer and "
            "the WER gate describe those")
    if max_wer is not None:
        wers = check_wer_gate(run.eval_results, len(run.levels), max_wer)
        say(f"WER gate passed: {', '.join(f'{w:.3f}' for w in wers)} <= {max_wer}")
    _single_levels_wanted(single_levels, len(run.levels))   # fail before any conversion work
    if verify_audio_files:
        verify_audio = list(verify_audio or []) + [_load_verify_audio(path, run.feature_config.sample_rate)
                                                   for path in verify_audio_files]
    units = unit_indices = None
    if run.granularity == "unit" and options.design == "shared":
        raise ExportError(f"{run.run_dir}: --design shared does not take a unit-granularity run (it stores one "
                          "full-width copy, and a unit level also masks biases, which that design keeps "
                          "shared); export it with the default design: each level sliced, smaller and faster")
    if run.granularity == "unit":
        from dsnn_keras.sparsity.units import kept_unit_indices, narrow_model, units_kept

        kept = units_kept(run.model)
        units = [{name: counts[level] for name, counts in kept.items()} for level in range(len(run.levels))]
        unit_indices = [{name: indices.tolist() for name, indices in kept_unit_indices(run.model, level).items()}
                        for level in range(len(run.levels))]
        models = [narrow_model(run.model, level) for level in range(len(run.levels))]
    else:
        models = [strip_nested(run.model, level) for level in range(len(run.levels))]
    say(f"converting {len(models)} levels {list(run.levels)} (quantize={options.quantize}, "
        f"sparse_speed={options.sparse_speed}{', sliced units' if units else ''})")
    source = {"run_dir": str(run.run_dir), "step": run.step, "checkpoint": str(run.checkpoint)}
    decoder_home = run_dir if decoder_dir is None else decoder_dir
    decoder = run_decoder(decoder_home) if with_decoder else None
    if decoder is None and with_decoder and decoder_dir is not None:
        raise ExportError(f"--decoder_dir {decoder_dir}: no decoder.json there (write one with "
                          f"dsnn-eval --tune --decoder_dir {decoder_dir})")
    if decoder is not None:
        from dsnn_keras.beam_search import BeamSearchError

        try:
            decoder[0].check_levels(len(run.levels))
        except BeamSearchError as error:
            raise ExportError(f"{fileio.join(decoder_home, 'decoder.json')}: {error}") from None
    if decoder is not None:
        say(f"carrying the tuned {decoder[0].decoder} decoder ({fileio.join(decoder_home, 'decoder.json')}"
            f"{', LM ' + str(decoder[0].lm_path(decoder_home)) if decoder[1] is not None else ''})")
    report = export_levels(models, out_path, sparsities=run.levels, feature_config=run.feature_config,
                           pieces=run.pieces, blank_id=run.blank_id, options=options,
                           eval_results=run.eval_results, source=source, verify_audio=verify_audio,
                           units=units, unit_indices=unit_indices, decoder=decoder)
    loose = [v for v in report.verification if v.get("stream_token_gate") == "built-in clips (loose)"]
    if loose:
        say(f"note: the {options.quantize} 'stream' signature was compared with recognize on the built-in synthetic "
            f"clip and silence only ({sum(v['stream_token_errors_builtin'] for v in loose)} of "
            f"{sum(v['stream_tokens_builtin'] for v in loose)} tokens differ; gated loosely, at "
            f"{BUILTIN_STREAM_TOKEN_ERROR_RATE:.0%}: their tokens are near ties); pass --verify_audio with a few "
            "real speech files to gate its tokens at --max_token_error_rate")
    if single_level_dir is not None:
        export_single_levels(models, single_level_dir, sparsities=run.levels,
                             feature_config=run.feature_config, pieces=run.pieces, blank_id=run.blank_id,
                             options=options, source=source, log=say, levels=single_levels,
                             verify_audio=verify_audio)
    return report


def _load_verify_audio(path, sample_rate: int) -> np.ndarray:
    """`tflite.audio.load_audio`, also for a remote file (read with `tf.io.gfile`, then decoded)."""
    from tflite.audio import load_audio

    if fileio.is_local(path):
        return load_audio(path, sample_rate)
    from dsnn_keras.audio import AudioDecodeError, decode
    from tflite.audio import AudioError

    if not fileio.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        return decode(str(path), sample_rate, data=fileio.read_bytes(path))
    except AudioDecodeError as error:
        raise AudioError(f"{path}: {error.reason}: {error.detail}", error.reason) from None


def run_decoder(run_dir) -> Optional[tuple]:
    """``(DecoderSettings, LmBundle or None)`` of a run's ``decoder.json`` (``dsnn-eval --tune``), or None."""
    from dsnn_keras.beam_search import DecoderSettings
    from dsnn_keras.ngram_lm import LmBundle

    settings = DecoderSettings.read(run_dir)
    if settings is None:
        return None
    lm_path = settings.lm_path(run_dir)
    return settings, (LmBundle.read_dir(lm_path) if lm_path is not None else None)


def _single_levels_wanted(levels: Optional[Sequence[int]], num_levels: int) -> list[int]:
    """The sorted levels to export alone (all when None); an unknown level is an `ExportError`."""
    wanted = list(range(num_levels)) if levels is None else sorted(set(levels))
    bad = [level for level in wanted if not 0 <= level < num_levels]
    if bad:
        raise ExportError(f"single-level baselines: no level {bad}; the run has levels 0..{num_levels - 1}")
    return wanted


def export_single_levels(models: Sequence, out_dir, *, sparsities: Sequence[float], feature_config,
                         pieces: Sequence[str], blank_id: int, options: ExportOptions = ExportOptions(),
                         source: Optional[dict] = None, log: Any = None,
                         levels: Optional[Sequence[int]] = None,
                         verify_audio: Optional[Sequence[np.ndarray]] = None) -> list[pathlib.Path]:
    """Writes ``level_<i>.tflite`` per level: each level exported alone, the usual way (the baseline).

    Uses fused LSTMs and no ``IF`` (``sparse_speed`` is ignored); the files carry ``dsnn``
    metadata with ``state_reset_in_graph: false``, so runtimes reset LSTM state after each invoke.

    Returns:
        The written paths.
    """
    say = log or (lambda message: None)
    out_dir = fileio.as_path(out_dir)
    single_options = dataclasses.replace(options, sparse_speed=False)
    paths = []
    wanted = _single_levels_wanted(levels, len(models))
    for level, (model, sparsity) in enumerate(zip(models, sparsities)):
        if level not in wanted:
            continue
        say(f"single-level baseline {level} (sparsity {sparsity})")
        path = fileio.join(out_dir, f"level_{level}.tflite")
        export_levels([model], path, sparsities=[sparsity], feature_config=feature_config, pieces=pieces,
                      blank_id=blank_id, options=single_options, source=source, single_level=True,
                      single_level_of=level, verify_audio=verify_audio)
        paths.append(path)
    return paths
