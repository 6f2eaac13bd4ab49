"""Class names: the 1000 ImageNet classes of bvlc_alexnet, in English and Chinese.

The ImageNet names (English WordNet lemmas and Chinese) come from
imagenet_classes.tsv, in the order of the weights' fc8 outputs (synset ids
sorted; index 0 is n01440764, tench). See CREDITS.md for their sources.
"""
from __future__ import annotations

import csv
import os

IMAGENET_TSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imagenet_classes.tsv')
LANGUAGES = {'en': 'name', 'zh': 'name_zh'}


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


def fallback_names(count):
    """Names for classes nobody named: 'class 0', 'class 1', ..."""
    return ['class %d' % i for i in range(count)]
