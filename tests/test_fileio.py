"""Paths anywhere `tf.io.gfile` / Beam `FileSystems` reach: `dsnn_keras.fileio`, and the commands on ``ram://``.

TensorFlow's ``ram://`` filesystem goes through the same `tf.io.gfile` code as ``gs://`` (TensorFlow
picks the filesystem by the URL's scheme); ``tests/ram_filesystem.py`` gives Beam the same store, so
one ``ram://`` URL reaches both sides in one process. The chain test runs the four commands'
``main`` functions in this process (the store does not outlive it), with every path on ``ram://``.
"""
import json
import os
import pathlib

import pytest

from ram_filesystem import files_under, new_root, upload_tree

from dsnn_keras import fileio

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    """The same tests on a local directory and on a ``ram://`` one."""
    return tmp_path / "root" if request.param == "local" else new_root("fileio")


def test_urls_keep_their_scheme_through_join_name_and_parent():
    run = fileio.as_path("gs://bucket/runs/tiny/")
    assert fileio.join(run, "checkpoints", "ckpt-5") == "gs://bucket/runs/tiny/checkpoints/ckpt-5"
    assert fileio.name(run) == "tiny" and fileio.parent("gs://bucket/runs/tiny/eval.json") == "gs://bucket/runs/tiny"
    assert not fileio.is_local(run) and fileio.is_local("runs/tiny")
    assert fileio.join(fileio.as_path("runs/tiny"), "eval.json") == pathlib.Path("runs/tiny/eval.json")


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(root):
    target = fileio.join(root, "sub", "report.json")
    fileio.atomic_write(target, '{"a": 1}\n')
    fileio.atomic_write(target, b'{"a": 2}\n')
    assert json.loads(fileio.read_text(target)) == {"a": 2}
    assert fileio.listdir(fileio.join(root, "sub")) == ["report.json"]


def test_file_operations_behave_the_same_locally_and_remotely(root):
    directory = fileio.join(root, "d")
    fileio.makedirs(directory)
    assert fileio.isdir(directory) and not fileio.isfile(directory)
    log = fileio.join(directory, "log.jsonl")
    fileio.append_text(log, "one\n")
    fileio.append_text(log, "two\n")
    assert fileio.read_text(log) == "one\ntwo\n" and fileio.isfile(log) and fileio.exists(log)
    copy = fileio.join(directory, "copy.jsonl")
    fileio.copy(log, copy)
    assert fileio.read_bytes(copy) == b"one\ntwo\n"
    other = fileio.join(directory, "other")
    fileio.atomic_write(other, "x")
    with pytest.raises(FileExistsError):
        fileio.rename(other, copy)
    fileio.rename(other, copy, overwrite=True)
    assert fileio.read_text(copy) == "x" and not fileio.exists(other)
    fileio.remove(copy)
    fileio.remove(copy, missing_ok=True)
    assert fileio.listdir(directory) == ["log.jsonl"]


def test_walk_files_rmtree_and_local_copy_behave_the_same_locally_and_remotely(root):
    tree = fileio.join(root, "tree")
    for relative in ("a.wav", "sub/b.flac", "sub/deeper/c.txt"):
        fileio.atomic_write(fileio.join(tree, *relative.split("/")), relative)
    assert fileio.walk_files(tree) == ["a.wav", "sub/b.flac", "sub/deeper/c.txt"]
    assert fileio.walk_files(fileio.join(root, "none")) == []
    with fileio.local_copy(fileio.join(tree, "sub", "b.flac")) as local:
        assert local.name == "b.flac" and local.read_text() == "sub/b.flac"
    assert local.exists() == fileio.is_local(root)   # a remote file's temporary copy is gone
    with pytest.raises(FileNotFoundError):
        with fileio.local_copy(fileio.join(tree, "nope.tflite")):
            pass
    fileio.rmtree(tree)
    fileio.rmtree(tree)   # already gone: nothing to do
    assert not fileio.exists(tree) and fileio.walk_files(tree) == []


def test_a_missing_remote_file_is_the_builtin_file_not_found_error(root):
    with pytest.raises(FileNotFoundError) as caught:
        fileio.read_bytes(fileio.join(root, "nope.json"))
    assert caught.value.strerror   # what error messages quote (e.g. ConfigError's)
    with pytest.raises(FileNotFoundError):
        fileio.remove(fileio.join(root, "nope.json"))


def test_load_config_reads_a_remote_file_and_names_the_url_in_errors():
    from dsnn_keras.config import ConfigError, dump_config, load_config

    url = new_root("config")
    upload_tree(REPO / "configs", url)
    config = load_config(f"{url}/tiny.yaml")
    assert config.training.total_steps == 200
    dump_config(config, f"{url}/copy.yaml")
    assert load_config(f"{url}/copy.yaml") == config
    with pytest.raises(ConfigError, match=f"{url}/nope.yaml: cannot read config"):
        load_config(f"{url}/nope.yaml")


@pytest.mark.parametrize("out, data, relation", [
    ("gs://b/prep", "gs://b/prep/", "is the same path as"),
    ("gs://b/prep/run", "gs://b/prep", "is inside"),
    ("gs://b", "gs://b/prep", "contains"),
])
def test_an_output_overlapping_a_remote_input_is_refused(out, data, relation):
    from dsnn_keras.paths import PathOverlapError, check_disjoint

    with pytest.raises(PathOverlapError, match=f"--out {out} {relation} --data {data}"):
        check_disjoint(out, {"--data": data})


@pytest.mark.parametrize("out, data", [
    ("gs://b/prep2", "gs://b/prep"),      # a sibling that merely shares a name prefix
    ("s3://b/prep/run", "gs://b/prep"),   # another store
    ("runs/x", "gs://b/runs/x"),          # local and remote
])
def test_outputs_disjoint_from_remote_inputs_are_accepted(out, data):
    from dsnn_keras.paths import check_disjoint

    check_disjoint(out, {"--data": data})


def test_a_remote_directory_is_not_locked_and_says_so(capsys):
    from dsnn_keras.paths import exclusive_lock

    url = new_root("lock")
    with exclusive_lock(url, ".dsnn-train.lock", holder="dsnn-train") as lock:
        with exclusive_lock(url, ".dsnn-train.lock", holder="dsnn-train") as second:  # not refused
            assert lock is None and second is None
    err = capsys.readouterr().err
    assert f"dsnn-train: note: {url} is not on a local filesystem, so it cannot be locked" in err
    assert not fileio.exists(url)   # nothing written


def test_checkpoints_are_listed_and_the_index_rebuilt_on_a_remote_run():
    import tensorflow as tf

    from dsnn_keras.run_dir import list_checkpoints
    from dsnn_keras.trainer import sync_checkpoint_index

    checkpoints = f"{new_root('ckpt')}/checkpoints"
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(1.0)), checkpoints, max_to_keep=3,
                                         checkpoint_name="ckpt")
    manager.save(checkpoint_number=5)
    manager.save(checkpoint_number=10)
    assert list_checkpoints(checkpoints) == [(10, f"{checkpoints}/ckpt-10"), (5, f"{checkpoints}/ckpt-5")]
    fileio.atomic_write(f"{checkpoints}/checkpoint", "garbled {{{")
    sync_checkpoint_index(checkpoints)
    state = tf.train.get_checkpoint_state(checkpoints)
    assert state.model_checkpoint_path.endswith("ckpt-10")
    assert sorted(fileio.listdir(checkpoints)) == sorted(
        ["checkpoint", "ckpt-5.index", "ckpt-5.data-00000-of-00001", "ckpt-10.index", "ckpt-10.data-00000-of-00001"])


def test_a_prepared_dataset_reads_the_same_from_a_remote_copy(tmp_path):
    from fixtures_data import build_prepared_dataset

    from dsnn_keras.dataset import PreparedDataset

    local = PreparedDataset.from_dir(build_prepared_dataset(tmp_path / "data", num_train=4, num_dev=2))
    remote = PreparedDataset.from_dir(upload_tree(tmp_path / "data", f"{new_root('data')}/data"))
    assert isinstance(remote.root, str) and remote.root.startswith("ram://")
    assert remote.pieces() == local.pieces() and remote.vocab_size == local.vocab_size
    assert [e["utt_id"] for e in remote.examples("dev")] == [e["utt_id"] for e in local.examples("dev")]


def test_a_remote_dataset_missing_a_listed_shard_is_refused_naming_it(tmp_path):
    from fixtures_data import build_prepared_dataset

    from dsnn_keras.dataset import DatasetError, PreparedDataset

    url = upload_tree(build_prepared_dataset(tmp_path / "data", num_train=4, num_dev=2), f"{new_root('data')}/d")
    shard = json.loads(fileio.read_text(f"{url}/dataset.json"))["splits"]["dev"]["files"][0]
    fileio.remove(f"{url}/{shard}")
    with pytest.raises(DatasetError, match=f"{url}/dataset.json: split 'dev' lists missing file {shard}"):
        PreparedDataset.from_dir(url)


def test_export_writes_a_remote_model_atomically():
    from tflite.export import _write_atomically

    url = new_root("export")
    _write_atomically(f"{url}/models/m.tflite", b"TFL3 old")
    _write_atomically(f"{url}/models/m.tflite", b"TFL3 new")
    assert fileio.read_bytes(f"{url}/models/m.tflite") == b"TFL3 new"
    assert fileio.listdir(f"{url}/models") == ["m.tflite"]


# ---- the four commands, every path on ram:// ------------------------------------------------------
def _corpus(url: str, count: int = 30) -> str:
    """``url/corpus/manifest.tsv`` over ``count`` 0.8 s WAVs in ``url/corpus/audio/`` (relative paths)."""
    import io

    import numpy as np
    import soundfile as sf

    words = ("one", "two", "three", "four", "five", "six", "seven")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        t = np.arange(int(0.8 * 16000)) / 16000
        wave = (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        buffer = io.BytesIO()
        sf.write(buffer, wave, 16000, format="WAV")
        fileio.atomic_write(f"{url}/corpus/audio/utt{i:03d}.wav", buffer.getvalue())
        rows.append(f"audio/utt{i:03d}.wav\t{words[i % 7]} {words[(3 * i + 1) % 7]}\tspk{i % 5}\n")
    fileio.atomic_write(f"{url}/corpus/manifest.tsv", "path\ttranscript\tspeaker\n" + "".join(rows))
    return f"{url}/corpus/manifest.tsv"


@pytest.mark.large
def test_prepare_train_eval_export_with_every_path_on_a_remote_filesystem(capsys):
    from ai_edge_litert.interpreter import Interpreter

    from dsnn_keras.cli import train_main
    from dsnn_keras.evaluate import main as eval_main
    from pipeline.prepare import main as prepare_main
    from tflite.cli import export_main
    from tflite.metadata import parse

    url = new_root("chain")
    manifest = _corpus(url)
    corpus_before = {name: fileio.read_bytes(f"{url}/corpus/audio/{name}")
                     for name in fileio.listdir(f"{url}/corpus/audio")}
    data, run, model = f"{url}/data", f"{url}/run", f"{url}/models/dsnn.tflite"
    # Beam: manifest and audio read, dataset written through FileSystems (ram:// adapter).
    assert prepare_main(["--input", manifest, "--out", data, "--dev_speakers", "spk0", "--vocab_size", "32"]) == 0
    dataset = json.loads(fileio.read_text(f"{data}/dataset.json"))
    assert dataset["input_count"] == 30 and dataset["splits"]["dev"]["num_utterances"] == 6
    assert not [path for path in files_under(url) if ".tmp-" in path]   # the temporary prefix is gone
    # TensorFlow: the config, the dataset and the run directory through tf.io.gfile.
    config = f"{url}/tiny.yaml"
    fileio.copy(REPO / "configs" / "tiny.yaml", config)
    assert train_main(["--data", data, "--config", config, "--out", run, "--max_steps", "2",
                       "--set", "pruning.levels=[0.0, 0.9]", "--set", "training.eval_max_utterances=2"]) == 0
    assert fileio.listdir(f"{run}/checkpoints")[:1] == ["checkpoint"]
    assert {"ckpt-2.index", "config.yaml", "tokenizer.model", "cmvn.json", "train_log.jsonl"} <= set(
        fileio.listdir(f"{run}/checkpoints") + fileio.listdir(run))
    events = [json.loads(line)["event"] for line in fileio.read_text(f"{run}/train_log.jsonl").splitlines()]
    assert events[0] == "start" and events[-1] == "end"
    assert fileio.listdir(f"{run}/tensorboard")
    # Re-running the finished run resumes from the remote checkpoint (nothing to do).
    assert train_main(["--data", data, "--config", config, "--out", run, "--max_steps", "2",
                       "--set", "pruning.levels=[0.0, 0.9]", "--set", "training.eval_max_utterances=2"]) == 0
    assert "resumed from" in capsys.readouterr().err
    # dsnn-eval --tune: the LM dsnn-prepare wrote (DATA/lm) is copied to RUN/lm, RUN/decoder.json written.
    assert fileio.isfile(f"{data}/lm/words.arpa")
    assert eval_main([run, "--data", data, "--max_utterances", "2", "--tune", "--tune_lm_weights", "0,1",
                      "--tune_word_bonuses", "0", "--beam_width", "4"]) == 0
    assert json.loads(fileio.read_text(f"{run}/decoder.json"))["lm_dir"] == "lm"
    assert fileio.read_text(f"{run}/lm/words.arpa") == fileio.read_text(f"{data}/lm/words.arpa")
    report = json.loads(fileio.read_text(f"{run}/eval.json"))
    assert report["run_dir"] == run and [e["level"] for e in report["levels"]] == [0, 1]
    assert report["decoder"] == "beam" and report["decoder_config"]["lm"] == f"{run}/lm"
    assert fileio.read_bytes(f"{run}/wer_vs_sparsity.png")[:4] == b"\x89PNG"
    assert len(fileio.read_text(f"{run}/eval_hypotheses.jsonl").splitlines()) == 2
    assert export_main([run, "--out", model, "--max_wer", "1.0"]) == 0
    data_bytes = fileio.read_bytes(model)
    meta = parse(data_bytes)
    assert meta.num_levels == 2 and meta.raw["source"]["run_dir"] == run
    assert meta.raw["decoder"]["lexicon_words"] > 0    # the run's tuned decoder and LM went into the file
    assert [level["dev_wer"] for level in meta.levels] == [e["wer"] for e in report["levels"]]
    assert set(Interpreter(model_content=data_bytes).get_signature_list()) >= {"recognize", "recognize_features"}
    assert fileio.listdir(f"{url}/models") == ["dsnn.tflite"]
    assert {name: fileio.read_bytes(f"{url}/corpus/audio/{name}") for name in corpus_before} == corpus_before


def test_current_umask_reads_the_mask_without_changing_it_from_many_threads():
    import concurrent.futures

    previous = os.umask(0o027)
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            seen = set(pool.map(lambda _: fileio.current_umask(), range(64)))
        assert seen == {0o027}
        assert os.umask(0o027) == 0o027   # still the mask set above
    finally:
        os.umask(previous)
