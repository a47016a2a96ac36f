"""pipeline.synth.grammar: seeded AN4-like transcripts and the text given to espeak-ng."""
import collections
import random
import re

import pytest

from pipeline.synth import grammar

AN4_LIKE_COMMANDS = {"ENTER", "ERASE", "RUBOUT", "YES", "NO", "STOP"}


def test_same_seed_gives_same_transcripts_and_other_seed_differs():
    assert grammar.sample_transcripts(7, 50) == grammar.sample_transcripts(7, 50)
    assert grammar.sample_transcripts(7, 50) != grammar.sample_transcripts(8, 50)


def test_transcripts_are_upper_case_words_separated_by_single_spaces():
    for text in grammar.sample_transcripts(0, 500):
        assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", text), text


def test_transcripts_cover_the_an4_domain():
    texts = grammar.sample_transcripts(0, 1000)
    words = collections.Counter(w for t in texts for w in t.split())
    assert AN4_LIKE_COMMANDS <= set(words)
    assert {"ONE", "FIVE", "ZERO", "OH", "HUNDRED", "THOUSAND"} <= set(words)
    assert any(m in words for m in ("JANUARY", "MARCH", "JUNE", "OCTOBER"))
    single_letters = sum(n for w, n in words.items() if len(w) == 1)
    assert single_letters > 0.2 * sum(words.values())  # spelled letters are a big part of AN4
    assert len(set(texts)) > 800  # varied, not a handful of fixed sentences


def test_each_category_produces_its_kind_of_text():
    rng = random.Random(3)
    assert grammar.connected_digits(rng).split()[0] in ("ZERO", "OH", "ONE", "TWO", "THREE", "FOUR",
                                                         "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
    assert all(len(w) == 1 for w in grammar.spelled_word(rng).split())
    assert grammar.command(rng).split()[0] in grammar.COMMANDS
    assert grammar.date(rng).split()[0] in grammar.numbers.MONTHS
    assert grammar.single_word(rng) in grammar.SINGLE_WORDS


def test_spoken_form_respells_letters_espeak_misreads():
    assert grammar.spoken_form("RUBOUT A M I") == "RUB OUT EIGH M EYE"
    assert grammar.spoken_form("ENTER SIX TWO FOUR") == "ENTER SIX TWO FOUR"


def test_digits_grammar_says_one_digit_word_per_utterance_and_every_digit():
    texts = grammar.sample_transcripts(5, 300, "digits")
    digits = {"ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"}
    assert set(texts) == digits
    assert max(collections.Counter(texts).values()) < 60   # drawn evenly, not one digit repeated
    assert texts == grammar.sample_transcripts(5, 300, "digits")


def test_an4_is_the_default_grammar_and_an_unknown_one_is_refused():
    # Pinned: a default corpus says what it said before the grammar became a choice.
    assert grammar.sample_transcripts(0, 4) == ["JULY SECOND TWENTY TWENTY FOUR", "P L S G", "ERASE T", "ONE ONE FIVE"]
    assert grammar.sample_transcripts(3, 40) == grammar.sample_transcripts(3, 40, "an4")
    with pytest.raises(ValueError, match="grammar: expected one of \\['an4', 'digits'\\], got 'numbers'"):
        grammar.sample_transcripts(3, 40, "numbers")
