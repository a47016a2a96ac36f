"""dsnn_keras.distribute: strategies by name, worker roles, and how a global batch is split.

The real multi-worker runs (two processes, MultiWorkerMirroredStrategy, a killed worker) are in
tests/test_multi_worker.py.
"""
import io
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from dsnn_job.artifacts import StepError
from dsnn_job.job import Job, JobConfig
from dsnn_keras.config import ConfigError
from dsnn_keras.dataset import PreparedDataset
from dsnn_keras.distribute import (StrategyError, input_options, make_strategy, role_from_resolver,
                                   split_global_batches)
from dsnn_keras.trainer import Trainer, TrainingError, prepare_run_dir
from dsnn_keras.train_run import with_strategy
from fixtures_data import build_prepared_dataset, small_config


REPO = pathlib.Path(__file__).resolve().parents[1]


def _batch(rows: int) -> dict:
    return {"features": tf.reshape(tf.range(rows * 6, dtype=tf.float32), [rows, 3, 2]),
            "num_frames": tf.range(rows, dtype=tf.int32) + 1}


def _replicas(dataset, num_replicas, pipelines):
    """Every replica's element of the first global batch, in replica order, over all pipelines."""
    out = []
    for first, local in pipelines:
        out += list(split_global_batches(dataset, num_replicas, first, local).take(local).as_numpy_iterator())
    return out


@pytest.mark.parametrize("pipelines", [[(0, 3)], [(0, 1), (1, 2)], [(0, 1), (1, 1), (2, 1)]])
def test_each_replica_gets_its_rows_of_the_global_batch_and_together_all_of_them(pipelines):
    batch = _batch(7)
    parts = _replicas(tf.data.Dataset.from_tensors(batch), 3, pipelines)
    assert [len(p["num_frames"]) for p in parts] == [2, 2, 3]
    assert [int(p["first_row"]) for p in parts] == [0, 2, 4]
    assert all(int(p["global_batch"]) == 7 for p in parts)
    assert [int(p["global_min_frames"]) for p in parts] == [1, 1, 1]   # the global batch's, not each replica's
    for key in batch:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key].numpy())
    assert all(p["features"].shape[1:] == (3, 2) for p in parts)   # the global padding is kept


def test_a_batch_with_fewer_rows_than_replicas_leaves_a_replica_empty():
    parts = _replicas(tf.data.Dataset.from_tensors(_batch(1)), 2, [(0, 2)])
    assert [len(p["num_frames"]) for p in parts] == [0, 1]


def test_a_bad_replica_split_is_refused():
    with pytest.raises(ValueError, match="first_replica=2"):
        split_global_batches(tf.data.Dataset.from_tensors(_batch(4)), 2, first_replica=2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return build_prepared_dataset(tmp_path_factory.mktemp("distribute") / "prepared", num_train=8, num_dev=2)


def test_an_empty_replica_batch_adds_no_loss_and_no_gradient(prepared, tmp_path):
    trainer = Trainer(small_config(), PreparedDataset.from_dir(prepared), tmp_path / "run", stream=io.StringIO())
    empty = {"features": tf.zeros([0, 40, 80]), "num_frames": tf.zeros([0], tf.int32),
             "labels": tf.zeros([0, 3], tf.int32), "label_lengths": tf.zeros([0], tf.int32),
             "first_row": tf.constant(1), "global_batch": tf.constant(1)}
    grads, losses, _, nonfinite, _, switch = trainer._compute_fn(empty, tf.constant([0, 1]), tf.constant(0, tf.int64))
    assert losses.numpy().tolist() == [0.0, 0.0] and float(nonfinite) == 0.0 and float(switch) == 0.0
    assert all(float(tf.reduce_sum(tf.abs(g))) == 0.0 for g in grads)


def test_strategy_names_and_tpu_are_validated_in_the_config_and_by_the_flags():
    with pytest.raises(ConfigError, match="training.strategy must be one of default, mirrored, multi_worker, tpu"):
        small_config(training={"strategy": "horovod"})
    with pytest.raises(ConfigError, match="training.tpu .'v3-8'. needs training.strategy: tpu"):
        small_config(training={"tpu": "v3-8"})
    config = with_strategy(small_config(), "tpu", "v3-8")
    assert (config.training.strategy, config.training.tpu) == ("tpu", "v3-8")
    assert with_strategy(config).training.strategy == "tpu"   # no flag: the config's
    with pytest.raises(StrategyError, match="--strategy must be one of"):
        make_strategy("horovod")
    with pytest.raises(StrategyError, match="--tpu 'x' needs --strategy tpu"):
        make_strategy("mirrored", tpu="x")


@pytest.mark.parametrize("value, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG must be a JSON object with a 'cluster'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "is not in the cluster"),
])
def test_a_malformed_tf_config_fails_before_any_worker_starts(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(StrategyError, match=message):
        make_strategy("multi_worker")


def test_no_reachable_tpu_fails_with_one_clear_error():
    with pytest.raises(StrategyError, match="--strategy tpu: no TPU reachable at --tpu 'no-such-tpu'"):
        make_strategy("tpu", "no-such-tpu")


@pytest.mark.parametrize("cluster, task, chief, workers", [
    ({"worker": ["a:1", "b:1"]}, ("worker", 0), True, 2),
    ({"worker": ["a:1", "b:1"]}, ("worker", 1), False, 2),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("chief", 0), True, 3),
    ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("worker", 0), False, 3),
])
def test_the_chief_is_the_chief_task_or_worker_0(cluster, task, chief, workers):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task[0], task_id=task[1])
    role = role_from_resolver(resolver)
    assert (role.is_chief, role.num_workers, role.task) == (chief, workers, f"{task[0]}:{task[1]}")
    assert role_from_resolver(None).is_chief and role_from_resolver(None).num_workers == 1


def test_a_run_resumes_under_another_strategy_but_not_with_another_computation(prepared, tmp_path):
    dataset = PreparedDataset.from_dir(prepared)
    prepare_run_dir(tmp_path / "run", small_config(), dataset)
    prepare_run_dir(tmp_path / "run", small_config(training={"strategy": "multi_worker"}), dataset)
    with pytest.raises(TrainingError, match="training.seed"):
        prepare_run_dir(tmp_path / "run", small_config(training={"strategy": "multi_worker", "seed": 3}), dataset)


def test_the_job_passes_the_strategy_to_the_train_step_and_refuses_multi_worker(tmp_path, monkeypatch):
    import dsnn_keras.train_run

    with pytest.raises(StepError, match="--strategy multi_worker: dsnn-job runs every step in this one process"):
        JobConfig(out=tmp_path / "out", strategy="multi_worker")
    with pytest.raises(StepError, match="training.tpu"):
        JobConfig(out=tmp_path / "out", tpu="v3-8")
    seen = {}
    monkeypatch.setattr(dsnn_keras.train_run, "train_run",
                        lambda *args, **kwargs: seen.update(kwargs) or {"step": 1, "dev": None})
    Job(JobConfig(out=tmp_path / "out", strategy="tpu", tpu="v3-8"), log=lambda _m: None)._train(tmp_path / "run")
    assert (seen["strategy"], seen["tpu"]) == ("tpu", "v3-8")


def test_multi_worker_without_tf_config_says_it_is_a_cluster_of_one(monkeypatch, capsys):
    from dsnn_keras import distribute

    monkeypatch.delenv("TF_CONFIG", raising=False)
    distribute._check_tf_config()
    assert "without TF_CONFIG" in capsys.readouterr().err


def test_one_device_strategies_keep_tensorflows_input_defaults():
    assert input_options(tf.distribute.get_strategy()) is None
    assert input_options(tf.distribute.MirroredStrategy(["/cpu:0"])) is None


def test_several_mirrored_replicas_each_read_their_own_pipeline_instead_of_a_multi_device_iterator():
    # TF's multi-device iterator makes per-device iterators with the autotuner on, and deleting one
    # at an epoch's end waits out the autotuner's sleep (bench/input_teardown.py: 12 s after 70 s).
    # With input_options the input function runs once per replica and feeds that replica. Logical
    # CPU devices must be set before TensorFlow starts, hence the child process.
    script = textwrap.dedent("""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from dsnn_keras.distribute import input_options
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        options = input_options(strategy)
        calls = []
        def per_replica(context):
            calls.append([context.input_pipeline_id, context.num_input_pipelines])
            return tf.data.Dataset.from_tensors([float(context.input_pipeline_id)]).repeat(2)
        batch = next(iter(strategy.distribute_datasets_from_function(per_replica, options=options)))
        print(json.dumps({"mode": str(options.experimental_replication_mode),
                          "fetch_to_device": options.experimental_fetch_to_device, "calls": calls,
                          "values": [float(v.numpy()[0]) for v in strategy.experimental_local_results(batch)]}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "PER_REPLICA" in result["mode"] and result["fetch_to_device"] is False
    assert sorted(result["calls"]) == [[0, 2], [1, 2]]
    assert result["values"] == [0.0, 1.0]
