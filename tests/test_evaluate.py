"""Tests for dsnn_keras.evaluate: per-level decoding and scoring, the report files, dsnn-eval.

The controlled case is a hand-built nested-pruned model whose logits copy one-hot features, so
every level's hypotheses (and hence WER/CER) can be worked out by hand. The file/CLI tests use a
real (briefly trained) run directory on the tiny synthetic prepared dataset.
"""
import json
import pathlib

import numpy as np
import pytest

from dsnn_keras.decoding import error_rates
from dsnn_keras.evaluate import (EvaluationError, Utterance, evaluate_model, main, markdown_table,
                                 output_paths, parse_levels, plot_wer_vs_sparsity)

ROOT = pathlib.Path(__file__).resolve().parents[1]
PIECES = ["<unk>", "\u2581one", "\u2581two", "\u2581three", "\u2581four"]
BLANK = len(PIECES)  # 5
NUM_CLASSES = BLANK + 1
LEVELS = (0.0, 0.5, 0.9)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _controlled_model():
    """features[..., :6] -> Dense 'classes' (pruned, 6x6 = 36 weights) -> logits.

    Kernel: diagonal 1, 2, 3, 4, 5 for <unk>, one, two, three, four and 10 for the blank, zeros
    elsewhere; bias 0.5 on the blank. A frame one-hot at class k gives logit W[k, k] on k and
    0.5 on the blank, so k wins unless W[k, k] is pruned (then the blank wins).
    Level 0.5 keeps 18 of 36 weights: the whole diagonal. Level 0.9 keeps round(3.6) = 4: blank,
    four, three, two. So at level 2 the word "one" disappears from every hypothesis.
    """
    import tensorflow as tf
    import tf_keras as keras

    import dsnn_keras
    from dsnn_keras.frontend import FeatureConfig

    bins = FeatureConfig().num_mel_bins
    inputs = keras.Input([None, bins])
    select = keras.layers.Dense(NUM_CLASSES, use_bias=False, name="select")
    classes = keras.layers.Dense(NUM_CLASSES, name="classes")
    model = keras.Model(inputs, classes(select(inputs)))
    select.set_weights([np.eye(bins, NUM_CLASSES, dtype=np.float32)])
    kernel = np.diag([1.0, 2.0, 3.0, 4.0, 5.0, 10.0]).astype(np.float32)
    bias = np.zeros([NUM_CLASSES], np.float32)
    bias[BLANK] = 0.5
    classes.set_weights([kernel, bias])
    schedule = dsnn_keras.NestedPolynomialDecay(sparsity_levels=LEVELS, begin_step=0, end_step=1,
                                                frequency=1)
    pruned = dsnn_keras.prune_nested(model, schedule, prune_layers=["classes"])
    dsnn_keras.update_nested_masks(pruned, tf.constant(1, tf.int64))
    return pruned


def _utterance(utt_id, words, pad_frames=0):
    ids = [PIECES.index("\u2581" + w) for w in words]
    path = [BLANK]
    for token in ids:
        path += [token, token, BLANK]
    frames = np.zeros([len(path) + pad_frames, 80], np.float32)
    frames[np.arange(len(path)), path] = 1.0
    frames[len(path):, BLANK] = 1.0  # trailing silence: blank frames
    return Utterance(utt_id=utt_id, transcript=" ".join(words), features=frames)


@pytest.fixture(scope="module")
def controlled():
    from dsnn_keras.frontend import FeatureConfig

    model = _controlled_model()
    utterances = [_utterance("u1", ["one", "two"]), _utterance("u2", ["three", "four", "one"], 4),
                  _utterance("u3", ["four"], 1)]
    result = evaluate_model(model, utterances, levels=[0, 1, 2], sparsities=LEVELS,
                            blank_id=BLANK, pieces=PIECES, feature_config=FeatureConfig(),
                            batch_size=2, output_lengths=lambda n: n, num_examples=2)
    return model, utterances, result


def test_controlled_model_masks_are_as_designed(controlled):
    import dsnn_keras

    model, _, _ = controlled
    (codes,) = dsnn_keras.level_codes(model).values()
    diagonal = np.diag(np.asarray(codes).reshape(NUM_CLASSES, NUM_CLASSES))
    # Code = number of levels keeping the weight: <unk> and "one" only survive levels 0 and 1.
    assert diagonal.tolist() == [2, 2, 3, 3, 3, 3]


def test_dense_and_half_sparse_levels_transcribe_perfectly(controlled):
    _, utterances, result = controlled
    for entry in result["levels"][:2]:
        assert entry["wer"] == 0.0 and entry["cer"] == 0.0
    assert result["hypotheses"][0] == [u.transcript for u in utterances]


def test_sparsest_level_wer_and_cer_match_hand_counts(controlled):
    _, _, result = controlled
    # "one two" -> "two", "three four one" -> "three four", "four" -> "four":
    # 2 deleted words of 6; 8 deleted characters ("one " and " one") of 7 + 14 + 4 = 25.
    assert result["hypotheses"][2] == ["two", "three four", "four"]
    level = result["levels"][2]
    assert level["wer"] == pytest.approx(2 / 6)
    assert level["cer"] == pytest.approx(8 / 25)
    assert (level["deletions"], level["substitutions"], level["insertions"]) == (2, 0, 0)
    assert level["sparsity"] == 0.9 and level["level"] == 2 and level["num_utterances"] == 3


def test_reports_kept_fractions_per_level(controlled):
    _, _, result = controlled
    total = 80 * NUM_CLASSES + NUM_CLASSES * NUM_CLASSES + NUM_CLASSES
    kept = [entry["prunable_nonzero_fraction"] for entry in result["levels"]]
    assert kept == pytest.approx([1.0, 0.5, 4 / 36])
    assert result["levels"][2]["model_nonzero_fraction"] == pytest.approx((total - 32) / total)
    assert result["levels"][2]["prunable_params"] == 36


def test_rtf_is_compute_over_audio_seconds(controlled):
    _, utterances, result = controlled
    frames = sum(u.num_frames for u in utterances)
    assert result["audio_seconds"] == pytest.approx(frames * 160 / 16000)
    for entry in result["levels"]:
        assert entry["rtf"] == pytest.approx(entry["compute_seconds"] / result["audio_seconds"])
        assert entry["rtf"] > 0


def test_keeps_the_requested_number_of_examples(controlled):
    _, _, result = controlled
    examples = result["levels"][2]["examples"]
    assert examples == [{"utt_id": "u1", "reference": "one two", "hypothesis": "two"},
                        {"utt_id": "u2", "reference": "three four one", "hypothesis": "three four"}]


def test_parse_levels_validates_indices():
    assert parse_levels(None, 4) == [0, 1, 2, 3]
    assert parse_levels("3, 0,3", 4) == [3, 0]
    with pytest.raises(EvaluationError, match="level 4 is out of range: the run has 4 levels"):
        parse_levels("0,4", 4)
    with pytest.raises(EvaluationError, match="'x' is not a level index"):
        parse_levels("x", 4)


def test_output_paths_follow_out_stem(tmp_path):
    default = output_paths(tmp_path, None)
    assert default["json"] == tmp_path / "eval.json" and default["png"].name == "wer_vs_sparsity.png"
    custom = output_paths(tmp_path, tmp_path / "res" / "dev_eval.json")
    assert custom["md"] == tmp_path / "res" / "dev_eval.md"
    assert custom["png"] == tmp_path / "res" / "dev_eval_wer_vs_sparsity.png"


def test_plot_is_a_png(tmp_path):
    path = tmp_path / "plot.png"
    plot_wer_vs_sparsity({"a": ([0.0, 0.9], [0.1, 0.3]), "b": ([0.0, 0.9], [0.12, 0.2])}, path)
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_markdown_table_has_one_row_per_level():
    report = {"split": "dev", "num_utterances": 3, "audio_seconds": 60.0, "batch_size": 8,
              "levels": [{"level": 0, "sparsity": 0.0, "wer": 0.125, "cer": 0.05, "rtf": 0.01,
                          "num_utterances": 3, "prunable_nonzero_fraction": 1.0},
                         {"level": 1, "sparsity": 0.9, "wer": 0.5, "cer": 0.25, "rtf": None,
                          "num_utterances": 3, "prunable_nonzero_fraction": None}]}
    text = markdown_table(report)
    assert "| 0 | 0.00 | 1.000 | 12.50 | 5.00 | 0.0100 | 3 |" in text
    assert "| 1 | 0.90 | n/a | 50.00 | 25.00 | n/a | 3 |" in text


# ---- a real run directory: files and the command line -------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The tiny synthetic dataset and a run directory of the tiny config with final masks.

    Written the way dsnn-train lays a run out (config.yaml, dataset.json, tokenizer.model,
    cmvn.json, checkpoints/ from tf.train.CheckpointManager) and read back by the real
    `load_run`; the weights are untrained (these tests check files and plumbing, not accuracy).
    """
    import shutil

    import tensorflow as tf
    from fixtures_data import build_prepared_dataset

    import dsnn_keras
    from dsnn_keras.config import dump_config, load_config
    from dsnn_keras.dataset import PreparedDataset
    from dsnn_keras.model import build_pruned_model

    root = tmp_path_factory.mktemp("eval_run")
    data = build_prepared_dataset(root / "data", num_train=8, num_dev=5)
    dataset = PreparedDataset.from_dir(data)
    config = load_config(ROOT / "configs" / "tiny.yaml")
    run_dir = root / "run"
    run_dir.mkdir()
    dump_config(config, run_dir / "config.yaml")
    for name in ("dataset.json", "tokenizer.model", "cmvn.json"):
        shutil.copy(data / name, run_dir / name)
    model = build_pruned_model(config, dataset.feature_config, dataset.vocab_size,
                               dataset.cmvn_mean, dataset.cmvn_std)
    step = tf.Variable(config.pruning.end_step, dtype=tf.int64)
    dsnn_keras.update_nested_masks(model, step)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model, step=step),
                                         str(run_dir / "checkpoints"), max_to_keep=1)
    manager.save(checkpoint_number=int(step.numpy()))
    return data, run_dir


def test_dsnn_eval_writes_json_markdown_plot_and_hypotheses(trained_run, capsys):
    data, run_dir = trained_run
    assert main([str(run_dir), "--data", str(data), "--split", "dev", "--batch_size", "2"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["split"] == "dev" and report["num_utterances"] == 5
    assert [e["level"] for e in report["levels"]] == [0, 1, 2, 3]
    assert [e["sparsity"] for e in report["levels"]] == [0.0, 0.5, 0.7, 0.9]
    for key in ("wer", "cer", "rtf", "num_utterances"):
        assert all(key in e for e in report["levels"])
    kept = [e["prunable_nonzero_fraction"] for e in report["levels"]]
    assert kept == pytest.approx([1.0, 0.5, 0.3, 0.1], abs=0.01)
    # The reported WER is the WER of the hypotheses written next to it.
    rows = [json.loads(line) for line in (run_dir / "eval_hypotheses.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for entry in report["levels"]:
        rates = error_rates([r["reference"] for r in rows],
                            [r["hypotheses"][str(entry["level"])] for r in rows])
        assert entry["wer"] == pytest.approx(rates["wer"])
    assert (run_dir / "wer_vs_sparsity.png").read_bytes()[:8] == PNG_MAGIC
    table = (run_dir / "eval.md").read_text()
    assert table.count("\n| ") == 1 + 4  # the header row + one per level
    assert "| level | sparsity" in capsys.readouterr().out


def test_dsnn_eval_levels_and_out_flags(trained_run, tmp_path):
    data, run_dir = trained_run
    out = tmp_path / "dev0.json"
    assert main([str(run_dir), "--data", str(data), "--levels", "3,0", "--out", str(out),
                 "--max_utterances", "2"]) == 0
    report = json.loads(out.read_text())
    assert [e["level"] for e in report["levels"]] == [3, 0]
    assert report["num_utterances"] == 2
    assert (tmp_path / "dev0.md").is_file()
    assert (tmp_path / "dev0_wer_vs_sparsity.png").read_bytes()[:8] == PNG_MAGIC


def test_dsnn_eval_reads_and_writes_a_remote_run_directory(trained_run):
    """RUN_DIR, --data and --out on ram:// (tf.io.gfile, the code path of gs://). The default outputs
    inside a remote RUN_DIR: tests/test_fileio.py's command chain."""
    from ram_filesystem import new_root, upload_tree

    from dsnn_keras import fileio

    data, run_dir = trained_run
    url = new_root("eval")
    remote_data, remote_run = upload_tree(data, f"{url}/data"), upload_tree(run_dir, f"{url}/run")
    assert main([remote_run, "--data", remote_data, "--levels", "0,3", "--max_utterances", "2",
                 "--out", f"{url}/reports/dev.json"]) == 0
    report = json.loads(fileio.read_text(f"{url}/reports/dev.json"))
    assert report["run_dir"] == remote_run and report["data_dir"] == remote_data
    assert [e["level"] for e in report["levels"]] == [0, 3] and report["num_utterances"] == 2
    assert report["files"]["png"] == f"{url}/reports/dev_wer_vs_sparsity.png"
    assert sorted(fileio.listdir(f"{url}/reports")) == ["dev.json", "dev.md", "dev_hypotheses.jsonl",
                                                       "dev_wer_vs_sparsity.png"]
    assert fileio.read_bytes(f"{url}/reports/dev_wer_vs_sparsity.png")[:8] == PNG_MAGIC
    assert fileio.read_text(f"{url}/reports/dev.md").count("\n| ") == 1 + 2
    assert len(fileio.read_text(f"{url}/reports/dev_hypotheses.jsonl").splitlines()) == 2


def test_dsnn_eval_speakers_decodes_only_their_utterances_and_records_them(trained_run, tmp_path):
    from dsnn_keras.eval_report import EvalReport

    data, run_dir = trained_run
    out = tmp_path / "half.json"
    assert main([str(run_dir), "--data", str(data), "--levels", "0", "--speakers", "spk2,spk0",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_utterances"] == 3 and report["speakers"] == ["spk0", "spk2"]
    rows = [json.loads(line) for line in (tmp_path / "half_hypotheses.jsonl").read_text().splitlines()]
    assert [row["utt_id"] for row in rows] == ["dev-0000", "dev-0002", "dev-0004"]   # spk0, spk2, spk0
    assert "3 utterances of speaker(s) spk0, spk2," in (tmp_path / "half.md").read_text()
    assert EvalReport.read(out).speakers == ("spk0", "spk2")
    # --max_utterances counts the chosen speakers' utterances; the report names the speakers decoded
    assert main([str(run_dir), "--data", str(data), "--levels", "0", "--speakers", "spk2,spk0",
                 "--max_utterances", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_utterances"] == 1 and report["speakers"] == ["spk0"]


def test_a_speaker_the_split_lacks_is_a_one_line_error_naming_the_split_s_speakers(trained_run, tmp_path, capsys):
    data, run_dir = trained_run
    out = tmp_path / "none.json"
    assert main([str(run_dir), "--data", str(data), "--speakers", "spk0,spk9", "--out", str(out)]) == 1
    err = _error_lines(capsys)
    assert len(err) == 1
    assert "split 'dev'" in err[0] and "has no speaker spk9 (it has spk0, spk1, spk2, spk3)" in err[0]
    assert main([str(run_dir), "--data", str(data), "--speakers", " , ", "--out", str(out)]) == 1
    assert "--speakers: expected comma-separated speaker ids" in _error_lines(capsys)[0]
    assert not out.exists()


class _Split:
    """A stand-in for `PreparedDataset` with one split of (utt_id, speaker) examples."""

    root = "/data"
    split_names = ("dev",)

    def __init__(self, rows):
        self.rows = rows

    def examples(self, split):
        for utt_id, speaker in self.rows:
            yield {"utt_id": utt_id, "speaker": speaker, "transcript": "one", "features": np.zeros([3, 80])}


def test_load_utterances_reads_past_max_utterances_to_check_every_speaker_asked_for():
    from dsnn_keras.evaluate import load_utterances

    split = _Split([("a1", "a"), ("b1", "b"), ("a2", "a"), ("c1", "c")])
    got = load_utterances(split, "dev", max_utterances=1, speakers=["a", "c"])
    assert [(u.utt_id, u.speaker) for u in got] == [("a1", "a")]
    with pytest.raises(EvaluationError, match="has no speaker z "):
        load_utterances(split, "dev", max_utterances=1, speakers=["a", "z"])
    with pytest.raises(EvaluationError, match="max_utterances must be > 0, got 0"):
        load_utterances(split, "dev", max_utterances=0)
    many = _Split([(f"u{i}", f"s{i:02d}") for i in range(25)])
    with pytest.raises(EvaluationError, match=r"\(it has s00, s01, .*, s19, \.\.\. \(25 in all\)\)"):
        load_utterances(many, "dev", speakers=["nobody"])
    with pytest.raises(EvaluationError, match="its examples record no speaker ids"):
        load_utterances(_Split([("u1", "")]), "dev", speakers=["a"])


def _error_lines(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("dsnn-eval: error:")]


def test_missing_split_is_a_one_line_error(trained_run, capsys):
    data, run_dir = trained_run
    assert main([str(run_dir), "--data", str(data), "--split", "test"]) == 1
    err = _error_lines(capsys)
    assert len(err) == 1
    assert "split 'test' is not in" in err[0] and "available: dev, train" in err[0]


def test_missing_run_dir_is_a_one_line_error(trained_run, tmp_path, capsys):
    data, _ = trained_run
    assert main([str(tmp_path / "nope"), "--data", str(data)]) == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "run directory" in err[0] and "does not exist" in err[0]


def test_out_of_range_level_is_a_one_line_error(trained_run, capsys):
    data, run_dir = trained_run
    assert main([str(run_dir), "--data", str(data), "--levels", "7"]) == 1
    err = _error_lines(capsys)
    assert len(err) == 1 and "level 7 is out of range" in err[0]



def test_zero_padding_changes_the_asr_model_so_evaluation_decodes_unpadded_by_default():
    """Why ``DEFAULT_BATCH_SIZE`` is 1: padding a batch is not neutral for the real model.

    The stride-2 'same' convolutions place their windows by the padded length's parity, so padding
    an odd-length utterance by one zero frame changes output frames far from the end too; and a
    batch of 1 reproduces what the model computes on the utterance alone (as the export does).
    """
    import inspect

    from dsnn_keras.evaluate import DEFAULT_BATCH_SIZE
    from dsnn_keras.frontend import FeatureConfig
    from dsnn_keras.model import build_model
    from fixtures_data import small_config

    model = build_model(small_config().model, FeatureConfig(), 10, np.zeros(80), np.ones(80))
    features = np.random.default_rng(0).normal(size=[1, 41, 80]).astype(np.float32)
    alone = model(features).numpy()[0]
    padded = model(np.concatenate([features, np.zeros([1, 1, 80], np.float32)], 1)).numpy()[0]
    assert np.abs(alone[:5] - padded[:5]).max() > 1e-3   # first frames, far from the padding
    assert DEFAULT_BATCH_SIZE == 1
    assert inspect.signature(evaluate_model).parameters["batch_size"].default == 1
