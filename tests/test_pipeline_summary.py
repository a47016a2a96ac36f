"""Count aggregation for dataset.json."""
from pipeline.summary import INPUT, REJECTED, WRITTEN, SummaryCombineFn


def test_adds_and_merges_counts():
    fn = SummaryCombineFn()
    a = fn.create_accumulator()
    for item in [(INPUT, "", 1), (INPUT, "", 1), (WRITTEN, "train", (1, 10, 1600)), (REJECTED, "too_short", 1)]:
        a = fn.add_input(a, item)
    b = fn.add_input(fn.create_accumulator(), (WRITTEN, "train", (1, 5, 800)))
    out = fn.extract_output(fn.merge_accumulators([a, b]))
    assert out == {"input": 2, "splits": {"train": {"num_utterances": 2, "num_frames": 15, "num_samples": 2400}},
                   "rejects": {"too_short": 1}}
