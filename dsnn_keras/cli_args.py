"""Command-line parsing shared by the project's commands.

argparse reads a value such as ``-1,0,1`` (a comma list that starts with a negative number) as an
unknown option, so ``--tune_word_bonuses -1,0,1`` or ``--gain_db -18,6`` failed with "expected one
argument" unless written with ``=``. `accept_negative_lists` makes a parser take such a token as a
value, the way argparse already takes ``-1`` or ``-0.5``. (Apache Beam's own pipeline options, which
``dsnn-prepare`` passes on to Beam's parser, still need the ``=`` form for such a value:
``--job_name=-1,2``.)
"""
from __future__ import annotations

import argparse
import re

# argparse's own pattern is r'^-\d+$|^-\d*\.\d+$' (one number); this one also takes a comma list of
# numbers (with exponents) that starts with a negative number, where later items may be "none"
# (``--tune_token_min_logps -8,none``).
NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d)[\d.eE+-]*(,\s*([+-]?(\d|\.\d)[\d.eE+-]*|[nN][oO][nN][eE]))*$")


def accept_negative_lists(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Lets ``parser`` read ``-1,0,1`` / ``-18,6`` after an option as its value; returns ``parser``.

    Only for parsers with no option that itself looks like a negative number (``-1``): argparse then
    treats every such token as a value, which is what this extends. Raises ValueError otherwise.

    Example:
        >>> parser = accept_negative_lists(argparse.ArgumentParser())
        >>> _ = parser.add_argument("--gain_db")
        >>> parser.parse_args(["--gain_db", "-18,6"]).gain_db
        '-18,6'
    """
    if getattr(parser, "_has_negative_number_optionals", None):
        raise ValueError("accept_negative_lists: the parser has an option that looks like a negative number")
    # argparse has no public switch for this; _negative_number_matcher is the pattern _parse_optional
    # tests a token against (Python 3.8-3.13), and the parser's own attribute is the one it reads.
    # Either pattern: argparse's own (newer Pythons widen it) or the comma list.
    own = parser._negative_number_matcher.pattern   # pylint: disable=protected-access
    matcher = re.compile(f"(?:{own})|(?:{NEGATIVE_VALUE.pattern})")
    parser._negative_number_matcher = matcher   # pylint: disable=protected-access
    return parser
