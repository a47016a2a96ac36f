"""Small generated corpora for the `dsnn-prepare` fault tests (real WAV files written with soundfile)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

RATE = 16000
WORDS = ("one", "two", "three", "four", "five", "six", "seven")
REPO = pathlib.Path(__file__).resolve().parents[2]


def tone(seconds: float, freq: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_wavs(directory: pathlib.Path, count: int, seconds: float = 0.3,
               seed: int = 0) -> list[tuple[str, str, str]]:
    """Writes ``count`` short WAVs into ``directory``; returns ``(file name, transcript, speaker)``."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        name = f"utt{i:03d}.wav"
        sf.write(directory / name, tone(seconds, 200 + 37 * i, rng), RATE)
        rows.append((name, f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i + 1) % len(WORDS)]}", f"spk{i % 4}"))
    return rows


def tsv_corpus(root: pathlib.Path, count: int = 24, seed: int = 0) -> pathlib.Path:
    """``root/manifest.tsv`` (header ``path transcript speaker``) over ``count`` WAVs beside it."""
    rows = write_wavs(root, count, seed=seed)
    manifest = root / "manifest.tsv"
    manifest.write_text("path\ttranscript\tspeaker\n" + "".join(f"{p}\t{t}\t{s}\n" for p, t, s in rows))
    return manifest


def librispeech_corpus(root: pathlib.Path, count: int = 6, seed: int = 0) -> pathlib.Path:
    """A LibriSpeech-layout directory: ``root/spk/0/spk-0-NNNN.wav`` + ``spk-0.trans.txt``."""
    rng = np.random.default_rng(seed)
    chapter = root / "spk" / "0"
    chapter.mkdir(parents=True)
    lines = []
    for i in range(count):
        utt = f"spk-0-{i:04d}"
        sf.write(chapter / f"{utt}.wav", tone(0.3, 300 + 50 * i, rng), RATE)
        lines.append(f"{utt} {WORDS[i % len(WORDS)].upper()}")
    (chapter / "spk-0.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def snapshot(root: pathlib.Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), to prove a corpus was not touched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def prepare_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.prepare", *args]


def spawn_prepare(*args: str, cwd: pathlib.Path | None = None) -> subprocess.Popen:
    """``dsnn-prepare ARGS`` as a child process (its own process group), stdout/stderr captured."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    return subprocess.Popen(prepare_cmd(*args), cwd=cwd or REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, poll: float = 0.02) -> bool:
    """Polls ``predicate`` until true (True), ``timeout`` seconds pass or ``proc`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return bool(predicate())
        time.sleep(poll)
    return False


def read_dataset(out: pathlib.Path) -> dict:
    """``dataset.json`` plus every record's ``utt_id -> (num_frames, features bytes)`` per split."""
    from apache_beam.io.tfrecordio import _TFRecordUtil  # reads TFRecords without TensorFlow

    from pipeline.examples import parse_example

    dataset = json.loads((out / "dataset.json").read_text())
    records = {}
    for split, info in dataset["splits"].items():
        for rel in info["files"]:
            with open(out / rel, "rb") as f:
                while (blob := _TFRecordUtil.read_record(f)) is not None:
                    ex = parse_example(blob, dataset["feature_config"]["num_mel_bins"])
                    records[(split, ex["utt_id"])] = (ex["num_frames"], ex["features"].tobytes(),
                                                      tuple(ex["token_ids"]))
    return {"dataset": dataset, "records": records,
            "cmvn": json.loads((out / "cmvn.json").read_text()),
            "rejects": sorted((out / "rejects.jsonl").read_text().splitlines())}
