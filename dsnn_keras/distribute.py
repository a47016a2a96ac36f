"""Choosing a `tf.distribute` strategy by name, and splitting global batches between replicas.

``dsnn-train --strategy`` (or ``training.strategy`` in the config) names one of `STRATEGIES`:

- ``default``: no distribution (one device; what every earlier run used).
- ``mirrored``: `tf.distribute.MirroredStrategy` over every local GPU (one CPU replica without one).
- ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy`, one process per machine; the
  cluster and this process's task come from the standard ``TF_CONFIG`` environment variable
  (`tf.distribute.cluster_resolver.TFConfigClusterResolver`). Without ``TF_CONFIG`` it is one worker.
- ``tpu``: `tf.distribute.TPUStrategy` on ``TPUClusterResolver(tpu=NAME)`` (``--tpu NAME``).

Whatever the strategy, a step trains on the same **global batch**: every input pipeline (one per
worker) builds the identical stream of length-bucketed global batches (same files, same seeded
shuffle, `dsnn_keras.dataset.PreparedDataset.training_batches`) and `split_global_batches` gives
replica ``r`` of ``N`` the rows ``[r*B//N, (r+1)*B//N)`` of each global batch of ``B`` rows, with
the global padding kept. Each replica's loss is its rows' summed CTC loss divided by ``B``; the
replicas' gradients are summed, so a step's gradient is the global batch's mean whatever ``N``.

Example:
    >>> strategy = make_strategy("multi_worker")          # reads TF_CONFIG
    >>> role = worker_role(strategy)
    >>> role.is_chief, role.task
    (True, 'worker:0')
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Optional

from dsnn_keras.errors import DsnnError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class StrategyError(DsnnError, RuntimeError):
    """A strategy cannot be created: a bad ``TF_CONFIG``, no reachable TPU, an unknown name."""


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """Where this process stands in a (possibly multi-worker) cluster.

    Attributes:
        is_chief: True for the one process that writes the run directory (the ``chief`` task, or
            ``worker`` 0 when the cluster has no chief; a single process is always the chief).
        task_type: ``chief``, ``worker``, ... or None outside a cluster.
        task_id: Index of this task within its type, or None outside a cluster.
        num_workers: Processes taking part in every step (1 outside a cluster).
    """

    is_chief: bool = True
    task_type: Optional[str] = None
    task_id: Optional[int] = None
    num_workers: int = 1

    @property
    def task(self) -> str:
        """``type:id``, or ``single`` outside a cluster (for messages and file names)."""
        return "single" if self.task_type is None else f"{self.task_type}:{self.task_id}"


def _check_tf_config() -> None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        # TensorFlow runs a one-worker cluster then; say so, since a forgotten TF_CONFIG would
        # otherwise train alone on every machine without a word.
        print("dsnn-train: note: --strategy multi_worker without TF_CONFIG: this process is a "
              "cluster of one worker", file=sys.stderr)
        return
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({err}); expected e.g. "
                            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                            '"task": {"type": "worker", "index": 0}}') from None
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict) \
            or not isinstance(value.get("task"), dict):
        raise StrategyError("TF_CONFIG must be a JSON object with a 'cluster' mapping (task type -> list of "
                            "host:port) and a 'task' mapping ({'type': ..., 'index': ...})")
    task = value["task"]
    addresses = value["cluster"].get(task.get("type"))
    index = task.get("index")
    if not isinstance(addresses, list) or not isinstance(index, int) or not 0 <= index < len(addresses):
        raise StrategyError(f"TF_CONFIG: task {task!r} is not in the cluster {value['cluster']!r} "
                            "(task.type must be a key of cluster and task.index an index into its list)")


def make_strategy(name: str = "default", tpu: Optional[str] = None):
    """Creates the named `tf.distribute.Strategy`.

    Call it before any other TensorFlow op in the process: ``multi_worker`` configures the
    collective ops at start-up and fails afterwards.

    Args:
        name: One of `STRATEGIES`. Defaults to "default".
        tpu: ``tpu`` only: the TPU's name or ``grpc://`` address for
            `tf.distribute.cluster_resolver.TPUClusterResolver`; None or "" lets the resolver find
            the local TPU (a TPU VM, Colab). Defaults to None.

    Returns:
        The strategy (``tf.distribute.get_strategy()`` for ``default``).

    Raises:
        StrategyError: an unknown name, ``tpu`` given without ``name="tpu"``, a malformed
            ``TF_CONFIG``, or (``tpu``) no TPU reachable.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
    if tpu and name != "tpu":
        raise StrategyError(f"--tpu {tpu!r} needs --strategy tpu (got --strategy {name})")
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        _check_tf_config()
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        except (RuntimeError, ValueError, tf.errors.OpError) as err:
            raise StrategyError(f"--strategy multi_worker: cannot start the worker "
                                f"({' '.join(str(err).split())[:300]})") from None
        _broadcast_narrow_ints_as_int32(strategy)
        return strategy
    where = f"--tpu {tpu!r}" if tpu else "the local TPU (no --tpu given)"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except Exception as err:  # noqa: BLE001 - the resolver raises ValueError, RuntimeError, OpError, ...
        raise StrategyError(f"--strategy tpu: no TPU reachable at {where} "
                            f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); "
                            "run on a TPU VM or pass --tpu with the TPU's name or grpc:// address") from None


def _broadcast_narrow_ints_as_int32(strategy) -> None:
    """Lets ``strategy`` create uint8/int8/int16/uint16 variables on more than one worker.

    `tf.distribute.MultiWorkerMirroredStrategy` sends every new variable's initial value from the
    chief to the other workers with ``CollectiveBcastSend``, whose kernel takes only bool, float,
    half, double, int32 and int64 (TensorFlow 2.21): creating the nested wrappers' uint8 level-code
    variables fails with "Value for attr 'T' of uint8 is not in the list of allowed values". The
    initial value is broadcast as int32 here and cast back, so the variables (and checkpoints) keep
    their dtype. It hooks the strategy's private initial-value function (the only place the dtype
    is chosen); on a TensorFlow without it nothing changes.
    """
    import tensorflow as tf

    extended = strategy.extended
    original = getattr(extended, "_get_variable_creator_initial_value", None)
    narrow = (tf.uint8, tf.int8, tf.uint16, tf.int16)
    if original is None:
        return

    def initial_value(replica_id, device, primary_var, **kwargs):
        dtype = kwargs.get("dtype")
        dtype = tf.as_dtype(dtype) if dtype is not None else None
        if dtype not in narrow:
            return original(replica_id=replica_id, device=device, primary_var=primary_var, **kwargs)
        value = kwargs["initial_value"]
        as_int32 = lambda: tf.cast(value() if callable(value) else value, tf.int32)  # noqa: E731
        result = original(replica_id=replica_id, device=device, primary_var=primary_var,
                          **{**kwargs, "initial_value": as_int32, "dtype": tf.int32})
        return (lambda: tf.cast(result(), dtype)) if callable(result) else tf.cast(result, dtype)

    extended._get_variable_creator_initial_value = initial_value


def worker_role(strategy) -> WorkerRole:
    """This process's `WorkerRole` under ``strategy`` (the chief unless a cluster says otherwise)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.TPUStrategy):   # one client process drives every TPU host
        return WorkerRole()
    return role_from_resolver(getattr(strategy, "cluster_resolver", None))


def role_from_resolver(resolver) -> WorkerRole:
    """The `WorkerRole` a `tf.distribute.cluster_resolver.ClusterResolver` (or None) describes.

    The chief is the ``chief`` task, or ``worker`` 0 when the cluster has no ``chief`` (TensorFlow's
    convention, as in its multi-worker tutorials); a TPU or a single process is its own chief.
    """
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if not task_type or task_type not in ("chief", "worker"):
        return WorkerRole()
    task_id = int(resolver.task_id or 0)
    cluster = resolver.cluster_spec().as_dict()
    workers = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    is_chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return WorkerRole(is_chief=is_chief, task_type=task_type, task_id=task_id, num_workers=max(workers, 1))


def input_options(strategy):
    """The `tf.distribute.InputOptions` the trainer's epochs are distributed with (None: TF's defaults).

    Under a `tf.distribute.MirroredStrategy` with several local replicas, TensorFlow's default
    input path is a multi-device iterator whose per-device iterators it creates itself, with
    tf.data's autotuner on (the options of our datasets do not reach them). Deleting such an iterator
    at the end of an epoch waits for its autotune thread's sleep, whose period doubles up to 60 s:
    measured on two logical CPUs, 12 s after an iterator lived 70 s (`bench/input_teardown.py`).
    There each replica gets its own pipeline instead (``PER_REPLICA``: the input function is
    called once per replica, with ``input_pipeline_id`` = the replica), and the batches stay on the
    host until the step reads them (``experimental_fetch_to_device=False``: with ``True`` TensorFlow
    would put a one-device multi-device iterator behind each replica again). Every pipeline still
    builds the same global batches and keeps its replica's rows (`split_global_batches`), so a step
    computes what it computed before. The cost: each replica parses every record and holds its own
    shuffle buffer (up to ``data.shuffle_buffer_mb`` each, so N replicas take up to N times that in
    host memory), where the worker's one pipeline held one.

    ``PER_REPLICA`` is MirroredStrategy-only in TensorFlow: a `MultiWorkerMirroredStrategy`
    worker with several GPUs keeps the multi-device iterator (and the stall; see
    docs/training.md). One device per worker, the default strategy and TPUs use None.

    Args:
        strategy: A `tf.distribute.Strategy`.

    Returns:
        A `tf.distribute.InputOptions`, or None for TensorFlow's defaults.
    """
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MirroredStrategy) and len(strategy.extended.worker_devices) > 1:
        return tf.distribute.InputOptions(
            experimental_replication_mode=tf.distribute.InputReplicationMode.PER_REPLICA,
            experimental_fetch_to_device=False)
    return None


def split_global_batches(dataset, num_replicas: int, first_replica: int = 0, local_replicas: int = 1):
    """Splits each global batch into the per-replica batches of this input pipeline.

    Replica ``r`` of ``num_replicas`` gets rows ``[r*B//N, (r+1)*B//N)`` of a global batch of
    ``B`` rows (the sizes differ by at most one; a replica's batch is empty when ``B < N``); the
    padded time and label lengths of the global batch are kept, so every row is computed exactly
    as in a one-replica run. Each output element also carries ``first_row`` (the replica's first
    row in the global batch) and ``global_batch`` (``B``), both int32 scalars, and, when the batch
    has ``num_frames``, ``global_min_frames`` (the global batch's shortest utterance, int32 scalar:
    what the level-switch loss cuts, the same on every replica).

    Args:
        dataset: A `tf.data.Dataset` of dicts of batched tensors (leading dimension: rows).
        num_replicas: N, replicas in sync over all workers.
        first_replica: Global index of this pipeline's first replica. Defaults to 0.
        local_replicas: Replicas this pipeline feeds; they take consecutive elements. Defaults to 1.

    Returns:
        A `tf.data.Dataset` with ``local_replicas`` elements per global batch, in replica order.

    Example:
        >>> per_replica = split_global_batches(global_batches, num_replicas=4, first_replica=2,
        ...                                    local_replicas=2)   # worker 1 of 2, 2 GPUs each
    """
    import tensorflow as tf

    if num_replicas < 1 or local_replicas < 1 or not 0 <= first_replica <= num_replicas - local_replicas:
        raise ValueError(f"bad replica split: num_replicas={num_replicas}, first_replica={first_replica}, "
                         f"local_replicas={local_replicas}")

    def rows_of(batch, replica):
        first_key = sorted(batch)[0]
        total = tf.shape(batch[first_key], out_type=tf.int32)[0]
        start = replica * total // num_replicas
        stop = (replica + 1) * total // num_replicas
        out = {key: value[start:stop] for key, value in batch.items()}
        out["first_row"] = start
        out["global_batch"] = total
        if "num_frames" in batch:
            out["global_min_frames"] = tf.cast(tf.reduce_min(batch["num_frames"]), tf.int32)
        return out

    if local_replicas == 1:
        return dataset.map(lambda batch: rows_of(batch, tf.constant(first_replica, tf.int32)))
    replicas = tf.range(first_replica, first_replica + local_replicas, dtype=tf.int32)
    return dataset.flat_map(
        lambda batch: tf.data.Dataset.from_tensor_slices(replicas).map(lambda r: rows_of(batch, r)))


def free_local_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on localhost now, for a local ``TF_CONFIG`` cluster (tests,
    benchmarks). The ports are released before returning: another process may take one meanwhile."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
