"""dsnn_keras.train_run.train_run: dsnn-train's work as a typed function; bad arguments are refused
before anything is written, with the error dsnn-train reports (and its exit code)."""
import pytest

from dsnn_keras.cli import train_main
from dsnn_keras.errors import DsnnUsageError
from dsnn_keras.paths import PathOverlapError
from dsnn_keras.train_run import TrainArgumentError, train_run


def test_negative_max_steps_and_a_file_as_run_dir_are_argument_errors(tmp_path):
    with pytest.raises(TrainArgumentError, match="--max_steps must be >= 0"):
        train_run(tmp_path / "data", tmp_path / "c.yaml", tmp_path / "run", max_steps=-1)
    (tmp_path / "run").write_text("x")
    with pytest.raises(TrainArgumentError, match="exists and is not a directory"):
        train_run(tmp_path / "data", tmp_path / "c.yaml", tmp_path / "run")
    assert issubclass(TrainArgumentError, DsnnUsageError)


def test_a_run_dir_inside_the_data_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(PathOverlapError):
        train_run(tmp_path / "data", tmp_path / "c.yaml", tmp_path / "data" / "run")
    assert not (tmp_path / "data").exists()


def test_dsnn_train_reports_the_functions_argument_errors_with_exit_2(tmp_path, capsys):
    (tmp_path / "run").write_text("x")
    code = train_main(["--data", str(tmp_path / "data"), "--config", str(tmp_path / "c.yaml"),
                       "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"dsnn-train: error: --out {tmp_path / 'run'} exists and is not a directory"
    assert train_main(["--data", "d", "--config", "c", "--out", "o", "--max_steps", "-1"]) == 2


def test_remote_paths_get_the_same_checks_before_anything_is_written(capsys):
    import pathlib

    from ram_filesystem import new_root

    from dsnn_keras import fileio

    config = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    url = new_root("train")
    assert train_main(["--data", f"{url}/data", "--config", config, "--out", f"{url}/data/run"]) == 2
    assert f"--out {url}/data/run is inside --data {url}/data" in capsys.readouterr().err
    fileio.atomic_write(f"{url}/file", "x")
    assert train_main(["--data", f"{url}/data", "--config", config, "--out", f"{url}/file"]) == 2
    assert capsys.readouterr().err.strip() == f"dsnn-train: error: --out {url}/file exists and is not a directory"
    assert train_main(["--data", f"{url}/data", "--config", config, "--out", f"{url}/run"]) == 1
    assert f"{url}/data: not a prepared dataset directory (no dataset.json)" in capsys.readouterr().err
    assert not fileio.exists(f"{url}/run")
