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

Two GPUs (section 3.2, Figure 2): ``AlexNet(x, devices=('/gpu:0', '/gpu:1'))``
builds the same layers in two columns, column k computing half of every
layer's kernels (or neurons) on devices[k]: conv1's kernels 0-47 on the first
device, 48-95 on the second (Figure 3's "GPU 1" and "GPU 2" rows), conv2, conv4
and conv5 each column on its own maps, conv3 and fc6, fc7, fc8 reading both
columns where the paper's GPUs communicate. Same variables, same outputs
(bit-identical on a CPU). Where the paper's two-GPU network differs from
bvlc_alexnet laid out so:

* LRN: the paper normalized on each GPU over that GPU's own maps, so a window
  stopped at the boundary between the halves; bvlc_alexnet's windows run over
  all 96 (256) maps. Here norm1 and norm2 therefore read both columns, on the
  first device, and send column 1's half back: a cross-device exchange the paper
  did not have, in layers 1 and 2;
* conv1: in the paper each GPU read the whole 224x224 image with its 48
  kernels; bvlc_alexnet's conv1 is one layer of 96 kernels (no groups) on
  227x227. Here each column reads the whole image with its 48 of them
  (conv1's weights split by output channel), which computes the same maps;
* weights: the paper kept each GPU's half of the weights on that GPU; here every
  layer keeps one variable, named and shaped as the weight files have it, where
  TensorFlow places it (with GPUs: the first), split in the graph on the first
  device: each step copies column 1's halves to the second device (and, in
  training, their gradients back);
* fc8: its neurons are split too (500 + 500), joined on the first device for
  the softmax.

Run ``python alexnet.py`` for the course's per-layer table (computed from the
built graph), ``--graph-dir logs/graph`` to write the graph for TensorBoard
(with ``--devices /gpu:0,/gpu:1``: the two columns, Color: Device), and
``--check-against-opencv weights/bvlc_alexnet.caffemodel images/*.jpg`` to run the
real model through OpenCV's Caffe engine beside this graph (caffe_reference.py).
"""
from __future__ import annotations

import collections
import contextlib
import functools
import sys

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
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
# lrn() computes the numbers of tf.nn.local_response_normalization (to a few float32
# roundings), faster on a CPU, where TF's op is slow for three reasons:
# * its kernel multiplies each pixel's squares by a dense [C, C] band matrix: 2C FLOPs (192 in
#   norm1, 512 in norm2) for a 5-channel sum. Here a convolution over blocks of
#   LRN_CHANNEL_BLOCK channels sums them: each block of outputs reads its own block and the
#   two beside it, 6 x 16 = 96 FLOPs a value;
# * it raises to the power -beta by exp(log()); for beta 0.75, s^-0.75 = rsqrt(s * sqrt(s))
#   exactly, and these are cheap (other betas: TF's op);
# * every full-size tensor is a fresh allocation (150 MB for norm1 at batch 128) that the OS
#   hands out page by page, twice in TF's kernel, once per op in a chain of ops. LRN mixes
#   channels only, so lrn() normalizes the pixels in pieces: only the output is full-size,
#   the pieces' tensors are reused memory and stay in cache.
LRN_CHANNEL_BLOCK = 16


@functools.lru_cache(maxsize=1)
def gpu_visible():
    """Whether TensorFlow sees a GPU (then LRN uses TF's own op)."""
    return bool(tf.config.experimental.list_physical_devices('GPU'))


def onednn_cpu():
    """Whether TensorFlow runs on oneDNN's CPU kernels (TF 2.x, see cpu_kernels.py) and
    sees no GPU: then one conv2d op convolves all groups (conv_groups)."""
    try:
        from tensorflow.python.util import _pywrap_util_port   # TF 2.x only
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled()) and not gpu_visible()


def conv_groups(x, weights, strides, padding, groups):
    """conv2d of x [N, H, W, C] with weights [k, k, C / groups, F]: group g convolves its
    C / groups input channels with its F / groups filters (the paper's two GPUs).

    oneDNN's kernel takes such a filter in one op, and runs conv2, conv4 and conv5 9-12 %
    faster that way (no split and concat copies, the bias and ReLU fused in); TF 1.15's
    and Eigen's CPU kernels refuse it, so there each group is its own conv2d (the same
    numbers: tests/test_alexnet.py runs both ways).
    """
    if groups == 1 or onednn_cpu():
        return tf.nn.conv2d(x, weights, strides, padding)
    outputs = [tf.nn.conv2d(part, kernel_part, strides, padding)
               for part, kernel_part in zip(tf.split(x, groups, axis=3),
                                            tf.split(weights, groups, axis=3))]
    return tf.concat(outputs, axis=3)


def lrn(x, depth_radius=LRN_DEPTH_RADIUS, alpha=LRN_ALPHA, beta=LRN_BETA, bias=LRN_BIAS,
        name=None):
    """Local response normalization across channels (section 3.3) of [N, H, W, C] x:
    x / (bias + alpha * sum of x^2 over channels c - depth_radius .. c + depth_radius)^beta,
    the arguments and numbers of tf.nn.local_response_normalization; computed as the
    comment at LRN_CHANNEL_BLOCK says when beta is 0.75, else by TF's op."""
    if beta != 0.75 or gpu_visible():
        # A GPU has cuDNN's LRN kernel; the pieces below would be many small kernels there.
        return tf.nn.local_response_normalization(x, depth_radius=depth_radius, bias=bias,
                                                  alpha=alpha, beta=beta, name=name)
    channels = x.shape.as_list()[-1]
    # The largest block of at most LRN_CHANNEL_BLOCK channels that divides C (96, 256: 16).
    block = max(b for b in range(1, min(LRN_CHANNEL_BLOCK, channels) + 1) if channels % b == 0)
    blocks = channels // block
    reach = min(-(-depth_radius // block), blocks - 1)   # neighbouring blocks a window reaches
    # kernel[0, reach + k, i, j]: alpha if channel i of the block k blocks away falls in the
    # window of channel j of this block.
    kernel = np.zeros([1, 2 * reach + 1, block, block], np.float32)
    for k in range(-reach, reach + 1):
        for i in range(block):
            for j in range(block):
                if abs(k * block + i - j) <= depth_radius:
                    kernel[0, reach + k, i, j] = alpha
    with tf.name_scope(name, 'lrn', [x]) as scope:
        kernel = tf.constant(kernel, name='band')
        biases = tf.constant(np.full([block], bias, np.float32), name='bias')

        def normalize(pixels):                                               # [M, C]
            squares = tf.reshape(tf.square(pixels), [-1, 1, blocks, block])  # [M, 1, C/16, 16]
            # 'SAME' pads with zero blocks: the first and last channels' windows are shorter.
            s = tf.nn.bias_add(tf.nn.conv2d(squares, kernel, [1, 1, 1, 1], 'SAME'), biases)
            s = tf.reshape(s, [-1, channels])
            return pixels * tf.rsqrt(s * tf.sqrt(s))

        pixels = tf.reshape(x, [-1, channels])                               # [N*H*W, C]
        # H pieces of N*W pixels; splitting the first axis shares x's memory, copies nothing.
        pieces = x.shape.as_list()[1] or 1
        size = tf.shape(pixels)[0] // pieces
        output = tf.concat([normalize(part) for part in
                            tf.split(pixels, tf.fill([pieces], size), num=pieces)], axis=0)
        return tf.reshape(output, tf.shape(x), name=scope)


# One row of the layer table, recorded while the graph is built.
Layer = collections.namedtuple(
    'Layer', 'name kind input output kernel stride padding groups variables')

# A layer's output in the two-column layout (devices=): `parts`, one tensor per
# column on its device (or one tensor that both columns read: the image, cached
# features); `whole`, the same as one tensor, joined on the first device.
Columns = collections.namedtuple('Columns', 'parts whole')


class AlexNet(object):
    """The bvlc_alexnet graph built on an input tensor.

    Attributes:
      conv1..conv5, fc6, fc7, fc8: layer outputs after ReLU (fc8: logits).
      pool1, pool2, pool5: outputs of the max-pooling layers.
      flattened: pool5 as fc6 reads it, [N, 9216].
      keep_prob: the dropout keep-probability placeholder (1.0 unless fed).
      layers: the Layer records of the table, in order.
      devices: None, or the two devices of the paper's two-GPU layout.
    """

    def __init__(self, x, keep_prob=None, num_classes=NUM_CLASSES, skip_layer=(),
                 weights_path=DEFAULT_WEIGHTS_PATH, dropout_seed=None, devices=None,
                 replica_rows=None):
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
          devices: None for the graph on one device, as bvlc_alexnet has it; or
            two TensorFlow device names, e.g. ('/gpu:0', '/gpu:1'), for the
            paper's two-GPU layout (section 3.2, Figure 2): every layer's kernels
            (neurons in fc6-fc8) split in two halves, each computed on its device
            (column k on devices[k]: conv1's kernels 0-47 on the first, 48-95 on
            the second). The columns read each other only in conv3 and fc6-fc8,
            as the paper's GPUs did, and, unlike the paper's, in norm1 and norm2
            (bvlc_alexnet's LRN spans all maps: the module docstring says more).
            The variables and the outputs are the one-device graph's. Run it in
            a session with alexnet.session_config(devices), so that a machine
            without those devices runs it on those it has.
          replica_rows: None, or (first row, rows of the whole batch) int32
            tensors when this graph is one replica's copy in data-parallel
            training (finetune.py), on rows first.. of a larger batch, sharing
            the variables of a model built before it: its dropout masks are
            those rows of the whole batch's masks (the same however many
            replicas share the batch), and it has no weight-loading ops (the
            model that owns the variables loads them).
        Raises:
          ValueError: an input that is not [N, 227, 227, 3], an unknown layer in
            skip_layer, or `devices` that are not two.
        """
        if x.shape.ndims != 4 or tuple(x.shape.as_list()[1:]) != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError('AlexNet needs input [batch, %d, %d, 3], got %s'
                             % (IMAGE_SIZE, IMAGE_SIZE, x.shape))
        unknown = set(skip_layer) - set(LAYER_NAMES)
        if unknown:
            raise ValueError('skip_layer has unknown layers %s; choose from %s'
                             % (sorted(unknown), ', '.join(LAYER_NAMES)))
        if devices is not None and (isinstance(devices, str) or len(devices) != 2):
            raise ValueError('devices takes two devices, one per column of the paper\'s '
                             "two-GPU layout, e.g. ('/gpu:0', '/gpu:1'); got %r" % (devices,))
        if keep_prob is None:
            keep_prob = tf.placeholder_with_default(1.0, shape=[], name='keep_prob')
        self.x = x
        self.keep_prob = keep_prob
        self.num_classes = num_classes
        self.skip_layer = tuple(skip_layer)
        self.weights_path = weights_path
        self.dropout_seed = dropout_seed
        self.devices = None if devices is None else tuple(devices)
        self.replica_rows = replica_rows
        self.layers = []
        if self.devices is None:
            self._build()
        else:
            self._build_columns()
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
        self.flattened = tf.reshape(self.pool5, [-1, 6 * 6 * 256], name='flatten')  # -> [N, 9216]
        outputs = self._fc_layers(self.flattened, 'fc6')
        self.fc6, self.fc7, self.fc8 = outputs['fc6'], outputs['fc7'], outputs['fc8']

    def _fc_layers(self, x, first, reuse=False):
        """The FC layers from `first` (fc6, fc7 or fc8) on; x is head_input(first), or
        with devices its Columns.

        Returns {layer: output} (with devices, {layer: Columns}: each column holds
        half of the layer's neurons, and fc7 and fc8 read all of the layer before).
        reuse=True shares the variables already built (for head()) and leaves the
        layer table alone.
        """
        if self.devices is None:
            fc, dropout = self._fc, self._dropout
        else:
            fc, dropout = self._fc_columns, self._dropout_columns
        start = HEAD_LAYERS.index(first)
        outputs = {}
        # 6th layer: FC (ReLU) -> dropout
        if start <= 0:
            x = outputs['fc6'] = fc(x, 'fc6', 4096, bias=1.0, reuse=reuse)
        if start <= 1:
            x = dropout(x, 'dropout6')
            # 7th layer: FC (ReLU) -> dropout
            x = outputs['fc7'] = fc(x, 'fc7', 4096, bias=1.0, reuse=reuse)
        x = dropout(x, 'dropout7')
        # 8th layer: FC, no ReLU: logits for softmax in the loss
        outputs['fc8'] = fc(x, 'fc8', self.num_classes, relu=False, reuse=reuse)
        return outputs

    # --- The paper's two-GPU layout (devices=): the same layers in two columns ---

    def _build_columns(self):
        """The layers of _build laid out as the paper's Figure 2 (section 3.2).

        Column k computes half of each layer's kernels (or neurons) on
        devices[k]: its convolutions, ReLUs and pooling, and its halves of the
        FC layers. conv2, conv4 and conv5 read their own column only; conv3 and
        fc6, fc7, fc8 read both, where the paper's GPUs communicate. norm1 and
        norm2 read both too, on the first device: bvlc_alexnet's LRN windows
        cross the boundary between the halves (the paper's did not).
        """
        # 1st layer: conv (ReLU) -> LRN -> pool; each column reads the whole image
        # with its 48 of the 96 kernels.
        image = Columns([self.x], self.x)
        conv1 = self._conv_columns(image, 'conv1', 11, 96, 4, 'VALID', reads_both=True)
        norm1 = self._lrn_columns(conv1, 'norm1')          # conv1: 2 x [N, 55, 55, 48]
        pool1 = self._max_pool_columns(norm1, 'pool1')     # -> 2 x [N, 27, 27, 48]

        # 2nd layer: conv (ReLU) -> LRN -> pool; each column reads its own 48 maps.
        conv2 = self._conv_columns(pool1, 'conv2', 5, 256, 1, 'SAME', bias=1.0)
        norm2 = self._lrn_columns(conv2, 'norm2')          # conv2: 2 x [N, 27, 27, 128]
        pool2 = self._max_pool_columns(norm2, 'pool2')     # -> 2 x [N, 13, 13, 128]

        # 3rd layer: conv (ReLU); each column reads both columns' 256 maps.
        conv3 = self._conv_columns(pool2, 'conv3', 3, 384, 1, 'SAME', reads_both=True)

        # 4th and 5th layers: conv (ReLU), each column on its own maps; pool.
        conv4 = self._conv_columns(conv3, 'conv4', 3, 384, 1, 'SAME', bias=1.0)  # 2 x 192 maps
        conv5 = self._conv_columns(conv4, 'conv5', 3, 256, 1, 'SAME', bias=1.0)  # 2 x 128 maps
        pool5 = self._max_pool_columns(conv5, 'pool5')     # -> 2 x [N, 6, 6, 128]

        # The one-device graph's attributes: each layer's two columns joined.
        self.conv1, self.pool1 = conv1.whole, pool1.whole
        self.conv2, self.pool2, self.conv3 = conv2.whole, pool2.whole, conv3.whole
        self.conv4, self.conv5, self.pool5 = conv4.whole, conv5.whole, pool5.whole

        # fc6 reads pool5 flattened in NHWC order, as the converted weights expect.
        with tf.name_scope('pool5/'), tf.device(self.devices[0]):
            self.flattened = tf.reshape(self.pool5, [-1, 6 * 6 * 256], name='flattened')
        outputs = self._fc_layers(Columns(pool5.parts, self.flattened), 'fc6')
        self.fc6, self.fc7, self.fc8 = (outputs[name].whole for name in HEAD_LAYERS)

    @contextlib.contextmanager
    def _column(self, index):
        """Ops of column `index`: named columnK, on devices[K]."""
        with tf.name_scope('column%d' % index), tf.device(self.devices[index]):
            yield

    def _join(self, parts):
        """A layer's columns as one tensor, on the first device (the table, the
        attributes conv1..fc8, the LRN and the loss read it)."""
        with tf.device(self.devices[0]):
            return tf.concat(parts, axis=-1, name='joined')

    @staticmethod
    def _read_both(parts):
        """What a column reads when it reads both columns: their outputs side by
        side, column 0's channels first (a single part: that tensor)."""
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1, name='both_columns')

    def _conv_columns(self, x, name, kernel, filters, stride, padding, reads_both=False,
                      bias=0.0):
        """Convolution + ReLU, half of the filters in each column.

        reads_both: each column reads all of x.parts (conv1 the image, conv3 both
        columns); else only its own part, as conv2, conv4 and conv5 do (the
        one-device graph's 2 groups).
        """
        channels = x.whole.shape.as_list()[-1]
        groups = 1 if reads_both else 2
        with tf.variable_scope(name):
            # One variable per layer, as the weight files have them, where TensorFlow
            # places it (pinned to a missing device, soft placement would move it with
            # a page of warnings); split on the first device, which sends column 1 its half.
            weights, biases = _conv_variables(kernel, channels // groups, filters, bias)
            with tf.device(self.devices[0]):
                kernel_parts = tf.split(weights, 2, axis=3, name='split_weights')
                bias_parts = tf.split(biases, 2, name='split_biases')
            outputs = []
            for index in range(2):
                with self._column(index):
                    part = (self._read_both(x.parts) if reads_both else x.parts[index])
                    conv = tf.nn.conv2d(part, kernel_parts[index], [1, stride, stride, 1],
                                        padding)
                    outputs.append(tf.nn.relu(tf.nn.bias_add(conv, bias_parts[index]),
                                              name='relu'))
            output = self._join(outputs)
        self.layers.append(Layer(name, 'conv', x.whole, output, kernel, stride, padding,
                                 groups, (weights, biases)))
        return Columns(outputs, output)

    def _fc_columns(self, x, name, units, relu=True, bias=0.0, reuse=False):
        """A fully connected layer, half of its neurons in each column; each column
        reads every neuron of x (all of x.parts)."""
        sizes = [units - units // 2, units // 2]   # fc8 of an odd class count: one more first
        with tf.variable_scope(name, reuse=reuse or None):
            weights, biases = _fc_variables(x.whole.shape.as_list()[-1], units, bias)
            with tf.device(self.devices[0]):   # as in _conv_columns
                weight_parts = tf.split(weights, sizes, axis=1, name='split_weights')
                bias_parts = tf.split(biases, sizes, name='split_biases')
            outputs = []
            for index in range(2):
                with self._column(index):
                    inputs = self._read_both(x.parts)
                    if inputs.shape.ndims == 4:   # fc6 reads pool5 flattened in NHWC order
                        inputs = tf.reshape(inputs, [-1, 6 * 6 * 256])   # -> [N, 9216]
                    output = tf.nn.xw_plus_b(inputs, weight_parts[index], bias_parts[index])
                    if relu:
                        output = tf.nn.relu(output, name='relu')
                    outputs.append(output)
            output = self._join(outputs)
        if not reuse:
            self.layers.append(Layer(name, 'fc', x.whole, output, None, None, None, 1,
                                     (weights, biases)))
        return Columns(outputs, output)

    def _lrn_columns(self, x, name):
        # bvlc_alexnet's LRN window runs over all the layer's maps, across the
        # boundary of the halves: it reads both columns (on the first device).
        with tf.device(self.devices[0]):
            return Columns(None, self._lrn(x.whole, name))

    def _max_pool_columns(self, x, name):
        with tf.name_scope(name):
            parts = x.parts
            if parts is None:     # the LRN's output, on the first device: split there
                with tf.device(self.devices[0]):
                    parts = tf.split(x.whole, 2, axis=3, name='split')
            outputs = []
            for index, part in enumerate(parts):
                with self._column(index):
                    # Overlapping pooling (section 3.4): 3x3 windows every 2 pixels.
                    outputs.append(tf.nn.max_pool(part, ksize=[1, 3, 3, 1],
                                                  strides=[1, 2, 2, 1], padding='VALID'))
            output = self._join(outputs)
        self.layers.append(Layer(name, 'pool', x.whole, output, 3, 2, 'VALID', 1, ()))
        return Columns(outputs, output)

    def _dropout_columns(self, x, name):
        """Dropout of each column's neurons on its device. With dropout_seed, the
        masks are the one-device graph's."""
        sizes = [part.shape.as_list()[-1] for part in x.parts]
        parts = []
        for index, part in enumerate(x.parts):
            with tf.device(self.devices[index]):
                parts.append(self._dropout(part, name, share=(index, sizes)))
        with tf.name_scope(name + '/'):   # the scope _dropout opened: dropoutK/joined
            return Columns(parts, self._join(parts))

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
        if self.devices is not None:
            # Both columns read the cached features.
            outputs = self._fc_layers(Columns([features], features), first, reuse=True)
            return outputs['fc8'].whole
        return self._fc_layers(features, first, reuse=True)['fc8']

    # The initial values are section 5's: see _conv_variables below the class.
    def _conv(self, x, name, kernel, filters, stride, padding, groups=1, bias=0.0):
        """Convolution + ReLU; `groups` splits input and kernel along channels."""
        channels = x.shape.as_list()[-1]
        with tf.variable_scope(name):
            weights, biases = _conv_variables(kernel, channels // groups, filters, bias)
            conv = conv_groups(x, weights, [1, stride, stride, 1], padding, groups)
            output = tf.nn.relu(tf.nn.bias_add(conv, biases), name='relu')
        self.layers.append(Layer(name, 'conv', x, output, kernel, stride, padding,
                                 groups, (weights, biases)))
        return output

    def _fc(self, x, name, units, relu=True, bias=0.0, reuse=False):
        with tf.variable_scope(name, reuse=reuse or None):
            weights, biases = _fc_variables(x.shape.as_list()[-1], units, bias)
            output = tf.nn.xw_plus_b(x, weights, biases)
            if relu:
                output = tf.nn.relu(output, name='relu')
        if reuse:
            return output
        self.layers.append(Layer(name, 'fc', x, output, None, None, None, 1,
                                 (weights, biases)))
        return output

    def _lrn(self, x, name):
        output = lrn(x, LRN_DEPTH_RADIUS, LRN_ALPHA, LRN_BETA, LRN_BIAS, name=name)
        self.layers.append(Layer(name, 'lrn', x, output, None, None, None, 1, ()))
        return output

    def _max_pool(self, x, name):
        # Overlapping pooling (section 3.4): 3x3 windows every 2 pixels.
        output = tf.nn.max_pool(x, ksize=[1, 3, 3, 1], strides=[1, 2, 2, 1],
                                padding='VALID', name=name)
        self.layers.append(Layer(name, 'pool', x, output, 3, 2, 'VALID', 1, ()))
        return output

    def _dropout(self, x, name, share=None):
        """Dropout of x [N, units]; share: None, or (column, sizes) when x is that
        column's part of a layer whose units are split in `sizes` (devices=)."""
        # 1 - keep_prob inside the scope too, for one node in TensorBoard.
        with tf.name_scope(name if share is None else '%s/column%d' % (name, share[0])):
            if self.dropout_seed is None:
                # rate = 1 - keep_prob: the course feeds a keep probability (0.5 to train).
                return tf.nn.dropout(x, rate=1.0 - self.keep_prob)
            # Keep a unit when its uniform draw is below keep_prob, scale the kept by
            # 1 / keep_prob: tf.nn.dropout's rule, with stateless draws per layer.
            seed = tf.cast(self.dropout_seed, tf.int64)
            key = tf.stack([seed[0] * 10 + int(name[-1]), seed[1]])
            # The whole batch's draws (all replicas' rows), this column's units of
            # them: every layout drops the same units of the same rows.
            rows = tf.shape(x)[0] if self.replica_rows is None else self.replica_rows[1]
            units = tf.shape(x)[1] if share is None else sum(share[1])
            draws = tf.random.stateless_uniform(tf.stack([rows, units]), seed=key)
            if self.replica_rows is not None:
                first = self.replica_rows[0]
                draws = draws[first:first + tf.shape(x)[0]]
            if share is not None:
                column, sizes = share
                draws = tf.split(draws, sizes, axis=1)[column]
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


# Initial values (section 5), for layers not loaded from a file: weights
# N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7 ("provides the ReLUs
# with positive inputs"), 0 elsewhere.
def _conv_variables(kernel, channels, filters, bias):
    """weights [kernel, kernel, channels, filters] and biases [filters] of a conv layer."""
    weights = tf.get_variable('weights', [kernel, kernel, channels, filters],
                              initializer=tf.random_normal_initializer(stddev=0.01))
    biases = tf.get_variable('biases', [filters], initializer=tf.constant_initializer(bias))
    return weights, biases


def _fc_variables(inputs, units, bias):
    """weights [inputs, units] and biases [units] of a fully connected layer."""
    weights = tf.get_variable('weights', [inputs, units],
                              initializer=tf.random_normal_initializer(stddev=0.01))
    biases = tf.get_variable('biases', [units], initializer=tf.constant_initializer(bias))
    return weights, biases


def session_config(devices=None):
    """The tf.Session config for a graph built with `devices`: soft placement, so
    that an op whose device this machine lacks (no GPU, one GPU) runs on one it has."""
    return tf.ConfigProto(allow_soft_placement=True) if devices else None


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
    command_line.add_model_parallel(parser, '--devices')
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
    if args.model_parallel and args.check_against_opencv:
        parser.error('--check-against-opencv runs the one-device graph; drop --devices')
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
        x = tf.placeholder(tf.float32, [None, IMAGE_SIZE, IMAGE_SIZE, 3], name='input')
        model = AlexNet(x, num_classes=args.num_classes, devices=args.model_parallel)
        print('AlexNet (bvlc_alexnet), %d classes, per image:' % args.num_classes)
        print(format_table(layer_table(model)))
        if args.model_parallel:
            print("two columns, as the paper's two GPUs (Figure 2): column 0 on %s, column 1 "
                  'on %s' % args.model_parallel)
        if args.tensorboard_dir:
            writer = tf.summary.FileWriter(args.tensorboard_dir, graph)
            writer.close()
            print('graph written to %s; view it with: %s%s'
                  % (args.tensorboard_dir, command_line.tensorboard_command(args.tensorboard_dir),
                     "\n  (tab Graphs, Color: Device shows the two columns)"
                     if args.model_parallel else ''))
    return command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
