"""Tests of dsnn_keras.dataset on a tiny prepared directory in the contract format."""
import json

import numpy as np
import pytest

from dsnn_keras import fileio
from dsnn_keras.config import DataConfig
from dsnn_keras.dataset import DatasetError, PreparedDataset
from dsnn_keras.frontend import FeatureConfig
from dsnn_keras.model import output_lengths
from fixtures_data import build_prepared_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return build_prepared_dataset(tmp_path_factory.mktemp("ds") / "prepared", num_train=24, num_dev=5)


def test_reads_metadata_cmvn_and_tokenizer(prepared):
    ds = PreparedDataset.from_dir(prepared)
    assert ds.split_names == ("train", "dev")
    assert ds.num_utterances("train") == 24
    assert ds.cmvn_mean.shape == (80,) and ds.cmvn_std.dtype == np.float32
    assert ds.blank_id == ds.vocab_size == len(ds.pieces())
    assert ds.tokenizer().decode(ds.tokenizer().encode("one two")) == "one two"


def test_examples_match_their_tokens_and_frame_counts(prepared):
    ds = PreparedDataset.from_dir(prepared)
    examples = list(ds.examples("dev"))
    assert len(examples) == 5
    sp = ds.tokenizer()
    for ex in examples:
        assert ex["features"].dtype == np.float32 and ex["features"].shape[1] == 80
        assert sp.decode(ex["token_ids"].tolist()) == ex["transcript"]
    assert sorted(ds.frame_counts("dev")) == sorted(e["features"].shape[0] for e in examples)


def test_refuses_a_dataset_with_other_features(prepared):
    ds = PreparedDataset.from_dir(prepared)
    ds.check_feature_config(FeatureConfig())
    with pytest.raises(DatasetError, match="num_mel_bins: dataset 80 vs model 40"):
        ds.check_feature_config(FeatureConfig(num_mel_bins=40))


def test_missing_or_broken_directory_is_a_clear_error(tmp_path, prepared):
    with pytest.raises(DatasetError, match="no dataset.json"):
        PreparedDataset.from_dir(tmp_path)
    meta = json.loads((prepared / "dataset.json").read_text())
    meta["format_version"] = 7
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="format_version must be 1"):
        PreparedDataset.from_dir(bad)


def test_batches_respect_frame_budget_and_cover_the_epoch(prepared):
    ds = PreparedDataset.from_dir(prepared)
    cfg = DataConfig(max_frames_per_batch=300, max_batch_size=8, num_buckets=3, max_utterance_frames=200)
    seen = 0
    for batch in ds.training_batches("train", cfg, seed=1, epoch=0):
        b, t, bins = batch["features"].shape
        assert bins == 80 and b <= 8
        assert b * int(max(batch["num_frames"])) <= 300
        assert t == int(max(batch["num_frames"]))
        assert batch["labels"].shape[1] == int(max(batch["label_lengths"]))
        seen += b
    assert seen == 24


@pytest.mark.parametrize("sorted_epochs", [0, 1])
def test_an_epochs_pipeline_runs_without_the_autotuner_whose_thread_stalls_the_next_epoch(prepared, sorted_epochs):
    # Deleting an autotuned iterator waits out its model thread's sleep (up to 60 s): the trainer's
    # first batch of every epoch stalled 12-60 s on the demo before this (docs/training.md).
    ds = PreparedDataset.from_dir(prepared)
    cfg = DataConfig(max_frames_per_batch=300, max_batch_size=8, num_buckets=3, max_utterance_frames=200,
                     sorted_epochs=sorted_epochs)
    batches = ds.training_batches("train", cfg, seed=1, epoch=0)
    assert batches.options().autotune.enabled is False
    assert sum(int(b["features"].shape[0]) for b in batches) == 24


def test_order_is_reproducible_per_epoch_and_skip_resumes(prepared):
    ds = PreparedDataset.from_dir(prepared)
    cfg = DataConfig(max_frames_per_batch=300, max_batch_size=4, num_buckets=2, max_utterance_frames=200)

    def ids(epoch, skip=0):
        return [tuple(b["num_frames"].numpy()) + tuple(b["labels"].numpy().ravel())
                for b in ds.training_batches("train", cfg, seed=3, epoch=epoch, skip_batches=skip)]

    first = ids(0)
    assert ids(0) == first
    assert ids(1) != first
    assert ids(0, skip=2) == first[2:]


def test_drops_utterances_too_short_for_their_labels(prepared):
    ds = PreparedDataset.from_dir(prepared)
    cfg = DataConfig(max_frames_per_batch=300, max_batch_size=8, num_buckets=2, max_utterance_frames=200)
    never = lambda frames: frames * 0  # noqa: E731 - a model that outputs no frames
    assert list(ds.training_batches("train", cfg, 0, output_lengths=never)) == []
    kept = sum(int(b["features"].shape[0])
               for b in ds.training_batches("train", cfg, 0, output_lengths=output_lengths))
    assert 0 < kept <= 24


def test_sorted_epochs_visit_buckets_shortest_first_then_shuffle(prepared):
    ds = PreparedDataset.from_dir(prepared)
    cfg = DataConfig(max_frames_per_batch=300, max_batch_size=4, num_buckets=3, max_utterance_frames=200,
                     sorted_epochs=1)

    def longest(epoch, skip=0):
        return [int(max(b["num_frames"])) for b in
                ds.training_batches("train", cfg, seed=3, epoch=epoch, skip_batches=skip)]

    sorted_epoch = longest(0)
    boundaries, _ = ds._buckets("train", cfg, 1)
    buckets = [int(np.searchsorted(boundaries, n, side="right")) for n in sorted_epoch]
    assert buckets == sorted(buckets) and len(set(buckets)) > 1
    assert sum(int(b["features"].shape[0]) for b in ds.training_batches("train", cfg, 3, epoch=0)) == 24
    assert longest(0, skip=2) == sorted_epoch[2:]
    # Later epochs go back to the shuffled bucketing and still cover every utterance once.
    assert sum(int(b["features"].shape[0]) for b in ds.training_batches("train", cfg, 3, epoch=1)) == 24


def _file_order(ds):
    return [(round(float(ex["features"].sum()), 1), tuple(int(t) for t in ex["token_ids"]))
            for ex in ds.examples("train")]


def _trained_batches(ds, cfg):
    return [[(round(float(features.sum()), 1), tuple(int(t) for t in labels[:length]))
             for features, labels, length in zip(batch["features"].numpy(), batch["labels"].numpy(),
                                                 batch["label_lengths"].numpy())]
            for batch in ds.training_batches("train", cfg, seed=0, epoch=0)]


def test_default_buffer_shuffles_the_whole_split_so_a_file_order_is_not_trained_in_runs(prepared):
    # The prepared files keep input order (corpus by corpus): with a small buffer every batch holds
    # neighbours in the files (one corpus); with the default (null) batches mix the whole split.
    ds = PreparedDataset.from_dir(prepared)
    files = _file_order(ds)
    assert len(set(files)) == 24
    first_half = set(files[:12])

    def halves(batch):
        return {item in first_half for item in batch}

    cfg = dict(max_frames_per_batch=1000, max_batch_size=4, num_buckets=1, max_utterance_frames=200)
    small = _trained_batches(ds, DataConfig(shuffle_buffer=1, **cfg))
    assert sorted(map(tuple, small)) == sorted(tuple(files[i:i + 4]) for i in range(0, 24, 4))
    assert all(len(halves(batch)) == 1 for batch in small)
    assert ds.shuffle_buffer_size("train", DataConfig()) == 24
    whole = _trained_batches(ds, DataConfig(**cfg))
    assert sorted(item for batch in whole for item in batch) == sorted(files)
    assert sum(len(halves(batch)) == 2 for batch in whole) >= 3


def test_buffer_holds_only_what_fits_its_memory_budget(tmp_path):
    root = build_prepared_dataset(tmp_path / "big", num_train=96, num_dev=2, max_words=3)
    ds = PreparedDataset.from_dir(root)
    size = sum((root / name).stat().st_size for name in ds._split("train")["files"])
    assert size > 2 ** 20, "the fixture must exceed 1 MiB for this test"
    fitting = ds.shuffle_buffer_size("train", DataConfig(shuffle_buffer_mb=1))
    assert fitting == int(96 * 2 ** 20 / size) and 0 < fitting < 96
    assert ds.shuffle_buffer_size("train", DataConfig(shuffle_buffer=7, shuffle_buffer_mb=1)) == 7
    # Files in input order (no train_order recorded: prepared before 2026-12-06): the trainer warns.
    assert ds.record_order("train") == "input"
    message = ds.describe_shuffle("train", DataConfig(shuffle_buffer_mb=1))
    assert message.startswith("warning:") and f"shuffling {fitting} of its 96" in message
    assert "re-run dsnn-prepare" in message
    # Written in a shuffled order: a partial buffer is a sample of the whole split, no warning.
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "train_order": "shuffled"}))
    shuffled = PreparedDataset.from_dir(root)
    assert shuffled.record_order("train") == "shuffled" and shuffled.record_order("dev") == "input"
    message = shuffled.describe_shuffle("train", DataConfig(shuffle_buffer_mb=1))
    assert message.startswith(f"shuffle buffer: {fitting} of 96 train utterances") and "shuffled order" in message
    assert shuffled.describe_shuffle("train", DataConfig()) == "shuffle buffer: the whole train split (96 utterances)"
    assert shuffled.describe_shuffle("train", DataConfig(shuffle_buffer=7)) == \
        "shuffle buffer: 7 of 96 train utterances (data.shuffle_buffer)"


def test_a_partial_buffer_reads_the_files_in_another_order_each_epoch(tmp_path, monkeypatch):
    root = build_prepared_dataset(tmp_path / "sharded", num_train=40, num_dev=2, train_shards=4, max_words=12)
    ds = PreparedDataset.from_dir(root)
    names = ds.files("train")
    assert len(names) == 4
    size = sum(fileio.file_size(f) for f in names)
    partial = DataConfig(shuffle_buffer_mb=1)   # the default null buffer, holding part of the split
    assert size > 2 ** 20, "the fixture must exceed 1 MiB"
    assert ds.shuffle_buffer_size("train", partial) < 40
    orders = [ds.training_files("train", partial, seed=0, epoch=epoch) for epoch in range(4)]
    assert all(sorted(order) == names for order in orders)
    assert len({tuple(order) for order in orders}) > 1
    assert ds.training_files("train", partial, seed=0, epoch=2) == orders[2]   # resumable
    assert ds.training_files("train", DataConfig(), seed=0, epoch=3) == names   # whole split: name order
    # An explicit buffer keeps name order: a run started before the change resumes reading the same.
    assert ds.training_files("train", DataConfig(shuffle_buffer=2), seed=0, epoch=3) == names
    # training_batches reads the files in that order.
    seen, records = [], PreparedDataset.records
    monkeypatch.setattr(PreparedDataset, "records",
                        lambda self, split, files=None: (seen.append(files), records(self, split, files))[1])
    ds.training_batches("train", partial, seed=0, epoch=1)
    assert seen == [orders[1]]
