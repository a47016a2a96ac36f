"""Split assignment: from the ``--input SPLIT=PATH`` flags, or held-out speakers by hash.

A held-out (dev) set is always made of whole speakers, never of single utterances, so no speaker
is in two splits. With a fraction, a speaker goes to dev when the SHA-1 of ``salt + speaker``,
read as a number in [0, 1), is below the fraction: deterministic across runs and machines, and
stable when speakers are added. Utterances without a speaker share the speaker ``""`` (one group).

Named corpora (``--corpus NAME=PATH``) are held out per corpus (`SpeakerSplit.choose_held_out`):
each corpus's speakers go to ``<dev_split>_<NAME>`` by the same hash test, but a corpus of two or
more speakers always holds out at least one (the lowest hash) and keeps at least one in train (the
highest hash), so a six-speaker corpus such as FSDD gets a held-out speaker at ``--dev_speakers 0.1``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re

from pipeline.records import Utterance

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_input_arg(arg: str) -> tuple[str, str]:
    """Parses ``[SPLIT=]PATH``; a bare PATH is split ``train``.

    Example:
        >>> parse_input_arg("dev=/data/dev.tsv"), parse_input_arg("/data/an4")
        (('dev', '/data/dev.tsv'), ('train', '/data/an4'))
    """
    head, sep, tail = arg.partition("=")
    if sep and _SPLIT_NAME.match(head) and "/" not in head:
        if not tail:
            raise ValueError(f"--input {arg}: empty path after '{head}='")
        return head, tail
    return "train", arg


@dataclasses.dataclass(frozen=True)
class SpeakerSplit:
    """Moves whole speakers from ``source_split`` to ``target_split``.

    Args:
        fraction: Share of speakers (by hash) to move, in (0, 1); or None when ``speakers`` is used.
        speakers: Explicit speaker ids to move.
        source_split: Split the speakers are taken from. Defaults to "train".
        target_split: Split they go to. Defaults to "dev".
        salt: Mixed into the hash; change it to draw a different set. Defaults to "dsnn".

    Example:
        >>> SpeakerSplit.parse("0.1").fraction, SpeakerSplit.parse("fash,mkem").speakers
        (0.1, ('fash', 'mkem'))
    """

    fraction: float | None = None
    speakers: tuple[str, ...] = ()
    source_split: str = "train"
    target_split: str = "dev"
    salt: str = "dsnn"

    def __post_init__(self) -> None:
        if (self.fraction is None) == (not self.speakers):
            raise ValueError("SpeakerSplit needs exactly one of fraction or speakers")
        if self.fraction is not None and not 0.0 < self.fraction < 1.0:
            raise ValueError(f"--dev_speakers fraction must be in (0, 1), got {self.fraction}")
        if self.source_split == self.target_split:
            raise ValueError(f"--dev_split must differ from the split it is taken from ({self.source_split!r})")

    @classmethod
    def parse(cls, value: str, **kwargs) -> "SpeakerSplit":
        """``"0.1"`` (a fraction of speakers) or ``"spk1,spk2"`` (a list)."""
        value = value.strip()
        try:
            return cls(fraction=float(value), **kwargs)
        except ValueError as e:
            if re.fullmatch(r"[0-9.eE+-]+", value):
                raise ValueError(f"--dev_speakers {value}: {e}") from None
        speakers = tuple(s.strip() for s in value.split(",") if s.strip())
        if not speakers:
            raise ValueError(f"--dev_speakers {value!r}: expected a fraction in (0, 1) or a comma list of speakers")
        return cls(speakers=speakers, **kwargs)

    def score(self, speaker: str) -> float:
        """The speaker's hash, a number in [0, 1): SHA-1 of ``salt``, NUL, ``speaker``."""
        digest = hashlib.sha1(f"{self.salt}\0{speaker}".encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") / 2.0 ** 64

    def is_held_out(self, speaker: str) -> bool:
        """True when ``speaker`` goes to the target split."""
        if self.speakers:
            return speaker in self.speakers
        return self.score(speaker) < self.fraction

    def corpus_split(self, corpus: str) -> str:
        """The held-out split of the named corpus ``corpus``: ``<target_split>_<corpus>``, e.g. ``dev_fsdd``."""
        return f"{self.target_split}_{corpus}"

    def choose_held_out(self, speakers) -> frozenset[str]:
        """The held-out speakers of one named corpus, given all its speakers.

        With a list, the listed speakers of this corpus. With a fraction, the speakers that
        `is_held_out` picks, adjusted so that a corpus of two or more speakers holds out at least one
        (the one of lowest `score`) and keeps at least one in train (the one of highest `score`). A
        one-speaker corpus holds out nobody.

        Example:
            >>> sorted(SpeakerSplit(0.1).choose_held_out(["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]))
            ['george']
        """
        speakers = sorted(set(speakers))
        held = {s for s in speakers if self.is_held_out(s)}
        if self.speakers or len(speakers) < 2:
            return frozenset(held)
        ranked = sorted(speakers, key=lambda s: (self.score(s), s))
        if not held:
            held = {ranked[0]}
        if len(held) == len(speakers):
            held.discard(ranked[-1])
        return frozenset(held)

    def assign_in_corpus(self, utt: Utterance, held_out: frozenset[str]) -> Utterance:
        """Returns the named corpus's ``utt`` moved to `corpus_split` when its speaker is in ``held_out``."""
        if utt.split == self.source_split and utt.speaker in held_out:
            return dataclasses.replace(utt, split=self.corpus_split(utt.corpus))
        return utt

    def assign(self, utt: Utterance) -> Utterance:
        """Returns ``utt`` with its split changed when its speaker is held out."""
        if utt.split == self.source_split and self.is_held_out(utt.speaker):
            return dataclasses.replace(utt, split=self.target_split)
        return utt
