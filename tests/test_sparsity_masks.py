"""Ranking -> level codes: exact counts (half-to-even rounding), nesting, ties by index, blocks."""
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from dsnn_keras.sparsity.masks import (
    block_scores,
    codes_from_scores,
    compute_level_codes,
    kept_counts,
    mask_for_level,
)


def test_kept_counts_round_half_to_even():
    # Exact halves: 10*0.75 = 7.5 -> 8, 6*0.75 = 4.5 -> 4, 2*0.25 = 0.5 -> 0, 3*0.5 = 1.5 -> 2.
    assert kept_counts(10, [0.25]).numpy().tolist() == [8]
    assert kept_counts(6, [0.25]).numpy().tolist() == [4]
    assert kept_counts(2, [0.75]).numpy().tolist() == [0]
    assert kept_counts(3, [0.5]).numpy().tolist() == [2]
    # Python float arithmetic is respected: 5 * (1 - 0.3) == 3.5 -> 4 (not 3 via float32).
    assert kept_counts(5, [0.3]).numpy().tolist() == [round(5 * (1 - 0.3))] == [4]


def test_kept_counts_equal_python_round_on_a_grid():
    levels = [0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99]
    for n in range(1, 60):
        got = kept_counts(n, levels).numpy().tolist()
        assert got == [round(n * (1 - s)) for s in levels], n


def test_codes_count_levels_that_keep_each_weight():
    codes = compute_level_codes(tf.constant([0.1, -4.0, 3.0, 0.2, -2.0, 1.0]), [0.0, 0.5, 0.8]).numpy()
    # ranking by |w|: idx1, idx2, idx4, idx5, idx3, idx0 ; kept 6, 3, 1
    assert codes.tolist() == [1, 3, 2, 1, 2, 1]
    assert codes.dtype == np.uint8


def test_ties_are_broken_by_lower_index_first():
    codes = codes_from_scores(tf.constant([1.0, 1.0, 1.0, 1.0]), tf.constant([4, 3, 2, 1])).numpy()
    assert codes.tolist() == [4, 3, 2, 1]


def test_mask_of_level_is_code_greater_than_level():
    codes = tf.constant([0, 1, 2, 3], tf.uint8)
    assert mask_for_level(codes, 1).numpy().tolist() == [0.0, 0.0, 1.0, 1.0]
    assert mask_for_level(codes, tf.constant(0)).numpy().tolist() == [0.0, 1.0, 1.0, 1.0]


def test_block_scores_are_mean_abs_over_existing_elements():
    w = tf.constant([[1.0, -3.0, 2.0, 0.0, 5.0], [-1.0, 1.0, 0.0, 0.0, -1.0]])
    np.testing.assert_allclose(block_scores(w, (1, 4)).numpy(), [[1.5, 5.0], [0.5, 1.0]])
    np.testing.assert_allclose(block_scores(w, (2, 2)).numpy(), [[1.5, 0.5, 3.0]])


def test_block_codes_are_constant_within_a_block_and_count_blocks():
    w = tf.constant(np.random.default_rng(0).normal(size=(6, 8)).astype("float32"))
    codes = compute_level_codes(w, [0.0, 0.5, 0.75], (1, 4)).numpy()
    blocks = codes.reshape(6, 2, 4)
    assert np.all(blocks == blocks[..., :1])
    assert [(blocks[..., 0] > i).sum() for i in range(3)] == [12, 6, 3]


def _reference_scores(w, block):
    rows = int(np.prod(w.shape[:-1])) if w.ndim > 1 else 1
    m = np.abs(w).reshape(rows, w.shape[-1])
    bh, bw = block
    nbr, nbc = -(-rows // bh), -(-m.shape[1] // bw)
    scores = np.zeros((nbr, nbc))
    for r in range(nbr):
        for c in range(nbc):
            scores[r, c] = m[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw].mean()
    return scores


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    block=st.sampled_from([(1, 1), (1, 2), (1, 4), (2, 2), (4, 1)]),
    levels=st.lists(st.floats(0.0, 0.99), min_size=1, max_size=5, unique=True).map(sorted),
    seed=st.integers(0, 2**16),
)
def test_property_nested_exact_counts_and_ranking_with_ties(shape, block, levels, seed):
    rng = np.random.default_rng(seed)
    w = rng.integers(-3, 4, size=shape).astype(np.float32)  # few distinct values: many ties
    codes = compute_level_codes(tf.constant(w), levels, block).numpy()
    assert codes.shape == w.shape and codes.dtype == np.uint8
    scores = _reference_scores(w, block).reshape(-1)
    rows = int(np.prod(w.shape[:-1])) if w.ndim > 1 else 1
    cols = w.shape[-1]
    bh, bw = block
    block_codes = codes.reshape(rows, cols)[::bh, ::bw].reshape(-1)
    # Every element carries its block's code.
    expanded = np.repeat(np.repeat(block_codes.reshape(-(-rows // bh), -(-cols // bw)), bh, 0), bw, 1)
    np.testing.assert_array_equal(expanded[:rows, :cols], codes.reshape(rows, cols))
    order = sorted(range(scores.size), key=lambda j: (-scores[j], j))  # stable, ties by index
    for i, s in enumerate(levels):
        kept = set(np.flatnonzero(block_codes > i).tolist())
        assert len(kept) == round(scores.size * (1 - s))
        assert kept == set(order[: len(kept)])
        if i:
            assert kept <= set(np.flatnonzero(block_codes > i - 1).tolist())
