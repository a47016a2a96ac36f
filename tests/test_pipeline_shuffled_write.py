"""Tests of pipeline.shuffled_write: the train split's records in a hash-drawn order."""
import json

import numpy as np
import pytest
import soundfile as sf
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import apache_beam as beam
from pipeline.prepare import LOCAL_RUNNER, run
import pipeline.shuffled_write as shuffled_write
from pipeline.shuffled_write import (WriteShuffledTFRecords, order_key, reorder_tfrecord_files, shard_count,
                                     shard_name, shard_of)

IDS = [f"spk{s}-{i:03d}" for s in range(4) for i in range(25)]   # input order: speaker by speaker


def _record(utt_id: str) -> bytes:
    return f"record of {utt_id}".encode()


def _read(path) -> list[bytes]:
    records = []
    with open(path, "rb") as handle:
        while (blob := _TFRecordUtil.read_record(handle)) is not None:
            records.append(blob)
    return records


def _write(tmp_path, ids=IDS, records=None, **kwargs) -> tuple[list, list[bytes]]:
    prefix = str(tmp_path / "data")
    records = records or [_record(u) for u in ids]
    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        shards = (p | beam.Create(list(zip(ids, records))) | WriteShuffledTFRecords(prefix, **kwargs))
        expected = shard_count(sum(len(r) + 16 for r in records), kwargs.get("num_shards", 0),
                               kwargs.get("target_shard_bytes", shuffled_write.TARGET_SHARD_BYTES))
        assert_that(shards, equal_to(list(range(expected))))
    files = sorted(tmp_path.glob("data-*.tfrecord"))
    return files, [record for f in files for record in _read(f)]


def _reorder(tmp_path, ids=IDS, records=None, input_files=2, **kwargs) -> tuple[list, list[bytes]]:
    """Writes the records in input order into ``input_files`` files named like shards, then reorders."""
    from apache_beam.io.tfrecordio import _TFRecordUtil

    tmp_path.mkdir(parents=True, exist_ok=True)
    records = records or [_record(u) for u in ids]
    ids_of = dict(zip(records, ids))
    inputs = [tmp_path / shard_name("data", i, input_files, ".tfrecord") for i in range(input_files)]
    for i, path in enumerate(inputs):
        with open(path, "wb") as handle:
            for record in records[i::input_files]:
                _TFRecordUtil.write_record(handle, record)
    shards = reorder_tfrecord_files([str(p) for p in inputs], str(tmp_path / "data"),
                                    utt_id_of=ids_of.__getitem__, **kwargs)
    files = sorted(tmp_path.glob("data-*.tfrecord"))
    assert [str(f) for f in files] == shards
    assert sorted(p.name for p in tmp_path.iterdir()) == [f.name for f in files]   # inputs, buckets gone
    return files, [record for f in files for record in _read(f)]


def test_writes_every_record_once_in_the_order_of_its_hash(tmp_path):
    files, records = _write(tmp_path)
    assert [f.name for f in files] == ["data-00000-of-00001.tfrecord"]
    assert records == [_record(u) for u in sorted(IDS, key=lambda u: order_key(u, "dsnn"))]
    assert not list(tmp_path.glob("*.partial"))


def test_neighbours_are_a_sample_of_the_whole_split_not_of_one_speaker(tmp_path):
    _, records = _write(tmp_path)
    speakers = [r.decode().split()[-1].split("-")[0] for r in records]
    same = np.mean([a == b for a, b in zip(speakers, speakers[1:])])
    assert same < 0.5   # input order: 96 of 99 neighbours share a speaker; a uniform order ~1/4
    assert {s for s in speakers[:20]} == {"spk0", "spk1", "spk2", "spk3"}


def test_shards_in_name_order_are_consecutive_slices_of_one_order(tmp_path):
    files, records = _write(tmp_path, num_shards=3)
    assert [f.name for f in files] == [f"data-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert records == [_record(u) for u in sorted(IDS, key=lambda u: order_key(u, "dsnn"))]
    assert all(_read(f) for f in files)


def test_shards_no_key_falls_in_are_written_empty(tmp_path):
    files, records = _write(tmp_path, ids=IDS[:2], num_shards=6)
    assert [f.name for f in files] == [f"data-0000{i}-of-00006.tfrecord" for i in range(6)]
    assert sorted(records) == sorted(_record(u) for u in IDS[:2])
    used = {shard_of(order_key(u, "dsnn"), 6) for u in IDS[:2]}
    assert [bool(_read(f)) for f in files] == [i in used for i in range(6)]


def test_shard_count_follows_the_size_when_not_given(tmp_path):
    total = sum(len(_record(u)) + 16 for u in IDS)   # as on disk
    target = total // 3 - 1   # a little under a third: four shards
    files, records = _write(tmp_path, target_shard_bytes=target)
    assert len(files) == shard_count(total, 0, target) == 4
    assert sorted(records) == sorted(_record(u) for u in IDS)


def test_the_same_ids_give_the_same_files_and_another_salt_another_order(tmp_path):
    _, first = _write(tmp_path / "a")
    _, again = _write(tmp_path / "b", ids=list(reversed(IDS)))
    _, salted = _write(tmp_path / "c", salt="other")
    assert first == again
    assert sorted(salted) == sorted(first) and salted != first


@pytest.mark.parametrize("kwargs", [{}, {"num_shards": 3}, {"num_shards": 6}, {"target_shard_bytes": 500}])
def test_reordering_files_on_disk_gives_the_files_the_beam_transform_writes(tmp_path, kwargs):
    beam_files, beam_records = _write(tmp_path / "beam", **kwargs)
    disk_files, disk_records = _reorder(tmp_path / "disk", **kwargs)
    assert [f.name for f in disk_files] == [f.name for f in beam_files]
    assert [f.read_bytes() for f in disk_files] == [f.read_bytes() for f in beam_files]
    assert disk_records == [_record(u) for u in sorted(IDS, key=lambda u: order_key(u, "dsnn"))]


def test_reordering_takes_several_passes_when_more_buckets_than_it_opens_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(shuffled_write, "_OPEN_BUCKETS", 2)
    files, records = _reorder(tmp_path, num_shards=5)
    assert len(files) == 5
    assert records == [_record(u) for u in sorted(IDS, key=lambda u: order_key(u, "dsnn"))]


def test_an_input_named_like_a_shard_but_spelled_otherwise_is_replaced_not_lost(tmp_path, monkeypatch):
    from apache_beam.io.tfrecordio import _TFRecordUtil

    path = tmp_path / shard_name("data", 0, 1, ".tfrecord")
    with open(path, "wb") as handle:
        for u in IDS:
            _TFRecordUtil.write_record(handle, _record(u))
    monkeypatch.chdir(tmp_path)
    shards = reorder_tfrecord_files([f"./{path.name}", path.name], str(tmp_path / "data"), utt_id_of=lambda r: r.decode())
    assert shards == [str(path)]
    assert sorted(_read(path)) == sorted(_record(u) for u in IDS)


def test_a_reorder_that_fails_leaves_its_inputs_as_they_were_and_nothing_else(tmp_path):
    from apache_beam.io.tfrecordio import _TFRecordUtil

    inputs = [tmp_path / shard_name("data", i, 2, ".tfrecord") for i in range(2)]
    for i, path in enumerate(inputs):
        with open(path, "wb") as handle:
            for u in IDS[i::2]:
                _TFRecordUtil.write_record(handle, _record(u))
    before = [p.read_bytes() for p in inputs]
    seen = []

    def broken_id(record):
        seen.append(record)
        if len(seen) == 30:
            raise ValueError("not a tf.train.Example")
        return record.decode()

    with pytest.raises(ValueError, match="not a tf.train.Example"):
        reorder_tfrecord_files([str(p) for p in inputs], str(tmp_path / "data"), num_shards=3, utt_id_of=broken_id)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in inputs]
    assert [p.read_bytes() for p in inputs] == before


def test_repeated_ids_are_ordered_by_their_bytes_so_every_runner_writes_the_same(tmp_path):
    ids = ["same"] * 5 + IDS[:5]
    records = [f"copy {i}".encode() for i in range(5)] + [_record(u) for u in IDS[:5]]
    _, forward = _write(tmp_path / "a", ids=ids, records=records)
    _, backward = _write(tmp_path / "b", ids=ids[::-1], records=records[::-1])
    _, on_disk = _reorder(tmp_path / "c", ids=ids[::-1], records=records[::-1])
    assert forward == backward == on_disk
    assert [r for r in forward if r.startswith(b"copy")] == [f"copy {i}".encode() for i in range(5)]


def test_an_explicit_shard_count_with_huge_shards_is_warned_about(caplog):
    with caplog.at_level("WARNING", logger="dsnn.prepare"):
        assert shard_count(10 * 2 ** 30, num_shards=2) == 2
    assert "--num_shards 2: shards of ~5120 MiB" in caplog.text


def test_shard_of_splits_the_key_range_into_equal_slices():
    def key(value):
        return value.to_bytes(8, "big")

    assert shard_of(key(0), 4) == 0 and shard_of(key(2 ** 64 - 1), 4) == 3 and shard_of(key(2 ** 62), 4) == 1
    assert shard_count(0) == 1 and shard_count(10, num_shards=7) == 7
    assert shard_name("p/data", 3, 12, ".tfrecord") == "p/data-00003-of-00012.tfrecord"
    with pytest.raises(ValueError, match="num_shards must be >= 0"):
        WriteShuffledTFRecords("x", num_shards=-1)


def _tone_manifest(root) -> str:
    rate = 16000
    lines = []
    for i in range(8):
        tone = (0.3 * np.sin(2 * np.pi * (300 + 50 * i) * np.arange(rate // 2) / rate)).astype(np.float32)
        sf.write(root / f"clip{i}.wav", tone, rate)
        lines.append(json.dumps({"audio_filepath": f"clip{i}.wav", "text": f"word {'abcdefgh'[i]}",
                                 "duration": 0.5}))
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    return str(root / "m.jsonl")


@pytest.mark.parametrize("order", ["shuffled", "input"])
def test_dsnn_prepare_writes_the_train_split_in_the_order_asked(tmp_path, order):
    out = tmp_path / "out"
    run(["--input", _tone_manifest(tmp_path), "--out", str(out), "--vocab_size", "16",
         "--tokenizer_type", "char", "--lm_order", "0", "--train_order", order, "--num_shards", "2"])
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["train_order"] == order
    from pipeline.examples import parse_example
    per_file = [[parse_example(r, dataset["feature_config"]["num_mel_bins"])["utt_id"] for r in _read(out / rel)]
                for rel in dataset["splits"]["train"]["files"]]
    ids = [u for file_ids in per_file for u in file_ids]
    assert len(per_file) == 2 and sorted(ids) == [f"clip{i}" for i in range(8)]
    hashed = sorted(ids, key=lambda u: order_key(u, "dsnn"))
    assert hashed != sorted(ids)   # the two orders differ here
    if order == "shuffled":
        assert ids == hashed
    else:   # as read: the manifest's order within each file (Beam deals the records out to the files)
        assert all(file_ids == sorted(file_ids) for file_ids in per_file) and ids != hashed


def test_the_job_shuffling_in_the_pipeline_writes_what_dsnn_prepare_writes_locally(tmp_path):
    # A distributed runner shuffles inside the job (WriteShuffledTFRecords); dsnn-prepare on the local
    # runner writes the input order and reorders on disk. The train files must be the same bytes.
    from pipeline.sources import InputSpec
    from pipeline.transforms import PrepareConfig, build_pipeline

    manifest = _tone_manifest(tmp_path)
    run(["--input", manifest, "--out", str(tmp_path / "local"), "--vocab_size", "16", "--tokenizer_type", "char",
         "--lm_order", "0", "--num_shards", "2"])
    config = PrepareConfig(vocab_size=16, model_type="char", lm_order=0, num_shards=2, reshuffle=False)
    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        build_pipeline(p, [InputSpec("train", manifest, "jsonl")], config, str(tmp_path / "job"))
    local = sorted((tmp_path / "local" / "train").glob("*.tfrecord"))
    job = sorted((tmp_path / "job" / "train").glob("*.tfrecord"))
    assert [f.name for f in job] == [f.name for f in local] == ["data-00000-of-00002.tfrecord",
                                                                "data-00001-of-00002.tfrecord"]
    assert [f.read_bytes() for f in job] == [f.read_bytes() for f in local]
