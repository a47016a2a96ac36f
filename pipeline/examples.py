"""Serialises prepared utterances as ``tf.train.Example`` records (the prepared-dataset format).

Features: ``utt_id``, ``speaker``, ``transcript`` (bytes), ``features`` (float list,
``num_frames * num_mel_bins`` row-major raw log-mel), ``num_frames`` (int64), ``token_ids``
(int64 list). TensorFlow is imported on first use only.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def make_example(utt_id: str, speaker: str, transcript: str, features: np.ndarray,
                 token_ids: Sequence[int]) -> bytes:
    """Returns one serialised ``tf.train.Example``.

    Args:
        utt_id: Utterance id.
        speaker: Speaker id (may be empty).
        transcript: Normalised transcript.
        features: float32 ``[num_frames, num_mel_bins]``.
        token_ids: SentencePiece ids of ``transcript``.

    Example:
        >>> blob = make_example("u1", "s1", "yes", np.zeros([3, 80], np.float32), [5])
        >>> parse_example(blob)["num_frames"]
        3
    """
    from tensorflow.core.example import example_pb2, feature_pb2

    Feature = feature_pb2.Feature
    feats = np.asarray(features, dtype=np.float32)
    fmap = {
        "utt_id": Feature(bytes_list=feature_pb2.BytesList(value=[utt_id.encode("utf-8")])),
        "speaker": Feature(bytes_list=feature_pb2.BytesList(value=[speaker.encode("utf-8")])),
        "transcript": Feature(bytes_list=feature_pb2.BytesList(value=[transcript.encode("utf-8")])),
        # tolist() is ~4x faster than handing protobuf the NumPy array (docs/measured.md, "Data preparation").
        "features": Feature(float_list=feature_pb2.FloatList(value=feats.ravel().tolist())),
        "num_frames": Feature(int64_list=feature_pb2.Int64List(value=[int(feats.shape[0])])),
        "token_ids": Feature(int64_list=feature_pb2.Int64List(value=[int(t) for t in token_ids])),
    }
    # deterministic: map entries in key order, so the bytes do not depend on PYTHONHASHSEED.
    return example_pb2.Example(features=feature_pb2.Features(feature=fmap)).SerializeToString(deterministic=True)


def parse_example(blob: bytes, num_mel_bins: int | None = None) -> dict:
    """Parses a serialised example back into Python/NumPy values (for tests and tools).

    Returns:
        dict with ``utt_id``, ``speaker``, ``transcript`` (str), ``num_frames`` (int),
        ``features`` (float32 ``[num_frames, num_mel_bins]``) and ``token_ids`` (list of int).
    """
    from tensorflow.core.example import example_pb2

    f = example_pb2.Example.FromString(blob).features.feature
    num_frames = int(f["num_frames"].int64_list.value[0])
    feats = np.asarray(f["features"].float_list.value, dtype=np.float32)
    bins = num_mel_bins or (feats.size // max(num_frames, 1))
    return {
        "utt_id": f["utt_id"].bytes_list.value[0].decode("utf-8"),
        "speaker": f["speaker"].bytes_list.value[0].decode("utf-8"),
        "transcript": f["transcript"].bytes_list.value[0].decode("utf-8"),
        "num_frames": num_frames,
        "features": feats.reshape(num_frames, bins),
        "token_ids": list(f["token_ids"].int64_list.value),
    }
