"""CMVN statistics as a Beam CombineFn, against NumPy."""
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

import apache_beam as beam
from pipeline.cmvn import MIN_STD, CmvnCombineFn
from pipeline.prepare import LOCAL_RUNNER


def test_combine_matches_numpy_in_a_pipeline():
    rng = np.random.default_rng(0)
    arrays = [rng.normal(-5, 3, size=(rng.integers(1, 60), 4)).astype(np.float32) for _ in range(25)]
    stacked = np.concatenate(arrays).astype(np.float64)

    def check(outputs):
        (stats,) = outputs
        assert stats.num_frames == stacked.shape[0]
        np.testing.assert_allclose(stats.mean, stacked.mean(0), rtol=1e-10)
        np.testing.assert_allclose(stats.std, stacked.std(0), rtol=1e-9)

    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        stats = p | beam.Create(arrays) | beam.CombineGlobally(CmvnCombineFn())
        assert_that(stats, check)


def test_stays_accurate_with_a_large_offset():
    fn = CmvnCombineFn()
    rng = np.random.default_rng(1)
    chunks = [(1e4 + rng.normal(0, 1e-2, (500, 2))).astype(np.float64) for _ in range(4)]
    accs = [fn.add_input(fn.create_accumulator(), c) for c in chunks]
    stats = fn.extract_output(fn.merge_accumulators(accs))
    np.testing.assert_allclose(stats.std, np.concatenate(chunks).std(0), rtol=1e-6)


def test_constant_bin_gets_floored_std_and_to_dict_is_json_ready():
    fn = CmvnCombineFn()
    stats = fn.extract_output(fn.add_input(fn.create_accumulator(), np.ones((3, 2), np.float32)))
    assert stats.std.tolist() == [MIN_STD, MIN_STD]
    assert stats.to_dict() == {"mean": [1.0, 1.0], "std": [MIN_STD, MIN_STD], "num_frames": 3}


def test_per_utterance_statistics_equal_the_two_pass_numpy_formula_bit_for_bit():
    feats = np.random.default_rng(2).normal(-4, 2, (271, 80)).astype(np.float32)
    fn = CmvnCombineFn()
    n, mean, m2 = fn.add_input(fn.create_accumulator(), feats)
    f64 = feats.astype(np.float64)
    assert n == 271
    assert np.array_equal(mean, f64.mean(axis=0))
    assert np.array_equal(m2, ((f64 - f64.mean(axis=0)) ** 2).sum(axis=0))
