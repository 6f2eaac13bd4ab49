"""Class names: the 1000 ImageNet classes of bvlc_alexnet, and those of a fine-tuned model.

The ImageNet names (English WordNet lemmas and Chinese) come from
imagenet_classes.tsv, in the order of the weights' fc8 outputs (synset ids
sorted; index 0 is n01440764, tench). See CREDITS.md for their sources.
"""
from __future__ import annotations

import csv
import os

import weight_files

IMAGENET_TSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imagenet_classes.tsv')
LANGUAGES = {'en': 'name', 'zh': 'name_zh'}
RUN_CLASS_NAMES = 'class_names.txt'   # written into a fine-tuning run's folder


def _imagenet_rows():
    with open(IMAGENET_TSV, encoding='utf-8', newline='') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    if [int(row['index']) for row in rows] != list(range(1000)):
        raise ValueError('%s: expected the 1000 classes in order 0..999' % IMAGENET_TSV)
    return rows


def imagenet_class_names(lang='en'):
    """The 1000 ILSVRC-2012 class names in bvlc_alexnet's output order.

    Args:
      lang: 'en' (WordNet lemmas, e.g. 'ice bear, polar bear, ...') or 'zh'.
    """
    if lang not in LANGUAGES:
        raise ValueError('unknown language %r; choose from %s' % (lang, ', '.join(LANGUAGES)))
    return [row[LANGUAGES[lang]] for row in _imagenet_rows()]


def imagenet_wnids():
    """The 1000 WordNet ids (e.g. 'n01440764') in bvlc_alexnet's output order."""
    return [row['wnid'] for row in _imagenet_rows()]


def read_run_class_names(folder):
    """The class names a fine-tuning run stored in its folder, or None."""
    path = os.path.join(folder, RUN_CLASS_NAMES)
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return [line.rstrip('\n') for line in f if line.strip()]


def write_run_class_names(folder, names):
    with open(os.path.join(folder, RUN_CLASS_NAMES), 'w', encoding='utf-8') as f:
        f.write(''.join(name + '\n' for name in names))


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
            names = read_run_class_names(candidate)
            if names:
                break
    if names and len(names) == num_classes:
        return names
    if num_classes == 1000:
        return imagenet_class_names(lang)
    return ['class %d' % i for i in range(num_classes)]
