"""pipeline.synth.corpus: a generated corpus's layout, transcripts, audio, determinism, output handling."""
import json
import pathlib
import re

import numpy as np
import pytest
import soundfile

from pipeline.synth import espeak
from pipeline.synth.audio import Augmentation
from pipeline.synth.corpus import OutputExistsError, SynthConfig, plan_corpus, write_corpus
from pipeline.synth.speakers import SpeakerDesign

CONFIG = SynthConfig(num_utterances=16, seed=11, utts_per_speaker=4, dev_fraction=0.2, test_fraction=0.2,
                     augmentation=Augmentation(noise_snr_db=(25.0, 35.0), gain_db=(-3.0, 0.0)))


def _tree(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """The same corpus generated twice: once with 2 worker processes, once in-process."""
    base = tmp_path_factory.mktemp("synth")
    write_corpus(CONFIG, base / "a", jobs=2, progress=None)
    write_corpus(CONFIG, base / "b", jobs=1, progress=None)
    return base / "a", base / "b"


def test_layout_is_librispeech_with_one_transcript_line_per_flac(corpora):
    root, _ = corpora
    flacs = sorted(root.glob("*/*/*/*.flac"))
    assert len(flacs) == 16
    manifest = json.loads((root / "corpus.json").read_text())
    for flac in flacs:
        split, speaker, chapter = flac.parts[-4:-1]
        assert split in ("train", "dev", "test")
        assert re.fullmatch(rf"{speaker}-{chapter}-\d{{4}}\.flac", flac.name)
        trans = flac.parent / f"{speaker}-{chapter}.trans.txt"
        lines = dict(line.split(" ", 1) for line in trans.read_text().splitlines())
        assert re.fullmatch(r"[A-Z]+( [A-Z]+)*", lines[flac.stem])
    for trans in root.glob("*/*/*/*.trans.txt"):
        ids = [line.split(" ", 1)[0] for line in trans.read_text().splitlines()]
        assert sorted(ids) == sorted(p.stem for p in trans.parent.glob("*.flac"))
    assert {s: v["num_utterances"] for s, v in manifest["splits"].items()} == {"train": 10, "dev": 3, "test": 3}
    assert manifest["num_utterances"] == 16 and manifest["seed"] == 11


def test_transcripts_match_the_plan(corpora):
    root, _ = corpora
    _, utterances = plan_corpus(CONFIG)
    written = {}
    for trans in root.glob("*/*/*/*.trans.txt"):
        written.update(line.split(" ", 1) for line in trans.read_text().splitlines())
    assert written == {u.utt_id: u.transcript for u in utterances}


def test_two_runs_give_byte_identical_trees_regardless_of_jobs(corpora):
    a, b = corpora
    tree_a, tree_b = _tree(a), _tree(b)
    assert tree_a.keys() == tree_b.keys()
    assert [k for k in tree_a if tree_a[k] != tree_b[k]] == []


def test_test_speakers_never_share_settings_with_train_or_dev(corpora):
    root, _ = corpora
    speakers = json.loads((root / "corpus.json").read_text())["speakers"]
    key = lambda s: (s["voice"], s["variant"], s["rate"], s["pitch"], s["pitch_range"])  # noqa: E731
    train_dev = {key(s) for s in speakers if s["split"] in ("train", "dev")}
    test = {key(s) for s in speakers if s["split"] == "test"}
    assert test and train_dev and train_dev.isdisjoint(test)
    on_disk = {p.parent.parent.name: p.parts[-4] for p in root.glob("*/*/*/*.flac")}
    assert {s["speaker_id"]: s["split"] for s in speakers} == on_disk


def test_audio_is_16k_mono_with_speech_like_energy(corpora):
    root, _ = corpora
    total = 0.0
    for flac in sorted(root.glob("*/*/*/*.flac")):
        info = soundfile.info(str(flac))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        x, _ = soundfile.read(str(flac), dtype="float32")
        total += x.size / 16000
        assert 20 * np.log10(np.sqrt(np.mean(x ** 2))) > -40  # silence/digital zero is far below
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / 16000)
        assert power[(freqs >= 100) & (freqs <= 4000)].sum() > 0.8 * power.sum()
    manifest = json.loads((root / "corpus.json").read_text())
    assert manifest["seconds"] == pytest.approx(total, abs=0.01)


def test_digits_at_8khz_write_telephone_band_files_of_isolated_digits(tmp_path):
    config = SynthConfig(num_utterances=6, seed=4, utts_per_speaker=2, grammar="digits", sample_rate=8000)
    manifest = write_corpus(config, tmp_path / "digits", jobs=1, progress=None)
    flacs = sorted((tmp_path / "digits").glob("*/*/*/*.flac"))
    assert len(flacs) == 6
    total = 0.0
    for flac in flacs:
        info = soundfile.info(str(flac))
        assert (info.samplerate, info.channels) == (8000, 1)
        total += info.frames / 8000
    texts = [line.split(" ", 1)[1] for t in (tmp_path / "digits").glob("*/*/*/*.trans.txt")
             for line in t.read_text().splitlines()]
    assert len(texts) == 6 and all(text in {"ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN",
                                            "EIGHT", "NINE"} for text in texts)
    assert manifest["sample_rate"] == 8000 and manifest["config"]["grammar"] == "digits"
    assert manifest["config"]["sample_rate"] == 8000
    assert manifest["seconds"] == pytest.approx(total, abs=0.01)


def test_non_empty_output_is_refused_and_left_untouched(corpora, tmp_path):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_corpus(SynthConfig(num_utterances=2), out, jobs=1, progress=None)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_overwrite_replaces_the_directory_without_mixing(tmp_path):
    out = tmp_path / "corpus"
    write_corpus(SynthConfig(num_utterances=6, seed=1), out, jobs=1, progress=None)
    (out / "stale.txt").write_text("old")
    write_corpus(SynthConfig(num_utterances=3, seed=2), out, jobs=1, overwrite=True, progress=None)
    assert not (out / "stale.txt").exists()
    assert len(list(out.glob("*/*/*/*.flac"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]  # no staging or old dirs left


def test_failed_generation_leaves_nothing_behind(tmp_path):
    design = SpeakerDesign(voices=("xx-no-such-voice",))
    with pytest.raises(espeak.EspeakError, match="xx-no-such-voice"):
        write_corpus(SynthConfig(num_utterances=2, design=design), tmp_path / "out", jobs=1, progress=None)
    assert list(tmp_path.iterdir()) == []


def test_a_default_corpus_json_has_no_grammar_or_rate_in_its_config(corpora):
    # Left out at their defaults, so a default corpus's corpus.json is what it was before they existed.
    config = json.loads((corpora[0] / "corpus.json").read_text())["config"]
    assert "grammar" not in config and "sample_rate" not in config


def test_config_rejects_bad_values_naming_the_field():
    with pytest.raises(ValueError, match="num_utterances"):
        SynthConfig(num_utterances=0)
    with pytest.raises(ValueError, match="dev_fraction"):
        SynthConfig(num_utterances=5, dev_fraction=1.5)
    with pytest.raises(ValueError, match="grammar: expected one of"):
        SynthConfig(num_utterances=5, grammar="numbers")
    with pytest.raises(ValueError, match="sample_rate: expected an integer from 8000 to 48000 Hz, got 4000"):
        SynthConfig(num_utterances=5, sample_rate=4000)
    assert SynthConfig(num_utterances=20).split_sizes() == {"train": 16, "dev": 2, "test": 2}
