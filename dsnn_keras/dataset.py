"""Reading a prepared dataset directory (written by ``dsnn-prepare``) and batching it for training.

The directory format is the "Prepared dataset directory" contract: ``dataset.json``, ``cmvn.json``,
``tokenizer.model`` and ``<split>/data-*.tfrecord`` of ``tf.train.Example`` records.

Example:
    >>> ds = PreparedDataset.from_dir("prepared/an4")
    >>> ds.check_feature_config(config.feature_config())
    >>> for batch in ds.training_batches("train", config.data, seed=0, epoch=0):
    ...     batch["features"].shape     # [batch, max_frames, num_mel_bins], raw log-mel
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError

FORMAT_VERSION = 1


class DatasetError(DsnnError, ValueError):
    """A prepared dataset directory is missing, malformed, or does not fit the model."""


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
    """A prepared dataset directory, loaded and checked.

    Use `PreparedDataset.from_dir`; the fields mirror ``dataset.json`` and ``cmvn.json``. ``root``
    and ``tokenizer_path`` are `pathlib.Path` for a local directory and URL strings for a remote
    one (``gs://...``, read through `tf.io.gfile`; `dsnn_keras.fileio`).
    """

    root: fileio.AnyPath
    feature_config: Any  # dsnn_keras.frontend.FeatureConfig
    cmvn_mean: np.ndarray
    cmvn_std: np.ndarray
    tokenizer_path: fileio.AnyPath
    vocab_size: int
    metadata: dict

    @classmethod
    def from_dir(cls, path) -> "PreparedDataset":
        """Loads ``path/dataset.json`` and ``cmvn.json``; raises `DatasetError` naming the problem."""
        from dsnn_keras.frontend import FeatureConfig

        root = fileio.as_path(path)
        meta_path = fileio.join(root, "dataset.json")
        if not fileio.isfile(meta_path):
            raise DatasetError(f"{root}: not a prepared dataset directory (no dataset.json); "
                               "create one with dsnn-prepare")
        try:
            meta = json.loads(fileio.read_text(meta_path))
        except json.JSONDecodeError as err:
            raise DatasetError(f"{meta_path}: not valid JSON ({err})") from None
        for key in ("format_version", "feature_config", "tokenizer", "cmvn", "splits"):
            if key not in meta:
                raise DatasetError(f"{meta_path}: missing key {key!r}")
        if meta["format_version"] != FORMAT_VERSION:
            raise DatasetError(f"{meta_path}: format_version must be {FORMAT_VERSION}, "
                               f"got {meta['format_version']!r}")
        try:
            features = FeatureConfig.from_dict(meta["feature_config"])
        except (ValueError, TypeError) as err:
            raise DatasetError(f"{meta_path}: feature_config: {err}") from None
        cmvn_path = fileio.join(root, meta["cmvn"])
        try:
            cmvn = json.loads(fileio.read_text(cmvn_path))
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"{cmvn_path}: cannot read CMVN statistics ({err})") from None
        try:
            mean = np.asarray(cmvn.get("mean", []), np.float32)
            std = np.asarray(cmvn.get("std", []), np.float32)
        except (AttributeError, TypeError, ValueError):
            raise DatasetError(f"{cmvn_path}: expected an object with lists of numbers 'mean' and 'std'") from None
        if mean.shape != (features.num_mel_bins,) or std.shape != (features.num_mel_bins,):
            raise DatasetError(f"{cmvn_path}: mean and std must have {features.num_mel_bins} values "
                               f"(num_mel_bins), got shapes {list(mean.shape)} and {list(std.shape)}")
        bad = [name for name, values in (("mean", mean), ("std", std)) if not np.all(np.isfinite(values))]
        if bad:
            raise DatasetError(f"{cmvn_path}: non-finite (NaN/Inf) values in {' and '.join(bad)}: the statistics "
                               "are unusable (a non-finite input reached them); re-run dsnn-prepare on clean audio")
        if np.any(std <= 0):
            raise DatasetError(f"{cmvn_path}: std must be > 0 in every bin")
        tokenizer_path = fileio.join(root, meta["tokenizer"]["model"])
        if not fileio.isfile(tokenizer_path):
            raise DatasetError(f"{meta_path}: tokenizer model {tokenizer_path} not found")
        for split, info in meta["splits"].items():
            for name in info.get("files", []):
                if not fileio.isfile(fileio.join(root, name)):
                    raise DatasetError(f"{meta_path}: split {split!r} lists missing file {name}")
        return cls(root=root, feature_config=features, cmvn_mean=mean, cmvn_std=std,
                   tokenizer_path=tokenizer_path, vocab_size=int(meta["tokenizer"]["vocab_size"]),
                   metadata=meta)

    # ---- metadata -------------------------------------------------------------------------
    @property
    def blank_id(self) -> int:
        """The CTC blank: one past the last SentencePiece id."""
        return self.vocab_size

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(self.metadata["splits"])

    def _split(self, split: str) -> dict:
        if split not in self.metadata["splits"]:
            raise DatasetError(f"{self.root}: no split {split!r}; available: {list(self.split_names)}")
        return self.metadata["splits"][split]

    def record_order(self, split: str) -> str:
        """``"shuffled"`` when `dsnn-prepare` wrote ``split``'s records in a hash-drawn order
        (``--train_order shuffled``, the train split since 2026-12-06), else ``"input"``."""
        return self.metadata.get("train_order", "input") if split == "train" else "input"

    def num_utterances(self, split: str) -> int:
        return int(self._split(split)["num_utterances"])

    def files(self, split: str) -> list[str]:
        return [str(fileio.join(self.root, name)) for name in self._split(split)["files"]]

    def check_feature_config(self, expected) -> None:
        """Raises `DatasetError` if the dataset's features differ from ``expected`` (a FeatureConfig)."""
        mine, theirs = self.feature_config.to_dict(), expected.to_dict()
        diff = [f"{k}: dataset {mine.get(k)!r} vs model {theirs.get(k)!r}"
                for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        if diff:
            raise DatasetError(f"{fileio.join(self.root, 'dataset.json')}: feature_config differs from the model's "
                               f"config ({'; '.join(diff)}); re-run dsnn-prepare with matching features")

    def tokenizer(self):
        """The SentencePieceProcessor of ``tokenizer.model`` (read as bytes: it may be remote)."""
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_proto=fileio.read_bytes(self.tokenizer_path))

    def pieces(self) -> list[str]:
        """The SentencePiece piece of every id 0..vocab_size-1."""
        sp = self.tokenizer()
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]

    # ---- records --------------------------------------------------------------------------
    def records(self, split: str, files: Optional[Sequence[str]] = None):
        """Unbatched tf.data.Dataset of parsed examples, in file order.

        Elements: ``utt_id``, ``speaker``, ``transcript`` (tf.string), ``features`` (float32
        ``[T, num_mel_bins]``), ``num_frames`` (int32), ``token_ids`` (int32 ``[L]``),
        ``num_tokens`` (int32).
        """
        import tensorflow as tf

        bins = self.feature_config.num_mel_bins
        spec = {
            "utt_id": tf.io.FixedLenFeature([], tf.string),
            "speaker": tf.io.FixedLenFeature([], tf.string, default_value=""),
            "transcript": tf.io.FixedLenFeature([], tf.string),
            "features": tf.io.RaggedFeature(tf.float32),
            "num_frames": tf.io.FixedLenFeature([], tf.int64),
            "token_ids": tf.io.RaggedFeature(tf.int64),
        }

        def parse(record):
            ex = tf.io.parse_single_example(record, spec)
            frames = tf.cast(ex["num_frames"], tf.int32)
            tokens = tf.cast(ex["token_ids"], tf.int32)
            return {
                "utt_id": ex["utt_id"], "speaker": ex["speaker"], "transcript": ex["transcript"],
                "features": tf.reshape(ex["features"], [frames, bins]),
                "num_frames": frames, "token_ids": tokens, "num_tokens": tf.size(tokens),
            }

        files = self.files(split) if files is None else list(files)
        return tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=True)

    def examples(self, split: str) -> Iterator[dict]:
        """Yields every example of ``split`` as numpy/str values (for evaluation and inspection)."""
        for ex in self.records(split).as_numpy_iterator():
            yield {
                "utt_id": ex["utt_id"].decode("utf-8"),
                "speaker": ex["speaker"].decode("utf-8"),
                "transcript": ex["transcript"].decode("utf-8"),
                "features": ex["features"].astype(np.float32),
                "token_ids": ex["token_ids"].astype(np.int32),
            }

    def frame_counts(self, split: str) -> np.ndarray:
        """Frames of every utterance of ``split`` (one quick pass over the records)."""
        import tensorflow as tf

        spec = {"num_frames": tf.io.FixedLenFeature([], tf.int64)}
        ds = tf.data.TFRecordDataset(self.files(split)).map(
            lambda r: tf.io.parse_single_example(r, spec)["num_frames"])
        return np.fromiter(ds.as_numpy_iterator(), dtype=np.int64)

    # ---- batching -------------------------------------------------------------------------
    def training_batches(self, split: str, data_config, seed: int, epoch: int = 0,
                         skip_batches: int = 0,
                         output_lengths: Optional[Callable] = None,
                         min_batch_size: int = 1):
        """One epoch of shuffled, length-bucketed training batches (a tf.data.Dataset).

        Utterances are shuffled with seed ``seed + epoch`` (so an epoch's order is reproducible
        and a resumed run can skip the batches it already used), grouped into buckets of similar
        length, and batched so that ``batch * longest <= data_config.max_frames_per_batch``.
        Utterances longer than ``max_utterance_frames``, with no tokens, or too short for CTC
        (when ``output_lengths`` is given) are dropped.

        Args:
            split: Split name.
            data_config: `dsnn_keras.config.DataConfig`.
            seed: Base seed.
            epoch: Epoch index (selects the order).
            skip_batches: Batches of this epoch to skip (resume).
            output_lengths: Optional function frames -> model output frames (int32 tensors).
            min_batch_size: Smallest batch size of any bucket (e.g. the number of replicas).

        Returns:
            tf.data.Dataset of dicts: ``features`` float32 ``[B, T, bins]`` (padded with zeros),
            ``num_frames`` int32 ``[B]``, ``labels`` int32 ``[B, L]`` (padded with 0),
            ``label_lengths`` int32 ``[B]``.
        """
        import tensorflow as tf

        cfg = data_config
        boundaries, batch_sizes = self._buckets(split, cfg, min_batch_size)
        buffer = self.shuffle_buffer_size(split, cfg)

        def keep(ex):
            ok = (ex["num_frames"] <= cfg.max_utterance_frames) & (ex["num_tokens"] > 0)
            if output_lengths is not None:
                tokens = ex["token_ids"]
                repeats = tf.reduce_sum(tf.cast(tokens[1:] == tokens[:-1], tf.int32))
                ok &= output_lengths(ex["num_frames"]) >= ex["num_tokens"] + repeats
            return ok

        def select(ex):
            return {"features": ex["features"], "num_frames": ex["num_frames"],
                    "labels": ex["token_ids"], "label_lengths": ex["num_tokens"]}

        ds = self.records(split, self.training_files(split, data_config, seed, epoch, buffer)).filter(keep).map(select)
        padded_shapes = {"features": [None, self.feature_config.num_mel_bins], "num_frames": [],
                         "labels": [None], "label_lengths": []}
        padding_values = {"features": 0.0, "num_frames": 0, "labels": 0, "label_lengths": 0}
        if epoch < cfg.sorted_epochs:
            # SortaGrad: buckets in ascending length, each shuffled, batched with its own size.
            lower = [0] + list(boundaries)
            upper = list(boundaries) + [np.iinfo(np.int32).max]
            sorted_ds = None
            for index, (lo, hi, size) in enumerate(zip(lower, upper, batch_sizes)):
                part = ds.filter(lambda ex, lo=lo, hi=hi: (ex["num_frames"] >= lo) & (ex["num_frames"] < hi))
                part = part.shuffle(buffer, seed=seed * 1000003 + epoch * 101 + index,
                                    reshuffle_each_iteration=False)
                part = part.padded_batch(size, padded_shapes=padded_shapes, padding_values=padding_values)
                sorted_ds = part if sorted_ds is None else sorted_ds.concatenate(part)
            if skip_batches:
                sorted_ds = sorted_ds.skip(skip_batches)
            return sorted_ds.prefetch(2).with_options(epoch_options())
        ds = ds.shuffle(buffer, seed=seed * 1000003 + epoch, reshuffle_each_iteration=False)
        ds = ds.bucket_by_sequence_length(
            element_length_func=lambda ex: ex["num_frames"],
            bucket_boundaries=boundaries, bucket_batch_sizes=batch_sizes,
            padded_shapes=padded_shapes, padding_values=padding_values)
        ds = ds.shuffle(64, seed=seed * 1000003 + epoch + 1, reshuffle_each_iteration=False)
        if skip_batches:
            ds = ds.skip(skip_batches)
        return ds.prefetch(2).with_options(epoch_options())

    def shuffle_buffer_size(self, split: str, data_config) -> int:
        """Utterances in the training shuffle buffer: ``data.shuffle_buffer``, or with null the
        whole split when its files fit ``data.shuffle_buffer_mb``, else as many average-sized
        utterances as fit. A partial buffer mixes neighbours only: fine for a train split
        `dsnn-prepare` wrote in a shuffled order (`record_order`); with files in input order
        (corpus by corpus) the trainer warns."""
        if data_config.shuffle_buffer is not None:
            return int(data_config.shuffle_buffer)
        count = max(1, self.num_utterances(split))
        size = sum(fileio.file_size(f) for f in self.files(split))
        budget = data_config.shuffle_buffer_mb * 2 ** 20
        if size <= budget:
            return count
        return max(1, int(count * budget / size))

    def training_files(self, split: str, data_config, seed: int, epoch: int,
                       buffer: Optional[int] = None) -> list[str]:
        """The files of ``split`` in the order an epoch reads them: another order each epoch
        (seeded by ``seed`` and ``epoch``) when the default buffer (``data.shuffle_buffer: null``)
        holds only part of the split, since a partial buffer mixes neighbours only; else name
        order (so a run with an explicit buffer, e.g. one started before 2026-12-06, resumes
        reading what it read). ``buffer``: `shuffle_buffer_size`, if already known."""
        files = self.files(split)
        if buffer is None:
            buffer = self.shuffle_buffer_size(split, data_config)
        if len(files) > 1 and data_config.shuffle_buffer is None and buffer < self.num_utterances(split):
            order = np.random.default_rng(seed * 1000003 + epoch).permutation(len(files))
            files = [files[i] for i in order]
        return files

    def describe_shuffle(self, split: str, data_config) -> str:
        """One line saying how training shuffles ``split`` (the trainer prints it); starts with
        ``warning:`` when a partial buffer walks files in input order."""
        count = self.num_utterances(split)
        buffer = self.shuffle_buffer_size(split, data_config)
        if buffer >= count:
            return f"shuffle buffer: the whole {split} split ({count} utterances)"
        if data_config.shuffle_buffer is not None:
            return f"shuffle buffer: {buffer} of {count} {split} utterances (data.shuffle_buffer)"
        if self.record_order(split) == "shuffled":
            return (f"shuffle buffer: {buffer} of {count} {split} utterances (the records exceed "
                    f"data.shuffle_buffer_mb = {data_config.shuffle_buffer_mb}; dsnn-prepare wrote them in a "
                    "shuffled order, so each buffer is a sample of the whole split)")
        return (f"warning: the {split} split's records exceed data.shuffle_buffer_mb = "
                f"{data_config.shuffle_buffer_mb}: shuffling {buffer} of its {count} utterances at a time; "
                "the files are in input order (corpus by corpus, speaker by speaker), so batches mix "
                "less than a full shuffle would (raise data.shuffle_buffer_mb, or re-run dsnn-prepare, "
                "which writes the train split in a shuffled order since 2026-12-06)")

    def _buckets(self, split: str, cfg, min_batch_size: int) -> tuple[list[int], list[int]]:
        """Bucket boundaries at length quantiles and per-bucket batch sizes within the frame budget."""
        lengths = self.frame_counts(split)
        lengths = lengths[lengths <= cfg.max_utterance_frames]
        if lengths.size == 0:
            raise DatasetError(f"{self.root}: split {split!r} has no utterance of at most "
                               f"{cfg.max_utterance_frames} frames (data.max_utterance_frames)")
        quantiles = np.quantile(lengths, np.linspace(0, 1, cfg.num_buckets + 1)[1:-1])
        boundaries = sorted({int(q) + 1 for q in quantiles})
        uppers = boundaries + [int(lengths.max()) + 1]
        sizes = [max(min_batch_size, min(cfg.max_batch_size, cfg.max_frames_per_batch // (u - 1 or 1)))
                 for u in uppers]
        return boundaries, sizes

    def eval_batches(self, split: str, batch_size: int = 16, max_utterances: Optional[int] = None):
        """Deterministic padded batches of ``split`` in file order, for decoding.

        Returns:
            tf.data.Dataset of dicts with ``features``, ``num_frames``, ``utt_id``, ``transcript``.
        """
        ds = self.records(split)
        if max_utterances:
            ds = ds.take(max_utterances)
        ds = ds.map(lambda ex: {"features": ex["features"], "num_frames": ex["num_frames"],
                                "utt_id": ex["utt_id"], "transcript": ex["transcript"]})
        return ds.padded_batch(batch_size, padded_shapes={
            "features": [None, self.feature_config.num_mel_bins], "num_frames": [], "utt_id": [],
            "transcript": []})


def epoch_options():
    """tf.data options of one epoch's pipeline: no autotuning.

    An autotuned pipeline runs a model thread that sleeps between optimisation rounds, its period
    doubling up to 60 s; deleting the iterator waits for that sleep to end (measured: the trainer's
    first batch of an epoch stalled 12-60 s on the demo, ~20 % of its training time). An epoch's
    parsing is ~1.5 s of a ~100 s epoch there, so the autotuner has nothing to win. (Several local
    replicas add per-device iterators these options do not reach: `dsnn_keras.distribute.input_options`.)

    Returns:
        A `tf.data.Options` with ``autotune.enabled = False``.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
