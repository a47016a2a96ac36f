"""SentencePiece training on small corpora."""
import pytest

from pipeline.tokenizer import load_tokenizer, train_tokenizer, vocab_size

LINES = ["erase v r f o five", "enter one thirty one", "yes", "no", "go stop", "rubout"]


def test_round_trips_and_has_no_bos_eos_pad():
    model = train_tokenizer(LINES, vocab_size=40)
    sp = load_tokenizer(model)
    assert sp.unk_id() == 0 and sp.bos_id() == -1 and sp.eos_id() == -1 and sp.pad_id() == -1
    for line in LINES:
        ids = sp.encode(line)
        assert 0 not in ids
        assert sp.decode(ids) == line


def test_too_large_vocab_on_small_corpus_shrinks_instead_of_failing():
    model = train_tokenizer(LINES, vocab_size=5000)
    assert 20 < vocab_size(model) < 5000


def test_training_is_independent_of_transcript_order():
    assert train_tokenizer(LINES, 40) == train_tokenizer(list(reversed(LINES)), 40)


def test_refuses_empty_corpus_and_too_small_vocab():
    with pytest.raises(ValueError, match="no training transcripts"):
        train_tokenizer([], 16)
    with pytest.raises(ValueError, match="--vocab_size 5 is smaller"):
        train_tokenizer(LINES, 5)
