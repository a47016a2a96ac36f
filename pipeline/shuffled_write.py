"""Writing a split's records in a shuffled order, so a partial shuffle buffer still mixes corpora.

`dsnn-train` shuffles the whole train split when its records fit ``data.shuffle_buffer_mb``
(2 GiB by default: about 18 hours of 80-bin features). A larger split is shuffled through a buffer
of as many utterances as fit, and a buffer mixes only neighbours: with records in input order
(corpus by corpus, speaker by speaker, an utterance's speed and augmentation copies side by side)
the batches would hold one corpus, then the next. Here the records are put in an order drawn from
a hash of ``(salt, utt_id)``: shard ``i`` of ``n`` holds the ``i``-th slice of the hash range,
sorted by hash (ties, i.e. repeated ids, by the record's bytes), so the files read in name order
are one uniformly random permutation of the split, and any run of neighbours is a uniform sample.
The order is a function of the records alone: the same inputs give the same files on any runner.

Two ways, the same files:

- `reorder_tfrecord_files` (what `dsnn-prepare` uses with the local runner): after the job has
  written the split in input order, two passes on disk (records to hash-range bucket files, then
  each bucket sorted and written as a shard). Memory: one shard. The local runner would hold a
  ``GroupByKey`` of the whole split in memory.
- `WriteShuffledTFRecords` (distributed runners, e.g. Dataflow): a Beam transform that groups the
  records by shard (Dataflow's shuffle holds them on disk) and writes each shard from one worker's
  memory. Its shard count comes from the split's size, a side input: Dataflow then stores the
  records once more before grouping them (about twice the shuffle volume of the split).

Example:
    >>> with beam.Pipeline(runner) as p:                              # doctest: +SKIP
    ...     _ = (p | beam.Create([("utt-1", b"..."), ("utt-2", b"...")])
    ...          | WriteShuffledTFRecords("gs://bucket/out/train/data", salt="dsnn"))
    >>> reorder_tfrecord_files(["/out/train/data-00000-of-00001.tfrecord"], "/out/train/data")  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable, Iterable, Iterator, Sequence

import apache_beam as beam

LOG = logging.getLogger("dsnn.prepare")

# A shard is sorted in one worker's memory: about 256 MiB with the size-based count.
TARGET_SHARD_BYTES = 256 * 2 ** 20
# An explicit --num_shards whose shards come out this many times the target gets a warning.
LARGE_SHARD_FACTOR = 4
_KEY_BYTES = 8
_FRAMING_BYTES = 16   # a TFRecord's length (8 bytes) and two CRCs (4 each) around its data
_KEY_RANGE = 2 ** (8 * _KEY_BYTES)
# Bucket files open at once in `reorder_tfrecord_files` (more buckets: more passes over the input).
_OPEN_BUCKETS = 256


def order_key(utt_id: str, salt: str) -> bytes:
    """The utterance's place in the shuffled order: 8 bytes of SHA-256 over ``salt`` and ``utt_id``
    (bytes, which sort as the big-endian number they are)."""
    return hashlib.sha256(f"{salt}\0{utt_id}".encode("utf-8")).digest()[:_KEY_BYTES]


def shard_count(total_bytes: int, num_shards: int = 0, target_shard_bytes: int = TARGET_SHARD_BYTES) -> int:
    """``num_shards`` when given (> 0), else enough shards of about ``target_shard_bytes``."""
    if num_shards > 0:
        if total_bytes / num_shards > LARGE_SHARD_FACTOR * target_shard_bytes:
            LOG.warning("--num_shards %d: shards of ~%.0f MiB, each sorted in one worker's memory; "
                        "0 picks ~%d MiB shards", num_shards, total_bytes / num_shards / 2 ** 20,
                        target_shard_bytes // 2 ** 20)
        return num_shards
    return max(1, math.ceil(total_bytes / target_shard_bytes))


def shard_of(key: bytes, num_shards: int) -> int:
    """Shard ``i`` holds the keys in ``[i, i + 1) * 2**64 / num_shards`` (a range, so the
    shards in order are the whole order)."""
    return int.from_bytes(key, "big") * num_shards // _KEY_RANGE


def shard_name(prefix: str, index: int, num_shards: int, suffix: str) -> str:
    """The name Beam's ``WriteToTFRecord`` gives shard ``index`` (``PREFIX-00000-of-00004SUFFIX``)."""
    return f"{prefix}-{index:05d}-of-{num_shards:05d}{suffix}"


def example_utt_id(record: bytes) -> str:
    """The ``utt_id`` of a serialised ``tf.train.Example`` (the prepared-record contract)."""
    from tensorflow.core.example import example_pb2

    return example_pb2.Example.FromString(record).features.feature["utt_id"].bytes_list.value[0].decode("utf-8")


def _write_tfrecords(path: str, records: Iterable[bytes]) -> None:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil  # the framing WriteToTFRecord writes

    if "://" in path:   # an object appears only once its upload completes: no partial one to hide
        with FileSystems.create(path) as handle:
            for record in records:
                _TFRecordUtil.write_record(handle, record)
        return
    # Locally: whole under a name of this attempt's own, then renamed, so neither a killed attempt
    # nor two racing ones leave a partial shard under the final name.
    temporary = f"{path}.partial-{uuid.uuid4().hex[:8]}"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(temporary, "wb") as handle:
            for record in records:
                _TFRecordUtil.write_record(handle, record)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _remote(path: str) -> bool:
    return "://" in path


def _read_tfrecords(path: str) -> Iterator[bytes]:
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.io.tfrecordio import _TFRecordUtil

    with (FileSystems.open(path, compression_type="uncompressed") if _remote(path) else open(path, "rb")) as handle:
        while (record := _TFRecordUtil.read_record(handle)) is not None:
            yield record


def _size(path: str) -> int:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes if _remote(path) else os.path.getsize(path)


def _normalized(path: str) -> str:
    return path if _remote(path) else os.path.normcase(os.path.abspath(path))


def _exists(path: str) -> bool:
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path) if _remote(path) else os.path.exists(path)


def _delete(path: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    if _remote(path):
        FileSystems.delete([path])
    elif os.path.exists(path):
        os.remove(path)


def _replace(source: str, target: str) -> None:
    from apache_beam.io.filesystems import FileSystems

    if _remote(target):
        FileSystems.rename([source], [target])
    else:
        os.replace(source, target)


class _WriteShard(beam.DoFn):
    def __init__(self, prefix: str, suffix: str):
        self.prefix, self.suffix = prefix, suffix

    def process(self, element, num_shards: int):
        index, keyed = element
        path = shard_name(self.prefix, index, num_shards, self.suffix)
        _write_tfrecords(path, (record for _, record in sorted(keyed)))
        yield index


class WriteShuffledTFRecords(beam.PTransform):
    """Writes ``(utt_id, serialized)`` pairs as TFRecord shards in a random order drawn from the ids.

    For distributed runners; on the local runner the ``GroupByKey`` holds the whole split in
    memory, and `reorder_tfrecord_files` gives the same files within one shard's memory.

    Args:
        file_prefix: Path prefix of the shards (local or any scheme Beam's FileSystems writes).
        file_name_suffix: Suffix of each shard's name. Defaults to ".tfrecord".
        num_shards: Shards to write; 0 (the default) = enough of about ``target_shard_bytes``.
            Shards no key falls in are written empty, so the set of names is always complete.
        salt: Salt of the order hash: another salt, another order. Defaults to "dsnn".
        target_shard_bytes: Shard size aimed at with ``num_shards=0``.

    Call arguments:
        pcoll: PCollection of ``(utt_id, serialized)``.

    Returns:
        PCollection of the shard indices written.
    """

    def __init__(self, file_prefix: str, file_name_suffix: str = ".tfrecord", num_shards: int = 0,
                 salt: str = "dsnn", target_shard_bytes: int = TARGET_SHARD_BYTES):
        super().__init__()
        _check_counts(num_shards, target_shard_bytes)
        self.file_prefix, self.file_name_suffix = file_prefix, file_name_suffix
        self.num_shards, self.salt, self.target_shard_bytes = num_shards, salt, target_shard_bytes

    def expand(self, pcoll):
        salt, num_shards, target = self.salt, self.num_shards, self.target_shard_bytes
        keyed = pcoll | "OrderKey" >> beam.MapTuple(lambda utt_id, record: (order_key(utt_id, salt), record))
        count = beam.pvalue.AsSingleton(
            keyed
            | "RecordBytes" >> beam.MapTuple(lambda _, record: len(record) + _FRAMING_BYTES)   # as on disk
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


def _check_counts(num_shards: int, target_shard_bytes: int) -> None:
    if num_shards < 0:
        raise ValueError(f"num_shards must be >= 0, got {num_shards}")
    if target_shard_bytes <= 0:
        raise ValueError(f"target_shard_bytes must be > 0, got {target_shard_bytes}")


def reorder_tfrecord_files(files: Sequence[str], file_prefix: str, file_name_suffix: str = ".tfrecord",
                           num_shards: int = 0, salt: str = "dsnn",
                           target_shard_bytes: int = TARGET_SHARD_BYTES,
                           utt_id_of: Callable[[bytes], str] = example_utt_id) -> list[str]:
    """Rewrites TFRecord ``files`` as shards in the order `WriteShuffledTFRecords` writes.

    Pass 1 streams the records into hash-range bucket files (at most 256 open at once: more
    buckets take more passes over the input); pass 2 sorts each bucket in memory (about one shard)
    and writes it as shard ``PREFIX-NNNNN-of-MMMMMSUFFIX``. The buckets lie beside the shards when
    they are local, else in a local temporary directory (``TMPDIR``; as much space as the split).
    Once every shard is written (staged under temporary names) they are renamed into place and
    the inputs deleted; a failure before that point leaves the inputs as they were and removes
    what it staged. Disk: at the peak the split is there twice (inputs and staged shards).

    Args:
        files: The TFRecord files, in any order (local, or any scheme Beam's FileSystems reads).
        file_prefix: Path prefix of the shards (likewise).
        file_name_suffix: Suffix of each shard's name. Defaults to ".tfrecord".
        num_shards: Shards; 0 (the default) = enough of about ``target_shard_bytes``.
        salt: Salt of the order hash. Defaults to "dsnn".
        target_shard_bytes: Shard size aimed at with ``num_shards=0``.
        utt_id_of: Function record -> utterance id. Defaults to the ``tf.train.Example``'s ``utt_id``.

    Returns:
        The shard paths, in order.
    """
    _check_counts(num_shards, target_shard_bytes)
    files = list({_normalized(f): f for f in files}.values())
    count = shard_count(sum(_size(f) for f in files), num_shards, target_shard_bytes)
    LOG.info("reordering %d file(s) into %d shard(s) at %s", len(files), count, file_prefix)
    start = time.monotonic()
    scratch = tempfile.mkdtemp(prefix="dsnn-reorder-") if _remote(file_prefix) else None
    bucket_prefix = os.path.join(scratch, "bucket") if scratch else f"{file_prefix}.bucket"
    buckets = [f"{bucket_prefix}-{i:05d}" for i in range(count)]
    shards = [shard_name(file_prefix, i, count, file_name_suffix) for i in range(count)]
    tag = uuid.uuid4().hex[:8]
    staged = [f"{path}.sorted-{tag}" for path in shards]
    committed = False
    try:
        for first in range(0, count, _OPEN_BUCKETS):
            with contextlib.ExitStack() as stack:
                handles = {i: stack.enter_context(open(buckets[i], "wb"))
                           for i in range(first, min(count, first + _OPEN_BUCKETS))}
                _fill_buckets(files, handles, count, salt, utt_id_of)
        for bucket, target in zip(buckets, staged):
            with contextlib.closing(_read_tfrecords(bucket)) as framed_records:
                pairs = [(framed[:_KEY_BYTES], framed[_KEY_BYTES:]) for framed in framed_records]
            pairs.sort()
            _write_tfrecords(target, (record for _, record in pairs))
            del pairs
            os.remove(bucket)
        # Every shard is written: from here on nothing is deleted but the inputs the shards replace.
        # Renaming first overwrites an input that carries a shard's name; the others go after.
        committed = True
        for target, path in zip(staged, shards):
            _replace(target, path)
        replaced = {_normalized(path) for path in shards}
        for path in files:
            if _normalized(path) not in replaced:   # an input under a shard's name is that shard now
                _delete(path)
    finally:
        for path in buckets:
            if os.path.exists(path):
                os.remove(path)
        if not committed:
            for path in staged:
                if _exists(path):
                    _delete(path)
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    LOG.info("reordered into %d shard(s) in %.1f s", count, time.monotonic() - start)
    return shards


def _fill_buckets(files, handles, count, salt, utt_id_of) -> None:
    from apache_beam.io.tfrecordio import _TFRecordUtil

    for path in files:
        with contextlib.closing(_read_tfrecords(path)) as records:   # closed at once if utt_id_of raises
            for record in records:
                key = order_key(utt_id_of(record), salt)
                handle = handles.get(shard_of(key, count))
                if handle is not None:
                    _TFRecordUtil.write_record(handle, key + record)
