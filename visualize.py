"""Pictures of what AlexNet learned and how it trained (the course's homework).

Three subcommands writing PNGs (figures.py draws them):

    # conv1's 96 kernels of 11x11x3 as one grid, like the paper's Figure 3
    python visualize.py filters --weights weights/bvlc_alexnet.npz --tensorboard-dir logs/filters
    # an image's 96 conv1 feature maps beside the image, and a group of conv2 kernels
    python visualize.py features --image data/sample/cat/chelsea.jpg
    # several fine-tuning runs' loss and accuracy from their metrics.csv, overlaid
    python visualize.py curves --run logs/pretrained logs/scratch --out logs/curves.png

--weights (default weights/bvlc_alexnet.npz) takes the bvlc weights, a fine-tuned
.npz, a checkpoint or a run folder; ``--weights none`` draws random weights,
and the figure's title says so.

How the pictures are made:

* conv1 filters (section 6.1, Figure 3): each kernel is scaled to its own range
  (min -> black, max -> white) so weak kernels show too. bvlc_alexnet's input is
  BGR, so the 3 input channels are reversed to show the kernels in RGB. Rows
  1-3 hold kernels 0-47, rows 4-6 kernels 48-95: the two halves conv2's two
  groups read, like the paper's two GPUs (top: colour-agnostic, bottom:
  colour-specific in the paper).
* conv1 feature maps: the ReLU outputs (55x55 each) for the center crop the
  network sees, each map scaled to its own range; an all-black map did not fire.
* conv2 kernels: conv2 has 2 groups, so each filter has 48 input channels
  (filters 0-127 read conv1 maps 0-47, filters 128-255 maps 48-95). One grid of
  48 tiles of 5x5 per chosen filter, scaled over the whole filter so the
  channels it weights most stand out.
* curves: train solid, validation dashed, one colour per run (label: the run's
  folder name), x axis epochs.

--tensorboard-dir also writes the grids as TensorBoard image summaries
(``tensorboard --logdir DIR``, IMAGES tab).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf

import alexnet
import command_line
import figures
import image_files
import inference
import preprocessing
import run_folder
import weight_files

FILTER_COLUMNS = 16              # conv1: 6 rows of 16, halves 0-47 and 48-95 as in Figure 3
FEATURE_COLUMNS = 16
CONV2_FILTERS = (0, 1, 2, 128, 129, 130)   # three from each group
CONV2_COLUMNS = 8                # 48 input channels -> 6 rows of 8
CONV2_PANEL_COLUMNS = 3          # one row of filters per group
TENSORBOARD_ZOOM = 4             # 11x11 kernels are too small to see at 1:1


class InputError(ValueError):
    """An option that cannot be drawn."""


def tensorboard_tag(name, weights):
    """An image summary's tag: TensorBoard shows it over the image, so random weights say so."""
    return name + ('_RANDOM_WEIGHTS' if weights == inference.RANDOM_WEIGHTS else '')


# --- Reading weights and activations ---------------------------------------

def read_kernels(weights, layer_names=('conv1',), seed=0):
    """{layer: weights array} of the conv layers asked for, from any weight source."""
    num_classes = inference.num_classes_of(weights)
    size = preprocessing.IMAGE_SIZE
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        x = tf.placeholder(tf.float32, [None, size, size, 3], name='x')
        model = alexnet.AlexNet(x, num_classes=num_classes)
        with tf.Session() as session:
            inference.initialize(session, model, weights)
            values = model.read_weights(session, layer_names)
    return {name: kernel for name, (kernel, _) in values.items()}


def conv1_activations(image_path, weights, seed=0):
    """What one image does to conv1, and conv2's kernels, from one loading of the weights.

    Returns:
      (the 227x227 crop the network sees as uint8 RGB, conv1's maps [55, 55, 96],
      conv2's kernels [5, 5, 48, 256]).
    """
    rgb = image_files.read_image(image_path)
    num_classes = inference.num_classes_of(weights)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        image = tf.placeholder(tf.uint8, [None, None, 3], name='image')
        x = tf.expand_dims(preprocessing.preprocess_for_eval(image), 0)  # -> [1, 227, 227, 3]
        model = alexnet.AlexNet(x, num_classes=num_classes)
        with tf.Session() as session:
            inference.initialize(session, model, weights)
            crop, maps = session.run([x, model.conv1], {image: rgb})       # maps: [1, 55, 55, 96]
            conv2, _ = model.read_weights(session, ('conv2',))['conv2']
    return preprocessing.model_input_to_rgb(crop)[0], maps[0], conv2


def log_images(log_dir, images):
    """Writes {tag: uint8 image [H, W, C]} as TensorBoard image summaries."""
    with tf.Graph().as_default():
        feeds, summaries = {}, []
        for tag, image in images.items():
            value = tf.placeholder(tf.uint8, (1,) + image.shape)
            feeds[value] = image[None]
            summaries.append(tf.summary.image(tag, value))
        with tf.Session() as session:
            summary = session.run(tf.summary.merge(summaries), feeds)
        writer = tf.summary.FileWriter(log_dir)
        writer.add_summary(summary, 0)
        writer.close()


# --- The three pictures -----------------------------------------------------

def conv1_filter_mosaic(kernel):
    """conv1 kernels [11, 11, 3, 96] (BGR inputs) -> (RGB mosaic 0..1, tile count)."""
    tiles = figures.scale_each(figures.kernel_tiles(kernel, bgr_to_rgb=True))
    return figures.mosaic(tiles, FILTER_COLUMNS), len(tiles)


def draw_filters(weights, out, log_dir=None, seed=0):
    """conv1's kernels as one grid (Figure 3). Returns a figures.Figure."""
    kernel = read_kernels(weights, ('conv1',), seed)['conv1']        # [11, 11, 3, 96]
    grid, count = conv1_filter_mosaic(kernel)
    caption = ('conv1: %d kernels of %dx%dx%d, each scaled to its own range, in RGB\n'
               'rows 1-3: kernels 0-47, rows 4-6: 48-95 (conv2\'s two groups)'
               % ((count,) + kernel.shape[:3]))
    figure = figures.save_mosaics([(grid, caption, count)], out,
                                  title=inference.weights_label(weights))
    if log_dir:
        log_images(log_dir, {tensorboard_tag('conv1_filters', weights):
                             figures.to_uint8(grid, TENSORBOARD_ZOOM)})
    return figure


def conv2_kernel_panels(kernel, filters):
    """Panels of conv2 kernels [5, 5, 48, 256]: one 48-tile grid per chosen filter."""
    panels = []
    for index in filters:
        if not 0 <= index < kernel.shape[3]:
            raise InputError('conv2 has filters 0-%d, not %d' % (kernel.shape[3] - 1, index))
        # [5, 5, 48] -> 48 grayscale tiles [48, 5, 5, 1], scaled over the whole filter.
        tiles = np.transpose(kernel[:, :, :, index], (2, 0, 1))[..., None]
        tiles = (tiles - tiles.min()) / max(float(tiles.max() - tiles.min()), 1e-12)
        group = index // (kernel.shape[3] // 2)
        inputs = kernel.shape[2]
        caption = 'filter %d\n(conv1 maps %d-%d)' % (index, group * inputs,
                                                     (group + 1) * inputs - 1)
        panels.append((figures.mosaic(tiles, CONV2_COLUMNS), caption, len(tiles)))
    return panels


def draw_features(image_path, weights, out, conv2_out, conv2_filters=CONV2_FILTERS,
                  log_dir=None, seed=0):
    """An image's conv1 maps beside it, and a group of conv2 kernels.

    Returns:
      (features Figure, conv2 Figure).
    """
    crop, maps, kernel = conv1_activations(image_path, weights, seed)
    tiles = figures.scale_each(np.transpose(maps, (2, 0, 1))[..., None])   # -> [96, 55, 55, 1]
    grid = figures.mosaic(tiles, FEATURE_COLUMNS)
    label = inference.weights_label(weights)
    features = figures.save_mosaics(
        [(crop, 'input: %s\n(the 227x227 center crop)' % os.path.basename(image_path), 0),
         (grid, 'conv1: %d feature maps of %dx%d after ReLU, each scaled to its own range'
          % ((len(tiles),) + maps.shape[:2]), len(tiles))],
        out, title=label)
    panels = conv2_kernel_panels(kernel, conv2_filters)
    conv2 = figures.save_mosaics(
        panels, conv2_out, columns=CONV2_PANEL_COLUMNS, panel_height=2.0,
        title='conv2 kernels: 48 input channels of 5x5 per filter, each filter scaled to '
              'its range\n' + label)
    if log_dir:
        images = {tensorboard_tag('conv1_features', weights): figures.to_uint8(grid)}
        for index, (panel, _, _) in zip(conv2_filters, panels):
            images[tensorboard_tag('conv2_filter_%d' % index, weights)] = figures.to_uint8(
                panel, TENSORBOARD_ZOOM)
        log_images(log_dir, images)
    return features, conv2


def run_label(run):
    """A run's name for the legend: its folder name."""
    path = os.path.abspath(run)
    if os.path.isfile(path):
        path = os.path.dirname(path)
    return os.path.basename(path)


def draw_curves(runs, out, labels=None, title=None):
    """Overlays the runs' loss and accuracy. Returns a figures.Figure."""
    labels = labels or [run_label(run) for run in runs]
    if len(labels) != len(runs):
        raise InputError('%d labels for %d runs' % (len(labels), len(runs)))
    if len(set(labels)) != len(labels):
        raise InputError('two runs share the label %s; name them with --labels'
                         % sorted(label for label in labels if labels.count(label) > 1)[0])
    metrics = {label: run_folder.read_metrics(run) for label, run in zip(labels, runs)}
    random = [label for label, run in zip(labels, runs) if run_folder.started_from_random(run)]
    title = title or 'training curves: ' + ' vs '.join(labels)
    if random:
        title += '\n%s: trained from RANDOM WEIGHTS (--weights none), no pretraining' % (
            ', '.join(random))
    return figures.save_curves(metrics, out, title=title)


# --- Command line -----------------------------------------------------------

def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description="Draw conv1's filters, an image's feature maps with conv2 kernels, or "
                    'training curves of several runs.')
    commands = parser.add_subparsers(dest='command', metavar='{filters,features,curves}')
    commands.required = True

    filters = commands.add_parser('filters', help="conv1's 96 kernels (Figure 3)")
    command_line.add_weights(filters, alexnet.DEFAULT_WEIGHTS_PATH)
    command_line.add_out(filters, os.path.join('logs', 'conv1_filters.png'), 'PNG to write')
    filters.add_argument('--tensorboard-dir', help='also write a TensorBoard image summary here')
    command_line.add_seed(filters)

    features = commands.add_parser('features', help="an image's conv1 maps, and conv2 kernels")
    features.add_argument('--image', required=True,
                          help='the photo, e.g. images/tiger.jpg (a striped animal, as the '
                               'homework asks)')
    command_line.add_weights(features, alexnet.DEFAULT_WEIGHTS_PATH)
    command_line.add_out(features, os.path.join('logs', 'conv1_features.png'),
                         'PNG of the feature maps')
    features.add_argument('--conv2-out', default=os.path.join('logs', 'conv2_kernels.png'),
                          help='PNG of the conv2 kernels')
    features.add_argument('--conv2-filters', type=int, nargs='+', default=list(CONV2_FILTERS),
                          help='which conv2 filters (0-255) to draw')
    features.add_argument('--tensorboard-dir', help='also write TensorBoard image summaries here')
    command_line.add_seed(features)

    curves = commands.add_parser('curves', help="runs' loss and accuracy from metrics.csv")
    curves.add_argument('--run', nargs='+', required=True, dest='runs',
                        help='run folders (logs/<run>) or metrics.csv files')
    curves.add_argument('--labels', nargs='+', help='legend names (default: folder names)')
    curves.add_argument('--title', help='figure title')
    command_line.add_out(curves, os.path.join('logs', 'curves.png'), 'PNG to write')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    return command_line.run_main(lambda: run(args), errors=(
        weight_files.WeightFileError, image_files.ImageError, InputError,
        run_folder.RunFolderError))


def run(args):
    if hasattr(args, 'weights'):
        args.weights = inference.resolve_weights(args.weights)
    if args.command == 'filters':
        drawn = [draw_filters(args.weights, args.out, args.tensorboard_dir, args.seed)]
    elif args.command == 'features':
        drawn = list(draw_features(args.image, args.weights, args.out, args.conv2_out,
                                   args.conv2_filters, args.tensorboard_dir, args.seed))
    else:
        drawn = [draw_curves(args.runs, args.out, args.labels, args.title)]
    if getattr(args, 'weights', None) == inference.RANDOM_WEIGHTS:
        print(inference.weights_label(args.weights))
    for figure in drawn:
        print('wrote %s (%d tiles, %dx%d pixels)' % ((image_files.display_path(figure.path),
                                                      figure.tiles) + figure.size))
    if getattr(args, 'tensorboard_dir', None):
        print('TensorBoard (IMAGES tab): %s'
              % command_line.tensorboard_command(args.tensorboard_dir))
    return command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
