"""Shared harness for the tflite tests: tiny per-level models, one cached export per kind, parity.

Conversion is slow (tens of seconds), so each exported file is built once per test process
(`exported`) and shared by every test module that asks for the same kind.
"""
from __future__ import annotations

import atexit
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import pathlib
import shutil
import tempfile

import numpy as np

LEVELS = (0.0, 0.5, 0.9)
PIECES = ["<unk>", "\u2581a", "\u2581b", "c", "\u2581d", "e", "\u2581f", "g", "\u2581h", "i"]
BLANK_ID = len(PIECES)
UNITS = 16
INT8_LEVELS = (0, 2)   # the int8 export holds LEVELS[0] and LEVELS[2]
RUN_LEVELS = (0.0, 0.8)   # write_run_dir: two levels, since conversion time grows with the level count

_WORKDIR = pathlib.Path(tempfile.mkdtemp(prefix="dsnn_tflite_tests_"))
atexit.register(shutil.rmtree, _WORKDIR, True)


def feature_config():
    from dsnn_keras.frontend import FeatureConfig

    return FeatureConfig()


def build_base_model(seed: int = 0, units: int = UNITS):
    """Conv2D subsampling (4x) -> 2 LSTMs -> Dense, like the project's ASR model, but tiny."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    bins = feature_config().num_mel_bins
    inputs = keras.Input([None, bins], name="features")
    x = keras.layers.Reshape([-1, bins, 1])(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Reshape([-1, (bins // 4) * 4])(x)
    x = keras.layers.LSTM(units, return_sequences=True)(x)
    x = keras.layers.LSTM(units, return_sequences=True)(x)
    outputs = keras.layers.Dense(BLANK_ID + 1)(x)
    model = keras.Model(inputs, outputs)
    # Larger output weights so levels and tokens differ clearly on random weights.
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 4.0, bias])
    return model


def nested_mask(weight: np.ndarray, sparsity: float, block: int = 1) -> np.ndarray:
    """Magnitude mask keeping the top round(N*(1-s)) entries (blocks of ``block`` input rows)."""
    if block > 1:
        rows, cols = weight.shape
        scores = np.abs(weight).reshape(rows // block, block, cols).sum(axis=1).reshape(-1)
    else:
        scores = np.abs(weight).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    keep = np.zeros(scores.size, bool)
    keep[order[:int(round(scores.size * (1.0 - sparsity)))]] = True
    if block > 1:
        keep = np.repeat(keep.reshape(rows // block, cols), block, axis=0)
    return keep.reshape(weight.shape)


def level_models(levels=LEVELS, seed: int = 0, block: int = 1, units: int = UNITS):
    """One plain model per level: copies of one base model with nested magnitude masks."""
    import tf_keras as keras

    base = build_base_model(seed, units)
    models = []
    for sparsity in levels:
        model = keras.models.clone_model(base)
        weights = []
        for layer_weights in base.get_weights():
            if layer_weights.ndim == 2 and sparsity > 0:
                layer_weights = layer_weights * nested_mask(layer_weights, sparsity, block)
            weights.append(layer_weights)
        model.set_weights(weights)
        models.append(model)
    return models


def _cache_dir() -> pathlib.Path:
    """A directory shared by the test processes (pytest-xdist workers), keyed by the code and versions.

    Exports are deterministic functions of the tflite package, this harness, the frontend and the
    pinned versions; hashing those lets every worker reuse one conversion per kind.
    """
    root = pathlib.Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.glob("tflite/*.py")) + [root / "tests" / "harness_tflite.py",
                                                     root / "dsnn_keras" / "frontend.py"]:
        digest.update(path.read_bytes())
    for package in ("tensorflow", "tf-keras", "ai-edge-litert"):
        digest.update(importlib.metadata.version(package).encode())
    directory = pathlib.Path(tempfile.gettempdir()) / "dsnn_tflite_test_cache" / digest.hexdigest()[:16]
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _cached(name: str, build) -> pathlib.Path:
    """``name.tflite`` in the shared cache, built once by ``build(path)`` under a cross-process lock."""
    directory = _cache_dir()
    path = directory / f"{name}.tflite"
    with open(directory / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            staging = _WORKDIR / f"{name}.tflite"
            build(staging)
            shutil.copyfile(staging, directory / f".{name}.partial")
            (directory / f".{name}.partial").rename(path)
    return path


@functools.lru_cache(maxsize=None)
def exported(kind: str = "float") -> pathlib.Path:
    """The tiny levels exported once (shared across test processes); kinds: float, int8, sparse, single."""
    return _cached(kind, functools.partial(_export, kind))


def _export(kind: str, path: pathlib.Path) -> None:
    from tflite.export import ExportOptions, export_levels

    models = level_models()
    options = {"float": ExportOptions(), "int8": ExportOptions(quantize="dynamic-int8"),
               "float16": ExportOptions(quantize="float16"),
               "sparse": ExportOptions(sparse_speed=True)}.get(kind, ExportOptions())
    if kind == "single":
        export_levels(models[:1], path, sparsities=LEVELS[:1], feature_config=feature_config(),
                      pieces=PIECES, blank_id=BLANK_ID, single_level=True)
    else:
        eval_results = {"split": "dev", "levels": [
            {"level": i, "sparsity": s, "wer": 0.2 + i / 10, "cer": 0.1, "num_utterances": 5}
            for i, s in enumerate(LEVELS)]}
        if kind == "int8":   # two levels keep the (slow) conversion short; INT8_LEVELS index LEVELS
            models = [models[i] for i in INT8_LEVELS]
            eval_results = None
        export_levels(models, path, sparsities=[LEVELS[i] for i in range(len(LEVELS))
                                                  if kind != "int8" or i in INT8_LEVELS],
                      feature_config=feature_config(), pieces=PIECES, blank_id=BLANK_ID,
                      options=options, eval_results=eval_results)


@functools.lru_cache(maxsize=None)
def exported_shared(quantize: str = "none") -> pathlib.Path:
    """The tiny levels exported with design='shared' once per code version (shared by xdist workers)."""
    def build(path: pathlib.Path) -> None:
        from tflite.export import ExportOptions, export_levels

        export_levels(level_models(), path, sparsities=LEVELS, feature_config=feature_config(),
                      pieces=PIECES, blank_id=BLANK_ID, options=ExportOptions(design="shared", quantize=quantize))

    return _cached(f"shared_{quantize}", build)


def convert_builtin(function) -> bytes:
    """A `tf.function`'s concrete function converted with builtin ops only (no Flex), as `.tflite` bytes.

    The function's variables hang on a holder module, so the converter can reach them and keeps the
    signature.
    """
    import tensorflow as tf

    concrete = function.get_concrete_function() if hasattr(function, "get_concrete_function") else function
    holder = tf.Module()
    holder.variables_used = list(concrete.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def stream_step_tflite(stream, bins: int) -> bytes:
    """A `dsnn_keras.streaming.StreamingModel`'s step as one converted signature.

    Inputs ``features [None, bins]`` and one tensor per state entry (named as ``stream.state_specs``);
    outputs ``logits`` and the new state under the same names.
    """
    import tensorflow as tf

    specs = {s.name: tf.TensorSpec(s.shape, getattr(tf, s.dtype), name=s.name) for s in stream.state_specs}

    @tf.function(input_signature=[tf.TensorSpec([None, bins], tf.float32, name="features"), specs])
    def step(features, state):
        out, new_state = stream.step(features, state)
        return {"logits": out, **new_state}

    return convert_builtin(step)


def stored_bytes_without_filterbank(data: bytes) -> int:
    """Bytes of every buffer but the frontend's mel filterbank (float32 in every file, quantized or not)."""
    from tflite import flatbuffer

    model = flatbuffer.unpack(data)
    cfg = feature_config()
    shape = sorted([cfg.num_mel_bins, cfg.fft_length // 2 + 1])
    filterbank = {int(t.buffer) for g in model.subgraphs for t in g.tensors
                  if sorted(int(d) for d in t.shape) == shape}
    return sum(len(b.data) for i, b in enumerate(model.buffers) if b.data is not None and i not in filterbank)


@functools.lru_cache(maxsize=None)
def reference_models():
    """The same tiny level models `exported` used (rebuilt deterministically)."""
    return level_models()


def keras_log_probs(model, features: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    return tf.nn.log_softmax(model(features[None], training=False), axis=-1).numpy()[0]


def greedy(log_probs: np.ndarray) -> list[int]:
    from dsnn_keras.decoding import greedy_ctc_decode

    return greedy_ctc_decode(log_probs[None], None, BLANK_ID)[0]


def assert_level_parity(runner, models, features: np.ndarray, tolerance: float = 1e-3) -> None:
    """Each level of ``runner`` (recognize_features) matches its Keras model: log-probs and tokens."""
    for level, model in enumerate(models):
        out = runner(features=features, sparsity_level=np.int32(level))
        want = keras_log_probs(model, features)
        assert out["log_probs"].shape == want.shape
        assert np.abs(out["log_probs"] - want).max() <= tolerance, f"level {level}"
        assert out["tokens"].tolist() == greedy(want), f"level {level}"
        assert int(out["level"]) == level


def speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    from tflite.export import probe_audio

    return probe_audio(16000, seconds, seed)


def features_of(audio: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    from dsnn_keras.frontend import log_mel_spectrogram

    return log_mel_spectrogram(tf.constant(audio), feature_config()).numpy()


def write_run_dir(root: pathlib.Path, sample_rate: int | None = None, conv_padding: str = "same",
                  granularity: str | None = None, conv_channels=(4, 4), model: dict | None = None) -> pathlib.Path:
    """A minimal run directory as dsnn-train writes it: config, dataset.json, tokenizer, CMVN, checkpoint.

    ``conv_padding="causal"`` gives a streamable model; ``granularity="unit"`` a unit run (sliced export);
    ``model`` keys replace the model section's (e.g. a Conformer encoder).
    """
    import sentencepiece as spm
    import tensorflow as tf
    import yaml

    import dsnn_keras
    from dsnn_keras.config import config_from_dict
    from dsnn_keras.model import build_pruned_model

    root.mkdir()
    pruning = {"levels": list(RUN_LEVELS), "begin_step": 0, "end_step": 1, "frequency": 1}
    if granularity is not None:
        pruning["granularity"] = granularity
    config = config_from_dict({"version": 1,
                               "model": {"conv_channels": list(conv_channels), "lstm_units": [16, 16], "dropout": 0.0,
                                         "conv_padding": conv_padding, **(model or {})},
                               "pruning": pruning})
    (root / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    corpus = root / "text.txt"
    corpus.write_text("\n".join(["yes no", "go stop", "left right", "up down", "on off"] * 20))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "tokenizer"), vocab_size=20,
                                   model_type="unigram", unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model")).get_piece_size()
    fc = feature_config()
    if sample_rate is not None:
        import dataclasses

        fc = dataclasses.replace(fc, sample_rate=sample_rate, upper_edge_hz=min(fc.upper_edge_hz, sample_rate / 2))
    (root / "dataset.json").write_text(json.dumps({
        "format_version": 1, "feature_config": fc.to_dict(),
        "tokenizer": {"model": "tokenizer.model", "vocab_size": vocab, "model_type": "unigram"}}))
    mean, std = [-5.0] * fc.num_mel_bins, [3.0] * fc.num_mel_bins
    (root / "cmvn.json").write_text(json.dumps({"mean": mean, "std": std, "num_frames": 100}))
    model = build_pruned_model(config, fc, vocab, mean, std)
    dsnn_keras.update_nested_masks(model, 1)
    step = tf.Variable(1, dtype=tf.int64)
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step), str(root / "checkpoints"), 1).save()
    return root
