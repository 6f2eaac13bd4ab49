"""AlexNet (Krizhevsky, Sutskever and Hinton, NIPS 2012) as a TensorFlow 1.x graph.

"ImageNet Classification with Deep Convolutional Neural Networks", section 3:
five convolutional layers and three fully connected ones. This graph is the
Caffe ``bvlc_alexnet`` model, so that its converted weights (``bvlc_alexnet.npz``)
(variables ``conv1/weights``, ``conv1/biases``, ... named like the file's keys)
load into it. It differs from the paper where bvlc_alexnet does:

* input 227x227 (the paper says 224; 227 makes conv1's 11x11/4 VALID windows fit
  exactly: (227 - 11) / 4 + 1 = 55), BGR channel order minus the ImageNet mean
  (see preprocessing.py, the one home of preprocessing);
* conv2, conv4, conv5 split into 2 groups, as the paper's two GPUs did, but
  conv3 and the FC layers see everything, like the paper's cross-GPU layers;
* LRN comes before pooling (the paper: after ReLU, before pooling; same here) with
  Caffe's local_size 5, alpha 1e-4, beta 0.75, k 1;
* no softmax: ``fc8`` holds the logits.

Run ``python alexnet.py`` for the course's per-layer table (computed from the
built graph), ``--graph-dir logs/graph`` to write the graph for TensorBoard, and
``--check-against-opencv weights/bvlc_alexnet.caffemodel images/*.jpg`` to run the
real model through OpenCV's Caffe engine beside this graph (caffe_reference.py).
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import command_line
import weight_files
from preprocessing import IMAGE_SIZE

DEFAULT_WEIGHTS_PATH = 'weights/bvlc_alexnet.npz'   # download.py weights writes it
NUM_CLASSES = 1000
LAYER_NAMES = weight_files.LAYER_NAMES   # conv1..conv5, fc6..fc8: the weight files' keys
HEAD_LAYERS = ('fc6', 'fc7', 'fc8')   # where a head on cached features may start

# Caffe's LRN: b = a / (k + alpha / n * sum(a^2 over n=5 channels))^beta.
# TF's lrn sums over 2 * depth_radius + 1 channels and does not divide by n.
LRN_DEPTH_RADIUS = 2
LRN_ALPHA = 1e-4 / 5
LRN_BETA = 0.75
LRN_BIAS = 1.0

# One row of the layer table, recorded while the graph is built.
Layer = collections.namedtuple(
    'Layer', 'name kind input output kernel stride padding groups variables')


class AlexNet(object):
    """The bvlc_alexnet graph built on an input tensor.

    Attributes:
      conv1..conv5, fc6, fc7, fc8: layer outputs after ReLU (fc8: logits).
      pool1, pool2, pool5: outputs of the max-pooling layers.
      flattened: pool5 as fc6 reads it, [N, 9216].
      keep_prob: the dropout keep-probability placeholder (1.0 unless fed).
      layers: the Layer records of the table, in order.
    """

    def __init__(self, x, keep_prob=None, num_classes=NUM_CLASSES, skip_layer=(),
                 weights_path=DEFAULT_WEIGHTS_PATH, dropout_seed=None, replica_rows=None):
        """Builds the graph.

        Args:
          x: float32 tensor [batch, 227, 227, 3], BGR minus the ImageNet mean.
          keep_prob: dropout keep-probability: a scalar tensor (the course's
            placeholder) or None for a placeholder that defaults to 1.0, so
            inference works without feeding it.
          num_classes: outputs of fc8.
          skip_layer: names of layers load_initial_weights leaves alone (the
            layers to train from scratch).
          weights_path: .npy or .npz file for load_initial_weights.
          dropout_seed: None, or an int64 [2] tensor of which the dropout masks
            are a pure function (finetune.py feeds (seed, step)), so that a
            resumed run draws the masks an uninterrupted one would.
          replica_rows: None, or (first row, rows of the whole batch) int32
            tensors when this graph is one replica's copy in data-parallel
            training (finetune.py), on rows first.. of a larger batch, sharing
            the variables of a model built before it: its dropout masks are
            those rows of the whole batch's masks (the same however many
            replicas share the batch), and it has no weight-loading ops (the
            model that owns the variables loads them).
        """
        if x.shape.ndims != 4 or tuple(x.shape.as_list()[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError('AlexNet needs input [batch, %d, %d, 3], got %s'
                             % (IMAGE_SIZE, IMAGE_SIZE, x.shape))
        unknown = set(skip_layer) - set(LAYER_NAMES)
        if unknown:
            raise ValueError('skip_layer has unknown layers %s; choose from %s'
                             % (sorted(unknown), ', '.join(LAYER_NAMES)))
        if keep_prob is None:
            keep_prob = tf.placeholder_with_default(1.0, shape=[], name='keep_prob')
        self.x = x
        self.keep_prob = keep_prob
        self.num_classes = num_classes
        self.skip_layer = tuple(skip_layer)
        self.weights_path = weights_path
        self.dropout_seed = dropout_seed
        self.replica_rows = replica_rows
        self.layers = []
        self._build()
        if replica_rows is None:
            self._make_assign_ops()

    def _build(self):
        # 1st layer: conv (ReLU) -> LRN -> pool
        self.conv1 = self._conv(self.x, 'conv1', 11, 96, 4, 'VALID')  # -> [N, 55, 55, 96]
        norm1 = self._lrn(self.conv1, 'norm1')
        self.pool1 = self._max_pool(norm1, 'pool1')                    # -> [N, 27, 27, 96]

        # 2nd layer: conv (ReLU) -> LRN -> pool, 2 groups
        self.conv2 = self._conv(self.pool1, 'conv2', 5, 256, 1, 'SAME', groups=2, bias=1.0)
        norm2 = self._lrn(self.conv2, 'norm2')                         # -> [N, 27, 27, 256]
        self.pool2 = self._max_pool(norm2, 'pool2')                    # -> [N, 13, 13, 256]

        # 3rd layer: conv (ReLU), across both groups
        self.conv3 = self._conv(self.pool2, 'conv3', 3, 384, 1, 'SAME')  # -> [N, 13, 13, 384]

        # 4th layer: conv (ReLU), 2 groups
        self.conv4 = self._conv(self.conv3, 'conv4', 3, 384, 1, 'SAME', groups=2, bias=1.0)

        # 5th layer: conv (ReLU) -> pool, 2 groups
        self.conv5 = self._conv(self.conv4, 'conv5', 3, 256, 1, 'SAME', groups=2, bias=1.0)
        self.pool5 = self._max_pool(self.conv5, 'pool5')               # -> [N, 6, 6, 256]

        # Flatten (NHWC order, as the converted weights expect) for the FC layers.
        self.flattened = tf.reshape(self.pool5, [-1, 6 * 6 * 256])    # -> [N, 9216]
        outputs = self._fc_layers(self.flattened, 'fc6')
        self.fc6, self.fc7, self.fc8 = outputs['fc6'], outputs['fc7'], outputs['fc8']

    def _fc_layers(self, x, first, reuse=False):
        """The FC layers from `first` (fc6, fc7 or fc8) on; x is head_input(first).

        Returns {layer: output}. reuse=True shares the variables already built
        (for head()) and leaves the layer table alone.
        """
        start = HEAD_LAYERS.index(first)
        outputs = {}
        # 6th layer: FC (ReLU) -> dropout
        if start <= 0:
            x = outputs['fc6'] = self._fc(x, 'fc6', 4096, bias=1.0, reuse=reuse)
        if start <= 1:
            x = self._dropout(x, 'dropout6')
            # 7th layer: FC (ReLU) -> dropout
            x = outputs['fc7'] = self._fc(x, 'fc7', 4096, bias=1.0, reuse=reuse)
        x = self._dropout(x, 'dropout7')
        # 8th layer: FC, no ReLU: logits for softmax in the loss
        outputs['fc8'] = self._fc(x, 'fc8', self.num_classes, relu=False, reuse=reuse)
        return outputs

    def head_input(self, first):
        """What layer `first` (fc6, fc7 or fc8) reads from the layers before it, before
        dropout: flattened pool5 [N, 9216], fc6 [N, 4096] or fc7 [N, 4096]."""
        return {'fc6': self.flattened, 'fc7': self.fc6, 'fc8': self.fc7}[first]

    def head(self, features, first):
        """Logits of layers `first`..fc8 run on precomputed head_input(first) values.

        The same ops as the full graph (dropout included, with this model's
        keep_prob) on the same variables: fine-tuning the FC layers on cached
        features (feature_cache.py) trains this model's weights.
        """
        if first not in HEAD_LAYERS:
            raise ValueError('head starts at one of %s, not %s' % (', '.join(HEAD_LAYERS), first))
        return self._fc_layers(features, first, reuse=True)['fc8']

    # Initial values (section 5), for layers not loaded from a file: weights
    # N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7 ("provides the ReLUs
    # with positive inputs"), 0 elsewhere.
    def _conv(self, x, name, kernel, filters, stride, padding, groups=1, bias=0.0):
        """Convolution + ReLU; `groups` splits input and kernel along channels."""
        channels = x.shape.as_list()[-1]
        with tf.variable_scope(name):
            weights = tf.get_variable(
                'weights', [kernel, kernel, channels // groups, filters],
                initializer=tf.random_normal_initializer(stddev=0.01))
            biases = tf.get_variable('biases', [filters],
                                     initializer=tf.constant_initializer(bias))
            strides = [1, stride, stride, 1]
            # Each group convolves its half of the input with its half of the filters.
            outputs = [tf.nn.conv2d(part, kernel_part, strides, padding)
                       for part, kernel_part in zip(tf.split(x, groups, axis=3),
                                                    tf.split(weights, groups, axis=3))]
            conv = outputs[0] if groups == 1 else tf.concat(outputs, axis=3)
            output = tf.nn.relu(tf.nn.bias_add(conv, biases), name='relu')
        self.layers.append(Layer(name, 'conv', x, output, kernel, stride, padding,
                                 groups, (weights, biases)))
        return output

    def _fc(self, x, name, units, relu=True, bias=0.0, reuse=False):
        with tf.variable_scope(name, reuse=reuse or None):
            weights = tf.get_variable('weights', [x.shape.as_list()[-1], units],
                                      initializer=tf.random_normal_initializer(stddev=0.01))
            biases = tf.get_variable('biases', [units], initializer=tf.constant_initializer(bias))
            output = tf.nn.xw_plus_b(x, weights, biases)
            if relu:
                output = tf.nn.relu(output, name='relu')
        if reuse:
            return output
        self.layers.append(Layer(name, 'fc', x, output, None, None, None, 1,
                                 (weights, biases)))
        return output

    def _lrn(self, x, name):
        output = tf.nn.local_response_normalization(
            x, depth_radius=LRN_DEPTH_RADIUS, alpha=LRN_ALPHA, beta=LRN_BETA,
            bias=LRN_BIAS, name=name)
        self.layers.append(Layer(name, 'lrn', x, output, None, None, None, 1, ()))
        return output

    def _max_pool(self, x, name):
        # Overlapping pooling (section 3.4): 3x3 windows every 2 pixels.
        output = tf.nn.max_pool(x, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1],
                                padding='VALID', name=name)
        self.layers.append(Layer(name, 'pool', x, output, 3, 2, 'VALID', 1, ()))
        return output

    def _dropout(self, x, name):
        # rate = 1 - keep_prob: the course feeds a keep probability (0.5 to train).
        if self.dropout_seed is None:
            return tf.nn.dropout(x, rate=1.0 - self.keep_prob, name=name)
        with tf.name_scope(name):
            # Keep a unit when its uniform draw is below keep_prob, scale the kept by
            # 1 / keep_prob: tf.nn.dropout's rule, with stateless draws per layer.
            seed = tf.cast(self.dropout_seed, tf.int64)
            key = tf.stack([seed[0] * 10 + int(name[-1]), seed[1]])
            if self.replica_rows is None:
                draws = tf.random.stateless_uniform(tf.shape(x), seed=key)
            else:
                first, rows = self.replica_rows
                whole = tf.random.stateless_uniform(tf.stack([rows, tf.shape(x)[1]]), seed=key)
                draws = whole[first:first + tf.shape(x)[0]]
            kept = tf.cast(draws < self.keep_prob, x.dtype)
            return x * kept / self.keep_prob

    def _make_assign_ops(self):
        # Built once with the graph, so loading works after the graph is finalized
        # and does not copy 233 MB of constants into it.
        # In one name scope, so that TensorBoard shows them apart from the layers.
        self._assign = {}
        with tf.name_scope('load_weights'):
            for layer in self.layers:
                for variable in layer.variables:
                    value = tf.placeholder(variable.dtype.base_dtype, variable.shape)
                    self._assign[variable.op.name] = (value, tf.assign(variable, value))

    def variables(self, layer_names=LAYER_NAMES, biases=True):
        """The weights and biases variables of the given layers, in order (biases=False:
        the weights only, e.g. for weight decay)."""
        return [v for layer in self.layers if layer.name in layer_names
                for v in layer.variables[:2 if biases else 1]]

    def weight_shapes(self):
        """{layer: (weights shape, biases shape)} of this graph."""
        return {layer.name: tuple(tuple(v.shape.as_list()) for v in layer.variables)
                for layer in self.layers if layer.variables}

    def load_initial_weights(self, session, weights_path=None, skip_layer=None):
        """Assigns every layer not in skip_layer from the weight file.

        All shapes are checked before anything is assigned, so a bad file
        leaves the session's variables as they were.

        Args:
          session: the session whose variables to set.
          weights_path: .npy or .npz file; default: the one given to the constructor.
          skip_layer: layers to leave alone; default: the constructor's.
        Raises:
          weight_files.WeightFileError: missing, unsafe or ill-fitting file.
        """
        path = weights_path or self.weights_path
        skip_layer = self.skip_layer if skip_layer is None else tuple(skip_layer)
        # The file must be a whole AlexNet of its own class count; then the layers
        # loaded here must fit this graph.
        layers = weight_files.load_weights(path, expected=expected_weight_shapes)
        weight_files.check_shapes(path, layers, self.weight_shapes(), skip_layer)
        feed, ops = {}, []
        for name in LAYER_NAMES:
            if name in skip_layer:
                continue
            for part, array in zip(('weights', 'biases'), layers[name]):
                value, assign = self._assign[name + '/' + part]
                feed[value] = array
                ops.append(assign)
        session.run(ops, feed)

    def read_weights(self, session, layer_names=LAYER_NAMES):
        """{layer: (weights, biases)} of the current values, for weight_files.save_npz."""
        chosen = [layer for layer in self.layers if layer.variables and layer.name in layer_names]
        values = session.run([layer.variables for layer in chosen])
        return {layer.name: tuple(value) for layer, value in zip(chosen, values)}


def expected_weight_shapes(num_classes=NUM_CLASSES):
    """{layer: (weights shape, biases shape)} for a weight file of `num_classes`.

    Read off a built graph, once per class count (weight_files.load_weights calls
    this for every file it checks); each call returns a new dict.
    """
    return dict(_weight_shapes(int(num_classes)))


@functools.lru_cache(maxsize=32)
def _weight_shapes(num_classes):
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3])
        return tuple(AlexNet(x, num_classes=num_classes).weight_shapes().items())


# --- The course's layer table ---------------------------------------------

def _size(tensor):
    """'55x55x96' for a [N, 55, 55, 96] tensor, '4096' for [N, 4096]."""
    return 'x'.join(str(d) for d in tensor.shape.as_list()[1:])


def layer_table(model):
    """Rows of the course's table, computed from the built graph.

    Connections count as in LeCun et al. 1998: each output neuron of a weighted
    layer connects to its fan-in inputs plus the bias, so (fan-in + 1) x
    output neurons (a grouped conv's fan-in sees only its group's channels).

    Returns:
      list of dicts: layer, type, input, output, kernel, params, connections,
      neurons (the last three None for layers without weights).
    """
    rows = []
    for layer in model.layers:
        neurons = int(np.prod(layer.output.shape.as_list()[1:]))
        row = {'layer': layer.name, 'type': layer.kind, 'input': _size(layer.input),
               'output': _size(layer.output), 'kernel': '', 'params': None,
               'connections': None, 'neurons': None}
        if layer.kind in ('conv', 'pool'):
            row['kernel'] = '%dx%d/%d %s' % (layer.kernel, layer.kernel, layer.stride,
                                            layer.padding)
            if layer.groups > 1:
                row['kernel'] += ', %d groups' % layer.groups
        if layer.variables:
            weights = layer.variables[0].shape.as_list()
            fan_in = int(np.prod(weights[:-1]))  # kernel*kernel*channels/groups, or inputs
            row['params'] = sum(int(np.prod(v.shape.as_list())) for v in layer.variables)
            row['connections'] = (fan_in + 1) * neurons
            row['neurons'] = neurons
        rows.append(row)
    return rows


def format_table(rows):
    """The table as text, with totals over the weighted layers."""
    header = ('layer', 'type', 'input', 'output', 'kernel/stride pad', 'params',
              'connections', 'neurons')
    weighted = [row for row in rows if row['params'] is not None]
    totals = {key: sum(row[key] for row in weighted)
              for key in ('params', 'connections', 'neurons')}

    def cells(row):
        number = lambda v: '-' if v is None else '{:,}'.format(v)  # noqa: E731
        return (row['layer'], row['type'], row['input'], row['output'], row['kernel'],
                number(row['params']), number(row['connections']), number(row['neurons']))

    lines = [cells(row) for row in rows]
    total = ('total', '%d weighted' % len(weighted), '', '', '',
             '{:,}'.format(totals['params']), '{:,}'.format(totals['connections']),
             '{:,}'.format(totals['neurons']))
    widths = [max(len(line[i]) for line in [header, total] + lines) for i in range(len(header))]
    left = 5  # the first five columns are text, the rest numbers

    def fmt(line):
        return '  '.join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths)))
    rule = '-' * len(fmt(header))
    return '\n'.join([fmt(header), rule] + [fmt(l) for l in lines] + [rule, fmt(total)])


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description="Print AlexNet's per-layer table (feature maps, parameters, "
                    'connections, neurons), computed from the built graph.')
    parser.add_argument('--num-classes', type=command_line.positive_int, default=NUM_CLASSES,
                        help='outputs of fc8')
    parser.add_argument('--tensorboard-dir', '--graph-dir', dest='tensorboard_dir',
                        default=None,
                        help='also write the graph here for TensorBoard, e.g. logs/graph')
    parser.add_argument('--check-against-opencv', metavar='CAFFEMODEL', default=None,
                        help="instead of the table: run this caffemodel through OpenCV's Caffe "
                             'engine and through this graph, and print both top-5 per photo '
                             'and the largest difference at each layer')
    parser.add_argument('images', nargs='*', default=[],
                        help='photos for --check-against-opencv (default: images/)')
    parser.add_argument('--mean', default=None,
                        help="with --check-against-opencv: Caffe's imagenet_mean.binaryproto "
                             '(default: the mean pixel)')
    args = parser.parse_args(argv)
    if args.images and not args.check_against_opencv:
        parser.error('photos are only read with --check-against-opencv')
    return args


def check_against_opencv(caffemodel_path, paths, mean_path=None):
    """Prints both engines' top 5 and their largest differences; returns the exit status."""
    import caffe_reference   # imports this module, OpenCV and the caffemodel reader
    import image_files
    files, skipped = image_files.image_paths(paths or ['images'], recursive=False)
    if not files:
        return command_line.fail('no photos to compare in %s' % ', '.join(paths or ['images']))
    try:
        caffe_reference.import_cv2()
    except ImportError as err:
        return command_line.fail(err)
    result = caffe_reference.compare(caffemodel_path, files, mean_path)
    print(caffe_reference.format_comparison(result))
    unreadable = skipped + [entry for entry in result['images'] if 'error' in entry]
    return command_line.EXIT_PARTIAL if unreadable else command_line.EXIT_OK


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    if args.check_against_opencv:
        return command_line.run_main(
            lambda: check_against_opencv(args.check_against_opencv, args.images, args.mean),
            errors=(weight_files.WeightFileError,))
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name='x')
        model = AlexNet(x, num_classes=args.num_classes)
        print('AlexNet (bvlc_alexnet), %d classes, per image:' % args.num_classes)
        print(format_table(layer_table(model)))
        if args.tensorboard_dir:
            writer = tf.summary.FileWriter(args.tensorboard_dir, graph)
            writer.close()
            print('graph written to %s; view it with: %s'
                  % (args.tensorboard_dir, command_line.tensorboard_command(args.tensorboard_dir)))
    return command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
