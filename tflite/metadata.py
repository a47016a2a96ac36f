"""The ``dsnn`` metadata entry of an exported .tflite: UTF-8 JSON readable without TensorFlow.

The schema (``format_version`` 1) is `METADATA_FIELDS`: one `MetadataField` per key (its path,
JSON type, whether `validate` requires it, and its meaning). ``docs/export.md``'s schema table is
generated from it (`schema_markdown`; ``tests/test_tflite_metadata.py`` checks the two agree and
that a real export writes no key the table lacks). `DsnnMetadata`'s accessors read these keys.

Example:
    >>> meta = read_metadata("model.tflite")
    >>> [level["sparsity"] for level in meta.levels]
    [0.0, 0.5, 0.7, 0.9]
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Optional, Union

from dsnn_keras.errors import DsnnError
from tflite import flatbuffer, rewrites

METADATA_NAME = "dsnn"
LM_METADATA_NAME = "dsnn_lm"   # the beam decoder's word LM + lexicon (gzip JSON, dsnn_keras.ngram_lm.LmBundle)
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MetadataField:
    """One key of the ``dsnn`` metadata.

    Args:
        path: Dotted path; ``levels[].sparsity`` is a key of every ``levels`` entry.
        type: JSON type(s) in words, e.g. ``"number | null"``.
        meaning: What it holds.
        required: `validate` refuses a file without it.
    """

    path: str
    type: str
    meaning: str
    required: bool = False


METADATA_FIELDS: tuple[MetadataField, ...] = (
    MetadataField("format_version", "int", f"Schema version; this reader understands {FORMAT_VERSION}.", True),
    MetadataField("signatures", "object", "Inputs and outputs of `recognize`, `recognize_features` (and `stream`), in words."),
    MetadataField("stream", "object | null", "Files with the `stream` signature (docs/streaming.md); null otherwise."),
    MetadataField("stream.signature", "string", "The signature key, `stream`."),
    MetadataField("stream.state", "list of objects", "Every `state_*` tensor: `{name, shape, dtype}`, the same at every level."),
    MetadataField("stream.state_bytes", "int", "Size of one stream's state."),
    MetadataField("stream.start", "string", "How to start a stream (all-zero state)."),
    MetadataField("stream.end_of_stream", "string", "What `end_of_stream = 1` does."),
    MetadataField("levels", "list of objects", "One entry per sparsity level, densest first (index = level).", True),
    MetadataField("levels[].level", "int", "Level index (the `sparsity_level` input)."),
    MetadataField("levels[].sparsity", "number in [0, 1)", "Fraction of the prunable weights the level masks.", True),
    MetadataField("levels[].total_weights", "int", "Weights of the costed layers."),
    MetadataField("levels[].nonzero_weights", "int", "Of those, the weights the level keeps."),
    MetadataField("levels[].macs_per_second", "int", "Multiply-adds over nonzero weights per second of audio."),
    MetadataField("levels[].relative_macs", "number", "`macs_per_second` over level 0's."),
    MetadataField("levels[].dev_wer", "number | null", "The level's WER in the eval.json given to the export (null without one)."),
    MetadataField("levels[].dev_cer", "number | null", "The level's CER in that eval.json (null without one)."),
    MetadataField("levels[].realisation", "string", "`sliced` (the branch holds only the kept units) or `masked` (full width, zeros)."),
    MetadataField("levels[].units", "object", "Sliced levels only: units kept per layer."),
    MetadataField("levels[].latency_ms_export_machine", "number", "Multi-level files only: the level's measured latency (ms) on the export machine."),
    MetadataField("levels[].relative_latency", "number", "Multi-level files only: that latency over level 0's."),
    MetadataField("level_clamping", "string", "How an out-of-range `sparsity_level` is clamped."),
    MetadataField("evaluation", "object | null", "`{split, num_utterances}` of the eval.json the WERs come from (and `speakers` when it covered only some: `dsnn-eval --speakers`)."),
    MetadataField("tokens", "object", "The output vocabulary.", True),
    MetadataField("tokens.pieces", "list of strings", "SentencePiece piece of every token id.", True),
    MetadataField("tokens.blank_id", "int", "The CTC blank's id (= the number of pieces: the last output).", True),
    MetadataField("tokens.word_boundary", "string", "The piece prefix that starts a word (`\u2581`)."),
    MetadataField("feature_config", "object", "The in-graph frontend's `FeatureConfig.to_dict()` (`sample_rate` required).", True),
    MetadataField("export", "object", "How the file was made.", True),
    MetadataField("export.design", "string", "`if_tree_fused_lstm`, `if_tree_fc_loop`, `if_tree_sliced`, `shared_weights_cached` or `single_level`."),
    MetadataField("export.quantize", "string", "`none`, `dynamic-int8` or `float16`."),
    MetadataField("export.sparse_speed", "bool", "Whether `--sparse_speed` was given."),
    MetadataField("export.sparse_speed_min_sparsity", "number | null", "With `--sparse_speed`: the least sparse level that uses the FC loop."),
    MetadataField("export.lstm_kernels", "list of strings | null", "`fused_lstm` or `fc_loop` per level (null for the shared design)."),
    MetadataField("export.min_frames", "int", "Fewest feature frames an invoke accepts."),
    MetadataField("export.state_reset_in_graph", "bool", "False for single-level files: the caller resets the LSTM state after each invoke."),
    MetadataField("export.frontend", "string", "Precision of the frontend's constants (`float32` unless quantized with them)."),
    MetadataField("export.frontend_constants_restored", "int", "Frontend constants a quantized export put back to float32."),
    MetadataField("export.stream_weights_shared", "int", "Files with a stream: int8 stream weight tensors pointed at the fused LSTM's copy (tflite.rewrites.share_quantized_lstm_weights)."),
    MetadataField("export.single_level_of", "int | null", "For a single-level baseline file: the level of the DSNN it was exported from."),
    MetadataField("export.operators", "list of strings", "The builtin operators the file uses."),
    MetadataField("export.shared_weights", "object", "Shared design only: storage, coded tensors and weights, folded splits."),
    MetadataField("export.verification", "list of objects", "Per level, the export's check against Keras (differences, token flips) and, with a stream, against `recognize` (`stream_max_abs_diff`, `stream_token_errors`/`stream_tokens` over the real clips, `stream_token_errors_builtin`/`stream_tokens_builtin`, `stream_token_gate`)."),
    MetadataField("export.verification_audio_s", "list of numbers", "Duration of each verification clip at the model's rate."),
    MetadataField("decoder", "object | null", "Files exported from a run with a tuned beam decoder (`dsnn-eval --tune`): its settings and LM; absent otherwise (greedy)."),
    MetadataField("decoder.default", "string", "The decoder `tflite.Recognizer(decoder=\"auto\")` uses: `beam` or `greedy`."),
    MetadataField("decoder.beam", "object", "`BeamSearchConfig`: `beam_width`, `lm_weight`, `word_bonus`, `token_beam`, `beam_threshold`, `lexicon`, `blank_skip` and `token_min_logp` (each absent when off, and in older files)."),
    MetadataField("decoder.levels", "object", "Per-level settings `{\"3\": BeamSearchConfig, ...}` (keys: level indices) from `dsnn-eval --tune --tune_level all`: the search at that level uses them; a level not listed uses `decoder.beam`. Absent when every level uses `decoder.beam` (and in older files)."),
    MetadataField("decoder.lm_entry", "string | null", "Name of the metadata buffer holding the word LM and lexicon (`dsnn_lm`: gzip JSON `{format, arpa, lexicon, info}`), null without LM."),
    MetadataField("decoder.lm_bytes", "int", "Size of that buffer."),
    MetadataField("decoder.lm_order", "int | null", "The LM's n-gram order."),
    MetadataField("decoder.lexicon_words", "int | null", "Words in the lexicon (the only words the beam decoder forms)."),
    MetadataField("decoder.tuned", "object | null", "`{split, level, best_wer, greedy_wer, num_utterances}` of the tuning (`level`: the default's), with `levels`: `[{level, best_wer, greedy_wer}]` when tuned per level."),
    MetadataField("source", "object | null", "`{run_dir, step, checkpoint}` of the trained run."),
    MetadataField("versions", "object", "Package versions of the export (`dsnn`, `tensorflow`, `tf_keras`, `ai_edge_litert`).", True),
    MetadataField("created", "string", "Export time, ISO 8601 (UTC)."),
)
_REQUIRED = tuple(f.path for f in METADATA_FIELDS if f.required and "." not in f.path and "[" not in f.path)


def schema_markdown() -> str:
    """The Markdown table of `METADATA_FIELDS` (the schema section of ``docs/export.md``)."""
    lines = ["| key | type | required | meaning |", "|---|---|---|---|"]
    for field in METADATA_FIELDS:
        kind, meaning = (text.replace("|", "\\|") for text in (field.type, field.meaning))
        lines.append(f"| `{field.path}` | {kind} | {'yes' if field.required else ''} | {meaning} |")
    return "\n".join(lines) + "\n"


def undocumented_keys(raw: dict) -> list[str]:
    """Keys of a metadata object (top level, ``levels[]``, ``tokens``, ``export``) not in `METADATA_FIELDS`."""
    known = {field.path for field in METADATA_FIELDS}
    found = set(raw)
    for entry in raw.get("levels") or []:
        found |= {f"levels[].{key}" for key in entry}
    for section in ("tokens", "export", "stream", "decoder"):
        if isinstance(raw.get(section), dict):
            found |= {f"{section}.{key}" for key in raw[section]}
    return sorted(found - known)


class MetadataError(DsnnError, ValueError):
    """The file is not a usable DSNN export: unreadable, not a TFLite flatbuffer (or a truncated or
    corrupt one), or without a valid ``dsnn`` metadata entry. The message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class DsnnMetadata:
    """Parsed ``dsnn`` metadata (built by `validate`, so every accessor below returns its documented type).

    Attributes:
        raw: The whole JSON object.
    """

    raw: dict

    @property
    def levels(self) -> list[dict]:
        return list(self.raw["levels"])

    @property
    def num_levels(self) -> int:
        return len(self.raw["levels"])

    @property
    def sparsities(self) -> list[float]:
        return [float(level["sparsity"]) for level in self.raw["levels"]]

    @property
    def pieces(self) -> list[str]:
        return list(self.raw["tokens"]["pieces"])

    @property
    def blank_id(self) -> int:
        return int(self.raw["tokens"]["blank_id"])

    @property
    def feature_config(self) -> dict:
        return dict(self.raw["feature_config"])

    @property
    def sample_rate(self) -> int:
        return int(self.raw["feature_config"]["sample_rate"])

    @property
    def frame_length(self) -> int:
        """Analysis window of the in-graph frontend, in samples."""
        return int(round(self.sample_rate * self.raw["feature_config"].get("frame_length_ms", 25.0) / 1000.0))

    @property
    def frame_step(self) -> int:
        """Hop of the in-graph frontend, in samples."""
        return int(round(self.sample_rate * self.raw["feature_config"].get("frame_step_ms", 10.0) / 1000.0))

    @property
    def design(self) -> str:
        return self.raw["export"].get("design", "unknown")

    @property
    def quantize(self) -> str:
        return self.raw["export"].get("quantize", "none")

    @property
    def state_reset_in_graph(self) -> bool:
        """False for single-level files: the caller resets the LSTM state after each invoke."""
        return self.raw["export"].get("state_reset_in_graph", True)

    @property
    def stream_state(self) -> Optional[list[dict]]:
        """The ``stream`` signature's state tensors (``{name, shape, dtype}``), or None without one."""
        stream = self.raw.get("stream")
        return None if not stream else list(stream.get("state", []))

    @property
    def decoder(self) -> Optional[dict]:
        """The ``decoder`` entry (tuned beam settings and the LM buffer's name), or None."""
        decoder = self.raw.get("decoder")
        return None if decoder is None else dict(decoder)

    @property
    def single_level_of(self) -> Optional[int]:
        """For a single-level baseline file, the level of the DSNN it was exported from."""
        return self.raw["export"].get("single_level_of")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(raw: Any, source: str = "metadata") -> DsnnMetadata:
    """Checks the structure and the types of every field the readers use.

    Errors are one line naming ``source`` and the missing or bad field.

    Raises:
        MetadataError: a missing field, a wrong type or an out-of-range value.
    """
    def fail(message: str):
        raise MetadataError(f"{source}: dsnn metadata {message}")

    if not isinstance(raw, dict):
        fail("must be a JSON object")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        fail(f"lacks {missing}")
    if not _is_int(raw["format_version"]) or raw["format_version"] != FORMAT_VERSION:
        fail(f"format_version {_short(raw['format_version'])}; this reader understands {FORMAT_VERSION}")
    levels = raw["levels"]
    if isinstance(levels, list) and not levels:
        fail("'levels' is empty")
    if not isinstance(levels, list):
        fail(f"'levels' must be a non-empty list of objects, got {_short(levels)}")
    for index, level in enumerate(levels):
        if not isinstance(level, dict):
            fail(f"levels[{index}] must be an object, got {_short(level)}")
        sparsity = level.get("sparsity")
        if not _is_number(sparsity) or not 0 <= sparsity < 1:
            fail(f"levels[{index}].sparsity must be a number in [0, 1), got {_short(sparsity)}")
    tokens = raw["tokens"]
    if not isinstance(tokens, dict) or "pieces" not in tokens or "blank_id" not in tokens:
        fail("'tokens' needs 'pieces' and 'blank_id'")
    pieces = tokens["pieces"]
    if not isinstance(pieces, list) or not all(isinstance(piece, str) for piece in pieces):
        fail(f"tokens.pieces must be a list of strings, got {_short(pieces)}")
    if not _is_int(tokens["blank_id"]) or not 0 <= tokens["blank_id"] <= len(pieces):
        fail(f"tokens.blank_id must be an int in 0..{len(pieces)}, got {_short(tokens['blank_id'])}")
    features = raw["feature_config"]
    if not isinstance(features, dict):
        fail(f"'feature_config' must be an object, got {_short(features)}")
    if not _is_int(features.get("sample_rate")) or features["sample_rate"] <= 0:
        fail(f"feature_config.sample_rate must be an int > 0, got {_short(features.get('sample_rate'))}")
    for key, default in (("frame_length_ms", 25.0), ("frame_step_ms", 10.0)):
        value = features.get(key, default)
        if not _is_number(value) or not 0 < value <= 10_000 or not round(features["sample_rate"] * value / 1000):
            fail(f"feature_config.{key} must be a number > 0 (at least one sample), got {_short(value)}")
    export = raw["export"]
    if not isinstance(export, dict):
        fail(f"'export' must be an object, got {_short(export)}")
    for key in ("design", "quantize"):
        if key in export and not isinstance(export[key], str):
            fail(f"export.{key} must be a string, got {_short(export[key])}")
    if not isinstance(export.get("state_reset_in_graph", True), bool):
        fail(f"export.state_reset_in_graph must be true or false, got {_short(export['state_reset_in_graph'])}")
    single = export.get("single_level_of")
    if single is not None and (not _is_int(single) or single < 0):
        fail(f"export.single_level_of must be null or an int >= 0, got {_short(single)}")
    decoder = raw.get("decoder")
    if decoder is not None:
        if not isinstance(decoder, dict) or decoder.get("default") not in ("beam", "greedy"):
            fail(f"'decoder' must be null or an object with default 'beam' or 'greedy', got {_short(decoder)}")
        if not isinstance(decoder.get("beam"), dict):
            fail(f"decoder.beam must be an object, got {_short(decoder.get('beam'))}")
        from dsnn_keras.beam_search import LEVEL_KEY

        level_beams = decoder.get("levels")
        if level_beams is not None and (not isinstance(level_beams, dict) or not all(
                isinstance(k, str) and LEVEL_KEY.fullmatch(k) and int(k) < len(levels)
                and isinstance(v, dict)
                for k, v in level_beams.items())):
            fail(f"decoder.levels must be an object of level index (0..{len(levels) - 1}) to settings, "
                 f"got {_short(level_beams)}")
        if decoder.get("lm_entry") is not None and not isinstance(decoder["lm_entry"], str):
            fail(f"decoder.lm_entry must be a string or null, got {_short(decoder['lm_entry'])}")
    if not isinstance(raw["versions"], dict):
        fail(f"'versions' must be an object, got {_short(raw['versions'])}")
    return DsnnMetadata(raw)


def encode(raw: dict) -> bytes:
    """Serializes (and validates) the metadata object to UTF-8 JSON."""
    validate(raw)
    return json.dumps(raw, ensure_ascii=False, sort_keys=True).encode("utf-8")


def embed(model_bytes: bytes, raw: dict) -> bytes:
    """Returns ``model_bytes`` with the ``dsnn`` metadata entry set to ``raw``."""
    return rewrites.add_metadata_entry(model_bytes, METADATA_NAME, encode(raw))


def decoder_entry(settings: Any, bundle: Any, lm_bytes: int) -> dict:
    """The ``decoder`` metadata object of a run's `DecoderSettings` and `LmBundle` (None: no LM)."""
    from dsnn_keras.beam_search import level_beams_to_dict

    tuned = dict(settings.tuned or {})
    summary = {key: tuned[key] for key in ("split", "level", "best_wer", "greedy_wer", "num_utterances")
               if key in tuned}
    if isinstance(tuned.get("levels"), list):
        summary["levels"] = [{key: entry[key] for key in ("level", "best_wer", "greedy_wer") if key in entry}
                             for entry in tuned["levels"] if isinstance(entry, dict)]
    entry = {"default": settings.decoder, "beam": settings.beam.to_dict(),
             "lm_entry": LM_METADATA_NAME if bundle is not None else None, "lm_bytes": int(lm_bytes),
             "lm_order": bundle.order if bundle is not None else None,
             "lexicon_words": len(bundle.lexicon) if bundle is not None else None,
             "tuned": summary or None}
    level_beams = {level: config for level, config in (settings.level_beams or {}).items() if config != settings.beam}
    if level_beams:   # absent when every level uses "beam": such files stay readable by older runtimes
        entry["levels"] = level_beams_to_dict(level_beams)
    return entry


def embed_decoder(model_bytes: bytes, raw: dict, settings: Any, bundle: Any) -> bytes:
    """Returns ``model_bytes`` carrying a beam decoder: ``raw["decoder"]`` set (and ``raw`` re-embedded)
    and the LM bundle in the `LM_METADATA_NAME` buffer.

    Args:
        model_bytes: A .tflite with (or without) a ``dsnn`` entry.
        raw: Its metadata object (updated in place).
        settings: The run's `dsnn_keras.beam_search.DecoderSettings`.
        bundle: Its `dsnn_keras.ngram_lm.LmBundle`, or None (beam search without LM).
    """
    lm_bytes = bundle.to_bytes() if bundle is not None else b""
    raw["decoder"] = decoder_entry(settings, bundle, len(lm_bytes))
    data = embed(model_bytes, raw)
    return rewrites.add_metadata_entry(data, LM_METADATA_NAME, lm_bytes) if bundle is not None else data


def read_lm(model_bytes: bytes, meta: DsnnMetadata, source: str = "model"):
    """The `dsnn_keras.ngram_lm.LmBundle` the file carries, or None (no ``decoder.lm_entry``).

    Raises:
        MetadataError: the entry named by the metadata is missing or not a valid LM bundle.
    """
    from dsnn_keras.ngram_lm import LanguageModelError, LmBundle

    name = (meta.decoder or {}).get("lm_entry")
    if not name:
        return None
    try:
        return LmBundle.from_bytes(flatbuffer.read_metadata_entry(model_bytes, name), f"{source}: {name}")
    except flatbuffer.FlatbufferError as error:
        raise MetadataError(f"{source}: decoder.lm_entry {name!r}: {error}") from None
    except LanguageModelError as error:
        raise MetadataError(str(error)) from None


def parse(model_bytes: bytes, source: str = "model") -> DsnnMetadata:
    """Reads the ``dsnn`` entry from model bytes (no TensorFlow needed).

    Raises:
        MetadataError: not a TFLite flatbuffer, a truncated or corrupt one, or no valid ``dsnn`` entry.
    """
    try:
        payload = flatbuffer.read_metadata_entry(model_bytes, METADATA_NAME)
    except flatbuffer.FlatbufferError as error:
        raise MetadataError(f"{source}: {error}") from None
    except Exception as error:  # noqa: BLE001 - the flatbuffers reader has no error type of its own
        # Offsets read from damaged bytes point anywhere: struct.error, IndexError, UnicodeDecodeError...
        raise MetadataError(f"{source}: not a valid TFLite flatbuffer (truncated or corrupt: "
                            f"{type(error).__name__})") from None
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        detail = " ".join(str(error).split())[:120]
        raise MetadataError(f"{source}: dsnn metadata is not UTF-8 JSON ({detail})") from None
    return validate(raw, source)


def read_model_bytes(path: Union[str, pathlib.Path]) -> bytes:
    """The bytes of a model file; FileNotFoundError if absent, MetadataError if it cannot be read.

    ``path`` may be local or a URL `tf.io.gfile` reaches (``gs://...``; `dsnn_keras.fileio`); the
    errors are the same either way, naming the path or URL.
    """
    from dsnn_keras import fileio

    if not fileio.is_local(path):
        return _read_remote_model_bytes(str(path))
    path = pathlib.Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise MetadataError(f"{path}: is a directory, not a .tflite file") from None
    except OSError as error:
        raise MetadataError(f"{path}: cannot read ({error.strerror or error})") from None


def _read_remote_model_bytes(url: str) -> bytes:
    from dsnn_keras import fileio

    try:
        return fileio.read_bytes(url)
    except OSError as error:
        try:
            is_directory = fileio.isdir(url)
        except OSError:
            is_directory = False
        if is_directory:
            raise MetadataError(f"{url}: is a directory, not a .tflite file") from None
        if isinstance(error, FileNotFoundError):
            raise FileNotFoundError(f"model file not found: {url}") from None
        raise MetadataError(f"{url}: cannot read ({error.strerror or error})") from None


def read_metadata(path: Union[str, pathlib.Path]) -> DsnnMetadata:
    """Reads the ``dsnn`` metadata of a .tflite file.

    Args:
        path: The .tflite file (local, or a ``gs://``-style URL: `read_model_bytes`).

    Returns:
        A `DsnnMetadata`.

    Raises:
        MetadataError: the file cannot be read, is not a TFLite model (or a truncated or corrupt
            one), or has no valid ``dsnn`` entry. One line naming the file.
        FileNotFoundError: the file does not exist.
    """
    return parse(read_model_bytes(path), str(path))
