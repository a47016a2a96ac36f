"""Benchmark an exported DSNN .tflite per level against K separately exported single-level files.

Latency is measured round-robin in shuffled order (every file and level once per utterance per repeat,
each timed invoke preceded by an untimed one), so load on a
shared machine hits all candidates alike; figures are medians and 90th percentiles over
utterances x repeats, per thread count. Peak memory is measured in a fresh subprocess per file.
Writes ``bench.json``, ``bench.md`` and ``bench.png``, each complete or absent (`dsnn_keras.fileio.atomic_write`).
No TensorFlow for local paths. Any path may be a URL `tf.io.gfile` reaches (``gs://...``): remote
model files are copied to a private local temporary first (LiteRT maps them, the memory probe opens
them in a subprocess), so they are timed exactly as local ones; remote audio is read into memory.

Example:
    >>> result = run_benchmark("model.tflite", baselines=["level0.tflite"], out_dir="bench_out")
    >>> result["rows"][0]["median_ms"]
    12.3
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import platform
import subprocess
import sys
import time
from typing import Iterator, Optional, Sequence

import numpy as np

from dsnn_keras import fileio
from tflite.audio import load_audio
from tflite.metadata import read_metadata
from tflite.runtime import load_interpreter, prime_all_signatures
from tflite.signatures import AUDIO, RECOGNIZE, SPARSITY_LEVEL

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One (file, level) pair to time."""

    kind: str          # "multi" or "single"
    path: pathlib.Path
    level: int         # level run inside the file (0 for single-level files)
    of_level: int      # the DSNN level it represents
    sparsity: float


def collect_utterances(sources: Optional[Sequence[str]], sample_rate: int, limit: int = 8,
                       seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """The fixed utterance set: files / directories given (sorted, first ``limit``), else synthetic clips.

    Sources may be local or URLs (``gs://...``); a directory is searched at every depth for
    .wav/.flac/.ogg files. Names are the paths (or URLs) as found.
    """
    if not sources:
        from tflite.export import probe_audio

        return [(f"synthetic_{s:.0f}s", probe_audio(sample_rate, s, seed + i))
                for i, s in enumerate((1.0, 2.0, 3.0, 4.0)[:limit])]
    files = []
    for source in sources:
        if not fileio.is_local(source):
            files += _remote_audio_files(str(source))
            continue
        path = pathlib.Path(source)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"--utterances: no such file or directory: {path}")
    if not files:
        raise FileNotFoundError(f"--utterances: no {'/'.join(AUDIO_SUFFIXES)} files in {list(sources)}")
    return [(str(p), load_audio(p, sample_rate)) for p in files[:limit]]


def _remote_audio_files(source: str) -> list[str]:
    """The audio files a remote ``--utterances`` source names, ordered as a local directory's would be."""
    if fileio.isdir(source):
        found = [name for name in fileio.walk_files(source) if pathlib.PurePosixPath(name).suffix.lower() in AUDIO_SUFFIXES]
        return [str(fileio.join(source, name)) for name in sorted(found, key=lambda name: name.split("/"))]
    if fileio.isfile(source):
        return [source]
    raise FileNotFoundError(f"--utterances: no such file or directory: {source}")


def _candidates(model_path: pathlib.Path, baselines: Sequence, compare: Sequence = ()) -> list[Candidate]:
    result = []
    for path in [model_path, *map(pathlib.Path, compare)]:
        meta = read_metadata(path)
        result += [Candidate("multi", path, i, i, s) for i, s in enumerate(meta.sparsities)]
    for path in baselines:
        path = pathlib.Path(path)
        base = read_metadata(path)
        if base.num_levels != 1:
            raise ValueError(f"{path}: a baseline must be a single-level file (has {base.num_levels} levels)")
        result.append(Candidate("single", path, 0, base.single_level_of or 0, base.sparsities[0]))
    return result


def _time_round_robin(candidates, utterances, threads: int, repeats: int) -> dict:
    interpreters, runners, resets = {}, {}, {}
    for c in candidates:
        if c.path not in interpreters:
            interpreters[c.path] = load_interpreter(c.path, threads)
            runners[c.path] = interpreters[c.path].get_signature_runner(RECOGNIZE)
            resets[c.path] = not read_metadata(c.path).state_reset_in_graph
            if resets[c.path]:
                prime_all_signatures(interpreters[c.path])
    times = {c: np.zeros([len(utterances), repeats]) for c in candidates}
    for c in candidates:   # warm-up: first invoke allocates
        runners[c.path](**{AUDIO: utterances[0][1], SPARSITY_LEVEL: np.int32(c.level)})
        if resets[c.path]:
            interpreters[c.path].reset_all_variables()
    order = np.random.default_rng(0)
    for r in range(repeats):
        for u, (_, audio) in enumerate(utterances):
            # Shuffled order, and each timed invoke follows an untimed one of the same file, level and
            # utterance: every candidate is measured warm, as an app transcribing in a row sees it.
            for index in order.permutation(len(candidates)):
                c = candidates[index]
                for timed in (False, True):
                    start = time.perf_counter()
                    runners[c.path](**{AUDIO: audio, SPARSITY_LEVEL: np.int32(c.level)})
                    if timed:
                        times[c][u, r] = time.perf_counter() - start
                    if resets[c.path]:   # single-level files keep LSTM state; not timed
                        interpreters[c.path].reset_all_variables()
    return times


_MEMORY_PROBE_TEMPLATE = """
import json, sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
def high_water_mb():  # VmHWM: peak resident set of this process (reset by exec, unlike ru_maxrss)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
path, threads, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
levels = int(sys.argv[4])
audio = np.random.default_rng(0).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1
before = high_water_mb()
it = Interpreter(model_path=path, num_threads=threads)
runner = it.get_signature_runner(__RECOGNIZE__)
for level in range(levels):
    runner(**{__AUDIO__: audio, __SPARSITY_LEVEL__: np.int32(level)})
after = high_water_mb()
print(json.dumps({"baseline_rss_mb": before, "peak_rss_mb": after}))
"""
# The signature names come from tflite.signatures, like everywhere else.
_MEMORY_PROBE = (_MEMORY_PROBE_TEMPLATE.replace("__RECOGNIZE__", repr(RECOGNIZE)).replace("__AUDIO__", repr(AUDIO))
                 .replace("__SPARSITY_LEVEL__", repr(SPARSITY_LEVEL)))


def measure_memory(path: pathlib.Path, threads: int, seconds: float, levels: int) -> dict:
    """Peak RSS of a fresh process that loads ``path`` and runs each level once on ``seconds`` of audio."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(threads), str(seconds),
                          str(levels)], capture_output=True, text=True)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{path}: the memory probe failed (exit {out.returncode}: {last})")
    values = json.loads(out.stdout.strip().splitlines()[-1])
    values["model_rss_mb"] = values["peak_rss_mb"] - values["baseline_rss_mb"]
    return values


def time_decoder(model_path, utterances, repeats: int = 5) -> dict:
    """Times the beam search (1 thread) beside the model, per level of ``model_path``.

    The decoder is the file's own (its tuned settings, word LM and lexicon), or the lexicon-free beam
    search without LM for a file that carries none. Each utterance's log-probs are computed once,
    then decoded ``repeats`` times; greedy decoding of the same log-probs is timed alike. Each
    search is timed right after one ``recognize`` invoke of the same utterance and level, and the
    median of those adjacent (search / invoke) ratios is ``paired_decoder_to_model``: on a shared
    machine it does not take whatever happened between two timing phases.

    Returns:
        ``{"decoder": {...settings}, "rows": [{level, decoder_median_ms, decoder_p90_ms,
        greedy_median_ms, paired_decoder_to_model}]}``.
    """
    from dsnn_keras.decoding import greedy_ctc_decode
    from tflite.runtime import Recognizer

    recognizer = Recognizer(model_path, num_threads=1, decoder="beam")
    rows = []
    for level in range(recognizer.num_levels):
        beam = recognizer.beam_for(level)
        log_probs = [recognizer.recognize(audio, level=level).log_probs for _, audio in utterances]
        beam_times, greedy_times, paired = [], [], []
        for _ in range(repeats):
            for (_, audio), lp in zip(utterances, log_probs):
                inputs = {AUDIO: np.asarray(audio, np.float32), SPARSITY_LEVEL: np.int32(level)}
                start = time.perf_counter()
                recognizer._invoke(recognizer._runner, **inputs)   # pylint: disable=protected-access
                model_seconds = time.perf_counter() - start
                start = time.perf_counter()
                beam.decode(lp)
                beam_times.append(time.perf_counter() - start)
                paired.append(beam_times[-1] / model_seconds)
                start = time.perf_counter()
                greedy_ctc_decode(lp[None], None, beam.blank_id)
                greedy_times.append(time.perf_counter() - start)
        rows.append({"level": level, "beam_width": beam.config.beam_width,
                     "lm_weight": beam.config.lm_weight, "word_bonus": beam.config.word_bonus,
                     "beam_threshold": beam.config.beam_threshold, "token_beam": beam.config.token_beam,
                     "blank_skip": beam.config.blank_skip, "token_min_logp": beam.config.token_min_logp,
                     "decoder_median_ms": float(np.median(beam_times) * 1e3),
                     "decoder_p90_ms": float(np.percentile(beam_times, 90) * 1e3),
                     "greedy_median_ms": float(np.median(greedy_times) * 1e3),
                     "paired_decoder_to_model": float(np.median(paired))})
    beam = recognizer.beam
    return {"decoder": {"kind": "beam", "lm": beam.uses_lm, "lexicon_words": len(beam.words),
                        "per_level": recognizer.beams.per_level, **beam.config.to_dict()}, "rows": rows}


@contextlib.contextmanager
def local_models(paths: Sequence) -> Iterator[dict[str, pathlib.Path]]:
    """``{str(path): local file}`` for model files: local ones as they are, remote ones copied.

    Remote files (``gs://...``) are copied into private temporary directories under their own
    names (deleted when the block ends), so a benchmark maps and times them as local files. An error
    raised in the block names the URL, not the temporary copy.

    Raises:
        FileNotFoundError: ``model file not found: PATH`` for a missing remote file.
    """
    with contextlib.ExitStack() as stack:
        local = {}
        for path in dict.fromkeys(str(p) for p in paths):
            try:
                local[path] = stack.enter_context(fileio.local_copy(path))
            except FileNotFoundError:
                raise FileNotFoundError(f"model file not found: {path}") from None
        try:
            yield local
        except Exception as error:
            copies = {str(copy): url for url, copy in local.items() if not fileio.is_local(url)}
            error.args = tuple(_named_as(arg, copies) for arg in error.args)
            raise


def _named_as(value, copies: dict[str, str]):
    """``value`` with each temporary copy's path replaced by its URL (strings only)."""
    if isinstance(value, str):
        for copy, url in copies.items():
            value = value.replace(copy, url)
    return value


def run_benchmark(model_path, baselines: Sequence = (), utterances: Optional[Sequence[str]] = None,
                  threads: Sequence[int] = (1, 2), repeats: int = 5, limit: int = 8,
                  out_dir=None, log=None, compare: Sequence = ()) -> dict:
    """Times every level of ``model_path`` and each single-level baseline file.

    Every path may be local or a URL `tf.io.gfile` reaches (``gs://...``; `local_models`).

    Args:
        model_path: The multi-level .tflite.
        baselines: Single-level .tflite files (``dsnn-export --single_level_dir``). Defaults to none.
        utterances: Audio files / directories; defaults to four synthetic clips (1-4 s).
        threads: Interpreter thread counts to measure. Defaults to (1, 2).
        repeats: Passes over the utterances. Defaults to 5.
        limit: Most utterances used. Defaults to 8.
        out_dir: If given, write bench.json, bench.md and bench.png there. Defaults to None.
        log: Callable for progress lines. Defaults to None.
        compare: Other multi-level files (e.g. int8 or sparse-speed exports) timed in the same
            round-robin. Defaults to none.

    Returns:
        ``{"rows": [...], "files": {...}, "utterances": [...], "machine": {...}}``; each row has
        kind, file, level, sparsity, threads, median_ms, p90_ms, rtf, ratio_to_dense_single.
    """
    with local_models([model_path, *baselines, *compare]) as local:
        result = _run_benchmark(local[str(model_path)], [local[str(p)] for p in baselines], utterances,
                                threads, repeats, limit, log, [local[str(p)] for p in compare])
    result["model"] = str(fileio.as_path(model_path))   # the path or URL given, not a temporary copy
    if out_dir is not None:
        write_reports(result, out_dir)
    return result


def _run_benchmark(model_path: pathlib.Path, baselines: Sequence[pathlib.Path], utterances, threads, repeats,
                   limit, log, compare: Sequence[pathlib.Path]) -> dict:
    say = log or (lambda message: None)
    model_path = pathlib.Path(model_path)
    meta = read_metadata(model_path)
    utts = collect_utterances(utterances, meta.sample_rate, limit)
    total_seconds = sum(a.size for _, a in utts) / meta.sample_rate
    candidates = _candidates(model_path, baselines, compare)
    rows = []
    for n in threads:
        say(f"timing {len(candidates)} file/level pairs x {len(utts)} utterances x {repeats} repeats, {n} thread(s)")
        times = _time_round_robin(candidates, utts, n, repeats)
        dense = [c for c in candidates if c.kind == "single" and c.of_level == 0]
        dense_per_utt = np.median(times[dense[0]], axis=1) if dense else None
        own_dense = {c.path: np.median(times[c], axis=1) for c in candidates if c.kind == "multi" and c.level == 0}
        level_meta = {c.path: read_metadata(c.path).raw.get("levels", []) for c in candidates}
        for c in candidates:
            t = times[c]
            per_utt = np.median(t, axis=1)
            own = own_dense.get(c.path) if c.kind == "multi" else None
            rows.append({"kind": c.kind, "file": c.path.name, "level": c.of_level, "sparsity": c.sparsity,
                         "threads": n, "median_ms": float(np.median(t) * 1e3),
                         "p90_ms": float(np.percentile(t, 90) * 1e3),
                         "rtf": float(per_utt.sum() / total_seconds),
                         # median over utterances of (this / dense single-level file), same utterance
                         "ratio_to_dense_single": (float(np.median(per_utt / dense_per_utt))
                                                   if dense_per_utt is not None else None),
                         # the same against this file's own level 0 (what switching level saves)
                         "ratio_to_own_level0": float(np.median(per_utt / own)) if own is not None else None,
                         # multiply-adds of the level relative to the file's level 0 (metadata)
                         "relative_macs": _level_field(level_meta[c.path], c.level, "relative_macs"),
                         "units": _level_field(level_meta[c.path], c.level, "units")})
    files = {}
    longest = max(a.size for _, a in utts) / meta.sample_rate
    for path in dict.fromkeys(c.path for c in candidates):
        say(f"memory: {path.name}")
        file_meta = read_metadata(path)
        levels = file_meta.num_levels
        files[path.name] = {"size_bytes": path.stat().st_size, "levels": levels,
                            "design": file_meta.design, "quantize": file_meta.quantize,
                            "memory": {str(n): measure_memory(path, n, longest, levels) for n in threads}}
    dense_single = [c.path for c in candidates if c.kind == "single" and c.of_level == 0]
    for info in files.values():
        info["size_ratio_to_dense_single"] = (info["size_bytes"] / dense_single[0].stat().st_size
                                              if dense_single else None)
    say("timing the beam decoder beside the model (1 thread)")
    decoder = time_decoder(model_path, utts, repeats)
    model_ms = {r["level"]: r["median_ms"] for r in rows
                if r["kind"] == "multi" and r["file"] == model_path.name and r["threads"] == min(threads)}
    for row in decoder["rows"]:
        row["model_median_ms"] = model_ms.get(row["level"])
        row["model_threads"] = min(threads)
        row["decoder_to_model"] = (row["decoder_median_ms"] / row["model_median_ms"]
                                   if row["model_median_ms"] else None)
    result = {"model": str(model_path), "rows": rows, "files": files, "decoder": decoder,
              "utterances": [{"name": n, "seconds": a.size / meta.sample_rate} for n, a in utts],
              "repeats": repeats, "threads": list(threads),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": platform.python_version()}}
    return result


def _level_field(levels: list, level: int, key: str):
    entry = next((e for e in levels if e.get("level") == level), None)
    return None if entry is None else entry.get(key)


def to_markdown(result: dict) -> str:
    """A Markdown summary: latency table per thread count, then files (size, memory)."""
    lines = [f"# dsnn-bench: {fileio.name(result['model'])}", "",
             f"{len(result['utterances'])} utterances "
             f"({sum(u['seconds'] for u in result['utterances']):.1f} s of audio), "
             f"{result['repeats']} repeats, shuffled round-robin, each timed invoke warm (after an "
             "untimed one); median / p90 over utterances x repeats; × dense single = median over "
             "utterances of the latency ratio to the dense single-level file; × own level 0 = the same "
             "against the file's own level 0 (what switching level saves).", "",
             "| file | kind | level | sparsity | threads | median ms | p90 ms | RTF | × dense single | × own level 0 | MACs × level 0 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        ratio = f"{r['ratio_to_dense_single']:.2f}" if r.get("ratio_to_dense_single") else "–"
        own = f"{r['ratio_to_own_level0']:.2f}" if r.get("ratio_to_own_level0") else "–"
        macs = f"{r['relative_macs']:.2f}" if r.get("relative_macs") is not None else "–"
        lines.append(f"| {r['file']} | {r['kind']} | {r['level']} | {r['sparsity']:.2f} | {r['threads']} | "
                     f"{r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['rtf']:.4f} | {ratio} | {own} | {macs} |")
    if result.get("decoder"):
        d = result["decoder"]["decoder"]
        what = (f"word LM + {d['lexicon_words']}-word lexicon, beam {d['beam_width']}, LM weight {d['lm_weight']}, "
                f"word bonus {d['word_bonus']}" if d["lm"] else f"lexicon-free, no LM, beam {d['beam_width']}")
        what += (f", token beam {d.get('token_beam')}, beam threshold {d.get('beam_threshold')}, "
                 f"blank skip {d.get('blank_skip') or 'off'}, token floor {d.get('token_min_logp') or 'off'}")
        per_level = bool(d.get("per_level"))
        if per_level:
            what = "level 0's " + what + "; each level's own settings in the table"
        lines += ["", f"Decoder time beside model time (median per utterance; beam search: {what}; model at "
                      f"{result['decoder']['rows'][0].get('model_threads')} thread(s)):", "",
                  "| level | model ms | beam search ms | p90 ms | beam / model | beam / model, paired | greedy ms |"
                  + (" width / LM weight / bonus / threshold / token beam / blank skip / token floor |"
                     if per_level else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if per_level else "")]
        for r in result["decoder"]["rows"]:
            model = f"{r['model_median_ms']:.2f}" if r.get("model_median_ms") else "–"
            ratio = f"{r['decoder_to_model']:.2f}" if r.get("decoder_to_model") is not None else "–"
            paired = f"{r['paired_decoder_to_model']:.2f}" if r.get("paired_decoder_to_model") is not None else "–"
            settings = (f" {r.get('beam_width')} / {r.get('lm_weight')} / {r.get('word_bonus')} / {r.get('beam_threshold')} / "
                        f"{r.get('token_beam')} / {r.get('blank_skip') or 'off'} / {r.get('token_min_logp') or 'off'} |"
                        if per_level else "")
            lines.append(f"| {r['level']} | {model} | {r['decoder_median_ms']:.2f} | {r['decoder_p90_ms']:.2f} | "
                         f"{ratio} | {paired} | {r['greedy_median_ms']:.3f} |" + settings)
    lines += ["", "| file | design | quantize | levels | size MB | × dense single | peak RSS MB (1 thread) | model RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    for name, info in result["files"].items():
        memory = info["memory"][str(result["threads"][0])]
        ratio = f"{info['size_ratio_to_dense_single']:.2f}" if info.get("size_ratio_to_dense_single") else "–"
        lines.append(f"| {name} | {info['design']} | {info['quantize']} | {info['levels']} | "
                     f"{info['size_bytes'] / 1e6:.3f} | {ratio} | {memory['peak_rss_mb']:.1f} | "
                     f"{memory['model_rss_mb']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path) -> None:
    """Median latency per level: the multi-level file vs the single-level files, per thread count.

    Written complete or not at all (`dsnn_keras.fileio.atomic_write`); ``path`` may be a URL.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = result["threads"]
    fig, axes = plt.subplots(1, len(threads), figsize=(5 * len(threads), 3.6), squeeze=False)
    for ax, n in zip(axes[0], threads):
        groups = dict.fromkeys((r["kind"], r["file"] if r["kind"] == "multi" else "") for r in result["rows"])
        for kind, name in groups:
            rows = sorted((r for r in result["rows"] if r["threads"] == n and r["kind"] == kind
                           and (kind == "single" or r["file"] == name)), key=lambda r: r["sparsity"])
            if rows:
                ax.plot([r["sparsity"] for r in rows], [r["median_ms"] for r in rows],
                        marker="o" if kind == "multi" else "s",
                        label=f"{name} (one file, all levels)" if kind == "multi" else "separate single-level files")
        ax.set_xlabel("sparsity of the level")
        ax.set_ylabel("median latency per utterance (ms)")
        ax.set_title(f"{n} thread(s)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fileio.write_png(fig, path, dpi=120)
    plt.close(fig)


def write_reports(result: dict, out_dir) -> None:
    """Writes bench.json, bench.md and bench.png into ``out_dir`` (local or a URL), each complete or absent."""
    fileio.makedirs(out_dir)
    fileio.atomic_write(fileio.join(out_dir, "bench.json"), json.dumps(result, indent=2) + "\n")
    fileio.atomic_write(fileio.join(out_dir, "bench.md"), to_markdown(result))
    plot(result, fileio.join(out_dir, "bench.png"))
