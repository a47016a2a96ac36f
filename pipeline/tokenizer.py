"""SentencePiece tokenizer trained in-process on the training transcripts.

Ids are ``0..vocab_size-1`` with ``unk_id=0`` and no BOS/EOS/PAD; the CTC blank is ``vocab_size``
(added by the model). ``hard_vocab_limit=False`` lets a small corpus produce a smaller vocabulary
than asked instead of failing; the actual size is what `vocab_size` reports.
"""
from __future__ import annotations

import io
from typing import Iterable

MODEL_TYPES = ("unigram", "bpe", "char")


def train_tokenizer(transcripts: Iterable[str], vocab_size: int = 128,
                    model_type: str = "unigram") -> bytes:
    """Trains a SentencePiece model on ``transcripts``.

    Args:
        transcripts: Normalised training transcripts (one sentence each).
        vocab_size: Requested vocabulary size (an upper bound on small corpora). Defaults to 128.
        model_type: ``"unigram"``, ``"bpe"`` or ``"char"``. Defaults to "unigram".

    Returns:
        The serialized model (the bytes of ``tokenizer.model``).

    Raises:
        ValueError: on no transcripts, a bad option, or a vocabulary too small for the characters.

    Example:
        >>> model = train_tokenizer(["yes", "no", "yes no"], vocab_size=16)
        >>> load_tokenizer(model).encode("yes", out_type=str)
        ['▁yes']
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ValueError(f"tokenizer model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    if vocab_size < 2:
        raise ValueError(f"--vocab_size must be >= 2, got {vocab_size}")
    lines = sorted(t for t in transcripts if t)  # sorted: the model does not depend on input order
    if not lines:
        raise ValueError("no training transcripts to train the tokenizer on (is the train split empty?)")
    chars = len(set("".join(lines).replace(" ", ""))) + 2  # + unk + the '▁' word boundary
    if vocab_size < chars and model_type != "char":
        raise ValueError(
            f"--vocab_size {vocab_size} is smaller than the {chars} pieces needed to cover the "
            f"training characters; use --vocab_size >= {chars}")
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        vocab_size=vocab_size,
        model_type=model_type,
        hard_vocab_limit=False,
        character_coverage=1.0,
        normalization_rule_name="identity",
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    return out.getvalue()


def load_tokenizer(model: bytes):
    """Loads a serialized model into a ``sentencepiece.SentencePieceProcessor``."""
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model)


def vocab_size(model: bytes) -> int:
    """The actual number of pieces in a serialized model."""
    return load_tokenizer(model).get_piece_size()
