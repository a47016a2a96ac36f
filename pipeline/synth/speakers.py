"""Synthetic speakers: espeak-ng voices x variants x pitch x rate, with held-out test settings.

A *speaker* is one :class:`~pipeline.synth.espeak.VoiceSettings`. ``train`` and ``dev`` speakers
are drawn (without replacement, so no speaker is in both) from the grid
``voices x variants x pitches x rates``; ``test`` speakers from
``test_voices x test_variants x test_pitches x test_rates``. The design is refused unless the two
grids share no setting tuple, which holds because at least one dimension is disjoint; by default
the test split uses variants (timbres) *and* pitches *and* rates that train/dev never use, so it
measures generalisation to unseen voices as the real AN4 test speakers do.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import asdict, dataclass

from pipeline.synth.espeak import VoiceSettings

SPLITS = ("train", "dev", "test")

DEFAULT_VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-us-nyc")
# Variants with breath noise (f2, f3, f5 ...) are excluded: espeak-ng renders them non-reproducibly.
DEFAULT_VARIANTS = ("m1", "m2", "m3", "m5", "m6", "f1", "linda", "steph", "anika")
DEFAULT_TEST_VARIANTS = ("m4", "m7", "f4", "belinda")
DEFAULT_PITCHES = (35, 50, 65)
DEFAULT_TEST_PITCHES = (42, 58)
DEFAULT_RATES = (140, 170, 200)
DEFAULT_TEST_RATES = (155, 185)


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: its id (a LibriSpeech speaker directory name), split and voice."""

    speaker_id: str
    split: str
    settings: VoiceSettings

    def to_dict(self) -> dict:
        return {"speaker_id": self.speaker_id, "split": self.split, **asdict(self.settings)}


@dataclass(frozen=True)
class SpeakerDesign:
    """The two setting grids: train/dev and test.

    Args:
        voices, variants, pitches, rates: the train/dev grid (espeak voice names, variant names,
            pitches 0..99, rates in words per minute). Defaults to the ``DEFAULT_*`` tuples.
        test_voices, test_variants, test_pitches, test_rates: the test grid. ``test_voices``
            defaults to ``voices`` (accents are shared; timbre, pitch and rate are held out).

    Raises:
        ValueError: a grid dimension is empty, has duplicates, or the grids overlap.

    Example:
        >>> design = SpeakerDesign()
        >>> set(design.train_grid()).isdisjoint(design.test_grid())
        True
    """

    voices: tuple[str, ...] = DEFAULT_VOICES
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    pitches: tuple[int, ...] = DEFAULT_PITCHES
    rates: tuple[int, ...] = DEFAULT_RATES
    test_voices: tuple[str, ...] | None = None
    test_variants: tuple[str, ...] = DEFAULT_TEST_VARIANTS
    test_pitches: tuple[int, ...] = DEFAULT_TEST_PITCHES
    test_rates: tuple[int, ...] = DEFAULT_TEST_RATES

    def __post_init__(self):
        if self.test_voices is None:
            object.__setattr__(self, "test_voices", tuple(self.voices))
        for name in ("voices", "variants", "pitches", "rates",
                     "test_voices", "test_variants", "test_pitches", "test_rates"):
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            if not values:
                raise ValueError(f"SpeakerDesign.{name}: expected at least one value, got none")
            if len(set(values)) != len(values):
                raise ValueError(f"SpeakerDesign.{name}: expected distinct values, got {list(values)}")
        overlap = set(self.train_grid()) & set(self.test_grid())
        if overlap:
            example = sorted(overlap, key=repr)[0]
            raise ValueError(
                "SpeakerDesign: test settings must never be used in train/dev, but "
                f"{len(overlap)} overlap (e.g. {example.voice_name} rate {example.rate} pitch "
                f"{example.pitch}); make voices, variants, pitches or rates disjoint")

    def train_grid(self) -> list[VoiceSettings]:
        """Every train/dev setting, in a fixed order."""
        return [VoiceSettings(v, var, rate=r, pitch=p)
                for v, var, p, r in itertools.product(self.voices, self.variants, self.pitches, self.rates)]

    def test_grid(self) -> list[VoiceSettings]:
        """Every test setting, in a fixed order."""
        return [VoiceSettings(v, var, rate=r, pitch=p)
                for v, var, p, r in itertools.product(self.test_voices, self.test_variants,
                                                      self.test_pitches, self.test_rates)]

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}


def speakers_needed(num_utterances: int, utts_per_speaker: int) -> int:
    """How many speakers a split of ``num_utterances`` gets (0 for an empty split)."""
    return math.ceil(num_utterances / utts_per_speaker) if num_utterances > 0 else 0


def assign_speakers(design: SpeakerDesign, split_sizes: dict[str, int], utts_per_speaker: int,
                    seed: int) -> list[Speaker]:
    """Draw the speakers of every split.

    Each split gets ``ceil(size / utts_per_speaker)`` speakers, fewer when its grid is smaller
    (then each speaker says more). Train and dev speakers come from one seeded shuffle of the
    train/dev grid, so they never share a setting; test speakers from the test grid.

    Args:
        design: the setting grids.
        split_sizes: utterances per split name (``train``, ``dev``, ``test``).
        utts_per_speaker: target utterances per speaker (>= 1).
        seed: the corpus seed.

    Returns:
        Speakers ordered train, dev, test, with ids ``spk0000``, ``spk0001`` ...

    Example:
        >>> [s.split for s in assign_speakers(SpeakerDesign(), {"train": 20, "dev": 5}, 10, 0)]
        ['train', 'train', 'dev']
    """
    if utts_per_speaker < 1:
        raise ValueError(f"utts_per_speaker: expected >= 1, got {utts_per_speaker}")
    unknown = set(split_sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"split_sizes: unknown split {sorted(unknown)[0]!r}; expected one of {SPLITS}")
    rng = random.Random(f"{seed}:speakers")
    train_pool = design.train_grid()
    rng.shuffle(train_pool)
    test_pool = design.test_grid()
    rng.shuffle(test_pool)
    wanted = {s: speakers_needed(split_sizes.get(s, 0), utts_per_speaker) for s in SPLITS}
    # dev takes its speakers first (at most half the pool, at least one if it has utterances).
    n_dev = min(wanted["dev"], max(1, len(train_pool) // 2)) if wanted["dev"] else 0
    n_train = min(wanted["train"], len(train_pool) - n_dev)
    if wanted["train"] and n_train < 1:
        raise ValueError("SpeakerDesign: the train/dev grid has too few settings for separate train and dev speakers")
    chosen = {"train": train_pool[n_dev:n_dev + n_train], "dev": train_pool[:n_dev],
              "test": test_pool[:min(wanted["test"], len(test_pool))]}
    speakers = []
    for split in SPLITS:
        for settings in chosen[split]:
            speakers.append(Speaker(f"spk{len(speakers):04d}", split, settings))
    return speakers
