"""Top-1 and top-5 error of AlexNet over a labelled image set (paper section 6, Table 2).

The paper reports error rates: the top-1 error is the fraction of images whose
most probable class is wrong, the top-5 error the fraction whose true class is
not among the 5 most probable. It tests two ways, and so does this script:

* center crop: scale the shorter side to 256, take the central 227x227
  (Caffe's bvlc_alexnet figures are measured so);
* 10 crops (section 4.1): the four corner crops and the center crop, each with
  its horizontal mirror; the network's softmax outputs on the 10 are averaged.

Both crops come from preprocessing.py (preprocess_for_eval, ten_crops), the one
home of preprocessing, run by inference.py. The result is printed beside the paper's numbers.

Two ways to prepare a photo (--preprocess):

* paper (default): shorter side scaled to 256, minus the mean pixel, as the
  paper describes and as this project trains;
* caffe: what Caffe's tools did for bvlc_alexnet's published top-1 57.1% and
  top-5 80.2% (errors 42.9% and 19.8%): every photo warped to 256x256 with
  bilinear interpolation (pixel centers at +0.5, as OpenCV's cv::resize), kept
  as 8-bit pixels, minus Caffe's 256x256 mean image (--mean, from
  `download.py weights`), then the central 227x227 (offset 14). With the real
  weights and the ILSVRC-2012 validation set this reproduces the published figure.

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
256, not of its central 256x256 square (see preprocessing.py).
"""
from __future__ import annotations

import os
import sys

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf

import alexnet
import caffemodel
import command_line
import datasets
import image_files
import inference
import preprocessing
import run_folder
import weight_files
from datasets import GroundTruthError, imagenet_items, read_ground_truth  # noqa: F401
from inference import CROPS

TOP_K = (1, 5)

# (what, top-1 error %, top-5 error %) on the ILSVRC-2012 validation set.
PAPER_RESULTS = (
    ('paper, one CNN, 10 crops (Table 2)', 40.7, 18.2),
    ('Caffe bvlc_alexnet, center crop (caffe)', 42.9, 19.8),   # its 57.1% / 80.2% accuracy
)
PREPROCESSING = ('paper', 'caffe')
DEFAULT_MEAN = 'weights/imagenet_mean.binaryproto'
PREPROCESSING_DESCRIPTIONS = {
    'paper': 'preprocessing: shorter side 256, mean pixel (the paper, this project)',
    'caffe': "preprocessing: warped to 256x256, mean image (Caffe's tools, its published figure)",
}
CROP_DESCRIPTIONS = {'center': 'center crop', 'ten': '10 crops, softmax averaged'}

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


# --- Labelled sets ---------------------------------------------------------

def run_items(run):
    """(path, label) pairs of a fine-tuning run's validation split, and its class names."""
    split = os.path.join(run, run_folder.SPLIT_FILE)
    if not os.path.isfile(split):
        raise GroundTruthError('%s: no %s; pass the folder of a fine-tuning run (logs/<run>), '
                               'or --images and --labels'
                               % (image_files.display_path(run), run_folder.SPLIT_FILE))
    _, val_items, names = datasets.read_split(split)
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

def evaluate(items, weights, crops=CROPS, num_classes=None, batch_size=inference.BATCH_SIZE,
             progress=False, mean_image=None):
    """Top-1 and top-5 error of `weights` on labelled images.

    Returns:
      {'images': count measured, 'failed': [(path, reason)], 'num_classes': C,
       crop mode: {k: error in 0..1 for k in (1, 5) with k <= C}}.
    """
    if num_classes is None:
        num_classes = inference.num_classes_of(weights)
    label_of = dict(items)
    outputs, used, failed = inference.model_outputs(
        [path for path, _ in items], weights, crops=crops, num_classes=num_classes,
        batch_size=batch_size, progress=progress, mean_image=mean_image)
    if not used:
        raise GroundTruthError('none of the %d images could be read' % len(items))
    labels = np.array([label_of[path] for path in used])
    result = {'images': len(used), 'failed': failed, 'num_classes': num_classes}
    for mode, probabilities in outputs.items():
        result[mode] = {k: topk_error(probabilities, labels, k) for k in TOP_K
                        if k <= num_classes}
    return result


def format_report(result, weights, preprocess='paper'):
    """The errors beside the paper's, as a text table."""
    def cell(errors, k):
        return '%5.1f%%' % (100 * errors[k]) if k in errors else '  n/a'

    lines = ['%s; %d images, %d classes' % (inference.weights_label(weights), result['images'],
                                           result['num_classes']),
             PREPROCESSING_DESCRIPTIONS[preprocess]]
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


def caffe_mean(path):
    """The mean to subtract in Caffe's preprocessing: float32 [256, 256, 3] BGR, or the pixel."""
    if path == 'pixel':
        return np.array(preprocessing.IMAGENET_MEAN_BGR, np.float32)
    if not os.path.isfile(path):
        raise GroundTruthError('%s: no such mean image; `%s` fetches it, or pass --mean pixel '
                               'for the mean pixel (close to, not exactly, Caffe\'s figure)'
                               % (image_files.display_path(path),
                                  command_line.python_command('download.py', 'weights')))
    return caffemodel.read_mean_image(path).transpose(1, 2, 0)     # [3, H, W] -> [H, W, 3]


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description='Top-1/top-5 error of AlexNet on a labelled image set, center crop and '
                    '10 crops, beside the paper. Ground-truth formats: see the top of '
                    "evaluate.py (the devkit's ILSVRC2012_validation_ground_truth.txt is "
                    "not in bvlc's class order: use Caffe's val.txt or WordNet ids).")
    source = parser.add_argument_group('labelled images (either --images and --labels, or --run)')
    source.add_argument('--images', help='folder of images, e.g. ILSVRC2012_img_val')
    source.add_argument('--labels', help='ground-truth file: a class index (or FILE INDEX, or '
                                         'WordNet id) per line')
    source.add_argument('--one-based', action='store_true',
                        help="labels count 1..1000 in bvlc order (not the devkit's IDs)")
    source.add_argument('--run', help="a fine-tuning run folder: evaluate its split.json's "
                                      'validation images')
    command_line.add_weights(parser, None, 'the weights (default: the --run folder, else %s)'
                             % alexnet.DEFAULT_WEIGHTS_PATH)
    parser.add_argument('--preprocess', choices=PREPROCESSING, default='paper',
                        help="paper: shorter side to 256, minus the mean pixel (this project's "
                             "way); caffe: warped to 256x256, minus Caffe's mean image, as "
                             "Caffe's published 57.1%% / 80.2%% were measured")
    parser.add_argument('--mean', default=DEFAULT_MEAN,
                        help="with --preprocess caffe: Caffe's imagenet_mean.binaryproto "
                             "(`download.py weights` fetches it), or 'pixel' for the mean pixel")
    parser.add_argument('--crops', nargs='+', choices=CROPS, default=list(CROPS),
                        help='center crop and/or the 10 crops')
    parser.add_argument('--limit', type=command_line.positive_int, default=None,
                        help='evaluate only the first N images (a quick check)')
    command_line.add_batch_size(parser, inference.BATCH_SIZE,
                                'images per forward pass (x 10 windows with the 10 crops)')
    command_line.add_progress(parser)
    args = parser.parse_args(argv)
    if (args.run and (args.images or args.labels)) or \
            (not args.run and not (args.images and args.labels)):
        parser.error('give either --images DIR --labels FILE, or --run logs/<run>')
    return args


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    return command_line.run_main(lambda: run(args), errors=(
        GroundTruthError, weight_files.WeightFileError, datasets.DatasetError))


def run(args):
    weights = inference.resolve_weights(args.weights or args.run or alexnet.DEFAULT_WEIGHTS_PATH)
    if args.one_based:
        print("note: --one-based takes 1..1000 in bvlc order; the devkit's "
              'ILSVRC2012_validation_ground_truth.txt is in another order (see --help)',
              file=sys.stderr)
    if args.run:
        items, _ = run_items(args.run)
    else:
        items = imagenet_items(args.images, args.labels, args.one_based)
    items = items[:args.limit] if args.limit else items
    num_classes = inference.num_classes_of(weights)
    check_labels(items, num_classes, args.one_based)
    mean_image = caffe_mean(args.mean) if args.preprocess == 'caffe' else None
    result = evaluate(items, weights, args.crops, num_classes, args.batch_size,
                      progress=not args.no_progress, mean_image=mean_image)
    print(format_report(result, weights, args.preprocess))
    return command_line.EXIT_PARTIAL if result['failed'] else command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
