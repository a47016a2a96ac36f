"""Transcript normalisation: case, punctuation, whitespace; empty and non-ASCII text rejected."""
from __future__ import annotations

import dataclasses
import re

from pipeline.records import RejectError, RejectReason

_CASES = ("lower", "upper", "keep")


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """Transcript normalisation settings.

    Args:
        case: ``"lower"``, ``"upper"`` or ``"keep"``. Defaults to "lower".
        strip_punctuation: Remove every character that is not a letter, digit, apostrophe or
            space (hyphens become spaces). Defaults to True.

    Example:
        >>> normalize_transcript("Hello,  World!", TextConfig())
        'hello world'
    """

    case: str = "lower"
    strip_punctuation: bool = True

    def __post_init__(self) -> None:
        if self.case not in _CASES:
            raise ValueError(f"TextConfig.case must be one of {_CASES}, got {self.case!r}")


_PUNCT = re.compile(r"[^A-Za-z0-9' ]+")
_HYPHEN = re.compile(r"[-_/]")
_SPACES = re.compile(r"\s+")


def normalize_transcript(text: str, config: TextConfig = TextConfig()) -> str:
    """Normalises one transcript.

    Args:
        text: The transcript as read from the source.
        config: The `TextConfig`. Defaults to `TextConfig()`.

    Returns:
        The normalised transcript (single spaces, no leading/trailing space).

    Raises:
        RejectError: ``non_ascii_transcript`` if the text has non-ASCII characters,
            ``empty_transcript`` if nothing is left after normalisation.

    Example:
        >>> normalize_transcript("ERASE V R F O FIVE")
        'erase v r f o five'
    """
    if not text.isascii():
        bad = sorted({c for c in text if not c.isascii()})
        raise RejectError(RejectReason.NON_ASCII_TRANSCRIPT, f"non-ASCII characters {''.join(bad)!r}")
    if config.strip_punctuation:
        text = _PUNCT.sub(" ", _HYPHEN.sub(" ", _SPACES.sub(" ", text)))
        text = " ".join(w.strip("'") for w in text.split())
    text = _SPACES.sub(" ", text).strip()
    if config.case == "lower":
        text = text.lower()
    elif config.case == "upper":
        text = text.upper()
    if not text:
        raise RejectError(RejectReason.EMPTY_TRANSCRIPT, "empty after normalisation")
    return text
