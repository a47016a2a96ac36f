"""Pure math of nested masks: one stable ranking per tensor -> per-weight level codes.

Rule (used everywhere in dsnn): score every weight (|w|) or every block (mean |w| over the block's
existing elements, as tfmot's AVG block pooling), rank the N scores once in descending order with
ties broken by index (lower flat index ranks first), and let level i keep the first

    k_i = round_half_to_even(N * (1 - s_i))        computed in float64

of that ranking — the same value as Python's `round(N * (1 - s_i))`. A weight's level code is the
number of levels that keep it, `code = #{i : rank < k_i}` in 0..K, and the mask of level i is
`code > i`. Since `k_0 >= k_1 >= ...` the masks are nested by construction, ties included.
"""
from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def kept_counts(num_items, sparsities) -> tf.Tensor:
    """How many items each level keeps: `round_half_to_even(num_items * (1 - s_i))`.

    Args:
        num_items: N, a Python int or int scalar tensor.
        sparsities: `[K]` sparsities (any float dtype; computed in float64).

    Returns:
        An int32 `[K]` tensor.

    Example:
        >>> kept_counts(10, [0.0, 0.25, 0.75]).numpy().tolist()  # 7.5 -> 8, 2.5 -> 2
        [10, 8, 2]
    """
    if isinstance(sparsities, (tf.Tensor, tf.Variable)):
        s = tf.cast(sparsities, tf.float64)
    else:  # Python floats go straight to float64 (a float32 detour would change the rounding)
        s = tf.constant(sparsities, tf.float64)
    n = tf.cast(num_items, tf.float64)
    return tf.cast(tf.round(n * (1.0 - s)), tf.int32)


def codes_from_scores(scores, kept) -> tf.Tensor:
    """Level codes of N scored items given each level's kept count.

    Args:
        scores: `[N]` float scores, larger = more important.
        kept: `[K]` int kept counts, non-increasing.

    Returns:
        A uint8 `[N]` tensor: item j's code is the number of levels whose kept prefix of the
        ranking (descending score, ties by lower index) contains j.

    Example:
        >>> codes_from_scores([0.1, 0.5, 0.5, 0.2], [4, 2, 1]).numpy().tolist()
        [1, 3, 2, 1]
    """
    scores = tf.reshape(tf.convert_to_tensor(scores), [-1])
    # top_k (behind argsort DESCENDING) puts equal values in index order: a stable ranking.
    order = tf.argsort(scores, direction="DESCENDING", stable=True)
    ranks = tf.math.invert_permutation(tf.cast(order, tf.int32))
    kept = tf.cast(kept, tf.int32)
    kept_by_level = tf.cast(ranks[:, None] < kept[None, :], tf.int32)
    return tf.cast(tf.reduce_sum(kept_by_level, axis=1), tf.uint8)


def as_matrix_shape(shape: Sequence[int]) -> tuple[int, int]:
    """The 2-D view used for block scoring: `[prod(shape[:-1]), shape[-1]]` (rank 1: `[1, n]`)."""
    shape = [int(d) for d in shape]
    if not shape:
        return 1, 1
    rows = 1
    for d in shape[:-1]:
        rows *= d
    return rows, shape[-1]


def block_scores(weight, block_size: Sequence[int]) -> tf.Tensor:
    """Mean |w| of every `block_size` block of `weight` seen as a matrix.

    The weight is viewed as `[prod(shape[:-1]), shape[-1]]` (exactly the matrix for Dense and
    recurrent kernels). Edge blocks that do not fit count only their existing elements.

    Args:
        weight: A weight tensor of static shape.
        block_size: `(block_height, block_width)`.

    Returns:
        A float `[ceil(rows / bh), ceil(cols / bw)]` tensor.

    Example:
        >>> block_scores(tf.constant([[1.0, -3.0, 2.0]]), (1, 2)).numpy().tolist()
        [[2.0, 2.0]]
    """
    bh, bw = (int(b) for b in block_size)
    rows, cols = as_matrix_shape(weight.shape)
    mat = tf.reshape(tf.abs(weight), [rows, cols])
    nbr, nbc = -(-rows // bh), -(-cols // bw)
    pad = [[0, nbr * bh - rows], [0, nbc * bw - cols]]
    sums = tf.reduce_sum(tf.reshape(tf.pad(mat, pad), [nbr, bh, nbc, bw]), axis=[1, 3])
    counts = tf.reduce_sum(tf.reshape(tf.pad(tf.ones_like(mat), pad), [nbr, bh, nbc, bw]), axis=[1, 3])
    return sums / counts


def compute_level_codes(weight, sparsities, block_size: Sequence[int] = (1, 1)) -> tf.Tensor:
    """Per-weight uint8 level codes of `weight` for the given level sparsities.

    Args:
        weight: A weight tensor (or variable) of static shape.
        sparsities: `[K]` current sparsity of each level, non-decreasing.
        block_size: `(bh, bw)` blocks of the matrix view pruned together. Defaults to (1, 1).

    Returns:
        A uint8 tensor shaped like `weight`; the mask of level i is `codes > i`.

    Example:
        >>> compute_level_codes(tf.constant([3.0, -1.0, 2.0, 0.5]), [0.0, 0.5]).numpy().tolist()
        [2, 1, 2, 1]
    """
    weight = tf.convert_to_tensor(weight)
    shape = weight.shape
    if tuple(int(b) for b in block_size) == (1, 1):
        scores = tf.reshape(tf.abs(weight), [-1])
        kept = kept_counts(tf.size(scores), sparsities)
        return tf.reshape(codes_from_scores(scores, kept), tf.shape(weight))
    bh, bw = (int(b) for b in block_size)
    rows, cols = as_matrix_shape(shape)
    scores = block_scores(weight, block_size)
    nbr, nbc = scores.shape
    kept = kept_counts(nbr * nbc, sparsities)
    codes = tf.reshape(codes_from_scores(tf.reshape(scores, [-1]), kept), [nbr, nbc])
    codes = tf.repeat(tf.repeat(codes, bh, axis=0), bw, axis=1)[:rows, :cols]
    return tf.reshape(codes, tf.shape(weight))


def mask_for_level(codes, level, dtype=tf.float32) -> tf.Tensor:
    """The 0/1 mask of `level` (Python int or int tensor) from uint8 codes: `codes > level`."""
    return tf.cast(tf.cast(codes, tf.int32) > tf.cast(level, tf.int32), dtype)
