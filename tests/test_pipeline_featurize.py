"""The NumPy wrapper around the shared frontend."""
import numpy as np

from dsnn_keras.frontend import FeatureConfig, log_mel_spectrogram
from pipeline.featurize import Featurizer


def test_matches_the_frontend_for_any_length_without_retracing():
    config = FeatureConfig(num_mel_bins=40)
    featurizer = Featurizer(config)
    rng = np.random.default_rng(0)
    for n in (0, 100, 400, 16000, 12345):
        wave = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        out = featurizer(wave)
        assert out.shape == (config.num_frames(n), 40)
        np.testing.assert_allclose(out, log_mel_spectrogram(wave, config).numpy(), atol=1e-5)
    assert featurizer._fn.experimental_get_tracing_count() == 1
