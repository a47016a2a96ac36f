"""Builds a tiny prepared dataset directory in the exact contract format, for tests of any part.

The corpus is synthetic and learnable in seconds: every word of a small vocabulary is a tone burst
of its own pitch, and an utterance is 1-3 words separated by short silences. The features come from
the shared frontend (`dsnn_keras.frontend.log_mel_spectrogram`), the tokenizer is a real
SentencePiece model trained on the train transcripts, and the TFRecords, ``dataset.json`` and
``cmvn.json`` follow the "Prepared dataset directory" contract (docs: /tmp/contracts.md, DESIGN §2).

Example:
    >>> from fixtures_data import build_prepared_dataset   # tests/ is on sys.path under pytest
    >>> root = build_prepared_dataset(tmp_path / "prepared", num_train=24, num_dev=6)
    >>> PreparedDataset.from_dir(root).num_utterances("train")
    24
"""
from __future__ import annotations

import datetime
import io
import json
import pathlib
from typing import Sequence

import numpy as np

#: Word -> tone frequency (Hz). Distinct pitches, well inside the mel range of the default config.
WORDS = {"one": 300.0, "two": 600.0, "three": 1000.0, "four": 1600.0, "five": 2500.0, "six": 3600.0}


def synth_utterance(words: Sequence[str], sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Returns float32 samples: each word a 0.12-0.2 s tone burst, separated by 0.05 s silences."""
    pieces = [np.zeros(int(0.05 * sample_rate), np.float32)]
    for word in words:
        duration = rng.uniform(0.12, 0.2)
        t = np.arange(int(duration * sample_rate)) / sample_rate
        tone = 0.3 * np.sin(2 * np.pi * WORDS[word] * t) * np.hanning(t.size)
        pieces.append(tone.astype(np.float32))
        pieces.append(np.zeros(int(0.05 * sample_rate), np.float32))
    audio = np.concatenate(pieces)
    audio += rng.normal(0, 0.003, audio.size).astype(np.float32)
    return audio


def _train_tokenizer(texts: Sequence[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        hard_vocab_limit=False, character_coverage=1.0, minloglevel=2)
    return model.getvalue()


def _example(utt_id: str, speaker: str, transcript: str, features: np.ndarray, token_ids):
    import tensorflow as tf

    def _bytes(value: str):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    def _ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    return tf.train.Example(features=tf.train.Features(feature={
        "utt_id": _bytes(utt_id),
        "speaker": _bytes(speaker),
        "transcript": _bytes(transcript),
        "features": tf.train.Feature(float_list=tf.train.FloatList(value=features.reshape(-1).tolist())),
        "num_frames": _ints([features.shape[0]]),
        "token_ids": _ints(token_ids),
    }))


def build_prepared_dataset(root, num_train: int = 32, num_dev: int = 8, seed: int = 0,
                           feature_config=None, vocab_size: int = 24,
                           train_shards: int = 2, max_words: int = 3,
                           nan_train_utterances: Sequence[int] = ()) -> pathlib.Path:
    """Writes a tiny prepared dataset directory (train and dev splits) and returns its path.

    Args:
        root: Directory to create (must not exist or be empty).
        num_train: Utterances in the ``train`` split. Defaults to 32.
        num_dev: Utterances in the ``dev`` split. Defaults to 8.
        seed: Seed for words, durations and noise. Defaults to 0.
        feature_config: A `FeatureConfig`. Defaults to `FeatureConfig()` (16 kHz, 80 bins).
        vocab_size: Requested SentencePiece vocabulary (a soft limit). Defaults to 24.
        train_shards: Number of TFRecord files for ``train``. Defaults to 2.
        max_words: Most words per utterance. Defaults to 3.
        nan_train_utterances: Indices of train utterances whose features are written as NaN (to
            test NaN handling); CMVN ignores them. Defaults to none.

    Returns:
        The dataset directory, with ``dataset.json``, ``cmvn.json``, ``tokenizer.model``,
        ``rejects.jsonl`` and ``<split>/data-XXXXX-of-YYYYY.tfrecord``.
    """
    import sentencepiece as spm
    import tensorflow as tf

    from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram

    config = feature_config or FeatureConfig()
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = sorted(WORDS)
    splits = {"train": num_train, "dev": num_dev}
    utterances: dict[str, list[tuple[str, str, str, np.ndarray]]] = {}
    for split, count in splits.items():
        rows = []
        for i in range(count):
            words = list(rng.choice(names, size=int(rng.integers(1, max_words + 1))))
            audio = synth_utterance(words, config.sample_rate, rng)
            feats = log_mel_spectrogram(tf.constant(audio), config).numpy().astype(np.float32)
            rows.append((f"{split}-{i:04d}", f"spk{i % 4}", " ".join(words), feats))
        utterances[split] = rows
    clean_train = [r[3] for i, r in enumerate(utterances["train"]) if i not in set(nan_train_utterances)]
    for i in nan_train_utterances:
        utt_id, speaker, text, feats = utterances["train"][i]
        utterances["train"][i] = (utt_id, speaker, text, np.full_like(feats, np.nan))

    (root / "tokenizer.model").write_bytes(
        _train_tokenizer([r[2] for r in utterances["train"]], vocab_size))
    sp = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))

    split_info = {}
    for split, rows in utterances.items():
        shards = train_shards if split == "train" else 1
        (root / split).mkdir(exist_ok=True)
        files = [f"{split}/data-{s:05d}-of-{shards:05d}.tfrecord" for s in range(shards)]
        writers = [tf.io.TFRecordWriter(str(root / f)) for f in files]
        for i, (utt_id, speaker, text, feats) in enumerate(rows):
            ids = sp.encode(text)
            writers[i % shards].write(_example(utt_id, speaker, text, feats, ids).SerializeToString())
        for writer in writers:
            writer.close()
        frames = int(sum(r[3].shape[0] for r in rows))
        split_info[split] = {
            "num_utterances": len(rows),
            "hours": frames * config.frame_step_ms / 1000.0 / 3600.0,
            "num_frames": frames,
            "files": files,
        }

    train_feats = (np.concatenate(clean_train, axis=0) if clean_train
                   else np.random.default_rng(0).normal(size=[2, config.num_mel_bins]))
    (root / "cmvn.json").write_text(json.dumps({
        "mean": train_feats.mean(axis=0).astype(float).tolist(),
        "std": np.maximum(train_feats.std(axis=0), 1e-3).astype(float).tolist(),
        "num_frames": int(train_feats.shape[0]),
    }))
    (root / "rejects.jsonl").write_text("")
    total = sum(splits.values())
    (root / "dataset.json").write_text(json.dumps({
        "format_version": 1,
        "feature_config": config.to_dict(),
        "tokenizer": {"model": "tokenizer.model", "vocab_size": int(sp.get_piece_size()),
                      "model_type": "unigram"},
        "cmvn": "cmvn.json",
        "splits": split_info,
        "rejects": {"total": 0, "by_reason": {}},
        "input_count": total,
        "created_by": {"command": ["tests/fixtures_data.py"], "versions": {"tensorflow": tf.__version__},
                       "time": datetime.datetime.now(datetime.timezone.utc).isoformat()},
    }, indent=2))
    return root


# A model section for `small_config` with a tiny causal Conformer encoder instead of the LSTM.
SMALL_CONFORMER = {"encoder": "conformer", "conformer": {"dim": 16, "blocks": 2, "heads": 2, "ff_mult": 2,
                                                         "conv_kernel": 5}}


def small_config(**sections):
    """A `dsnn_keras.config.Config` smaller than configs/tiny.yaml, for fast tests.

    Two levels (0 and 0.8), one LSTM of 24 units, pruning ramp between steps 2 and 6, 8 steps.
    Keyword arguments are section dicts merged over these values, e.g.
    ``small_config(training={"mode": "single"})``.
    """
    from dsnn_keras.config import config_from_dict

    values = {
        "version": 1,
        "model": {"conv_channels": [4, 4], "lstm_units": [24], "dropout": 0.0},
        "features": {},
        "data": {"max_frames_per_batch": 600, "max_batch_size": 8, "num_buckets": 2,
                 "max_utterance_frames": 500,
                 "specaugment": {"freq_masks": 1, "freq_mask_width": 5, "time_masks": 1,
                                 "time_mask_width": 4, "time_mask_max_ratio": 0.2}},
        "pruning": {"levels": [0.0, 0.8], "begin_step": 2, "end_step": 6, "frequency": 2},
        "training": {"total_steps": 8, "learning_rate": 0.005, "warmup_steps": 2,
                     "final_learning_rate": 0.001, "checkpoint_every": 2, "keep_checkpoints": 5,
                     "log_every": 2, "eval_every": 0, "eval_max_utterances": 4,
                     "max_consecutive_nonfinite": 3},
    }
    for name, update in sections.items():
        values[name] = {**values.get(name, {}), **update} if isinstance(update, dict) else update
    return config_from_dict(values, "<small_config>")
