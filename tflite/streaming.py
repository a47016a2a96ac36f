"""The ``stream`` signature: audio chunks in, the log-probs and tokens they complete out, state explicit.

``stream(audio: float32[n], sparsity_level: int32[], end_of_stream: int32[], state_*...)`` returns
``log_probs`` (float32 ``[frames, vocab + 1]`` for the encoder frames this chunk completed),
``tokens`` (int32 ``[m]``, greedy CTC with the collapse carried across chunks), ``level`` (the level
run after clamping) and every ``state_*`` tensor of the next state, under the same names.

The state, all of it fixed-shape tensors, all-zero at the start of a stream:

* ``state_frontend_samples`` / ``_buffered`` / ``_frames``: samples after the last complete
  analysis window, how many, and frames emitted (`dsnn_keras.frontend.log_mel_stream_step`);
* per convolution its last ``kernel - 1`` input frames and a frame count, per LSTM ``h`` and ``c``,
  per Conformer block the attention's keys and values of the last ``left_context`` frames with a
  count and the depthwise convolution's last ``conv_kernel - 1`` input frames
  (`dsnn_keras.streaming.StreamingModel`), in the dense level's layout at every level, so the
  level can change between any two calls;
* ``state_ctc_previous``: 1 + the best class of the last frame (0: none yet).

A call with ``end_of_stream = 1`` ends the utterance exactly as the whole-utterance signature does
(an utterance shorter than one window gives one zero-padded frame) and returns the all-zero state,
so the next call starts a new stream. Level selection is the same builtin ``IF`` tree as the other
signatures.

Example:
    >>> signature = StreamSignature(streams, feature_config, blank_id=128)
    >>> outputs = signature.function(audio=chunk, sparsity_level=3, end_of_stream=0, state=state)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from dsnn_keras.decoding import greedy_ctc_stream_graph
from dsnn_keras.frontend import log_mel_stream_step, stream_state_size
from dsnn_keras.streaming import StateTensor, StreamingError, StreamingModel
from tflite import signatures as sig

_FLOAT32_MAX = 3.0e38
FRONTEND_STATE = ("state_frontend_samples", "state_frontend_buffered", "state_frontend_frames")
CTC_STATE = "state_ctc_previous"


class StreamSignature:
    """Builds the ``stream`` tf.function over one `StreamingModel` per level.

    Args:
        streams: One `StreamingModel` per level, all with the same `state_specs`.
        feature_config: The `FeatureConfig` of the in-graph frontend.
        blank_id: The CTC blank (the last class).

    Raises:
        StreamingError: the levels' states differ.
    """

    def __init__(self, streams: Sequence[StreamingModel], feature_config, blank_id: int):
        if not streams:
            raise StreamingError("StreamSignature: need one StreamingModel per level")
        reference = streams[0].state_specs
        for level, stream in enumerate(streams[1:], start=1):
            if stream.state_specs != reference:
                raise StreamingError(f"level {level}'s stream state differs from level 0's; give every level the "
                                     "dense layout (state_units / kept_units)")
        self._streams = list(streams)
        self._config = feature_config
        self._blank_id = int(blank_id)
        size = stream_state_size(feature_config)
        self.state_specs: list[StateTensor] = [
            StateTensor(FRONTEND_STATE[0], (size,), "float32"), StateTensor(FRONTEND_STATE[1], (), "int32"),
            StateTensor(FRONTEND_STATE[2], (), "int32"), *reference, StateTensor(CTC_STATE, (), "int32")]
        state_signature = {s.name: tf.TensorSpec(s.shape, getattr(tf, s.dtype), name=s.name) for s in self.state_specs}

        def stream(audio, sparsity_level, end_of_stream, state):
            return self._stream(audio, sparsity_level, end_of_stream, state)

        stream.__name__ = sig.STREAM   # the converter names the signature after the function
        self.function = tf.function(stream, autograph=False, input_signature=[
            tf.TensorSpec([None], tf.float32, name=sig.AUDIO), tf.TensorSpec([], tf.int32, name=sig.SPARSITY_LEVEL),
            tf.TensorSpec([], tf.int32, name=sig.END_OF_STREAM), state_signature])

    def initial_state(self) -> dict[str, np.ndarray]:
        """All-zero state: the start of a stream."""
        return {spec.name: spec.zeros() for spec in self.state_specs}

    def _stream(self, audio, sparsity_level, end_of_stream, state: Mapping[str, tf.Tensor]):
        level = tf.clip_by_value(sparsity_level, 0, len(self._streams) - 1)
        end = tf.not_equal(end_of_stream, 0)
        finite = tf.less_equal(tf.abs(audio), _FLOAT32_MAX)   # False for NaN and +-inf
        audio = tf.where(finite, audio, tf.zeros_like(audio))
        features, samples, buffered, frames = log_mel_stream_step(
            audio, state[FRONTEND_STATE[0]], state[FRONTEND_STATE[1]], state[FRONTEND_STATE[2]], end, self._config)
        model_names = [s.name for s in self._streams[0].state_specs]
        model_state = {name: state[name] for name in model_names}
        logits, new_model_state = self._select(level, features, model_state, model_names, end)
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        tokens, last = greedy_ctc_stream_graph(log_probs, self._blank_id, state[CTC_STATE] - 1)
        new_state = {FRONTEND_STATE[0]: samples, FRONTEND_STATE[1]: buffered, FRONTEND_STATE[2]: frames,
                     **new_model_state, CTC_STATE: last + 1}
        # The end of a stream hands back the start state, so the next call begins a new utterance.
        new_state = {name: tf.where(end, tf.zeros_like(value), value) for name, value in new_state.items()}
        return {sig.LOG_PROBS: log_probs, sig.TOKENS: tokens, sig.LEVEL: level, **new_state}

    def _select(self, level, features, state, names, end):
        streams = self._streams

        def run(i):
            out, new_state = streams[i].step(features, state, end)
            return (out, *[new_state[name] for name in names])

        def branch(i):
            if i == len(streams) - 1:
                return run(i)
            return tf.cond(level <= i, lambda: run(i), lambda: branch(i + 1))

        result = branch(0) if len(streams) > 1 else tf.cond(level <= 0, lambda: run(0), lambda: run(0))
        return result[0], dict(zip(names, result[1:]))


def stream_signature_for(request) -> "StreamSignature | None":
    """The `StreamSignature` over a design request's models, or None if they cannot stream.

    Masked levels stream as they are. A unit run's sliced levels keep their state in level 0's
    layout: level ``i``'s units sit where level 0 keeps them (nested masks: a subset), found from
    ``request.unit_indices``.

    Args:
        request: The `tflite.designs.base.DesignRequest`.

    Returns:
        The signature, or None (``options.stream == "auto"`` and a model cannot stream).

    Raises:
        tflite.errors.ExportError: ``options.stream == "on"`` and a model cannot stream, naming why.
    """
    from tflite.errors import ExportError

    try:
        if request.min_frames > 1:
            raise StreamingError(f"the model needs at least {request.min_frames} feature frames per call")
        models = list(request.models)
        if request.units is None:
            streams = [StreamingModel(model) for model in models]
        else:
            if request.unit_indices is None:
                raise StreamingError("sliced levels need their kept unit indices (export_levels unit_indices)")
            dense = {name: np.asarray(indices) for name, indices in request.unit_indices[0].items()}
            widths = {name: len(indices) for name, indices in dense.items()}
            streams = []
            for level, model in enumerate(models):
                kept = {}
                for name, indices in request.unit_indices[level].items():
                    position = np.searchsorted(dense[name], indices)
                    if (position >= len(dense[name])).any() or not np.array_equal(dense[name][position], indices):
                        raise StreamingError(f"level {level} keeps units of {name} that level 0 prunes")
                    kept[name] = position
                streams.append(StreamingModel(model, state_units=widths, kept_units=kept))
        return StreamSignature(streams, request.feature_config, request.blank_id)
    except StreamingError as error:
        if request.options.stream == "on":
            raise ExportError(f"--stream on: the model cannot stream: {error}") from error
        return None
