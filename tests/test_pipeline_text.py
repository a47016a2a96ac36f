"""Transcript normalisation."""
import pytest

from pipeline.records import RejectError, RejectReason
from pipeline.text import TextConfig, normalize_transcript


def test_lowercases_and_strips_punctuation_but_keeps_apostrophes():
    assert normalize_transcript("  Don't  STOP -- now!\t") == "don't stop now"
    assert normalize_transcript("'quoted' well-known") == "quoted well known"


def test_case_and_punctuation_are_configurable():
    assert normalize_transcript("Hello, World", TextConfig(case="keep", strip_punctuation=False)) == "Hello, World"
    assert normalize_transcript("Hello, World", TextConfig(case="upper")) == "HELLO WORLD"


@pytest.mark.parametrize("text,reason", [("", RejectReason.EMPTY_TRANSCRIPT),
                                         (" ?! ", RejectReason.EMPTY_TRANSCRIPT),
                                         ("café", RejectReason.NON_ASCII_TRANSCRIPT)])
def test_empty_and_non_ascii_transcripts_are_rejected(text, reason):
    with pytest.raises(RejectError) as info:
        normalize_transcript(text)
    assert info.value.reason == reason


def test_unknown_case_is_refused():
    with pytest.raises(ValueError, match="TextConfig.case"):
        TextConfig(case="title")
