"""Tests of datagenerator.py: dataset layouts, split, scan of bad files, preprocessing
against independent NumPy computations, and the tf.data pipeline."""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import datagenerator as dg

MEAN_BGR = np.array(dg.IMAGENET_MEAN_BGR, np.float32)


# --- Helpers ----------------------------------------------------------------

def photo(height, width, seed=0):
    """A smooth random uint8 RGB image [height, width, 3] (JPEG-friendly, not flat)."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def save(path, image, **options):
    """Saves a PIL image or a NumPy array; returns the path as str."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(str(path), **options)
    return str(path)


def touch(path, data=b'x'):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), 'wb') as f:
        f.write(data)
    return str(path)


def run(build):
    """Runs build() -> tensors in a fresh graph and session; returns their values."""
    with tf.Graph().as_default():
        tensors = build()
        with tf.Session() as session:
            return session.run(tensors)


def read_all(dataset_fn):
    """All (images, labels) of one epoch of the dataset dataset_fn() builds."""
    with tf.Graph().as_default():
        images, labels = tf.data.make_one_shot_iterator(dataset_fn()).get_next()
        batches = []
        with tf.Session() as session:
            try:
                while True:
                    batches.append(session.run([images, labels]))
            except tf.errors.OutOfRangeError:
                pass
    return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


def np_resize_bilinear(image, height, width):
    """Bilinear resize with TF 1.x resize_images' sampling: source = target * in / out."""
    def axis(out_size, in_size):
        source = np.arange(out_size) * (in_size / out_size)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, in_size - 1), (source - low).astype(np.float32)
    y0, y1, fy = axis(height, image.shape[0])
    x0, x1, fx = axis(width, image.shape[1])
    image = image.astype(np.float32)
    fx = fx[None, :, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def np_model_input(rgb):
    return rgb[..., ::-1].astype(np.float32) - MEAN_BGR


# --- find_dataset -----------------------------------------------------------

@pytest.mark.parametrize('top, classes', [('PetImages', ('Cat', 'Dog')),
                                          ('train', ('cats', 'dogs'))])
def test_find_dataset_class_folders(tmp_path, top, classes):
    root = tmp_path / top
    first, second = classes
    expected = [touch(root / first / name) for name in ('1.jpg', '2.JPG', '3.Jpeg')]
    expected += [touch(root / second / name) for name in ('a.png', 'b.webp', 'c.gif', 'd.bmp')]
    expected.append(touch(root / second / 'more' / 'e.jpg'))          # nested folders count
    for ignored in ('Thumbs.db', '.DS_Store', 'notes.txt', '._1.jpg'):
        touch(root / first / ignored)
    touch(root / '.hidden' / 'x.jpg')
    touch(root / 'empty_folder' / 'Thumbs.db')                         # no images: no class

    items, class_names = dg.find_dataset(str(root))

    assert class_names == [first, second]
    assert items == [(path, 0) for path in expected[:3]] + [(path, 1) for path in expected[3:]]


def test_find_dataset_kaggle_flat(tmp_path):
    root = tmp_path / 'train'
    names = ['cat.0.jpg', 'cat.1.jpg', 'dog.0.jpg', 'dog.12.JPG', 'cat.7.jpeg']
    for name in names + ['Thumbs.db']:
        touch(root / name)

    items, class_names = dg.find_dataset(str(root))

    assert class_names == ['cat', 'dog']
    assert sorted(items) == sorted((str(root / n), 0 if n.startswith('cat') else 1)
                                   for n in names)


def test_find_dataset_list_file_with_spaces(tmp_path):
    folder = tmp_path / 'my data'
    cat = touch(folder / 'a cat.jpg')
    dog = touch(folder / 'sub dir' / 'dog  1.jpg')
    elsewhere = touch(tmp_path / 'elsewhere' / 'cat 2.png')
    list_file = folder / 'train list.txt'
    list_file.write_text('# path label\n'
                         'a cat.jpg 0\n'
                         '\n'
                         'sub dir/dog  1.jpg\t1\n'
                         '%s   0  \n' % elsewhere, encoding='utf-8')

    items, class_names = dg.find_dataset(str(list_file))

    assert items == [(cat, 0), (dog, 1), (elsewhere, 0)]
    assert class_names == ['class0', 'class1']

    (folder / 'class_names.txt').write_text('cat\ndog\n')
    assert dg.find_dataset(str(list_file))[1] == ['cat', 'dog']


def kaggle_parent(root):
    touch(root / 'train' / 'cat.0.jpg')
    touch(root / 'train' / 'dog.0.jpg')
    touch(root / 'test1' / '1.jpg')


@pytest.mark.parametrize('make, path, message', [
    (lambda root: None, 'missing', 'does not exist'),
    (lambda root: os.makedirs(str(root / 'empty')), 'empty', 'no images in'),
    (lambda root: touch(root / 'junk' / 'Thumbs.db'), 'junk', 'no images in'),
    (lambda root: touch(root / 'PetImages' / 'Cat' / '1.jpg'), 'PetImages',
     'only one class (Cat)'),
    (lambda root: touch(root / 'flat' / 'cat.0.jpg'), 'flat', 'only one class (cat)'),
    (lambda root: touch(root / 'test1' / '1.jpg'), 'test1', 'cannot tell the class of 1.jpg'),
    (kaggle_parent, '.', "looks like Kaggle's flat train folder"),
    (lambda root: touch(root / 'a.jpg'), 'a.jpg', 'is an image, not a dataset'),
])
def test_find_dataset_errors(tmp_path, make, path, message):
    make(tmp_path)
    with pytest.raises(dg.DatasetError, match=message.replace('(', r'\(').replace(')', r'\)')):
        dg.find_dataset(str(tmp_path / path))


@pytest.mark.parametrize('lines, message', [
    ('a.jpg 0\nb.jpg 1\nb.jpg\n', 'list.txt line 3: expected'),
    ('a.jpg 0\n\nb.jpg dog\n', 'list.txt line 3: expected'),
    ('a.jpg 0\nb.jpg -1\n', 'list.txt line 2: expected'),
    ('a.jpg 0\nb.jpg 0\n', 'only one class'),
    ('# nothing\n', 'no images listed'),
    ('gone.jpg 0\nlost.jpg 1\n', 'none of the files listed'),
])
def test_find_dataset_list_file_errors(tmp_path, lines, message):
    touch(tmp_path / 'a.jpg')
    touch(tmp_path / 'b.jpg')
    (tmp_path / 'list.txt').write_text(lines)
    with pytest.raises(dg.DatasetError, match=message):
        dg.find_dataset(str(tmp_path / 'list.txt'))


def test_find_dataset_class_names_file_too_short(tmp_path):
    touch(tmp_path / 'a.jpg')
    (tmp_path / 'list.txt').write_text('a.jpg 0\na.jpg 2\n')
    (tmp_path / 'class_names.txt').write_text('cat\ndog\n')
    with pytest.raises(dg.DatasetError, match='has 2 names but the labels go up to 2'):
        dg.find_dataset(str(tmp_path / 'list.txt'))


# --- split_dataset, write_split, read_split ---------------------------------

def fake_items(counts):
    return [('c%d/%03d.jpg' % (label, i), label)
            for label, count in enumerate(counts) for i in range(count)]


def test_split_is_stratified_disjoint_and_keeps_a_training_image():
    items = fake_items([50, 20, 3, 2, 1])
    train, val = dg.split_dataset(items, 0.2, seed=0)

    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(items)
    val_counts = [sum(1 for _, label in val if label == c) for c in range(5)]
    assert val_counts == [10, 4, 1, 1, 0]        # round(0.2 n), >= 1 from 2 up, never all
    assert {label for _, label in train} == {0, 1, 2, 3, 4}
    assert train == [item for item in items if item in set(train)]   # input order kept


def test_split_is_deterministic_and_order_independent():
    items = fake_items([30, 30])
    first = dg.split_dataset(items, 0.3, seed=1)
    shuffled = [items[i] for i in np.random.RandomState(5).permutation(len(items))]

    assert dg.split_dataset(items, 0.3, seed=1) == first
    assert sorted(dg.split_dataset(shuffled, 0.3, seed=1)[1]) == sorted(first[1])
    assert sorted(dg.split_dataset(items, 0.3, seed=2)[1]) != sorted(first[1])
    assert dg.split_dataset(items, 0.0, seed=1) == (items, [])


def test_split_rejects_bad_fraction():
    with pytest.raises(dg.DatasetError, match=r'in \[0, 1\)'):
        dg.split_dataset(fake_items([3, 3]), 1.0, seed=0)


def test_write_and_read_split(tmp_path):
    train, val = dg.split_dataset(fake_items([5, 5]), 0.4, seed=0)
    path = str(tmp_path / 'split.json')
    dg.write_split(path, train, val, ['cat', 'dog'])

    assert dg.read_split(path) == (train, val, ['cat', 'dog'])
    assert sorted(json.load(open(path))) == ['class_names', 'train', 'val']
    with open(path, 'w') as f:
        f.write('{"train": ')
    with pytest.raises(dg.DatasetError, match='cannot read the split file'):
        dg.read_split(path)


# --- A corpus of good and bad files, as in PetImages ------------------------

GOOD = ('rgb.jpg', 'gray.jpg', 'cmyk.jpg', 'rgba.png', 'gray16.png', 'animated.gif')
BAD = ('empty.jpg', 'truncated.jpg', 'text.jpg')


@pytest.fixture
def corpus(tmp_path):
    """{name: path} of the GOOD and BAD files, in tmp_path/corpus."""
    folder = tmp_path / 'corpus'
    image = photo(60, 80)
    rgba = np.dstack([image, np.tile(np.arange(80, dtype=np.uint8) * 3, (60, 1))])
    paths = {
        'rgb.jpg': save(folder / 'rgb.jpg', image, quality=90),
        'gray.jpg': save(folder / 'gray.jpg', image[:, :, 1]),
        'cmyk.jpg': save(folder / 'cmyk.jpg', Image.fromarray(image).convert('CMYK')),
        'rgba.png': save(folder / 'rgba.png', rgba),
        'gray16.png': save(folder / 'gray16.png', image[:, :, 0].astype(np.uint16) * 257),
        'empty.jpg': touch(folder / 'empty.jpg', b''),
        'text.jpg': touch(folder / 'text.jpg', b'<html>404 Not Found</html>\n'),
    }
    with open(paths['rgb.jpg'], 'rb') as f:
        paths['truncated.jpg'] = touch(folder / 'truncated.jpg', f.read()[:1500])
    paths['animated.gif'] = str(folder / 'animated.gif')
    Image.fromarray(image).save(paths['animated.gif'], save_all=True,
                                append_images=[Image.fromarray(image[::-1])])
    assert Image.open(paths['gray16.png']).mode.startswith('I')
    assert Image.open(paths['cmyk.jpg']).mode == 'CMYK'
    return paths


def corpus_items(corpus):
    return [(corpus[name], i % 2) for i, name in enumerate(GOOD + BAD)]


def test_scan_reports_exactly_the_undecodable_files(corpus, capsys):
    items = corpus_items(corpus)
    good, bad = dg.scan_images(items, progress=True)

    assert good == [item for item in items if os.path.basename(item[0]) in GOOD]
    assert sorted(path for path, _ in bad) == sorted(corpus[name] for name in BAD)
    reasons = dict(bad)
    assert 'truncated' in reasons[corpus['truncated.jpg']]
    assert 'cannot identify image' in reasons[corpus['text.jpg']]
    assert '3 cannot be read and are skipped' in capsys.readouterr().out


def test_scan_reports_missing_files(tmp_path):
    good, bad = dg.scan_images([(str(tmp_path / 'gone.jpg'), 0)], progress=False)
    assert good == [] and 'No such file' in bad[0][1]


def test_scan_cache_decodes_only_new_or_changed_files(corpus, tmp_path, monkeypatch):
    decoded = []
    real_read_image = dg.read_image

    def counting_read_image(path, **options):
        decoded.append(path)
        return real_read_image(path, **options)

    monkeypatch.setattr(dg, 'read_image', counting_read_image)
    items = corpus_items(corpus)
    cache_dir = str(tmp_path / 'cache')

    first = dg.scan_images(items, cache_dir=cache_dir, progress=False)
    assert sorted(decoded) == sorted(corpus.values())
    assert os.path.exists(os.path.join(cache_dir, dg.SCAN_CACHE_FILE))

    del decoded[:]
    assert dg.scan_images(items, cache_dir=cache_dir, progress=False) == first
    assert decoded == []

    # Repair the truncated file (new size and mtime): only it is decoded again.
    save(corpus['truncated.jpg'], photo(30, 40), format='JPEG')
    good, bad = dg.scan_images(items, cache_dir=cache_dir, progress=False)
    assert decoded == [corpus['truncated.jpg']]
    assert corpus['truncated.jpg'] in [path for path, _ in good] and len(bad) == 2

    # A damaged cache costs a rescan, not a crash.
    with open(os.path.join(cache_dir, dg.SCAN_CACHE_FILE), 'w') as f:
        f.write('{not json')
    del decoded[:]
    assert dg.scan_images(items, cache_dir=cache_dir, progress=False) == (good, bad)
    assert len(decoded) == len(items)


def test_make_dataset_reads_every_good_format_and_skips_bad_files(corpus):
    items = corpus_items(corpus)     # unscanned: the bad files reach the pipeline
    images, labels = read_all(lambda: dg.make_dataset(items, 4, training=False))

    assert images.shape == (len(GOOD), 227, 227, 3) and images.dtype == np.float32
    assert labels.tolist() == [label for _, label in items[:len(GOOD)]]
    assert np.all(np.isfinite(images))
    gray = dg.model_input_to_rgb(images[GOOD.index('gray.jpg')]).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 1    # grayscale -> equal R, G, B

    images, labels = read_all(lambda: dg.make_dataset(items, 4, training=True, seed=0))
    assert images.shape == (len(GOOD), 227, 227, 3)
    assert sorted(labels.tolist()) == sorted(label for _, label in items[:len(GOOD)])


# --- Preprocessing against NumPy --------------------------------------------

def test_rgb_to_model_input_is_bgr_minus_mean_exactly():
    image = np.zeros((300, 260, 3), np.uint8) + np.array([10, 120, 250], np.uint8)
    out = run(lambda: dg.preprocess_for_eval(tf.constant(image)))
    expected = np.array([250, 120, 10], np.float32) - MEAN_BGR
    assert out.shape == (227, 227, 3)
    assert np.array_equal(out, np.broadcast_to(expected, out.shape))


def test_eval_is_center_crop_of_resized_image():
    image = photo(200, 300, seed=1)                         # -> 256 x 384 after scaling
    out = run(lambda: dg.preprocess_for_eval(tf.constant(image)))
    scaled = np_resize_bilinear(image, 256, 384)
    top, left = (256 - 227) // 2, (384 - 227) // 2
    expected = np_model_input(scaled[top:top + 227, left:left + 227])
    np.testing.assert_allclose(out, expected, atol=0.01)


def test_ten_crops_are_corners_center_and_mirrors():
    image = photo(260, 300, seed=2)

    def build():
        return dg.ten_crops(tf.constant(image)), dg.resize_shorter_side(tf.constant(image))
    crops, scaled = run(build)

    assert crops.shape == (10, 227, 227, 3) and scaled.shape[0] == 256
    height, width = scaled.shape[:2]
    corners = [(0, 0), (0, width - 227), (height - 227, 0), (height - 227, width - 227),
               ((height - 227) // 2, (width - 227) // 2)]
    for i, (top, left) in enumerate(corners):
        window = np_model_input(scaled[top:top + 227, left:left + 227])
        np.testing.assert_allclose(crops[i], window, atol=1e-4)
        np.testing.assert_array_equal(crops[5 + i], crops[i][:, ::-1])
    eval_crop = run(lambda: dg.preprocess_for_eval(tf.constant(image)))
    np.testing.assert_array_equal(crops[4], eval_crop)


def test_pca_noise_with_fixed_alpha_adds_eigvec_times_alpha_eigval():
    image = photo(240, 256, seed=3)
    alpha = np.array([0.1, -0.2, 0.05], np.float32)

    def build():
        x = tf.constant(image)
        return (dg.preprocess_for_train(x, random_crop=False, flip=False, pca_alpha=alpha),
                dg.preprocess_for_eval(x))
    noisy, plain = run(build)

    offset_rgb = np.array(dg.PCA_EIGVEC) @ (alpha * np.array(dg.PCA_EIGVAL)) * 255
    np.testing.assert_allclose(noisy - plain, np.broadcast_to(offset_rgb[::-1], plain.shape),
                               atol=1e-3)


def find_window(scaled, crop_rgb):
    """(top, left) of the 227x227 window of scaled equal to crop_rgb, or None."""
    height, width = scaled.shape[:2]
    for top in range(height - 226):
        for left in range(width - 226):
            if np.allclose(scaled[top, left], crop_rgb[0, 0], atol=1e-3) and np.allclose(
                    scaled[top:top + 227, left:left + 227], crop_rgb, atol=1e-3):
                return top, left
    return None


def test_train_augmentations_are_windows_mirrors_and_colour_shifts():
    image = photo(256, 300, seed=4)
    seeds = range(6)

    def build():
        x = tf.constant(image)
        crops = [dg.preprocess_for_train(x, flip=False, pca_noise=False, seed=s) for s in seeds]
        flips = [dg.preprocess_for_train(x, random_crop=False, pca_noise=False, seed=s)
                 for s in seeds]
        noise = [dg.preprocess_for_train(x, random_crop=False, flip=False, seed=s)
                 for s in seeds]
        return crops, flips, noise, dg.preprocess_for_eval(x), dg.resize_shorter_side(x)
    crops, flips, noise, center, scaled = run(build)

    # Random crop: some 227x227 window of the scaled image, at varying places.
    windows = [find_window(scaled, (crop + MEAN_BGR)[..., ::-1]) for crop in crops]
    assert None not in windows and len(set(windows)) > 2
    # Flip: the center crop or its mirror, both seen.
    mirrored = [np.array_equal(f, center[:, ::-1]) for f in flips]
    assert all(m or np.array_equal(f, center) for m, f in zip(mirrored, flips))
    assert 0 < sum(mirrored) < len(seeds)
    # PCA noise: one offset per channel for the whole image, different per draw, small.
    offsets = [(n - center).reshape(-1, 3) for n in noise]
    assert all(np.ptp(o, axis=0).max() < 1e-3 for o in offsets)
    assert len({tuple(np.round(o[0], 3)) for o in offsets}) == len(seeds)
    assert max(np.abs(o[0]).max() for o in offsets) < 40


def test_preprocess_for_train_repeats_with_a_seed():
    image = photo(280, 300, seed=5)
    first = run(lambda: dg.preprocess_for_train(tf.constant(image), seed=7))
    again = run(lambda: dg.preprocess_for_train(tf.constant(image), seed=7))
    np.testing.assert_array_equal(first, again)


# --- make_dataset -----------------------------------------------------------

@pytest.fixture
def small_dataset(tmp_path):
    """8 JPEGs of different sizes, labels 0/1 alternating."""
    return [(save(tmp_path / ('%d.jpg' % i), photo(230 + 10 * i, 260, seed=i), quality=95), i % 2)
            for i in range(8)]


def test_make_dataset_eval_order_and_values(small_dataset):
    images, labels = read_all(lambda: dg.make_dataset(small_dataset, 3, training=False))

    assert labels.dtype == np.int32 and labels.tolist() == [l for _, l in small_dataset]

    def expected():
        return [dg.preprocess_for_eval(tf.constant(dg.read_image(path)))
                for path, _ in small_dataset]
    np.testing.assert_array_equal(images, np.stack(run(expected)))


def test_make_dataset_spec_and_shuffle_buffer_of_file_names(small_dataset):
    with tf.Graph().as_default() as graph:
        dataset = dg.make_dataset(small_dataset, 4, training=True, seed=0)
        images, labels = tf.data.get_output_shapes(dataset)
        assert images.as_list() == [None, 227, 227, 3] and labels.as_list() == [None]
        assert tf.data.get_output_types(dataset) == (tf.float32, tf.int32)

        # The shuffle buffer holds (file name, label) pairs, never decoded images,
        # and prefetching holds a couple of batches.
        shuffles = [op for op in graph.get_operations() if op.type.startswith('ShuffleDataset')]
        prefetches = [op for op in graph.get_operations() if op.type == 'PrefetchDataset']
        assert len(shuffles) == 1 and len(prefetches) == 1
        assert shuffles[0].get_attr('output_types') == [tf.string, tf.int32]
        with tf.Session() as session:
            assert session.run(shuffles[0].inputs[1]) == len(small_dataset)   # buffer_size
            assert 0 < session.run(prefetches[0].inputs[1]) <= 4


def epochs(items, seed, numbers=(0, 1), augment=True, rounds=1):
    """[(images, labels)] of one batch of all items per epoch and round: one graph, the
    iterator initialized each epoch with the epoch number, the dataset repeated `rounds`."""
    with tf.Graph().as_default():
        epoch = tf.placeholder(tf.int64, [])
        dataset = dg.make_dataset(items, len(items), training=True, seed=seed, epoch=epoch,
                                  augment=augment).repeat(rounds)
        iterator = tf.data.make_initializable_iterator(dataset)
        batch = iterator.get_next()
        results = []
        with tf.Session() as session:
            for number in numbers:
                session.run(iterator.initializer, {epoch: number})
                results.extend(session.run(batch) for _ in range(rounds))
    return results


def test_make_dataset_training_repeats_with_seed_and_epoch(small_dataset):
    first, again, other = (epochs(small_dataset, 3), epochs(small_dataset, 3, numbers=(1,)),
                           epochs(small_dataset, 4))
    assert first[0][0].shape == (8, 227, 227, 3)
    np.testing.assert_array_equal(first[1][0], again[0][0])     # a resumed run's epoch 1
    np.testing.assert_array_equal(first[1][1], again[0][1])
    assert not np.array_equal(first[0][0], other[0][0])


@pytest.mark.parametrize('numbers, rounds', [((0, 1), 1), ((0,), 2)])
def test_make_dataset_reshuffles_and_reaugments_each_epoch(small_dataset, numbers, rounds):
    """Both ways of running epochs: a new epoch number per initialization, or repeat()."""
    plain = epochs(small_dataset, 3, numbers, augment=False, rounds=rounds)
    # Without augmentation only the order can change between epochs: it does.
    sums = [images.sum(axis=(1, 2, 3)).tolist() for images, _ in plain]
    assert sums[0] != sums[1] and sorted(sums[0]) == sorted(sums[1])
    # With augmentation the same image differs from one epoch to the next.
    two = epochs(small_dataset[:2], 3, numbers, rounds=rounds)
    by_label = [images[np.argsort(labels)] for images, labels in two]
    assert all(not np.array_equal(by_label[0][i], by_label[1][i]) for i in range(2))


def test_make_dataset_without_augmentation_gives_eval_images(small_dataset):
    items = small_dataset[:4]
    plain, plain_labels = read_all(lambda: dg.make_dataset(items, 4, training=False))
    shuffled, labels = read_all(lambda: dg.make_dataset(items, 4, training=True, seed=1,
                                                        augment=False))
    key = lambda batch: sorted(batch.reshape(len(batch), -1)[:, :50].tolist())  # noqa: E731
    assert key(shuffled) == key(plain)
    assert sorted(labels.tolist()) == sorted(plain_labels.tolist())


def test_make_dataset_rejects_no_items():
    with pytest.raises(dg.DatasetError, match='no images'):
        dg.make_dataset([], 4, training=True)


def test_decoded_cache_skips_decoding_after_the_first_pass(tmp_path, monkeypatch):
    rng = np.random.RandomState(0)
    items = []
    for i in range(6):
        path = str(tmp_path / ('%d.jpg' % i))
        Image.fromarray(rng.randint(0, 255, (260 + 9 * i, 300, 3)).astype(np.uint8)).save(path)
        items.append((path, i % 2))
    reads = []
    real = dg.read_or_skip
    monkeypatch.setattr(dg, 'read_or_skip', lambda path: reads.append(path) or real(path))
    cache = str(tmp_path / 'cache')
    with tf.Graph().as_default():
        plain = tf.data.make_one_shot_iterator(dg.make_dataset(items, 6, training=False)).get_next()
        cached = tf.data.make_one_shot_iterator(
            dg.make_dataset(items, 6, training=False, decoded_cache=cache).repeat(2)).get_next()
        train = tf.data.make_one_shot_iterator(dg.make_dataset(
            items, 3, training=True, seed=1, decoded_cache=cache).repeat(3)).get_next()
        with tf.Session() as session:
            want = session.run(plain)
            del reads[:]
            first, second = session.run(cached), session.run(cached)
            assert len(reads) == 6                      # the second pass reads the cache
            # The cache holds the scaled photo rounded to integers: at most 0.5 apart.
            assert np.abs(first[0] - want[0]).max() <= 0.5 + 1e-4
            np.testing.assert_array_equal(first[1], want[1])
            np.testing.assert_array_equal(first[0], second[0])
            del reads[:]
            labels = [session.run(train)[1] for _ in range(6)]     # 3 passes of 2 batches
    assert len(reads) == 6
    for epoch in range(3):
        assert sorted(np.concatenate(labels[2 * epoch:2 * epoch + 2]).tolist()) == [0, 0, 0, 1, 1, 1]


def test_decoded_cache_left_by_a_killed_run_is_not_a_problem(tmp_path):
    items = []
    for i in range(4):
        path = str(tmp_path / ('%d.jpg' % i))
        Image.new('RGB', (300, 280), (60 * i, 20, 20)).save(path)
        items.append((path, i % 2))
    cache = tmp_path / 'cache'
    with tf.Graph().as_default():
        dg.make_dataset(items, 2, training=False, decoded_cache=str(cache))
    prefix = [name for name in os.listdir(str(cache))]
    assert prefix == []                      # nothing written before the first pass
    # What a killed writer leaves: tf.data's lock and a temporary data file.
    key = dg._decoded_cache_file(str(cache), items, None)
    open(key + '_0.lockfile', 'w').close()
    open(key + '_0.data-00000-of-00001.tempstate123', 'w').close()
    with tf.Graph().as_default():
        batches = tf.data.make_one_shot_iterator(
            dg.make_dataset(items, 2, training=False, decoded_cache=str(cache))).get_next()
        with tf.Session() as session:
            assert session.run(batches)[0].shape == (2, 227, 227, 3)
            assert session.run(batches)[0].shape == (2, 227, 227, 3)
