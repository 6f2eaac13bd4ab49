"""Cached frozen-layer features: fine-tune the FC layers without re-running the frozen ones.

When only fc6..fc8 learn (or fc7..fc8, or fc8), the frozen layers before them
give the same output for the same input picture in every epoch. The naive
path (finetune.py without --cache-features) still decodes each photo and runs
all five convolutional layers on it at every step; this module runs the frozen
part once per image view, keeps its output on disk, memory-mapped (not all in
RAM), and lets training run only the head, AlexNet.head(), on it.

What is cached, [images, views, D] float32 per split (alexnet.AlexNet.head_input):

* first trained fc6: flattened pool5, D = 9216;
* first trained fc7: fc6's output (ReLU, before dropout6), D = 4096;
* first trained fc8: fc7's output (ReLU, before dropout7), D = 4096.

Dropout after a frozen fc6/fc7 still applies while training: the head starts
with it, exactly as the full graph does.

Augmentation (paper section 4.1) stays meaningful with a fixed set of views per
training image: the paper's ten crops (4 corners + center, and their mirrors,
preprocessing.ten_crops) or N random augmented crops (random crop, mirror, PCA
colour noise, as preprocessing.random_view); every epoch draws one
view per image at random. Validation has one view, the center crop, as in the
naive path.

A cache folder, <root>/<key>/, holds train.npy, val.npy and, written last by an
atomic rename, complete.json. The key hashes the frozen layers' values (so a
new weight file, a random start or a restored checkpoint each get the right
cache), the data manifest (path, label, size, mtime of every file), the views
and the preprocessing (constants and the source of the functions used), and
the first trained layer. A folder without complete.json, or whose arrays do not
have the shapes it records (an interrupted or truncated write), is rebuilt.

    cache = FeatureCache(train_items, val_items, 'fc6', TEN_CROPS, batch_size=128, seed=0)
    model = alexnet.AlexNet(cache.images, keep_prob)    # the frozen part reads the views
    logits = model.head(features, 'fc6')                # features: from cache.train_data
    ...
    cache.prepare(session, model, 'logs/.feature-cache')   # after loading the weights

Deviations from the naive path: the training crops come from a fixed set (10
by default) instead of a fresh random crop every epoch; ten crops carry no PCA
colour noise (random views do).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import time

import numpy as np
import tensorflow.compat.v1 as tf
from tqdm import tqdm

import alexnet
import datagenerator
import image_files
import preprocessing

FORMAT_VERSION = 1
TEN_CROPS = 'ten-crops'
AUTO = 'auto'
# Views cached per training photo when none are asked for: each costs one forward pass of
# the frozen layers. A GPU does the paper's ten crops of 25,000 photos in about a minute;
# two CPU cores need about 12 ms a view, decoding included (bench.py --laptop): 50 minutes
# for ten crops, 10 for two.
CPU_VIEWS = 2
COMPLETE_MARKER = 'complete.json'
# Size of head_input(first) per image: flattened pool5, fc6, fc7.
FEATURE_SIZES = {'fc6': 6 * 6 * 256, 'fc7': 4096, 'fc8': 4096}
# The preprocessing a cached view went through: its source is part of the key.
_PREPROCESSING = (image_files.read_image, preprocessing.resize_shorter_side,
                  preprocessing.center_crop, preprocessing.rgb_to_model_input,
                  preprocessing.preprocess_for_eval, preprocessing.ten_crops,
                  preprocessing.random_view, preprocessing.augmentation_draws,
                  preprocessing.pca_color_offset)


def head_start(train_layers):
    """Where a head on cached features starts for these trained layers.

    Returns:
      (first layer, None) when cached features apply, else (None, why not).
    """
    names = alexnet.LAYER_NAMES
    start = min(names.index(name) for name in train_layers)
    frozen_after = [name for name in names[start:] if name not in train_layers]
    if frozen_after:
        return None, ('frozen %s comes after trained %s, so every step must run it'
                      % (','.join(frozen_after), names[start]))
    if names[start] not in alexnet.HEAD_LAYERS:
        return None, ('%s trains: only the inputs of fc6, fc7 or fc8 are cached; '
                      'train fc6,fc7,fc8 or fewer' % names[start])
    return names[start], None


def parse_views(text):
    """'ten-crops', 'auto' (ten crops with a GPU, CPU_VIEWS random ones without) or a
    positive number of random augmented views; ValueError otherwise."""
    if text == AUTO:
        return TEN_CROPS if alexnet.gpu_visible() else CPU_VIEWS
    if text == TEN_CROPS:
        return TEN_CROPS
    try:
        views = int(text)
    except ValueError:
        views = 0
    if views < 1:
        raise ValueError("views must be '%s', '%s' or a positive number, not %r"
                         % (AUTO, TEN_CROPS, text))
    return views


def views_per_image(views):
    return 10 if views == TEN_CROPS else int(views)


def manifest(items):
    """[path, label, size, mtime_ns] of every file: a changed file changes the key."""
    rows = []
    for path, label in items:
        try:
            stat = os.stat(path)
            rows.append([path, int(label), stat.st_size, stat.st_mtime_ns])
        except OSError:
            rows.append([path, int(label), -1, -1])
    return rows


def cache_key(frozen_weights, train_items, val_items, first, views, seed):
    """Hex digest over everything the cached numbers depend on (see module docstring)."""
    digest = hashlib.sha256()
    settings = {
        'version': FORMAT_VERSION, 'first': first, 'views': views,
        # the seed only shapes random views; ten crops do not depend on it
        'seed': None if views == TEN_CROPS else seed,
        'image_size': preprocessing.IMAGE_SIZE, 'scale_size': preprocessing.SCALE_SIZE,
        'mean': list(preprocessing.IMAGENET_MEAN_BGR),
        'pca': [list(preprocessing.PCA_EIGVAL), [list(v) for v in preprocessing.PCA_EIGVEC],
                preprocessing.PCA_ALPHA_STDDEV],
        'limits': [image_files.MAX_PIXELS, image_files.MAX_ASPECT, image_files.REDUCED_SIDE],
        'train': manifest(train_items), 'val': manifest(val_items)}
    digest.update(json.dumps(settings, sort_keys=True).encode('utf-8'))
    for function in _PREPROCESSING:
        digest.update(inspect.getsource(function).encode('utf-8'))
    for layer in sorted(frozen_weights):
        for array in frozen_weights[layer]:
            digest.update(('%s%s' % (layer, array.shape)).encode('utf-8'))
            digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return digest.hexdigest()[:20]


def _view_dataset(items, views, batch_size, seed):
    """(images [N, 227, 227, 3], image index int64 [N], view index int64 [N]) batches:
    every view of every image, in order; views None means the center crop only."""
    paths = [os.fsencode(path) for path, _ in items]
    dataset = tf.data.Dataset.from_tensor_slices((paths, np.arange(len(items), dtype=np.int64)))

    def load(path, index):
        image, ok = tf.numpy_function(datagenerator.read_or_skip, [path], [tf.uint8, tf.bool])
        image.set_shape([None, None, 3])                                   # uint8 RGB [H, W, 3]
        ok.set_shape([])
        if views is None:
            crops = preprocessing.preprocess_for_eval(image)[None]         # -> [1, 227, 227, 3]
        elif views == TEN_CROPS:
            crops = preprocessing.ten_crops(image)                         # -> [10, 227, 227, 3]
        else:
            # View v of image i: random numbers from the key (seed, i * 1000 + v), so a
            # rebuild makes the same views, however the parallel calls are scheduled.
            scaled = preprocessing.resize_shorter_side(image)
            crops = tf.stack([preprocessing.random_view(
                scaled, preprocessing.augmentation_draws(
                    tf.stack([tf.constant(seed, tf.int64), index * 1000 + v])))
                for v in range(views)])                                    # -> [V, 227, 227, 3]
        count = crops.shape.as_list()[0]
        return crops, tf.fill([count], index), tf.range(count, dtype=tf.int64), ok

    dataset = dataset.map(load, num_parallel_calls=datagenerator.AUTOTUNE)
    dataset = dataset.filter(lambda crops, index, view, ok: ok)   # unreadable since the scan
    dataset = dataset.map(lambda crops, index, view, ok: (crops, index, view))
    dataset = dataset.apply(tf.data.experimental.unbatch())         # one element per view
    return datagenerator.without_autotune(dataset.batch(batch_size).prefetch(2))


class FeatureCache(object):
    """The cached features of one run: the graph that fills them and the datasets that read them.

    Attributes:
      images: float32 [N, 227, 227, 3], the views to build the cache from: the
        frozen model's input (build the model on it).
      train_data: dataset of one epoch's (features float32 [N, D], labels int32
        [N]), one random view per image, shuffled by (seed, epoch): pass
        epoch (and skip) as tensors and initialize its iterator every epoch.
      val_data: the same for validation, in order, center crops; None if no items.
      folder: the cache folder, once prepare() ran; built: whether it had to build it.
    """

    def __init__(self, train_items, val_items, first, views, batch_size, seed=0, epoch=0,
                 skip=0):
        if first not in FEATURE_SIZES:
            raise ValueError('cached features feed fc6, fc7 or fc8, not %s' % first)
        self.first = first
        self.views = views
        self.seed = int(seed)
        self.items = {'train': list(train_items), 'val': list(val_items)}
        self.shapes = {'train': (len(train_items), views_per_image(views), FEATURE_SIZES[first]),
                       'val': (len(val_items), 1, FEATURE_SIZES[first])}
        self.folder = None
        self.built = False
        self._arrays = {}

        # Building: one feedable input for the views of either split.
        view_data = {'train': _view_dataset(train_items, views, batch_size, self.seed)}
        if val_items:
            view_data['val'] = _view_dataset(val_items, None, batch_size, self.seed)
        self._view_handle = tf.placeholder(tf.string, [], name='view_handle')
        iterator = tf.data.Iterator.from_string_handle(
            self._view_handle, tf.data.get_output_types(view_data['train']),
            tf.data.get_output_shapes(view_data['train']))
        self.images, self._image_index, self._view_index = iterator.get_next()
        self._view_iterators = {split: tf.data.make_initializable_iterator(data)
                                for split, data in view_data.items()}
        self._view_handles = {split: it.string_handle()
                              for split, it in self._view_iterators.items()}

        # Training: features read from the memory-mapped arrays.
        self.train_data = self._feature_dataset('train', batch_size, True, seed, epoch, skip)
        self.val_data = (self._feature_dataset('val', batch_size, False)
                         if val_items else None)

    def _feature_dataset(self, split, batch_size, training, seed=0, epoch=0, skip=0):
        count, views, size = self.shapes[split]
        labels = np.array([label for _, label in self.items[split]], np.int32)
        dataset = tf.data.Dataset.from_tensor_slices((np.arange(count, dtype=np.int64), labels))
        if training:
            # As datagenerator.make_dataset: epoch e's order and views depend only on
            # (seed, e), and `skip` leaves out what an interrupted epoch trained on.
            this_epoch = datagenerator.epoch_seed(seed, epoch)
            dataset = dataset.shuffle(count, seed=this_epoch)
            dataset = dataset.apply(tf.data.experimental.enumerate_dataset())
            dataset = dataset.skip(tf.cast(skip, tf.int64))

            def pick_view(position, index_label):
                draw = tf.random.stateless_uniform([], seed=tf.stack([this_epoch, position]))
                view = tf.minimum(tf.cast(draw * views, tf.int64), views - 1)
                return index_label[0], view, index_label[1]
            dataset = dataset.map(pick_view)
        else:
            dataset = dataset.map(lambda index, label: (index, tf.zeros([], tf.int64), label))
        dataset = dataset.batch(batch_size)

        def gather(index, view):
            # Reads N rows of [D] from the memmap: only these pages come into memory.
            return np.asarray(self._arrays[split][index, view], np.float32)

        def read(index, view, label):
            features = tf.numpy_function(gather, [index, view], tf.float32)
            features.set_shape([None, size])                               # -> [N, D]
            return features, label

        return datagenerator.without_autotune(dataset.map(read).prefetch(2))

    def prepare(self, session, model, cache_root, progress=True):
        """Opens the cache for the session's frozen weights, building it first if needed.

        Call after the weights are loaded or restored. model is the AlexNet built
        on self.images. Returns the cache folder.
        """
        frozen = alexnet.LAYER_NAMES[:alexnet.LAYER_NAMES.index(self.first)]
        key = cache_key(model.read_weights(session, frozen), self.items['train'],
                        self.items['val'], self.first, self.views, self.seed)
        self.folder = os.path.join(cache_root, key)
        self.built = not self._open(self.folder)
        if self.built:
            self._build(session, model.head_input(self.first), self.folder, progress)
            if not self._open(self.folder):
                raise RuntimeError('the feature cache just built in %s does not read back'
                                   % self.folder)
        return self.folder

    def _open(self, folder):
        """Memory-maps a complete cache; False if it is missing, half-written or truncated."""
        try:
            with open(os.path.join(folder, COMPLETE_MARKER), encoding='utf-8') as f:
                marker = json.load(f)
        except (OSError, ValueError):
            return False
        arrays = {}
        for split, shape in self.shapes.items():
            if marker.get('shapes', {}).get(split) != list(shape):
                return False
            if not shape[0]:
                continue
            try:
                array = np.load(os.path.join(folder, split + '.npy'), mmap_mode='r')
            except (OSError, ValueError):       # a truncated file does not map
                return False
            if array.shape != shape or array.dtype != np.float32:
                return False
            arrays[split] = array
        self._arrays = arrays
        return True

    def _build(self, session, features, folder, progress):
        """Runs the frozen layers on every view and writes them, the marker last."""
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        started = time.time()
        for split, shape in self.shapes.items():
            if not shape[0]:
                continue
            array = np.lib.format.open_memmap(os.path.join(folder, split + '.npy'), mode='w+',
                                              dtype=np.float32, shape=shape)
            iterator = self._view_iterators[split]
            session.run(iterator.initializer)
            handle = session.run(self._view_handles[split])
            bar = tqdm(total=shape[0] * shape[1], disable=not progress, unit='view',
                       desc='caching %s features' % split, leave=False)
            while True:
                try:
                    # keep_prob is not fed: 1.0, no dropout in the cached values
                    values, index, view = session.run(
                        [features, self._image_index, self._view_index],
                        {self._view_handle: handle})
                except tf.errors.OutOfRangeError:
                    break
                array[index, view] = values
                bar.update(len(index))
            bar.close()
            array.flush()
            del array
        marker = {'shapes': {split: list(shape) for split, shape in self.shapes.items()},
                  'first': self.first, 'views': self.views, 'seconds': time.time() - started}
        # Written last and renamed into place: its presence means every array is whole.
        temporary = os.path.join(folder, COMPLETE_MARKER + '.tmp')
        with open(temporary, 'w', encoding='utf-8') as f:
            json.dump(marker, f)
        os.replace(temporary, os.path.join(folder, COMPLETE_MARKER))

    def size_bytes(self):
        return sum(int(np.prod(shape)) * 4 for shape in self.shapes.values())
