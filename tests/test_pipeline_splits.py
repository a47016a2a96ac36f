"""Split parsing and speaker-level held-out sets."""
import pytest

from pipeline.records import Utterance
from pipeline.splits import SpeakerSplit, parse_input_arg


def test_parses_split_prefix_and_bare_path():
    assert parse_input_arg("dev=/d/x.tsv") == ("dev", "/d/x.tsv")
    assert parse_input_arg("/d/an4") == ("train", "/d/an4")
    assert parse_input_arg("/d/a=b.tsv") == ("train", "/d/a=b.tsv")
    with pytest.raises(ValueError, match="empty path"):
        parse_input_arg("dev=")


def test_fraction_split_is_deterministic_whole_speaker_and_about_the_fraction():
    split = SpeakerSplit.parse("0.2")
    speakers = [f"spk{i}" for i in range(500)]
    held = [s for s in speakers if split.is_held_out(s)]
    assert held == [s for s in speakers if SpeakerSplit.parse("0.2").is_held_out(s)]
    assert 60 < len(held) < 140
    utts = [Utterance(f"{s}-{k}", "p", "t", s, "train") for s in speakers[:50] for k in range(3)]
    by_speaker = {}
    for u in map(split.assign, utts):
        by_speaker.setdefault(u.speaker, set()).add(u.split)
    assert all(len(v) == 1 for v in by_speaker.values())
    assert {"train", "dev"} == set().union(*by_speaker.values())


def test_salt_changes_the_draw():
    speakers = [f"spk{i}" for i in range(200)]
    a = {s for s in speakers if SpeakerSplit.parse("0.3").is_held_out(s)}
    b = {s for s in speakers if SpeakerSplit.parse("0.3", salt="other").is_held_out(s)}
    assert a != b


def test_speaker_list_moves_only_train_utterances():
    split = SpeakerSplit.parse("fash, mkem", target_split="test")
    assert split.assign(Utterance("u", "p", "t", "fash", "train")).split == "test"
    assert split.assign(Utterance("u", "p", "t", "fash", "other")).split == "other"
    assert split.assign(Utterance("u", "p", "t", "zzz", "train")).split == "train"


@pytest.mark.parametrize("value", ["1.5", "0", ",,"])
def test_bad_dev_speakers_values_are_refused(value):
    with pytest.raises(ValueError, match="dev_speakers"):
        SpeakerSplit.parse(value)
