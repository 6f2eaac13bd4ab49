"""distribution.py, and finetune.py data parallel: two logical CPU devices in one process,
and two worker processes on 127.0.0.1, each against the same run on one device.

No GPU here: the devices are the logical CPU devices of a session (ConfigProto
device_count), and the machines are local processes; the graph, the all-reduce and the
checkpoints are those a GPU box or a cluster runs.
"""
import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import distribution
import finetune
import run_folder
import weight_files
from conftest import exit_error
from test_finetune import make_images, pretrained  # noqa: F401 (a fixture: stand-in weights)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tf_config(ports, index):
    return json.dumps({'cluster': {'worker': ['127.0.0.1:%d' % p for p in ports]},
                       'task': {'type': 'worker', 'index': index}})


# --- Choosing the strategy -------------------------------------------------------------

def test_tf_config_names_the_workers_and_the_chief():
    ports = (2222, 2223)
    assert distribution.read_tf_config({}) is None
    assert distribution.read_tf_config({'TF_CONFIG': tf_config(ports, 1)}) == (
        ['127.0.0.1:2222', '127.0.0.1:2223'], 1, False)
    assert distribution.read_tf_config({'TF_CONFIG': tf_config(ports, 0)})[2]
    with_chief = json.dumps({'cluster': {'chief': ['a:1'], 'worker': ['b:1', 'c:1']},
                             'task': {'type': 'worker', 'index': 0}})
    assert distribution.read_tf_config({'TF_CONFIG': with_chief}) == (['a:1', 'b:1', 'c:1'],
                                                                      1, False)


@pytest.mark.parametrize('text, message', [
    ('{"cluster": ', 'is not a usable TF_CONFIG'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
     'task worker 3 is not in the cluster'),
    ('{"cluster": {"worker": ["a:1"]}}', "'task'"),
])
def test_a_bad_tf_config_says_what_is_expected(text, message):
    with pytest.raises(distribution.DistributionError) as caught:
        distribution.read_tf_config({'TF_CONFIG': text})
    assert message in str(caught.value) and '"cluster": {"worker"' in str(caught.value)


@pytest.mark.parametrize('batch', range(0, 10))
@pytest.mark.parametrize('replicas', (1, 2, 3, 4))
def test_the_replicas_share_a_batch_row_by_row(batch, replicas):
    rows = [distribution.rows_of_replica(batch, r, replicas) for r in range(replicas)]
    assert [i for first, end in rows for i in range(first, end)] == list(range(batch))
    sizes = [end - first for first, end in rows]
    assert max(sizes) - min(sizes) <= 1


def test_one_device_is_the_plain_session(graph):
    setup = distribution.choose(None, environ={})
    assert (setup.replicas, setup.config, setup.target, setup.is_chief) == (1, None, '', True)
    assert setup.strategy is tf.distribute.get_strategy()


def test_two_devices_without_gpus_are_two_logical_cpus(graph):
    setup = distribution.choose(2, environ={})
    assert setup.replicas == 2 and 'logical CPU' in setup.describe
    with distribution.session(setup) as session:
        names = [device.name for device in session.list_devices()]
    assert sum(name.endswith('CPU:1') for name in names) == 1, names


def test_more_gpus_than_the_machine_has_is_refused(graph, monkeypatch):
    monkeypatch.setattr(tf.config.experimental, 'list_physical_devices',
                        lambda kind=None: ['gpu0', 'gpu1'])
    with pytest.raises(distribution.DistributionError, match='--devices 4, but this machine '
                                                             'has 2 GPUs; use at most 2'):
        distribution.choose(4, environ={})


def test_a_cluster_run_needs_a_run_folder(monkeypatch, tmp_path):
    monkeypatch.setenv('TF_CONFIG', tf_config((1, 2), 1))
    message = exit_error(finetune.main, ['--data', str(tmp_path), '--no-progress'])
    assert 'with TF_CONFIG (2 workers) pass --run' in message


# --- The training graph on two devices ------------------------------------------------

# Two devices add the replicas' shares of the loss and gradients in another order than
# one device sums the whole batch (float32 rounding, about 1e-7 relative per addition);
# a few steps of SGD carry that to about 1e-6. The dropout masks, crops and order are the
# same bits on both. A wrong share (the whole batch's mean on each replica, one replica's
# gradient, masks drawn per replica) is off by far more than 1e-4.
TOLERANCE = dict(rtol=1e-4, atol=1e-6)


def two_steps(items, weights, devices):
    """Losses and trained weights of 2 Trainer steps, batch 3 (2 devices: 1 + 2 rows),
    dropout on, and the weights of the frozen layers."""
    recipe = finetune.Recipe(0.01, 0.9, 0.0005, 0.5, 3)
    with tf.Graph().as_default():
        setup = distribution.choose(devices, environ={})
        trainer = finetune.Trainer(items, [], 2, recipe, ['fc7', 'fc8'], [], weights, seed=1,
                                   setup=setup)
        with distribution.session(setup) as session:
            session.run(trainer.init)
            trainer.model.load_initial_weights(session)
            session.run(trainer.train_iterator.initializer, {trainer.epoch_to_read: 0})
            handle = session.run(trainer.train_iterator.string_handle())
            losses = [session.run([trainer.train_op, trainer.cross_entropy],
                                  {trainer.handle: handle, trainer.keep_prob: 0.5,
                                   trainer.dropout_key: [1, step]})[1] for step in range(2)]
            return losses, trainer.model.read_weights(session)


def test_a_step_on_two_devices_is_a_step_on_one(tmp_path, pretrained):
    """The replicas' shares add up to one device's step: the same losses and updates
    (see TOLERANCE), and the frozen layers keep their bits on every device."""
    data = make_images(str(tmp_path / 'data'), per_class=3)
    items = [(os.path.join(data, name, '%d.jpg' % i), label)
             for label, name in enumerate(('cat', 'dog')) for i in range(3)]
    one_losses, one = two_steps(items, pretrained, 1)
    two_losses, two = two_steps(items, pretrained, 2)
    np.testing.assert_allclose(two_losses, one_losses, **TOLERANCE)
    assert one_losses[1] != pytest.approx(one_losses[0], rel=1e-3)     # the first step moved
    before = weight_files.load_weights(pretrained)
    for layer in one:
        for part in (0, 1):
            np.testing.assert_allclose(two[layer][part], one[layer][part], err_msg=layer,
                                       **TOLERANCE)
            if layer not in ('fc7', 'fc8'):
                np.testing.assert_array_equal(two[layer][part], before[layer][part], layer)


# --- Whole runs -------------------------------------------------------------------------

def train(data, run_dir, *extra):
    return finetune.main(['--data', data, '--run', str(run_dir), '--val-fraction', '0.25',
                          '--no-progress', '--keep-checkpoints', '1', '--summary-every', '1']
                         + list(extra))


def metrics(run_dir):
    with open(os.path.join(str(run_dir), 'metrics.csv'), newline='') as f:
        return list(csv.DictReader(f))


def checkpoint_variables(run_dir):
    prefix = run_folder.checkpoint_prefixes(os.path.join(str(run_dir), 'checkpoints'))[0]
    return dict(tf.train.list_variables(prefix))




@pytest.mark.slow
def test_two_devices_train_as_one_and_resume(tmp_path, pretrained):
    """Batch 5 on 2 replicas (2 + 3 rows; the epoch's last batch 1 + 2), dropout on:
    the loss curve and weights of one device, the same checkpoint, and a resume."""
    data = make_images(str(tmp_path / 'data'))
    options = ('--weights', pretrained, '--train-layers', 'fc7,fc8', '--batch-size', '5')
    assert train(data, tmp_path / 'one', '--epochs', '2', *options) == 0
    assert train(data, tmp_path / 'two', '--epochs', '2', '--devices', '2', *options) == 0
    one, two = metrics(tmp_path / 'one'), metrics(tmp_path / 'two')
    for column in ('train_loss', 'val_loss', 'train_accuracy', 'val_accuracy'):
        np.testing.assert_allclose([float(r[column]) for r in two],
                                   [float(r[column]) for r in one], err_msg=column, **TOLERANCE)
    assert float(one[0]['train_loss']) != pytest.approx(float(one[1]['train_loss']), rel=1e-3)
    want = weight_files.load_weights(str(tmp_path / 'one' / 'weights.npz'))
    got = weight_files.load_weights(str(tmp_path / 'two' / 'weights.npz'))
    for layer in ('fc7', 'fc8'):
        for part in (0, 1):
            np.testing.assert_allclose(got[layer][part], want[layer][part], err_msg=layer,
                                       **TOLERANCE)
    # Every variable once, by its one-device name: export and evaluation read it alike.
    assert checkpoint_variables(tmp_path / 'two') == checkpoint_variables(tmp_path / 'one')
    # Resumed on two devices, a run ends where an uninterrupted two-device run does.
    assert train(data, tmp_path / 'parts', '--epochs', '1', '--devices', '2', *options) == 0
    assert train(data, tmp_path / 'parts', '--epochs', '2', '--devices', '2', '--resume',
                 *options) == 0
    parts = weight_files.load_weights(str(tmp_path / 'parts' / 'weights.npz'))
    for layer in ('fc7', 'fc8'):
        for part in (0, 1):
            np.testing.assert_array_equal(parts[layer][part], got[layer][part], layer)


@pytest.mark.slow
def test_cached_features_on_two_devices(tmp_path, pretrained, capsys):
    data = make_images(str(tmp_path / 'data'))
    options = ('--weights', pretrained, '--train-layers', 'fc7,fc8', '--batch-size', '4',
               '--cache-features', '--cache-views', '2')
    assert train(data, tmp_path / 'one', '--epochs', '2', *options) == 0
    assert train(data, tmp_path / 'two', '--epochs', '2', '--devices', '2', *options) == 0
    out = capsys.readouterr().out
    assert 'feature cache built in' in out and 'feature cache reused' in out
    assert 'data parallel: 2 logical CPU devices' in out
    np.testing.assert_allclose([float(r['train_loss']) for r in metrics(tmp_path / 'two')],
                               [float(r['train_loss']) for r in metrics(tmp_path / 'one')],
                               **TOLERANCE)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_train_one_model(tmp_path, pretrained):
    """Two processes, TF_CONFIG each, all-reduce over gRPC on 127.0.0.1: the same weights
    in both, the chief's run folder only, and the curve of two devices in one process."""
    data = make_images(str(tmp_path / 'data'))
    run_dir = tmp_path / 'cluster'
    options = ['--data', data, '--run', str(run_dir), '--val-fraction', '0.25',
               '--no-progress', '--keep-checkpoints', '1', '--weights', pretrained,
               '--train-layers', 'fc8', '--batch-size', '4', '--epochs', '2']
    ports = free_ports(2)
    workers = []
    for index in (0, 1):
        env = dict(os.environ, TF_CONFIG=tf_config(ports, index), TF_CPP_MIN_LOG_LEVEL='2')
        log = open(str(tmp_path / ('worker%d.log' % index)), 'w+')
        workers.append((subprocess.Popen([sys.executable, os.path.join(REPO, 'finetune.py')]
                                         + options, cwd=str(tmp_path), env=env, stdout=log,
                                         stderr=subprocess.STDOUT), log))
    outputs = []
    for process, log in workers:
        try:
            code = process.wait(timeout=900)
        finally:
            if process.poll() is None:
                process.kill()
        log.seek(0)
        outputs.append(log.read())
        log.close()
        assert code == 0, outputs[-1][-3000:]
    digests = [line.split('digest ')[1] for out in outputs for line in out.splitlines()
               if 'trained weights digest' in line]
    assert len(digests) == 2 and digests[0] == digests[1], outputs
    assert 'worker 0 of 2 (chief)' in outputs[0] and 'worker 1 of 2 (not the chief)' in outputs[1]
    # The chief wrote the run; the other worker left nothing beside it.
    assert run_folder.checkpoint_prefixes(str(run_dir / 'checkpoints'))
    assert (run_dir / 'weights.npz').exists() and len(metrics(run_dir)) == 2
    assert sorted(os.listdir(str(tmp_path))) == ['.scan-cache', 'cluster', 'data',
                                                 'worker0.log', 'worker1.log']
    # Together they trained what two replicas in one process train.
    assert train(data, tmp_path / 'local', '--weights', pretrained, '--train-layers', 'fc8',
                 '--batch-size', '4', '--epochs', '2', '--devices', '2') == 0
    np.testing.assert_allclose([float(r['train_loss']) for r in metrics(run_dir)],
                               [float(r['train_loss']) for r in metrics(tmp_path / 'local')],
                               **TOLERANCE)
