"""pipeline.synth.cli: the dsnn-synth command (real argument parsing, real synthesis)."""
import json
import pathlib
import subprocess
import sys

import pytest

from pipeline.synth.cli import main

DSNN_SYNTH = pathlib.Path(sys.executable).parent / "dsnn-synth"


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one clear line, no traceback
    return err[0]


def test_console_script_writes_a_corpus_and_reports_on_stdout(tmp_path):
    out = tmp_path / "corpus"
    result = subprocess.run([str(DSNN_SYNTH), "--out", str(out), "--num_utterances", "4", "--seed", "3",
                             "--jobs", "2", "--gain_db=-3,0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 4 utterances" in result.stdout
    assert "4/4 utterances" in result.stderr  # progress goes to stderr
    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["num_utterances"] == 4 and manifest["config"]["augmentation"]["gain_db"] == [-3.0, 0.0]
    assert len(list(out.glob("*/*/*/*.flac"))) == 4


def test_help_documents_every_flag_without_importing_tensorflow():
    code = ("import sys\nfrom pipeline.synth.cli import build_parser, main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
            "p = build_parser()\n"
            "missing = [a.dest for a in p._actions if not a.help]\n"
            "assert not missing, missing\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for flag in ("--out", "--num_utterances", "--seed", "--overwrite", "--jobs", "--voices", "--test_variants",
                 "--noise_snr_db", "--gain_db", "--grammar", "--sample_rate"):
        assert flag in result.stdout


@pytest.mark.parametrize("argv, expected", [
    (["--num_utterances", "0"], "--num_utterances: expected an integer >= 1"),
    (["--num_utterances", "-3"], "--num_utterances: expected an integer >= 1"),
    (["--num_utterances", "2", "--voices", "en-us,zz-nope"], "unknown espeak-ng voice 'zz-nope'; English voices are: en,"),
    (["--num_utterances", "2", "--test_variants", "nope"], "unknown espeak-ng voice variant 'nope'"),
    (["--num_utterances", "2", "--variants", "f3"], "variant 'f3' adds breath noise"),
    (["--num_utterances", "2", "--variants", "m4", "--pitches", "42", "--rates", "155"],
     "test settings must never be used in train/dev"),
    (["--num_utterances", "2", "--gain_db=6,-6"], "--gain_db: expected LOW,HIGH with LOW <= HIGH"),
    (["--num_utterances", "two"], "invalid int value: 'two'"),
    (["--num_utterances", "2", "--grammar", "numbers"], "--grammar: invalid choice: 'numbers'"),
    (["--num_utterances", "2", "--sample_rate", "100000"], "--sample_rate: expected 8000 to 48000 Hz, got 100000"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, expected):
    assert main(["--out", str(tmp_path / "out")] + argv) == 2
    line = _error_line(capsys)
    assert line.startswith("dsnn-synth: error:") and expected in line
    assert not (tmp_path / "out").exists()


def test_unwritable_output_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["--out", str(blocker / "corpus"), "--num_utterances", "2"]) == 2
    assert "is a file" in _error_line(capsys)


def test_existing_non_empty_output_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "old.flac").write_bytes(b"old")
    assert main(["--out", str(out), "--num_utterances", "2", "--jobs", "1"]) == 2
    assert "not empty (pass --overwrite" in _error_line(capsys)
    assert (out / "old.flac").exists()
    assert main(["--out", str(out), "--num_utterances", "2", "--jobs", "1", "--overwrite", "--quiet"]) == 0
    assert not (out / "old.flac").exists() and (out / "corpus.json").exists()
