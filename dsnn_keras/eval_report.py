"""``eval.json``: the evaluation report ``dsnn-eval`` writes, as frozen dataclasses.

`EvalReport` is the contract between the evaluation and its readers (``dsnn-export``'s WER gate and
metadata, the job's summary, the AN4 comparison). `EvalReport.to_dict` gives exactly the JSON
``dsnn-eval`` has always written (every key, in the same order) plus ``schema_version``;
`EvalReport.from_dict` reads it back, and also reads files written before ``schema_version``
existed (and hand-written ones that hold only ``levels``). An unknown key is an
`EvalReportError` naming the file and the key, so a renamed field cannot be silently ignored.

Example:
    >>> report = EvalReport.read("runs/an4_dsnn/eval.json")
    >>> [(level.sparsity, level.wer) for level in report.levels]
    [(0.0, 0.21), (0.5, 0.22), (0.7, 0.24), (0.9, 0.31)]
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from typing import Any, Mapping, Optional, Sequence

from dsnn_keras.errors import DsnnError

SCHEMA_VERSION = 1
# The key eval.json carried before ``schema_version``; still written (same value) for old readers.
LEGACY_VERSION_KEY = "format_version"


class EvalReportError(DsnnError, ValueError):
    """An ``eval.json`` that does not match the schema (unknown key, missing key, wrong type, newer
    schema); the message names the file and the key."""


def _number(value: Any, key: str, where: str, optional: bool = False) -> Optional[float]:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EvalReportError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, where: str, optional: bool = False) -> Optional[int]:
    if value is None and optional:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise EvalReportError(f"{where}: {key} must be an integer, got {value!r}")
    return int(value)


def _text(value: Any, key: str, where: str, optional: bool = False) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise EvalReportError(f"{where}: {key} must be a string, got {value!r}")
    return value


def _speakers(value: Any, where: str) -> Optional[tuple[str, ...]]:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise EvalReportError(f"{where}: speakers must be a list of strings, got {value!r}")
    return tuple(value)


def _mapping(value: Any, key: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EvalReportError(f"{where}: {key} must be a mapping, got {value!r}")
    return value


def _check_keys(cls: type, values: Mapping[str, Any], prefix: str, where: str,
                required: Sequence[str], extra: Sequence[str] = ()) -> None:
    known = {f.name for f in dataclasses.fields(cls)} | set(extra)
    unknown = sorted(set(values) - known)
    if unknown:
        raise EvalReportError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)} "
                              f"(expected some of {sorted(known)}); written by a newer dsnn-eval?")
    missing = [key for key in required if key not in values]
    if missing:
        raise EvalReportError(f"{where}: missing key(s) {', '.join(prefix + k for k in missing)}")


@dataclasses.dataclass(frozen=True)
class EvalExample:
    """One (reference, hypothesis) pair kept in a level's results.

    Args:
        utt_id: Utterance id.
        reference: Reference transcript.
        hypothesis: Greedy CTC decoding at the level.
    """

    utt_id: str
    reference: str
    hypothesis: str

    def to_dict(self) -> dict[str, str]:
        return {"utt_id": self.utt_id, "reference": self.reference, "hypothesis": self.hypothesis}

    @classmethod
    def from_dict(cls, values: Any, where: str = "eval.json", prefix: str = "") -> "EvalExample":
        values = _mapping(values, prefix.rstrip(".") or "example", where)
        _check_keys(cls, values, prefix, where, required=("utt_id", "reference", "hypothesis"))
        return cls(**{key: _text(values[key], prefix + key, where) for key in ("utt_id", "reference", "hypothesis")})


# LevelResult's error counts, in eval.json's key order.
_COUNTS = ("substitutions", "deletions", "insertions", "reference_words", "char_errors", "reference_chars")


@dataclasses.dataclass(frozen=True)
class LevelResult:
    """The results of one sparsity level: one entry of ``eval.json``'s ``levels``.

    Only ``level``, ``sparsity``, ``wer`` and ``cer`` are required when reading; ``dsnn-eval`` writes
    every field.

    Args:
        level: Level index.
        sparsity: The level's sparsity (fraction of prunable weights masked).
        wer: Word error rate (fraction).
        cer: Character error rate (fraction).
        rtf: Wall-clock compute seconds (forward pass + greedy decoding) per second of audio.
        cpu_rtf: Process CPU seconds (all threads) per second of audio.
        num_utterances: Utterances decoded.
        compute_seconds: Wall-clock compute seconds in all.
        substitutions: Word substitutions.
        deletions: Word deletions.
        insertions: Word insertions.
        reference_words: Words in the references.
        char_errors: Character edit distance in all.
        reference_chars: Characters in the references.
        prunable_nonzero_fraction: Fraction of the prunable weights the level keeps (None: none prunable).
        model_nonzero_fraction: Fraction of all trainable weights the level keeps.
        prunable_params: Number of prunable weights.
        model_params: Number of trainable weights.
        units: Units kept per layer (unit granularity only; else None and not written).
        examples: A few (reference, hypothesis) pairs.
        decoder_seconds: Wall-clock seconds of the beam search alone (beam decoder only; else None
            and not written).
    """

    level: int
    sparsity: float
    wer: float
    cer: float
    rtf: Optional[float] = None
    cpu_rtf: Optional[float] = None
    num_utterances: Optional[int] = None
    compute_seconds: Optional[float] = None
    substitutions: Optional[int] = None
    deletions: Optional[int] = None
    insertions: Optional[int] = None
    reference_words: Optional[int] = None
    char_errors: Optional[int] = None
    reference_chars: Optional[int] = None
    prunable_nonzero_fraction: Optional[float] = None
    model_nonzero_fraction: Optional[float] = None
    prunable_params: Optional[int] = None
    model_params: Optional[int] = None
    units: Optional[Mapping[str, int]] = None
    examples: tuple[EvalExample, ...] = ()
    decoder_seconds: Optional[float] = None

    def __post_init__(self):
        if self.level < 0:
            raise EvalReportError(f"level must be >= 0, got {self.level}")
        if not (math.isfinite(self.wer) and self.wer >= 0 and math.isfinite(self.cer) and self.cer >= 0):
            raise EvalReportError(f"level {self.level}: wer and cer must be finite and >= 0, got "
                                  f"{self.wer!r}, {self.cer!r}")

    def to_dict(self) -> dict[str, Any]:
        """The entry as ``dsnn-eval`` writes it (``units`` only when set)."""
        out: dict[str, Any] = {"level": self.level, "sparsity": self.sparsity, "wer": self.wer, "cer": self.cer,
                               "rtf": self.rtf, "cpu_rtf": self.cpu_rtf, "num_utterances": self.num_utterances,
                               "compute_seconds": self.compute_seconds}
        out.update({key: getattr(self, key) for key in _COUNTS})
        out.update(prunable_nonzero_fraction=self.prunable_nonzero_fraction,
                   model_nonzero_fraction=self.model_nonzero_fraction,
                   prunable_params=self.prunable_params, model_params=self.model_params)
        if self.units is not None:
            out["units"] = dict(self.units)
        out["examples"] = [example.to_dict() for example in self.examples]
        if self.decoder_seconds is not None:
            out["decoder_seconds"] = self.decoder_seconds
        return out

    @classmethod
    def from_dict(cls, values: Any, where: str = "eval.json", prefix: str = "") -> "LevelResult":
        """Reads one ``levels`` entry; ``where`` (the file) and ``prefix`` (``levels[2].``) name errors."""
        values = _mapping(values, prefix.rstrip(".") or "level", where)
        _check_keys(cls, values, prefix, where, required=("level", "sparsity", "wer", "cer"))
        get = values.get
        kwargs: dict[str, Any] = {
            "level": _integer(get("level"), prefix + "level", where),
            "sparsity": _number(get("sparsity"), prefix + "sparsity", where),
            "wer": _number(get("wer"), prefix + "wer", where),
            "cer": _number(get("cer"), prefix + "cer", where),
        }
        for key in ("rtf", "cpu_rtf", "compute_seconds", "prunable_nonzero_fraction", "model_nonzero_fraction",
                    "decoder_seconds"):
            kwargs[key] = _number(get(key), prefix + key, where, optional=True)
        for key in ("num_utterances", *_COUNTS, "prunable_params", "model_params"):
            kwargs[key] = _integer(get(key), prefix + key, where, optional=True)
        if get("units") is not None:
            units = _mapping(get("units"), prefix + "units", where)
            kwargs["units"] = {str(name): _integer(count, f"{prefix}units.{name}", where)
                               for name, count in units.items()}
        examples = get("examples") or []
        if not isinstance(examples, list):
            raise EvalReportError(f"{where}: {prefix}examples must be a list, got {examples!r}")
        kwargs["examples"] = tuple(EvalExample.from_dict(example, where, f"{prefix}examples[{i}].")
                                   for i, example in enumerate(examples))
        try:
            return cls(**kwargs)
        except EvalReportError as error:
            raise EvalReportError(f"{where}: {prefix.rstrip('.')}: {error}") from None


@dataclasses.dataclass(frozen=True)
class EvalReport:
    """The whole ``eval.json``.

    Only ``levels`` is required when reading; ``dsnn-eval`` writes every field.

    Args:
        levels: One `LevelResult` per evaluated level, in the order evaluated.
        split: The split decoded.
        num_utterances: Utterances decoded.
        audio_seconds: Audio decoded, in seconds.
        batch_size: Utterances per forward pass.
        decoder: ``"greedy_ctc"`` or ``"beam"``.
        decoder_config: The beam decoder's settings (``beam`` = `BeamSearchConfig`, ``lm``, ``lm_order``,
            ``lexicon_words``, ``hotwords``, ``hotword_weight``, ``source``, and ``levels``: the settings of
            the levels that decode with their own, ``{"3": BeamSearchConfig}``); None for greedy.
        run_dir: The run evaluated.
        data_dir: The prepared dataset.
        speakers: The speakers of ``split`` decoded, when only some were (``dsnn-eval --speakers``);
            None = all.
        files: Kind (``json``, ``md``, ``png``, ``hypotheses``) -> path of the files written.
        created_by: ``{"command": [...], "versions": {...}, "time": ISO 8601}``.
        schema_version: This schema's version (`SCHEMA_VERSION`); a newer one is refused.
    """

    levels: tuple[LevelResult, ...]
    split: Optional[str] = None
    num_utterances: Optional[int] = None
    audio_seconds: Optional[float] = None
    batch_size: Optional[int] = None
    decoder: Optional[str] = None
    decoder_config: Optional[Mapping[str, Any]] = None
    run_dir: Optional[str] = None
    data_dir: Optional[str] = None
    speakers: Optional[tuple[str, ...]] = None
    files: Optional[Mapping[str, str]] = None
    created_by: Optional[Mapping[str, Any]] = None
    schema_version: int = SCHEMA_VERSION

    def level(self, index: int) -> Optional[LevelResult]:
        """The results of level ``index``, or None if it was not evaluated."""
        return next((entry for entry in self.levels if entry.level == index), None)

    def at_sparsity(self, sparsity: float, tolerance: float = 1e-6) -> Optional[LevelResult]:
        """The results of the level whose sparsity is ``sparsity``, or None."""
        return next((entry for entry in self.levels if abs(entry.sparsity - sparsity) < tolerance), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object ``dsnn-eval`` writes: the keys it always wrote, in order, plus
        ``schema_version`` (fields that are None are left out, except in the level entries)."""
        out: dict[str, Any] = {LEGACY_VERSION_KEY: self.schema_version, "schema_version": self.schema_version}
        if self.split is not None:
            out["split"] = self.split
        out["levels"] = [entry.to_dict() for entry in self.levels]
        optional = {"num_utterances": self.num_utterances, "audio_seconds": self.audio_seconds,
                    "batch_size": self.batch_size, "decoder": self.decoder,
                    "decoder_config": None if self.decoder_config is None else dict(self.decoder_config),
                    "run_dir": self.run_dir,
                    "data_dir": self.data_dir,
                    "speakers": None if self.speakers is None else list(self.speakers),
                    "files": None if self.files is None else dict(self.files),
                    "created_by": None if self.created_by is None else dict(self.created_by)}
        out.update({key: value for key, value in optional.items() if value is not None})
        return out

    @classmethod
    def from_dict(cls, values: Any, where: str = "eval.json") -> "EvalReport":
        """Reads an ``eval.json`` object (any version up to `SCHEMA_VERSION`, or none).

        Args:
            values: The parsed JSON.
            where: The file it came from, for the error messages.

        Returns:
            An `EvalReport`.

        Raises:
            EvalReportError: an unknown or missing key, a wrong type, or a newer schema version.
        """
        values = _mapping(values, "the report", where)
        _check_keys(cls, values, "", where, required=("levels",), extra=(LEGACY_VERSION_KEY,))
        version = values.get("schema_version", values.get(LEGACY_VERSION_KEY, SCHEMA_VERSION))
        version = _integer(version, "schema_version", where)
        if version > SCHEMA_VERSION:
            raise EvalReportError(f"{where}: schema_version {version} is newer than this dsnn reads "
                                  f"({SCHEMA_VERSION}); update dsnn")
        levels = values["levels"]
        if not isinstance(levels, list):
            raise EvalReportError(f"{where}: levels must be a list, got {levels!r}")
        get = values.get
        files = get("files")
        created_by = get("created_by")
        decoder_config = get("decoder_config")
        return cls(
            split=_text(get("split"), "split", where, optional=True),
            levels=tuple(LevelResult.from_dict(entry, where, f"levels[{i}].") for i, entry in enumerate(levels)),
            num_utterances=_integer(get("num_utterances"), "num_utterances", where, optional=True),
            audio_seconds=_number(get("audio_seconds"), "audio_seconds", where, optional=True),
            batch_size=_integer(get("batch_size"), "batch_size", where, optional=True),
            decoder=_text(get("decoder"), "decoder", where, optional=True),
            decoder_config=None if decoder_config is None else dict(_mapping(decoder_config, "decoder_config", where)),
            run_dir=_text(get("run_dir"), "run_dir", where, optional=True),
            data_dir=_text(get("data_dir"), "data_dir", where, optional=True),
            speakers=_speakers(get("speakers"), where),
            files=None if files is None else {str(k): str(v) for k, v in _mapping(files, "files", where).items()},
            created_by=None if created_by is None else dict(_mapping(created_by, "created_by", where)),
            schema_version=SCHEMA_VERSION)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "EvalReport":
        """Reads and checks an ``eval.json`` file.

        Raises:
            FileNotFoundError: there is no such file.
            EvalReportError: it is not JSON, or does not match the schema (the message names it).
        """
        from dsnn_keras import fileio

        path = fileio.as_path(path)
        try:
            values = json.loads(fileio.read_text(path))
        except ValueError as error:
            raise EvalReportError(f"{path}: not valid JSON ({error})") from None
        return cls.from_dict(values, where=str(path))

    def write(self, path: str | os.PathLike) -> None:
        """Writes ``to_dict()`` as indented JSON (what ``dsnn-eval`` writes), complete or not at all.

        ``path`` may be local or a URL `tf.io.gfile` writes (``gs://...``; `dsnn_keras.fileio`).
        """
        from dsnn_keras import fileio

        fileio.atomic_write(path, json.dumps(self.to_dict(), indent=2) + "\n")
