"""Seeded text grammars: AN4-like utterances (digit strings, spelled words, numbers, dates,
commands) and isolated digits.

AN4 (the real test data) is a census-style dialogue: people spell names and places, read phone
numbers and zip codes, say dates and amounts, and issue short commands (``ENTER SIX TWO FOUR``,
``ERASE O T H F I FIVE ZERO``, ``RUBOUT ...``, ``YES``, ``STOP``). This module draws transcripts of
those kinds from a ``random.Random``, so a seed fixes the text exactly. The ``digits`` grammar
draws one digit word per utterance (``ZERO`` ... ``NINE``, as FSDD transcribes its clips): isolated
digits said by many voices, for a model that must recognise a digit said alone by a voice it never
heard. Transcripts are upper-case
words separated by single spaces; letters are single capitals (``C Z D``).

``spoken_form`` turns a transcript into the text handed to espeak-ng, which reads a few tokens
differently from how a person says them (``A`` in a letter run is read as the article, ``RUBOUT``
as one syllable).
"""
from __future__ import annotations

import random
import string
from typing import Callable

from pipeline.synth import numbers

LETTERS = tuple(string.ascii_uppercase)
COMMANDS = ("ENTER", "ERASE", "RUBOUT")
SINGLE_WORDS = ("YES", "NO", "STOP", "GO", "HELP", "REPEAT", "START", "ENTER", "ERASE", "RUBOUT")
# Names, streets and places of the kind AN4 speakers spell out. 41 of them are spelled in AN4's own
# transcripts (held-out speakers' included), so text or audio from this list is not independent of
# an AN4 test: keep it out of a model or LM reported on AN4 (docs/results.md, "More LM text").
SPELL_WORDS = (
    "PITTSBURGH", "CINDY", "JEAN", "PHILLIPS", "PRINCE", "HOWELL", "BEVERLY", "GIBSONIA", "MORE",
    "WOOD", "FORBES", "FIFTH", "MURRAY", "WALNUT", "SHADY", "ELLSWORTH", "DITHRIDGE", "CRAIG",
    "NEVILLE", "BAYARD", "BEECHWOOD", "HOMESTEAD", "OAKLAND", "SQUIRREL", "HILL", "MONROEVILLE",
    "BETHEL", "PARK", "WILKINSBURG", "CARNEGIE", "MELLON", "SMITH", "JONES", "BROWN", "MILLER",
    "DAVIS", "WILSON", "TAYLOR", "CLARK", "LEWIS", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT",
    "SCOTT", "GREEN", "BAKER", "ADAMS", "NELSON", "CARTER", "MITCHELL", "ROBERTS", "TURNER",
    "MARY", "JOHN", "ROBERT", "LINDA", "DAVID", "SUSAN", "KAREN", "MARK", "PAUL", "LISA", "NANCY",
    "JAMES", "ANNE", "PETER", "RACHEL", "KEVIN", "LAURA", "STEVEN", "AMY", "ERIC", "DIANE",
    "DRIVE", "AVENUE", "STREET", "ROAD", "LANE", "COURT", "PLACE", "BOULEVARD", "WAY", "CIRCLE",
    "QUEEN", "JACKSON", "OXFORD", "EXETER", "ZIMMER", "QUAKER", "VALLEY", "FOX", "JUNIPER",
)

# espeak-ng reads a lone "A" inside a letter run as the article and "I" unstressed; these
# respellings make it say the letter names. "RUBOUT" is said as two words by AN4 speakers.
_SPOKEN = {"A": "EIGH", "I": "EYE", "RUBOUT": "RUB OUT"}


def _letters(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high)))


def _digit_string(rng: random.Random, low: int, high: int) -> str:
    zero = rng.choice(("ZERO", "OH"))
    return numbers.digits("".join(rng.choice("0123456789") for _ in range(rng.randint(low, high))), zero)


def _number(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:  # a plain amount: SEVENTY EIGHT, TWO HUNDRED FIFTY, ONE THOUSAND TEN
        return numbers.cardinal(rng.choice((rng.randint(0, 99), rng.randint(100, 999), rng.randint(1000, 9999))))
    if kind < 0.7:  # pairs, as in street numbers and prices: FIFTY ONE FIFTY SIX, TWO FIFTEEN
        parts = [numbers.cardinal(rng.randint(1, 99))]
        parts.append(numbers.pair(rng.randint(0, 99)))
        return " ".join(parts)
    return _digit_string(rng, 1, 4)


def connected_digits(rng: random.Random) -> str:
    """A phone number, zip code or id read digit by digit (``ONE FIVE TWO ONE SEVEN``)."""
    return _digit_string(rng, 1, 10)


def spelled_word(rng: random.Random) -> str:
    """A name or place spelled letter by letter (``P I T T S B U R G H``), sometimes random letters."""
    if rng.random() < 0.75:
        word = rng.choice(SPELL_WORDS)
        if rng.random() < 0.15:
            word += rng.choice(SPELL_WORDS)
        return " ".join(word)
    return _letters(rng, 2, 8)


def command(rng: random.Random) -> str:
    """``ENTER``/``ERASE``/``RUBOUT`` followed by letters and/or a number (``ERASE C K C W FOURTEEN``)."""
    words = [rng.choice(COMMANDS)]
    kind = rng.random()
    if kind < 0.5:
        words.append(_letters(rng, 1, 5))
    if kind > 0.25:
        words.append(_number(rng))
    return " ".join(words)


def letters_and_digits(rng: random.Random) -> str:
    """A code of letters then digits (``K L M U FIVE TWO SEVEN FOUR``)."""
    return f"{_letters(rng, 1, 5)} {_number(rng)}"


def number(rng: random.Random) -> str:
    """An amount or street number in words (``TWO HUNDRED FIFTY``, ``FIFTY ONE FIFTY SIX``)."""
    return _number(rng)


def date(rng: random.Random) -> str:
    """A date, month first, year usually said (``MARCH THIRD NINETEEN TWENTY EIGHT``)."""
    month = rng.randrange(12)
    day = rng.randint(1, numbers.DAYS_IN_MONTH[month])
    words = [numbers.MONTHS[month], numbers.ordinal(day)]
    if rng.random() < 0.8:
        words.append(numbers.year(rng.randint(1900, 2029)))
    return " ".join(words)


def single_word(rng: random.Random) -> str:
    """A one-word answer or command (``YES``, ``NO``, ``STOP``, ``REPEAT`` ...)."""
    return rng.choice(SINGLE_WORDS)


# (generator, weight): roughly AN4's mix, where spelled letters and digits dominate.
CATEGORIES: tuple[tuple[Callable[[random.Random], str], float], ...] = (
    (connected_digits, 0.24),
    (spelled_word, 0.20),
    (command, 0.18),
    (letters_and_digits, 0.12),
    (number, 0.10),
    (date, 0.07),
    (single_word, 0.09),
)


def sample_transcript(rng: random.Random) -> str:
    """Draw one transcript from the grammar.

    Args:
        rng: the random source; the same state gives the same transcript.

    Returns:
        Upper-case words separated by single spaces, e.g. ``"ENTER SIX TWO FOUR"``.

    Example:
        >>> sample_transcript(random.Random(0))  # doctest: +SKIP
        'ONE FIVE OH FOUR FOUR'
    """
    generators, weights = zip(*CATEGORIES)
    return rng.choices(generators, weights=weights)[0](rng)


def isolated_digit(rng: random.Random) -> str:
    """One digit word said alone (``SEVEN``), zero as ``ZERO``: the ``digits`` grammar."""
    return rng.choice(numbers.ONES[:10])


# The grammars `sample_transcripts` draws from, by the name `dsnn-synth --grammar` takes.
GRAMMARS: dict[str, Callable[[random.Random], str]] = {"an4": sample_transcript, "digits": isolated_digit}


def sample_transcripts(seed: int, count: int, grammar: str = "an4") -> list[str]:
    """``count`` transcripts drawn from the grammar named ``grammar`` (a `GRAMMARS` key) with
    ``random.Random(seed)``.

    Raises:
        ValueError: an unknown grammar.
    """
    if grammar not in GRAMMARS:
        raise ValueError(f"grammar: expected one of {sorted(GRAMMARS)}, got {grammar!r}")
    draw = GRAMMARS[grammar]
    rng = random.Random(seed)
    return [draw(rng) for _ in range(count)]


def spoken_form(transcript: str) -> str:
    """The text to give espeak-ng for ``transcript`` (letter names respelled, ``RUBOUT`` split).

    Example:
        >>> spoken_form("RUBOUT A M Y")
        'RUB OUT EIGH M Y'
    """
    return " ".join(_SPOKEN.get(word, word) for word in transcript.split())
