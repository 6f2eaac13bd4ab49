"""Inference: AlexNet with trained weights, run over image files.

Every script that uses a trained network (classify, evaluate, the feature maps,
retrieval, export) takes its weights from one --weights argument naming

* a weight file: bvlc_alexnet.npz (what download.py writes), the course's
  bvlc_alexnet.npy, Caffe's bvlc_alexnet.caffemodel, or a fine-tuned weights.npz;
* a checkpoint prefix: logs/<run>/checkpoints/model.ckpt-120;
* a run folder or a folder of checkpoints: its newest complete checkpoint;
* 'none' (RANDOM_WEIGHTS): the initial random weights, seeded, to try the
  pipeline; every output then says RANDOM WEIGHTS.

and runs the graph built here: a photo is read (image_files.read_image),
preprocessed on its own (preprocessing.preprocess_for_eval, or the paper's ten
crops), and the windows of several photos go through the network as one batch.

    outputs, used, failed = model_outputs(['a.jpg', 'b.png'], 'weights/bvlc_alexnet.npz')
    outputs['center']          # float32 [2, 1000] softmax probabilities

A photo that cannot be read is reported in `failed` and the others go on.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import alexnet
import class_names
import command_line
import image_files
import preprocessing
import run_folder
import weight_files

RANDOM_WEIGHTS = run_folder.RANDOM_START   # --weights none: random weights, said everywhere
RANDOM_WEIGHTS_NOTE = 'RANDOM WEIGHTS (untrained): not a trained AlexNet'
CROPS = ('center', 'ten')  # the center crop; the paper's 10 crops, softmax averaged
CROP_COUNTS = {'center': 1, 'ten': 10}
BATCH_SIZE = 8             # photos per forward pass (x 10 windows with 'ten')


# --- Weights from any source ---------------------------------------------------------

def weights_label(source):
    """What made a figure or a number, for titles: the weights, or a warning."""
    if source == RANDOM_WEIGHTS:
        return RANDOM_WEIGHTS_NOTE + ' (--weights none)'
    if run_folder.started_from_random(source):
        return ('weights: %s, trained from RANDOM WEIGHTS (--weights none, no pretraining)'
                % image_files.display_path(source))
    return 'weights: %s' % image_files.display_path(source)


def missing_weights_message(source):
    """What to do when the weights named are not there."""
    return ('no weights at %s; get the pretrained ones with `%s` (into weights/), or pass '
            '--weights none to try the pipeline on random weights'
            % (image_files.display_path(source),
               command_line.python_command('download.py', 'weights')))


def resolve_weights(source):
    """The checkpoint a run folder or checkpoint folder names (its newest complete one,
    with a note if a newer one is damaged), else source itself: resolve once, use often."""
    if source == RANDOM_WEIGHTS:
        return source
    if not os.path.exists(source) and not os.path.exists(source + '.index'):
        raise weight_files.WeightFileError(missing_weights_message(source))
    return _checkpoint(source) or source


def num_classes_of(source):
    """fc8's output count in a weight file, checkpoint or run folder (1000 for 'none').

    Raises:
      weight_files.WeightFileError: the source is missing or not AlexNet's.
    """
    if source == RANDOM_WEIGHTS:
        return alexnet.NUM_CLASSES
    checkpoint = _checkpoint(source)
    if checkpoint:
        try:
            return int(tf.train.load_variable(checkpoint, 'fc8/biases').shape[0])
        except Exception as err:        # a checkpoint of something else, or damaged
            raise weight_files.WeightFileError(
                '%s: no AlexNet fc8 in this checkpoint (%s); pass a fine-tuning run or its '
                'weights.npz' % (image_files.display_path(checkpoint),
                                 command_line.one_line(err))) from None
    layers = weight_files.load_weights(source, expected=alexnet.expected_weight_shapes)
    return layers['fc8'][1].shape[0]


def _checkpoint(source):
    try:
        return run_folder.checkpoint_of(source)
    except run_folder.RunFolderError as err:
        raise weight_files.WeightFileError(str(err)) from None


def class_names_for(source, num_classes, lang='en'):
    """Names for the outputs of a model loaded from `source`.

    A fine-tuned .npz carries its names; a run folder or a checkpoint inside one
    has class_names.txt; a 1000-class model is ImageNet. Otherwise 'class 0', ...
    """
    source = os.fspath(source)
    names = None
    if os.path.isfile(source):
        names = weight_files.load_class_names(source)
    if names is None:
        folder = source if os.path.isdir(source) else os.path.dirname(source)
        for candidate in (folder, os.path.dirname(folder)):
            names = run_folder.read_class_names(candidate)
            if names:
                break
    if names and len(names) == num_classes:
        return names
    if num_classes == 1000:
        return class_names.imagenet_class_names(lang)
    return class_names.fallback_names(num_classes)


def restore_weights(session, model, source):
    """Sets all of `model`'s layers from a weight file, checkpoint or run folder.

    With source 'none' (RANDOM_WEIGHTS) the variables keep their values.

    Raises:
      weight_files.WeightFileError: the source is missing or does not fit.
    """
    if source == RANDOM_WEIGHTS:
        return
    checkpoint = _checkpoint(source)
    if checkpoint is None:
        model.load_initial_weights(session, source, skip_layer=())
        return
    stored = dict(tf.train.list_variables(checkpoint))
    for layer, shapes in model.weight_shapes().items():
        for part, want in zip(('weights', 'biases'), shapes):
            found = stored.get(layer + '/' + part)
            if found is None or tuple(found) != want:
                raise weight_files.WeightFileError(
                    '%s: %s/%s is %s, the model expects %s; pass the checkpoint of a run '
                    'with the same classes'
                    % (image_files.display_path(checkpoint), layer, part,
                       'missing' if found is None else tuple(found), want))
    saver = tf.train.Saver({v.op.name: v for v in model.variables()})
    try:
        saver.restore(session, checkpoint)
    except tf.errors.OpError as err:
        raise weight_files.WeightFileError('%s: cannot restore (%s)' % (
            image_files.display_path(checkpoint), command_line.one_line(err))) from None


def initialize(session, model, source):
    """Initializes all variables, then restores `source` unless it is 'none'.

    Random weights come from the model's initializers (seed them with
    tf.set_random_seed before building the graph).
    """
    session.run(tf.global_variables_initializer())
    restore_weights(session, model, source)


# --- Running the network over image files ----------------------------------------------

def average_crops(outputs, crops_per_image):
    """[N * crops, D] outputs, crops of one image together -> [N, D] mean per image."""
    outputs = np.asarray(outputs)
    return outputs.reshape(-1, crops_per_image, outputs.shape[-1]).mean(axis=1)


def model_outputs(paths, weights, layer='probabilities', crops=('center',), num_classes=None,
                  batch_size=BATCH_SIZE, seed=0, progress=False, mean_image=None):
    """Runs AlexNet over image files, one output row per readable image and crop mode.

    Args:
      paths: image files (any format PIL reads).
      weights: a weight source (see the module docstring).
      layer: 'probabilities' (softmax of fc8) or a layer attribute such as
        'fc7' (4096 features after ReLU, for retrieval).
      crops: any of CROPS; with 'ten' the outputs of the 10 crops are averaged.
      num_classes: fc8's outputs; default: read from `weights` (1000 if random).
      batch_size: photos per forward pass.
      seed: graph seed for random weights.
      progress: show a progress bar on stderr.
      mean_image: None for this project's preprocessing (shorter side 256,
        mean pixel), else Caffe's (a 256x256 warp minus this float32 [256, 256, 3]
        BGR mean image or [3] mean pixel; preprocessing.caffe_warp).
    Returns:
      (outputs, used, failed): outputs {crop mode: float32 [len(used), D]};
      used, the paths read; failed, [(path, reason)] of files that could not be.
    Raises:
      weight_files.WeightFileError: the weights are missing or do not fit.
    """
    unknown = set(crops) - set(CROPS)
    if unknown or not crops:
        raise ValueError('crops must be some of %s, got %s' % (CROPS, list(crops)))
    crops = [mode for mode in CROPS if mode in crops]
    if num_classes is None:
        num_classes = num_classes_of(weights)
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        image = tf.placeholder(tf.uint8, [None, None, 3], name='image')
        windows = []
        if 'center' in crops:
            windows.append(tf.expand_dims(
                preprocessing.preprocess_for_eval(image) if mean_image is None
                else preprocessing.caffe_center_crop(image, mean_image), 0))
        if 'ten' in crops:
            windows.append(preprocessing.ten_crops(image) if mean_image is None
                           else preprocessing.caffe_ten_crops(image, mean_image))  # [10, ...]
        windows = tf.concat(windows, axis=0)                   # -> [1, 10 or 11, 227, 227, 3]
        size = preprocessing.IMAGE_SIZE
        x = tf.placeholder(tf.float32, [None, size, size, 3], name='x')
        model = alexnet.AlexNet(x, num_classes=num_classes)
        output = tf.nn.softmax(model.fc8) if layer == 'probabilities' else getattr(model, layer)
        results = {mode: [] for mode in crops}
        used, failed = [], []
        with tf.Session() as session:
            initialize(session, model, weights)
            session.graph.finalize()
            bar = tqdm(total=len(paths), unit='image', disable=not progress)
            for start in range(0, len(paths), batch_size):
                chunk = paths[start:start + batch_size]
                batch = []
                for path in chunk:
                    try:
                        batch.append(session.run(windows, {image: image_files.read_image(path)}))
                    except image_files.ImageError as err:
                        failed.append((path, str(err)))
                        continue
                    except tf.errors.OpError as err:    # e.g. out of memory for this photo
                        failed.append((path, '%s: %s' % (image_files.display_path(path),
                                                         command_line.one_line(err))))
                        continue
                    used.append(path)
                bar.update(len(chunk))
                if not batch:
                    continue
                rows = session.run(output, {x: np.concatenate(batch)})   # -> [B * crops, D]
                rows = rows.reshape(len(batch), -1, rows.shape[-1])       # -> [B, crops, D]
                offset = 0
                for mode in crops:
                    count = CROP_COUNTS[mode]
                    window = rows[:, offset:offset + count].reshape(-1, rows.shape[-1])
                    results[mode].append(average_crops(window, count))    # -> [B, D]
                    offset += count
            bar.close()
    depth = output.shape.as_list()[-1]
    outputs = {mode: (np.concatenate(parts) if parts else np.zeros((0, depth), np.float32))
               for mode, parts in results.items()}
    return outputs, used, failed
