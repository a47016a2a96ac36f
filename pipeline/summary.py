"""Counts for ``dataset.json``: inputs, written utterances/frames/samples per split, rejects by reason.

Every branch of the pipeline emits small ``(kind, key, value)`` tuples and one `SummaryCombineFn`
adds them up, so the ``input == written + rejected`` check compares counts taken at different
places in the graph (a silently dropped element shows up as a mismatch).
"""
from __future__ import annotations

import apache_beam as beam

INPUT, WRITTEN, REJECTED = "input", "written", "rejected"


class SummaryCombineFn(beam.CombineFn):
    """Combines ``(kind, key, value)`` tuples into a summary dict.

    ``("input", "", 1)`` per input item; ``("written", split, (1, frames, samples))`` per written
    utterance; ``("rejected", reason, 1)`` per reject.

    Example:
        >>> fn = SummaryCombineFn()
        >>> acc = fn.add_input(fn.create_accumulator(), ("written", "train", (1, 98, 16000)))
        >>> fn.extract_output(acc)["splits"]["train"]
        {'num_utterances': 1, 'num_frames': 98, 'num_samples': 16000}
    """

    def create_accumulator(self):
        return {"input": 0, "splits": {}, "rejects": {}}

    def add_input(self, acc, item):
        kind, key, value = item
        if kind == INPUT:
            acc["input"] += value
        elif kind == WRITTEN:
            old = acc["splits"].get(key, (0, 0, 0))
            acc["splits"][key] = tuple(a + b for a, b in zip(old, value))
        elif kind == REJECTED:
            acc["rejects"][key] = acc["rejects"].get(key, 0) + value
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
        return result

    def extract_output(self, acc):
        return {
            "input": acc["input"],
            "splits": {s: {"num_utterances": v[0], "num_frames": v[1], "num_samples": v[2]}
                       for s, v in sorted(acc["splits"].items())},
            "rejects": dict(sorted(acc["rejects"].items())),
        }
