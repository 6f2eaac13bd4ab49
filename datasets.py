"""Datasets: a dataset's photos and labels, its training/validation split, and which photos decode.

A fine-tuning run (finetune.py) starts here:

    dataset = find_dataset('data/PetImages')            # files, labels, class names
    train, val = split_dataset(dataset.items, val_fraction=0.1, seed=0)
    train, bad = scan_images(train, cache_dir='logs/.scan-cache')

Three layouts are understood (and, with find_imagenet, ILSVRC-2012's train/:
one folder per WordNet id, labelled in bvlc_alexnet's order of the 1000 classes):

* a folder per class: PetImages/Cat/*.jpg, PetImages/Dog/*.jpg (class folders
  are searched recursively; images directly in the top folder are then
  ignored); class names are the folder names, sorted;
* Kaggle's flat folder: train/cat.0.jpg, train/dog.0.jpg (the class is the
  name before the first dot);
* a text file, one "<path> <label>" per line, the course's format: the path
  may contain spaces (the label is the last word), relative paths start at the
  list file's folder, labels are 0..K-1 with every class present; blank lines
  and lines starting with '#' are skipped. Class names come from
  class_names.txt beside it (one per line, K of them), else 'class 0', ...

Folders are walked by image_files.list_images: links cannot loop, multiply
photos or pull one class's photos into another, FIFOs and devices are never
opened; what it skips is reported, not fatal. The same file in two classes is
kept in the first only.

The split is stratified (each class gives the same share to validation) and
depends only on the set of files, the fraction and the seed. scan_images
decodes every photo once and drops those that fail (Microsoft's PetImages has
zero-byte files, truncated JPEGs and text files named .jpg), remembering each
result by (path, size, mtime) so an unchanged dataset is not scanned again.
"""
from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import re
import sys

import numpy as np
from tqdm import tqdm

import class_names as class_names_module
import image_files
from image_files import display_path

CLASS_NAMES_FILE = 'class_names.txt'   # optional, beside a list file: one name per line
SCAN_CACHE_FILE = 'image_scan_cache.json'
MAX_CLASSES = 100000        # labels of a list file: 0..K-1 with K at most this
MAX_LIST_LINE = 8192        # characters in one line of a list file
SHOWN_SKIPPED = 10          # skipped files printed before '... and N more'

# items: [(path, label)]; class_names: one per label; skipped: [(path, reason)].
Dataset = collections.namedtuple('Dataset', 'items class_names skipped')

# Kaggle's flat train/: <class>.<id>.<ext>, e.g. cat.123.jpg -> 'cat'.
WNID = re.compile(r'^n\d{8}$')     # a WordNet id, ILSVRC-2012's class folders
_KAGGLE_NAME = re.compile(r'^([A-Za-z][^.]*)\..+\.[^.]+$')

_LAYOUTS_HINT = ('pass a folder with one sub-folder of images per class (e.g. PetImages '
                 'with Cat/ and Dog/), Kaggle\'s flat train/ folder (cat.0.jpg, dog.0.jpg), '
                 'or a text file with one "<path> <label>" per line')


class DatasetError(ValueError):
    """A dataset path, list file or split file cannot be used (the message says why)."""


class GroundTruthError(DatasetError):
    """A ground-truth file does not fit the images or the model."""


# --- Finding a dataset ----------------------------------------------------

def find_dataset(path):
    """Lists a dataset's images and labels (layouts in the module docstring).

    Returns:
      Dataset(items, class_names, skipped): items a list of (file path, int
      label), labels indexing class_names; skipped, files and folders left out
      with the reason (links into other classes, FIFOs, duplicates, ...).

    Raises:
      DatasetError: missing path, no images, one class only, a bad list line.
    """
    if not os.path.exists(path):
        raise DatasetError('%s does not exist; %s' % (display_path(path), _LAYOUTS_HINT))
    if os.path.isdir(path):
        return _find_in_folder(path)
    return _read_list_file(path)


def _kaggle_classes(names):
    """Class of each Kaggle-style file name, or None for names that are not."""
    return [(match.group(1) if match else None)
            for match in (_KAGGLE_NAME.match(name) for name in names)]


def _class_folders(path):
    """The candidate class folders of path: ({name: folder}, skipped)."""
    root = os.path.realpath(path)
    folders, reals, skipped = {}, {}, []
    for name in sorted(os.listdir(path)):
        folder = os.path.join(path, name)
        if name.startswith('.') or not os.path.isdir(folder):
            continue
        real = os.path.realpath(folder)
        if real == root or root.startswith(real.rstrip(os.sep) + os.sep):
            skipped.append((folder, 'a link to a folder that holds the dataset; skipped'))
        elif real in reals:
            skipped.append((folder, 'the same folder as %s; skipped'
                            % display_path(reals[real])))
        else:
            folders[name] = folder
            reals[real] = folder
    return folders, skipped


def _find_in_folder(path):
    folders, skipped = _class_folders(path)
    class_images = {}
    for name, folder in folders.items():
        others = [other for other in folders.values() if other != folder]
        images, refused = image_files.list_images(folder, exclude=others)
        skipped.extend(refused)
        if images:
            class_images[name] = images
    if class_images:
        return _folder_classes(path, class_images, skipped)
    loose, refused = image_files.list_images(path, recursive=False)
    if not loose:
        raise DatasetError('no images in %s; %s' % (display_path(path), _LAYOUTS_HINT))
    return _kaggle_folder(path, loose, skipped + refused)


def _without_repeats(items, skipped):
    """Keeps each file (by device and inode) once: a file reached again in the same
    class is dropped there; a file in two classes is left out of both (which is it?)."""
    first, labels = {}, {}
    for path, label in items:
        try:
            status = os.stat(path)
        except OSError:             # missing: scan_images reports it
            continue
        key = (status.st_dev, status.st_ino)
        first.setdefault(key, path)
        labels.setdefault(key, set()).add(label)
    kept = []
    for path, label in items:
        try:
            status = os.stat(path)
        except OSError:
            kept.append((path, label))
            continue
        key = (status.st_dev, status.st_ino)
        if len(labels[key]) > 1:
            skipped.append((path, 'the same file is in %d classes; left out of all'
                            % len(labels[key])))
        elif first[key] != path:
            skipped.append((path, 'the same file as %s; kept there only'
                            % display_path(first[key])))
        else:
            kept.append((path, label))
    return kept


def _folder_classes(path, class_images, skipped):
    names = sorted(class_images)
    if len(names) == 1:
        only = os.path.join(path, names[0])
        raise DatasetError('only one class (%s) in %s: a classifier needs two or more; if %s '
                           'holds the class folders, pass it instead'
                           % (display_path(names[0]), display_path(path), display_path(only)))
    for name in names:
        files = [os.path.basename(p) for p in class_images[name]]
        classes = _kaggle_classes(files)
        if None not in classes and len(set(classes)) > 1:
            raise DatasetError('%s holds files of several classes (%s); it looks like Kaggle\'s '
                               'flat train folder: pass %s'
                               % (display_path(os.path.join(path, name)),
                                  ', '.join(sorted(set(classes))[:5]),
                                  display_path(os.path.join(path, name))))
    items = [(image, label) for label, name in enumerate(names) for image in class_images[name]]
    return Dataset(_without_repeats(items, skipped), names, skipped)


def _kaggle_folder(path, files, skipped):
    names = [os.path.basename(file) for file in files]
    classes = _kaggle_classes(names)
    if None in classes:
        example = names[classes.index(None)]
        raise DatasetError('cannot tell the class of %s in %s: images directly in a folder '
                           'must be named <class>.<id>.<ext> (cat.0.jpg); %s'
                           % (display_path(example), display_path(path), _LAYOUTS_HINT))
    class_names = sorted(set(classes))
    if len(class_names) == 1:
        raise DatasetError('only one class (%s) in %s: a classifier needs two or more'
                           % (display_path(class_names[0]), display_path(path)))
    index = {name: label for label, name in enumerate(class_names)}
    items = [(file, index[cls]) for file, cls in zip(files, classes)]
    return Dataset(_without_repeats(items, skipped), class_names, skipped)


def _list_lines(path):
    """(line number, text) of a list file's entries, bounded in line length."""
    try:
        with open(path, encoding='utf-8-sig', newline=None) as f:
            for number, line in enumerate(f, 1):
                if len(line) > MAX_LIST_LINE:
                    raise DatasetError('%s line %d is longer than %d characters; is it a list '
                                       'of "<path> <label>" lines?'
                                       % (display_path(path), number, MAX_LIST_LINE))
                line = line.strip()
                if line and not line.startswith('#'):
                    yield number, line
    except UnicodeDecodeError:
        raise DatasetError('%s is not a UTF-8 text file; %s'
                           % (display_path(path), _LAYOUTS_HINT)) from None
    except OSError as err:
        raise DatasetError('cannot read %s (%s)'
                           % (display_path(path), err.strerror or err)) from None


def _read_list_file(path):
    if path.lower().endswith(image_files.IMAGE_EXTENSIONS):
        raise DatasetError('%s is an image, not a dataset; %s'
                           % (display_path(path), _LAYOUTS_HINT))
    folder = os.path.dirname(path)
    items, labels, skipped = [], set(), []
    listed = {}
    for number, line in _list_lines(path):
        parts = line.rsplit(None, 1)    # the label is the last word; the path may have spaces
        if len(parts) != 2 or not re.match(r'^\d{1,9}$', parts[1]):
            raise DatasetError('%s line %d: expected "<image path> <integer label>", got %r'
                               % (display_path(path), number, line[:200]))
        label = int(parts[1])
        if label >= MAX_CLASSES:
            raise DatasetError('%s line %d: label %d; labels are 0..K-1 for K classes, at most '
                               '%d' % (display_path(path), number, label, MAX_CLASSES))
        image = os.path.normpath(os.path.join(folder, os.path.expanduser(parts[0])))
        if image in listed:
            if listed[image] != label:
                skipped.append((image, 'listed with label %d and %d; kept with %d only'
                                % (listed[image], label, listed[image])))
            continue
        listed[image] = label
        items.append((image, label))
        labels.add(label)
    if not items:
        raise DatasetError('no images listed in %s; %s' % (display_path(path), _LAYOUTS_HINT))
    if len(labels) == 1:
        raise DatasetError('%s lists only one class (label %d): a classifier needs two or more'
                           % (display_path(path), min(labels)))
    count = max(labels) + 1
    missing = sorted(set(range(count)) - labels)
    if missing:
        raise DatasetError('%s has labels up to %d but no image of class %s: labels must be '
                           '0..K-1 with every class present; renumber them'
                           % (display_path(path), count - 1,
                              ', '.join(str(m) for m in missing[:10])
                              + (', ...' if len(missing) > 10 else '')))
    if not any(os.path.exists(image) for image, _ in items):
        raise DatasetError('none of the files listed in %s exists (e.g. %s); relative paths '
                           'start at the list file\'s folder'
                           % (display_path(path), display_path(items[0][0])))
    return Dataset(_without_repeats(items, skipped), _list_class_names(folder, count), skipped)


def _list_class_names(folder, count):
    names_path = os.path.join(folder, CLASS_NAMES_FILE)
    if not os.path.exists(names_path):
        return class_names_module.fallback_names(count)
    names = []
    for _, line in _list_lines(names_path):
        names.append(line)
        if len(names) > count:
            break
    if len(names) != count:
        raise DatasetError('%s has %s names but the labels are 0..%d; write one class name per '
                           'line, for labels 0, 1, ...'
                           % (display_path(names_path), len(names) if len(names) <= count
                              else 'more', count - 1))
    return names


# --- Splitting ------------------------------------------------------------

def split_dataset(items, val_fraction, seed):
    """Splits items into training and validation, per class (stratified).

    Each class gives round(val_fraction * its size) images to validation, at
    least one if it has two or more and val_fraction > 0, and keeps at least
    one for training. The split depends only on the set of items, the fraction
    and the seed, not on the order of items.

    Returns:
      (train_items, val_items), each in the order of `items`.
    """
    if not 0 <= val_fraction < 1:
        raise DatasetError('the validation fraction must be in [0, 1), got %s' % val_fraction)
    by_class = {}
    for item in items:
        by_class.setdefault(item[1], set()).add(item)
    rng = np.random.RandomState(seed)
    val = set()
    for label in sorted(by_class):
        members = sorted(by_class[label])
        count = int(round(val_fraction * len(members)))
        if val_fraction > 0 and len(members) >= 2:
            count = max(count, 1)
        count = min(count, len(members) - 1)
        val.update(members[i] for i in rng.permutation(len(members))[:count])
    train_items = [item for item in items if item not in val]
    val_items = [item for item in items if item in val]
    return train_items, val_items


def write_split(path, train, val, class_names):
    """Writes a split as JSON: {"class_names": [...], "train": [[path, label], ...], "val": ...}.

    Paths that are not valid UTF-8 are kept exactly (JSON escapes them)."""
    data = {'class_names': list(class_names),
            'train': [[p, int(label)] for p, label in train],
            'val': [[p, int(label)] for p, label in val]}
    write_json(path, data)


def read_split(path):
    """Reads write_split's file.

    Returns:
      (train_items, val_items, class_names).

    Raises:
      DatasetError: missing or malformed file.
    """
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
        names = [str(name) for name in data['class_names']]
        train, val = ([(str(p), int(label)) for p, label in data[key]] for key in ('train', 'val'))
        bad = [label for _, label in train + val if not 0 <= label < len(names)]
        if bad or not train:
            raise ValueError('label %d of %d classes' % (bad[0], len(names)) if bad
                             else 'no training images')
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as err:
        raise DatasetError('cannot read the split file %s (%s); delete it to split again'
                           % (display_path(path), str(err)[:200])) from None
    return train, val, names


def write_json(path, data):
    """Writes JSON through a temporary file, so a crash never leaves half a file."""
    temporary = '%s.tmp%d' % (path, os.getpid())     # two writers never share one
    with open(temporary, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    os.replace(temporary, path)


# --- ILSVRC-2012: its WordNet-id folders and its validation ground truth -----

def imagenet_wnids():
    """WordNet id -> bvlc_alexnet class index (0 = n01440764, tench)."""
    return {wnid: index for index, wnid in enumerate(class_names_module.imagenet_wnids())}


def find_imagenet(path):
    """ILSVRC-2012's train/ layout: one folder per WordNet id (n01440764/*.JPEG, ...),
    labelled in bvlc_alexnet's class order, whichever of the 1000 folders are present.

    Returns:
      Dataset whose class_names are the 1000 ImageNet names (class_names.py).
    Raises:
      DatasetError: a folder that is not one of the 1000 classes (named), no images.
    """
    if not os.path.isdir(path):
        raise DatasetError('%s is not a folder; pass ILSVRC-2012\'s train/ folder, one '
                           'sub-folder per WordNet id (n01440764, ...)' % display_path(path))
    folders, skipped = _class_folders(path)
    labels = imagenet_wnids()
    unknown = [name for name in folders if name not in labels]
    if unknown:
        raise DatasetError('%s is not one of the 1000 ILSVRC-2012 classes (WordNet ids such as '
                           'n01440764)%s; move it out of %s, or train on the folder without '
                           '--classes imagenet' % (
                               display_path(folders[unknown[0]]),
                               ' (nor are %d more)' % (len(unknown) - 1) if len(unknown) > 1
                               else '', display_path(path)))
    items = []
    for name, folder in folders.items():
        others = [other for other in folders.values() if other != folder]
        images, refused = image_files.list_images(folder, exclude=others)
        skipped.extend(refused)
        items.extend((image, labels[name]) for image in images)
    if not items:
        raise DatasetError('no images in the class folders of %s' % display_path(path))
    return Dataset(_without_repeats(items, skipped),
                   class_names_module.imagenet_class_names(), skipped)


def _ground_truth_lines(path):
    """(line number, text) of the non-blank lines, bounded in length."""
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if len(line) > MAX_LIST_LINE:
                raise GroundTruthError('%s line %d is longer than %d characters; is it a '
                                       'ground-truth file?' % (display_path(path),
                                                               number, MAX_LIST_LINE))
            if line.strip():
                yield number, line.strip()


def read_ground_truth(path, one_based=False):
    """Reads a ground-truth file (its formats: evaluate.py's docstring).

    Returns:
      list of (file name or None, 0-based class index), in file order.
    Raises:
      GroundTruthError: unreadable line, mixed formats, unknown WordNet id.
    """
    if not os.path.isfile(path):
        raise GroundTruthError('%s: no such ground-truth file' % display_path(path))
    entries, wnids = [], None
    try:
        lines = list(_ground_truth_lines(path))
    except UnicodeDecodeError:
        raise GroundTruthError('%s is not a UTF-8 text file of labels; see `python evaluate.py '
                               '--help`' % display_path(path)) from None
    for number, line in lines:
        parts = line.rsplit(None, 1)          # file names may contain spaces
        name, label = (None, parts[0]) if len(parts) == 1 else parts
        if WNID.match(label):
            wnids = wnids or imagenet_wnids()
            if label not in wnids:
                raise GroundTruthError('%s line %d: %s is not one of the 1000 ILSVRC-2012 '
                                       'classes' % (display_path(path), number, label))
            index = wnids[label]
        elif re.match(r'^-?\d{1,9}$', label):
            index = int(label) - (1 if one_based else 0)
            if index < 0:
                raise GroundTruthError(
                    '%s line %d: label %s is below %d; %s' % (
                        display_path(path), number, label, 1 if one_based else 0,
                        'drop --one-based: the file counts from 0' if one_based else
                        'labels are class indices'))
        else:
            raise GroundTruthError('%s line %d: %r is neither a class index nor a WordNet '
                                   'id; see `python evaluate.py --help`'
                                   % (display_path(path), number, line[:200]))
        entries.append((name, index))
    if not entries:
        raise GroundTruthError('%s: no labels in the file' % display_path(path))
    if len({name is None for name, _ in entries}) > 1:
        raise GroundTruthError('%s: some lines name a file and some do not; use one format'
                               % display_path(path))
    return entries


def imagenet_items(folder, ground_truth, one_based=False):
    """(path, label) pairs of an ILSVRC-2012 validation-style folder.

    Raises:
      GroundTruthError: the folder and the file do not match.
    """
    if not os.path.isdir(folder):
        raise GroundTruthError('%s: no such image folder' % display_path(folder))
    entries = read_ground_truth(ground_truth, one_based)
    paths, _ = image_files.list_images(folder, recursive=False)
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


# --- Scanning for files that do not decode ---------------------------------

def _check_image(path):
    """None if image_files.read_image decodes path, else the reason."""
    try:
        image_files.read_image(path, draft=True)
        return None
    except image_files.ImageError as err:
        message, prefix = str(err), display_path(path) + ': '
        return message[len(prefix):] if message.startswith(prefix) else message


def _file_key(path):
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def scan_images(items, cache_dir=None, progress=True, workers=None, report=None):
    """Decodes every image once and drops the ones that fail.

    Whatever read_image decodes is kept: training reads it the same way; a file
    that changes after the scan and fails is skipped there too.

    Args:
      items: (path, label) pairs.
      cache_dir: folder for image_scan_cache.json, which remembers each file's
        result by (absolute path, size, mtime), so only new or changed files
        are decoded next time. None: no cache.
      progress: show a progress bar.
      report: print the count and the bad files (default: as progress).
      workers: decoding threads (PIL decodes outside the GIL).

    Returns:
      (good_items, bad): good_items in the order of items; bad a list of
      (path, reason).
    """
    cache_path = os.path.join(cache_dir, SCAN_CACHE_FILE) if cache_dir else None
    cache = _load_scan_cache(cache_path)
    reasons, keys, todo = {}, {}, []
    for path in sorted(set(path for path, _ in items)):
        try:
            keys[path] = _file_key(path)
        except OSError as err:
            reasons[path] = 'cannot read file (%s)' % (err.strerror or err)
            continue
        cached = cache.get(os.path.abspath(path))
        if cached is not None and cached[:2] == keys[path]:
            reasons[path] = cached[2]
        else:
            todo.append(path)
    workers = workers or min(4, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = pool.map(_check_image, todo)
        for path, reason in tqdm(zip(todo, results), total=len(todo), desc='checking images',
                                 unit='img', disable=not (progress and todo)):
            reasons[path] = reason
            cache[os.path.abspath(path)] = keys[path] + [reason]
    if cache_path and todo:
        _save_scan_cache(cache_path, cache)
    good = [(path, label) for path, label in items if reasons[path] is None]
    bad = [(path, reasons[path]) for path in sorted(reasons) if reasons[path] is not None]
    if progress if report is None else report:
        print('checked %d images (%d decoded, %d from the cache): %d cannot be read and are '
              'skipped' % (len(reasons), len(todo), len(reasons) - len(todo), len(bad)))
        report_skipped(bad)
    return good, bad


def report_skipped(skipped, shown=SHOWN_SKIPPED, stream=None):
    """Prints the first `shown` (path, reason) pairs readably, and how many more there are."""
    for path, reason in skipped[:shown]:
        print('  %s: %s' % (display_path(path), reason), file=stream or sys.stdout)
    if len(skipped) > shown:
        print('  ... and %d more' % (len(skipped) - shown), file=stream or sys.stdout)


def _load_scan_cache(cache_path):
    """{absolute path: [size, mtime_ns, reason or None]}; empty if missing or unreadable."""
    if not cache_path or not os.path.exists(cache_path):
        return {}
    try:
        with open(cache_path, encoding='utf-8') as f:
            files = json.load(f)['files']
        return {path: list(entry) for path, entry in files.items()
                if isinstance(entry, list) and len(entry) == 3}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return {}   # a damaged cache only costs a rescan


def _save_scan_cache(cache_path, cache):
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        write_json(cache_path, {'files': cache})
    except OSError as err:
        print('warning: cannot write the scan cache %s (%s); the next run scans again'
              % (display_path(cache_path), err.strerror or err), file=sys.stderr)
