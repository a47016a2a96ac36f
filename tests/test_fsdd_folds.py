"""bench/fsdd_folds.py: fold assignment, the held-out speakers each fold prepares with, the beam
decoder tuned on AN4's held-out speakers only, resuming, and the pooled WER. The commands are faked
(no training here); real runs are reported in docs/results.md ("Multi-corpus")."""
import json
import pathlib

import pytest

from dsnn_keras.eval_report import EvalReport
from harness_bench import load_bench_script


def _load_script():
    return load_bench_script("fsdd_folds")


folds = _load_script()
SPEAKERS = ["theo", "george", "lucas", "jackson", "yweweler", "nicolas"]


def _report(split, errors_per_level, words, sparsities=(0.0, 0.9)):
    return {"split": split, "levels": [
        {"level": i, "sparsity": s, "wer": e / words, "cer": 0.1, "num_utterances": 4, "substitutions": e,
         "deletions": 0, "insertions": 0, "reference_words": words}
        for i, (s, e) in enumerate(zip(sparsities, errors_per_level))]}


@pytest.fixture
def corpora(tmp_path):
    an4 = tmp_path / "an4"
    for index in range(12):
        (an4 / "train" / f"spk{index:02d}").mkdir(parents=True)
        (an4 / "train" / f"spk{index:02d}" / "a.flac").write_bytes(b"x")
    fsdd = tmp_path / "fsdd"
    fsdd.mkdir()
    rows = ["path\ttranscript\tspeaker"] + [f"recordings/0_{s}_0.wav\tZERO\t{s}" for s in SPEAKERS]
    (fsdd / "manifest.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "base.yaml").write_text("version: 1\n")
    return tmp_path


@pytest.fixture
def fake_tools(monkeypatch):
    """run_logged replaced by fakes that write what each command writes; returns the argv of each call."""
    calls = []

    def fake_run_logged(name, argv, log_path, env=None):
        calls.append((name, list(argv)))
        out = pathlib.Path(argv[argv.index("--out") + 1])
        if name.startswith("prepare"):
            (out / "dataset.json").write_text("{}")
        elif name.startswith("train"):
            (out / "checkpoints").mkdir(exist_ok=True)
            (out / "checkpoints" / "ckpt-1.index").write_text("x" * len(calls))   # each training its own
        else:
            split = argv[argv.index("--split") + 1]
            errors = {"dev_an4": (2, 4), "dev_fsdd": (1, 3)}[split]
            if name.startswith("beam"):
                errors = tuple(e - 1 for e in errors)
                decoder = pathlib.Path(argv[argv.index("--decoder_dir") + 1])
                decoder.mkdir(exist_ok=True)
                if "--tune" in argv:
                    (decoder / "decoder.json").write_text("{}")
                assert (decoder / "decoder.json").is_file()   # dev_fsdd is decoded with dev_an4's tuning
            out.write_text(json.dumps(_report(split, errors, words=10)))
        return {"wall_s": 60.0, "cpu_user_s": 1.0, "cpu_system_s": 0.0, "cpu_s": 1.0}

    monkeypatch.setattr(folds.cmp, "run_logged", fake_run_logged)
    monkeypatch.setattr(folds.cmp, "write_run_config", lambda base, overrides, path: None)
    return calls


def _args(root, *extra):
    return ["--an4", str(root / "an4"), "--fsdd", str(root / "fsdd" / "manifest.tsv"),
            "--out_dir", str(root / "out"), "--config", str(root / "base.yaml"),
            "--report", str(root / "report.md"), *extra]


def test_round_robin_folds_hold_out_every_speaker_exactly_once():
    assigned = folds.assign_folds(SPEAKERS, 3)
    assert assigned == [["george", "nicolas"], ["jackson", "theo"], ["lucas", "yweweler"]]
    assert sorted(s for fold in folds.assign_folds(SPEAKERS, 6) for s in fold) == sorted(SPEAKERS)


@pytest.mark.parametrize("count", [1, 7])
def test_a_fold_count_that_leaves_no_held_out_or_no_training_speaker_is_refused(count):
    with pytest.raises(ValueError, match=r"--folds must be in \[2, 6\]"):
        folds.assign_folds(SPEAKERS, count)


def test_a_manifest_without_speakers_is_a_clear_error(tmp_path):
    manifest = tmp_path / "m.tsv"
    manifest.write_text("path\ttranscript\na.wav\tONE\n")
    with pytest.raises(folds.FoldsError, match="m.tsv: expected a TSV with a 'speaker' column"):
        folds.fsdd_speakers(manifest)
    with pytest.raises(folds.FoldsError, match="cannot read the FSDD manifest"):
        folds.fsdd_speakers(tmp_path / "missing.tsv")


def test_pooled_wer_sums_errors_and_words_over_the_folds():
    reports = [EvalReport.from_dict(_report("dev_fsdd", (1, 5), words=10)),
               EvalReport.from_dict(_report("dev_fsdd", (3, 5), words=30))]
    dense, sparse = folds.pooled_wer(reports)
    assert dense["wer"] == pytest.approx(4 / 40) and dense["per_fold"] == pytest.approx([0.1, 0.1])
    assert sparse["wer"] == pytest.approx(10 / 40) and sparse["reference_words"] == 40


def test_each_fold_holds_out_its_fsdd_speakers_and_the_same_an4_speakers(corpora, fake_tools):
    assert folds.main(_args(corpora, "--folds", "3", "--only", "prepare")) == 0
    prepares = [argv for name, argv in fake_tools if name.startswith("prepare")]
    assert len(prepares) == 3
    held = [argv[argv.index("--dev_speakers") + 1].split(",") for argv in prepares]
    an4_dev = {tuple(h[:-2]) for h in held}
    assert len(an4_dev) == 1 and len(next(iter(an4_dev))) == 10   # the comparison's 10 AN4 dev speakers
    assert sorted(s for h in held for s in h[-2:]) == sorted(SPEAKERS)
    assert all(f"an4={corpora / 'an4' / 'train'}" in argv for argv in prepares)
    features = json.loads(pathlib.Path(prepares[0][prepares[0].index("--feature_config") + 1]).read_text())
    assert features["num_mel_bins"] == 80   # the config's features, so dsnn-train accepts the data


def test_a_second_run_skips_every_step_and_the_report_pools_the_finished_folds(corpora, fake_tools):
    args = _args(corpora, "--folds", "2", "--fold", "1", "--augment", "bandwidth")
    assert folds.main(args) == 0
    names = [name for name, _ in fake_tools]
    assert names == ["prepare fold 1", "train fold 1", "eval fold 1 dev_an4", "eval fold 1 dev_fsdd",
                     "beam fold 1 dev_an4", "beam fold 1 dev_fsdd"]
    tuned = [argv for name, argv in fake_tools if name.startswith("beam")]
    assert "--tune" in tuned[0] and "--tune" not in tuned[1]   # never tuned on the FSDD speakers it reports
    assert "--augment" in fake_tools[0][1]
    assert folds.main(args) == 0
    assert len(fake_tools) == 6   # all up to date
    results = json.loads((corpora / "report.json").read_text())
    assert results["folds_reported"]["greedy"] == {"dev_an4": 1, "dev_fsdd": 1}
    assert results["pooled"]["greedy"]["dev_fsdd"][0]["wer"] == pytest.approx(0.1)
    assert results["pooled"]["beam"]["dev_fsdd"][0]["wer"] == pytest.approx(0.0)
    text = (corpora / "report.md").read_text()
    assert "| 0 % | 20.0 | 10.0 | 10.0 | 0.0 |" in text
    assert "- fold 0 (george, lucas, theo): – | –" in text   # the unfinished fold is shown as missing


def test_a_changed_override_retrains_and_reevaluates_only(corpora, fake_tools):
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0")) == 0
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0", "--set", "training.seed=1")) == 0
    assert [name for name, _ in fake_tools][6:] == ["train fold 0", "eval fold 0 dev_an4", "eval fold 0 dev_fsdd",
                                                     "beam fold 0 dev_an4", "beam fold 0 dev_fsdd"]


@pytest.mark.parametrize("flags, message", [
    (["--fold", "5"], "--fold '5': folds are 0..2"),
    (["--fold", "x"], "expected fold numbers"),
    (["--only", "train,bake"], "unknown stage"),
    (["--out_dir", "FSDD"], "--out_dir"),
    (["--report", "FSDD/manifest.md"], "--report"),
])
def test_bad_arguments_are_one_line_errors(corpora, fake_tools, capsys, flags, message):
    manifest = (corpora / "fsdd" / "manifest.tsv").read_bytes()
    flags = [f.replace("FSDD", str(corpora / "fsdd")) for f in flags]
    assert folds.main(_args(corpora, *flags)) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert fake_tools == []
    assert sorted(p.name for p in (corpora / "fsdd").iterdir()) == ["manifest.tsv"]   # nothing written there
    assert (corpora / "fsdd" / "manifest.tsv").read_bytes() == manifest


def test_a_retraining_from_the_same_spec_is_evaluated_again(corpora, fake_tools):
    args = _args(corpora, "--folds", "2", "--fold", "0")
    assert folds.main(args) == 0
    (corpora / "out" / "fold_0" / "run" / "checkpoints" / "ckpt-1.index").unlink()   # lost: trained again
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0", "--only", "train")) == 0
    assert folds.main(args) == 0
    assert [name for name, _ in fake_tools][6:] == ["train fold 0", "eval fold 0 dev_an4", "eval fold 0 dev_fsdd",
                                                     "beam fold 0 dev_an4", "beam fold 0 dev_fsdd"]


def test_a_changed_prepare_flag_makes_every_step_again(corpora, fake_tools):
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0", "--speed_perturb", "0.9,1,1.1")) == 0
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0", "--speed_perturb", "1.1,1.0,0.9")) == 0
    assert len(fake_tools) == 6   # the same factors: nothing made again
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0", "--augment", "channel")) == 0
    assert [name for name, _ in fake_tools][6:7] == ["prepare fold 0"] and len(fake_tools) == 12


def test_folds_made_with_another_plan_are_left_out_of_the_report(corpora, fake_tools):
    assert folds.main(_args(corpora, "--folds", "3", "--fold", "1")) == 0   # jackson, theo
    assert folds.main(_args(corpora, "--folds", "2", "--fold", "0")) == 0   # george, lucas, theo
    results = json.loads((corpora / "report.json").read_text())
    assert results["folds_reported"]["greedy"] == {"dev_an4": 1, "dev_fsdd": 1}   # fold 0 only
    assert results["stale"] == ["fold 1 eval", "fold 1 beam"]
    assert "Left out, made with other folds" in (corpora / "report.md").read_text()


def test_a_further_corpus_is_trained_on_in_every_fold_and_fingerprinted(corpora, fake_tools):
    synth = corpora / "synth" / "train" / "v1"
    synth.mkdir(parents=True)
    (synth / "a.flac").write_bytes(b"x")
    args = _args(corpora, "--folds", "2", "--only", "prepare", "--corpus", f"synth={corpora / 'synth' / 'train'}")
    assert folds.main(args) == 0
    assert all(f"synth={corpora / 'synth' / 'train'}" in argv for _, argv in fake_tools)
    (synth / "b.flac").write_bytes(b"xy")   # the corpus changed: every fold prepared again
    assert folds.main(args) == 0
    assert [name for name, _ in fake_tools] == ["prepare fold 0", "prepare fold 1"] * 2
    assert folds.main(_args(corpora, "--corpus", "fsdd=" + str(corpora))) == 1
