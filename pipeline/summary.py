"""Counts for ``dataset.json``: inputs, written utterances/frames/samples per split, rejects by reason,
the speed-perturbed copies per split and factor, the augmented copies and corpus-weight repetitions,
and per named corpus its utterances, examples, speakers and the utterances its weight left out.

Every branch of the pipeline emits small ``(kind, key, value)`` tuples and one `SummaryCombineFn`
adds them up, so the ``input == written + rejected (+ sampled out)`` check compares counts taken at
different places in the graph (a silently dropped element shows up as a mismatch). Copies are
counted apart from the utterances they were made from, so that check still compares inputs with
utterances, and each kind of copy can be checked against them (`check_perturbed`, `check_copies`).
"""
from __future__ import annotations

import apache_beam as beam

from pipeline.speed import format_factor

INPUT, WRITTEN, REJECTED, PERTURBED = "input", "written", "rejected", "perturbed"
AUGMENTED, REPEATED, CORPUS, SAMPLED_OUT, SPEAKERS = "augmented", "repeated", "corpus", "sampled_out", "speakers"
_SUMMED = {AUGMENTED: "augmented", REPEATED: "repeated", CORPUS: "corpora", SAMPLED_OUT: "sampled_out"}


def _add(table: dict, key, value) -> None:
    old = table.get(key)
    table[key] = value if old is None else (old + value if isinstance(value, int) else
                                            tuple(a + b for a, b in zip(old, value)))


class SummaryCombineFn(beam.CombineFn):
    """Combines ``(kind, key, value)`` tuples into a summary dict.

    ``("input", "", 1)`` per input item; ``("written", split, (1, frames, samples))`` per written
    utterance; ``("rejected", reason, 1)`` per reject; ``("perturbed", (split, factor), (1, frames,
    samples))`` per speed-perturbed copy written (the ``"perturbed"`` entry of the output appears only
    when there is one). With augmentation or named corpora also: ``("augmented", (split, k), (1,
    frames, samples))`` per augmented copy ``k`` (not repeated); ``("repeated", split, (1, frames,
    samples))`` per repetition of an example by a corpus weight; ``("corpus", (corpus, split),
    (utterances, repeats, examples, frames, samples))`` per example of a named corpus (an original
    counts its utterance and how many times its weight writes it); ``("sampled_out", corpus, 1)`` per
    train utterance its weight left out; ``("speakers", (corpus, split), speaker)``. Each appears in
    the output only when there is one, so an output without them is as before.

    Example:
        >>> fn = SummaryCombineFn()
        >>> acc = fn.add_input(fn.create_accumulator(), ("written", "train", (1, 98, 16000)))
        >>> fn.extract_output(acc)["splits"]["train"]
        {'num_utterances': 1, 'num_frames': 98, 'num_samples': 16000}
    """

    def create_accumulator(self):
        return {"input": 0, "splits": {}, "rejects": {}, "perturbed": {}}

    @staticmethod
    def _table(acc, name):
        return acc.setdefault(name, {})

    def add_input(self, acc, item):
        kind, key, value = item
        if kind == INPUT:
            acc["input"] += value
        elif kind == WRITTEN:
            old = acc["splits"].get(key, (0, 0, 0))
            acc["splits"][key] = tuple(a + b for a, b in zip(old, value))
        elif kind == REJECTED:
            acc["rejects"][key] = acc["rejects"].get(key, 0) + value
        elif kind == PERTURBED:
            old = acc["perturbed"].get(key, (0, 0, 0))
            acc["perturbed"][key] = tuple(a + b for a, b in zip(old, value))
        elif kind in _SUMMED:
            _add(self._table(acc, _SUMMED[kind]), key, value)
        elif kind == SPEAKERS:
            self._table(acc, "speakers").setdefault(key, set()).update(value if isinstance(value, set) else {value})
        else:
            raise ValueError(f"SummaryCombineFn: unknown kind {kind!r}")
        return acc

    def merge_accumulators(self, accumulators):
        result = self.create_accumulator()
        for acc in accumulators:
            self.add_input(result, (INPUT, "", acc["input"]))
            for split, value in acc["splits"].items():
                self.add_input(result, (WRITTEN, split, value))
            for reason, n in acc["rejects"].items():
                self.add_input(result, (REJECTED, reason, n))
            for key, value in acc.get("perturbed", {}).items():
                self.add_input(result, (PERTURBED, key, value))
            for kind, name in _SUMMED.items():
                for key, value in acc.get(name, {}).items():
                    self.add_input(result, (kind, key, value))
            for key, value in acc.get("speakers", {}).items():
                self.add_input(result, (SPEAKERS, key, value))
        return result

    def extract_output(self, acc):
        out = {
            "input": acc["input"],
            "splits": {s: {"num_utterances": v[0], "num_frames": v[1], "num_samples": v[2]}
                       for s, v in sorted(acc["splits"].items())},
            "rejects": dict(sorted(acc["rejects"].items())),
        }
        if acc.get("perturbed"):
            perturbed = {}
            for (split, factor), v in sorted(acc["perturbed"].items()):
                perturbed.setdefault(split, {})[format_factor(factor)] = {
                    "num_utterances": v[0], "num_frames": v[1], "num_samples": v[2]}
            out["perturbed"] = perturbed
        counts = ("num_utterances", "num_frames", "num_samples")
        if acc.get("augmented"):
            out["augmented"] = {}
            for (split, k), v in sorted(acc["augmented"].items()):
                out["augmented"].setdefault(split, {})[str(k)] = dict(zip(counts, v))
        if acc.get("repeated"):
            out["repeated"] = {split: dict(zip(counts, v)) for split, v in sorted(acc["repeated"].items())}
        if acc.get("sampled_out"):
            out["sampled_out"] = dict(sorted(acc["sampled_out"].items()))
        corpora = {}
        for (corpus, split), v in sorted(acc.get("corpora", {}).items()):
            corpora.setdefault(corpus, {})[split] = dict(zip(("source_utterances", "repeats", *counts), v))
        for (corpus, split), speakers in sorted(acc.get("speakers", {}).items()):
            if corpus:
                corpora.setdefault(corpus, {}).setdefault(split, {})["speakers"] = sorted(speakers)
        if corpora:
            out["corpora"] = corpora
        return out


def check_perturbed(summary: dict, factors, splits) -> None:
    """Checks that every perturbed split holds one copy per factor of each utterance written.

    Args:
        summary: `SummaryCombineFn`'s output.
        factors: The speed factors (1.0 among them).
        splits: The perturbed splits present in the output.

    Raises:
        RuntimeError: naming the split and factor whose count differs, or a perturbed copy in a
            split that is not perturbed.
    """
    perturbed = summary.get("perturbed", {})
    stray = sorted(set(perturbed) - set(splits))
    if stray:
        raise RuntimeError(f"speed-perturbed copies in split(s) {stray}, which are never perturbed")
    for split in splits:
        originals = summary["splits"].get(split, {}).get("num_utterances", 0)
        for factor in factors:
            if factor == 1.0:
                continue
            copies = perturbed.get(split, {}).get(format_factor(factor), {}).get("num_utterances", 0)
            if copies != originals:
                raise RuntimeError(f"split {split!r}: {copies} copies at speed {format_factor(factor)} for "
                                   f"{originals} utterances written (expected one per utterance)")


def check_copies(summary: dict, factors, augment_copies: int, augmented_splits, train_split: str = "train") -> None:
    """Checks the augmented copies and the corpus-weight repetitions against the utterances written.

    With ``F`` speed factors and ``N`` augmented copies on a split: every augmented copy number ``k``
    has ``utterances × F`` examples; the repetitions number ``Σ (repeats − 1) × F × (1 + N)`` over
    the utterances of named corpora; and every corpus's examples in the split number
    ``Σ repeats × F × (1 + N)``.

    Args:
        summary: `SummaryCombineFn`'s output.
        factors: The speed factors of ``train_split`` (``(1.0,)`` when off).
        augment_copies: ``N`` (0 when off).
        augmented_splits: The augmented splits present in the output.
        train_split: The split that speed perturbation, augmentation and weights apply to.

    Raises:
        RuntimeError: naming the split (and copy or corpus) whose count differs, or copies in a split
            that is never augmented or repeated.
    """
    augmented = summary.get("augmented", {})
    stray = sorted(set(augmented) - set(augmented_splits))
    if stray:
        raise RuntimeError(f"augmented copies in split(s) {stray}, which are never augmented")
    stray = sorted(set(summary.get("repeated", {})) - {train_split})
    if stray:
        raise RuntimeError(f"corpus-weight repetitions in split(s) {stray}; only {train_split!r} is weighted")
    for split in augmented_splits:
        originals = summary["splits"].get(split, {}).get("num_utterances", 0)
        for k in range(1, augment_copies + 1):
            copies = augmented.get(split, {}).get(str(k), {}).get("num_utterances", 0)
            if copies != originals * len(factors):
                raise RuntimeError(f"split {split!r}: {copies} examples of augmented copy {k} for {originals} "
                                   f"utterances x {len(factors)} speed factor(s) (expected one per example)")
    per_utterance = len(factors) * (1 + (augment_copies if train_split in augmented_splits else 0))
    corpora = summary.get("corpora", {})
    extra = sum(c.get(train_split, {}).get("repeats", 0) - c.get(train_split, {}).get("source_utterances", 0)
                for c in corpora.values())
    repeated = summary.get("repeated", {}).get(train_split, {}).get("num_utterances", 0)
    if repeated != extra * per_utterance:
        raise RuntimeError(f"split {train_split!r}: {repeated} repeated examples; the corpus weights call for "
                           f"{extra} extra repetitions x {per_utterance} example(s) per utterance")
    for corpus, splits in corpora.items():
        counts = splits.get(train_split)
        if counts and counts.get("num_utterances", 0) != counts.get("repeats", 0) * per_utterance:
            raise RuntimeError(f"corpus {corpus!r}: {counts['num_utterances']} {train_split} examples for "
                               f"{counts['source_utterances']} utterances written {counts['repeats']} times in all "
                               f"x {per_utterance} example(s) each")
