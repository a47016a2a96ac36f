"""The exported file's interface, named once: signature keys, input and output tensor names.

Every module that builds, converts, verifies, runs or describes an exported file takes these names
from here (`tflite.graph` names its ``tf.function`` signatures with them, `tflite.runtime` and
`tflite.bench` look the runners up by them, the metadata's ``signatures`` entry documents them).
A new signature (e.g. a streaming one) is added here first. No TensorFlow import.

Example:
    >>> runner = interpreter.get_signature_runner(RECOGNIZE)
    >>> runner(**{AUDIO: clip, SPARSITY_LEVEL: np.int32(2)})[TOKENS]
"""
from __future__ import annotations

RECOGNIZE = "recognize"                       # recognize(audio, sparsity_level)
RECOGNIZE_FEATURES = "recognize_features"     # recognize_features(features, sparsity_level)
SIGNATURES = (RECOGNIZE, RECOGNIZE_FEATURES)  # every signature an exported file has, in this order
STREAM = "stream"                             # stream(audio, sparsity_level, end_of_stream, state_*...)

AUDIO = "audio"                    # float32 [num_samples] mono PCM in [-1, 1]
FEATURES = "features"              # float32 [num_frames, num_mel_bins] raw log-mel
SPARSITY_LEVEL = "sparsity_level"  # int32 [] requested level (clamped)
END_OF_STREAM = "end_of_stream"    # int32 [] 1 on the last chunk of an utterance
STATE_PREFIX = "state_"            # every stream state tensor's name starts with this

LOG_PROBS = "log_probs"            # float32 [out_frames, vocab_size + 1]
TOKENS = "tokens"                  # int32 [n] greedy CTC token ids
LEVEL = "level"                    # int32 [] the level actually run
OUTPUTS = (LOG_PROBS, TOKENS, LEVEL)


def signature_doc(bins: int, sample_rate: int, num_levels: int, stream: bool = False) -> dict:
    """The metadata's ``signatures`` entry: every signature's inputs and outputs, in words.

    Args:
        bins: Log-mel bins of ``features``.
        sample_rate: Sample rate ``audio`` must have.
        num_levels: Levels the file holds.
        stream: The file also has the ``stream`` signature. Defaults to False.

    Returns:
        ``{signature: {"inputs": {name: description}, "outputs": {name: description}}}``.

    Example:
        >>> signature_doc(80, 16000, 4)["recognize"]["inputs"]["sparsity_level"]
        'int32 [] level index 0..3; out-of-range values are clamped'
    """
    outputs = {LOG_PROBS: "float32 [out_frames, vocab_size + 1] log-softmax, blank last",
               TOKENS: "int32 [n] greedy CTC token ids (repeats merged, blanks removed)",
               LEVEL: "int32 [] the level actually run (after clamping)"}
    level = f"int32 [] level index 0..{num_levels - 1}; out-of-range values are clamped"
    doc = {RECOGNIZE: {"inputs": {AUDIO: f"float32 [num_samples] mono PCM in [-1, 1] at {sample_rate} Hz; "
                                         "NaN/inf samples are treated as 0",
                                  SPARSITY_LEVEL: level}, "outputs": outputs},
           RECOGNIZE_FEATURES: {"inputs": {FEATURES: f"float32 [num_frames, {bins}] raw log-mel "
                                                     "(dsnn_keras.frontend.log_mel_spectrogram)",
                                           SPARSITY_LEVEL: level}, "outputs": outputs}}
    if stream:
        doc[STREAM] = {
            "inputs": {AUDIO: f"float32 [n] the next chunk (n >= 0) of mono PCM at {sample_rate} Hz",
                       SPARSITY_LEVEL: level + "; may change between calls of one stream",
                       END_OF_STREAM: "int32 [] 1 on the last call of an utterance, else 0",
                       STATE_PREFIX + "*": "the state the previous call returned; all zeros to start a stream "
                                           "(names, shapes and dtypes in the metadata's stream.state)"},
            "outputs": {LOG_PROBS: "float32 [frames, vocab_size + 1] log-softmax of the encoder frames this "
                                   "chunk completed (often 0 frames)",
                        TOKENS: "int32 [n] greedy CTC tokens emitted by this chunk (a token continued from "
                                "the previous chunk is not repeated)",
                        LEVEL: "int32 [] the level actually run (after clamping)",
                        STATE_PREFIX + "*": "the next state (the all-zero start state after end_of_stream = 1)"}}
    return doc
