"""Distribution helpers: strategy factory, cross-replica gather and replica bookkeeping.

Loss convention (fix of reference bug 3, spec §11): every method returns *per-example* losses
and the runner reduces them with ``tf.nn.compute_average_loss(..., global_batch_size=...)``;
Keras 3 optimizers then SUM the per-replica gradients, so the update equals the update of one
replica seeing the whole global batch. The L2 term is divided by the number of replicas
(``tf.nn.scale_regularization_loss``) for the same reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import tensorflow as tf

from deep_representation_one_class.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker")


def check_tf_config(raw: str | None) -> dict:
    """Parses and checks ``TF_CONFIG`` for ``--strategy=multi_worker``.

    Args:
      raw: the variable's value, e.g. ``{"cluster": {"worker": ["10.0.0.1:2222",
        "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 0}}``; None when unset.

    Returns:
      The parsed dict.

    Raises:
      ConfigError: unset, not JSON, or the task is not one of the cluster's chief/workers.
    """
    hint = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
        '"task": {"type": "worker", "index": 0}}\' (docs/operations.md)'
    )
    if not raw:
        raise ConfigError(
            f"--strategy=multi_worker needs the TF_CONFIG environment variable; {hint}"
        )
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e.msg}); {hint}") from None
    cluster = conf.get("cluster") if isinstance(conf, dict) else None
    task = conf.get("task") if isinstance(conf, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise ConfigError(f"TF_CONFIG needs a 'cluster' and a 'task' entry; {hint}")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in ("chief", "worker"):
        raise ConfigError(f"TF_CONFIG task type must be 'chief' or 'worker', got {kind!r}")
    members = cluster.get(kind)
    if not isinstance(members, list) or not isinstance(index, int) or not 0 <= index < len(members):
        raise ConfigError(
            f"TF_CONFIG task {kind}:{index} is not in the cluster {sorted(cluster)}; {hint}"
        )
    return conf


def make_strategy(name: str = "mirrored") -> tf.distribute.Strategy:
    """Creates the distribution strategy.

    ``mirrored`` uses every visible GPU (or the CPU as one replica, or the logical CPU devices
    when several were configured, as the tests do); ``multi_worker`` reads ``TF_CONFIG``;
    ``default`` is the no-op strategy.
    """
    raw = os.environ.get("TF_CONFIG")
    if raw and name != "multi_worker":
        # TensorFlow parses TF_CONFIG for every strategy and fails with a bare JSONDecodeError.
        try:
            json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"the TF_CONFIG environment variable is not valid JSON ({e.msg}); fix it, or "
                "unset it for a run on one machine"
            ) from None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        check_tf_config(os.environ.get("TF_CONFIG"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name != "mirrored":
        raise ConfigError(f"unknown strategy '{name}'; valid: {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in cpus])


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Number of worker processes taking part in ``strategy`` (1 unless multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return max(1, sum(len(jobs.get(job, [])) for job in ("chief", "worker")))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (summary, TensorBoard, checkpoints).

    The chief is task ``chief:0`` when the cluster has one, else ``worker:0`` (the usual
    TF_CONFIG conventions); single-process strategies are always the chief.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = bool(resolver.cluster_spec().as_dict().get("chief"))
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 and not has_chief


def worker_name(strategy: tf.distribute.Strategy) -> str:
    """'worker:1' style name of this process in its cluster ('local' when single-process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return "local"
    return f"{resolver.task_type}:{int(resolver.task_id or 0)}"


def any_worker_fn(strategy: tf.distribute.Strategy) -> Callable[[bool], bool]:
    """Returns ``f(flag) -> bool``: True when ``flag`` is True on at least one worker.

    With several workers ``f`` is a collective (an all-reduce), so every worker must call it
    the same number of times, at the same points of the run; it then doubles as a barrier.
    With one worker it is the identity and costs nothing.
    """
    if num_workers(strategy) == 1:
        return bool

    @tf.function
    def total(x):
        # float32: the CPU collectives of this TensorFlow version reject int64 tensors.
        per_replica = strategy.run(lambda: tf.identity(x))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda flag: bool(total(tf.constant(1.0 if flag else 0.0)).numpy() > 0)


def replica_info() -> tuple[tf.Tensor, int]:
    """Returns (replica id as int32 tensor, number of replicas in sync) in replica context."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None:
        return tf.constant(0, tf.int32), 1
    rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return rid, ctx.num_replicas_in_sync


def all_gather(x: tf.Tensor) -> tf.Tensor:
    """Concatenates ``x`` [B_r, ...] from every replica along axis 0 ([R*B_r, ...]).

    Differentiable: the gradient flowing back to this replica's slice includes the
    contributions of every replica's loss (the all-gather's gradient is an all-reduce of the
    incoming gradient followed by a slice), which is what the contrastive negatives need.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return x
    return ctx.all_gather(x, axis=0)
