"""Classify photos with AlexNet: the course's test of the pretrained bvlc_alexnet.

Each image is scaled (shorter side 256), center-cropped to 227x227 and fed to the
network (preprocessing.py); the softmax of fc8 gives the class probabilities,
printed as the top 5 and drawn as a figure with the top 3.

    python validate_alexnet_on_imagenet.py                  # every image in images/
    python validate_alexnet_on_imagenet.py a.jpg b.png --lang zh
    python validate_alexnet_on_imagenet.py --json
    python validate_alexnet_on_imagenet.py --weights logs/<run>/weights.npz my_cat.jpg

--weights takes the bvlc .npy, a fine-tuned .npz, a checkpoint or a run folder;
`--weights none` runs random weights to try the pipeline (its answers are noise,
and it says so).

Exit status: 0 all classified; 1 some image unreadable (reported; the others
are still classified); 2 no usable weights, no images or bad arguments.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf

import alexnet
import class_names
import command_line
import figures
import image_files
import inference
import weight_files

IMAGE_DIR = 'images'
DEFAULT_FIGURE = os.path.join('logs', 'validation_results.png')


def classify(paths, weights=alexnet.DEFAULT_WEIGHTS_PATH, lang='en', top_k=5, seed=0,
             batch_size=inference.BATCH_SIZE):
    """Classifies image files.

    Args:
      paths: image files.
      weights: a weight source (inference.py); 'none' for random weights.
      lang: 'en' or 'zh' class names.
      top_k: how many classes to report per image.
      seed: for random weights, so that a demo repeats.
    Returns:
      one dict per path, in order: {'image': path, 'top': [{'index', 'name',
      'prob'}, ...]}, or {'image': path, 'error': message} if it could not be read.
    Raises:
      weight_files.WeightFileError: the weights are missing or do not fit.
    """
    num_classes = inference.num_classes_of(weights)
    names = inference.class_names_for(weights, num_classes, lang)
    outputs, used, failed = inference.model_outputs(paths, weights, crops=('center',),
                                                    num_classes=num_classes,
                                                    batch_size=batch_size, seed=seed)
    probabilities = dict(zip(used, outputs['center']))
    errors = dict(failed)
    results = []
    for path in paths:
        if path in errors:
            results.append({'image': path, 'error': errors[path]})
            continue
        prob = probabilities[path]
        top = np.argsort(-prob, kind='stable')[:top_k]
        results.append({'image': path, 'top': [
            {'index': int(i), 'name': names[i], 'prob': float(prob[i])} for i in top]})
    return results


def format_results(results):
    lines = []
    for result in results:
        lines.append(image_files.display_path(result['image']))
        if 'error' in result:
            lines.append('  error: ' + result['error'])
            continue
        for entry in result['top']:
            lines.append('  %4d  %6.2f%%  %s' % (entry['index'], 100 * entry['prob'], entry['name']))
    return '\n'.join(lines)


def save_figure(results, path, english_names=None, note=None):
    """Draws the classified images with their top 3 labels; returns the path, or None.

    Chinese class names are drawn with a font that has their characters
    (figures.cjk_font). Where this machine has none, english_names (indexed by
    class) replace them, and a note on stderr says so.
    """
    shown, images = [], []
    for result in results:
        if 'top' not in result:
            continue
        try:
            images.append(image_files.read_image(result['image']))
        except image_files.ImageError:      # changed since it was classified
            continue
        shown.append(result)
    if not shown:
        return None
    captions = [_caption(result) for result in shown]
    font = None
    if figures.has_cjk(''.join(captions)):
        font = figures.cjk_font(''.join(captions))
        if font is None:
            if english_names:
                captions = [_caption(result, english_names) for result in shown]
            drawn = ('shows them as boxes' if figures.has_cjk(''.join(captions))
                     else 'names the classes in English')
            print('note: no installed font has these Chinese characters (Debian/Ubuntu: '
                  'apt-get install fonts-noto-cjk); the figure %s' % drawn, file=sys.stderr)
    return figures.save_labelled_images(images, captions, path, title=note, font=font)


def _caption(result, names=None):
    """An image's file name and its top 3 as lines; class names from `names` if given."""
    lines = [image_files.display_path(os.path.basename(result['image']))]
    for entry in result['top'][:3]:
        name = names[entry['index']] if names else entry['name']
        lines.append('%5.1f%% %s' % (100 * entry['prob'], name.split(',')[0][:28]))
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = command_line.ArgumentParser(
        description='Classify images with AlexNet and print the top classes.')
    parser.add_argument('images', nargs='*',
                        help='image files or folders (default: every image in %s/)' % IMAGE_DIR)
    command_line.add_weights(parser, alexnet.DEFAULT_WEIGHTS_PATH)
    parser.add_argument('--lang', choices=sorted(class_names.LANGUAGES), default='en',
                        help='language of the class names')
    parser.add_argument('--top-k', type=command_line.positive_int, default=5,
                        help='classes to print per image')
    parser.add_argument('--json', action='store_true', help='print one JSON list instead')
    command_line.add_out(parser, DEFAULT_FIGURE, "PNG of the images with their top 3 ('' for none)")
    command_line.add_batch_size(parser, inference.BATCH_SIZE)
    command_line.add_seed(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return command_line.run_main(lambda: run(args), errors=(weight_files.WeightFileError,))


def run(args):
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    paths, skipped = image_files.image_paths(args.images or [IMAGE_DIR], recursive=False)
    for path, reason in skipped:
        print('skipped %s: %s' % (image_files.display_path(path), reason), file=sys.stderr)
    if not paths:
        return command_line.fail('no images to classify in %s' % ', '.join(
            image_files.display_path(p) for p in (args.images or [IMAGE_DIR])))
    weights = inference.resolve_weights(args.weights)
    results = classify(paths, weights, args.lang, args.top_k, args.seed, args.batch_size)
    note = None
    if args.weights == inference.RANDOM_WEIGHTS:
        note = 'RANDOM WEIGHTS (--weights none): these predictions are noise, not AlexNet\'s'
    # With --json, stdout holds only the JSON; everything else goes to stderr.
    report = sys.stderr if args.json else sys.stdout
    if note:
        print(note, file=report)
    if args.json:
        shown = [dict(result, image=image_files.display_path(result['image']))
                 for result in results]
        print(json.dumps(shown, ensure_ascii=False, indent=1))
    else:
        print(format_results(results))
    if args.out:
        english = None
        if args.lang != 'en':  # for the figure, should no font here draw Chinese
            english = inference.class_names_for(weights, inference.num_classes_of(weights))
        figure = save_figure(results, args.out, english, note)
        if figure:
            print('figure: %s' % image_files.display_path(figure), file=report)
    failed = [r for r in results if 'error' in r]
    if failed or skipped:
        print('%d of %d images could not be read' % (len(failed) + len(skipped),
                                                     len(results) + len(skipped)),
              file=sys.stderr)
        return command_line.EXIT_PARTIAL
    return command_line.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
