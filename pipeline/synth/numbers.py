"""Spoken English forms of numbers, digits, years and dates, in AN4's upper-case word style.

Only words appear in the output (``"TWO HUNDRED FIFTY"``, never ``"250"``), because the transcripts
of the synthetic corpus must look like AN4's.
"""
from __future__ import annotations

ONES = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE",
        "TEN", "ELEVEN", "TWELVE", "THIRTEEN", "FOURTEEN", "FIFTEEN", "SIXTEEN", "SEVENTEEN",
        "EIGHTEEN", "NINETEEN")
TENS = ("", "", "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY", "NINETY")
ORDINALS = ("", "FIRST", "SECOND", "THIRD", "FOURTH", "FIFTH", "SIXTH", "SEVENTH", "EIGHTH",
            "NINTH", "TENTH", "ELEVENTH", "TWELFTH", "THIRTEENTH", "FOURTEENTH", "FIFTEENTH",
            "SIXTEENTH", "SEVENTEENTH", "EIGHTEENTH", "NINETEENTH", "TWENTIETH")
MONTHS = ("JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST",
          "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER")
DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def cardinal(n: int) -> str:
    """Spell out ``0 <= n <= 9999`` as words.

    Args:
        n: the number.

    Returns:
        Upper-case words, e.g. ``cardinal(250) == "TWO HUNDRED FIFTY"``.

    Example:
        >>> cardinal(1204)
        'ONE THOUSAND TWO HUNDRED FOUR'
    """
    if not 0 <= n <= 9999:
        raise ValueError(f"cardinal: expected 0 <= n <= 9999, got {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] if ones == 0 else f"{TENS[tens]} {ONES[ones]}"
    words = []
    thousands, rest = divmod(n, 1000)
    if thousands:
        words.append(f"{ONES[thousands]} THOUSAND")
    hundreds, rest = divmod(rest, 100)
    if hundreds:
        words.append(f"{ONES[hundreds]} HUNDRED")
    if rest:
        words.append(cardinal(rest))
    return " ".join(words)


def ordinal(n: int) -> str:
    """Spell out the ordinal ``1 <= n <= 31`` (``ordinal(23) == "TWENTY THIRD"``)."""
    if not 1 <= n <= 31:
        raise ValueError(f"ordinal: expected 1 <= n <= 31, got {n}")
    if n <= 20:
        return ORDINALS[n]
    tens, ones = divmod(n, 10)
    if ones == 0:
        return "THIRTIETH"
    return f"{TENS[tens]} {ORDINALS[ones]}"


def pair(n: int, oh: bool = True) -> str:
    """Spell a two-digit group as said in years and prices: 5 -> ``"OH FIVE"``, 67 -> ``"SIXTY SEVEN"``."""
    if not 0 <= n <= 99:
        raise ValueError(f"pair: expected 0 <= n <= 99, got {n}")
    if n < 10:
        return f"{'OH' if oh else 'ZERO'} {ONES[n]}"
    return cardinal(n)


def year(y: int) -> str:
    """Spell a year 1100..2099 the spoken way: 1967 -> ``"NINETEEN SIXTY SEVEN"``, 2004 -> ``"TWO THOUSAND FOUR"``."""
    if not 1100 <= y <= 2099:
        raise ValueError(f"year: expected 1100 <= y <= 2099, got {y}")
    high, low = divmod(y, 100)
    if high == 20 and low < 10:
        return cardinal(y)
    if low == 0:
        return f"{cardinal(high)} HUNDRED"
    return f"{cardinal(high)} {pair(low)}"


def digits(number: str, zero: str = "ZERO") -> str:
    """Read a digit string one digit at a time (``digits("1504", zero="OH") == "ONE FIVE OH FOUR"``)."""
    if not number.isdigit():
        raise ValueError(f"digits: expected a string of digits, got {number!r}")
    return " ".join(zero if d == "0" else ONES[int(d)] for d in number)
