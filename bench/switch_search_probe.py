#!/usr/bin/env python3
"""Would per-level search settings help a stream that switches level? A probe, not a product path.

A `tflite.Recognizer` stream keeps the beam settings of the level it started at (flashlight's
search fixes its LM weight, word bonus and pruning when it is made). This probe streams every
utterance of a prepared split through the file's ``stream`` signature in 160 ms chunks, switching
0 ↔ K-1 every second (`bench/stream_wer.py`'s ``flip``), keeps each chunk's log-probs and level,
and decodes them four ways with the file's LM:

- ``start``: what the runtime does (level 0's settings for the whole stream);
- ``presearch``: each chunk's blank skipping and token floor from its own level;
- ``rescaled``: that, plus each chunk's own LM weight and word bonus, through a flashlight ``LM``
  that multiplies the word scores by ``lm_weight(level) / lm_weight(start)`` and adds the bonus
  difference while the chunk is searched (exact at each word end);
- ``sparsest``: the sparsest level's settings for the whole stream.

Prints the WER of each (Markdown). Measured 2026-12-06 on the recipe's file: docs/streaming.md.

Example:
    .venv/bin/python bench/switch_search_probe.py --data runs/an4_sw4/data \
        --audio_root ../shared/data/an4/train --tflite runs/floor_bench/dsnn_float_floor.tflite
"""
from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Optional

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from stream_wer import CHUNK_MS, add_split_audio_arguments, level_schedule, load_split_audio  # noqa: E402

VARIANTS = ("start", "presearch", "rescaled", "sparsest")


def _rescaled_lm(base):
    """A flashlight LM: ``base``'s word scores times ``scale`` plus ``shift`` (both set per chunk)."""
    from flashlight.lib.text.decoder import LM, LMState

    class RescaledLM(LM):
        def __init__(self):
            LM.__init__(self)
            self.scale, self.shift, self.states = 1.0, 0.0, {}

        def start(self, start_with_nothing):
            self.states = {}
            state = LMState()
            self.states[state] = base.start(start_with_nothing)
            return state

        def score(self, state, word):
            child = state.child(word)
            self.states[child], value = base.score(self.states[state], word)
            return child, self.scale * value + self.shift

        def finish(self, state):
            child = state.child(-1)
            self.states[child], value = base.finish(self.states[state])
            return child, self.scale * value

    return RescaledLM()


def stream_chunks(recognizer, audio: np.ndarray, chunk: int, period: int) -> list[tuple[int, np.ndarray]]:
    """``(level, log_probs)`` of every chunk of a flip stream (the last with the end of stream)."""
    schedule = level_schedule("flip", recognizer.num_levels, len(audio) // period + 1)
    stream, chunks = recognizer.stream(level=0), []
    pieces = [audio[start:start + chunk] for start in range(0, len(audio), chunk)] + [None]
    for i, piece in enumerate(pieces):
        done = len(stream.log_probs)
        if piece is None:
            stream.finish()
        else:
            stream.set_level(schedule[i * chunk // period])
            stream.accept(piece)
        chunks.append((stream.level, stream.log_probs[done:]))
    return chunks


def decode(recognizer, chunks: list[tuple[int, np.ndarray]], variant: str) -> str:
    # pylint: disable=protected-access
    beams = recognizer.beams
    if variant == "sparsest":
        return beams[recognizer.num_levels - 1].decode(np.concatenate([c for _, c in chunks])).text
    start = beams[0]
    search, lm = start._new()
    if variant == "rescaled":
        lm = _rescaled_lm(start._kenlm)
        search = start._fl.LexiconDecoder(start._options, start._trie, lm, start.blank_id, start.blank_id,
                                          start._unk, [], False)
    search.decode_begin()
    confident = False
    for level, log_probs in chunks:
        own = beams[level] if variant in ("presearch", "rescaled") else start
        if variant == "rescaled":
            lm.scale = own.config.lm_weight / start.config.lm_weight
            lm.shift = (own.config.word_bonus - start.config.word_bonus) / start.config.lm_weight
        array, confident = own._skip_blanks(own._check(log_probs), confident)
        array = own._prune_tokens(array)
        if array.shape[0]:
            search.decode_step(array.ctypes.data, array.shape[0], array.shape[1])
    search.decode_end()
    results = search.get_all_final_hypothesis()
    return start._result(results[0]).text if results else ""


def run(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_audio_arguments(parser)
    parser.add_argument("--max_utterances", type=int, default=None, help="first N utterances only")
    args = parser.parse_args(argv)

    from dsnn_keras.decoding import error_rates
    from tflite.runtime import Recognizer

    references, audio, rate = load_split_audio(args.data, args.split, args.audio_root, args.max_utterances)
    report = {}
    for path in args.tflite:
        recognizer = Recognizer(path, decoder="beam")
        if recognizer.beams[0].config.lm_weight == 0 or not recognizer.beams[0].uses_lm:
            raise SystemExit(f"{path}: level 0 decodes without an LM weight; nothing to rescale")
        streams = [stream_chunks(recognizer, a, rate * CHUNK_MS // 1000, rate) for a in audio]
        report[str(path)] = {v: error_rates(references, [decode(recognizer, c, v) for c in streams])["wer"]
                             for v in VARIANTS}
    print(f"{len(audio)} utterances of `{args.split}`, 0 ↔ K-1 every second, {CHUNK_MS} ms chunks.\n")
    print("| file | " + " | ".join(VARIANTS) + " |\n|---|" + "---:|" * len(VARIANTS))
    for path, row in report.items():
        print(f"| {pathlib.Path(path).name} | " + " | ".join(f"{100 * row[v]:.2f}" for v in VARIANTS) + " |")
    return report


if __name__ == "__main__":
    run()
