"""tf.train.Example serialisation in the prepared-dataset format."""
import numpy as np

from pipeline.examples import make_example, parse_example


def test_round_trips_every_contract_field():
    feats = np.random.default_rng(0).normal(size=(7, 80)).astype(np.float32)
    ex = parse_example(make_example("u-1", "spk", "hello world", feats, [3, 1, 4]), num_mel_bins=80)
    assert (ex["utt_id"], ex["speaker"], ex["transcript"], ex["num_frames"]) == ("u-1", "spk", "hello world", 7)
    np.testing.assert_array_equal(ex["features"], feats)
    assert ex["token_ids"] == [3, 1, 4]


def test_is_readable_by_tensorflow_parse_single_example():
    import tensorflow as tf

    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    spec = {"features": tf.io.VarLenFeature(tf.float32), "num_frames": tf.io.FixedLenFeature([], tf.int64),
            "token_ids": tf.io.VarLenFeature(tf.int64), "utt_id": tf.io.FixedLenFeature([], tf.string)}
    parsed = tf.io.parse_single_example(make_example("a", "", "t", feats, [9]), spec)
    assert int(parsed["num_frames"]) == 3
    assert tf.sparse.to_dense(parsed["features"]).numpy().tolist() == feats.ravel().tolist()
    assert tf.sparse.to_dense(parsed["token_ids"]).numpy().tolist() == [9]
