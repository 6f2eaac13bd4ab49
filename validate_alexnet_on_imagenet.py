"""Classify photos with AlexNet: the course's test of the pretrained bvlc_alexnet.

Each image is scaled (shorter side 256), center-cropped to 227x227 and fed to the
network (preprocessing from datagenerator.py); the softmax of fc8 gives the
class probabilities, printed as the top 5 and drawn as a figure with the top 3.

    python validate_alexnet_on_imagenet.py                  # every image in images/
    python validate_alexnet_on_imagenet.py a.jpg b.png --lang zh
    python validate_alexnet_on_imagenet.py --json
    python validate_alexnet_on_imagenet.py --weights logs/<run>/weights.npz my_cat.jpg

--weights takes the bvlc .npy, a fine-tuned .npz, a checkpoint or a run folder;
`--weights none` runs random weights to try the pipeline (its answers are noise,
and it says so).

Exit status: 0 all classified, 1 some image unreadable (the others are still
classified), 2 no usable weights or bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import tensorflow.compat.v1 as tf

import alexnet
import class_names
import datagenerator
import figures
import weight_files

IMAGE_DIR = 'images'
DEFAULT_FIGURE = os.path.join('logs', 'validation_results.png')


def image_paths(folder):
    """The image files of a folder, sorted."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(datagenerator.IMAGE_EXTENSIONS))


def classify(paths, weights=alexnet.DEFAULT_WEIGHTS_PATH, lang='en', top_k=5, seed=0):
    """Classifies image files.

    Args:
      paths: image files.
      weights: .npy/.npz file, checkpoint or run folder; 'none' for random weights.
      lang: 'en' or 'zh' class names.
      top_k: how many classes to report per image.
      seed: for random weights, so that a demo repeats.
    Returns:
      (results, images): results has one dict per path, {'image': path, 'top':
      [{'index', 'name', 'prob'}, ...]} or {'image': path, 'error': message};
      images maps each readable path to its RGB array.
    Raises:
      weight_files.WeightFileError: the weights are missing or do not fit.
    """
    num_classes = alexnet.num_classes_of(weights)
    names = (class_names.imagenet_class_names(lang) if weights == alexnet.RANDOM_WEIGHTS
             else class_names.class_names_for(weights, num_classes, lang))
    results, images = [], {}
    with tf.Graph().as_default():
        tf.set_random_seed(seed)
        image = tf.placeholder(tf.uint8, [None, None, 3], name='image')
        x = tf.expand_dims(datagenerator.preprocess_for_eval(image), 0)  # -> [1, 227, 227, 3]
        model = alexnet.AlexNet(x, num_classes=num_classes)
        probabilities = tf.nn.softmax(model.fc8)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            alexnet.restore_weights(session, model, weights)
            for path in paths:
                try:
                    rgb = datagenerator.read_image(path)
                except datagenerator.ImageError as err:
                    results.append({'image': path, 'error': str(err)})
                    continue
                images[path] = rgb
                prob = session.run(probabilities, {image: rgb})[0]
                top = np.argsort(-prob)[:top_k]
                results.append({'image': path, 'top': [
                    {'index': int(i), 'name': names[i], 'prob': float(prob[i])} for i in top]})
    return results, images


def format_results(results):
    lines = []
    for result in results:
        lines.append(result['image'])
        if 'error' in result:
            lines.append('  error: ' + result['error'])
            continue
        for entry in result['top']:
            lines.append('  %4d  %6.2f%%  %s' % (entry['index'], 100 * entry['prob'], entry['name']))
    return '\n'.join(lines)


def save_figure(results, images, path, english_names=None, note=None):
    """Draws the classified images with their top 3 labels."""
    shown = [r for r in results if 'top' in r]
    captions = []
    for result in shown:
        lines = [os.path.basename(result['image'])]
        for entry in result['top'][:3]:
            # Figures use English names: matplotlib's default font has no Chinese glyphs.
            name = english_names[entry['index']] if english_names else entry['name']
            lines.append('%5.1f%% %s' % (100 * entry['prob'], name.split(',')[0][:28]))
        captions.append('\n'.join(lines))
    return figures.save_labelled_images([images[r['image']] for r in shown], captions, path,
                                        title=note)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Classify images with AlexNet and print the top classes.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('images', nargs='*',
                        help='image files (default: every image in %s/)' % IMAGE_DIR)
    parser.add_argument('--weights', default=alexnet.DEFAULT_WEIGHTS_PATH,
                        help="bvlc_alexnet.npy, a fine-tuned .npz, a checkpoint or run folder; "
                             "'none' for random weights")
    parser.add_argument('--lang', choices=sorted(class_names.LANGUAGES), default='en',
                        help='language of the class names')
    parser.add_argument('--top-k', type=int, default=5, help='classes to print per image')
    parser.add_argument('--json', action='store_true', help='print one JSON list instead')
    parser.add_argument('--figure', default=DEFAULT_FIGURE,
                        help="PNG of the images with their top 3 ('' for none)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error('--top-k must be at least 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    tf.logging.set_verbosity(tf.logging.ERROR)
    tf.disable_v2_behavior()
    paths = args.images or image_paths(IMAGE_DIR)
    if not paths:
        print('error: no images given and none in %s/' % IMAGE_DIR, file=sys.stderr)
        return 2
    if args.weights != alexnet.RANDOM_WEIGHTS and alexnet.checkpoint_of(args.weights) is None \
            and not os.path.isfile(args.weights):
        print('error: no weights at %s. The pretrained bvlc_alexnet.npy (233 MB) goes in weights/: '
              'run `python download.py weights`, which fetches it from '
              'http://www.cs.toronto.edu/~guerzhoy/tf_alexnet/bvlc_alexnet.npy '
              "(or pass --weights none to try the pipeline on random weights)" % args.weights,
              file=sys.stderr)
        return 2
    try:
        results, images = classify(paths, args.weights, args.lang, args.top_k)
    except weight_files.WeightFileError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    note = None
    if args.weights == alexnet.RANDOM_WEIGHTS:
        note = 'RANDOM WEIGHTS (--weights none): these predictions are noise, not AlexNet\'s'
    # With --json, stdout holds only the JSON; everything else goes to stderr.
    report = sys.stderr if args.json else sys.stdout
    if note:
        print(note, file=report)
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=1))
    else:
        print(format_results(results))
    if args.figure and images:
        english = None
        if args.lang != 'en':  # the figure's font has no Chinese glyphs: label it in English
            english = (class_names.imagenet_class_names('en')
                       if args.weights == alexnet.RANDOM_WEIGHTS else
                       class_names.class_names_for(args.weights, alexnet.num_classes_of(args.weights)))
        print('figure: %s' % save_figure(results, images, args.figure, english, note), file=report)
    failed = [r for r in results if 'error' in r]
    if failed:
        print('%d of %d images could not be read' % (len(failed), len(results)), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
