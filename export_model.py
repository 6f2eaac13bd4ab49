"""Exports a trained AlexNet for use outside the course, the TensorFlow 1.x way.

Takes any weights this project has -- ``bvlc_alexnet.npz`` (.npy, .caffemodel), a fine-tuned
``weights.npz``, a tf.train.Saver checkpoint prefix, a folder with a
``checkpoint`` index, or a fine-tuning run folder (its latest checkpoint) --
and writes, under ``--out``:

* ``saved_model/``: a SavedModel (tf.saved_model.builder) for TensorFlow
  Serving, ``saved_model_cli`` or any TF. Its ``serving_default`` signature takes
  ``images``, a batch of encoded image files (JPEG, PNG, GIF, BMP: string [N]),
  decodes and preprocesses them inside the graph exactly like the course's
  evaluation (preprocessing.preprocess_for_eval: shorter side to 256, center
  227x227 crop, BGR minus the ImageNet mean), and returns ``probabilities``
  [N, C] (softmax of fc8, section 3 of the paper), the top-k ``classes`` [N, k],
  their ``scores`` and ``class_names``. The names are also an asset file.
* ``frozen_graph.pb``: a GraphDef with the weights folded into constants
  (tf.graph_util.convert_variables_to_constants): input ``input:0``, float32
  [N, 227, 227, 3] already preprocessed (preprocessing.rgb_to_model_input),
  output ``probabilities:0``. For tools that want one self-contained file.
* ``class_names.txt``: one name per output, in order.

    python export_model.py --weights logs/<run> --out exports/catsdogs
    python export_model.py --weights weights/bvlc_alexnet.npz --out exports/bvlc --format frozen

The number of classes comes from fc8's biases in the weights; the names from
the .npz, the run folder's class_names.txt, or ImageNet's for 1000 classes.
Dropout is off in both exports (keep_prob defaults to 1.0).

Deviation: the SavedModel decodes with TensorFlow's decoders, so that it needs
no Python at serving time; the course's scripts read files with PIL
(image_files.read_image). JPEG and PNG pixels come out the same (JPEGs
use PIL's accurate DCT), but EXIF rotation is not applied and an alpha channel
is dropped instead of being put on white.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf

import alexnet
import command_line
import image_files
import inference
import preprocessing
import run_folder
import weight_files

FORMATS = ('savedmodel', 'frozen')
TOP_K = 5
SAVED_MODEL_DIR = 'saved_model'
FROZEN_GRAPH_FILE = 'frozen_graph.pb'
INPUT_NAME = 'input'                 # the frozen graph's preprocessed input
OUTPUT_NAME = 'probabilities'        # softmax of fc8 in both exports


# --- The serving graph: encoded images in, probabilities out ---------------------

def decode_and_preprocess(encoded):
    """One encoded image file (string scalar) -> float32 [227, 227, 3] model input."""
    # channels=3: grayscale becomes RGB, alpha is dropped. JPEGs use the accurate
    # integer DCT, as PIL does (image_files.read_image, used in training);
    # TensorFlow's default fast DCT changes pixels by a level or two.
    # expand_animations=False: a GIF gives its first frame, [H, W, 3] like the rest.
    image = tf.cond(
        tf.image.is_jpeg(encoded),
        lambda: tf.image.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
        lambda: tf.image.decode_image(encoded, channels=3, expand_animations=False))
    return preprocessing.preprocess_for_eval(image)


def build_serving_graph(num_classes, names, top_k=TOP_K):
    """Builds the serving graph in the default graph.

    Returns:
      (model, inputs, outputs): the AlexNet, and the signature's tensors by name.
    """
    images = tf.placeholder(tf.string, [None], name='images')          # -> [N]
    batch = tf.map_fn(decode_and_preprocess, images, dtype=tf.float32,
                      name='preprocess')                                # -> [N, 227, 227, 3]
    model = alexnet.AlexNet(batch, num_classes=num_classes)
    probabilities = tf.nn.softmax(model.fc8, name=OUTPUT_NAME)          # -> [N, C]
    scores, classes = tf.nn.top_k(probabilities, k=min(top_k, num_classes))  # -> [N, k]
    top_names = tf.gather(tf.constant(names), classes)                  # -> [N, k] strings
    inputs = {'images': images}
    outputs = {'probabilities': probabilities, 'classes': classes, 'scores': scores,
               'class_names': top_names}
    return model, inputs, outputs


def export_saved_model(source, export_dir, num_classes, names, names_file):
    """Writes a SavedModel with a 'serving_default' signature (tag 'serve')."""
    with tf.Graph().as_default():
        model, inputs, outputs = build_serving_graph(num_classes, names)
        # The class names travel with the model as an asset (copied to assets/).
        tf.add_to_collection(tf.GraphKeys.ASSET_FILEPATHS,
                             tf.constant(names_file, name='class_names_file'))
        signature = tf.saved_model.predict_signature_def(inputs, outputs)
        with tf.Session() as session:
            inference.initialize(session, model, source)
            check_finite(session, model, source)
            builder = tf.saved_model.builder.SavedModelBuilder(export_dir)
            builder.add_meta_graph_and_variables(
                session, [tf.saved_model.tag_constants.SERVING],
                signature_def_map={
                    tf.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY:
                        signature},
                assets_collection=tf.get_collection(tf.GraphKeys.ASSET_FILEPATHS))
            builder.save()
    return export_dir


# --- The frozen graph: preprocessed input in, probabilities out --------------------

def export_frozen_graph(source, path, num_classes):
    """Writes a GraphDef whose variables are constants: 'input:0' -> 'probabilities:0'."""
    size = preprocessing.IMAGE_SIZE
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, size, size, 3], name=INPUT_NAME)
        model = alexnet.AlexNet(x, num_classes=num_classes)
        tf.nn.softmax(model.fc8, name=OUTPUT_NAME)
        with tf.Session() as session:
            inference.initialize(session, model, source)
            check_finite(session, model, source)
            # Keeps only what 'probabilities' needs (drops the load-weight
            # placeholders), with each variable replaced by its current value.
            frozen = tf.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [OUTPUT_NAME])
    with open(path, 'wb') as f:
        f.write(frozen.SerializeToString())
    return path


def check_finite(session, model, source):
    """Refuses to export weights that hold NaN or infinity (a diverged run)."""
    values = model.read_weights(session)
    broken = [name for name in alexnet.LAYER_NAMES
              if not all(np.all(np.isfinite(array)) for array in values[name])]
    if broken:
        raise weight_files.WeightFileError(
            '%s: the weights of %s are not finite (a diverged run?); export an earlier '
            'checkpoint or the run\'s best/ folder' % (image_files.display_path(source),
                                                       ','.join(broken)))


# --- Putting it together --------------------------------------------------------

def export(source, out_dir, formats=FORMATS):
    """Exports `source` (weight file, checkpoint or run folder) into `out_dir`.

    Returns:
      dict {'class_names': path, 'savedmodel': path, 'frozen': path} of what was written.
    Raises:
      weight_files.WeightFileError: the source is missing or does not fit AlexNet.
    """
    source = inference.resolve_weights(source)
    num_classes = int(inference.num_classes_of(source))
    names = inference.class_names_for(source, num_classes)
    # Written beside --out and renamed when complete: a failed export leaves nothing.
    staging = out_dir.rstrip(os.sep) + '.partial'
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        run_folder.write_class_names(staging, names)     # one name per line
        names_file = os.path.join(staging, run_folder.CLASS_NAMES_FILE)
        if 'savedmodel' in formats:
            export_saved_model(source, os.path.join(staging, SAVED_MODEL_DIR), num_classes,
                               names, names_file)
        if 'frozen' in formats:
            export_frozen_graph(source, os.path.join(staging, FROZEN_GRAPH_FILE), num_classes)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)           # empty: main() refuses a folder with files
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    written = {'class_names': os.path.join(out_dir, run_folder.CLASS_NAMES_FILE)}
    if 'savedmodel' in formats:
        written['savedmodel'] = os.path.join(out_dir, SAVED_MODEL_DIR)
    if 'frozen' in formats:
        written['frozen'] = os.path.join(out_dir, FROZEN_GRAPH_FILE)
    return written


def parse_formats(text):
    formats = [name.strip() for name in text.split(',') if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise argparse.ArgumentTypeError('unknown format %s; choose from %s'
                                         % (', '.join(unknown) or "''", ','.join(FORMATS)))
    return formats


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description='Export AlexNet weights or a fine-tuning checkpoint to a SavedModel '
                    '(encoded images in, class probabilities out) and a frozen GraphDef.')
    parser.add_argument('--weights', required=True,
                        help='a .npy/.npz weight file, a checkpoint prefix '
                             '(logs/<run>/checkpoints/model.ckpt-<step>), a folder of '
                             'checkpoints, or a run folder (its newest complete checkpoint)')
    parser.add_argument('--out', required=True,
                        help='folder to create, e.g. exports/catsdogs')
    parser.add_argument('--format', type=parse_formats, default=','.join(FORMATS),
                        help='comma-separated: %s' % ', '.join(FORMATS))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)   # TF 2.x's deprecation notes on TF 1.x calls
    tf.disable_v2_behavior()
    return command_line.run_main(lambda: run(args), errors=(weight_files.WeightFileError,))


def run(args):
    if args.weights == inference.RANDOM_WEIGHTS:
        return command_line.fail('--weights none would export random weights; pass a weight '
                                 'file, a checkpoint or a run folder')
    if not os.path.exists(args.weights) and not os.path.isfile(args.weights + '.index'):
        return command_line.fail(
            '%s is neither a weight file nor a checkpoint; pass a .npy/.npz file, a checkpoint '
            'prefix such as logs/<run>/checkpoints/model.ckpt-100, or a run folder'
            % image_files.display_path(args.weights))
    if os.path.isdir(args.out) and os.listdir(args.out):
        return command_line.fail('%s already exists and is not empty; delete it or choose '
                                 'another --out' % image_files.display_path(args.out))
    try:
        written = export(args.weights, args.out, args.format)
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as err:
        return command_line.fail('%s: cannot read the checkpoint (%s); is it an AlexNet '
                                 'fine-tuning checkpoint?'
                                 % (image_files.display_path(args.weights),
                                    command_line.one_line(err)))
    print('exported %s:' % image_files.display_path(args.weights))
    print('  class names:  %s' % written['class_names'])
    if 'savedmodel' in written:
        print('  SavedModel:   %s  (inspect: saved_model_cli show --dir %s --all)'
              % (written['savedmodel'], written['savedmodel']))
    if 'frozen' in written:
        print("  frozen graph: %s  (input '%s:0' [N,227,227,3] preprocessed, output '%s:0')"
              % (written['frozen'], INPUT_NAME, OUTPUT_NAME))
    return command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
