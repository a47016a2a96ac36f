"""pipeline.synth.numbers: spoken forms of numbers, digits, years, dates."""
import pytest

from pipeline.synth import numbers


@pytest.mark.parametrize("n, words", [
    (0, "ZERO"), (13, "THIRTEEN"), (40, "FORTY"), (78, "SEVENTY EIGHT"), (250, "TWO HUNDRED FIFTY"),
    (1000, "ONE THOUSAND"), (1204, "ONE THOUSAND TWO HUNDRED FOUR"), (9999, "NINE THOUSAND NINE HUNDRED NINETY NINE"),
])
def test_cardinal_spells_numbers_in_words(n, words):
    assert numbers.cardinal(n) == words


@pytest.mark.parametrize("n, words", [(1, "FIRST"), (3, "THIRD"), (12, "TWELFTH"), (20, "TWENTIETH"),
                                      (23, "TWENTY THIRD"), (30, "THIRTIETH"), (31, "THIRTY FIRST")])
def test_ordinal_spells_days_of_month(n, words):
    assert numbers.ordinal(n) == words


@pytest.mark.parametrize("y, words", [(1967, "NINETEEN SIXTY SEVEN"), (1905, "NINETEEN OH FIVE"),
                                      (1900, "NINETEEN HUNDRED"), (2004, "TWO THOUSAND FOUR"),
                                      (2024, "TWENTY TWENTY FOUR")])
def test_year_is_said_in_pairs(y, words):
    assert numbers.year(y) == words


def test_digits_reads_one_digit_at_a_time_with_chosen_zero():
    assert numbers.digits("1504", zero="OH") == "ONE FIVE OH FOUR"
    assert numbers.digits("10") == "ONE ZERO"


@pytest.mark.parametrize("call", [lambda: numbers.cardinal(10000), lambda: numbers.ordinal(0),
                                  lambda: numbers.year(3000), lambda: numbers.digits("12a"),
                                  lambda: numbers.pair(100)])
def test_out_of_range_input_raises_naming_the_function(call):
    with pytest.raises(ValueError, match=r"^(cardinal|ordinal|year|digits|pair):"):
        call()
