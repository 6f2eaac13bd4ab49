"""datagenerator.make_dataset: the pipeline training runs, checked image by image."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import datagenerator as dg
import image_files
import preprocessing
from conftest import photo, read_epoch, run_graph, save, touch

# The published PCA of ImageNet pixels (fb.resnet.torch), written out independently.
EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]])


@pytest.fixture
def small_dataset(tmp_path):
    """8 JPEGs of different sizes, labels 0/1 alternating."""
    return [(save(tmp_path / ('%d.jpg' % i), photo(230 + 10 * i, 260, seed=i), quality=95), i % 2)
            for i in range(8)]


def eval_inputs(items):
    """What evaluation feeds the network for each item, built independently of make_dataset."""
    return np.stack(run_graph(lambda: [preprocessing.preprocess_for_eval(
        tf.constant(image_files.read_image(path))) for path, _ in items]))


def epochs(items, seed, numbers=(0, 1), skip=0, batch=None, **switches):
    """[(images, labels)] of each epoch in `numbers`: one graph, the iterator initialized
    each epoch with its number, as finetune.py does."""
    with tf.Graph().as_default():
        epoch = tf.placeholder(tf.int64, [])
        dataset = dg.make_dataset(items, batch or len(items), training=True, seed=seed,
                                  epoch=epoch, skip=skip, **switches)
        iterator = tf.data.make_initializable_iterator(dataset)
        batch_tensors = iterator.get_next()
        results = []
        with tf.Session() as session:
            for number in numbers:
                session.run(iterator.initializer, {epoch: number})
                results.append(session.run(batch_tensors))
    return results


def test_eval_order_and_values(small_dataset):
    images, labels = read_epoch(lambda: dg.make_dataset(small_dataset, 3, training=False))
    assert labels.dtype == np.int32 and labels.tolist() == [l for _, l in small_dataset]
    np.testing.assert_array_equal(images, eval_inputs(small_dataset))


def test_spec_and_a_shuffle_buffer_of_file_names(small_dataset):
    with tf.Graph().as_default() as graph:
        dataset = dg.make_dataset(small_dataset, 4, training=True, seed=0)
        images, labels = tf.data.get_output_shapes(dataset)
        assert images.as_list() == [None, 227, 227, 3] and labels.as_list() == [None]
        assert tf.data.get_output_types(dataset) == (tf.float32, tf.int32)
        # The shuffle buffer holds (file name, label) pairs, never decoded images.
        shuffles = [op for op in graph.get_operations() if op.type.startswith('ShuffleDataset')]
        assert len(shuffles) == 1
        assert shuffles[0].get_attr('output_types') == [tf.string, tf.int32]
        with tf.Session() as session:
            assert session.run(shuffles[0].inputs[1]) == len(small_dataset)   # buffer_size


def test_an_epoch_depends_only_on_seed_and_epoch(small_dataset):
    first = epochs(small_dataset, 3)
    again = epochs(small_dataset, 3, numbers=(1,))          # a resumed run's epoch 1
    other = epochs(small_dataset, 4)
    assert first[0][0].shape == (8, 227, 227, 3)
    np.testing.assert_array_equal(first[1][0], again[0][0])
    np.testing.assert_array_equal(first[1][1], again[0][1])
    assert not np.array_equal(first[0][0], other[0][0])


def test_skip_gives_the_rest_of_the_epoch_exactly(small_dataset):
    whole = epochs(small_dataset, 5, numbers=(2,))[0]
    rest = epochs(small_dataset, 5, numbers=(2,), skip=3)[0]
    np.testing.assert_array_equal(rest[0], whole[0][3:])
    np.testing.assert_array_equal(rest[1], whole[1][3:])


def test_each_epoch_reshuffles_and_reaugments(small_dataset):
    plain = epochs(small_dataset, 3, random_crop=False, flip=False, pca_noise=False)
    # Without augmentation only the order can change between epochs: it does.
    sums = [images.sum(axis=(1, 2, 3)).tolist() for images, _ in plain]
    assert sums[0] != sums[1] and sorted(sums[0]) == sorted(sums[1])
    # With augmentation the same image differs from one epoch to the next.
    two = epochs(small_dataset[:2], 3)
    by_label = [images[np.argsort(labels)] for images, labels in two]
    assert all(not np.array_equal(by_label[0][i], by_label[1][i]) for i in range(2))


def find_window(scaled, crop):
    """(top, left) of the 227x227 window of `scaled` equal to `crop`, or None."""
    height, width = scaled.shape[:2]
    for top in range(height - 226):
        for left in range(width - 226):
            if np.allclose(scaled[top, left], crop[0, 0], atol=1e-3) and np.allclose(
                    scaled[top:top + 227, left:left + 227], crop, atol=1e-3):
                return top, left
    return None


def test_training_views_are_windows_mirrors_and_colour_shifts(tmp_path):
    """Section 4.1 through the very pipeline training runs, one augmentation at a time."""
    image = photo(256, 290, seed=4)
    items = [(save(tmp_path / 'a.png', image), 0)]
    numbers = range(12)
    crops = [images[0] for images, _ in epochs(items, 1, numbers, flip=False, pca_noise=False)]
    flips = [images[0] for images, _ in epochs(items, 1, numbers, random_crop=False,
                                               pca_noise=False)]
    colours = [images[0] for images, _ in epochs(items, 1, numbers, random_crop=False,
                                                 flip=False)]
    center = eval_inputs(items)[0]
    scaled = run_graph(lambda: preprocessing.resize_shorter_side(tf.constant(image)))
    mean_bgr = np.array([104.00698793, 116.66876762, 122.67891434])

    # Random crop: some 227x227 window of the scaled image, at varying places.
    windows = [find_window(scaled, (crop + mean_bgr)[..., ::-1]) for crop in crops]
    assert None not in windows and len(set(windows)) > 4
    # Mirror: the center crop or its mirror, both seen.
    mirrored = [np.array_equal(f, center[:, ::-1]) for f in flips]
    assert all(m or np.array_equal(f, center) for m, f in zip(mirrored, flips))
    assert 0 < sum(mirrored) < len(flips)
    # Colour: one offset for the whole image, along the PCA eigenvectors.
    offsets = [(c - center).reshape(-1, 3) for c in colours]
    assert all(np.ptp(o, axis=0).max() < 1e-3 for o in offsets)
    alphas = [np.linalg.solve(EIGVEC, o[0][::-1] / 255.0) / EIGVAL for o in offsets]
    assert len({tuple(np.round(a, 4)) for a in alphas}) == len(colours)


def test_colour_noise_strength_is_the_papers(tmp_path):
    """a_i ~ N(0, 0.1) per image per epoch, recovered from the pipeline's own output."""
    items = [(save(tmp_path / ('%d.png' % i), photo(240, 240, seed=i)), 0) for i in range(4)]
    center = {float(x.sum()): x for x in eval_inputs(items)}
    alphas = []
    for images, _ in epochs(items, 2, numbers=range(40), random_crop=False, flip=False):
        for noisy in images:
            # which photo: the one whose center crop differs by a constant offset
            offset = min((noisy - plain for plain in center.values()),
                         key=lambda d: np.ptp(d.reshape(-1, 3), axis=0).max())
            rgb = offset.reshape(-1, 3)[0][::-1] / 255.0
            alphas.append(np.linalg.solve(EIGVEC, rgb) / EIGVAL)
    alphas = np.array(alphas)                         # [160, 3]
    assert len(alphas) == 160
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.25)
    assert np.abs(alphas.mean(axis=0)).max() < 0.04


def test_without_augmentation_training_gives_eval_images_shuffled(small_dataset):
    items = small_dataset[:4]
    shuffled, labels = epochs(items, 1, numbers=(0,), random_crop=False, flip=False,
                              pca_noise=False)[0]
    plain = eval_inputs(items)
    order = [next(i for i in range(4) if np.array_equal(s, plain[i])) for s in shuffled]
    assert sorted(order) == [0, 1, 2, 3] and order != [0, 1, 2, 3]
    assert labels.tolist() == [items[i][1] for i in order]


def test_reads_every_format_and_skips_files_that_fail(tmp_path):
    image = photo(60, 80)
    good = [save(tmp_path / 'rgb.jpg', image), save(tmp_path / 'gray.png', image[:, :, 0]),
            save(tmp_path / 'cmyk.jpg', Image.fromarray(image).convert('CMYK'))]
    bad = [touch(tmp_path / 'empty.jpg', b''), touch(tmp_path / 'text.jpg', b'<html>'),
           str(tmp_path / 'gone.jpg')]
    items = [(path, i % 2) for i, path in enumerate(good + bad)]   # unscanned: bad ones included
    images, labels = read_epoch(lambda: dg.make_dataset(items, 4, training=False))
    assert images.shape == (len(good), 227, 227, 3) and np.isfinite(images).all()
    assert labels.tolist() == [0, 1, 0]
    images, labels = read_epoch(lambda: dg.make_dataset(items, 4, training=True, seed=0))
    assert images.shape == (len(good), 227, 227, 3)


def test_out_of_memory_stops_the_epoch_instead_of_skipping_the_photo(tmp_path, monkeypatch):
    items = [(save(tmp_path / ('%d.png' % i), photo(60, 80, seed=i)), i % 2) for i in range(3)]

    def no_memory(path):
        raise MemoryError

    monkeypatch.setattr(image_files, 'read_image', no_memory)
    # TensorFlow's error for out of memory, which finetune.py turns into one line
    with pytest.raises(tf.errors.ResourceExhaustedError):
        read_epoch(lambda: dg.make_dataset(items, 2, training=True, seed=0))


def test_no_items_is_an_error():
    with pytest.raises(dg.EmptyDatasetError, match='no images'):
        dg.make_dataset([], 4, training=True)


def test_decoded_cache_skips_decoding_after_the_first_pass(tmp_path, monkeypatch):
    items = [(save(tmp_path / ('%d.jpg' % i), photo(260 + 9 * i, 300, seed=i)), i % 2)
             for i in range(6)]
    reads = []
    real = dg.read_or_skip
    monkeypatch.setattr(dg, 'read_or_skip', lambda path: reads.append(path) or real(path))
    cache = str(tmp_path / 'cache')
    want = read_epoch(lambda: dg.make_dataset(items, 6, training=False))
    del reads[:]
    with tf.Graph().as_default():
        epoch = tf.placeholder(tf.int64, [])
        cached = tf.data.make_initializable_iterator(
            dg.make_dataset(items, 6, training=False, decoded_cache=cache))
        train = tf.data.make_initializable_iterator(dg.make_dataset(
            items, 6, training=True, seed=1, epoch=epoch, decoded_cache=cache))
        with tf.Session() as session:
            passes = []
            for _ in range(2):
                session.run(cached.initializer)
                passes.append(session.run(cached.get_next()))
            assert len(reads) == 6                      # the second pass reads the cache
            del reads[:]
            labels = []
            for number in range(3):
                session.run(train.initializer, {epoch: number})
                labels.append(session.run(train.get_next())[1])
    # The cache holds the scaled photo rounded to integers: at most 0.5 apart.
    assert np.abs(passes[0][0] - want[0]).max() <= 0.5 + 1e-4
    np.testing.assert_array_equal(passes[0][1], want[1])
    np.testing.assert_array_equal(passes[0][0], passes[1][0])
    assert len(reads) == 6                               # training filled its cache once
    assert all(sorted(l.tolist()) == [0, 0, 0, 1, 1, 1] for l in labels)
    assert len({tuple(l) for l in labels}) > 1           # reshuffled per epoch


def test_decoded_cache_left_by_a_killed_run_is_not_a_problem(tmp_path):
    items = []
    for i in range(4):
        path = str(tmp_path / ('%d.jpg' % i))
        Image.new('RGB', (300, 280), (60 * i, 20, 20)).save(path)
        items.append((path, i % 2))
    cache = tmp_path / 'cache'
    with tf.Graph().as_default():
        dg.make_dataset(items, 2, training=False, decoded_cache=str(cache))
    assert os.listdir(str(cache)) == []          # nothing written before the first pass
    # What a killed writer leaves: tf.data's lock and a temporary data file.
    key = dg._decoded_cache_file(str(cache), items, None)
    open(key + '_0.lockfile', 'w').close()
    open(key + '_0.data-00000-of-00001.tempstate123', 'w').close()
    images, _ = read_epoch(lambda: dg.make_dataset(items, 2, training=False,
                                                   decoded_cache=str(cache)))
    assert images.shape == (4, 227, 227, 3)


def test_decoded_cache_takes_names_that_are_not_utf8(tmp_path):
    path = os.path.join(str(tmp_path), os.fsdecode(b'caf\xe9.jpg'))
    save(path, photo(250, 260))
    images, _ = read_epoch(lambda: dg.make_dataset([(path, 0), (path, 1)], 2, training=False,
                                                   decoded_cache=str(tmp_path / 'cache')))
    assert images.shape == (2, 227, 227, 3)
