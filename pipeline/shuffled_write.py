"""Writing a split's records in a shuffled order, so a partial shuffle buffer still mixes corpora.

`dsnn-train` shuffles the whole train split when its records fit ``data.shuffle_buffer_mb``
(2 GiB by default: about 18 hours of 80-bin features). A larger split is shuffled through a buffer
of as many utterances as fit, and a buffer mixes only neighbours: with records in input order
(corpus by corpus, speaker by speaker, an utterance's speed and augmentation copies side by side)
the batches would hold one corpus, then the next. `WriteShuffledTFRecords` writes the records in an
order drawn from a hash of ``(salt, utt_id)``: shard ``i`` holds the ``i``-th slice of the hash
range, sorted by hash, so the files read in name order are one uniformly random permutation of the
split, and any run of neighbours is a uniform sample of it.

The order is a function of the utterance ids alone: the same inputs give the same files on any
runner, any number of workers, and on a retried bundle (a shard is written whole by one call, to a
temporary name, then renamed into place).

Example:
    >>> with beam.Pipeline() as p:                                   # doctest: +SKIP
    ...     _ = (p | beam.Create([("utt-1", b"..."), ("utt-2", b"...")])
    ...          | WriteShuffledTFRecords("/out/train/data", salt="dsnn"))
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable

import apache_beam as beam

# A shard is sorted in one worker's memory; 256 MiB keeps that small on any Dataflow machine type.
TARGET_SHARD_BYTES = 256 * 2 ** 20
_KEY_BYTES = 8
_KEY_RANGE = 2 ** (8 * _KEY_BYTES)


def order_key(utt_id: str, salt: str) -> int:
    """The utterance's place in the shuffled order: 64 bits of SHA-256 over ``salt`` and ``utt_id``."""
    digest = hashlib.sha256(f"{salt}\0{utt_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:_KEY_BYTES], "big")


def shard_count(total_bytes: int, num_shards: int = 0, target_shard_bytes: int = TARGET_SHARD_BYTES) -> int:
    """``num_shards`` when given (> 0), else enough shards of at most ``target_shard_bytes``."""
    if num_shards > 0:
        return num_shards
    return max(1, math.ceil(total_bytes / target_shard_bytes))


def shard_of(key: int, num_shards: int) -> int:
    """Shard ``i`` holds the keys in ``[i, i + 1) * 2**64 / num_shards`` (a range, so the
    shards in order are the whole order)."""
    return key * num_shards // _KEY_RANGE


def shard_name(prefix: str, index: int, num_shards: int, suffix: str) -> str:
    """The name Beam's ``WriteToTFRecord`` gives shard ``index`` (``PREFIX-00000-of-00004SUFFIX``)."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}"


def _write_tfrecords(path: str, records: Iterable[bytes]) -> None:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil  # the framing WriteToTFRecord writes

    # Written whole to a temporary name and renamed, so a retried or killed call never leaves a
    # partial shard under the final name.
    temporary = f"{path}.partial"
    with FileSystems.create(temporary) as handle:
        for record in records:
            _TFRecordUtil.write_record(handle, record)
    FileSystems.rename([temporary], [path])


class _WriteShard(beam.DoFn):
    def __init__(self, prefix: str, suffix: str):
        self.prefix, self.suffix = prefix, suffix

    def process(self, element, num_shards: int):
        index, keyed = element
        ordered = sorted(keyed, key=lambda item: item[0])
        path = shard_name(self.prefix, index, num_shards, self.suffix)
        _write_tfrecords(path, (record for _, record in ordered))
        yield index


class WriteShuffledTFRecords(beam.PTransform):
    """Writes ``(utt_id, serialized)`` pairs as TFRecord shards in a random order drawn from the ids.

    Args:
        file_prefix: Path prefix of the shards (local or any scheme Beam's FileSystems writes).
        file_name_suffix: Suffix of each shard's name. Defaults to ".tfrecord".
        num_shards: Shards to write; 0 (the default) = enough of at most ``target_shard_bytes``.
            Shards no key falls in are written empty, so the set of names is always complete.
        salt: Salt of the order hash: another salt, another order. Defaults to "dsnn".
        target_shard_bytes: Largest shard with ``num_shards=0``.

    Call arguments:
        pcoll: PCollection of ``(utt_id, serialized)``; the ids must be unique (they are the sort key).

    Returns:
        PCollection of the shard indices written.
    """

    def __init__(self, file_prefix: str, file_name_suffix: str = ".tfrecord", num_shards: int = 0,
                 salt: str = "dsnn", target_shard_bytes: int = TARGET_SHARD_BYTES):
        super().__init__()
        if num_shards < 0:
            raise ValueError(f"num_shards must be >= 0, got {num_shards}")
        if target_shard_bytes <= 0:
            raise ValueError(f"target_shard_bytes must be > 0, got {target_shard_bytes}")
        self.file_prefix, self.file_name_suffix = file_prefix, file_name_suffix
        self.num_shards, self.salt, self.target_shard_bytes = num_shards, salt, target_shard_bytes

    def expand(self, pcoll):
        salt, num_shards, target = self.salt, self.num_shards, self.target_shard_bytes
        keyed = pcoll | "OrderKey" >> beam.MapTuple(lambda utt_id, record: (order_key(utt_id, salt), record))
        count = beam.pvalue.AsSingleton(
            keyed
            | "RecordBytes" >> beam.MapTuple(lambda _, record: len(record))
            | "TotalBytes" >> beam.CombineGlobally(sum)
            | "ShardCount" >> beam.Map(shard_count, num_shards, target))
        written = (keyed
                   | "AssignShard" >> beam.Map(lambda item, n: (shard_of(item[0], n), item), count)
                   | "GroupByShard" >> beam.GroupByKey()
                   | "WriteShard" >> beam.ParDo(_WriteShard(self.file_prefix, self.file_name_suffix), count))
        prefix, suffix = self.file_prefix, self.file_name_suffix

        def write_empty(_, n, done):
            for index in sorted(set(range(n)) - set(done)):
                _write_tfrecords(shard_name(prefix, index, n, suffix), ())
                yield index

        empty = (pcoll.pipeline
                 | "Once" >> beam.Create([None])
                 | "WriteEmptyShards" >> beam.FlatMap(write_empty, count, beam.pvalue.AsList(written)))
        return (written, empty) | "ShardsWritten" >> beam.Flatten()
