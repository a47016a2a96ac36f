"""Plan and write a synthetic corpus in LibriSpeech layout, in parallel and reproducibly.

Layout under the output directory::

    corpus.json
    <split>/<speaker>/<chapter>/<speaker>-<chapter>-<idx:04d>.flac     (mono 16-bit FLAC, 16 kHz by default)
    <split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt          ("<utt_id> <TRANSCRIPT>" lines)

The whole plan (texts, speakers, which speaker says what) is made up front in the calling process
from the seed. Each utterance is then rendered independently (espeak-ng in a forked child, resample,
augmentation seeded from ``(seed, utterance index)``, FLAC), so the files do not depend on
``jobs`` or scheduling, and two runs with the same arguments give byte-identical trees.

Files are written to a staging directory beside the output and renamed into place at the end, so
an output directory never mixes files of two runs, and a failed run leaves nothing behind.

The output may be a URL `tf.io.gfile` reaches (``gs://bucket/corpus``; `dsnn_keras.fileio`). An object
store has no directory rename, so there the corpus is rendered into a private local temporary
directory, uploaded to a staging prefix beside the output (``.NAME.tmp-XXXXXXXX/``), and committed
the way ``dsnn-prepare`` commits a remote ``--out`` (`pipeline.outdir`): the old output is deleted,
the staged files are moved in one by one, ``corpus.json`` last, and the staging prefix removed. A
reader that waits for ``corpus.json`` never sees a partial corpus; a failure before the commit
leaves the old output untouched and deletes the staging prefix; a process killed during the commit
leaves a corpus without ``corpus.json`` (and the rest in the staging prefix), to be re-run.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from dsnn_keras import fileio
from dsnn_keras.errors import DsnnError
from pipeline.synth import audio, espeak, grammar
from pipeline.synth.speakers import SPLITS, Speaker, SpeakerDesign, assign_speakers

FORMAT_VERSION = 1
CHAPTER = "0"
MIN_RATE, MAX_RATE = 8000, 48000


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the corpus's content (not where or how fast it is written).

    Args:
        num_utterances: total utterances over all splits (>= 1).
        seed: seed for text, speakers and augmentation. Defaults to 0.
        design: speaker setting grids. Defaults to ``SpeakerDesign()``.
        dev_fraction: fraction of utterances in ``dev``. Defaults to 0.1.
        test_fraction: fraction of utterances in ``test``. Defaults to 0.1.
        utts_per_speaker: target utterances per speaker (AN4 has about 13). Defaults to 10.
        augmentation: per-utterance padding, gain and noise. Defaults to ``Augmentation()``.
        grammar: what is said, a `grammar.GRAMMARS` name: ``an4`` (AN4-like utterances) or
            ``digits`` (one digit word per utterance). Defaults to "an4".
        sample_rate: the files' rate in Hz, 8000 to 48000; 8000 gives telephone-band audio like
            FSDD's (the preparation resamples to the features' rate). Defaults to 16000.

    Example:
        >>> SynthConfig(num_utterances=20, seed=1).split_sizes()
        {'train': 16, 'dev': 2, 'test': 2}
    """

    num_utterances: int
    seed: int = 0
    design: SpeakerDesign = field(default_factory=SpeakerDesign)
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    utts_per_speaker: int = 10
    augmentation: audio.Augmentation = field(default_factory=audio.Augmentation)
    grammar: str = "an4"
    sample_rate: int = audio.TARGET_RATE

    def __post_init__(self):
        if self.grammar not in grammar.GRAMMARS:
            raise ValueError(f"grammar: expected one of {sorted(grammar.GRAMMARS)}, got {self.grammar!r}")
        if not isinstance(self.sample_rate, int) or not MIN_RATE <= self.sample_rate <= MAX_RATE:
            raise ValueError(f"sample_rate: expected an integer from {MIN_RATE} to {MAX_RATE} Hz, "
                             f"got {self.sample_rate!r}")
        if not isinstance(self.num_utterances, int) or self.num_utterances < 1:
            raise ValueError(f"num_utterances: expected an integer >= 1, got {self.num_utterances!r}")
        for name in ("dev_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a fraction in [0, 1), got {value!r}")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError("dev_fraction + test_fraction: expected < 1 so that train has utterances, "
                             f"got {self.dev_fraction} + {self.test_fraction}")
        if self.utts_per_speaker < 1:
            raise ValueError(f"utts_per_speaker: expected >= 1, got {self.utts_per_speaker}")

    def split_sizes(self) -> dict[str, int]:
        """Utterances per split; a split with a non-zero fraction gets at least one (given room)."""
        n = self.num_utterances
        sizes = {}
        for split, fraction in (("dev", self.dev_fraction), ("test", self.test_fraction)):
            count = int(round(n * fraction))
            if fraction > 0 and count == 0 and n - sum(sizes.values()) > 1:
                count = 1
            sizes[split] = count
        return {"train": n - sizes["dev"] - sizes["test"], **sizes}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["design"] = self.design.to_dict()
        # Left out at their defaults: a default corpus's corpus.json stays what it was before they existed.
        for name, default in (("grammar", "an4"), ("sample_rate", audio.TARGET_RATE)):
            if d[name] == default:
                del d[name]
        return d


@dataclass(frozen=True)
class UtteranceSpec:
    """One utterance to render: where it goes, what is said, and by which voice."""

    index: int
    split: str
    speaker_id: str
    utt_id: str
    transcript: str
    settings: espeak.VoiceSettings

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.speaker_id}/{CHAPTER}/{self.utt_id}.flac"


def plan_corpus(config: SynthConfig) -> tuple[list[Speaker], list[UtteranceSpec]]:
    """Decide every utterance's text, speaker and file name from the seed.

    Args:
        config: the corpus configuration.

    Returns:
        ``(speakers, utterances)``; utterances are ordered by split, speaker, index.

    Example:
        >>> speakers, utts = plan_corpus(SynthConfig(num_utterances=12, seed=0))
        >>> len(utts), utts[0].utt_id
        (12, 'spk0000-0-0000')
    """
    sizes = config.split_sizes()
    speakers = assign_speakers(config.design, sizes, config.utts_per_speaker, config.seed)
    texts = iter(grammar.sample_transcripts(config.seed, config.num_utterances, config.grammar))
    utterances: list[UtteranceSpec] = []
    for split in SPLITS:
        split_speakers = [s for s in speakers if s.split == split]
        if not sizes[split]:
            continue
        by_speaker: dict[str, list[str]] = {s.speaker_id: [] for s in split_speakers}
        for i in range(sizes[split]):
            by_speaker[split_speakers[i % len(split_speakers)].speaker_id].append(next(texts))
        for speaker in split_speakers:
            for idx, text in enumerate(by_speaker[speaker.speaker_id]):
                utterances.append(UtteranceSpec(
                    index=len(utterances), split=split, speaker_id=speaker.speaker_id,
                    utt_id=f"{speaker.speaker_id}-{CHAPTER}-{idx:04d}", transcript=text,
                    settings=speaker.settings))
    return speakers, utterances


def render_utterance(spec: UtteranceSpec, config: SynthConfig) -> np.ndarray:
    """Synthesise one utterance: espeak-ng, resample to ``config.sample_rate``, seeded augmentation, int16.

    Args:
        spec: the utterance.
        config: the corpus configuration (seed, augmentation, sample rate).

    Returns:
        int16 samples at ``config.sample_rate``, mono; the same for the same ``(spec, config)`` in
        any process.
    """
    pcm = espeak.synthesize(grammar.spoken_form(spec.transcript), spec.settings)
    x = audio.resample(pcm, espeak.SAMPLE_RATE, config.sample_rate)
    rng = np.random.default_rng([config.seed, spec.index])
    return audio.to_pcm16(audio.augment(x, rng, config.augmentation, config.sample_rate))


def _render_to_file(task: tuple[str, UtteranceSpec, SynthConfig]) -> tuple[int, int]:
    root, spec, config = task
    pcm = render_utterance(spec, config)
    path = pathlib.Path(root) / spec.relpath
    path.write_bytes(audio.encode_flac(pcm, config.sample_rate))
    return spec.index, int(pcm.size)


class OutputExistsError(DsnnError, RuntimeError):
    """The output directory exists and is not empty, and overwriting was not asked for."""


def check_output(out: str | os.PathLike, overwrite: bool) -> None:
    """Refuse an output path that cannot be written or would be mixed with an earlier run.

    A remote ``out`` (``gs://...``) gets the first two checks only: whether objects can be created
    there shows when they are written.

    Raises:
        OutputExistsError: ``out`` is a non-empty directory and ``overwrite`` is false.
        OSError: ``out`` is a file, or its parent cannot be created or written.
    """
    if not fileio.is_local(out):
        if fileio.isfile(out):
            raise NotADirectoryError(f"{out}: exists and is not a directory")
        if fileio.isdir(out) and fileio.listdir(out) and not overwrite:
            raise OutputExistsError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")
        return
    out = pathlib.Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: directory exists and is not empty (pass --overwrite to replace it)")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        blocker = next((a for a in (parent, *parent.parents) if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            raise NotADirectoryError(f"{blocker}: is a file, so {out} cannot be created") from None
        raise OSError(f"{parent}: cannot create the parent directory ({e.strerror or e})") from None
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{parent}: not a writable directory (needed to create {out.name})")


def _publish(staging: pathlib.Path, out: pathlib.Path) -> None:
    """Move the finished staging directory to ``out``, replacing what was there."""
    if out.is_dir():
        trash = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.absolute().parent))
        os.replace(out, trash / "old")
        os.replace(staging, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out)


def log_progress(message: str) -> None:
    """Print a progress line to stderr (the default ``progress`` of :func:`write_corpus`)."""
    print(message, file=sys.stderr, flush=True)


def write_corpus(config: SynthConfig, out: str | os.PathLike, jobs: int | None = None,
                 overwrite: bool = False, progress: Callable[[str], None] | None = log_progress) -> dict:
    """Generate the corpus into ``out``.

    Args:
        config: what to generate.
        out: output directory, local or a URL (``gs://...``; see the module docstring); must not
            exist, be empty, or ``overwrite`` must be true (it is then replaced as a whole once the
            new corpus is complete).
        jobs: worker processes (``None``: one per CPU core; 1: in this process).
        overwrite: replace a non-empty ``out``.
        progress: called with one-line progress messages (default: stderr); ``None`` for silence.

    Returns:
        The ``corpus.json`` content (also written to ``out/corpus.json``).

    Example:
        >>> write_corpus(SynthConfig(num_utterances=12, seed=0), "/tmp/synth")  # doctest: +SKIP
    """
    if not fileio.is_local(out):
        return _write_remote_corpus(config, os.fspath(out).rstrip("/"), jobs, overwrite, progress)
    out = pathlib.Path(out)
    check_output(out, overwrite)
    progress = progress or (lambda _message: None)
    jobs = jobs or os.cpu_count() or 1
    speakers, utterances = plan_corpus(config)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent))
    try:
        staging.chmod(0o777 & ~fileio.current_umask())  # mkdtemp makes it private; the corpus gets normal permissions
        for spec in utterances:
            (staging / spec.relpath).parent.mkdir(parents=True, exist_ok=True)
        samples = _render_all(staging, utterances, config, jobs, progress)
        manifest = _write_metadata(staging, config, speakers, utterances, samples)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_remote_corpus(config: SynthConfig, out: str, jobs: int | None, overwrite: bool,
                         progress: Callable[[str], None] | None) -> dict:
    """`write_corpus` to a URL: render locally, upload to a staging prefix, commit (module docstring)."""
    check_output(out, overwrite)
    say = progress or (lambda _message: None)
    local = pathlib.Path(tempfile.mkdtemp(prefix="dsnn-synth-"))
    staging = fileio.join(fileio.parent(out), f".{fileio.name(out)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        manifest = write_corpus(config, local / "corpus", jobs=jobs, progress=progress)
        files = fileio.walk_files(local / "corpus")
        say(f"dsnn-synth: uploading {len(files)} files to {staging}")
        _copy_files(local / "corpus", staging, files, fileio.copy)
        check_output(out, overwrite)   # again: another writer may have filled it meanwhile
        _commit_remote(staging, out)
    except BaseException:
        try:
            fileio.rmtree(staging)
        except OSError:
            pass   # the original error matters more; the staging prefix is named in the docs
        raise
    finally:
        shutil.rmtree(local, ignore_errors=True)
    return manifest


def _copy_files(source, target: str, files: list[str], move: Callable) -> None:
    """``move(source/f, target/f)`` for each relative path ``f``, making each target directory once
    (so it is listed on filesystems that list only made directories, like ``ram://``)."""
    made = set()
    for relative in files:
        destination = fileio.join(target, relative)
        directory = str(fileio.parent(destination))
        if directory not in made:
            fileio.makedirs(directory)
            made.add(directory)
        move(fileio.join(source, relative), destination)


def _commit_remote(staging: str, out: str) -> None:
    """Replaces ``out`` with the staged files as `pipeline.outdir.commit` does remotely: the old output
    is deleted, the files are moved in one by one (a copy and a delete each on ``gs://``),
    ``corpus.json`` last, then the staging prefix is removed."""
    files = [f for f in fileio.walk_files(staging) if f != "corpus.json"] + ["corpus.json"]
    fileio.rmtree(out)
    _copy_files(staging, out, files, lambda source, target: fileio.rename(source, target, overwrite=True))
    fileio.rmtree(staging)


def _render_all(staging: pathlib.Path, utterances: list[UtteranceSpec], config: SynthConfig,
                jobs: int, progress: Callable[[str], None]) -> list[int]:
    tasks = [(str(staging), spec, config) for spec in utterances]
    samples = [0] * len(tasks)
    start, done, step = time.monotonic(), 0, max(1, len(tasks) // 20)

    def report():
        seconds = sum(samples) / config.sample_rate
        elapsed = time.monotonic() - start
        progress(f"dsnn-synth: {done}/{len(tasks)} utterances, {seconds:.1f} s of audio, "
                 f"{elapsed:.1f} s elapsed")

    if jobs == 1 or len(tasks) == 1:
        results = map(_render_to_file, tasks)
        pool = None
    else:
        # spawn: workers start clean (no inherited threads or TensorFlow from the caller).
        pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks)))
        results = pool.imap_unordered(_render_to_file, tasks, chunksize=4)
    try:
        for index, n in results:
            samples[index] = n
            done += 1
            if done % step == 0 or done == len(tasks):
                report()
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return samples


def _write_metadata(root: pathlib.Path, config: SynthConfig, speakers: list[Speaker],
                    utterances: list[UtteranceSpec], samples: list[int]) -> dict:
    transcripts: dict[str, list[str]] = {}
    for spec in utterances:
        key = f"{spec.split}/{spec.speaker_id}/{CHAPTER}/{spec.speaker_id}-{CHAPTER}.trans.txt"
        transcripts.setdefault(key, []).append(f"{spec.utt_id} {spec.transcript}")
    for key, lines in transcripts.items():
        (root / key).write_text("\n".join(lines) + "\n", encoding="utf-8")
    splits = {}
    for split in SPLITS:
        split_samples = [samples[s.index] for s in utterances if s.split == split]
        splits[split] = {"num_utterances": len(split_samples),
                         "num_speakers": sum(1 for s in speakers if s.split == split),
                         "seconds": round(sum(split_samples) / config.sample_rate, 3)}
    manifest = {
        "format_version": FORMAT_VERSION,
        "seed": config.seed,
        "config": config.to_dict(),
        "sample_rate": config.sample_rate,
        "splits": splits,
        "num_utterances": len(utterances),
        "seconds": round(sum(samples) / config.sample_rate, 3),
        "speakers": [s.to_dict() for s in speakers],
        "synthesizer": {"engine": "espeak-ng", "espeakng_loader": _version("espeakng-loader"),
                        "soxr": _version("soxr"), "soundfile": _version("soundfile")},
    }
    (root / "corpus.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
