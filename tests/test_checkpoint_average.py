"""dsnn_keras.checkpoint_average: a new run directory whose weights are the mean of a run's last
checkpoints (masks from the newest, which every averaged checkpoint must share); the source is only
read, dsnn-train refuses the average, bad windows and outputs are one-line errors."""
import io
import json
import shutil

import numpy as np
import pytest

import dsnn_keras
from dsnn_keras.checkpoint_average import AVERAGED_FILE, CheckpointAverageError, average_checkpoints
from dsnn_keras.cli import average_main, train_main
from dsnn_keras.dataset import PreparedDataset
from dsnn_keras.run_dir import load_run
from dsnn_keras.trainer import Trainer
from fixtures_data import build_prepared_dataset, small_config

OFFSETS = {4: -1.0, 6: 1.0, 7: 2.0, 8: 4.0}   # checkpoint step -> what is added to every trainable weight


def _config():
    return small_config(data={"dev_split": ""})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A run with checkpoints 4 (mid-ramp masks), 6, 7, 8 (final masks): weights = base + OFFSETS[step].

    Made without training steps (see test_warm_start's fixture): the masks come from
    `update_nested_masks`, the weights are assigned.
    """
    root = tmp_path_factory.mktemp("average")
    data = build_prepared_dataset(root / "data", num_train=16, num_dev=2)
    run_dir = root / "run"
    trainer = Trainer(_config(), PreparedDataset.from_dir(data), run_dir, stream=io.StringIO())
    base = [v.numpy() for v in trainer.model.trainable_variables]
    for step, offset in OFFSETS.items():
        if step <= 6:   # after the ramp's end the masks stay as they are
            dsnn_keras.update_nested_masks(trainer.model, step if step < 6 else _config().pruning.end_step)
        for variable, value in zip(trainer.model.trainable_variables, base):
            variable.assign(value + offset)
        trainer.state.step.assign(step)
        trainer.manager.save(checkpoint_number=step)
    return data, run_dir, base


def _listing(directory):
    return sorted((p.relative_to(directory).as_posix(), p.stat().st_mtime_ns)
                  for p in directory.rglob("*") if p.is_file())


def test_averages_the_newest_checkpoints_weights_and_keeps_the_newest_masks(source, tmp_path):
    _, run_dir, base = source
    before = _listing(run_dir)
    record = average_checkpoints(run_dir, tmp_path / "avg", last=3)
    assert record["steps"] == [8, 7, 6] and record["checkpoints"] == ["ckpt-8", "ckpt-7", "ckpt-6"]
    averaged, newest = load_run(tmp_path / "avg"), load_run(run_dir)
    assert averaged.step == 8 and averaged.checkpoint.endswith("ckpt-8")
    mean_offset = (OFFSETS[8] + OFFSETS[7] + OFFSETS[6]) / 3
    for variable, value in zip(averaged.model.trainable_variables, base):
        np.testing.assert_allclose(variable.numpy(), value + mean_offset, rtol=0, atol=1e-5, err_msg=variable.name)
    codes, newest_codes = dsnn_keras.level_codes(averaged.model), dsnn_keras.level_codes(newest.model)
    assert codes.keys() == newest_codes.keys()
    for name in codes:
        np.testing.assert_array_equal(codes[name], newest_codes[name])
    assert json.loads((tmp_path / "avg" / AVERAGED_FILE).read_text())["source"] == str(run_dir)
    assert _listing(run_dir) == before     # the source run is only read


def test_a_window_reaching_into_the_pruning_ramp_is_refused_naming_the_checkpoint(source, tmp_path):
    _, run_dir, _ = source
    with pytest.raises(CheckpointAverageError, match=r"ckpt-4: its nested masks differ from ckpt-8's"):
        average_checkpoints(run_dir, tmp_path / "avg", last=4)
    assert not (tmp_path / "avg").exists()


def test_asking_for_more_checkpoints_than_the_run_kept_is_an_error(source, tmp_path):
    _, run_dir, _ = source
    with pytest.raises(CheckpointAverageError, match=r"4 checkpoint\(s\) .*cannot average the last 5"):
        average_checkpoints(run_dir, tmp_path / "avg", last=5)


def test_an_earlier_average_is_replaced_but_another_directory_is_refused_untouched(source, tmp_path, capsys):
    _, run_dir, _ = source
    out = tmp_path / "avg"
    average_checkpoints(run_dir, out, last=1)
    assert average_main([str(run_dir), "--out", str(out), "--last", "2"]) == 0
    assert json.loads((out / AVERAGED_FILE).read_text())["steps"] == [8, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avg"]   # no staging or old copy left behind
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert average_main([str(run_dir), "--out", str(other)]) == 1
    assert "holds no averaged.json" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


def test_an_out_inside_or_around_the_source_run_is_a_usage_error(source, capsys):
    _, run_dir, _ = source
    before = _listing(run_dir)
    for out in (run_dir / "avg", run_dir, run_dir.parent):
        assert average_main([str(run_dir), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "overlaps the source run" in err[0]
    assert _listing(run_dir) == before


def test_the_sources_tuned_decoder_travels_with_the_average_and_a_half_written_one_is_replaced(source, tmp_path):
    _, run_dir, _ = source
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "decoder.json").write_text('{"format_version": 1}\n')
    (copy / "lm").mkdir()
    (copy / "lm" / "lm.arpa").write_text("\\data\\\n")
    out = tmp_path / "avg"
    (out / "checkpoints").mkdir(parents=True)          # what an interrupted average leaves
    (out / "config.yaml").write_text("partial")
    average_checkpoints(copy, out, last=2)
    assert (out / "decoder.json").read_text() == '{"format_version": 1}\n'
    assert (out / "lm" / "lm.arpa").is_file() and (out / AVERAGED_FILE).is_file()
    assert (out / "config.yaml").read_text() == (copy / "config.yaml").read_text()


def test_dsnn_train_refuses_to_resume_an_average_naming_its_source(source, tmp_path, capsys):
    data, run_dir, _ = source
    out = tmp_path / "avg"
    average_checkpoints(run_dir, out, last=2)
    assert train_main(["--data", str(data), "--config", str(out / "config.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds averaged weights" in err and str(run_dir) in err


def test_a_remote_run_is_averaged_into_a_remote_directory(source):
    """Source and --out on ram:// (tf.io.gfile, the code path of gs://)."""
    from ram_filesystem import new_root, upload_tree

    from dsnn_keras import fileio

    _, run_dir, base = source
    url = new_root("average")
    remote_run = upload_tree(run_dir, f"{url}/run")
    assert average_main([remote_run, "--out", f"{url}/avg", "--last", "2"]) == 0
    assert json.loads(fileio.read_text(f"{url}/avg/{AVERAGED_FILE}"))["steps"] == [8, 7]
    averaged = load_run(f"{url}/avg")
    for variable, value in zip(averaged.model.trainable_variables, base):
        np.testing.assert_allclose(variable.numpy(), value + (OFFSETS[8] + OFFSETS[7]) / 2, rtol=0, atol=1e-5)
