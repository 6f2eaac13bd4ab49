"""Input pipeline and the one home of preprocessing (paper section 4.1).

Everything that turns a photo into AlexNet's input lives here: finding a
dataset's files and labels, splitting them, checking that they decode, reading
any image file as 3-channel RGB, scaling, cropping, augmenting, and the change
to what the bvlc_alexnet weights expect (BGR channel order minus the ImageNet
mean pixel). Every script imports these; none redefines a constant.

The paper, section 4.1 ("Data Augmentation"), as done here:

* every image is scaled so that its shorter side is 256 (section 2);
* training takes a random 227x227 crop and flips it horizontally at random,
  then adds PCA colour noise: the eigenvectors p_i and eigenvalues l_i of the
  ImageNet RGB pixel covariance, weighted by alpha_i ~ N(0, 0.1) drawn once per
  image, give an offset [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T added to every pixel;
* evaluation takes the center 227x227 crop (single-crop test), and ten_crops
  gives the paper's ten patches: 4 corners + center, and their mirrors.

A training run goes: find_dataset -> split_dataset (written with write_split)
-> scan_images (drops files that do not decode, cached) -> make_dataset.

    items, class_names = find_dataset('data/PetImages')
    train, val = split_dataset(items, val_fraction=0.1, seed=0)
    train, bad = scan_images(train, cache_dir='logs')
    epoch = tf.placeholder(tf.int64, [])
    iterator = tf.data.make_initializable_iterator(
        make_dataset(train, batch_size=128, training=True, seed=0, epoch=epoch))
    images, labels = iterator.get_next()    # float32 [N, 227, 227, 3], int32 [N]
    # every epoch: session.run(iterator.initializer, {epoch: number}), then
    # run the training step until tf.errors.OutOfRangeError.

Deviations from the paper:

* 227x227 crops, not 224 (bvlc_alexnet's input size);
* crops come from the whole image scaled to shorter side 256, where the paper
  first cuts out its central 256x256 square; for square photos this is the
  same, for others the crops see the whole photo, and ten_crops' center crop
  equals preprocess_for_eval's;
* the PCA eigenvalues/vectors are those of ImageNet pixels in 0..1 published
  with fb.resnet.torch (the paper gives none), scaled by 255 for our pixels;
* files are decoded by PIL (read_image) inside tf.data, not by TF's JPEG
  decoder: every format the scan accepted decodes the same way in training and
  in the scripts (EXIF rotation, CMYK, 16-bit, alpha on white, GIF's 1st frame).
"""
from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import json
import os
import re
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image, ImageOps
from tqdm import tqdm

IMAGE_SIZE = 227           # AlexNet's input side (bvlc_alexnet; the paper says 224)
SCALE_SIZE = 256           # shorter side before cropping (section 2)
# Mean pixel of the ILSVRC-2012 training set in BGR order, from Caffe's
# ilsvrc_2012_mean.npy, which bvlc_alexnet was trained with.
IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)

# PCA of ImageNet RGB pixels scaled to 0..1 (fb.resnet.torch): eigenvalues, and
# the eigenvectors as columns (PCA_EIGVEC[c][i] is channel c of eigenvector i).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
PCA_ALPHA_STDDEV = 0.1     # alpha_i ~ N(0, 0.1), section 4.1

# File name endings find_dataset takes for images (compared in lower case).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.gif', '.bmp', '.webp',
                    '.tif', '.tiff', '.ppm', '.pgm', '.pnm')
CLASS_NAMES_FILE = 'class_names.txt'   # optional, beside a list file: one name per line
SCAN_CACHE_FILE = 'image_scan_cache.json'
AUTOTUNE = tf.data.experimental.AUTOTUNE
DECODED_SHUFFLE_IMAGES = 1000   # make_dataset(decoded_cache=...): shuffle window, ~250 MB


class ImageError(ValueError):
    """An image file could not be read or decoded."""


class DatasetError(ValueError):
    """A dataset path, list file or split file cannot be used (the message says why)."""


# --- Reading one image ----------------------------------------------------

def read_image(path, draft=False):
    """Reads any image PIL can decode as a uint8 RGB array [H, W, 3].

    Grayscale, CMYK, palette, 16-bit and alpha images become plain RGB (alpha is
    composited on white); an animated GIF gives its first frame; EXIF rotation is
    applied.

    Args:
      path: the image file.
      draft: decode JPEGs at 1/8 size: still reads every byte (so it finds
        truncated files) but is quicker; for checking that a file decodes.

    Raises:
      ImageError: the file is missing, empty, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            image.seek(0)
            if draft:
                image.draft(None, (1, 1))   # JPEG only; other formats ignore it
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        reason = str(err) or type(err).__name__
        raise ImageError('%s: cannot read image (%s)' % (path, reason)) from None


def _to_rgb(image):
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
        # 16-bit or float grayscale: scale to 0..255 instead of clipping at 255.
        array = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith('I;16') or array.max() > 255 else 255.0
        gray = np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == 'P' and 'transparency' in image.info:
        image = image.convert('RGBA')
    if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        white = Image.new('RGBA', image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert('RGBA'))
    return np.asarray(image.convert('RGB'), dtype=np.uint8)


# --- Preprocessing (sections 2 and 4.1) ----------------------------------

def resize_shorter_side(image, size=SCALE_SIZE):
    """Scales a [H, W, 3] image tensor so its shorter side is `size` (float32 out)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    new_shape = tf.maximum(new_shape, size)  # guard rounding below `size`
    return tf.image.resize_images(tf.cast(image, tf.float32), new_shape,
                                  method=tf.image.ResizeMethod.BILINEAR)


def center_crop(image, size=IMAGE_SIZE):
    """The central size x size window of a [H, W, C] tensor."""
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def rgb_to_model_input(image):
    """RGB pixels 0..255 -> float32 BGR minus the ImageNet mean, as bvlc_alexnet expects."""
    bgr = tf.reverse(tf.cast(image, tf.float32), axis=[-1])
    return bgr - tf.constant(IMAGENET_MEAN_BGR, tf.float32)


def model_input_to_rgb(batch):
    """Undoes rgb_to_model_input in NumPy: uint8 RGB images for display."""
    rgb = (np.asarray(batch, np.float32) + np.array(IMAGENET_MEAN_BGR, np.float32))[..., ::-1]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def preprocess_for_eval(image):
    """uint8 RGB [H, W, 3] -> float32 [227, 227, 3] model input: scale to 256, center crop."""
    cropped = center_crop(resize_shorter_side(image, SCALE_SIZE), IMAGE_SIZE)
    cropped.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    return rgb_to_model_input(cropped)


def pca_color_offset(alpha):
    """The PCA colour noise of section 4.1 for alpha [3]: an RGB offset [3] in 0..255 units.

    offset = [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T, with the eigenvectors p_i as
    columns, times 255 because the eigen-decomposition is of pixels in 0..1.
    """
    eigvec = tf.constant(PCA_EIGVEC, tf.float32)                          # [3 channels, 3 vectors]
    weighted = tf.cast(alpha, tf.float32) * tf.constant(PCA_EIGVAL, tf.float32)  # [3]
    return tf.reduce_sum(eigvec * weighted[None, :], axis=1) * 255.0      # -> [3] RGB


def _random_draws(seed=None):
    """The random numbers one training image needs: float32 [6].

    [0:2] crop top/left as fractions of the free room, uniform in [0, 1);
    [2] < 0.5 means mirror; [3:6] the PCA alphas ~ N(0, 0.1).
    """
    uniform = tf.random.uniform([3], seed=seed)
    alpha = tf.random.normal([3], stddev=PCA_ALPHA_STDDEV,
                             seed=None if seed is None else seed + 1)
    return tf.concat([uniform, alpha], axis=0)


def stateless_draws(key):
    """_random_draws as a pure function of key, int64 [2] (the same key, the same numbers)."""
    uniform = tf.random.stateless_uniform([3], seed=key)
    alpha = tf.random.stateless_normal([3], seed=key + tf.constant([1, 0], tf.int64))
    return tf.concat([uniform, alpha * PCA_ALPHA_STDDEV], axis=0)


def augment_image(image, draws, random_crop, flip, pca_noise):
    """Section 4.1 on uint8 RGB [H, W, 3], with the random numbers given (see _random_draws)."""
    scaled = resize_shorter_side(image, SCALE_SIZE)                      # -> [>=256, >=256, 3]
    if random_crop:
        # Any 227x227 window: top in 0..H-227, left in 0..W-227, uniformly.
        room = tf.shape(scaled)[:2] - IMAGE_SIZE                         # [2]
        offsets = tf.cast(tf.floor(draws[0:2] * tf.cast(room + 1, tf.float32)), tf.int32)
        offsets = tf.minimum(offsets, room)                              # float rounding guard
        crop = tf.image.crop_to_bounding_box(scaled, offsets[0], offsets[1],
                                             IMAGE_SIZE, IMAGE_SIZE)
    else:
        crop = center_crop(scaled, IMAGE_SIZE)
    crop.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    if flip:
        crop = tf.cond(draws[2] < 0.5, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    if pca_noise:
        # The same offset for every pixel of this image; no clipping, as in the paper.
        crop = crop + pca_color_offset(draws[3:6])
    return rgb_to_model_input(crop)                                      # -> [227, 227, 3]


def preprocess_for_train(image, random_crop=True, flip=True, pca_noise=True, seed=None,
                         pca_alpha=None):
    """uint8 RGB [H, W, 3] -> float32 [227, 227, 3] model input, augmented (section 4.1).

    Scales the shorter side to 256, takes a random 227x227 crop (else the
    center one), mirrors it with probability 1/2, adds PCA colour noise.

    Args:
      image: uint8 RGB tensor [H, W, 3].
      random_crop, flip, pca_noise: switch each augmentation on or off.
      seed: op-level seed for the random numbers (None: unseeded).
      pca_alpha: fixed alphas [3] instead of random ones (to look at the noise).
    """
    draws = _random_draws(seed)
    if pca_alpha is not None:
        draws = tf.concat([draws[:3], tf.cast(pca_alpha, tf.float32)], axis=0)
    return augment_image(image, draws, random_crop, flip, pca_noise)


def ten_crops(image):
    """uint8 RGB [H, W, 3] -> float32 [10, 227, 227, 3] model inputs, the paper's test patches.

    Scales the shorter side to 256, then takes the top-left, top-right,
    bottom-left, bottom-right and center 227x227 windows, then the same five
    mirrored. Average the 10 softmax outputs for the paper's prediction.
    """
    scaled = resize_shorter_side(image, SCALE_SIZE)                      # -> [H', W', 3]
    shape = tf.shape(scaled)
    bottom, right = shape[0] - IMAGE_SIZE, shape[1] - IMAGE_SIZE
    crops = [tf.image.crop_to_bounding_box(scaled, top, left, IMAGE_SIZE, IMAGE_SIZE)
             for top, left in ((0, 0), (0, right), (bottom, 0), (bottom, right))]
    crops.append(center_crop(scaled, IMAGE_SIZE))
    crops = tf.stack(crops)                                              # -> [5, 227, 227, 3]
    crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)      # -> [10, 227, 227, 3]
    crops.set_shape([10, IMAGE_SIZE, IMAGE_SIZE, 3])
    return rgb_to_model_input(crops)


# --- Finding a dataset ----------------------------------------------------

# Kaggle's flat train/: <class>.<id>.<ext>, e.g. cat.123.jpg -> 'cat'.
_KAGGLE_NAME = re.compile(r'^([A-Za-z][^.]*)\..+\.[^.]+$')

_LAYOUTS_HINT = ('pass a folder with one sub-folder of images per class (e.g. PetImages '
                 'with Cat/ and Dog/), Kaggle\'s flat train/ folder (cat.0.jpg, dog.0.jpg), '
                 'or a text file with one "<path> <label>" per line')


def find_dataset(path):
    """Lists a dataset's images and labels.

    Layouts:
      * a folder per class: path/Cat/*.jpg, path/Dog/*.jpg (searched
        recursively; images directly in `path` are then ignored);
      * Kaggle's flat folder: path/cat.0.jpg, path/dog.0.jpg (class = the name
        before the first dot);
      * a text file, one "<path> <label>" per line: the path may contain spaces
        (the label is the last word), relative paths start at the list file's
        folder, labels are integers 0, 1, ...; blank lines and lines starting
        with '#' are skipped. Class names come from class_names.txt beside it
        (one per line), else 'class0', 'class1', ...

    Files whose names do not end in an image extension (Thumbs.db, ...) and
    hidden files are skipped; whether images decode is scan_images' job.

    Returns:
      (items, class_names): items a list of (file path, int label), labels
      indexing class_names (sorted, for folders).

    Raises:
      DatasetError: missing path, no images, one class only, a bad list line.
    """
    if not os.path.exists(path):
        raise DatasetError('%s does not exist; %s' % (path, _LAYOUTS_HINT))
    if os.path.isdir(path):
        return _find_in_folder(path)
    return _read_list_file(path)


def _is_image_name(name):
    return not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(folder):
    """Image files anywhere under folder, sorted, hidden folders skipped."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found.extend(os.path.join(root, name) for name in sorted(files) if _is_image_name(name))
    return found


def _kaggle_classes(names):
    """Class of each Kaggle-style file name, or None for names that are not."""
    return [(match.group(1) if match else None)
            for match in (_KAGGLE_NAME.match(name) for name in names)]


def _find_in_folder(path):
    entries = sorted(os.listdir(path))
    class_images = {}
    for name in entries:
        folder = os.path.join(path, name)
        if not name.startswith('.') and os.path.isdir(folder):
            images = _images_under(folder)
            if images:
                class_images[name] = images
    if class_images:
        return _class_folders(path, class_images)
    loose = [name for name in entries
             if _is_image_name(name) and os.path.isfile(os.path.join(path, name))]
    if not loose:
        raise DatasetError('no images in %s; %s' % (path, _LAYOUTS_HINT))
    return _kaggle_folder(path, loose)


def _class_folders(path, class_images):
    class_names = sorted(class_images)
    if len(class_names) == 1:
        only = os.path.join(path, class_names[0])
        raise DatasetError('only one class (%s) in %s: a classifier needs two or more; if %s '
                           'holds the class folders, pass it instead'
                           % (class_names[0], path, only))
    for name in class_names:
        files = [os.path.basename(p) for p in class_images[name]]
        classes = _kaggle_classes(files)
        if None not in classes and len(set(classes)) > 1:
            raise DatasetError('%s holds files of several classes (%s); it looks like Kaggle\'s '
                               'flat train folder: pass %s'
                               % (os.path.join(path, name), ', '.join(sorted(set(classes))[:5]),
                                  os.path.join(path, name)))
    items = [(image, label) for label, name in enumerate(class_names)
             for image in class_images[name]]
    return items, class_names


def _kaggle_folder(path, names):
    classes = _kaggle_classes(names)
    if None in classes:
        example = names[classes.index(None)]
        raise DatasetError('cannot tell the class of %s in %s: images directly in a folder '
                           'must be named <class>.<id>.<ext> (cat.0.jpg); %s'
                           % (example, path, _LAYOUTS_HINT))
    class_names = sorted(set(classes))
    if len(class_names) == 1:
        raise DatasetError('only one class (%s) in %s: a classifier needs two or more'
                           % (class_names[0], path))
    index = {name: label for label, name in enumerate(class_names)}
    items = [(os.path.join(path, name), index[cls]) for name, cls in zip(names, classes)]
    return items, class_names


def _read_list_file(path):
    if path.lower().endswith(IMAGE_EXTENSIONS):
        raise DatasetError('%s is an image, not a dataset; %s' % (path, _LAYOUTS_HINT))
    folder = os.path.dirname(path)
    try:
        with open(path, encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError:
        raise DatasetError('%s is not a UTF-8 text file; %s' % (path, _LAYOUTS_HINT)) from None
    items = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        parts = line.rsplit(None, 1)    # the label is the last word; the path may have spaces
        if len(parts) != 2 or not re.match(r'^\d+$', parts[1]):
            raise DatasetError('%s line %d: expected "<image path> <integer label>", got %r'
                               % (path, number, line[:200]))
        image = os.path.join(folder, os.path.expanduser(parts[0]))  # an absolute path stays
        items.append((os.path.normpath(image), int(parts[1])))
    if not items:
        raise DatasetError('no images listed in %s; %s' % (path, _LAYOUTS_HINT))
    labels = sorted(set(label for _, label in items))
    if len(labels) == 1:
        raise DatasetError('%s lists only one class (label %d): a classifier needs two or more'
                           % (path, labels[0]))
    if not any(os.path.exists(image) for image, _ in items):
        raise DatasetError('none of the files listed in %s exists (e.g. %s); relative paths '
                           'start at the list file\'s folder' % (path, items[0][0]))
    return items, _list_class_names(folder, labels[-1] + 1)


def _list_class_names(folder, count):
    names_path = os.path.join(folder, CLASS_NAMES_FILE)
    if not os.path.exists(names_path):
        return ['class%d' % label for label in range(count)]
    with open(names_path, encoding='utf-8-sig') as f:
        names = [line.strip() for line in f if line.strip()]
    if len(names) < count:
        raise DatasetError('%s has %d names but the labels go up to %d; write one class name '
                           'per line, for labels 0, 1, ...' % (names_path, len(names), count - 1))
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
    """Writes a split as JSON: {"class_names": [...], "train": [[path, label], ...], "val": ...}."""
    data = {'class_names': list(class_names),
            'train': [[p, int(label)] for p, label in train],
            'val': [[p, int(label)] for p, label in val]}
    _write_json(path, data)


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
        class_names = list(data['class_names'])
        train, val = ([(str(p), int(label)) for p, label in data[key]] for key in ('train', 'val'))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError('cannot read the split file %s (%s); delete it to split again'
                           % (path, err)) from None
    return train, val, class_names


def _write_json(path, data):
    """Writes JSON through a temporary file, so a crash never leaves half a file."""
    temporary = path + '.tmp'
    with open(temporary, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
    os.replace(temporary, path)


# --- Scanning for files that do not decode ---------------------------------

def _check_image(path):
    """None if read_image decodes path, else the reason."""
    try:
        read_image(path, draft=True)
        return None
    except Exception as err:  # any decoder failure means: skip this file
        message = str(err) or type(err).__name__
        return message[len(path) + 2:] if message.startswith(path + ': ') else message


def _file_key(path):
    status = os.stat(path)
    return [status.st_size, status.st_mtime_ns]


def scan_images(items, cache_dir=None, progress=True, workers=None, report=None):
    """Decodes every image once and drops the ones that fail.

    Real datasets have zero-byte files, truncated JPEGs and text files named
    .jpg (Microsoft's PetImages has all three). Whatever PIL decodes is kept:
    training reads it the same way (read_image); a file that changes after the
    scan and fails is skipped there too.

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
        _report_bad(len(reasons), len(todo), bad)
    return good, bad


def _report_bad(total, decoded, bad, shown=10):
    print('checked %d images (%d decoded, %d from the cache): %d cannot be read and are skipped'
          % (total, decoded, total - decoded, len(bad)))
    for path, reason in bad[:shown]:
        print('  %s: %s' % (path, reason))
    if len(bad) > shown:
        print('  ... and %d more' % (len(bad) - shown))


def _load_scan_cache(cache_path):
    """{absolute path: [size, mtime_ns, reason or None]}; empty if missing or unreadable."""
    if not cache_path or not os.path.exists(cache_path):
        return {}
    try:
        with open(cache_path, encoding='utf-8') as f:
            files = json.load(f)['files']
        return {path: list(entry) for path, entry in files.items() if len(entry) == 3}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}   # a damaged cache only costs a rescan


def _save_scan_cache(cache_path, cache):
    try:
        os.makedirs(os.path.dirname(cache_path), exist_ok=True)
        _write_json(cache_path, {'files': cache})
    except OSError as err:
        print('warning: cannot write the scan cache %s (%s); the next run scans again'
              % (cache_path, err), file=sys.stderr)


# --- The tf.data pipeline -------------------------------------------------

def read_or_skip(path):
    """numpy_function body: (uint8 RGB [H, W, 3], True), or a 1x1 dummy and False."""
    path = os.fsdecode(path)
    try:
        return read_image(path), True
    except Exception as err:  # changed since the scan: skip it, never stop training
        tf.logging.warning('skipping %s: %s', path, err)
        return np.zeros((1, 1, 3), np.uint8), False


def make_dataset(items, batch_size, training, seed=None, epoch=0, augment=True,
                 random_crop=None, flip=None, pca_noise=None, num_parallel_calls=AUTOTUNE,
                 prefetch=2, drop_remainder=False, decoded_cache=None,
                 shuffle_images=DECODED_SHUFFLE_IMAGES):
    """A tf.data pipeline of (images float32 [N, 227, 227, 3], labels int32 [N]).

    Training shuffles and augments (as preprocess_for_train); otherwise the
    order is that of items and images are center crops (preprocess_for_eval).
    Files that fail to decode (changed since scan_images) are skipped with a
    warning.

    The order and the augmentations depend only on seed and epoch (not on how
    the parallel calls are scheduled). Each round of repeat() has a new order
    and new augmentations; so does each epoch when the iterator is initialized
    every epoch with a new epoch number, which also lets a resumed run see the
    same epochs as an uninterrupted one:

        epoch = tf.placeholder(tf.int64, [])
        iterator = tf.data.make_initializable_iterator(
            make_dataset(train_items, 128, training=True, seed=0, epoch=epoch))
        ...
        session.run(iterator.initializer, {epoch: 3})

    Memory does not grow with the dataset: the shuffle buffer holds file names
    and labels (a few MB for 25,000 files); only about num_parallel_calls
    decoded images and `prefetch` batches exist at a time.

    Args:
      items: (path, label) pairs, e.g. scan_images' good_items.
      batch_size: images per batch; the last one may be smaller.
      training: shuffle and augment.
      seed: int; None picks one at random.
      epoch: int or int64 scalar tensor, mixed into the seed.
      augment: default for random_crop, flip, pca_noise (each None: follow it).
      num_parallel_calls: images decoded at once (AUTOTUNE: TF decides).
      prefetch: batches prepared ahead of the training step.
      drop_remainder: drop a last batch smaller than batch_size.
      decoded_cache: a folder: keep every photo decoded and scaled to 256 there
        (tf.data's cache, uint8) after the first pass, so later epochs skip JPEG
        decoding. Training then shuffles a fixed random order of the photos
        within a window of `shuffle_images` decoded photos (about 0.25 MB each)
        instead of the whole list, and the scaled pixels are rounded to integers.
      shuffle_images: that window.
    """
    if not items:
        raise DatasetError('no images to read: the dataset or split is empty')
    if decoded_cache:
        return _cached_dataset(items, batch_size, training, seed, epoch, augment, random_crop,
                               flip, pca_noise, num_parallel_calls, prefetch, drop_remainder,
                               decoded_cache, shuffle_images)
    paths = [os.fsencode(path) for path, _ in items]
    labels = np.array([label for _, label in items], np.int32)
    switches = [augment if switch is None else switch for switch in (random_crop, flip, pca_noise)]
    augmenting = training and any(switches)
    seed = np.random.randint(1, 2 ** 31 - 1) if seed is None else int(seed)
    epoch_seed = seed * 1000003 + tf.cast(epoch, tf.int64)            # int64 scalar

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))       # (string, int32) per image
    if training:
        # Shuffle names, not images: a buffer of the whole epoch costs ~100 bytes per file.
        dataset = dataset.shuffle(len(items), seed=epoch_seed)
    if augmenting:
        # One random key per image, drawn here one image after another (so the
        # same seed gives the same keys) from a state that runs on across
        # repeat() rounds; the parallel map turns (epoch seed, key) into the
        # image's random numbers without any shared state.
        dataset = dataset.map(lambda path, label: (path, label, tf.random.uniform(
            [], 0, 2 ** 62, tf.int64, seed=seed)))

    def load(path, label, *key):
        image, ok = tf.numpy_function(read_or_skip, [path], [tf.uint8, tf.bool])
        image.set_shape([None, None, 3])                                 # uint8 RGB [H, W, 3]
        ok.set_shape([])
        if augmenting:
            draws = stateless_draws(tf.stack([epoch_seed, key[0]]))
            image = augment_image(image, draws, *switches)
        else:
            image = preprocess_for_eval(image)
        return image, label, ok                                          # [227, 227, 3], [], []

    dataset = dataset.map(load, num_parallel_calls=num_parallel_calls)
    dataset = dataset.filter(lambda image, label, ok: ok)
    dataset = dataset.map(lambda image, label, ok: (image, label))
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(prefetch)


# --- Decoded photos cached on disk --------------------------------------------

def _decoded_cache_file(folder, items, order_seed):
    """The cache's file prefix: named by what it holds (files, order, scaling)."""
    digest = hashlib.sha1(('v1 %d %r' % (SCALE_SIZE, order_seed)).encode('utf-8'))
    for path, label in items:
        status = os.stat(path)
        digest.update(('%s\t%d\t%d\t%d\n' % (os.path.abspath(path), label, status.st_size,
                                              status.st_mtime_ns)).encode('utf-8'))
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, digest.hexdigest()[:20])
    # A run killed while writing leaves its lock behind (tf.data drops the half
    # written data itself); one trainer per dataset, so the lock is stale.
    for stale in glob.glob(prefix + '*.lockfile'):
        os.remove(stale)
    return prefix


def _cached_dataset(items, batch_size, training, seed, epoch, augment, random_crop, flip,
                    pca_noise, num_parallel_calls, prefetch, drop_remainder, folder,
                    shuffle_images):
    """make_dataset with decoded_cache: decode and scale once, then read the cache."""
    switches = [augment if switch is None else switch for switch in (random_crop, flip, pca_noise)]
    augmenting = training and any(switches)
    seed = np.random.randint(1, 2 ** 31 - 1) if seed is None else int(seed)
    epoch_seed = seed * 1000003 + tf.cast(epoch, tf.int64)
    if training:
        # The cache holds one fixed order (a class-sorted folder would otherwise
        # fill the shuffle window with one class); each epoch reshuffles it in a window.
        items = [items[i] for i in np.random.RandomState(seed).permutation(len(items))]
    paths = [os.fsencode(path) for path, _ in items]
    labels = np.array([label for _, label in items], np.int32)

    def decode_and_scale(path, label):
        image, ok = tf.numpy_function(read_or_skip, [path], [tf.uint8, tf.bool])
        image.set_shape([None, None, 3])
        ok.set_shape([])
        scaled = tf.cast(tf.round(resize_shorter_side(image, SCALE_SIZE)), tf.uint8)
        return scaled, label, ok                                         # [>=256, >=256, 3]

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(decode_and_scale, num_parallel_calls=num_parallel_calls)
    dataset = dataset.filter(lambda image, label, ok: ok)
    dataset = dataset.map(lambda image, label, ok: (image, label))
    dataset = dataset.cache(_decoded_cache_file(folder, items, seed if training else None))
    if training:
        dataset = dataset.shuffle(min(shuffle_images, len(items)), seed=epoch_seed)
    if augmenting:
        dataset = dataset.map(lambda image, label: (image, label, tf.random.uniform(
            [], 0, 2 ** 62, tf.int64, seed=seed)))

    def prepare(image, label, *key):
        # The cached photo is already 256 on its shorter side: scaling again is the identity.
        if augmenting:
            return augment_image(image, stateless_draws(tf.stack([epoch_seed, key[0]])),
                                 *switches), label
        return preprocess_for_eval(image), label

    dataset = dataset.map(prepare, num_parallel_calls=num_parallel_calls)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(prefetch)
