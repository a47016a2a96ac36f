"""Faults in dsnn-export / dsnn-transcribe / dsnn-bench (issue 15, items 10 and 12).

Bad paths are refused with one ``prog: error:`` line before anything slow runs; a batch goes on past an
unreadable file; a killed export leaves the old output intact and the next one cleans up.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

import harness_tflite as h

_CLI = "import sys\nfrom tflite.cli import {0}\nrc = {0}(sys.argv[1:])\n" \
       "print('TF' if 'tensorflow' in sys.modules else 'noTF')\nsys.exit(rc)"


def _cli(command: str, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CLI.format(command), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _errors(stderr: str, prog: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{prog}: error: ")]


def _wav(path, seconds=0.6, seed=0):
    soundfile.write(path, h.speechlike(seconds, seed=seed), 16000)
    return path


# ---- dsnn-transcribe: a batch goes on past a bad file ----------------------------------------------

def test_transcribe_reports_each_bad_file_goes_on_and_exits_non_zero(tmp_path):
    # Before: the first unreadable file ended the batch with nothing printed for the good ones.
    from tflite.runtime import Recognizer

    good1, good2 = _wav(tmp_path / "a.wav", seed=1), _wav(tmp_path / "b.wav", seed=2)
    wav = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "trunc.wav").write_bytes(wav[:len(wav) // 2])       # prep rejects it: so must the runtime
    (tmp_path / "garbage.wav").write_bytes(b"RIFF" + bytes(200))
    model = h.exported("float")
    batch = [good1, tmp_path / "trunc.wav", tmp_path / "missing.wav", tmp_path / "garbage.wav", good2]
    out = _cli("transcribe_main", model, *batch, "--level", "1")
    assert out.returncode == 1
    recognizer = Recognizer(model)
    assert out.stdout.splitlines()[:-1] == [f"{good1}\t{recognizer.transcribe(good1, 1)}",
                                            f"{good2}\t{recognizer.transcribe(good2, 1)}"]
    errors = _errors(out.stderr, "dsnn-transcribe")
    lines = [line for line in out.stderr.splitlines() if not line.startswith("INFO: ")]   # LiteRT's own
    assert lines == errors + ["dsnn-transcribe: 2 of 5 files transcribed, 3 failed"], out.stderr
    assert re.search(r"trunc\.wav: truncated: WAV data chunk is \d+ bytes short", errors[0])
    assert "audio file not found" in errors[1] and "missing.wav" in errors[1]
    assert "garbage.wav: unreadable" in errors[2]


def test_transcribe_bad_level_is_reported_once_for_the_whole_batch(tmp_path):
    wavs = [_wav(tmp_path / f"{i}.wav", seed=i) for i in range(3)]
    out = _cli("transcribe_main", h.exported("float"), *wavs, "--level", "7")
    assert out.returncode == 1 and out.stdout.strip() == "noTF"
    errors = _errors(out.stderr, "dsnn-transcribe")
    assert len(errors) == 1 and "level 7 out of range" in errors[0]


# ---- tampered / truncated model files: one line from every command --------------------------------

@pytest.fixture(scope="module")
def damaged_models(tmp_path_factory):
    from tflite import flatbuffer
    from tflite.metadata import read_metadata

    root = tmp_path_factory.mktemp("damaged")
    data = h.exported("float").read_bytes()
    (root / "truncated.tflite").write_bytes(data[:len(data) // 3])
    raw = read_metadata(h.exported("float")).raw
    raw["levels"] = "0.0,0.5,0.9"
    (root / "levels_string.tflite").write_bytes(
        flatbuffer.add_metadata_entry(data, "dsnn", json.dumps(raw).encode()))
    return root


@pytest.mark.parametrize("name, message", [("truncated.tflite", "truncated.tflite: "),
                                           ("levels_string.tflite", "'levels' must be a non-empty list")])
def test_transcribe_and_bench_give_one_line_for_a_damaged_model(damaged_models, tmp_path, name, message):
    # Before: TypeError / struct.error tracebacks.
    wav = _wav(tmp_path / "a.wav")
    model = damaged_models / name
    for command, args in (("transcribe_main", [model, wav]),
                          ("bench_main", [model, "--utterances", wav, "--threads", "1", "--repeats", "1",
                                          "--out_dir", tmp_path / "bench"])):
        out = _cli(command, *args)
        prog = "dsnn-" + command.split("_")[0]
        assert out.returncode == 1, out.stderr
        assert "Traceback" not in out.stderr
        errors = _errors(out.stderr, prog)
        assert len(errors) == 1 and message in errors[0], out.stderr
    assert not (tmp_path / "bench").exists()


# ---- output paths checked before any work -----------------------------------------------------------

def test_bench_out_dir_that_is_a_file_is_refused_at_once(tmp_path):
    # Before: the whole benchmark ran, then FileExistsError / NotADirectoryError traceback.
    taken = tmp_path / "results"
    taken.write_text("keep me")
    started = time.monotonic()
    out = _cli("bench_main", h.exported("float"), "--out_dir", taken, "--threads", "1", "--repeats", "1")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"dsnn-bench: error: --out_dir {taken}: exists and is not a directory"]
    assert taken.read_text() == "keep me"
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("case", ["directory", "unwritable", "parent_is_file", "single_level_dir_is_file"])
def test_export_out_is_checked_before_loading_or_converting(tmp_path, case):
    # Before: 60-90 s of conversion, then IsADirectoryError / PermissionError traceback.
    run_dir = tmp_path / "run"
    run_dir.mkdir()                                             # never read: the check comes first
    (tmp_path / "a_file").write_text("x")
    extra = []
    if case == "directory":
        out, expected = tmp_path / "somedir", "--out {}: is a directory"
        out.mkdir()
    elif case == "unwritable":                                  # sysfs refuses new files, even to root
        out, expected = "/sys/dsnn_test_model.tflite", "--out {}: cannot write in /sys"
    elif case == "parent_is_file":
        out, expected = tmp_path / "a_file" / "model.tflite", "--out {}: " + f"{tmp_path / 'a_file'} is not a directory"
    else:
        out, expected = tmp_path / "m.tflite", "--single_level_dir {}: exists and is not a directory"
        extra = ["--single_level_dir", tmp_path / "a_file"]
    started = time.monotonic()
    result = _cli("export_main", run_dir, "--out", out, *extra)
    assert result.returncode == 2, result.stderr
    errors = result.stderr.strip().splitlines()
    shown = extra[1] if extra else out
    assert len(errors) == 1 and errors[0].startswith(f"dsnn-export: error: {expected.format(shown)}"), errors
    assert result.stdout.strip() == "noTF"                      # nothing heavy was imported
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["run", "a_file"] + (["somedir"] if case == "directory" else []))


# ---- dsnn-export killed with SIGKILL mid-conversion ----------------------------------------------------

def _start_export(run_dir, out):
    return subprocess.Popen([sys.executable, "-c", _CLI.format("export_main"), str(run_dir), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(process, text: str, timeout: float = 120) -> None:
    """Waits until ``process`` prints ``text`` on stderr (a reader thread: a silent child never blocks us)."""
    import threading

    seen, found = threading.Event(), []

    def read():
        for line in process.stderr:
            if text in line and not found:
                found.append(line)
                seen.set()
        seen.set()                                             # EOF: the process ended

    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(timeout), f"no {text!r} line in {timeout} s"
    if not found:
        raise AssertionError(f"dsnn-export ended (exit {process.wait()}) before printing {text!r}")


@pytest.mark.large
def test_export_killed_mid_conversion_keeps_the_old_file_and_the_next_export_cleans_up(tmp_path):
    run_dir = h.write_run_dir(tmp_path / "run")
    out_dir = tmp_path / "exported"
    out_dir.mkdir()
    out = out_dir / "model.tflite"
    old = h.exported("single").read_bytes()
    out.write_bytes(old)
    delay = random.uniform(0.0, 3.0)                           # a random point of the conversion
    process = _start_export(run_dir, out)
    try:
        _wait_for(process, "converting")
        time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    after_kill = out.read_bytes()
    if after_kill != old:                                       # only if the kill came after the rename:
        from tflite.runtime import Recognizer                   # then it is the complete new export
        assert Recognizer(out).num_levels == 2, f"killed {delay:.2f} s after 'converting'"
    leftovers = [p.name for p in out_dir.iterdir() if p.name != "model.tflite"]
    assert all(re.fullmatch(r"\.model\.tflite\.(.+\.tmp|lock)", name) for name in leftovers), leftovers
    # A kill during the final write leaves a hidden temporary: the next export removes it first.
    stale = out_dir / ".model.tflite.k1ll3d.tmp"
    stale.write_bytes(old[:1000])
    unrelated = out_dir / ".other.tflite.k1ll3d.tmp"            # another output's: not ours to remove
    unrelated.write_bytes(b"x")
    process = _start_export(run_dir, out)
    try:
        deadline = time.monotonic() + 60                       # removed before TensorFlow is even imported
        while stale.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not stale.exists()
        assert unrelated.exists()
        # While it runs, a second export to the same file is refused at once.
        second = _cli("export_main", run_dir, "--out", out)
        assert process.poll() is None, "the export ended before the second one was tried"
        assert second.returncode == 1
        assert "another dsnn-export is writing" in _errors(second.stderr, "dsnn-export")[0]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert out.read_bytes() == after_kill
    assert sorted(p.name for p in out_dir.iterdir()) == [".model.tflite.lock", ".other.tflite.k1ll3d.tmp",
                                                         "model.tflite"]
