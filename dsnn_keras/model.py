"""The CTC speech recognizer, assembled: subsampling front-end -> encoder -> CTC head.

A functional tf_keras model on raw log-mel features ``[batch, frames, num_mel_bins]``; its output
is logits ``[batch, output_lengths(frames), vocab_size + 1]`` with the CTC blank last. Three parts,
one module each:

- `dsnn_keras.subsampling`: CMVN and the stride-2 Conv2D stack (``model.conv_channels``). It
  knows the time reduction: `time_reduction` (4x with two convolutions) and `output_lengths`.
- `dsnn_keras.encoders`: the encoder named by ``model.encoder``, from a registry (``lstm``: plain
  unidirectional ``keras.layers.LSTM`` layers that TFLite converts to fused LSTM ops;
  ``conformer``: causal Conformer blocks of stock Keras layers). Each reports its streaming state
  (`dsnn_keras.encoders.encoder_state`). Both are causal, so the model streams with the
  front-end's small look-ahead (docs/evaluation.md, "Padding").
- `dsnn_keras.ctc_head`: the optional ``projection`` and the ``logits`` Dense.

The losses are in `dsnn_keras.losses`, the greedy CTC decoder in `dsnn_keras.decoding`.

Example:
    >>> model = build_model(config.model, feature_config, vocab_size=128, cmvn_mean=m, cmvn_std=s)
    >>> pruned = build_pruned_model(config, feature_config, 128, m, s)   # nested-mask wrapped
    >>> output_lengths(np.array([100, 101]))
    array([25, 26])
    >>> output_lengths(np.array([100, 101]), config.model)            # what config.model builds
    array([25, 26])
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tf_keras as keras

from dsnn_keras.ctc_head import OUTPUT_LAYER, build_ctc_head
from dsnn_keras.encoders import encoder_state, get_encoder
from dsnn_keras.encoders.conformer import GatedLinearUnit  # noqa: F401  (registers it for load_model)
from dsnn_keras.subsampling import CMVN, RunningMeanNorm, build_subsampling, output_lengths, time_reduction

__all__ = ["CMVN", "GatedLinearUnit", "OUTPUT_LAYER", "RunningMeanNorm", "build_model", "build_pruned_model",
           "default_prune_layers", "encoder_state", "output_lengths", "time_reduction"]


def build_model(model_config, feature_config, vocab_size: int, cmvn_mean, cmvn_std,
                name: str = "dsnn_asr") -> keras.Model:
    """Builds the unpruned functional model: front-end, ``model_config.encoder``, CTC head.

    Args:
        model_config: `dsnn_keras.config.ModelConfig`.
        feature_config: `FeatureConfig` (its ``num_mel_bins`` is the input width).
        vocab_size: SentencePiece vocabulary size; the model has ``vocab_size + 1`` outputs.
        cmvn_mean: ``[num_mel_bins]`` CMVN mean.
        cmvn_std: ``[num_mel_bins]`` CMVN standard deviation.
        name: Model name. Defaults to "dsnn_asr".

    Returns:
        A `keras.Model` mapping ``[batch, frames, bins]`` to logits ``[batch, out_frames, vocab+1]``
        with ``out_frames = output_lengths(frames, model_config)``. Layer names: ``cmvn``,
        ``running_mean`` (with ``model_config.running_mean_frames``), ``conv_<i>``, then ``lstm_<i>``
        or ``conformer_input`` and ``conformer_<i>_*`` (or the registered encoder's), ``projection``
        (optional), ``logits``.

    Raises:
        dsnn_keras.encoders.EncoderError: ``model_config.encoder`` is not a known encoder.
    """
    encoder = get_encoder(model_config.encoder)
    features = keras.Input([None, feature_config.num_mel_bins], dtype=tf.float32, name="features")
    x = build_subsampling(features, model_config, cmvn_mean, cmvn_std)
    x = encoder.build(x, model_config)
    logits = build_ctc_head(x, model_config, vocab_size)
    return keras.Model(features, logits, name=name)


def default_prune_layers(model: keras.Model, granularity: str = "weight") -> list[str]:
    """Names of every LSTM and Dense layer except the output layer; with unit granularity the
    Conv2D layers too (their channels must shrink for a sparse level to be cheap: they are ~18 %
    of the LSTM model's multiply-adds)."""
    kinds = (keras.layers.LSTM, keras.layers.Dense)
    if granularity == "unit":
        kinds = kinds + (keras.layers.Conv2D,)
    return [layer.name for layer in model.layers if isinstance(layer, kinds) and layer.name != OUTPUT_LAYER]


def build_pruned_model(config, feature_config, vocab_size: int, cmvn_mean, cmvn_std,
                       prune_layers: Optional[Sequence[str]] = None) -> keras.Model:
    """Builds the model and wraps its prunable layers with nested-mask wrappers.

    Args:
        config: `dsnn_keras.config.Config` (model architecture, levels, pruning schedule, mode).
        feature_config: `FeatureConfig`.
        vocab_size: SentencePiece vocabulary size.
        cmvn_mean: CMVN mean.
        cmvn_std: CMVN standard deviation.
        prune_layers: Layer names to prune; defaults to ``config.pruning.prune_layers`` or, when
            that is null, `default_prune_layers`.

    Returns:
        The wrapped model; its levels are ``config.effective_levels``.
    """
    import dsnn_keras

    model = build_model(config.model, feature_config, vocab_size, cmvn_mean, cmvn_std)
    granularity = config.pruning.effective_granularity
    names = list(prune_layers or config.pruning.prune_layers or default_prune_layers(model, granularity))
    existing = {layer.name for layer in model.layers}
    missing = sorted(set(names) - existing)
    if missing:
        raise ValueError(f"pruning.prune_layers: no layer named {missing}; the model has {sorted(existing)}")
    p = config.pruning
    schedule = dsnn_keras.NestedPolynomialDecay(
        sparsity_levels=tuple(config.effective_levels), begin_step=p.begin_step, end_step=p.end_step,
        frequency=p.frequency, power=p.power)
    return dsnn_keras.prune_nested(model, schedule, block_size=tuple(p.block_size), prune_layers=names,
                                   granularity="unit" if granularity == "unit" else "weight")
