"""AlexNet graph: shapes, variable names, loading, the layer table, and the numbers
against an independent NumPy forward pass of Caffe's bvlc_alexnet."""
import glob
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import alexnet
import inference
import weight_files

EXPECTED_VARIABLES = {'%s/%s:0' % (layer, part) for layer in alexnet.LAYER_NAMES
                      for part in ('weights', 'biases')}


def build(num_classes=1000, skip_layer=(), weights_path=None):
    x = tf.placeholder(tf.float32, [None, 227, 227, 3])
    kwargs = {'weights_path': weights_path} if weights_path else {}
    return alexnet.AlexNet(x, num_classes=num_classes, skip_layer=skip_layer, **kwargs)


# --- An independent NumPy AlexNet, written from Caffe's layer definitions ---

def np_conv(x, weights, biases, stride, pad, groups):
    """Caffe convolution on [N, H, W, C] with zero padding `pad`, then ReLU."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k = weights.shape[0]
    outputs = []
    for x_part, w_part in zip(np.split(x, groups, axis=3), np.split(weights, groups, axis=3)):
        windows = np.lib.stride_tricks.sliding_window_view(x_part, (k, k), axis=(1, 2))
        windows = windows[:, ::stride, ::stride]              # [N, OH, OW, C, k, k]
        outputs.append(np.einsum('nhwcij,ijcf->nhwf', windows, w_part, optimize=True))
    return np.maximum(np.concatenate(outputs, axis=3) + biases, 0)


def np_lrn(x, local_size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe LRN across channels: x / (k + alpha/n * sum of squares of n neighbours)^beta."""
    squares = np.pad(x ** 2, ((0, 0), (0, 0), (0, 0), (local_size // 2, local_size // 2)))
    total = sum(squares[..., i:i + x.shape[3]] for i in range(local_size))
    return x / (k + alpha / local_size * total) ** beta


def np_max_pool(x, size=3, stride=2):
    windows = np.lib.stride_tricks.sliding_window_view(x, (size, size), axis=(1, 2))
    return windows[:, ::stride, ::stride].max(axis=(-1, -2))


def np_alexnet(x, layers):
    w = {name: (W.astype(np.float64), b.astype(np.float64)) for name, (W, b) in layers.items()}
    out = {}
    out['conv1'] = np_conv(x, *w['conv1'], stride=4, pad=0, groups=1)
    pool1 = np_max_pool(np_lrn(out['conv1']))
    conv2 = np_conv(pool1, *w['conv2'], stride=1, pad=2, groups=2)
    out['pool2'] = np_max_pool(np_lrn(conv2))
    conv3 = np_conv(out['pool2'], *w['conv3'], stride=1, pad=1, groups=1)
    conv4 = np_conv(conv3, *w['conv4'], stride=1, pad=1, groups=2)
    out['conv5'] = np_conv(conv4, *w['conv5'], stride=1, pad=1, groups=2)
    flat = np_max_pool(out['conv5']).reshape(len(x), -1)
    fc6 = np.maximum(flat @ w['fc6'][0] + w['fc6'][1], 0)
    fc7 = np.maximum(fc6 @ w['fc7'][0] + w['fc7'][1], 0)
    out['fc8'] = fc7 @ w['fc8'][0] + w['fc8'][1]
    return out


@pytest.fixture(params=['one conv2d', 'a conv2d per group'])
def conv_path(request, monkeypatch):
    """Both ways conv_groups convolves the groups; one op needs oneDNN's kernels."""
    if request.param == 'one conv2d':
        if not alexnet.onednn_cpu():
            pytest.skip("this TensorFlow's CPU kernels take no grouped filter (not oneDNN)")
    else:
        monkeypatch.setattr(alexnet, 'onednn_cpu', lambda: False)
    return request.param


def test_forward_pass_matches_numpy_reference(graph, bvlc_npy, bvlc_layers, conv_path):
    rng = np.random.RandomState(1)
    images = rng.uniform(-120, 130, size=(2, 227, 227, 3)).astype(np.float32)
    model = build(weights_path=str(bvlc_npy))
    with tf.Session() as session:
        model.load_initial_weights(session)
        got = dict(zip(('conv1', 'pool2', 'conv5', 'fc8'), session.run(
            [model.conv1, model.pool2, model.conv5, model.fc8], {model.x: images})))
    want = np_alexnet(images.astype(np.float64), bvlc_layers)
    assert got['conv1'].shape == (2, 55, 55, 96)
    assert got['pool2'].shape == (2, 13, 13, 256)
    assert got['conv5'].shape == (2, 13, 13, 256)
    assert got['fc8'].shape == (2, 1000)
    for name in got:
        scale = np.abs(want[name]).max()
        assert scale > 0, name
        relative = np.abs(got[name] - want[name]).max() / scale
        assert relative < 1e-4, (name, relative)



# --- LRN: alexnet.lrn against TensorFlow's op and Caffe's formula ---

def relu_activations(shape, seed=0):
    """Values like conv1's and conv2's ReLU outputs: half zeros, the rest up to a few
    hundred, where alpha/n * sum(a^2) is about 1 and the normalization matters."""
    rng = np.random.RandomState(seed)
    return np.maximum(rng.standard_normal(shape) * 100, 0).astype(np.float32)


@pytest.mark.parametrize('shape', [[2, 6, 5, 96], [2, 4, 3, 256], [3, 2, 3, 20], [2, 2, 2, 7]],
                         ids=['norm1-96', 'norm2-256', '20-channels', '7-channels'])
def test_lrn_equals_tensorflow_op_and_caffe_formula(graph, shape):
    x = relu_activations(shape)
    assert 200 < x.max() < 600
    ours = alexnet.lrn(tf.constant(x), name='norm1')
    theirs = tf.nn.local_response_normalization(
        tf.constant(x), depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75)
    with tf.Session() as session:
        got, tf_op = session.run([ours, theirs])
    caffe = np_lrn(x.astype(np.float64))              # alpha 1e-4 over n = 5, beta 0.75, k 1
    assert ours.op.name == 'norm1' and got.shape == x.shape
    # Outputs go up to about 140, where one float32 step is 1.5e-5: relative 1e-5 is a few
    # roundings. The first and last 2 channels have shorter windows: checked on their own.
    for want in (tf_op, caffe):
        np.testing.assert_allclose(got[..., :2], want[..., :2], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got[..., -2:], want[..., -2:], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(caffe - x).max() > 10               # the inputs are large enough to matter


@pytest.mark.parametrize('channels', [96, 20])
def test_lrn_gradient_equals_tensorflow_op_gradient(graph, channels):
    shape = [2, 3, 4, channels]
    x = tf.constant(relu_activations(shape, seed=1))
    upstream = tf.constant(np.random.RandomState(2).standard_normal(shape).astype(np.float32))
    ours = tf.gradients(alexnet.lrn(x), x, upstream)[0]
    theirs = tf.gradients(tf.nn.local_response_normalization(
        x, depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75), x, upstream)[0]
    with tf.Session() as session:
        got, want = session.run([ours, theirs])
    assert np.abs(want).max() > 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_lrn_with_another_beta_is_tensorflow_op(graph):
    x = relu_activations([1, 2, 2, 32])
    output = alexnet.lrn(tf.constant(x), beta=0.5, name='norm')
    with tf.Session() as session:
        got = session.run(output)
    assert output.op.type == 'LRN' and output.op.name == 'norm'
    np.testing.assert_allclose(got, np_lrn(x.astype(np.float64), beta=0.5), rtol=1e-5, atol=1e-5)

def test_variable_names_equal_weight_file_keys(graph):
    build()
    assert {v.name for v in tf.global_variables()} == EXPECTED_VARIABLES
    assert {v.name for v in tf.trainable_variables()} == EXPECTED_VARIABLES


@pytest.mark.parametrize('batch', [1, 3])
def test_any_batch_size_and_inference_without_feeding_keep_prob(graph, batch):
    model = build(num_classes=7)
    images = np.random.RandomState(0).uniform(-100, 100, (batch, 227, 227, 3))
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        first = session.run(model.fc8, {model.x: images})
        second = session.run(model.fc8, {model.x: images})
        dropped = session.run(model.fc7, {model.x: images, model.keep_prob: 0.5})
        kept = session.run(model.fc7, {model.x: images})
    assert first.shape == (batch, 7)
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, second)   # keep_prob defaults to 1: no dropout
    assert not np.array_equal(dropped, kept)        # feeding 0.5 turns dropout on


def test_initial_values_are_section_5s(graph):
    """Weights from N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6 and fc7, 0 elsewhere
    (the paper's section 5, written out here)."""
    ones = {'conv2', 'conv4', 'conv5', 'fc6', 'fc7'}
    model = build(num_classes=10)
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        values = model.read_weights(session)
    for layer in alexnet.LAYER_NAMES:
        weights, biases = values[layer]
        np.testing.assert_array_equal(biases, np.full_like(biases, layer in ones), layer)
        assert abs(weights.mean()) < 0.002 and 0.0095 < weights.std() < 0.0105, layer


def test_shapes_of_every_layer(graph):
    model = build()
    shapes = {name: getattr(model, name).shape.as_list()[1:] for name in
              ('conv1', 'pool1', 'conv2', 'pool2', 'conv3', 'conv4', 'conv5', 'pool5',
               'fc6', 'fc7', 'fc8')}
    assert shapes == {'conv1': [55, 55, 96], 'pool1': [27, 27, 96], 'conv2': [27, 27, 256],
                      'pool2': [13, 13, 256], 'conv3': [13, 13, 384], 'conv4': [13, 13, 384],
                      'conv5': [13, 13, 256], 'pool5': [6, 6, 256], 'fc6': [4096],
                      'fc7': [4096], 'fc8': [1000]}
    assert model.weight_shapes()['conv2'] == ((5, 5, 48, 256), (256,))  # 2 groups: half the input


def test_wrong_input_shape_and_unknown_skip_layer_are_refused(graph):
    with pytest.raises(ValueError, match=r'\[batch, 227, 227, 3\]'):
        alexnet.AlexNet(tf.placeholder(tf.float32, [None, 224, 224, 3]))
    with pytest.raises(ValueError, match='fc9'):
        build(skip_layer=['fc9'])


def test_skip_layer_leaves_those_layers_untouched(graph, bvlc_npy, bvlc_layers):
    model = build(skip_layer=['fc7', 'fc8'], weights_path=str(bvlc_npy))
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        before = model.read_weights(session, ['fc7', 'fc8'])
        model.load_initial_weights(session)
        after = model.read_weights(session)
    np.testing.assert_array_equal(after['conv3'][0], bvlc_layers['conv3'][0])
    np.testing.assert_array_equal(after['fc6'][1], bvlc_layers['fc6'][1])
    for layer in ('fc7', 'fc8'):
        for part in (0, 1):
            np.testing.assert_array_equal(after[layer][part], before[layer][part])


def test_two_classes_need_fc8_skipped(graph, bvlc_npy):
    model = build(num_classes=2, weights_path=str(bvlc_npy))
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        before = session.run(model.variables(['conv1']))
        with pytest.raises(weight_files.WeightFileError) as err:
            model.load_initial_weights(session)
        # nothing assigned: shapes are checked first
        np.testing.assert_array_equal(session.run(model.variables(['conv1']))[0], before[0])
        model.load_initial_weights(session, skip_layer=['fc8'])
    message = str(err.value)
    assert str(bvlc_npy) in message and 'fc8/weights' in message
    assert '(4096, 1000)' in message and '(4096, 2)' in message and 'skip_layer' in message
    assert '\n' not in message


def checked_with(monkeypatch):
    """Makes weight_files.load_weights record its `expected` and refuse; returns the record."""
    seen = []

    def load_weights(path, expected=None):
        seen.append(expected)
        raise weight_files.WeightFileError('refused by the test')
    monkeypatch.setattr(weight_files, 'load_weights', load_weights)
    return seen


def test_weight_files_are_checked_against_alexnets_shapes(graph, tmp_path, monkeypatch):
    seen = checked_with(monkeypatch)
    path = str(tmp_path / 'w.npz')
    model = build(num_classes=2)
    for load in (lambda: inference.num_classes_of(path),
                 lambda: model.load_initial_weights(None, path, skip_layer=['fc8'])):
        with pytest.raises(weight_files.WeightFileError, match='refused by the test'):
            load()
    assert seen == [alexnet.expected_weight_shapes] * 2


def test_expected_weight_shapes_are_cached_copies():
    shapes = alexnet.expected_weight_shapes(3)
    assert shapes['fc8'] == ((4096, 3), (3,)) and shapes['conv2'] == ((5, 5, 48, 256), (256,))
    shapes['fc8'] = None                       # a caller changing its copy changes nothing
    hits = alexnet._weight_shapes.cache_info().hits
    assert alexnet.expected_weight_shapes(3)['fc8'] == ((4096, 3), (3,))
    assert alexnet._weight_shapes.cache_info().hits == hits + 1


def test_layer_table_totals():
    for num_classes, params, connections, neurons in ((1000, 60965224, 725066088, 659272),
                                                      (2, 56876418, 720977282, 658274)):
        with tf.Graph().as_default():
            rows = alexnet.layer_table(build(num_classes=num_classes))
        weighted = [row for row in rows if row['params'] is not None]
        assert [row['layer'] for row in weighted] == list(alexnet.LAYER_NAMES)
        assert sum(row['params'] for row in weighted) == params
        assert sum(row['connections'] for row in weighted) == connections
        assert sum(row['neurons'] for row in weighted) == neurons
    conv2 = next(row for row in rows if row['layer'] == 'conv2')
    assert (conv2['input'], conv2['output']) == ('27x27x96', '27x27x256')
    assert conv2['connections'] == (5 * 5 * 48 + 1) * 27 * 27 * 256


def test_main_prints_table_and_writes_graph(tmp_path, capsys):
    assert alexnet.main(['--num-classes', '2', '--graph-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '56,876,418' in out and '5x5/1 SAME, 2 groups' in out
    events = glob.glob(os.path.join(str(tmp_path), 'events.out.tfevents*'))
    assert len(events) == 1
    graphs = [e for e in tf.train.summary_iterator(events[0]) if e.graph_def]
    node_names = {node.name for node in tf.GraphDef.FromString(graphs[0].graph_def).node}
    assert {'conv1/weights', 'conv2/relu', 'fc8/biases'} <= node_names


def test_one_conv2d_for_the_groups_only_on_onednn_without_a_gpu(monkeypatch):
    tf2 = int(tf.VERSION.split('.')[0]) >= 2
    # conftest, as every script, leaves TF_ENABLE_ONEDNN_OPTS as set, else cpu_kernels sets 1
    assert alexnet.onednn_cpu() == (tf2 and os.environ['TF_ENABLE_ONEDNN_OPTS'] == '1')
    monkeypatch.setattr(alexnet, 'gpu_visible', lambda: True)   # a GPU: cuDNN, per group
    assert not alexnet.onednn_cpu()


def test_groups_are_one_conv2d_on_onednn_else_one_per_group(graph, conv_path):
    build()
    convs = {name: [op for op in graph.get_operations()
                    if op.type == 'Conv2D' and op.name.startswith(name + '/')]
             for name in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5')}
    groups = 1 if conv_path == 'one conv2d' else 2
    assert [len(convs[name]) for name in sorted(convs)] == [1, groups, 1, groups, groups]
    # each op's filter: all of the layer's input channels / 2 groups (conv1, conv3: 1 group)
    conv2 = convs['conv2'][0]
    assert conv2.inputs[0].shape.as_list()[-1] == 96 // groups
    assert conv2.inputs[1].shape.as_list() == [5, 5, 48, 256 // groups]


def test_with_a_gpu_visible_lrn_is_tfs_own_op(graph, monkeypatch):
    monkeypatch.setattr(alexnet, 'gpu_visible', lambda: True)
    x = tf.placeholder(tf.float32, [None, 13, 13, 96])
    alexnet.lrn(x, name='norm')
    assert [op.type for op in graph.get_operations() if op.name.startswith('norm')] == ['LRN']
    monkeypatch.setattr(alexnet, 'gpu_visible', lambda: False)
    alexnet.lrn(x, name='fast')
    assert 'LRN' not in [op.type for op in graph.get_operations() if op.name.startswith('fast')]
