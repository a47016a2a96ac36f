"""Speed perturbation (``dsnn-prepare --speed_perturb``): the resampling, the Beam transforms, the job."""
import json
import os

import numpy as np
import pytest
import soundfile as sf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import apache_beam as beam
from dsnn_keras.frontend import FeatureConfig
from pipeline.audio import AudioConfig
from pipeline.examples import parse_example
from pipeline.prepare import LOCAL_RUNNER, main, run
from pipeline.records import Reject, RejectReason, Utterance
from pipeline.speed import parse_speed_factors, perturbed_id, speed_perturb
from pipeline.splits import SpeakerSplit
from pipeline.summary import PERTURBED, WRITTEN, SummaryCombineFn, check_perturbed
from pipeline.tokenizer import train_tokenizer
from pipeline.transforms import DecodeUtterance, FeaturizeUtterance, SpeedPerturbDoFn

RATE = 16000
TONE_HZ = 1000.0
FACTORS = (0.9, 1.0, 1.1)


def _tone(seconds: float = 1.0, hz: float = TONE_HZ, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(waveform: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(waveform.size)))
    return float(np.fft.rfftfreq(waveform.size, 1.0 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.5, 2.0])
def test_speed_change_scales_a_tones_length_by_1_over_f_and_its_pitch_by_f(factor):
    tone = _tone()
    out = speed_perturb(tone, factor, RATE)
    assert out.dtype == np.float32
    assert abs(out.size - tone.size / factor) <= 2
    # A 1 s tone has 1 Hz FFT bins; the copy is 1/f s long, so its bins are f Hz wide.
    assert abs(_peak_hz(out) - TONE_HZ * factor) <= 1.5 * factor


def test_factor_one_is_the_waveform_itself():
    tone = _tone()
    assert speed_perturb(tone, 1.0, RATE) is tone
    assert perturbed_id("fash-an251-b", 1.0) == "fash-an251-b"
    assert perturbed_id("fash-an251-b", 1.1) == "sp1.1-fash-an251-b"
    assert perturbed_id("x", 0.95) == "sp0.95-x"


@pytest.mark.parametrize("text, message", [
    ("0.9,1.0,0.9", "given twice"),
    ("1,1.0", "given twice"),
    ("0.9,1.1", "must include 1.0"),
    ("0.4,1.0", "outside [0.5, 2.0]"),
    ("1.0,2.5", "outside [0.5, 2.0]"),
    ("-1,1.0", "outside [0.5, 2.0]"),
    ("0,1.0", "outside [0.5, 2.0]"),
    ("nan,1.0", "outside [0.5, 2.0]"),
    ("fast,1.0", "'fast' is not a number"),
    ("0.9,,1.1", "an empty item"),
    ("", "an empty item"),
])
def test_bad_speed_factors_are_refused_naming_the_flag(text, message):
    with pytest.raises(ValueError, match="--speed_perturb") as error:
        parse_speed_factors(text)
    assert message in str(error.value)


def test_speed_factors_are_sorted_and_one_alone_is_off():
    assert parse_speed_factors(" 1.1, 0.9 ,1") == (0.9, 1.0, 1.1)
    assert parse_speed_factors("1.0") == (1.0,)


def test_dsnn_prepare_exits_2_with_one_line_on_a_bad_factor(tmp_path, capsys):
    (tmp_path / "corpus").mkdir()
    code = main(["--input", str(tmp_path / "corpus"), "--out", str(tmp_path / "out"),
                 "--speed_perturb", "0.9,1.0,3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["dsnn-prepare: error: --speed_perturb '0.9,1.0,3': factor 3 is outside [0.5, 2.0] "
                   "(a speed change of more than 2x is not speech augmentation)"]
    assert not (tmp_path / "out").exists()


def test_dsnn_job_validates_and_normalises_speed_perturb(tmp_path):
    from dsnn_job.job import JobConfig, StepError

    assert JobConfig(out=tmp_path / "job", speed_perturb="1.1,1,0.9").speed_perturb == "0.9,1.0,1.1"
    with pytest.raises(StepError, match="--speed_perturb '0.9,0.9,1.0': factor 0.9 is given twice"):
        JobConfig(out=tmp_path / "job", speed_perturb="0.9,0.9,1.0")


def test_summary_counts_copies_apart_and_checks_them():
    fn = SummaryCombineFn()
    a = fn.create_accumulator()
    for item in [(WRITTEN, "train", (1, 100, 16000)), (PERTURBED, ("train", 0.9), (1, 111, 17778)),
                 (PERTURBED, ("train", 1.1), (1, 91, 14545))]:
        a = fn.add_input(a, item)
    b = fn.add_input(fn.create_accumulator(), (WRITTEN, "dev", (1, 50, 8000)))
    out = fn.extract_output(fn.merge_accumulators([a, b]))
    assert out["splits"]["train"]["num_utterances"] == 1   # the utterances, not the copies
    assert out["perturbed"] == {"train": {"0.9": {"num_utterances": 1, "num_frames": 111, "num_samples": 17778},
                                          "1.1": {"num_utterances": 1, "num_frames": 91, "num_samples": 14545}}}
    check_perturbed(out, FACTORS, ["train"])
    with pytest.raises(RuntimeError, match=r"split 'train': 0 copies at speed 1.2 for 1 utterances"):
        check_perturbed(out, (1.0, 1.2), ["train"])
    with pytest.raises(RuntimeError, match=r"copies in split\(s\) \['train'\], which are never perturbed"):
        check_perturbed(out, FACTORS, [])


def test_the_beam_chain_perturbs_train_audio_only_and_rejects_bad_files_once(tmp_path):
    sf.write(tmp_path / "tone.wav", _tone(), RATE)
    sf.write(tmp_path / "held.wav", _tone(hz=500.0), RATE)
    (tmp_path / "garbage.wav").write_bytes(os.urandom(3000))
    utts = [Utterance("tone", str(tmp_path / "tone.wav"), "yes no", "s1", "train"),
            Utterance("held", str(tmp_path / "held.wav"), "no", "s2", "dev"),
            Utterance("bad", str(tmp_path / "garbage.wav"), "yes", "s1", "train")]
    model = train_tokenizer(["yes no", "no yes"], 16, "char")
    features = FeatureConfig(num_mel_bins=20)

    def check_audio(outputs):
        decoded = {d.utt.utt_id: d for d in outputs if not isinstance(d, Reject)}
        assert [d.reason for d in outputs if isinstance(d, Reject)] == [RejectReason.UNREADABLE]
        assert [f for f, _ in decoded["tone"].copies] == list(FACTORS)
        for factor, waveform in decoded["tone"].copies:
            assert abs(waveform.size - RATE / factor) <= 2
            assert abs(_peak_hz(waveform) - TONE_HZ * factor) <= 1.5 * factor
        ((factor, held),) = decoded["held"].copies   # dev: the real audio, once
        assert factor == 1.0 and held.size == RATE and abs(_peak_hz(held) - 500.0) <= 1.5

    def check_examples(outputs):
        written = {o.utt_id: o for o in outputs if not isinstance(o, Reject)}
        assert sorted(written) == ["held", "sp0.9-tone", "sp1.1-tone", "tone"]
        assert [o.reason for o in outputs if isinstance(o, Reject)] == [RejectReason.UNREADABLE]
        for utt_id, factor in (("sp0.9-tone", 0.9), ("tone", 1.0), ("sp1.1-tone", 1.1)):
            example = parse_example(written[utt_id].serialized, 20)
            assert written[utt_id].factor == factor and written[utt_id].split == "train"
            assert example["utt_id"] == utt_id and example["speaker"] == "s1"
            assert example["transcript"] == "yes no"
            assert list(example["token_ids"]) == list(parse_example(written["tone"].serialized, 20)["token_ids"])
            assert example["num_frames"] == features.num_frames(written[utt_id].num_samples)
        assert written["held"].factor == 1.0 and written["held"].split == "dev"

    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        tok = p | "Tok" >> beam.Create([model])
        perturbed = (p | beam.Create(utts)
                     | "Decode" >> beam.ParDo(DecodeUtterance(AudioConfig()), beam.pvalue.AsSingleton(tok))
                     | "SpeedPerturb" >> beam.ParDo(SpeedPerturbDoFn(FACTORS, RATE)))
        examples = perturbed | "Featurize" >> beam.ParDo(FeaturizeUtterance(features, AudioConfig()))
        assert_that(perturbed, check_audio, label="audio")
        assert_that(examples, check_examples, label="examples")


# ---- the whole job, with and without the flag --------------------------------------------------

SPEAKERS, PER_SPEAKER = 3, 3


def _corpus(data_dir, root):
    """Three AN4 speakers (3 utterances each, symlinked) plus a NeMo manifest with a tone and a
    garbage file in the train split."""
    an4 = root / "an4"
    speakers = []
    for trans in sorted((data_dir / "an4" / "train").rglob("*.trans.txt")):
        lines = trans.read_text().splitlines()
        if len(lines) < PER_SPEAKER or trans.parent.parent.name in speakers:
            continue
        target = an4 / trans.parent.relative_to(data_dir / "an4" / "train")
        target.mkdir(parents=True)
        (target / trans.name).write_text("\n".join(lines[:PER_SPEAKER]) + "\n")
        for line in lines[:PER_SPEAKER]:
            utt = line.split()[0]
            os.symlink(trans.parent / f"{utt}.flac", target / f"{utt}.flac")
        speakers.append(trans.parent.parent.name)
        if len(speakers) == SPEAKERS:
            break
    extra = root / "extra"
    extra.mkdir()
    sf.write(extra / "tone.wav", _tone(), RATE)
    (extra / "garbage.wav").write_bytes(os.urandom(3000))
    (extra / "extra.jsonl").write_text("".join(
        json.dumps({"audio_filepath": name, "text": "tone", "speaker": "synth", "utt_id": name[:-4]}) + "\n"
        for name in ("tone.wav", "garbage.wav")))
    return an4, extra / "extra.jsonl", speakers


def _records(out, split, bins=80):
    from apache_beam.io.tfrecordio import _TFRecordUtil  # reads without TensorFlow

    dataset = json.loads((out / "dataset.json").read_text())
    blobs = []
    for rel in dataset["splits"][split]["files"]:
        with open(out / rel, "rb") as f:
            while (blob := _TFRecordUtil.read_record(f)) is not None:
                blobs.append(blob)
    return {parse_example(b, bins)["utt_id"]: (b, parse_example(b, bins)) for b in blobs}


@pytest.fixture(scope="module")
def both_runs(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    an4, manifest, speakers = _corpus(data_dir, root)
    # Held-out speakers by hash (as the AN4 recipe's --dev_speakers 0.1): a salt that holds out
    # exactly one of the three speakers (and not the tone's), which goes first in `speakers`.
    salt = next(f"s{i}" for i in range(1000)
                if [SpeakerSplit(0.3, salt=f"s{i}").is_held_out(s) for s in [*speakers, "synth"]].count(True) == 1
                and not SpeakerSplit(0.3, salt=f"s{i}").is_held_out("synth"))
    speakers.sort(key=lambda s: not SpeakerSplit(0.3, salt=salt).is_held_out(s))
    common = ["--input", str(an4), "--input", f"train={manifest}", "--dev_speakers", "0.3",
              "--split_salt", salt, "--tokenizer_type", "char", "--lm_order", "2"]
    off = run([*common, "--out", str(root / "off")])
    on = run([*common, "--out", str(root / "on"), "--speed_perturb", "1.1,0.9,1.0"])
    return root, speakers, off, on


def test_train_examples_are_utterances_times_factors_and_counts_reconcile(both_runs):
    root, speakers, off, on = both_runs
    originals = (SPEAKERS - 1) * PER_SPEAKER + 1          # two AN4 speakers and the tone
    train = on["splits"]["train"]
    assert on["speed_perturb"] == {"factors": list(FACTORS), "splits": ["train"]}
    assert train["speed_perturb"]["source_utterances"] == off["splits"]["train"]["num_utterances"] == originals
    assert train["num_utterances"] == originals * len(FACTORS) == len(_records(root / "on", "train"))
    by_factor = train["speed_perturb"]["by_factor"]
    assert list(by_factor) == ["0.9", "1.0", "1.1"]
    assert all(n["num_utterances"] == originals for n in by_factor.values())
    assert by_factor["1.0"] == {k: off["splits"]["train"][k] for k in ("num_utterances", "hours", "num_frames")}
    assert train["num_frames"] == sum(n["num_frames"] for n in by_factor.values())
    assert by_factor["0.9"]["hours"] == pytest.approx(by_factor["1.0"]["hours"] / 0.9, rel=1e-3)
    assert by_factor["1.1"]["hours"] == pytest.approx(by_factor["1.0"]["hours"] / 1.1, rel=1e-3)
    # The garbage file is one input and one reject, not one per factor.
    assert on["input_count"] == off["input_count"] == SPEAKERS * PER_SPEAKER + 2
    assert on["rejects"] == off["rejects"] == {"total": 1, "by_reason": {"unreadable": 1}}
    assert on["input_count"] == originals + PER_SPEAKER + on["rejects"]["total"]
    assert len((root / "on" / "rejects.jsonl").read_text().splitlines()) == 1
    assert on["metrics"]["utterances_written"] == originals + PER_SPEAKER
    assert on["metrics"]["speed_perturbed_written"] == 2 * originals
    assert "--speed_perturb" in on["created_by"]["command"]
    assert "speed_perturb" not in off and "speed_perturb" not in off["splits"]["train"]


def test_perturbed_copies_are_the_originals_resampled_with_kaldi_ids(both_runs):
    root, _, _, _ = both_runs
    on, off = _records(root / "on", "train"), _records(root / "off", "train")
    assert sorted(on) == sorted([*off, *(f"sp{f}-{u}" for u in off for f in ("0.9", "1.1"))])
    for utt_id, (blob, example) in off.items():
        assert on[utt_id][0] == blob      # the factor 1.0 copy: the same bytes as without the flag
        for factor in (0.9, 1.1):
            copy = on[f"sp{factor}-{utt_id}"][1]
            assert copy["transcript"] == example["transcript"] and copy["speaker"] == example["speaker"]
            assert list(copy["token_ids"]) == list(example["token_ids"])
            assert abs(copy["num_frames"] - example["num_frames"] / factor) <= 2
    # The tone's energy moves to the mel bins of 900 / 1100 Hz.
    config = FeatureConfig()
    import tensorflow as tf

    from dsnn_keras.frontend import log_mel_spectrogram
    for utt_id, hz in (("sp0.9-tone", 900.0), ("tone", 1000.0), ("sp1.1-tone", 1100.0)):
        expected = int(np.argmax(log_mel_spectrogram(tf.constant(_tone(hz=hz)), config).numpy().mean(0)))
        assert int(np.argmax(on[utt_id][1]["features"].mean(0))) == expected


def test_held_out_speakers_are_never_perturbed_nor_in_train(both_runs):
    root, speakers, _, _ = both_runs
    for name in ("dev/data-00000-of-00001.tfrecord", "tokenizer.model", "lm/words.arpa", "lm/lexicon.txt",
                 "rejects.jsonl"):   # dev examples, tokenizer and LM: as without the flag
        assert (root / "on" / name).read_bytes() == (root / "off" / name).read_bytes(), name
    dev, train = _records(root / "on", "dev"), _records(root / "on", "train")
    assert len(dev) == PER_SPEAKER and not any(u.startswith("sp") for u in dev)
    assert {e["speaker"] for _, e in dev.values()} == {speakers[0]}
    train_speakers = {e["speaker"] for _, e in train.values()}
    assert speakers[0] not in train_speakers        # decided on the original speakers, before perturbation
    assert train_speakers == {*speakers[1:], "synth"}


def test_cmvn_covers_every_copy(both_runs):
    root, _, _, on = both_runs
    cmvn = json.loads((root / "on" / "cmvn.json").read_text())
    feats = np.concatenate([e["features"] for _, e in _records(root / "on", "train").values()]).astype(np.float64)
    assert cmvn["num_frames"] == feats.shape[0] == on["splits"]["train"]["num_frames"]
    np.testing.assert_allclose(cmvn["mean"], feats.mean(0), rtol=1e-5, atol=1e-5)



def test_dsnn_job_passes_speed_perturb_to_prepare_and_its_fingerprint(data_dir, tmp_path, monkeypatch):
    from dsnn_job.job import Job, JobConfig, StepError

    an4, _, speakers = _corpus(data_dir, tmp_path / "corpus")

    def stop(self, directory):
        raise StepError("stopped after prepare by the test")

    monkeypatch.setattr(Job, "_train", stop)

    def prepare(speed_perturb):
        job = Job(JobConfig(out=tmp_path / "job", corpus=str(an4), dev_speakers=speakers[0],
                            speed_perturb=speed_perturb), log=lambda _m: None)
        with pytest.raises(StepError, match="stopped after prepare"):
            job.run()
        artifact = json.loads((tmp_path / "job" / "data" / "_artifact.json").read_text())
        dataset = json.loads((tmp_path / "job" / "data" / "dataset.json").read_text())
        return job.records["prepare"].status, artifact["params"], dataset

    status, params, dataset = prepare("1.1,1,0.9")
    assert status == "ran" and params["speed_perturb"] == "0.9,1.0,1.1"
    assert dataset["speed_perturb"]["factors"] == [0.9, 1.0, 1.1]
    assert dataset["splits"]["train"]["num_utterances"] == 3 * (SPEAKERS - 1) * PER_SPEAKER
    assert prepare("0.9,1.0,1.1")[0] == "cached"     # the same factors, written another way
    status, params, dataset = prepare("1.0")         # off again: re-made, and as without the flag
    assert status == "ran" and "speed_perturb" not in params and "speed_perturb" not in dataset
    assert dataset["splits"]["train"]["num_utterances"] == (SPEAKERS - 1) * PER_SPEAKER


def test_dsnn_lm_counts_each_utterance_once_as_the_preparation_job_does(both_runs, tmp_path):
    """dsnn-lm over a perturbed train split: the copies' transcripts are left out, so the LM is the job's."""
    from dsnn_keras.ngram_lm import LmBundle, build_dataset_lm, dataset_transcripts

    root, _, _, _ = both_runs
    on, off = root / "on", root / "off"
    assert sorted(dataset_transcripts(on)) == sorted(dataset_transcripts(off))
    assert len(dataset_transcripts(on, originals_only=False)) == len(FACTORS) * len(dataset_transcripts(off))
    built = LmBundle.read_dir(build_dataset_lm(on, order=2, out=tmp_path / "lm"))
    assert built.arpa == LmBundle.read_dir(on / "lm").arpa == LmBundle.read_dir(off / "lm").arpa


def test_is_copy_knows_every_copy_prefix_and_keeps_ids_that_only_look_like_one():
    from dsnn_keras.ngram_lm import is_copy

    ids = {"a1", "sp0.9-a1", "aug1-a1", "rep2-a1", "rep1-aug1-sp1.1-a1", "sp1-0001", "aug-x"}
    assert [is_copy(i, ids) for i in ("sp0.9-a1", "aug1-a1", "rep2-a1", "rep1-aug1-sp1.1-a1")] == [True] * 4
    assert not any(is_copy(i, ids) for i in ("a1", "sp1-0001", "aug-x"))   # no original "0001"; "aug-" has no k
