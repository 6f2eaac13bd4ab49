"""Top-1 and top-5 error of AlexNet over a labelled image set (paper section 6, Table 2).

The paper reports error rates: the top-1 error is the fraction of images whose
most probable class is wrong, the top-5 error the fraction whose true class is
not among the 5 most probable. It tests two ways, and so does this script:

* center crop: scale the shorter side to 256, take the central 227x227
  (Caffe's bvlc_alexnet figures are measured so);
* 10 crops (section 4.1): the four corner crops and the center crop, each with
  its horizontal mirror; the network's softmax outputs on the 10 are averaged.

Both crops come from datagenerator.py (preprocess_for_eval, ten_crops), the one
home of preprocessing. The result is printed beside the paper's numbers.

Two kinds of labelled set:

    # ILSVRC-2012 validation layout: a folder of images and a ground-truth file
    python evaluate.py --images ILSVRC2012_img_val --labels val.txt
    # a fine-tuning run's held-out split (its split.json), with its latest checkpoint
    python evaluate.py --run logs/run1

Ground-truth file (--labels), one line per image, one of:

* ``LABEL``: one class index per line, for the folder's image files in sorted
  order of file name (ILSVRC2012_val_00000001.JPEG, ...). Indices are 0-based
  in bvlc_alexnet's output order (synset ids sorted, 0 = n01440764 tench);
  pass --one-based for a file that counts 1..1000 in that same order.
* ``FILE LABEL``: a file name and its label (Caffe's val.txt from
  get_ilsvrc_aux.sh is exactly this, 0-based); only the listed files are used.
* a WordNet id instead of a number (``n01751748`` or ``FILE n01751748``), e.g.
  TensorFlow's imagenet_2012_validation_synset_labels.txt.

The devkit's own ILSVRC2012_validation_ground_truth.txt is NOT in bvlc's
order: its numbers are ILSVRC2012_IDs 1..1000 in the order of the devkit's
meta.mat, and --one-based does not convert them (the error would be near 99.9%).
Use Caffe's val.txt or a WordNet-id list instead.

``--weights none`` evaluates random weights (chance level: 99.9% top-1 error on
ImageNet) and says so; it only tries the pipeline.

Deviations: the paper's 224x224 crops are 227x227 here, as bvlc_alexnet has
them; the corner crops are corners of the whole image scaled to shorter side
256, not of its central 256x256 square (see datagenerator.py).
"""
from __future__ import annotations

import argparse
import os
import re
import sys

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import alexnet
import class_names
import datagenerator
import figures
import validate_alexnet_on_imagenet as validate
import weight_files

CROPS = ('center', 'ten')         # the two ways to test, see the docstring
TOP_K = (1, 5)
BATCH_IMAGES = 8                  # images per forward pass (x 10 crops with 'ten')
SPLIT_FILE = 'split.json'         # written into a fine-tuning run's folder

# (what, top-1 error %, top-5 error %) on the ILSVRC-2012 validation set.
PAPER_RESULTS = (
    ('paper, one CNN, 10 crops (Table 2)', 40.7, 18.2),
    ('Caffe bvlc_alexnet, center crop', 42.9, 19.8),
)
CROP_DESCRIPTIONS = {'center': 'center crop', 'ten': '10 crops, softmax averaged'}
WNID = re.compile(r'^n\d{8}$')


class GroundTruthError(ValueError):
    """The ground-truth file does not fit the images or the model."""


# --- The measure -----------------------------------------------------------

def topk_error(probabilities, labels, k):
    """Fraction of rows whose label is not among the k highest probabilities.

    Args:
      probabilities: [N, C] scores (softmax outputs or logits: only the order counts).
      labels: [N] true class indices.
      k: 1 for the top-1 error, 5 for the top-5 error; at most C.
    Returns:
      float in 0..1. Ties are broken toward the lower class index.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError('need probabilities [N, C] and labels [N], got %s and %s'
                         % (probabilities.shape, labels.shape))
    if not 1 <= k <= probabilities.shape[1]:
        raise ValueError('k=%d but there are only %d classes' % (k, probabilities.shape[1]))
    if len(labels) == 0:
        raise ValueError('no images to measure')
    # Stable sort of the negated scores: the k best, lower index first among equals.
    top = np.argsort(-probabilities, axis=1, kind='stable')[:, :k]   # -> [N, k]
    hit = (top == labels[:, None]).any(axis=1)
    return 1.0 - float(hit.mean())


def average_crops(outputs, crops_per_image):
    """[N * crops, D] outputs, crops of one image together -> [N, D] mean per image."""
    outputs = np.asarray(outputs)
    return outputs.reshape(-1, crops_per_image, outputs.shape[-1]).mean(axis=1)


# --- Weights: a file, a checkpoint, a run folder, or random -----------------

def load_weights(session, model, weights):
    """Initializes all variables, then restores `weights` unless it is 'none'.

    Random weights come from the model's initializers (seed them with
    tf.set_random_seed before building the graph).
    """
    session.run(tf.global_variables_initializer())
    alexnet.restore_weights(session, model, weights)


def weights_label(weights):
    """What made a figure or a number, for titles: the weights, or a warning."""
    if weights == alexnet.RANDOM_WEIGHTS:
        return figures.RANDOM_WEIGHTS_NOTE + ' (--weights none)'
    return 'weights: %s' % weights


# --- Running the network over image files ----------------------------------

def model_outputs(paths, weights, layer='probabilities', crops=('center',),
                  num_classes=None, batch_images=BATCH_IMAGES, seed=0, progress=False):
    """Runs AlexNet over image files, one output row per image and crop mode.

    Args:
      paths: image files (any format PIL reads).
      weights: .npy/.npz, checkpoint, run folder, or 'none' (random, seeded).
      layer: 'probabilities' (softmax of fc8) or a layer attribute such as
        'fc7' (4096 features after ReLU, for retrieval).
      crops: any of 'center' and 'ten'; with 'ten' the outputs of the 10 crops
        of datagenerator.ten_crops are averaged.
      num_classes: fc8's outputs; default: read from `weights` (1000 if random).
      batch_images: images per forward pass.
      seed: graph seed for random weights.
      progress: show a tqdm bar on stderr.
    Returns:
      (outputs, used, failed): outputs {crop mode: float32 [len(used), D]};
      used, the paths read; failed, [(path, reason)] of unreadable files.
    Raises:
      weight_files.WeightFileError: the weights are missing or do not fit.
    """
    unknown = set(crops) - set(CROPS)
    if unknown or not crops:
        raise ValueError('crops must be some of %s, got %s' % (CROPS, list(crops)))
    crops = [mode for mode in CROPS if mode in crops]
    if num_classes is None:
        num_classes = alexnet.num_classes_of(weights)
    per_mode = {'center': 1, 'ten': 10}
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        image = tf.placeholder(tf.uint8, [None, None, 3], name='image')
        windows = []
        if 'center' in crops:
            windows.append(tf.expand_dims(datagenerator.preprocess_for_eval(image), 0))
        if 'ten' in crops:
            windows.append(datagenerator.ten_crops(image))          # -> [10, 227, 227, 3]
        windows = tf.concat(windows, axis=0)                     # -> [1, 10 or 11, 227, 227, 3]
        size = datagenerator.IMAGE_SIZE
        x = tf.placeholder(tf.float32, [None, size, size, 3], name='x')
        model = alexnet.AlexNet(x, num_classes=num_classes)
        output = tf.nn.softmax(model.fc8) if layer == 'probabilities' else getattr(model, layer)
        results = {mode: [] for mode in crops}
        used, failed = [], []
        with tf.Session() as session:
            load_weights(session, model, weights)
            bar = tqdm(total=len(paths), unit='image', disable=not progress)
            for start in range(0, len(paths), batch_images):
                batch = []
                for path in paths[start:start + batch_images]:
                    try:
                        rgb = datagenerator.read_image(path)
                    except datagenerator.ImageError as err:
                        failed.append((path, str(err)))
                        continue
                    batch.append(session.run(windows, {image: rgb}))
                    used.append(path)
                if not batch:
                    bar.update(len(paths[start:start + batch_images]))
                    continue
                rows = session.run(output, {x: np.concatenate(batch)})   # -> [B * crops, D]
                rows = rows.reshape(len(batch), -1, rows.shape[-1])       # -> [B, crops, D]
                offset = 0
                for mode in crops:
                    count = per_mode[mode]
                    window = rows[:, offset:offset + count].reshape(-1, rows.shape[-1])
                    results[mode].append(average_crops(window, count))    # -> [B, D]
                    offset += count
                bar.update(len(paths[start:start + batch_images]))
            bar.close()
    depth = output.shape.as_list()[-1]
    outputs = {mode: (np.concatenate(parts) if parts else np.zeros((0, depth), np.float32))
               for mode, parts in results.items()}
    return outputs, used, failed


# --- Labelled sets ---------------------------------------------------------

def _imagenet_wnids():
    """WordNet id -> bvlc_alexnet class index."""
    return {wnid: index for index, wnid in enumerate(class_names.imagenet_wnids())}


def read_ground_truth(path, one_based=False):
    """Reads a ground-truth file (formats in the module docstring).

    Returns:
      list of (file name or None, 0-based class index), in file order.
    Raises:
      GroundTruthError: unreadable line, mixed formats, unknown WordNet id.
    """
    if not os.path.isfile(path):
        raise GroundTruthError('%s: no such ground-truth file' % path)
    entries, wnids = [], None
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.rsplit(None, 1)          # file names may contain spaces
            name, label = (None, parts[0]) if len(parts) == 1 else parts
            if WNID.match(label):
                wnids = wnids or _imagenet_wnids()
                if label not in wnids:
                    raise GroundTruthError('%s line %d: %s is not one of the 1000 ILSVRC-2012 '
                                           'classes' % (path, number, label))
                index = wnids[label]
            elif re.match(r'^-?\d+$', label):
                index = int(label) - (1 if one_based else 0)
                if index < 0:
                    raise GroundTruthError(
                        '%s line %d: label %s is below %d; %s' % (
                            path, number, label, 1 if one_based else 0,
                            'drop --one-based: the file counts from 0' if one_based else
                            'labels are class indices'))
            else:
                raise GroundTruthError('%s line %d: %r is neither a class index nor a WordNet '
                                       'id; see `python evaluate.py --help`' % (path, number, line))
            entries.append((name, index))
    if not entries:
        raise GroundTruthError('%s: no labels in the file' % path)
    if len({name is None for name, _ in entries}) > 1:
        raise GroundTruthError('%s: some lines name a file and some do not; use one format'
                               % path)
    return entries


def imagenet_items(folder, ground_truth, one_based=False):
    """(path, label) pairs of an ILSVRC-2012 validation-style folder.

    Raises:
      GroundTruthError: the folder and the file do not match.
    """
    if not os.path.isdir(folder):
        raise GroundTruthError('%s: no such image folder' % folder)
    entries = read_ground_truth(ground_truth, one_based)
    paths = validate.image_paths(folder)
    if entries[0][0] is not None:
        # FILE LABEL lines: every listed file present in the folder is used.
        by_name = {os.path.basename(path): path for path in paths}
        items = [(by_name[name], label) for name, label in entries if name in by_name]
        if not items:
            raise GroundTruthError('none of the files %s lists is in %s' % (ground_truth, folder))
        return items
    if len(paths) != len(entries):
        raise GroundTruthError(
            '%s has %d images but %s has %d labels; a label-per-line file goes with the whole '
            'folder in sorted order; for a part of it use "FILE LABEL" lines'
            % (folder, len(paths), ground_truth, len(entries)))
    return [(path, label) for path, (_, label) in zip(paths, entries)]


def run_items(run_folder):
    """(path, label) pairs of a fine-tuning run's validation split, and its class names."""
    split = os.path.join(run_folder, SPLIT_FILE)
    if not os.path.isfile(split):
        raise GroundTruthError('%s: no %s; pass the folder of a fine-tuning run (logs/<run>), '
                               'or --images and --labels' % (run_folder, SPLIT_FILE))
    _, val_items, names = datagenerator.read_split(split)
    return [(path, int(label)) for path, label in val_items], names


def check_labels(items, num_classes, one_based=False):
    """Raises GroundTruthError if a label is not one of the model's classes."""
    highest = max(label for _, label in items)
    if highest >= num_classes:
        hint = ('the file seems to count from 1: pass --one-based (but see --help about the '
                "devkit's ILSVRC2012_validation_ground_truth.txt)" if not one_based
                and highest == num_classes else 'use weights with as many classes as the labels')
        raise GroundTruthError('label %d is out of range for a model of %d classes; %s'
                               % (highest + (1 if one_based else 0), num_classes, hint))


# --- Evaluation and report -------------------------------------------------

def evaluate(items, weights, crops=CROPS, num_classes=None, batch_images=BATCH_IMAGES,
             progress=False):
    """Top-1 and top-5 error of `weights` on labelled images.

    Returns:
      {'images': count measured, 'failed': [(path, reason)], 'num_classes': C,
       crop mode: {k: error in 0..1 for k in (1, 5) with k <= C}}.
    """
    if num_classes is None:
        num_classes = alexnet.num_classes_of(weights)
    label_of = dict(items)
    outputs, used, failed = model_outputs([path for path, _ in items], weights,
                                          crops=crops, num_classes=num_classes,
                                          batch_images=batch_images, progress=progress)
    if not used:
        raise GroundTruthError('none of the %d images could be read' % len(items))
    labels = np.array([label_of[path] for path in used])
    result = {'images': len(used), 'failed': failed, 'num_classes': num_classes}
    for mode, probabilities in outputs.items():
        result[mode] = {k: topk_error(probabilities, labels, k) for k in TOP_K
                        if k <= num_classes}
    return result


def format_report(result, weights):
    """The errors beside the paper's, as a text table."""
    def cell(errors, k):
        return '%5.1f%%' % (100 * errors[k]) if k in errors else '  n/a'

    lines = ['%s; %d images, %d classes' % (weights_label(weights), result['images'],
                                           result['num_classes'])]
    if result['failed']:
        lines.append('%d unreadable images left out, e.g. %s'
                     % (len(result['failed']), result['failed'][0][1]))
    width = 40
    lines.append('%-*s  top-1 error  top-5 error' % (width, ''))
    for mode in CROPS:
        if mode in result:
            lines.append('%-*s  %11s  %11s' % (width, 'this model, ' + CROP_DESCRIPTIONS[mode],
                                               cell(result[mode], 1), cell(result[mode], 5)))
    for what, top1, top5 in PAPER_RESULTS:
        lines.append('%-*s  %10.1f%%  %10.1f%%' % (width, what, top1, top5))
    if result['num_classes'] != alexnet.NUM_CLASSES:
        lines.append('(the published numbers are for the 1000 ImageNet classes; a model of %d '
                     'classes is not comparable)' % result['num_classes'])
    if result['num_classes'] < max(TOP_K):
        lines.append('(top-5 error needs at least 5 classes)')
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Top-1/top-5 error of AlexNet on a labelled image set, center crop and '
                    '10 crops, beside the paper. Ground-truth formats: see the top of '
                    "evaluate.py (the devkit's ILSVRC2012_validation_ground_truth.txt is "
                    "not in bvlc's class order: use Caffe's val.txt or WordNet ids).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_argument_group('labelled images (either --images and --labels, or --run)')
    source.add_argument('--images', help='folder of images, e.g. ILSVRC2012_img_val')
    source.add_argument('--labels', help='ground-truth file: a class index (or FILE INDEX, or '
                                         'WordNet id) per line')
    source.add_argument('--one-based', action='store_true',
                        help="labels count 1..1000 in bvlc order (not the devkit's IDs)")
    source.add_argument('--run', help="a fine-tuning run folder: evaluate its split.json's "
                                      'validation images')
    parser.add_argument('--weights', default=None,
                        help='.npy/.npz, checkpoint or run folder; "none" for random weights; '
                             'if not given: the --run folder, else %s'
                             % alexnet.DEFAULT_WEIGHTS_PATH)
    parser.add_argument('--crops', nargs='+', choices=CROPS, default=list(CROPS),
                        help='center crop and/or the 10 crops')
    parser.add_argument('--limit', type=int, default=None,
                        help='evaluate only the first N images (a quick check)')
    parser.add_argument('--batch-images', type=int, default=BATCH_IMAGES,
                        help='images per forward pass')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if (args.run and (args.images or args.labels)) or \
            (not args.run and not (args.images and args.labels)):
        print('error: give either --images DIR --labels FILE, or --run logs/<run>',
              file=sys.stderr)
        return 2
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    weights = args.weights or args.run or alexnet.DEFAULT_WEIGHTS_PATH
    if args.one_based:
        print("note: --one-based takes 1..1000 in bvlc order; the devkit's "
              'ILSVRC2012_validation_ground_truth.txt is in another order (see --help)',
              file=sys.stderr)
    try:
        if args.run:
            items, _ = run_items(args.run)
        else:
            items = imagenet_items(args.images, args.labels, args.one_based)
        items = items[:args.limit] if args.limit else items
        num_classes = alexnet.num_classes_of(weights)
        check_labels(items, num_classes, args.one_based)
        result = evaluate(items, weights, args.crops, num_classes, args.batch_images,
                          progress=True)
    except (GroundTruthError, weight_files.WeightFileError, datagenerator.DatasetError) as err:
        print('error: %s' % err, file=sys.stderr)
        if weights == alexnet.DEFAULT_WEIGHTS_PATH and not os.path.isfile(weights):
            print('(or pass --weights none to try the pipeline on random weights)',
                  file=sys.stderr)
        return 2
    print(format_report(result, weights))
    return 0


if __name__ == '__main__':
    sys.exit(main())
