"""Counts for ``dataset.json``: inputs, written utterances/frames/samples per split, rejects by reason,
and the speed-perturbed copies per split and factor.

Every branch of the pipeline emits small ``(kind, key, value)`` tuples and one `SummaryCombineFn`
adds them up, so the ``input == written + rejected`` check compares counts taken at different
places in the graph (a silently dropped element shows up as a mismatch). Speed-perturbed copies
are counted apart from the utterances they were made from, so that check still compares inputs with
utterances, and each factor's count can be checked against them (`check_perturbed`).
"""
from __future__ import annotations

import apache_beam as beam

from pipeline.speed import format_factor

INPUT, WRITTEN, REJECTED, PERTURBED = "input", "written", "rejected", "perturbed"


class SummaryCombineFn(beam.CombineFn):
    """Combines ``(kind, key, value)`` tuples into a summary dict.

    ``("input", "", 1)`` per input item; ``("written", split, (1, frames, samples))`` per written
    utterance; ``("rejected", reason, 1)`` per reject; ``("perturbed", (split, factor), (1, frames,
    samples))`` per speed-perturbed copy written (the ``"perturbed"`` entry of the output appears only
    when there is one).

    Example:
        >>> fn = SummaryCombineFn()
        >>> acc = fn.add_input(fn.create_accumulator(), ("written", "train", (1, 98, 16000)))
        >>> fn.extract_output(acc)["splits"]["train"]
        {'num_utterances': 1, 'num_frames': 98, 'num_samples': 16000}
    """

    def create_accumulator(self):
        return {"input": 0, "splits": {}, "rejects": {}, "perturbed": {}}

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
