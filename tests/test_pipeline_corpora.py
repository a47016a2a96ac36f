"""Several named corpora in one preparation (``dsnn-prepare --corpus NAME=PATH``): held-out speakers
per corpus, mixing weights, augmentation in the job, and the flags' errors."""
import hashlib
import json
import math
import os

import numpy as np
import pytest

from pipeline.examples import make_example, parse_example
from pipeline.mixing import parse_corpus_arg, parse_corpus_weights, repeats
from pipeline.prepare import main, run
from pipeline.splits import SpeakerSplit

FSDD_SPEAKERS = ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]


def _score(text: str) -> float:
    """The project's hash in [0, 1), recomputed here from its definition (SHA-1, first 8 bytes)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def _expected_held_out(speakers, fraction=0.1, salt="dsnn"):
    """The documented per-corpus rule: hash below the fraction; at least one speaker held out and
    one kept in train when a corpus has two or more."""
    ranked = sorted(set(speakers), key=lambda s: _score(f"{salt}\0{s}"))
    held = {s for s in ranked if _score(f"{salt}\0{s}") < fraction}
    if len(ranked) >= 2:
        held = held or {ranked[0]}
        held -= {ranked[-1]} if held == set(ranked) else set()
    return held


# ---- flags and rules, no Beam ------------------------------------------------------------------

def test_per_corpus_held_out_rule_holds_out_at_least_one_speaker_and_keeps_one():
    split = SpeakerSplit(0.1)
    assert split.choose_held_out(FSDD_SPEAKERS) == _expected_held_out(FSDD_SPEAKERS) == {"george"}
    # None of these six falls under 0.1, and the lowest hash is george's: the minimum rule.
    assert not any(split.is_held_out(s) for s in FSDD_SPEAKERS)
    many = [f"spk{i}" for i in range(300)]     # a large corpus: exactly the --input rule
    assert split.choose_held_out(many) == {s for s in many if split.is_held_out(s)}
    assert SpeakerSplit(0.99).choose_held_out(["a", "b"]) == _expected_held_out(["a", "b"], 0.99)
    assert len(SpeakerSplit(0.99).choose_held_out(["a", "b"])) == 1      # one stays in train
    assert SpeakerSplit(0.1).choose_held_out(["solo"]) == frozenset()    # nobody to compare against
    assert SpeakerSplit(speakers=("theo", "fash")).choose_held_out(FSDD_SPEAKERS) == {"theo"}
    assert split.corpus_split("fsdd") == "dev_fsdd"


def test_weights_write_floor_w_copies_plus_one_by_a_hash_of_the_id():
    ids = [f"{d}_george_{i}" for d in range(10) for i in range(400)]
    for weight in (0.5, 1.5, 0.25):
        got = [repeats(u, weight, "fsdd") for u in ids]
        expected = [math.floor(weight) + (_score(f"dsnn\0weight\0fsdd\0{u}") < weight % 1) for u in ids]
        assert got == expected
        share = sum(g - math.floor(weight) for g in got) / len(ids)
        assert abs(share - weight % 1) < 4 * math.sqrt(0.25 / len(ids))
    assert {repeats(u, 2.0, "an4") for u in ids} == {2} and {repeats(u, 1.0) for u in ids} == {1}
    assert [repeats(u, 0.5, "fsdd", salt="other") for u in ids] != [repeats(u, 0.5, "fsdd") for u in ids]


@pytest.mark.parametrize("values, message", [
    (["fsd=0.5"], "no --corpus named 'fsd'; the corpora are an4, fsdd"),
    (["fsdd=-1"], "must be > 0"),
    (["fsdd=0"], "must be > 0"),
    (["fsdd=inf"], "must be > 0"),
    (["fsdd=half"], "'half' is not a number"),
    (["fsdd"], "expected NAME=WEIGHT"),
    (["fsdd=0.5,fsdd=2"], "weighted twice"),
])
def test_bad_corpus_weights_are_refused_naming_the_flag(values, message):
    with pytest.raises(ValueError, match="--corpus_weight") as error:
        parse_corpus_weights(values, ["an4", "fsdd"])
    assert message in str(error.value)
    assert parse_corpus_weights(["an4=2", "fsdd=0.5"], ["an4", "fsdd"]) == {"an4": 2.0, "fsdd": 0.5}
    with pytest.raises(ValueError, match="expected NAME=PATH"):
        parse_corpus_arg("/data/fsdd/manifest.tsv")
    with pytest.raises(ValueError, match="may hold only"):
        parse_corpus_arg("fs dd=/data/fsdd/manifest.tsv")


@pytest.mark.parametrize("extra, message", [
    (["--corpus_weight", "fsd=0.5"], "--corpus_weight fsd=0.5: no --corpus named 'fsd'; the corpora are an4, fsdd"),
    (["--corpus_weight", "fsdd=-0.5"], "--corpus_weight fsdd=-0.5: the weight must be > 0"),
    (["--augment", "noise", "--noise_snr_db", "30,10"], "--noise_snr_db 30,10: LOW must be <= HIGH"),
    (["--augment", "noise", "--noise_snr_db", "-40,10"], "--noise_snr_db -40,10: the range must lie within [-10, 60]"),
    (["--augment", "gain", "--noise_snr_db", "5,10"], "--noise_snr_db 5,10: --augment gain has no noise"),
    (["--augment_copies", "2"], "--augment_copies needs --augment"),
    (["--augment", "gain", "--bandwidth_rates", "8000"], "--bandwidth_rates 8000: --augment gain has no bandwidth"),
    (["--augment", "bandwidth", "--bandwidth_rates", "8000,99000"], "each rate must lie within [2000, 48000] Hz"),
    (["--bandwidth_rates", "8000"], "--bandwidth_rates needs --augment"),
    (["--augment", "gain", "--channel_tilt_db", "-3,3"], "--channel_tilt_db -3,3: --augment gain has no channel"),
    (["--augment", "channel", "--channel_tilt_db", "-13,3"], "--channel_tilt_db -13,3: the range must lie within [-12, 12]"),
    (["--augment", "gain", "--augment_copies", "0"], "--augment_copies must be in [1, 100], got 0"),
    (["--augment", "gain,echo"], "unknown augmentation 'echo'"),
    (["--input", "CORPUS"], "with --corpus every training input is a named corpus"),
    (["--input", "dev_fsdd=CORPUS", "--dev_speakers", "0.1"], "split 'dev_fsdd' is made from the corpora's held-out"),
])
def test_dsnn_prepare_exits_2_with_one_line_on_bad_corpus_or_augment_flags(tmp_path, capsys, extra, message):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "m.tsv").write_text("")
    extra = [str(tmp_path / "corpus") if a == "CORPUS" else a.replace("CORPUS", str(tmp_path / "corpus")) for a in extra]
    code = main(["--corpus", f"an4={tmp_path / 'corpus'}", "--corpus", f"fsdd={tmp_path / 'm.tsv'}",
                 "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


# ---- the whole job on real AN4 (16 kHz FLAC) and FSDD (8 kHz WAV) slices --------------------------

AN4_SPEAKERS, AN4_PER_SPEAKER, FSDD_PER_SPEAKER = 3, 3, 6
FSDD_SLICE = FSDD_SPEAKERS[:2] + FSDD_SPEAKERS[4:5]          # george (held out by the rule), jackson, theo


def _slices(data_dir, root):
    an4 = root / "an4"
    speakers = []
    for trans in sorted((data_dir / "an4" / "train").rglob("*.trans.txt")):
        lines = trans.read_text().splitlines()[:AN4_PER_SPEAKER]
        target = an4 / trans.parent.relative_to(data_dir / "an4" / "train")
        target.mkdir(parents=True)
        (target / trans.name).write_text("\n".join(lines) + "\n")
        for line in lines:
            utt = line.split()[0]
            os.symlink(trans.parent / f"{utt}.flac", target / f"{utt}.flac")
        speakers.append(trans.name.split("-")[0])
        if len(speakers) == AN4_SPEAKERS:
            break
    fsdd = root / "fsdd"
    fsdd.mkdir()
    os.symlink(data_dir / "fsdd" / "recordings", fsdd / "recordings")
    rows = (data_dir / "fsdd" / "manifest.tsv").read_text().splitlines()
    wanted = {f"recordings/{d}_{s}_0.wav" for s in FSDD_SLICE for d in range(FSDD_PER_SPEAKER)}
    picked = [r for r in rows[1:] if r.split("\t")[0] in wanted]
    assert len(picked) == len(wanted)
    (fsdd / "manifest.tsv").write_text("\n".join([rows[0], *picked]) + "\n")
    return an4, fsdd / "manifest.tsv", speakers, {r.split("\t")[0][11:-4]: r.split("\t")[1] for r in picked}


def _records(out, split):
    from apache_beam.io.tfrecordio import _TFRecordUtil

    dataset = json.loads((out / "dataset.json").read_text())
    records = {}
    for rel in dataset["splits"][split]["files"]:
        with open(out / rel, "rb") as f:
            while (blob := _TFRecordUtil.read_record(f)) is not None:
                example = parse_example(blob, 80)
                assert example["utt_id"] not in records
                records[example["utt_id"]] = (blob, example)
    return records


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    an4, fsdd, an4_speakers, fsdd_text = _slices(data_dir, root)
    held = {"an4": _expected_held_out(an4_speakers), "fsdd": _expected_held_out(FSDD_SLICE)}
    common = ["--tokenizer_type", "char", "--lm_order", "2"]
    # The reference: today's flags on what the weights keep (FSDD's held-out utterances and the half of
    # its train utterances that weight 0.5 keeps), the same held-out speakers given as a list.
    rows = fsdd.read_text().splitlines()
    kept_rows = [r for r in rows[1:] if r.split("\t")[2] in held["fsdd"]
                 or _score(f"dsnn\0weight\0fsdd\0{r.split(chr(9))[0][11:-4]}") < 0.5]
    (fsdd.parent / "kept.tsv").write_text("\n".join([rows[0], *kept_rows]) + "\n")
    today = run(["--input", str(an4), "--input", f"train={fsdd.parent / 'kept.tsv'}", "--dev_speakers",
                 ",".join(sorted(held["an4"] | held["fsdd"])), "--out", str(root / "today"), *common])
    mixed = run(["--corpus", f"an4={an4}", "--corpus", f"fsdd={fsdd}", "--dev_speakers", "0.1",
                 "--corpus_weight", "an4=2", "--corpus_weight", "fsdd=0.5", "--augment", "gain,noise,reverb",
                 "--out", str(root / "mixed"), *common])
    return root, held, an4_speakers, fsdd_text, today, mixed


def test_held_out_speakers_are_chosen_per_corpus_and_never_trained_on(runs):
    root, held, an4_speakers, _, _, mixed = runs
    assert all(len(h) >= 1 for h in held.values()) and held["fsdd"] == {"george"}
    for corpus in ("an4", "fsdd"):
        dev = _records(root / "mixed", f"dev_{corpus}")
        assert {e["speaker"] for _, e in dev.values()} == held[corpus]
        assert mixed["corpora"][corpus]["held_out_speakers"] == sorted(held[corpus])
        assert not any(i.startswith(("aug", "rep", "sp")) for i in dev)     # never augmented nor repeated
    train_speakers = {e["speaker"] for _, e in _records(root / "mixed", "train").values()}
    assert train_speakers == (set(an4_speakers) | set(FSDD_SLICE)) - held["an4"] - held["fsdd"]
    splits = mixed["splits"]
    assert list(splits) == ["train", "dev", "dev_an4", "dev_fsdd"]
    assert splits["dev"]["union_of"] == ["dev_an4", "dev_fsdd"]
    assert splits["dev"]["files"] == splits["dev_an4"]["files"] + splits["dev_fsdd"]["files"]
    assert splits["dev"]["num_utterances"] == splits["dev_an4"]["num_utterances"] + splits["dev_fsdd"]["num_utterances"]
    # dsnn-train reads data.dev_split (default "dev") and dsnn-eval --split NAME through PreparedDataset.
    from dsnn_keras.dataset import PreparedDataset

    dataset = PreparedDataset.from_dir(root / "mixed")
    for split in ("dev", "dev_an4", "dev_fsdd"):
        ids = [u.decode() for batch in dataset.eval_batches(split, batch_size=4) for u in batch["utt_id"].numpy()]
        assert len(ids) == dataset.num_utterances(split) > 0


def test_weights_give_the_expected_counts_and_dataset_json_records_them(runs):
    root, held, _, fsdd_text, _, mixed = runs
    train = _records(root / "mixed", "train")
    an4_train = [u for u, (_, e) in train.items() if "_" not in u and u.count("-") == 2]
    assert len(an4_train) == (AN4_SPEAKERS - len(held["an4"])) * AN4_PER_SPEAKER
    fsdd_train = [u for u in fsdd_text if u.split("_")[1] not in held["fsdd"]]
    kept = sorted(u for u in fsdd_train if _score(f"dsnn\0weight\0fsdd\0{u}") < 0.5)
    assert 0 < len(kept) < len(fsdd_train)
    expected = {*(f"{p}{u}" for u in an4_train for p in ("", "aug1-", "rep1-", "rep1-aug1-")),   # weight 2
                *(f"{p}{u}" for u in kept for p in ("", "aug1-"))}                                  # weight 0.5
    assert set(train) == expected
    for u in an4_train:   # a repetition is the same example under another id
        assert train[f"rep1-{u}"][1]["features"].tobytes() == train[u][1]["features"].tobytes()
    corpora = mixed["corpora"]
    assert corpora["an4"]["weight"] == 2.0 and corpora["fsdd"]["weight"] == 0.5
    assert corpora["an4"]["train"]["source_utterances"] == len(an4_train)
    assert corpora["an4"]["train"]["num_utterances"] == 4 * len(an4_train)
    assert corpora["fsdd"]["train"]["source_utterances"] == len(kept)
    assert corpora["fsdd"]["train"]["num_utterances"] == 2 * len(kept)
    assert corpora["fsdd"]["sampled_out"] == len(fsdd_train) - len(kept) and corpora["an4"]["sampled_out"] == 0
    hours = {c: corpora[c]["train"]["hours"] for c in corpora}
    assert sum(hours.values()) == pytest.approx(mixed["splits"]["train"]["hours"])
    assert sum(corpora[c]["train"]["share_of_train_hours"] for c in corpora) == pytest.approx(1.0)
    s = mixed["splits"]["train"]
    assert s["num_utterances"] == len(train) == 4 * len(an4_train) + 2 * len(kept)
    assert s["source_utterances"] == len(an4_train) + len(kept)
    assert s["augment"]["by_copy"]["1"]["num_utterances"] == s["source_utterances"]
    assert s["repeated"]["num_utterances"] == 2 * len(an4_train)
    written = sum(v["num_utterances"] for k, v in mixed["splits"].items() if k.startswith("dev_")) + s["source_utterances"]
    assert mixed["input_count"] == AN4_SPEAKERS * AN4_PER_SPEAKER + len(fsdd_text) == \
        written + mixed["rejects"]["total"] + corpora["fsdd"]["sampled_out"]
    assert mixed["metrics"]["augmented_written"] == s["source_utterances"]
    assert mixed["metrics"]["repeated_written"] == 2 * len(an4_train)
    assert mixed["augment"]["kinds"] == ["reverb", "noise", "gain"] and mixed["augment"]["splits"] == ["train"]


def test_clean_examples_and_held_out_splits_are_byte_identical_to_todays_output(runs):
    """The held-out records and every clean train example of the mixed, weighted, augmented run
    are the bytes that today's flags write; today's bytes are the contract functions' output."""
    root, _, _, fsdd_text, today, mixed = runs
    mixed_dev = {**_records(root / "mixed", "dev_an4"), **_records(root / "mixed", "dev_fsdd")}
    assert {u: b for u, (b, _) in _records(root / "today", "dev").items()} == {u: b for u, (b, _) in mixed_dev.items()}
    today_train, mixed_train = _records(root / "today", "train"), _records(root / "mixed", "train")
    clean = [u for u in mixed_train if not u.startswith(("aug", "rep"))]
    assert sorted(clean) == sorted(today_train)
    assert all(mixed_train[u][0] == today_train[u][0] for u in clean)
    for name in ("tokenizer.model", "cmvn.json", "lm/words.arpa", "lm/lexicon.txt"):
        same = (root / "mixed" / name).read_bytes() == (root / "today" / name).read_bytes()
        assert same == (name != "cmvn.json"), name      # CMVN covers the copies; the text models do not
    for u in clean:   # an augmented copy: the same text and tokens, other features
        copy, original = mixed_train[f"aug1-{u}"][1], mixed_train[u][1]
        assert (copy["transcript"], list(copy["token_ids"])) == (original["transcript"], list(original["token_ids"]))
        assert np.abs(copy["features"] - original["features"]).mean() > 0.1
    # today's bytes for one 8 kHz FSDD utterance: decode + resample, frontend, tokenizer, Example.
    from pipeline.audio import load_audio
    from pipeline.featurize import Featurizer
    from pipeline.tokenizer import load_tokenizer

    utt = next(u for u in today_train if u in fsdd_text)
    sp = load_tokenizer((root / "today" / "tokenizer.model").read_bytes())
    text = fsdd_text[utt].lower()
    speaker = utt.split("_")[1]
    features = Featurizer()(load_audio(str(root / "fsdd" / "recordings" / f"{utt}.wav")))
    assert today_train[utt][0] == make_example(utt, speaker, text, features, sp.encode(text))
    assert "corpora" not in today and "augment" not in today and "union_of" not in today["splits"]["dev"]


def test_tokenizer_and_lm_count_each_kept_transcript_once_in_one_case(runs):
    root, _, _, fsdd_text, _, mixed = runs
    from dsnn_keras.ngram_lm import build_lm_from_counts, count_ngrams
    from pipeline.tokenizer import load_tokenizer, train_tokenizer

    train = _records(root / "mixed", "train")
    originals = [e["transcript"] for u, (_, e) in sorted(train.items()) if not u.startswith(("aug", "rep"))]
    assert all(t == t.lower() for t in originals)            # --case lower: AN4 and FSDD alike
    assert {e["transcript"] for u, (_, e) in train.items() if u in fsdd_text} <= \
        {t.lower() for t in fsdd_text.values()}
    sp = load_tokenizer((root / "mixed" / "tokenizer.model").read_bytes())
    reference = load_tokenizer(train_tokenizer(originals, 128, "char"))
    pieces = sorted(sp.id_to_piece(i) for i in range(sp.get_piece_size()))
    assert pieces == sorted(reference.id_to_piece(i) for i in range(reference.get_piece_size()))
    assert not any(p.isupper() for p in pieces)
    bundle = build_lm_from_counts(count_ngrams(originals, 2), 2, lambda w: sp.encode(w, out_type=str))
    assert (root / "mixed" / "lm" / "words.arpa").read_text() == bundle.arpa
    assert (root / "mixed" / "lm" / "lexicon.txt").read_text() == bundle.lexicon_text()
    cmvn = json.loads((root / "mixed" / "cmvn.json").read_text())
    assert cmvn["num_frames"] == mixed["splits"]["train"]["num_frames"]    # every copy and repetition
