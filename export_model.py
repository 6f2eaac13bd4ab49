"""Exports a trained AlexNet for use outside the course, the TensorFlow 1.x way.

Takes any weights this project has -- ``bvlc_alexnet.npy``, a fine-tuned
``weights.npz``, a tf.train.Saver checkpoint prefix, a folder with a
``checkpoint`` index, or a fine-tuning run folder (its latest checkpoint) --
and writes, under ``--out``:

* ``saved_model/``: a SavedModel (tf.saved_model.builder) for TensorFlow
  Serving, ``saved_model_cli`` or any TF. Its ``serving_default`` signature takes
  ``images``, a batch of encoded image files (JPEG, PNG, GIF, BMP: string [N]),
  decodes and preprocesses them inside the graph exactly like the course's
  evaluation (datagenerator.preprocess_for_eval: shorter side to 256, center
  227x227 crop, BGR minus the ImageNet mean), and returns ``probabilities``
  [N, C] (softmax of fc8, section 3 of the paper), the top-k ``classes`` [N, k],
  their ``scores`` and ``class_names``. The names are also an asset file.
* ``frozen_graph.pb``: a GraphDef with the weights folded into constants
  (tf.graph_util.convert_variables_to_constants): input ``input:0``, float32
  [N, 227, 227, 3] already preprocessed (datagenerator.rgb_to_model_input),
  output ``probabilities:0``. For tools that want one self-contained file.
* ``class_names.txt``: one name per output, in order.

    python export_model.py --weights logs/<run> --out exports/catsdogs
    python export_model.py --weights weights/bvlc_alexnet.npy --out exports/bvlc --format frozen

The number of classes comes from fc8's biases in the weights; the names from
the .npz, the run folder's class_names.txt, or ImageNet's for 1000 classes.
Dropout is off in both exports (keep_prob defaults to 1.0).

Deviation: the SavedModel decodes with TensorFlow's decoders, so that it needs
no Python at serving time; the course's scripts read files with PIL
(datagenerator.read_image). JPEG and PNG pixels come out the same (JPEGs
use PIL's accurate DCT), but EXIF rotation is not applied and an alpha channel
is dropped instead of being put on white.
"""
from __future__ import annotations

import argparse
import os
import sys

import tensorflow.compat.v1 as tf

import alexnet
import class_names
import datagenerator
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
    # integer DCT, as PIL does (datagenerator.read_image, used in training);
    # TensorFlow's default fast DCT changes pixels by a level or two.
    # expand_animations=False: a GIF gives its first frame, [H, W, 3] like the rest.
    image = tf.cond(
        tf.image.is_jpeg(encoded),
        lambda: tf.image.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
        lambda: tf.image.decode_image(encoded, channels=3, expand_animations=False))
    return datagenerator.preprocess_for_eval(image)


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
            session.run(tf.global_variables_initializer())
            alexnet.restore_weights(session, model, source)
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
    size = datagenerator.IMAGE_SIZE
    with tf.Graph().as_default() as graph:
        x = tf.placeholder(tf.float32, [None, size, size, 3], name=INPUT_NAME)
        model = alexnet.AlexNet(x, num_classes=num_classes)
        tf.nn.softmax(model.fc8, name=OUTPUT_NAME)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            alexnet.restore_weights(session, model, source)
            # Keeps only what 'probabilities' needs (drops the load-weight
            # placeholders), with each variable replaced by its current value.
            frozen = tf.graph_util.convert_variables_to_constants(
                session, graph.as_graph_def(), [OUTPUT_NAME])
    with open(path, 'wb') as f:
        f.write(frozen.SerializeToString())
    return path


# --- Putting it together --------------------------------------------------------

def export(source, out_dir, formats=FORMATS):
    """Exports `source` (weight file, checkpoint or run folder) into `out_dir`.

    Returns:
      dict {'class_names': path, 'savedmodel': path, 'frozen': path} of what was written.
    Raises:
      weight_files.WeightFileError: the source is missing or does not fit AlexNet.
    """
    num_classes = int(alexnet.num_classes_of(source))
    names = class_names.class_names_for(source, num_classes)
    os.makedirs(out_dir, exist_ok=True)
    class_names.write_run_class_names(out_dir, names)     # one name per line
    written = {'class_names': os.path.join(out_dir, class_names.RUN_CLASS_NAMES)}
    if 'savedmodel' in formats:
        written['savedmodel'] = export_saved_model(
            source, os.path.join(out_dir, SAVED_MODEL_DIR), num_classes, names,
            written['class_names'])
    if 'frozen' in formats:
        written['frozen'] = export_frozen_graph(
            source, os.path.join(out_dir, FROZEN_GRAPH_FILE), num_classes)
    return written


def parse_formats(text):
    formats = [name.strip() for name in text.split(',') if name.strip()]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise argparse.ArgumentTypeError('unknown format %s; choose from %s'
                                         % (', '.join(unknown) or "''", ','.join(FORMATS)))
    return formats


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Export AlexNet weights or a fine-tuning checkpoint to a SavedModel '
                    '(encoded images in, class probabilities out) and a frozen GraphDef.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--weights', required=True,
                        help='a .npy/.npz weight file, a checkpoint prefix '
                             '(logs/<run>/checkpoints/model.ckpt-<step>), a folder with a '
                             '`checkpoint` file, or a run folder (its latest checkpoint)')
    parser.add_argument('--out', required=True,
                        help='folder to create, e.g. exports/catsdogs')
    parser.add_argument('--format', type=parse_formats, default=','.join(FORMATS),
                        help='comma-separated: %s' % ', '.join(FORMATS))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if alexnet.checkpoint_of(args.weights) is None and not os.path.isfile(args.weights):
        sys.exit('error: %s is neither a weight file nor a checkpoint; pass a .npy/.npz '
                 'file, a checkpoint prefix such as logs/<run>/checkpoints/model.ckpt-100, '
                 'or a run folder' % args.weights)
    if os.path.isdir(args.out) and os.listdir(args.out):
        sys.exit('error: %s already exists and is not empty; delete it or choose another '
                 '--out' % args.out)
    tf.logging.set_verbosity(tf.logging.ERROR)   # TF 2.x's deprecation notes on TF 1.x calls
    tf.disable_v2_behavior()
    try:
        written = export(args.weights, args.out, args.format)
    except weight_files.WeightFileError as err:
        sys.exit('error: %s' % err)
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as err:
        sys.exit('error: %s: cannot read the checkpoint (%s); is it an AlexNet '
                 'fine-tuning checkpoint?' % (args.weights, err.message))
    print('exported %s:' % args.weights)
    print('  class names:  %s' % written['class_names'])
    if 'savedmodel' in written:
        print('  SavedModel:   %s  (inspect: saved_model_cli show --dir %s --all)'
              % (written['savedmodel'], written['savedmodel']))
    if 'frozen' in written:
        print("  frozen graph: %s  (input '%s:0' [N,227,227,3] preprocessed, output '%s:0')"
              % (written['frozen'], INPUT_NAME, OUTPUT_NAME))


if __name__ == '__main__':
    main()
