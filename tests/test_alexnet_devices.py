"""AlexNet(devices=...): the paper's two-GPU layout (section 3.2, Figure 2), run on two
logical CPU devices and checked against the one-device graph: the same numbers, each
column's ops on its device, the same variables and layer table, and a training step
that moves the weights as on one device.

tf.ConfigProto(device_count={'CPU': 2}) gives a tf.Session the devices /cpu:0 and
/cpu:1 on TF 1.15 and TF 2.x alike (graph mode; TF 2's virtual device configuration
needs an uninitialized eager runtime instead). Placement stays hard here: an op on a
device the session lacks would fail, not move.
"""
import glob
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import alexnet
import finetune
import weight_files
from conftest import random_layers

TWO_CPUS = ('/cpu:0', '/cpu:1')
COMPARED = ('conv1', 'norm1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv5', 'pool5',
            'fc6', 'fc7', 'fc8')
COLUMN_LAYERS = ('conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5',
                 'fc6', 'fc7', 'fc8')


def two_cpus():
    return tf.ConfigProto(device_count={'CPU': 2})


def images(batch, seed=1):
    return np.random.RandomState(seed).uniform(-120, 130, (batch, 227, 227, 3)).astype(np.float32)


def traced(session, fetches, feed):
    """session.run with a full trace; returns (values, {node name: devices it ran on})."""
    metadata = tf.RunMetadata()
    values = session.run(fetches, feed, run_metadata=metadata,
                         options=tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE))
    ran = {}
    for device in metadata.step_stats.dev_stats:
        # Only the kernels' own devices (TF 1.15 also lists its host's sends and receives).
        if device.device.endswith(('device:CPU:0', 'device:CPU:1')):
            for node in device.node_stats:
                ran.setdefault(node.node_name, set()).add(device.device[-1])
    return values, ran


def devices_under(ran, prefix):
    """The device numbers ('0', '1') that ran nodes named prefix..."""
    return set().union(*[devices for name, devices in ran.items() if name.startswith(prefix)])


def forward(devices, weights_path, batch, num_classes=1000, trace=False):
    """{layer: output} of the model built with `devices` on `batch` images, and the trace."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 227, 227, 3])
        model = alexnet.AlexNet(x, num_classes=num_classes, weights_path=weights_path,
                                devices=devices)
        outputs = {layer.name: layer.output for layer in model.layers}
        with tf.Session(config=two_cpus()) as session:
            model.load_initial_weights(session)
            fetches = [outputs[name] for name in COMPARED]
            if trace:
                values, ran = traced(session, fetches, {x: batch})
            else:
                values, ran = session.run(fetches, {x: batch}), None
    return dict(zip(COMPARED, values)), ran


@pytest.fixture(scope='module')
def one_device(bvlc_npy):
    return forward(None, str(bvlc_npy), images(3))[0]


@pytest.fixture(scope='module')
def two_devices(bvlc_npy):
    return forward(TWO_CPUS, str(bvlc_npy), images(3), trace=True)


def test_outputs_equal_the_one_device_graphs(one_device, two_devices):
    # Measured: bit-identical on the CPU (TF 1.15 and 2.21); allowed: float rounding.
    for name in COMPARED:
        want, got = one_device[name], two_devices[0][name]
        assert got.shape == want.shape, name
        scale = np.abs(want).max()
        assert scale > 0, name
        assert np.abs(got - want).max() <= 1e-6 * scale, name


def test_each_column_ran_on_its_device(two_devices):
    ran = two_devices[1]
    for layer in COLUMN_LAYERS:
        assert devices_under(ran, layer + '/column0/') == {'0'}, layer
        assert devices_under(ran, layer + '/column1/') == {'1'}, layer
    # conv2's two groups and fc6's two halves are the figure's two GPUs.
    for name in ('conv2/column0/', 'conv2/column1/', 'fc6/column0/', 'fc6/column1/'):
        assert [node for node in ran if node.startswith(name)], name
    # bvlc_alexnet's LRN reads both columns, on the first device.
    assert ran['norm1'] == ran['norm2'] == {'0'}


def test_variables_and_layer_table_are_the_one_device_graphs():
    layouts = {}
    for devices in (None, TWO_CPUS):
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, 227, 227, 3])
            model = alexnet.AlexNet(x, num_classes=7, devices=devices)
            layouts[devices] = (
                {v.name: v.shape.as_list() for v in tf.global_variables()},
                [v.name for v in tf.trainable_variables()],
                model.weight_shapes(),
                alexnet.layer_table(model))
    assert layouts[TWO_CPUS] == layouts[None]
    variables = layouts[TWO_CPUS][0]
    assert len(variables) == 16
    assert variables['conv1/weights:0'] == [11, 11, 3, 96]
    assert variables['conv2/weights:0'] == [5, 5, 48, 256]
    assert variables['fc8/weights:0'] == [4096, 7]


def test_dropout_masks_and_the_cached_head_are_the_one_device_graphs(bvlc_npy):
    """With dropout_seed (finetune.py's), both layouts drop the same units; head()
    (feature_cache.py's) computes fc8 from fc6 in both."""
    batch = images(2, seed=4)
    results = {}
    for devices in (None, TWO_CPUS):
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, 227, 227, 3])
            model = alexnet.AlexNet(x, weights_path=str(bvlc_npy), devices=devices,
                                    dropout_seed=tf.constant([5, 9], tf.int64))
            features = tf.placeholder(tf.float32, [None, 4096])
            head = model.head(features, 'fc7')
            with tf.Session(config=two_cpus()) as session:
                model.load_initial_weights(session)
                fc6, dropped = session.run([model.fc6, model.fc8],
                                           {x: batch, model.keep_prob: 0.5})
                results[devices] = (dropped, session.run(head, {features: fc6,
                                                                model.keep_prob: 0.5}))
    one, two = results[None], results[TWO_CPUS]
    np.testing.assert_allclose(two[0], one[0], rtol=0, atol=1e-6 * np.abs(one[0]).max())
    np.testing.assert_allclose(two[1], one[1], rtol=0, atol=1e-6 * np.abs(one[1]).max())
    np.testing.assert_allclose(one[1], one[0], rtol=0, atol=1e-6 * np.abs(one[0]).max())


def test_one_training_step_moves_every_layer_as_on_one_device(tmp_path):
    """finetune.py's loss and momentum step over all layers, on 7 classes (fc8 split
    4 + 3); the gradients of each column are computed on its device."""
    path = str(tmp_path / 'seven.npz')
    weight_files.save_npz(path, random_layers(num_classes=7, seed=2))
    batch, labels = images(2, seed=3), np.array([1, 6], np.int32)
    updates = {}
    for devices in (None, TWO_CPUS):
        with tf.Graph().as_default():
            x = tf.placeholder(tf.float32, [None, 227, 227, 3])
            model = alexnet.AlexNet(x, num_classes=7, weights_path=path, devices=devices)
            _, loss = finetune.loss_fn(model.fc8, tf.constant(labels), 0.0005,
                                       model.variables(biases=False))
            train_op, _ = finetune.training(loss, model.variables(), 0.01, 0.9,
                                            tf.train.get_or_create_global_step(),
                                            colocate=devices is not None)
            with tf.Session(config=two_cpus()) as session:
                session.run(tf.global_variables_initializer())
                model.load_initial_weights(session)
                before = model.read_weights(session)
                _, ran = traced(session, train_op, {x: batch})
                after = model.read_weights(session)
        updates[devices] = {(layer, part): after[layer][part] - before[layer][part]
                            for layer in alexnet.LAYER_NAMES for part in (0, 1)}
    for key, want in updates[None].items():
        scale = np.abs(want).max()
        assert scale > 0, key                       # every layer learns
        # Measured: 3.3e-6 (conv1-fc6: gradients summed over the columns in another order).
        assert np.abs(updates[TWO_CPUS][key] - want).max() <= 2e-5 * scale, key
    for layer in ('conv2', 'conv3', 'fc6'):
        assert devices_under(ran, 'gradients/%s/column0/' % layer) == {'0'}, layer
        assert devices_under(ran, 'gradients/%s/column1/' % layer) == {'1'}, layer


def test_devices_must_be_two(graph):
    x = tf.placeholder(tf.float32, [None, 227, 227, 3])
    for devices in (('/gpu:0',), '/gpu:0,/gpu:1', ('/gpu:0', '/gpu:1', '/gpu:2')):
        with pytest.raises(ValueError, match='two devices'):
            alexnet.AlexNet(x, devices=devices)


def test_main_writes_the_two_column_graph(tmp_path, capsys):
    assert alexnet.main(['--num-classes', '2']) == 0
    one_device = capsys.readouterr().out
    assert alexnet.main(['--num-classes', '2', '--devices', '/gpu:0,/gpu:1',
                         '--graph-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(one_device)        # the same table
    assert 'column 1 on /gpu:1' in out and 'Color: Device' in out
    events = glob.glob(os.path.join(str(tmp_path), 'events.out.tfevents*'))
    graph_def = tf.GraphDef.FromString(
        next(e for e in tf.train.summary_iterator(events[0]) if e.graph_def).graph_def)
    device = {node.name: node.device for node in graph_def.node}
    assert device['conv1/column0/Conv2D'] == '/device:GPU:0'
    assert device['conv1/column1/Conv2D'] == '/device:GPU:1'
    assert device['fc6/column1/xw_plus_b/MatMul'] == '/device:GPU:1'
    assert device['norm1'] == device['conv1/split_weights'] == '/device:GPU:0'
    assert device['conv1/weights'] == ''      # where TensorFlow places it


@pytest.mark.parametrize('argv, message', [
    (['--devices', '/gpu:0'], "give two devices, one per column, e.g. /gpu:0,/gpu:1; not '/gpu:0'"),
    (['--devices', 'gpu0,gpu1'], "'gpu0' is not a device name"),
    (['--model-parallel', '/gpu:0,'], 'give two devices'),
])
def test_bad_devices_are_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        alexnet.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith('error: ') and message in err and err.count('\n') == 1


def test_finetune_takes_model_parallel(capsys):
    assert finetune.parse_args(['--model-parallel', '/gpu:0, /gpu:1']).model_parallel == (
        '/gpu:0', '/gpu:1')
    assert finetune.parse_args([]).model_parallel is None
    with pytest.raises(SystemExit):
        finetune.parse_args(['--model-parallel', '/gpu:0,/gpu:x'])
    assert "'/gpu:x' is not a device name" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_model_parallel_runs_without_those_devices(tmp_path, capsys):
    """--model-parallel /gpu:0,/gpu:1 on a machine without GPUs: soft placement runs it,
    and the run's graph holds the two columns."""
    from test_finetune import make_images
    data = make_images(str(tmp_path / 'data'), per_class=3)
    run = tmp_path / 'run'
    assert finetune.main(['--data', data, '--run', str(run), '--weights', 'none',
                          '--train-layers', 'fc7,fc8', '--batch-size', '2', '--epochs', '1',
                          '--max-steps', '1', '--val-fraction', '0.34', '--no-progress',
                          '--keep-checkpoints', '1', '--model-parallel', '/gpu:0,/gpu:1']) == 0
    assert 'epoch 1/1: train loss' in capsys.readouterr().out
    events = glob.glob(str(run / 'train' / 'events.out.tfevents*'))
    graph_def = tf.GraphDef.FromString(
        next(e for e in tf.train.summary_iterator(events[0]) if e.graph_def).graph_def)
    device = {node.name: node.device for node in graph_def.node}
    assert device['conv2/column1/Conv2D'] == '/device:GPU:1'
    assert any(name.startswith('train/gradients/fc7/column1/') and dev == '/device:GPU:1'
               for name, dev in device.items())
