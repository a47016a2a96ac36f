"""The training configuration: a versioned YAML (or JSON) file loaded into frozen dataclasses.

Sections: ``model`` (architecture), ``features`` (the `FeatureConfig` the model expects; a dataset
with other features is refused), ``data`` (batching, SpecAugment), ``pruning`` (levels and the
gradual nested pruning schedule) and ``training`` (mode, optimizer, steps, checkpoints, logging).
Every key is checked: unknown keys and bad values raise `ConfigError` naming the key and the file.

Example:
    >>> cfg = load_config("configs/tiny.yaml")
    >>> cfg.pruning.levels
    (0.0, 0.5, 0.7, 0.9)
    >>> cfg = apply_overrides(cfg, ["training.mode=single", "pruning.single_sparsity=0.7"])
    >>> cfg.effective_levels
    (0.7,)
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import typing
from typing import Any, Mapping, Optional, Sequence

from dsnn_keras.distribute import STRATEGIES
from dsnn_keras.encoders import encoder_names
from dsnn_keras.errors import DsnnError

CONFIG_VERSION = 1


class ConfigError(DsnnError, ValueError):
    """A configuration file or value is invalid; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """The causal Conformer encoder (``model.encoder: conformer``).

    Args:
        dim: Model width (attention, convolution module and residual stream). Defaults to 144.
        blocks: Conformer blocks. Defaults to 4.
        heads: Attention heads; must divide ``dim``. Defaults to 4.
        ff_mult: Hidden width of each feed-forward module, in multiples of ``dim``. Defaults to 4.
        conv_kernel: Kernel of the causal depthwise convolution. Defaults to 15.
        left_context: How many earlier encoder frames (after subsampling) each frame's attention
            reads besides itself, in the whole-utterance model and in streaming alike; a bounded
            context gives the stream fixed-size attention caches (`dsnn_keras.streaming`). Null or 0:
            the whole past (the attention cache grows with the utterance, so the model does not
            stream). Defaults to None.
    """

    dim: int = 144
    blocks: int = 4
    heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    left_context: Optional[int] = None

    def validate(self, where: str) -> None:
        for name in ("dim", "blocks", "heads", "ff_mult", "conv_kernel"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}: model.conformer.{name} must be > 0, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ConfigError(f"{where}: model.conformer.heads ({self.heads}) must divide model.conformer.dim "
                              f"({self.dim})")
        if self.left_context is not None and self.left_context < 0:
            raise ConfigError(f"{where}: model.conformer.left_context must be >= 1 frames (or null/0 for the whole "
                              f"past), got {self.left_context}")

    @property
    def attention_left_context(self) -> Optional[int]:
        """The bounded attention context in frames, or None for the whole past (``left_context`` null or 0)."""
        return self.left_context or None


CONV_PADDINGS = ("same", "causal", "lookahead")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """ASR model architecture.

    Args:
        conv_channels: Output channels of the stride-2 Conv2D subsampling layers, one layer per
            entry (at least one); each halves the frames, so two (the default) reduce time 4x
            (`dsnn_keras.subsampling.time_reduction`). Defaults to (32, 32).
        conv_kernel: Conv kernel size. Defaults to 3.
        conv_padding: ``"same"`` (each stride-2 window is centred: it reaches ahead, placed by the
            parity of the utterance's length) or ``"causal"`` (padding on the left only, in time; a
            window never reaches past its last input frame, so the model streams exactly chunk by
            chunk: `dsnn_keras.streaming`) or ``"lookahead"`` (``conv_kernel - 2`` frames on the left
            and one on the right: one frame of fixed look-ahead per convolution, whatever the
            length; streams exactly with that delay, the last frame flushed at the end of the
            stream). Same output lengths in all three. Defaults to "same".
        encoder: A name from the encoder registry (`dsnn_keras.encoders.encoder_names`): "lstm"
            (a stack of unidirectional LSTMs) or "conformer" (causal Conformer blocks,
            `ConformerConfig`), or one added with `dsnn_keras.encoders.register_encoder`. Both
            built-in encoders are causal: no encoder frame depends on a later one.
            Defaults to "lstm".
        lstm_units: One unidirectional LSTM layer per entry (``encoder: lstm``). Defaults to
            (256, 256, 256).
        conformer: `ConformerConfig` (``encoder: conformer``). Defaults to ``ConformerConfig()``.
        projection_units: Width of an optional Dense projection after the encoder; 0 for none.
            Defaults to 0.
        dropout: Dropout rate inside/between encoder layers (training only). Defaults to 0.1.
        running_mean_frames: 0, or N > 0 to subtract from every frame (after the global CMVN) the
            running mean of the utterance's frames so far, itself included, with a prior of N
            frames at the global mean: ``x_t - sum(x_1..x_t) / (N + t)``. Causal (it streams,
            with the running sum and count as state); it removes a fixed channel filter (a
            microphone's or a phone line's frequency response: an offset per mel bin in the log
            domain), which the global CMVN of the training corpus cannot. Defaults to 0.
    """

    conv_channels: tuple[int, ...] = (32, 32)
    conv_kernel: int = 3
    conv_padding: str = "same"
    encoder: str = "lstm"
    lstm_units: tuple[int, ...] = (256, 256, 256)
    conformer: ConformerConfig = ConformerConfig()
    projection_units: int = 0
    dropout: float = 0.1
    running_mean_frames: int = 0

    def validate(self, where: str) -> None:
        if self.running_mean_frames < 0:
            raise ConfigError(f"{where}: model.running_mean_frames must be 0 (off) or a number of frames > 0, "
                              f"got {self.running_mean_frames}")
        if not self.conv_channels or min(self.conv_channels) <= 0:
            raise ConfigError(f"{where}: model.conv_channels must be a non-empty list of positive ints "
                              f"(one stride-2 Conv2D each), got {self.conv_channels}")
        if self.conv_kernel <= 0:
            raise ConfigError(f"{where}: model.conv_kernel must be > 0, got {self.conv_kernel}")
        if self.conv_padding not in CONV_PADDINGS:
            raise ConfigError(f"{where}: model.conv_padding must be one of {CONV_PADDINGS}, got {self.conv_padding!r}")
        if self.conv_padding == "lookahead" and self.conv_kernel < 2:
            raise ConfigError(f"{where}: model.conv_padding lookahead needs conv_kernel >= 2, got {self.conv_kernel}")
        names = encoder_names()
        if self.encoder not in names:
            known = " or ".join(", ".join(repr(n) for n in names).rsplit(", ", 1))
            raise ConfigError(f"{where}: model.encoder must be {known}, got {self.encoder!r}")
        if self.encoder == "lstm" and (not self.lstm_units or min(self.lstm_units) <= 0):
            raise ConfigError(f"{where}: model.lstm_units must be a non-empty list of positive ints, "
                              f"got {self.lstm_units}")
        self.conformer.validate(where)
        if self.projection_units < 0:
            raise ConfigError(f"{where}: model.projection_units must be >= 0, got {self.projection_units}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{where}: model.dropout must be in [0, 1), got {self.dropout}")


@dataclasses.dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment masks, applied to training batches only.

    Args:
        freq_masks: Number of frequency masks per utterance. Defaults to 2.
        freq_mask_width: Largest frequency mask, in mel bins. Defaults to 15.
        time_masks: Number of time masks per utterance. Defaults to 2.
        time_mask_width: Largest time mask, in frames. Defaults to 40.
        time_mask_max_ratio: A time mask never exceeds this fraction of the utterance. Defaults to 0.2.
    """

    freq_masks: int = 2
    freq_mask_width: int = 15
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_max_ratio: float = 0.2

    def validate(self, where: str) -> None:
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}: data.specaugment.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.time_mask_max_ratio <= 1.0:
            raise ConfigError(f"{where}: data.specaugment.time_mask_max_ratio must be in [0, 1], "
                              f"got {self.time_mask_max_ratio}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Input pipeline.

    Args:
        train_split: Split to train on. Defaults to "train".
        dev_split: Split for the periodic dev WER; "" disables it. Defaults to "dev".
        max_frames_per_batch: Length-bucketed batches hold at most this many padded frames.
            Defaults to 8000.
        max_batch_size: Upper bound on utterances per batch. Defaults to 64.
        num_buckets: Number of length buckets. Defaults to 8.
        max_utterance_frames: Longer training utterances are dropped. Defaults to 3000.
        shuffle_buffer: Utterances in the shuffle buffer, or null (the default) for the whole
            split, as long as its records fit ``shuffle_buffer_mb``. Files in input order (corpus
            by corpus, speaker by speaker, an utterance's speed and augmentation copies side by
            side: datasets prepared before 2026-12-06, or with ``--train_order input``) make a
            buffer much smaller than the split train on long runs of one corpus: an AN4 + FSDD mix
            written AN4 first with a 1,024 buffer saw batches of AN4 only, then FSDD only, in turn
            every epoch (docs/training.md "Shuffling").
        shuffle_buffer_mb: With ``shuffle_buffer: null``, the most memory (MiB of records, as on
            disk) the buffer may hold; a larger split gets a buffer of as many utterances as fit
            and its files are read in another order each epoch (a warning if they are in input
            order). Defaults to 2048.
        sorted_epochs: The first this many epochs visit the length buckets shortest first
            (SortaGrad, Amodei et al. 2016: short utterances get CTC out of its initial
            blank-only phase sooner); utterances are still shuffled within a bucket. Defaults to 0.
        specaugment: `SpecAugmentConfig`, or null to disable SpecAugment.
    """

    train_split: str = "train"
    dev_split: str = "dev"
    max_frames_per_batch: int = 8000
    max_batch_size: int = 64
    num_buckets: int = 8
    max_utterance_frames: int = 3000
    shuffle_buffer: Optional[int] = None
    shuffle_buffer_mb: int = 2048
    sorted_epochs: int = 0
    specaugment: Optional[SpecAugmentConfig] = SpecAugmentConfig()

    def validate(self, where: str) -> None:
        for name in ("max_frames_per_batch", "max_batch_size", "num_buckets", "max_utterance_frames",
                     "shuffle_buffer", "shuffle_buffer_mb"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{where}: data.{name} must be > 0, got {getattr(self, name)}")
        if self.sorted_epochs < 0:
            raise ConfigError(f"{where}: data.sorted_epochs must be >= 0, got {self.sorted_epochs}")
        if self.max_frames_per_batch < self.max_utterance_frames:
            raise ConfigError(f"{where}: data.max_frames_per_batch ({self.max_frames_per_batch}) must be >= "
                              f"data.max_utterance_frames ({self.max_utterance_frames})")
        if not self.train_split:
            raise ConfigError(f"{where}: data.train_split must not be empty")
        if self.specaugment is not None:
            self.specaugment.validate(where)


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Sparsity levels and the gradual nested pruning schedule.

    Steps: dense warm-up for ``begin_step`` steps, the cubic ramp until ``end_step``, then joint
    fine-tuning until ``training.total_steps``.

    Args:
        levels: Sparsity per level, strictly increasing, each in [0, 1). Defaults to (0, .5, .7, .9).
        single_sparsity: The one sparsity trained in ``training.mode: single``. Defaults to 0.0.
        begin_step: First pruning step (end of the dense warm-up). Defaults to 1000.
        end_step: Last mask update (end of the ramp). Defaults to 4000.
        frequency: Masks are recomputed every this many steps during the ramp. Defaults to 100.
        power: Exponent of the polynomial ramp. Defaults to 3.
        prune_layers: Names of the layers to prune; null means every LSTM and Dense layer except
            the output layer ("logits"), plus the Conv2D layers with ``granularity: unit``.
            Defaults to None.
        block_size: ``[rows, cols]`` blocks of each kernel's ``[inputs, outputs]`` matrix view
            pruned together. ``[4, 1]`` (4 consecutive inputs of one output) is TFLite's 1x4
            block, the structure its sparse FULLY_CONNECTED kernel runs fast (``dsnn-export
            --sparse_speed``, docs/export.md). Defaults to [1, 1] (unstructured).
        granularity: What the nested masks rank and prune: ``weight`` (each weight; the
            default), ``block`` (``block_size`` blocks; implied by a block_size other than
            [1, 1]) or ``unit`` (whole LSTM units, Dense units and Conv2D channels with every
            weight that reads them, ranked across layers; each level exports as a physically
            narrower model, `dsnn_keras.sparsity.units`, docs/nested.md). A level's sparsity means
            the fraction of prunable weights that are zero at every granularity. Defaults to
            ``weight`` (``block`` when block_size is not [1, 1]).
    """

    levels: tuple[float, ...] = (0.0, 0.5, 0.7, 0.9)
    single_sparsity: float = 0.0
    begin_step: int = 1000
    end_step: int = 4000
    frequency: int = 100
    power: int = 3
    prune_layers: Optional[tuple[str, ...]] = None
    block_size: tuple[int, ...] = (1, 1)
    granularity: Optional[str] = None

    @property
    def effective_granularity(self) -> str:
        """``granularity``, or the one block_size implies when it is not set."""
        if self.granularity is not None:
            return self.granularity
        return "weight" if tuple(self.block_size) == (1, 1) else "block"

    def validate(self, where: str) -> None:
        if not self.levels:
            raise ConfigError(f"{where}: pruning.levels must not be empty")
        if any(not 0.0 <= s < 1.0 for s in self.levels):
            raise ConfigError(f"{where}: pruning.levels must each be in [0, 1), got {list(self.levels)}")
        if any(b <= a for a, b in zip(self.levels, self.levels[1:])):
            raise ConfigError(f"{where}: pruning.levels must be strictly increasing, got {list(self.levels)}")
        if not 0.0 <= self.single_sparsity < 1.0:
            raise ConfigError(f"{where}: pruning.single_sparsity must be in [0, 1), got {self.single_sparsity}")
        if self.begin_step < 0 or self.end_step <= self.begin_step:
            raise ConfigError(f"{where}: pruning needs 0 <= begin_step < end_step, got "
                              f"begin_step={self.begin_step}, end_step={self.end_step}")
        if self.frequency <= 0:
            raise ConfigError(f"{where}: pruning.frequency must be > 0, got {self.frequency}")
        if self.power <= 0:
            raise ConfigError(f"{where}: pruning.power must be > 0, got {self.power}")
        if len(self.block_size) != 2 or any(b <= 0 for b in self.block_size):
            raise ConfigError(f"{where}: pruning.block_size must be two positive integers [rows, cols], "
                              f"got {list(self.block_size)}")
        if self.granularity not in (None, "weight", "block", "unit"):
            raise ConfigError(f"{where}: pruning.granularity must be weight, block or unit, got {self.granularity!r}")
        blocks = tuple(self.block_size) != (1, 1)
        if self.granularity in ("weight", "unit") and blocks:
            raise ConfigError(f"{where}: pruning.granularity {self.granularity} needs block_size [1, 1] "
                              f"(got {list(self.block_size)}); use granularity: block for blocks")
        if self.granularity == "block" and not blocks:
            raise ConfigError(f"{where}: pruning.granularity block needs a block_size other than [1, 1]")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimisation, modes, checkpoints and logging.

    Args:
        mode: "dsnn" trains all ``pruning.levels`` jointly; "single" trains one model at
            ``pruning.single_sparsity`` with the same budget and schedule. Defaults to "dsnn".
        total_steps: Optimizer steps in the run. Defaults to 6000.
        sandwich_levels: Levels run per step (densest + sparsest + n-2 sampled); null = all levels.
            Defaults to None.
        distillation_weight: Weight of the in-place distillation loss (0 disables). Defaults to 0.
        level_weights: One weight > 0 per ``pruning.levels`` entry: level i's CTC loss (and its
            distillation term) counts ``level_weights[i]`` times in the step's loss, e.g.
            ``[1, 1, 1, 2]`` to give the sparsest of four levels twice the say. null = all 1.
            Ignored in ``single`` mode (one level: a weight only rescales the loss). Defaults to None.
        one_pass_before_pruning: Before ``pruning.begin_step`` every level's mask is all ones, so the
            levels are one model: ``true`` trains it once per step (the densest level's loss times the
            summed weights of the levels the step would have run) instead of once per level. ``dsnn``
            mode only; off for a warm-started run (its masks are the source's). It saves about three
            quarters of those steps' compute (~17 % of ``configs/an4.yaml``'s training) but draws
            fewer dropout masks and drops the distillation term between the levels' passes (a
            consistency term while they are one model), so a run is not bit-identical to
            ``false``. Defaults to False.
        switch_weight: Weight of one extra CTC loss per step on a level switch mid-utterance (an
            ordered pair of different levels and a cut drawn per step; `dsnn_keras.level_switch`),
            so a stream that changes level keeps its accuracy. ``dsnn`` mode with two or more levels
            and a causal chain model (the LSTM encoder) only. 0 = off. Defaults to 0.0.
        learning_rate: Peak learning rate of Adam. Defaults to 1e-3.
        warmup_steps: Linear learning-rate warm-up steps. Defaults to 500.
        final_learning_rate: Learning rate reached at ``total_steps`` by cosine decay. Defaults to 1e-5.
        decay_begin_step: Step at which the cosine decay starts; the learning rate is held at its
            peak from the end of the warm-up until then. null = decay right after the warm-up.
            Defaults to None.
        clip_norm: Global-norm gradient clipping. Defaults to 5.0.
        seed: Seed for weights, data order, SpecAugment and level sampling. Defaults to 0.
        checkpoint_every: Steps between checkpoints. Defaults to 200.
        keep_checkpoints: Checkpoints kept on disk. Defaults to 3.
        log_every: Steps between log lines and TensorBoard scalars. Defaults to 50.
        eval_every: Steps between dev-WER evaluations (0 disables; always done at the end).
            Defaults to 1000.
        eval_max_utterances: Dev utterances decoded per evaluation. Defaults to 200.
        max_consecutive_nonfinite: Stop the run after this many NaN/Inf steps in a row. Defaults to 20.
        strategy: The `tf.distribute` strategy: "default" (one device), "mirrored" (every local
            GPU), "multi_worker" (the cluster in ``TF_CONFIG``) or "tpu" (`dsnn_keras.distribute`).
            ``dsnn-train --strategy`` overrides it. It does not change what a step computes, so a
            run may be resumed under another strategy. Defaults to "default".
        tpu: ``strategy: tpu`` only: the TPU's name or ``grpc://`` address (``--tpu``); null
            finds the local TPU. Defaults to None.
    """

    mode: str = "dsnn"
    total_steps: int = 6000
    sandwich_levels: Optional[int] = None
    distillation_weight: float = 0.0
    level_weights: Optional[tuple[float, ...]] = None
    one_pass_before_pruning: bool = False
    switch_weight: float = 0.0
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    final_learning_rate: float = 1e-5
    decay_begin_step: Optional[int] = None
    clip_norm: float = 5.0
    seed: int = 0
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    log_every: int = 50
    eval_every: int = 1000
    eval_max_utterances: int = 200
    max_consecutive_nonfinite: int = 20
    strategy: str = "default"
    tpu: Optional[str] = None

    def validate(self, where: str) -> None:
        if self.mode not in ("dsnn", "single"):
            raise ConfigError(f"{where}: training.mode must be 'dsnn' or 'single', got {self.mode!r}")
        if self.sandwich_levels is not None and self.sandwich_levels < 1:
            raise ConfigError(f"{where}: training.sandwich_levels must be >= 1 or null, got {self.sandwich_levels}")
        if self.distillation_weight < 0:
            raise ConfigError(f"{where}: training.distillation_weight must be >= 0, got {self.distillation_weight}")
        if not (isinstance(self.switch_weight, (int, float)) and not isinstance(self.switch_weight, bool)
                and math.isfinite(self.switch_weight) and self.switch_weight >= 0):
            raise ConfigError(f"{where}: training.switch_weight must be a number >= 0, got {self.switch_weight!r}")
        if self.level_weights is not None:
            if not self.level_weights or min(self.level_weights) <= 0:
                raise ConfigError(f"{where}: training.level_weights must be null or a non-empty list of numbers "
                                  f"> 0, got {list(self.level_weights)}")
        for name in ("total_steps", "checkpoint_every", "keep_checkpoints", "log_every",
                     "eval_max_utterances", "max_consecutive_nonfinite"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}: training.{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}: training.{name} must be >= 0, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.final_learning_rate < 0:
            raise ConfigError(f"{where}: training.learning_rate must be > 0 and final_learning_rate >= 0")
        if self.decay_begin_step is not None and not (
                self.warmup_steps <= self.decay_begin_step < self.total_steps):
            raise ConfigError(f"{where}: training.decay_begin_step must be null or in [warmup_steps, total_steps) "
                              f"= [{self.warmup_steps}, {self.total_steps}), got {self.decay_begin_step}")
        if self.clip_norm <= 0:
            raise ConfigError(f"{where}: training.clip_norm must be > 0, got {self.clip_norm}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"{where}: training.strategy must be one of {', '.join(STRATEGIES)}, "
                              f"got {self.strategy!r}")
        if self.tpu and self.strategy != "tpu":
            raise ConfigError(f"{where}: training.tpu ({self.tpu!r}) needs training.strategy: tpu, "
                              f"got {self.strategy!r}")


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole training configuration (``version: 1``)."""

    model: ModelConfig = ModelConfig()
    features: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data: DataConfig = DataConfig()
    pruning: PruningConfig = PruningConfig()
    training: TrainingConfig = TrainingConfig()
    version: int = CONFIG_VERSION

    @property
    def effective_levels(self) -> tuple[float, ...]:
        """The levels the model is built with: all levels, or the one single-mode sparsity."""
        if self.training.mode == "single":
            return (self.pruning.single_sparsity,)
        return tuple(self.pruning.levels)

    @property
    def num_sandwich_levels(self) -> int:
        k = len(self.effective_levels)
        n = self.training.sandwich_levels
        return k if n is None else min(n, k)

    def feature_config(self):
        """The `FeatureConfig` this model expects."""
        from dsnn_keras.frontend import FeatureConfig

        return FeatureConfig.from_dict(dict(self.features))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists, not tuples) that `config_from_dict` reads back unchanged."""
        return _plain(dataclasses.asdict(self))


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Converts a YAML value to the annotated field type, or raises naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key, where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return _build(hint, value, key, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            # NaN compares False with every bound below, so it would pass them all.
            raise ConfigError(f"{where}: {key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, got {value!r}")
        return value
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return dict(value)
    return value


def _build(cls, values: Mapping[str, Any], prefix: str, where: str):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        names = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(f"{where}: unknown key(s) {names}; expected one of {sorted(known)}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}.{name}" if prefix else name, where)
              for name, value in values.items()}
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any], where: str = "<config>") -> Config:
    """Builds and validates a `Config` from a mapping.

    Args:
        values: The parsed file; must contain ``version: 1``.
        where: File name used in error messages.

    Returns:
        The validated, frozen `Config`.

    Raises:
        ConfigError: naming ``where`` and the offending key.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    if "version" not in values:
        raise ConfigError(f"{where}: missing key 'version' (expected version: {CONFIG_VERSION})")
    if values["version"] != CONFIG_VERSION:
        raise ConfigError(f"{where}: version must be {CONFIG_VERSION}, got {values['version']!r}")
    config = _build(Config, values, "", where)
    config.model.validate(where)
    config.data.validate(where)
    config.pruning.validate(where)
    config.training.validate(where)
    try:
        features = config.feature_config().to_dict()
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: features: {err}") from None
    config = dataclasses.replace(config, features=features)
    if config.training.mode == "dsnn" and config.training.sandwich_levels is not None \
            and len(config.pruning.levels) > 1 and config.training.sandwich_levels < 2:
        raise ConfigError(f"{where}: training.sandwich_levels must be >= 2 with several levels "
                          f"(densest and sparsest are always run), got {config.training.sandwich_levels}")
    if config.training.mode == "dsnn" and config.training.sandwich_levels is not None \
            and config.training.sandwich_levels > len(config.pruning.levels):
        raise ConfigError(f"{where}: training.sandwich_levels ({config.training.sandwich_levels}) must be at most "
                          f"the number of pruning.levels ({len(config.pruning.levels)}), or null for all levels")
    if config.training.switch_weight > 0 and (config.training.mode != "dsnn" or len(config.pruning.levels) < 2):
        raise ConfigError(f"{where}: training.switch_weight ({config.training.switch_weight}) trains level switches: "
                          "it needs training.mode: dsnn and two or more pruning.levels")
    if config.training.switch_weight > 0 and (config.model.encoder != "lstm" or config.model.conv_padding != "causal"):
        raise ConfigError(f"{where}: training.switch_weight needs model.encoder: lstm and model.conv_padding: causal "
                          f"(a model that streams layer by layer), got {config.model.encoder!r} and "
                          f"{config.model.conv_padding!r}")
    if config.training.mode == "dsnn" and config.training.level_weights is not None \
            and len(config.training.level_weights) != len(config.pruning.levels):
        raise ConfigError(f"{where}: training.level_weights has {len(config.training.level_weights)} entries, "
                          f"pruning.levels {len(config.pruning.levels)}: give one weight per level, or null")
    return config


def load_config(path) -> Config:
    """Reads a YAML or JSON config file and validates it (see `config_from_dict`)."""
    import yaml

    from dsnn_keras import fileio

    path = fileio.as_path(path)   # local, or a URL tf.io.gfile reads (gs://...)
    try:
        text = fileio.read_text(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    return config_from_dict(values if values is not None else {}, str(path))


def apply_overrides(config: Config, overrides: Sequence[str], where: str = "--set") -> Config:
    """Returns ``config`` with dotted ``key=value`` overrides applied (values parsed as YAML).

    Example:
        >>> apply_overrides(cfg, ["training.total_steps=100"]).training.total_steps
        100
    """
    import yaml

    values = config.to_dict()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: expected KEY=VALUE (e.g. training.mode=single), got {item!r}")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                if part in node and node[part] is None:
                    node[part] = {}
                else:
                    raise ConfigError(f"{where}: unknown key {key!r}")
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            reason = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ConfigError(f"{where}: {item!r}: the value {raw!r} is not valid YAML ({reason})") from None
    return config_from_dict(values, where)


def dump_config(config: Config, path) -> None:
    """Writes the resolved config as YAML (read back by `load_config`), complete or not at all."""
    import yaml

    from dsnn_keras import fileio

    fileio.atomic_write(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
