"""The ``dsnn`` metadata entry of an exported .tflite: UTF-8 JSON readable without TensorFlow.

Schema (``format_version`` 1)::

    {"format_version": 1,
     "signatures": {"recognize": {...}, "recognize_features": {...}},   # inputs/outputs, in words
     "levels": [{"level": 0, "sparsity": 0.0, "total_weights": int, "nonzero_weights": int,
                 "macs_per_second": int, "relative_macs": float,
                 "dev_wer": float|null, "dev_cer": float|null}, ...],
     "level_clamping": "sparsity_level < 0 runs level 0; > K-1 runs level K-1",
     "evaluation": {"split": "dev", "num_utterances": int} | null,
     "tokens": {"pieces": [str, ...], "blank_id": int, "word_boundary": "\u2581"},
     "feature_config": FeatureConfig.to_dict(),
     "export": {"design": "if_tree_fused_lstm"|"if_tree_fc_loop"|"shared_weights_cached"|"single_level",
                "quantize": "none"|"dynamic-int8"|"float16",
                "sparse_speed": bool, "sparse_speed_min_sparsity": float|null,
                "lstm_kernels": ["fused_lstm"|"fc_loop", one per level] | null (shared design),
                "min_frames": int, "state_reset_in_graph": bool, "operators": [str, ...],
                "shared_weights": {"storage", "coded_tensors", "coded_weights", ...} (shared design),
                "verification": [per-level checks]},
     "source": {"run_dir": str, "step": int, "checkpoint": str} | null,
     "versions": {"dsnn": str, "tensorflow": str, "tf_keras": str, "ai_edge_litert": str},
     "created": ISO-8601 time}

Example:
    >>> meta = read_metadata("model.tflite")
    >>> [level["sparsity"] for level in meta.levels]
    [0.0, 0.5, 0.7, 0.9]
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Union

from tflite import flatbuffer

METADATA_NAME = "dsnn"
FORMAT_VERSION = 1
_REQUIRED = ("format_version", "levels", "tokens", "feature_config", "export", "versions")


class MetadataError(ValueError):
    """The file has no valid ``dsnn`` metadata."""


@dataclasses.dataclass(frozen=True)
class DsnnMetadata:
    """Parsed ``dsnn`` metadata.

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


def validate(raw: Any, source: str = "metadata") -> DsnnMetadata:
    """Checks the top-level structure; errors name ``source`` and the missing or bad field."""
    if not isinstance(raw, dict):
        raise MetadataError(f"{source}: dsnn metadata must be a JSON object")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise MetadataError(f"{source}: dsnn metadata lacks {missing}")
    if raw["format_version"] != FORMAT_VERSION:
        raise MetadataError(
            f"{source}: dsnn metadata format_version {raw['format_version']!r}; this reader "
            f"understands {FORMAT_VERSION}")
    if not raw["levels"]:
        raise MetadataError(f"{source}: dsnn metadata 'levels' is empty")
    tokens = raw["tokens"]
    if not isinstance(tokens, dict) or "pieces" not in tokens or "blank_id" not in tokens:
        raise MetadataError(f"{source}: dsnn metadata 'tokens' needs 'pieces' and 'blank_id'")
    return DsnnMetadata(raw)


def encode(raw: dict) -> bytes:
    """Serializes (and validates) the metadata object to UTF-8 JSON."""
    validate(raw)
    return json.dumps(raw, ensure_ascii=False, sort_keys=True).encode("utf-8")


def embed(model_bytes: bytes, raw: dict) -> bytes:
    """Returns ``model_bytes`` with the ``dsnn`` metadata entry set to ``raw``."""
    return flatbuffer.add_metadata_entry(model_bytes, METADATA_NAME, encode(raw))


def parse(model_bytes: bytes, source: str = "model") -> DsnnMetadata:
    """Reads the ``dsnn`` entry from model bytes (no TensorFlow needed)."""
    try:
        payload = flatbuffer.read_metadata_entry(model_bytes, METADATA_NAME)
    except flatbuffer.FlatbufferError as error:
        raise MetadataError(f"{source}: {error}") from None
    try:
        raw = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MetadataError(f"{source}: dsnn metadata is not UTF-8 JSON ({error})") from None
    return validate(raw, source)


def read_metadata(path: Union[str, pathlib.Path]) -> DsnnMetadata:
    """Reads the ``dsnn`` metadata of a .tflite file.

    Args:
        path: The .tflite file.

    Returns:
        A `DsnnMetadata`.

    Raises:
        MetadataError: the file is not a TFLite model or has no valid ``dsnn`` entry.
        FileNotFoundError: the file does not exist.
    """
    path = pathlib.Path(path)
    return parse(path.read_bytes(), str(path))
