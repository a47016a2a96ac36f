"""Named corpora and their mixing weights (``dsnn-prepare --corpus NAME=PATH --corpus_weight NAME=W``).

A named corpus is one or more inputs whose training utterances go to the ``train`` split and whose
held-out speakers go to a split of their own (``dev_<NAME>``, `pipeline.splits.SpeakerSplit`).

Its weight ``W`` says how many times each of its training utterances appears in ``train``: the
integer part ``floor(W)`` always, plus one more time when the utterance's hash falls below the
fractional part. The hash is the SHA-1 of ``salt``, ``"weight"``, the corpus name and the utterance
id (NUL-separated), read as a number in [0, 1): deterministic across runs, machines and runners, and
independent of the other utterances. So weight 2 writes every utterance twice, 0.5 about half of
them once (and leaves the other half out of ``train`` altogether), 1.5 every one once and about half
twice. That is the simplest mixing that works with a trainer that shuffles one split into batches:
a corpus's share of the batches is its share of the written examples.

Example:
    >>> parse_corpus_arg("fsdd=/data/fsdd/manifest.tsv")
    ('fsdd', '/data/fsdd/manifest.tsv')
    >>> parse_corpus_weights(["fsdd=0.5"], ["an4", "fsdd"])
    {'an4': 1.0, 'fsdd': 0.5}
    >>> [repeats(u, 2.0) for u in ("a", "b")], repeats_id("fash-0-0001", 1)
    ([2, 2], 'rep1-fash-0-0001')
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Iterable, Sequence

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_WEIGHT = 100.0


def parse_corpus_arg(arg: str) -> tuple[str, str]:
    """Parses ``--corpus NAME=PATH``.

    Raises:
        ValueError: naming the flag when the ``NAME=`` part is missing or the name is not made of
            letters, digits, ``_``, ``.`` and ``-`` (it becomes part of a split name, ``dev_NAME``).
    """
    name, sep, path = arg.partition("=")
    if not sep or not name or "/" in name or ":" in name:
        raise ValueError(f"--corpus {arg}: expected NAME=PATH (e.g. --corpus fsdd=data/fsdd/manifest.tsv); "
                         "use --input for an unnamed corpus")
    if not _NAME.match(name):
        raise ValueError(f"--corpus {arg}: corpus name {name!r} may hold only letters, digits, '_', '.' and '-' "
                         "(it names the split dev_NAME), starting with a letter or digit")
    if not path:
        raise ValueError(f"--corpus {arg}: empty path after '{name}='")
    return name, path


def parse_corpus_weights(values: Iterable[str], corpora: Sequence[str]) -> dict[str, float]:
    """Parses ``--corpus_weight NAME=W`` flags (each may hold a comma list) into a weight per corpus.

    Args:
        values: The flags' values, e.g. ``["fsdd=0.5"]`` or ``["an4=1,fsdd=0.5"]``.
        corpora: The names given with ``--corpus``.

    Returns:
        Every corpus of ``corpora`` with its weight (1.0 when not given).

    Raises:
        ValueError: naming the flag and the item: not ``NAME=W``, an unknown corpus name, a weight
            that is not a number, not finite, <= 0 or over `MAX_WEIGHT`, or a corpus given twice.
    """
    weights = {name: 1.0 for name in corpora}
    given: set[str] = set()
    for value in values:
        for item in (part.strip() for part in str(value).split(",")):
            name, sep, text = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ValueError(f"--corpus_weight {value}: expected NAME=WEIGHT items such as fsdd=0.5, got {item!r}")
            if not corpora:
                raise ValueError(f"--corpus_weight {item}: there is no --corpus NAME=PATH to weigh "
                                 "(weights apply to named corpora only)")
            if name not in weights:
                raise ValueError(f"--corpus_weight {item}: no --corpus named {name!r}; the corpora are "
                                 f"{', '.join(corpora)}")
            try:
                weight = float(text)
            except ValueError:
                raise ValueError(f"--corpus_weight {item}: {text.strip()!r} is not a number") from None
            if not math.isfinite(weight) or weight <= 0 or weight > MAX_WEIGHT:
                raise ValueError(f"--corpus_weight {item}: the weight must be > 0 and <= {MAX_WEIGHT:g} (times each "
                                 "training utterance is written); to evaluate on a corpus without training on it, "
                                 "give it as --input SPLIT=PATH")
            if name in given:
                raise ValueError(f"--corpus_weight {item}: corpus {name!r} is weighted twice")
            given.add(name)
            weights[name] = weight
    return weights


def weight_score(utt_id: str, corpus: str = "", salt: str = "dsnn") -> float:
    """The utterance's sampling hash in [0, 1) (SHA-1 of salt, "weight", corpus, utt_id)."""
    digest = hashlib.sha1(f"{salt}\0weight\0{corpus}\0{utt_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def repeats(utt_id: str, weight: float, corpus: str = "", salt: str = "dsnn") -> int:
    """How many times a training utterance of weight ``weight`` is written: ``floor(weight)``, plus
    one when `weight_score` is below the fractional part. 0 = left out of ``train``."""
    whole = math.floor(weight)
    fraction = weight - whole
    return int(whole) + (1 if fraction > 0 and weight_score(utt_id, corpus, salt) < fraction else 0)


def repeats_id(utt_id: str, repetition: int) -> str:
    """The id of repetition ``r`` of an example: ``rep<r>-<id>``; repetition 0 keeps ``utt_id``."""
    return utt_id if repetition == 0 else f"rep{repetition}-{utt_id}"
