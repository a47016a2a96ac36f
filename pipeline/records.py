"""The records that flow through the preparation pipeline: utterances and rejects."""
from __future__ import annotations

import dataclasses
import json

from dsnn_keras.errors import DsnnError


class RejectReason:
    """Short reject codes written to ``rejects.jsonl`` (the ``reason`` field)."""

    MALFORMED_LINE = "malformed_line"          # a manifest line that cannot be parsed
    MISSING_FILE = "missing_file"              # the audio path does not exist
    EMPTY_FILE = "empty_file"                  # the audio file has zero bytes
    UNREADABLE = "unreadable"                  # not an audio file libsndfile recognises
    WRONG_FORMAT = "wrong_format"              # extension/container not WAV, FLAC or OGG
    TRUNCATED = "truncated"                    # the header promises more audio than the file holds
    EMPTY_AUDIO = "empty_audio"                # a valid file with zero samples
    TOO_SHORT = "too_short"                    # shorter than --min_duration
    TOO_LONG = "too_long"                      # longer than --max_duration
    NON_FINITE_SAMPLES = "non_finite_samples"  # NaN or infinite samples (float WAV/FLAC)
    NON_FINITE_FEATURES = "non_finite_features"  # finite samples whose log-mel overflows (e.g. 1e30)
    EMPTY_TRANSCRIPT = "empty_transcript"      # nothing left after normalisation
    NON_ASCII_TRANSCRIPT = "non_ascii_transcript"
    INTERNAL_ERROR = "internal_error"          # an unexpected exception (Beam dead-letter output)

    ALL = (MALFORMED_LINE, MISSING_FILE, EMPTY_FILE, UNREADABLE, WRONG_FORMAT, TRUNCATED,
           EMPTY_AUDIO, TOO_SHORT, TOO_LONG, NON_FINITE_SAMPLES, NON_FINITE_FEATURES, EMPTY_TRANSCRIPT, NON_ASCII_TRANSCRIPT, INTERNAL_ERROR)


class RejectError(DsnnError):
    """Raised by validation code; carries the reject ``reason`` code and a human ``detail``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One input utterance before decoding.

    Args:
        utt_id: Identifier, unique within the corpus.
        path: Audio path (absolute, or a ``scheme://`` URL).
        transcript: Transcript as found in the source (normalised later).
        speaker: Speaker id; ``""`` when the source has none.
        split: Output split name (``train``, ``dev``, ...).
        source: Where the record came from (``manifest:line``), for rejects.
        corpus: The named corpus (``--corpus NAME=PATH``) it belongs to; ``""`` for an ``--input``.
    """

    utt_id: str
    path: str
    transcript: str
    speaker: str
    split: str
    source: str = ""
    corpus: str = ""


@dataclasses.dataclass(frozen=True)
class Reject:
    """One input that could not be used.

    Example:
        >>> Reject("a.wav", RejectReason.EMPTY_FILE, "0 bytes").to_json()
        '{"path": "a.wav", "reason": "empty_file", "detail": "0 bytes"}'
    """

    path: str
    reason: str
    detail: str

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "reason": self.reason, "detail": self.detail})
