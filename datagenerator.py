"""The tf.data input pipeline: batches of preprocessed photos for training and validation.

The course's data generator, written with tf.data instead of Python loops
with feed_dict: file names go in, batches of AlexNet inputs come out, decoded
and augmented on parallel threads while the network trains.

    epoch = tf.placeholder(tf.int64, [])
    iterator = tf.data.make_initializable_iterator(
        make_dataset(train_items, batch_size=128, training=True, seed=0, epoch=epoch))
    images, labels = iterator.get_next()    # float32 [N, 227, 227, 3], int32 [N]
    # every epoch: session.run(iterator.initializer, {epoch: e}), then run the
    # training step until tf.errors.OutOfRangeError.

One pass, stage by stage (the preprocessing is preprocessing.py's):

1. the file names, shuffled for training (names, not pixels: a buffer of the
   whole epoch costs ~100 bytes a photo);
2. decode (image_files.read_image, on parallel threads) and scale the shorter
   side to 256; a file that no longer decodes is skipped with a warning;
3. optionally, decoded_cache: the scaled photos are kept on disk as uint8
   after the first pass (tf.data's cache), so later epochs skip JPEG decoding;
   training then shuffles a fixed order of the photos within a window;
4. training: a random view of each photo (random crop, mirror, PCA colour
   noise, section 4.1) whose random numbers are a pure function of (seed,
   epoch, position in the epoch); otherwise the center crop;
5. batches, prepared ahead of the training step.

The order and augmentations of epoch e depend only on (seed, e), never on
thread scheduling, so a resumed run sees the epochs an uninterrupted one
would; `skip` drops the first photos of an epoch, for a run resumed mid-epoch.
Memory does not grow with the dataset: only about num_parallel_calls decoded
photos, the shuffle window of decoded_cache, and `prefetch` batches exist at a time.
"""
from __future__ import annotations

import glob
import hashlib
import os

import numpy as np
import tensorflow.compat.v1 as tf

import image_files
import preprocessing

AUTOTUNE = tf.data.experimental.AUTOTUNE
DECODED_SHUFFLE_IMAGES = 1000   # decoded_cache: shuffle window, ~250 MB of scaled photos


def without_autotune(dataset):
    """The dataset with tf.data's autotuning off: AUTOTUNE then means one call per core.

    Every epoch re-initializes the training iterator and every validation the
    validation one. Under TF 2.x the autotuning thread of the old iterator is
    waited for when it is replaced; finetune.py's validation of 400 cached
    features took 15 s instead of 0.02 s (bench.py --laptop shows the epochs).
    Two cores gain nothing from tuning anyway: the photos decode as fast without.
    """
    options = tf.data.Options()
    if hasattr(options, 'autotune'):                              # TF 2.x
        options.autotune.enabled = False
    else:                                                         # TF 1.15
        options.experimental_optimization.autotune = False
    return dataset.with_options(options)


class EmptyDatasetError(ValueError):
    """make_dataset was given no items."""


def epoch_seed(seed, epoch):
    """The seed of one epoch's order and augmentations: one formula for every pipeline."""
    return seed * 1000003 + tf.cast(epoch, tf.int64)


def read_or_skip(path):
    """numpy_function body: (uint8 RGB [H, W, 3], True), or a 1x1 dummy and False."""
    path = os.fsdecode(path)
    try:
        return image_files.read_image(path), True
    except image_files.ImageError as err:  # changed since the scan: skip it, never stop training
        tf.logging.warning('skipping %s', err)
        return np.zeros((1, 1, 3), np.uint8), False


def decode_and_scale(path):
    """A file name (string scalar) -> (float32 RGB [H', W', 3] scaled to 256, ok bool)."""
    image, ok = tf.numpy_function(read_or_skip, [path], [tf.uint8, tf.bool])
    image.set_shape([None, None, 3])                                     # uint8 RGB [H, W, 3]
    ok.set_shape([])
    return preprocessing.resize_shorter_side(image), ok


def make_dataset(items, batch_size, training, seed=0, epoch=0, skip=0, random_crop=True,
                 flip=True, pca_noise=True, num_parallel_calls=AUTOTUNE, prefetch=2,
                 drop_remainder=False, decoded_cache=None,
                 shuffle_images=DECODED_SHUFFLE_IMAGES):
    """One epoch of (images float32 [N, 227, 227, 3], labels int32 [N]) batches.

    Args:
      items: (path, label) pairs, e.g. datasets.scan_images' good items.
      batch_size: images per batch; the last one may be smaller.
      training: shuffle and augment; otherwise the order of items, center crops.
      seed: int, for the order and the augmentations.
      epoch: int or int64 scalar tensor: epoch e's order and augmentations
        depend only on (seed, e).
      skip: int or int64 scalar tensor: photos of the epoch to leave out at its
        start (those a run interrupted mid-epoch has trained on).
      random_crop, flip, pca_noise: the augmentations when training (each off:
        center crop, no mirror, no colour noise).
      num_parallel_calls: images decoded at once (AUTOTUNE: TF decides).
      prefetch: batches prepared ahead of the training step.
      drop_remainder: drop a last batch smaller than batch_size.
      decoded_cache: a folder: keep every photo decoded and scaled there after
        the first pass (uint8: the scaled pixels are rounded, at most 0.5 off);
        training then shuffles a fixed random order of the photos within a
        window of `shuffle_images` instead of the whole list.
    Raises:
      EmptyDatasetError: no items.
    """
    if not items:
        raise EmptyDatasetError('no images to read: the dataset or split is empty')
    seed = int(seed)
    this_epoch = epoch_seed(seed, epoch)                                 # int64 scalar
    if training and decoded_cache:
        # The cache holds one fixed order (a class-sorted folder would otherwise
        # fill the shuffle window with one class); each epoch reshuffles it in a window.
        items = [items[i] for i in np.random.RandomState(seed).permutation(len(items))]
    paths = [os.fsencode(path) for path, _ in items]
    labels = np.array([label for _, label in items], np.int32)

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))       # (string, int32)
    if training and not decoded_cache:
        dataset = dataset.shuffle(len(items), seed=this_epoch)
    dataset = dataset.map(lambda path, label: decode_and_scale(path) + (label,),
                          num_parallel_calls=num_parallel_calls)         # [H', W', 3], ok, label
    dataset = dataset.filter(lambda scaled, ok, label: ok)
    dataset = dataset.map(lambda scaled, ok, label: (scaled, label))
    if decoded_cache:
        dataset = dataset.map(lambda scaled, label: (tf.cast(tf.round(scaled), tf.uint8), label))
        dataset = dataset.cache(_decoded_cache_file(decoded_cache, items,
                                                    seed if training else None))
        if training:
            dataset = dataset.shuffle(min(shuffle_images, len(items)), seed=this_epoch)
    # Position in the epoch: the key of each photo's random numbers.
    dataset = dataset.apply(tf.data.experimental.enumerate_dataset())
    dataset = dataset.skip(tf.cast(skip, tf.int64))

    def view(position, scaled_label):
        scaled, label = scaled_label
        scaled = tf.cast(scaled, tf.float32)
        if training:
            draws = preprocessing.augmentation_draws(tf.stack([this_epoch, position]))
            image = preprocessing.random_view(scaled, draws, random_crop, flip, pca_noise)
        else:
            cropped = preprocessing.center_crop(scaled)
            cropped.set_shape([preprocessing.IMAGE_SIZE, preprocessing.IMAGE_SIZE, 3])
            image = preprocessing.rgb_to_model_input(cropped)
        return image, label                                              # [227, 227, 3], []

    dataset = dataset.map(view, num_parallel_calls=num_parallel_calls)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return without_autotune(dataset.prefetch(prefetch))


def _decoded_cache_file(folder, items, order_seed):
    """The cache's file prefix: named by what it holds (files, order, scaling)."""
    digest = hashlib.sha1(('v2 %d %r' % (preprocessing.SCALE_SIZE, order_seed)).encode('utf-8'))
    for path, label in items:
        try:
            status = os.stat(path)
            size, mtime = status.st_size, status.st_mtime_ns
        except OSError:             # gone since the scan: read_or_skip skips it
            size = mtime = -1
        digest.update(os.fsencode(os.path.abspath(path)))
        digest.update(('\t%d\t%d\t%d\n' % (label, size, mtime)).encode('utf-8'))
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, digest.hexdigest()[:20])
    # A run killed while writing leaves its lock behind (tf.data drops the half
    # written data itself); one trainer per dataset, so the lock is stale.
    for stale in glob.glob(glob.escape(prefix) + '*.lockfile'):
        os.remove(stale)
    return prefix
