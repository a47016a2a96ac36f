"""Tests for dsnn_keras.decoding: greedy CTC, piece joining, WER/CER against hand counts."""
import numpy as np
import pytest

from dsnn_keras.decoding import error_rates, greedy_ctc_decode, greedy_ctc_graph, greedy_ctc_stream_graph, ids_to_text

BLANK = 3


def _one_hot_frames(paths, num_classes=4):
    """[batch, frames, classes] scores whose argmax is the given per-frame path."""
    frames = max(len(p) for p in paths)
    scores = np.full([len(paths), frames, num_classes], -5.0, dtype=np.float32)
    for b, path in enumerate(paths):
        for t, c in enumerate(path):
            scores[b, t, c] = 1.0
    return scores


def test_greedy_decode_merges_repeats_and_drops_blanks():
    scores = _one_hot_frames([[0, 0, BLANK, 0, 1, 1, BLANK, 2, BLANK]])
    assert greedy_ctc_decode(scores, [9], BLANK) == [[0, 0, 1, 2]]


def test_greedy_decode_ignores_frames_beyond_length():
    scores = _one_hot_frames([[1, 1, 2, 0], [2, BLANK, 2, 2]])
    assert greedy_ctc_decode(scores, [2, 3], BLANK) == [[1], [2, 2]]


def test_greedy_decode_of_all_blank_or_zero_length_is_empty():
    scores = _one_hot_frames([[BLANK, BLANK, BLANK], [0, 1, 2]])
    assert greedy_ctc_decode(scores, [3, 0], BLANK) == [[], []]


def test_greedy_decode_accepts_tf_tensors_and_log_softmax():
    import tensorflow as tf

    scores = _one_hot_frames([[2, 2, BLANK, 1]])
    log_probs = tf.nn.log_softmax(tf.constant(scores), axis=-1)
    assert greedy_ctc_decode(log_probs, tf.constant([4]), BLANK) == [[2, 1]]


def test_greedy_decode_without_lengths_uses_every_frame():
    scores = _one_hot_frames([[0, BLANK, 0]])
    assert greedy_ctc_decode(scores, None, BLANK) == [[0, 0]]


def test_greedy_decode_rejects_bad_shapes_and_blank():
    with pytest.raises(ValueError, match="batch, frames, classes"):
        greedy_ctc_decode(np.zeros([4, 3]), [4], BLANK)
    with pytest.raises(ValueError, match="blank_id"):
        greedy_ctc_decode(np.zeros([1, 4, 3]), [4], 3)
    with pytest.raises(ValueError, match="2 entries for a batch of 1"):
        greedy_ctc_decode(np.zeros([1, 4, 4]), [4, 4], BLANK)


def test_ids_to_text_uses_word_boundary_marker():
    pieces = ["<unk>", "\u2581he", "llo", "\u2581wor", "ld", "\u2581"]
    assert ids_to_text([1, 2, 3, 4], pieces) == "hello world"
    assert ids_to_text([5, 1, 2, 5, 5, 3, 4], pieces) == "hello world"
    assert ids_to_text([], pieces) == ""


def test_ids_to_text_renders_unknown_as_its_own_word_like_sentencepiece():
    pieces = ["<unk>", "\u2581a", "b"]
    assert ids_to_text([1, 0, 2], pieces) == "a \u2047 b"


def test_ids_to_text_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="id 7 is outside the 3 pieces"):
        ids_to_text([7], ["<unk>", "a", "b"])


def test_ids_to_text_matches_sentencepiece_decode(tmp_path):
    import sentencepiece as spm

    lines = ["go to the left", "stop the car now", "turn right at the light"] * 30
    model = tmp_path / "sp"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(model), vocab_size=30, unk_id=0,
        bos_id=-1, eos_id=-1, pad_id=-1, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=f"{model}.model")
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    for line in ["turn left at the car", "go right now"]:
        ids = sp.encode(line)
        assert ids_to_text(ids, pieces) == sp.decode(ids)


def test_wer_and_cer_match_hand_counts():
    # Utterance 1: "sat"->"sit" is a substitution, the second "the" is deleted: 2 word errors of 6.
    #   Characters: a->i substitution plus "the " deleted (4): 5 errors of 22.
    # Utterance 2: "big" is inserted: 1 word error of 2; "big " inserted: 4 char errors of 11.
    refs = ["the cat sat on the mat", "hello world"]
    hyps = ["the cat sit on mat", "hello big world"]
    rates = error_rates(refs, hyps)
    assert rates["wer"] == pytest.approx(3 / 8)
    assert rates["cer"] == pytest.approx(9 / 33)
    assert (rates["substitutions"], rates["deletions"], rates["insertions"]) == (1, 1, 1)
    assert rates["reference_words"] == 8
    assert rates["reference_chars"] == 33
    assert rates["num_utterances"] == 2


def test_empty_hypothesis_counts_every_reference_word_as_deleted():
    rates = error_rates(["one two three", "four"], ["", "four"])
    assert rates["wer"] == pytest.approx(3 / 4)
    assert rates["deletions"] == 3


def test_empty_reference_counts_hypothesis_words_as_insertions():
    rates = error_rates(["", "a b"], ["x", "a b"])
    assert rates["wer"] == pytest.approx(1 / 2)
    assert rates["insertions"] == 1
    only_empty = error_rates([""], [""])
    assert only_empty["wer"] == 0.0 and only_empty["cer"] == 0.0
    assert error_rates([""], ["x y"])["wer"] == 2.0


def test_whitespace_is_collapsed_before_scoring():
    assert error_rates(["  a   b "], ["a b"])["wer"] == 0.0


def test_error_rates_rejects_mismatched_lengths_and_handles_empty_corpus():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])
    assert error_rates([], [])["wer"] == 0.0


@pytest.mark.parametrize("frames", [0, 1, 2, 7, 50])
def test_graph_decoding_equals_the_numpy_decoding(frames):
    from dsnn_keras.decoding import greedy_ctc_graph

    rng = np.random.default_rng(frames)
    for _ in range(20):
        # few classes, so repeats, blanks and ties across frames are common
        scores = rng.integers(0, 3, size=[frames, 4]).astype(np.float32)
        expected = greedy_ctc_decode(scores[None], None, blank_id=3)[0]
        assert greedy_ctc_graph(scores, 3).numpy().tolist() == expected


@pytest.mark.parametrize("seed", range(5))
def test_streamed_greedy_tokens_equal_the_whole_utterance_for_any_split(seed):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    blank = 3
    # Long runs of one class make repeats that straddle chunk boundaries likely.
    best = np.repeat(rng.integers(0, 4, size=12), rng.integers(1, 5, size=12))
    log_probs = np.log(np.eye(4)[best] * 0.9 + 0.025).astype(np.float32)
    whole = greedy_ctc_graph(tf.constant(log_probs), blank).numpy()
    cuts = np.sort(rng.integers(0, len(best) + 1, size=6))
    step = tf.function(lambda lp, prev: greedy_ctc_stream_graph(lp, blank, prev))
    previous, tokens = tf.constant(-1), []
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(best)]):   # includes empty chunks
        new, previous = step(tf.constant(log_probs[start:stop]), previous)
        tokens.extend(new.numpy().tolist())
    assert tokens == whole.tolist()
    assert int(previous) == int(best[-1])


def test_a_token_continued_across_chunks_is_emitted_once_and_a_blank_separates_repeats():
    import tensorflow as tf

    eye = np.log(np.eye(3) * 0.9 + 0.05).astype(np.float32)   # class 2 is the blank
    tokens, last = greedy_ctc_stream_graph(tf.constant(eye[[0, 1]]), 2, tf.constant(-1))
    assert tokens.numpy().tolist() == [0, 1] and int(last) == 1
    tokens, last = greedy_ctc_stream_graph(tf.constant(eye[[1, 2, 1]]), 2, last)
    assert tokens.numpy().tolist() == [1]    # the first 1 continues the previous chunk's 1
    tokens, same = greedy_ctc_stream_graph(tf.constant(eye[:0]), 2, last)
    assert tokens.numpy().tolist() == [] and int(same) == int(last)
