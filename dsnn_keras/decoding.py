"""Greedy CTC decoding, SentencePiece ids to text, and word/character error rates.

Pure numpy + jiwer at import: no TensorFlow or sentencepiece import, so the exporter, the evaluator
and tests can share it cheaply. TensorFlow tensors are accepted wherever arrays are (through
``np.asarray``). `greedy_ctc_graph` is the same decoding rule as TensorFlow ops, for the exported
graph (it imports TensorFlow when called).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

WORD_BOUNDARY = "\u2581"  # '▁', SentencePiece's escaped whitespace.
UNK_PIECE = "<unk>"
UNK_SURFACE = "\u2047"  # '⁇', what SentencePiece's own decode() prints for <unk>.
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def greedy_ctc_decode(logits_or_log_probs: Any, lengths: Any, blank_id: int) -> list[list[int]]:
    """Best-path CTC decoding: argmax per frame, merge repeats, drop blanks.

    Args:
        logits_or_log_probs: ``[batch, frames, num_classes]`` scores (logits, log-probabilities or
            probabilities — argmax is the same for all three). numpy array, list or tf tensor.
        lengths: ``[batch]`` number of valid frames per row (frames beyond it are padding), or
            ``None`` to use every frame. Values larger than ``frames`` are clipped to ``frames``.
        blank_id: Index of the CTC blank class (``vocab_size`` in this project: blank last).

    Returns:
        One list of token ids per batch row, blanks removed and repeats merged (a repeated token
        separated by a blank, ``a _ a``, stays two tokens).

    Example:
        >>> scores = np.eye(3)[[0, 0, 2, 0, 1, 1]][None]      # frames: a a _ a b b
        >>> greedy_ctc_decode(scores, [6], blank_id=2)
        [[0, 0, 1]]
    """
    scores = np.asarray(logits_or_log_probs)
    if scores.ndim != 3:
        raise ValueError(
            f"greedy_ctc_decode: logits_or_log_probs must be [batch, frames, classes], got shape "
            f"{scores.shape}")
    batch, frames, num_classes = scores.shape
    if not 0 <= int(blank_id) < num_classes:
        raise ValueError(
            f"greedy_ctc_decode: blank_id must be in [0, {num_classes}), got {blank_id}")
    if lengths is None:
        lengths_np = np.full([batch], frames, dtype=np.int64)
    else:
        lengths_np = np.asarray(lengths).astype(np.int64).reshape(-1)
        if lengths_np.shape[0] != batch:
            raise ValueError(
                f"greedy_ctc_decode: lengths has {lengths_np.shape[0]} entries for a batch of "
                f"{batch}")
        if (lengths_np < 0).any():
            raise ValueError(f"greedy_ctc_decode: lengths must be >= 0, got {lengths_np.tolist()}")
    best = scores.argmax(axis=-1) if frames else np.zeros([batch, 0], dtype=np.int64)
    decoded: list[list[int]] = []
    for row, length in zip(best, np.minimum(lengths_np, frames)):
        path = row[:length]
        if path.size == 0:
            decoded.append([])
            continue
        keep = np.ones(path.shape, dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        keep &= path != blank_id
        decoded.append([int(t) for t in path[keep]])
    return decoded


def greedy_ctc_graph(log_probs: Any, blank_id: int) -> Any:
    """`greedy_ctc_decode` for one utterance as TensorFlow ops (builtin TFLite ops when converted).

    The exported file's ``tokens`` output (`tflite.graph`): argmax per frame, repeats merged,
    blanks dropped; ties go to the lowest class index, as in numpy.

    Args:
        log_probs: ``[frames, num_classes]`` float tensor (logits or log-probabilities).
        blank_id: Index of the CTC blank class.

    Returns:
        int32 ``[n]`` token ids.

    Example:
        >>> greedy_ctc_graph(tf.math.log(np.eye(3)[[0, 0, 2, 0, 1, 1]] + 1e-9), 2).numpy()
        array([0, 0, 1], dtype=int32)
    """
    import tensorflow as tf

    best = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    previous = tf.concat([tf.constant([-1], tf.int32), best[:-1]], axis=0)
    keep = tf.logical_and(tf.not_equal(best, blank_id), tf.not_equal(best, previous))
    return tf.boolean_mask(best, keep)



def greedy_ctc_stream_graph(log_probs: Any, blank_id: int, previous: Any) -> tuple[Any, Any]:
    """`greedy_ctc_graph` for one chunk of a stream, with the collapse carried across chunks.

    ``previous`` is the best class of the stream's last frame so far (``-1`` or ``blank_id`` at the
    start): a token that continues from the previous chunk is not emitted again. Concatenating the
    tokens of every chunk gives `greedy_ctc_graph` of the whole utterance.

    Args:
        log_probs: ``[frames, num_classes]`` float tensor of this chunk (``frames`` may be 0).
        blank_id: Index of the CTC blank class.
        previous: int32 ``[]``: the best class of the frame before this chunk.

    Returns:
        ``(tokens int32 [n], last int32 [])``: the new tokens and the best class of this chunk's last
        frame (``previous`` when the chunk has no frame), to pass to the next call.

    Example:
        >>> tokens, last = greedy_ctc_stream_graph(chunk_log_probs, blank_id=128, previous=last)
    """
    import tensorflow as tf

    previous = tf.reshape(tf.cast(previous, tf.int32), [1])
    best = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
    before = tf.concat([previous, best], axis=0)
    keep = tf.logical_and(tf.not_equal(best, blank_id), tf.not_equal(best, before[:-1]))
    return tf.gather(best, tf.reshape(tf.where(keep), [-1])), before[-1]


def ids_to_text(ids: Sequence[int], pieces: Sequence[str], unk_surface: str = UNK_SURFACE) -> str:
    """Joins SentencePiece pieces into text; ``'▁'`` marks the start of a word.

    Mirrors ``SentencePieceProcessor.decode`` for this project's tokenizers without importing
    sentencepiece: ``<unk>`` becomes ``unk_surface`` as its own word, byte pieces ``<0xHH>`` are
    decoded as UTF-8, whitespace is collapsed and stripped.

    Args:
        ids: Token ids (0..len(pieces)-1). The CTC blank must already be removed.
        pieces: The piece string of every id (``PreparedDataset.pieces()`` / ``TrainedRun.pieces``).
        unk_surface: Text for ``<unk>``. Defaults to ``'⁇'`` like SentencePiece.

    Returns:
        The decoded text.

    Example:
        >>> ids_to_text([0, 1, 2], ["\u2581he", "llo", "\u2581world"])
        'hello world'
    """
    parts: list[str] = []
    pending_bytes = bytearray()
    for token in ids:
        token = int(token)
        if not 0 <= token < len(pieces):
            raise ValueError(f"ids_to_text: id {token} is outside the {len(pieces)} pieces")
        piece = pieces[token]
        byte = _BYTE_PIECE.match(piece)
        if byte:
            pending_bytes.append(int(byte.group(1), 16))
            continue
        if pending_bytes:
            parts.append(pending_bytes.decode("utf-8", errors="replace"))
            pending_bytes.clear()
        if piece == UNK_PIECE:
            parts.append(f" {unk_surface} ")
        else:
            parts.append(piece.replace(WORD_BOUNDARY, " "))
    if pending_bytes:
        parts.append(pending_bytes.decode("utf-8", errors="replace"))
    return " ".join("".join(parts).split())


def _normalise(text: str) -> str:
    return " ".join(str(text).split())


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus-level word and character error rates (jiwer).

    Both rates are pooled over the corpus: (substitutions + deletions + insertions) / reference
    length, summed over all utterances (not a mean of per-utterance rates). Whitespace is
    collapsed and stripped first; no other normalisation (case, punctuation) is applied, so pass
    text normalised the same way on both sides (the prepared dataset's transcripts already are).

    Empty strings: an empty hypothesis is fine (all its reference words are deletions). An empty
    reference is allowed too: its hypothesis words count as insertions. If the whole corpus has
    no reference words (or characters), the rate is the number of insertions (jiwer's convention:
    0.0 for an empty hypothesis, never a division by zero). An empty corpus gives rates of 0.0.

    Args:
        references: Ground-truth transcripts.
        hypotheses: Recognised transcripts, same length and order.

    Returns:
        ``{"wer", "cer", "substitutions", "deletions", "insertions", "reference_words",
        "char_errors", "reference_chars", "num_utterances"}`` (word counts for the first four).

    Example:
        >>> error_rates(["the cat sat"], ["the bat sat down"])["wer"]
        0.6666666666666666
    """
    import jiwer

    references = [_normalise(r) for r in references]
    hypotheses = [_normalise(h) for h in hypotheses]
    if len(references) != len(hypotheses):
        raise ValueError(
            f"error_rates: {len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        return {"wer": 0.0, "cer": 0.0, "substitutions": 0, "deletions": 0, "insertions": 0,
                "reference_words": 0, "char_errors": 0, "reference_chars": 0,
                "num_utterances": 0}
    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    ref_words = words.hits + words.substitutions + words.deletions
    ref_chars = chars.hits + chars.substitutions + chars.deletions
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    return {
        "wer": float(word_errors) / max(ref_words, 1),
        "cer": float(char_errors) / max(ref_chars, 1),
        "substitutions": int(words.substitutions),
        "deletions": int(words.deletions),
        "insertions": int(words.insertions),
        "reference_words": int(ref_words),
        "char_errors": int(char_errors),
        "reference_chars": int(ref_chars),
        "num_utterances": len(references),
    }
