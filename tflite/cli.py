"""Command-line entry points: ``dsnn-export``, ``dsnn-transcribe``, ``dsnn-bench``.

Heavy imports (TensorFlow, LiteRT) happen after argument parsing, so ``--help`` is instant, and output
paths are checked before anything is loaded or converted.
Exit 0 on success; 1 with one ``prog: error: ...`` line on stderr for errors a user can act on (for
``dsnn-transcribe``, one line per file that failed; the others are still transcribed); 2 for bad
arguments (argparse's usage errors, and an output path that cannot be written).

Each ``main`` only parses its arguments and calls a typed function that does the work and raises
`DsnnError` subclasses (the exit code is the error's ``exit_code``): ``dsnn-export`` ->
`export_model`, ``dsnn-bench`` -> `benchmark`, ``dsnn-transcribe`` -> `tflite.runtime.Recognizer`.
``dsnn-job`` and the AN4 comparison call the same functions.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import sys
import tempfile
from typing import Any, Callable, Iterator, Optional, Sequence

from dsnn_keras.cli_args import accept_negative_lists
from dsnn_keras.errors import DsnnError, DsnnUsageError

from tflite import signatures as sig
from tflite.export import DESIGN_CHOICES, QUANTIZE_CHOICES, STREAM_CHOICES, ExportOptions, ExportReport   # light: no TensorFlow at import

_EXPORT_DEFAULTS = ExportOptions()   # the CLI's defaults are the library's


def _fail(prog: str, message: str, code: int = 1) -> int:
    one_line = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"{prog}: error: {one_line}", file=sys.stderr, flush=True)
    return code


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _cannot_write_in(directory: pathlib.Path) -> Optional[str]:
    """None if a file can be created in ``directory`` (tried for real: root ignores mode bits), else why."""
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".dsnn-write-check-", suffix=".tmp")
    except OSError as error:
        return f"cannot write in {directory} ({error.strerror or error})"
    os.close(handle)
    os.unlink(probe)
    return None


def output_path_problem(path, flag: str, directory: bool = False) -> Optional[str]:
    """Why ``path`` cannot be written as a file (or, with ``directory``, used as an output directory).

    Checked before any slow work: an existing directory where a file is expected (or a file where a
    directory is), a parent that is a file, or a place where no file can be created. A remote path
    (``gs://...``) gets the first two checks only: whether an object can be created there shows when
    it is written.

    Returns:
        None when it is usable, else a one-line message starting with ``flag``.
    """
    from dsnn_keras import fileio

    if not fileio.is_local(path):
        if directory and fileio.isfile(path):
            return f"{flag} {path}: exists and is not a directory"
        if not directory and fileio.isdir(path):
            return f"{flag} {path}: is a directory"
        return None
    path = pathlib.Path(path)
    if directory and path.exists() and not path.is_dir():
        return f"{flag} {path}: exists and is not a directory"
    if not directory and path.is_dir():
        return f"{flag} {path}: is a directory"
    base = _nearest_existing(path if directory else path.parent)
    if not base.is_dir():
        return f"{flag} {path}: {base} is not a directory"
    problem = _cannot_write_in(base)
    return f"{flag} {path}: {problem}" if problem else None


class _Busy(DsnnError, RuntimeError):
    pass


@contextlib.contextmanager
def export_lock(out) -> Iterator[None]:
    """One ``dsnn-export`` per output file; removes temporaries a killed export left for it.

    Holds an exclusive ``flock`` on ``.NAME.lock`` next to the output (released by the kernel if the
    process dies). The lock file is left in place: deleting it while held would let a second export
    lock a new file of the same name at the same time. While the lock is held, any ``.NAME.*.tmp``
    beside the output is a leftover of an export that was killed while writing, and is deleted.

    A remote output (``gs://...``) is not locked (`dsnn_keras.paths.exclusive_lock` says why and
    prints a note); a leftover temporary there is not deleted either.
    """
    import fcntl
    import glob

    from dsnn_keras import fileio

    if not fileio.is_local(out):
        from dsnn_keras.paths import exclusive_lock

        with exclusive_lock(fileio.parent(out), f".{fileio.name(out)}.lock", holder="dsnn-export"):
            yield
        return
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "a") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _Busy(f"another dsnn-export is writing {out} (lock {lock_path}); wait for it to finish") from None
        try:
            for stale in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
                stale.unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def _log(prog: str):
    return lambda message: print(f"{prog}: {message}", file=sys.stderr, flush=True)


def _export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-export",
        description="Export a trained DSNN run to ONE .tflite whose sparsity level is chosen at run time "
                    f"(signatures {sig.RECOGNIZE}({sig.AUDIO}, {sig.SPARSITY_LEVEL}) and "
                    f"{sig.RECOGNIZE_FEATURES}({sig.FEATURES}, {sig.SPARSITY_LEVEL}); builtin ops only; "
                    "dsnn metadata inside). Every level is checked "
                    "against Keras before the file is written.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by dsnn-train")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .tflite file to write")
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=_EXPORT_DEFAULTS.quantize,
                        help="weights: none = float32; dynamic-int8 = int8 weights with dynamic-range "
                             "kernels (all levels in about one float model's size); float16 = half-size "
                             "float weights (default: %(default)s)")
    parser.add_argument("--sparse_speed", action="store_true",
                        help="run the LSTMs of the sparse levels (see --sparse_speed_min_sparsity) as "
                             "FULLY_CONNECTED ops in a WHILE loop with sparse weight storage, so they can run "
                             "faster (needs 1x4-block masks, pruning.block_size: [4, 1], and wide LSTMs; see "
                             "docs/export.md). Default: fused LSTM kernels, dense speed at every level")
    parser.add_argument("--sparse_speed_min_sparsity", type=float,
                        default=_EXPORT_DEFAULTS.sparse_speed_min_sparsity, metavar="S",
                        help="with --sparse_speed: levels at least this sparse use the FC loop, less sparse "
                             "ones keep the fused LSTM kernel (TFLite's sparse FC kernel loses to the dense "
                             "one below ~60%% zeros; default: %(default)s)")
    parser.add_argument("--design", choices=DESIGN_CHOICES, default=_EXPORT_DEFAULTS.design,
                        help="if_tree = a constant copy of the weights per level under an IF tree (the "
                             "fastest; about K x the size); shared = one stored copy of the weights + a "
                             "uint8 level code per weight, the level's weights written into resource "
                             "variables on a level change (about 1.25x one model as float32, 0.5x with "
                             "--quantize dynamic-int8 = int8 storage, float32 compute). Default: %(default)s")
    parser.add_argument("--stream", choices=STREAM_CHOICES, default=_EXPORT_DEFAULTS.stream,
                        help="the 'stream' signature (live audio in chunks, explicit state, level switchable "
                             "between chunks; docs/streaming.md): auto = when the model is causal "
                             "(model.conv_padding: causal), on = required, off = never. Default: %(default)s")
    parser.add_argument("--max_wer", type=float, default=None, metavar="W",
                        help="refuse to write the file if any level's dev WER in RUN_DIR/eval.json (or --eval) exceeds "
                             "W (a fraction: 0.3 = 30%%); fails if there is no eval.json")
    parser.add_argument("--eval", default=None, metavar="FILE", dest="eval_path",
                        help="the eval.json (from dsnn-eval) to gate on and record in the metadata "
                             "(default: RUN_DIR/eval.json)")
    parser.add_argument("--tolerance", type=float, default=_EXPORT_DEFAULTS.tolerance, metavar="T",
                        help="largest max |Δ log-posterior| between a float export and Keras accepted by "
                             "the verification (default: %(default)s); greedy tokens must still match wherever "
                             "Keras' top-2 gap exceeds 2×T")
    parser.add_argument("--max_token_error_rate", type=float, default=_EXPORT_DEFAULTS.max_token_error_rate,
                        metavar="R",
                        help="largest token edit distance (fraction of Keras' tokens, per level, over the "
                             "verification clips) between recognize(audio)'s greedy tokens and Keras' "
                             "accepted by the verification, for every export, quantized ones included "
                             "(default: %(default)s)")
    parser.add_argument("--single_level_dir", default=None, metavar="DIR",
                        help="also write each level exported alone (DIR/level_<i>.tflite), the baseline "
                             "that dsnn-bench compares against")
    parser.add_argument("--single_levels", default=None, metavar="I,J",
                        help="with --single_level_dir: only these levels (default: every level)")
    parser.add_argument("--no_decoder", action="store_true",
                        help="leave out the run's tuned beam decoder (RUN_DIR/decoder.json from dsnn-eval --tune: "
                             "its settings, word LM and lexicon travel inside the file by default)")
    parser.add_argument("--decoder_dir", default=None, metavar="DIR",
                        help="carry the decoder.json and LM of DIR (dsnn-eval --tune --decoder_dir DIR) "
                             "instead of RUN_DIR's")
    parser.add_argument("--verify_audio", nargs="*", default=[], metavar="AUDIO",
                        help="extra audio files (real speech) to verify each level with; a synthetic clip "
                             "and silence are always used, but only real speech gates a quantized file's "
                             "'stream' tokens at --max_token_error_rate (dsnn-job passes held-out files)")
    return accept_negative_lists(parser)


class CommandArgumentError(DsnnUsageError, ValueError):
    """An argument of `export_model` or `benchmark` is wrong and nothing was written (exit 2)."""


class BenchInputError(DsnnError, ValueError):
    """`benchmark` found no baseline file where it was told to look."""


def export_model(run_dir: str | os.PathLike, out: str | os.PathLike, *, options: ExportOptions = _EXPORT_DEFAULTS,
                 max_wer: Optional[float] = None, eval_path: Optional[str | os.PathLike] = None,
                 single_level_dir: Optional[str | os.PathLike] = None,
                 single_levels: Optional[Sequence[int]] = None, verify_audio: Sequence[str | os.PathLike] = (),
                 log: Optional[Callable[[str], None]] = None, with_decoder: bool = True,
                 decoder_dir: Optional[str | os.PathLike] = None) -> ExportReport:
    """What ``dsnn-export`` does: checks the output paths, holds the output's lock, exports.

    ``run_dir``, ``out``, ``eval_path``, ``single_level_dir`` and ``verify_audio`` may be local or
    URLs `tf.io.gfile` reaches (``gs://...``; `dsnn_keras.fileio`).

    Args:
        run_dir: Run directory written by ``dsnn-train``.
        out: The .tflite file to write.
        options: `ExportOptions` (design, quantization, verification tolerances).
        max_wer: Refuse to write the file if any level's WER in the eval.json exceeds it (a fraction).
        eval_path: The eval.json to gate on and record in the metadata. Defaults to ``RUN_DIR/eval.json``.
        single_level_dir: Also write each level alone as ``DIR/level_<i>.tflite``.
        single_levels: With ``single_level_dir``: only these levels. Defaults to every level.
        verify_audio: Extra audio files every level is verified with.
        log: Progress lines. Defaults to ``dsnn-export: ...`` on stderr.
        with_decoder: Carry the run's tuned beam decoder and its LM (``RUN_DIR/decoder.json``). Defaults to True.
        decoder_dir: Carry ``DIR/decoder.json`` and its LM instead (``dsnn-eval --tune --decoder_dir``).

    Returns:
        `tflite.export.ExportReport` of the multi-level file.

    Raises:
        CommandArgumentError: ``max_wer`` < 0, or an output path that cannot be written (exit 2).
        RunDirError: ``run_dir`` is not a directory.
        DsnnError: another export is writing ``out``; the WER gate, the conversion or the
            verification failed (`tflite.export.ExportError`); a bad run directory or config.
        FileNotFoundError: an input file is missing.
    """
    from dsnn_keras import fileio
    from dsnn_keras.run_dir import RunDirError

    if max_wer is not None and not max_wer >= 0:
        raise CommandArgumentError(f"--max_wer must be >= 0, got {max_wer}")
    if not fileio.isdir(run_dir):
        raise RunDirError(f"run directory not found: {run_dir}")
    problem = (output_path_problem(out, "--out")
               or (single_level_dir and output_path_problem(single_level_dir, "--single_level_dir",
                                                            directory=True)))
    if problem:
        raise CommandArgumentError(problem)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tflite.export import export_run

    with export_lock(out):
        return export_run(run_dir, out, options=options, max_wer=max_wer,
                          verify_audio_files=list(verify_audio), single_level_dir=single_level_dir,
                          single_levels=single_levels, eval_path=eval_path, log=log or _log("dsnn-export"),
                          with_decoder=with_decoder, decoder_dir=decoder_dir)


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-export RUN_DIR --out model.tflite [--quantize ...] [--max_wer W]``: parses the arguments and
    calls `export_model`."""
    prog = "dsnn-export"
    args = _export_parser().parse_args(argv)
    if not args.tolerance > 0:
        return _fail(prog, f"--tolerance must be > 0, got {args.tolerance}", 2)
    if not 0 <= args.max_token_error_rate <= 1:
        return _fail(prog, f"--max_token_error_rate must be in [0, 1], got {args.max_token_error_rate}", 2)
    if args.design == "shared" and args.sparse_speed:
        return _fail(prog, "--design shared cannot be combined with --sparse_speed", 2)
    single_levels = None
    if args.single_levels is not None:
        try:
            single_levels = [int(part) for part in args.single_levels.split(",")]
        except ValueError:
            return _fail(prog, f"--single_levels: expected comma-separated level indices, got {args.single_levels!r}", 2)
    try:
        options = ExportOptions(quantize=args.quantize, sparse_speed=args.sparse_speed, tolerance=args.tolerance,
                                design=args.design, sparse_speed_min_sparsity=args.sparse_speed_min_sparsity,
                                max_token_error_rate=args.max_token_error_rate, stream=args.stream)
    except ValueError as error:
        return _fail(prog, str(error))
    log = _log(prog)
    try:
        report = export_model(args.run_dir, args.out, options=options, max_wer=args.max_wer,
                              eval_path=args.eval_path, single_level_dir=args.single_level_dir,
                              single_levels=single_levels, verify_audio=args.verify_audio, log=log,
                              with_decoder=not args.no_decoder, decoder_dir=args.decoder_dir)
    except (DsnnError, FileNotFoundError) as error:   # ConfigError from a run's config.yaml included
        return _fail(prog, str(error), getattr(error, "exit_code", 1))
    worst = max(v["max_abs_diff"] for v in report.verification) if report.verification else float("nan")
    log(f"verified {len(report.verification)} levels (max |Δ log-posterior| {worst:.2e})")
    print(f"{report.path}\t{report.size_bytes} bytes\t{len(report.metadata['levels'])} levels")
    return 0


def _transcribe_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-transcribe",
        description="Transcribe audio files with an exported DSNN .tflite at one sparsity level "
                    "(LiteRT only; no TensorFlow or sentencepiece for local files). Prints 'file<TAB>text' per "
                    "file. MODEL and AUDIO may be local paths or gs://-style URLs (read with tf.io.gfile).")
    parser.add_argument("model", metavar="MODEL", help="the .tflite written by dsnn-export (path or URL)")
    parser.add_argument("audio", nargs="+", metavar="AUDIO",
                        help="audio files or URLs (WAV/FLAC/OGG, any sample rate: resampled to the model's)")
    parser.add_argument("--level", type=int, default=0,
                        help="sparsity level index, 0 = densest (default: 0); the levels are listed "
                             "in the file's dsnn metadata")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    parser.add_argument("--decoder", choices=("auto", "greedy", "beam"), default="auto",
                        help="greedy = best path; beam = CTC beam search with the word LM and lexicon the file "
                             "carries (lexicon-free, no LM, if it has none); auto = the file's tuned default "
                             "(default: auto)")
    parser.add_argument("--beam_width", type=int, default=None, metavar="N",
                        help="--decoder beam: hypotheses kept per frame (default: the file's)")
    parser.add_argument("--hotwords", default=None, metavar="PHRASES",
                        help="--decoder beam: comma-separated phrases to favour (needs the file's LM)")
    parser.add_argument("--hotword_weight", type=float, default=2.0, metavar="W",
                        help="bonus per word along a hot phrase (default: 2.0)")
    parser.add_argument("--stream", action="store_true",
                        help="feed each file through the 'stream' signature in --chunk_ms chunks, printing "
                             "the partial text after every chunk that changes it, as a live app would")
    parser.add_argument("--chunk_ms", type=int, default=160, help="--stream chunk length in ms (default: 160)")
    parser.add_argument("--realtime", action="store_true",
                        help="--stream paced in real time (each chunk waits for its audio to have been "
                             "spoken); default: as fast as possible")
    parser.add_argument("--switch_every_ms", type=int, default=None, metavar="MS",
                        help="--stream: alternate between --level and the sparsest level every MS of audio "
                             "(the level changes mid-stream; the state carries over)")
    return accept_negative_lists(parser)


def stream_file(recognizer, path, *, level: int = 0, chunk_ms: int = 160, realtime: bool = False,
                switch_every_ms: Optional[int] = None,
                on_partial: Optional[Callable[[float, str, int], None]] = None) -> str:
    """Streams one audio file through `Recognizer.stream` in ``chunk_ms`` chunks; returns the final text.

    Args:
        recognizer: A `tflite.Recognizer` whose file has the ``stream`` signature.
        path: An audio file (any rate: decoded and resampled once, then cut in chunks).
        level: The level to stream at (the first level when switching). Defaults to 0.
        chunk_ms: Chunk length in ms (> 0). Defaults to 160.
        realtime: Wait until each chunk's audio would have been spoken. Defaults to False.
        switch_every_ms: Alternate between ``level`` and the sparsest level every this many ms of
            audio. Defaults to None (no switching).
        on_partial: Called with ``(seconds of audio fed, text so far, level)`` whenever the text
            changes. Defaults to None.

    Raises:
        CommandArgumentError: a chunk or switch length < 1 ms.
        DsnnError / FileNotFoundError: a bad file, level or model.
    """
    import time

    from tflite.audio import load_audio

    if chunk_ms < 1 or (switch_every_ms is not None and switch_every_ms < 1):
        raise CommandArgumentError("--chunk_ms and --switch_every_ms must be >= 1")
    audio = load_audio(path, recognizer.sample_rate)
    chunk = max(recognizer.sample_rate * chunk_ms // 1000, 1)
    stream = recognizer.stream(level=level)
    other = recognizer.num_levels - 1
    began, last = time.perf_counter(), ""
    for start in range(0, len(audio), chunk):
        if switch_every_ms:
            period = start * 1000 // recognizer.sample_rate // switch_every_ms
            stream.set_level(level if period % 2 == 0 else other)
        end = min(start + chunk, len(audio))
        if realtime:
            time.sleep(max(0.0, end / recognizer.sample_rate - (time.perf_counter() - began)))
        text = stream.accept(audio[start:end])
        if on_partial is not None and text != last:
            on_partial(end / recognizer.sample_rate, text, stream.level)
        last = text
    return stream.finish()


def transcribe_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-transcribe model.tflite file.wav [more.wav ...] --level 2``.

    A file that cannot be transcribed gets one ``dsnn-transcribe: error: FILE: reason`` line on stderr
    and the batch goes on; the exit status is 1 if any file failed (with a count on stderr for a batch).
    With ``--stream`` each file goes through the ``stream`` signature in ``--chunk_ms`` chunks
    (`stream_file`); partial results go to stderr (``file<TAB>seconds<TAB>level<TAB>text so far``),
    the final ``file<TAB>text`` to stdout as without it.
    """
    prog = "dsnn-transcribe"
    args = _transcribe_parser().parse_args(argv)
    if args.chunk_ms < 1 or (args.switch_every_ms is not None and args.switch_every_ms < 1):
        return _fail(prog, "--chunk_ms and --switch_every_ms must be >= 1", 2)
    from dsnn_keras.beam_search import parse_hotwords
    from tflite.runtime import Recognizer

    try:
        hotwords = parse_hotwords(args.hotwords)
        recognizer = Recognizer(args.model, num_threads=args.threads, decoder=args.decoder,
                                beam={"beam_width": args.beam_width} if args.beam_width is not None else None,
                                hotwords=hotwords, hotword_weight=args.hotword_weight if hotwords else 0.0)
        recognizer.check_level(args.level)
    except (FileNotFoundError, DsnnError) as error:
        return _fail(prog, str(error))
    failed = 0
    for path in args.audio:
        try:
            if args.stream:
                def partial(seconds, text, level, path=path):
                    print(f"{path}\t{seconds:7.2f}s\tlevel {level}\t{text}", file=sys.stderr, flush=True)

                text = stream_file(recognizer, path, level=args.level, chunk_ms=args.chunk_ms,
                                   realtime=args.realtime, switch_every_ms=args.switch_every_ms,
                                   on_partial=partial)
            else:
                text = recognizer.transcribe(path, level=args.level)
        except (FileNotFoundError, DsnnError) as error:
            failed += 1
            _fail(prog, str(error))
            continue
        print(f"{path}\t{text}", flush=True)
    if failed and len(args.audio) > 1:
        print(f"{prog}: {len(args.audio) - failed} of {len(args.audio)} files transcribed, {failed} failed",
              file=sys.stderr)
    return 1 if failed else 0


def _bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsnn-bench",
        description="Benchmark each level of an exported DSNN .tflite (median and p90 latency, real-time "
                    "factor, peak memory, file size, per thread count) against separately exported "
                    "single-level files; writes bench.json, bench.md and bench.png. Every path may be local "
                    "or a gs://-style URL (read and written with tf.io.gfile).")
    parser.add_argument("model", metavar="MODEL", help="the multi-level .tflite written by dsnn-export")
    parser.add_argument("--baselines", nargs="*", default=[], metavar="FILE",
                        help="single-level .tflite files to compare with (dsnn-export --single_level_dir)")
    parser.add_argument("--baseline_dir", default=None, metavar="DIR",
                        help="use every level_*.tflite in DIR as a baseline")
    parser.add_argument("--compare", nargs="*", default=[], metavar="FILE",
                        help="other multi-level files (e.g. --quantize dynamic-int8 or --sparse_speed "
                             "exports) timed in the same round-robin")
    parser.add_argument("--utterances", nargs="*", default=None, metavar="PATH",
                        help="audio files or directories (sorted; first --limit used); default: four "
                             "synthetic clips of 1-4 s")
    parser.add_argument("--limit", type=int, default=8, help="most utterances to use (default: 8)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="thread counts to measure (default: 1 2; --stream: 1 only)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over the utterances (default: 5)")
    parser.add_argument("--out_dir", default="bench_out", metavar="DIR",
                        help="where to write bench.json, bench.md, bench.png (default: bench_out)")
    parser.add_argument("--stream", action="store_true",
                        help="benchmark the 'stream' signature instead (1 thread): per level and chunk "
                             "length, compute per chunk (median, p90), real-time factor, token emission "
                             "latency, peak memory; writes bench_stream.json/.md/.png")
    parser.add_argument("--chunk_ms", type=int, nargs="+", default=[80, 160, 320],
                        help="--stream chunk lengths in ms (default: 80 160 320)")
    return accept_negative_lists(parser)


def baseline_files(baseline_dir: str | os.PathLike) -> list:
    """The single-level baselines ``dsnn-export --single_level_dir`` wrote: ``DIR/level_*.tflite``, sorted.

    ``baseline_dir`` may be a URL (``gs://...``; `dsnn_keras.fileio`): the files are then URL strings,
    else `pathlib.Path`\ s.

    Raises:
        BenchInputError: there is none.
    """
    from dsnn_keras import fileio

    if fileio.is_local(baseline_dir):
        found = sorted(pathlib.Path(baseline_dir).glob("level_*.tflite"))
    else:
        import fnmatch

        names = fileio.listdir(baseline_dir) if fileio.isdir(baseline_dir) else []
        found = [fileio.join(baseline_dir, name) for name in names if fnmatch.fnmatchcase(name, "level_*.tflite")]
    if not found:
        raise BenchInputError(f"--baseline_dir {baseline_dir}: no level_*.tflite files")
    return found


def benchmark(model: str | os.PathLike, *, baselines: Sequence[str | os.PathLike] = (),
              baseline_dir: Optional[str | os.PathLike] = None,
              utterances: Optional[Sequence[str]] = None, limit: int = 8, threads: Sequence[int] = (1, 2),
              repeats: int = 5, out_dir: str | os.PathLike = "bench_out", compare: Sequence[str | os.PathLike] = (),
              log: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """What ``dsnn-bench`` does: `tflite.bench.run_benchmark`, writing bench.json/.md/.png to ``out_dir``.

    Every path (``model``, ``baselines``, ``baseline_dir``, ``utterances``, ``out_dir``, ``compare``)
    may be local or a URL `tf.io.gfile` reaches (``gs://...``; `dsnn_keras.fileio`); each report file
    is written complete or not at all.

    Args:
        model: The multi-level .tflite.
        baselines: Single-level .tflite files to compare with.
        baseline_dir: Also every ``level_*.tflite`` in this directory (`baseline_files`).
        utterances: Audio files or directories (sorted; the first ``limit`` used). Defaults to four
            synthetic clips.
        limit: Most utterances used.
        threads: Interpreter thread counts.
        repeats: Passes over the utterances.
        out_dir: Where bench.json, bench.md and bench.png go.
        compare: Other multi-level files timed in the same round-robin.
        log: Progress lines. Defaults to ``dsnn-bench: ...`` on stderr.

    Returns:
        The benchmark result (what bench.json holds).

    Raises:
        CommandArgumentError: ``repeats``, ``limit`` or a thread count < 1, or an ``out_dir`` that
            cannot be written (exit 2).
        BenchInputError: ``baseline_dir`` has no baseline file.
        FileNotFoundError: ``model`` (or another input) does not exist.
        DsnnError: a file is not a usable DSNN export, or an utterance cannot be read.
    """
    if repeats < 1 or limit < 1 or not threads or min(threads) < 1:
        raise CommandArgumentError("--repeats, --limit and --threads must be >= 1")
    problem = output_path_problem(out_dir, "--out_dir", directory=True)
    if problem:
        raise CommandArgumentError(problem)
    from tflite.bench import run_benchmark

    files = [str(path) for path in baselines]
    if baseline_dir:
        files += [str(path) for path in baseline_files(baseline_dir)]
    from dsnn_keras import fileio

    if not fileio.isfile(model):
        raise FileNotFoundError(f"model file not found: {model}")
    return run_benchmark(model, files, utterances, threads=list(threads), repeats=repeats, limit=limit,
                         out_dir=out_dir, log=log or _log("dsnn-bench"), compare=list(compare))


def benchmark_stream(model: str | os.PathLike, *, utterances: Optional[Sequence[str]] = None, limit: int = 8,
                     repeats: int = 3, chunk_ms: Sequence[int] = (80, 160, 320),
                     out_dir: str | os.PathLike = "bench_out") -> dict[str, Any]:
    """What ``dsnn-bench --stream`` does: `tflite.bench_stream.run_stream_benchmark`, reports to ``out_dir``.

    ``model``, ``utterances`` and ``out_dir`` may be local or URLs (``gs://...``), as for `benchmark`.

    Raises:
        CommandArgumentError: ``repeats``, ``limit`` or a chunk length < 1, or an unwritable ``out_dir``.
        FileNotFoundError: ``model`` does not exist.
        ValueError / DsnnError: the file has no ``stream`` signature or is not a DSNN export.
    """
    if repeats < 1 or limit < 1 or not chunk_ms or min(chunk_ms) < 1:
        raise CommandArgumentError("--repeats, --limit and --chunk_ms must be >= 1")
    problem = output_path_problem(out_dir, "--out_dir", directory=True)
    if problem:
        raise CommandArgumentError(problem)
    from dsnn_keras import fileio

    if not fileio.isfile(model):
        raise FileNotFoundError(f"model file not found: {model}")
    from tflite.bench_stream import run_stream_benchmark, write_reports

    result = run_stream_benchmark(model, utterances, chunk_ms=list(chunk_ms), repeats=repeats, limit=limit)
    write_reports(result, out_dir)
    return result


def bench_main(argv: Optional[Sequence[str]] = None) -> int:
    """``dsnn-bench model.tflite [--baseline_dir DIR] [--utterances DIR_or_files] ...``: parses the
    arguments and calls `benchmark`."""
    prog = "dsnn-bench"
    args = _bench_parser().parse_args(argv)
    if args.stream:
        if args.baselines or args.baseline_dir or args.compare or (args.threads not in (None, [1])):
            return _fail(prog, "--stream times one file's stream signature on 1 thread; it takes no "
                               "--baselines, --baseline_dir, --compare or --threads", 2)
        try:
            result = benchmark_stream(args.model, utterances=args.utterances, limit=args.limit,
                                      repeats=args.repeats, chunk_ms=args.chunk_ms, out_dir=args.out_dir)
        except (FileNotFoundError, DsnnError, ValueError) as error:
            return _fail(prog, str(error), getattr(error, "exit_code", 1))
        from tflite.bench_stream import to_markdown as stream_markdown

        print(stream_markdown(result), end="")
        return 0
    try:
        result = benchmark(args.model, baselines=args.baselines, baseline_dir=args.baseline_dir,
                           utterances=args.utterances, limit=args.limit, threads=args.threads or [1, 2],
                           repeats=args.repeats, out_dir=args.out_dir, compare=args.compare, log=_log(prog))
    except (FileNotFoundError, DsnnError, ValueError) as error:
        return _fail(prog, str(error), getattr(error, "exit_code", 1))
    from tflite.bench import to_markdown

    print(to_markdown(result), end="")
    return 0
