"""Data parallelism: which tf.distribute strategy trains, on which devices, with which session.

The paper split one network across two GPUs, half of the kernels on each
(section 3.2: model parallelism). Today's usual way to use many GPUs is data
parallelism: every device holds a whole replica of the network, each replica
computes the gradient of its share of the batch, and an all-reduce sums the
shares before one identical update everywhere (synchronous SGD). The batch of
--batch-size images is the global batch, split across the replicas, so the
updates are those of one device running the whole batch.

    setup = distribution.choose(devices=2)        # before the graph is built
    with tf.Graph().as_default():
        with setup.strategy.scope():
            ...variables...
            outputs = distribution.run(setup.strategy, replica_fn, args=(images, labels))
        with setup.session() as session:
            ...

What `choose` picks:

* TF_CONFIG naming two or more workers (one process per machine, each told its
  own index): tf.distribute.experimental.MultiWorkerMirroredStrategy, collective
  all-reduce over gRPC; every worker trains on all the GPUs it sees
  (CUDA_VISIBLE_DEVICES chooses them), or on its CPU. The session runs on this
  worker's tf.distribute.Server. Worker 0 (or the task of type 'chief') is the
  chief, the one that writes.
* devices N > 1 on one machine: tf.distribute.MirroredStrategy over the first N
  GPUs; on a machine without GPUs, over N logical CPU devices of the session
  (ConfigProto device_count): the same graph and all-reduce, for trying them out,
  not for speed (the devices share the same cores).
* otherwise: no strategy (TensorFlow's default one, one replica): the graph as a
  single device runs it, exactly as without this module.

TensorFlow 1.15 and 2.x name one method differently: a strategy runs a function
per replica with experimental_run_v2 in 1.15 and run in 2.x. `run` below is the
one place that knows.
"""
from __future__ import annotations

import collections
import json
import os

import tensorflow.compat.v1 as tf

TF_CONFIG = 'TF_CONFIG'


class DistributionError(ValueError):
    """Devices or a TF_CONFIG that cannot be used (the message says what to pass)."""


# What a run needs to know: the strategy, how many replicas share a batch (in all,
# and on this worker, whose first is replica first_replica of all), whether this
# process writes the run folder, and how to open its session.
Setup = collections.namedtuple(
    'Setup', 'strategy replicas local_replicas first_replica is_chief config target describe')


def read_tf_config(environ=None):
    """The cluster of the TF_CONFIG variable: (workers [host:port], this task's
    index among them, is chief), or None without TF_CONFIG.

    The workers list is the 'chief' job (if any) followed by the 'worker' job.
    Raises:
      DistributionError: TF_CONFIG is not the JSON TensorFlow expects.
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, '').strip()
    if not text:
        return None
    example = ('e.g. {"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
               '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(text)
        cluster, task = config['cluster'], config['task']
        chiefs, workers = list(cluster.get('chief', [])), list(cluster.get('worker', []))
        kind, index = task['type'], int(task['index'])
        jobs = {'chief': chiefs, 'worker': workers}
        if kind not in jobs or not 0 <= index < len(jobs[kind]):
            raise ValueError('task %s %d is not in the cluster' % (kind, index))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DistributionError('%s is not a usable TF_CONFIG (%s); %s'
                                % (text[:200], err, example)) from None
    position = index if kind == 'chief' else len(chiefs) + index
    return chiefs + workers, position, position == 0


def choose(devices=None, environ=None):
    """The strategy for `devices` replicas on this machine, or for TF_CONFIG's cluster.

    Args:
      devices: replicas on this machine (GPUs, else logical CPU devices); None: 1,
        or with a TF_CONFIG cluster all of this worker's GPUs.
      environ: the environment to read TF_CONFIG from (default os.environ).
    Returns:
      Setup. Call inside the graph the strategy will build (tf.Graph().as_default()).
    Raises:
      DistributionError: more GPUs asked for than there are, or a bad TF_CONFIG.
    """
    cluster = read_tf_config(environ)
    if cluster and len(cluster[0]) > 1:
        return _multi_worker(cluster, devices)
    devices = devices or 1
    if devices == 1:
        return one_device()
    gpus = tf.config.experimental.list_physical_devices('GPU')
    if gpus:
        if devices > len(gpus):
            raise DistributionError('--devices %d, but this machine has %d GPU%s; use at most %d'
                                    % (devices, len(gpus), '' if len(gpus) == 1 else 's',
                                       len(gpus)))
        names = ['/gpu:%d' % i for i in range(devices)]
        config = tf.ConfigProto(allow_soft_placement=True)
        describe = '%d GPUs (MirroredStrategy)' % devices
    else:
        names = ['/cpu:%d' % i for i in range(devices)]
        config = tf.ConfigProto(device_count={'CPU': devices}, allow_soft_placement=True)
        describe = ('%d logical CPU devices (MirroredStrategy; no GPU here: they share the '
                    'same cores, so this shows the method, not a speed-up)' % devices)
    strategy = tf.distribute.MirroredStrategy(names)
    return Setup(strategy, devices, devices, 0, True, config, '', describe)


def one_device():
    """No strategy: TensorFlow's default one, one replica, a plain session."""
    return Setup(tf.distribute.get_strategy(), 1, 1, 0, True, None, '', 'one device')


def _multi_worker(cluster, devices):
    workers, index, is_chief = cluster
    gpus = tf.config.experimental.list_physical_devices('GPU')
    if devices is not None and devices != max(len(gpus), 1):
        raise DistributionError(
            'with TF_CONFIG every worker trains on all the GPUs it sees (%d here); drop '
            '--devices, or choose them with CUDA_VISIBLE_DEVICES' % len(gpus))
    strategy = tf.distribute.experimental.MultiWorkerMirroredStrategy()
    config = strategy.update_config_proto(tf.ConfigProto(allow_soft_placement=True))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    # This worker's end of the collective all-reduce; it lives as long as the process.
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, config=config, start=True)
    describe = ('worker %d of %d (%s), %d replicas in all (MultiWorkerMirroredStrategy)'
                % (index, len(workers), 'chief' if is_chief else 'not the chief',
                   strategy.num_replicas_in_sync))
    local = len(strategy.extended.worker_devices)
    return Setup(strategy, strategy.num_replicas_in_sync, local, index * local, is_chief, config,
                 server.target, describe)


def session(setup):
    """A tf.Session for the setup's devices (a plain one for one device)."""
    return tf.Session(setup.target, config=setup.config)


# --- The per-replica calls, under both TensorFlow versions --------------------------

def run(strategy, fn, args=()):
    """fn(*args) once per replica: strategy.run in TF 2.x, experimental_run_v2 in 1.15."""
    if not tf.distribute.has_strategy():
        # TensorFlow's default strategy (one device): fn on the graph as it is. (TF 1.15's
        # experimental_run_v2 would add a stray constant, the replica's id, to the graph.)
        return fn(*args)
    method = getattr(strategy, 'run', None) or strategy.experimental_run_v2
    return method(fn, args=args)


def replica_id(setup):
    """This replica's index among all replicas of all workers (0 without a strategy).

    TF 1.15's MultiWorkerMirroredStrategy numbers the replicas of every worker from
    0 (in graph mode), TF 2.x across all workers; modulo the worker's replicas both
    give the index on this worker, and its first replica's index comes from TF_CONFIG.
    """
    index = tf.distribute.get_replica_context().replica_id_in_sync_group
    return setup.first_replica + index % setup.local_replicas


def total(strategy, per_replica):
    """The sum of a per-replica value over all replicas (an all-reduce across workers)."""
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


def first_replica(strategy, per_replica):
    """This worker's first replica's value of a per-replica result."""
    return strategy.experimental_local_results(per_replica)[0]


def rows_of_replica(batch_size, replica, replicas):
    """(first row, end row) of one replica's share of a batch of batch_size rows:
    contiguous, in replica order, sizes differing by at most one."""
    return batch_size * replica // replicas, batch_size * (replica + 1) // replicas
