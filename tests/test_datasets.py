"""datasets.py: the three layouts, links and duplicates, list-file labels, the split, the scan."""
import json
import os

import numpy as np
import pytest

import datasets
import image_files
from conftest import photo, save, touch


# --- find_dataset -----------------------------------------------------------

@pytest.mark.parametrize('top, classes', [('PetImages', ('Cat', 'Dog')),
                                          ('train', ('cats', 'dogs'))])
def test_class_folders(tmp_path, top, classes):
    root = tmp_path / top
    first, second = classes
    expected = [touch(root / first / name, name.encode()) for name in ('1.jpg', '2.JPG', '3.Jpeg')]
    expected += [touch(root / second / name, name.encode())
                 for name in ('a.png', 'b.webp', 'c.gif', 'd.bmp')]
    expected.append(touch(root / second / 'more' / 'e.jpg', b'e'))     # nested folders count
    for ignored in ('Thumbs.db', '.DS_Store', 'notes.txt', '._1.jpg'):
        touch(root / first / ignored)
    touch(root / '.hidden' / 'x.jpg')
    touch(root / 'empty_folder' / 'Thumbs.db')                         # no images: no class

    found = datasets.find_dataset(str(root))

    assert found.class_names == [first, second]
    assert found.items == ([(path, 0) for path in expected[:3]]
                           + [(path, 1) for path in expected[3:]])
    assert found.skipped == []


def test_kaggle_flat(tmp_path):
    root = tmp_path / 'train'
    names = ['cat.0.jpg', 'cat.1.jpg', 'dog.0.jpg', 'dog.12.JPG', 'cat.7.jpeg']
    for name in names + ['Thumbs.db']:
        touch(root / name, name.encode())

    found = datasets.find_dataset(str(root))

    assert found.class_names == ['cat', 'dog']
    assert sorted(found.items) == sorted((str(root / n), 0 if n.startswith('cat') else 1)
                                         for n in names)


def test_links_cannot_multiply_photos_or_move_them_between_classes(tmp_path):
    root = tmp_path / 'PetImages'
    cats = [touch(root / 'Cat' / ('%d.jpg' % i), b'cat%d' % i) for i in range(2)]
    dogs = [touch(root / 'Dog' / ('%d.jpg' % i), b'dog%d' % i) for i in range(2)]
    os.symlink('.', str(root / 'Cat' / 'self'))          # would repeat every cat
    os.symlink('..', str(root / 'Cat' / 'up'))           # would label every dog a cat
    os.symlink('../Dog', str(root / 'Cat' / 'dogs'))     # the same, one folder over
    os.symlink('Cat', str(root / 'Kitten'))              # a class that is another class
    os.link(dogs[0], str(root / 'Cat' / 'hard.jpg'))     # one photo in two classes

    found = datasets.find_dataset(str(root))

    assert found.class_names == ['Cat', 'Dog']
    assert sorted(found.items) == sorted([(cat, 0) for cat in cats] + [(dog, 1) for dog in dogs[1:]])
    skipped = dict(found.skipped)
    assert set(skipped) == {str(root / 'Cat' / name) for name in ('self', 'up', 'dogs')} | {
        str(root / 'Kitten'), dogs[0], str(root / 'Cat' / 'hard.jpg')}
    assert 'in 2 classes; left out of all' in skipped[dogs[0]]


def test_list_file_with_spaces(tmp_path):
    folder = tmp_path / 'my data'
    cat = touch(folder / 'a cat.jpg')
    dog = touch(folder / 'sub dir' / 'dog  1.jpg', b'dog')
    elsewhere = touch(tmp_path / 'elsewhere' / 'cat 2.png', b'cat2')
    list_file = folder / 'train list.txt'
    list_file.write_text('# path label\n'
                         'a cat.jpg 0\n'
                         '\n'
                         'sub dir/dog  1.jpg\t1\n'
                         '%s   0  \n' % elsewhere, encoding='utf-8')

    found = datasets.find_dataset(str(list_file))

    assert found.items == [(cat, 0), (dog, 1), (elsewhere, 0)]
    assert found.class_names == ['class 0', 'class 1']
    (folder / 'class_names.txt').write_text('cat\ndog\n')
    assert datasets.find_dataset(str(list_file)).class_names == ['cat', 'dog']


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
def test_layout_errors(tmp_path, make, path, message):
    make(tmp_path)
    with pytest.raises(datasets.DatasetError, match=message.replace('(', r'\(').replace(')', r'\)')):
        datasets.find_dataset(str(tmp_path / path))


@pytest.mark.parametrize('lines, message', [
    ('a.jpg 0\nb.jpg 1\nb.jpg\n', 'list.txt line 3: expected'),
    ('a.jpg 0\n\nb.jpg dog\n', 'list.txt line 3: expected'),
    ('a.jpg 0\nb.jpg -1\n', 'list.txt line 2: expected'),
    ('a.jpg 0\nb.jpg 0\n', 'only one class'),
    ('# nothing\n', 'no images listed'),
    ('gone.jpg 0\nlost.jpg 1\n', 'none of the files listed'),
    ('a.jpg 0\nb.jpg 5\n', 'no image of class 1, 2, 3, 4: labels must be 0..K-1'),
    ('a.jpg 0\nb.jpg 100000000\n', 'line 2: label 100000000; labels are 0..K-1'),
    ('a.jpg 0\nb.jpg 99999999999999999999\n', 'line 2: expected'),
    ('a.jpg 0\n' + 'x' * 9000 + ' 1\n', 'line 2 is longer than 8192 characters'),
])
def test_list_file_errors(tmp_path, lines, message):
    touch(tmp_path / 'a.jpg')
    touch(tmp_path / 'b.jpg', b'b')
    (tmp_path / 'list.txt').write_text(lines)
    with pytest.raises(datasets.DatasetError, match=message) as err:
        datasets.find_dataset(str(tmp_path / 'list.txt'))
    assert '\n' not in str(err.value) and len(str(err.value)) < 600


def test_list_file_that_is_not_text(tmp_path):
    (tmp_path / 'list.txt').write_bytes(b'\xff\xfe\x00binary')
    with pytest.raises(datasets.DatasetError, match='not a UTF-8 text file'):
        datasets.find_dataset(str(tmp_path / 'list.txt'))


def test_list_file_path_listed_twice(tmp_path):
    touch(tmp_path / 'a.jpg')
    touch(tmp_path / 'b.jpg', b'b')
    (tmp_path / 'list.txt').write_text('a.jpg 0\nb.jpg 1\na.jpg 1\na.jpg 0\n')
    found = datasets.find_dataset(str(tmp_path / 'list.txt'))
    assert found.items == [(str(tmp_path / 'a.jpg'), 0), (str(tmp_path / 'b.jpg'), 1)]
    assert found.skipped == [(str(tmp_path / 'a.jpg'), 'listed with label 0 and 1; kept with 0 only')]


@pytest.mark.parametrize('names, message', [('cat\ndog\n', 'has 2 names but the labels are 0..2'),
                                            ('a\nb\nc\nd\n', 'has more names')])
def test_class_names_file_must_name_every_class(tmp_path, names, message):
    touch(tmp_path / 'a.jpg')
    touch(tmp_path / 'b.jpg', b'b')
    touch(tmp_path / 'c.jpg', b'c')
    (tmp_path / 'list.txt').write_text('a.jpg 0\nb.jpg 1\nc.jpg 2\n')
    (tmp_path / 'class_names.txt').write_text(names)
    with pytest.raises(datasets.DatasetError, match=message):
        datasets.find_dataset(str(tmp_path / 'list.txt'))


# --- split_dataset, write_split, read_split ---------------------------------

def fake_items(counts):
    return [('c%d/%03d.jpg' % (label, i), label)
            for label, count in enumerate(counts) for i in range(count)]


def test_split_is_stratified_disjoint_and_keeps_a_training_image():
    items = fake_items([50, 20, 3, 2, 1])
    train, val = datasets.split_dataset(items, 0.2, seed=0)

    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(items)
    val_counts = [sum(1 for _, label in val if label == c) for c in range(5)]
    assert val_counts == [10, 4, 1, 1, 0]        # round(0.2 n), >= 1 from 2 up, never all
    assert {label for _, label in train} == {0, 1, 2, 3, 4}
    assert train == [item for item in items if item in set(train)]   # input order kept


def test_split_is_deterministic_and_order_independent():
    items = fake_items([30, 30])
    first = datasets.split_dataset(items, 0.3, seed=1)
    shuffled = [items[i] for i in np.random.RandomState(5).permutation(len(items))]

    assert datasets.split_dataset(items, 0.3, seed=1) == first
    assert sorted(datasets.split_dataset(shuffled, 0.3, seed=1)[1]) == sorted(first[1])
    assert sorted(datasets.split_dataset(items, 0.3, seed=2)[1]) != sorted(first[1])
    assert datasets.split_dataset(items, 0.0, seed=1) == (items, [])


def test_split_rejects_bad_fraction():
    with pytest.raises(datasets.DatasetError, match=r'in \[0, 1\)'):
        datasets.split_dataset(fake_items([3, 3]), 1.0, seed=0)


def test_write_and_read_split_with_odd_names(tmp_path):
    train, val = datasets.split_dataset(fake_items([5, 5]), 0.4, seed=0)
    train.append((os.fsdecode(b'caf\xe9.jpg'), 1))           # a name that is not UTF-8
    path = str(tmp_path / 'split.json')
    datasets.write_split(path, train, val, ['cat', 'dog'])

    assert datasets.read_split(path) == (train, val, ['cat', 'dog'])
    assert sorted(json.load(open(path))) == ['class_names', 'train', 'val']


@pytest.mark.parametrize('content, message', [
    ('{"train": ', 'cannot read the split file'),
    ('{"class_names": ["a"], "train": [["x.jpg", 3]], "val": []}', 'label 3 of 1 classes'),
    ('{"class_names": ["a"], "train": [], "val": []}', 'no training images'),
    ('[' * 100000 + ']' * 100000, 'cannot read the split file'),
])
def test_damaged_split_file(tmp_path, content, message):
    path = str(tmp_path / 'split.json')
    with open(path, 'w') as f:
        f.write(content)
    with pytest.raises(datasets.DatasetError, match=message) as err:
        datasets.read_split(path)
    assert 'delete it to split again' in str(err.value)


# --- The scan for files that do not decode -------------------------------------

@pytest.fixture
def scan_corpus(tmp_path):
    """Three good photos and three bad files, as PetImages has them."""
    folder = tmp_path / 'corpus'
    good = [save(folder / ('%d.jpg' % i), photo(40, 50, seed=i)) for i in range(3)]
    with open(good[0], 'rb') as f:
        head = f.read()[:600]
    bad = [touch(folder / 'empty.jpg', b''), touch(folder / 'text.jpg', b'<html>404</html>'),
           touch(folder / 'truncated.jpg', head)]
    return [(path, i % 2) for i, path in enumerate(good)], [(path, 0) for path in bad]


def test_scan_reports_exactly_the_undecodable_files(scan_corpus, capsys):
    good_items, bad_items = scan_corpus
    good, bad = datasets.scan_images(good_items + bad_items, progress=True)

    assert good == good_items
    assert sorted(path for path, _ in bad) == sorted(path for path, _ in bad_items)
    reasons = dict(bad)
    assert 'truncated' in reasons[bad_items[2][0]].lower()
    assert 'cannot identify image' in reasons[bad_items[1][0]]
    assert '3 cannot be read and are skipped' in capsys.readouterr().out


def test_scan_reports_missing_files(tmp_path):
    good, bad = datasets.scan_images([(str(tmp_path / 'gone.jpg'), 0)], progress=False)
    assert good == [] and 'No such file' in bad[0][1]


def test_scan_cache_decodes_only_new_or_changed_files(scan_corpus, tmp_path, monkeypatch):
    decoded = []
    real_read_image = image_files.read_image

    def counting_read_image(path, **options):
        decoded.append(path)
        return real_read_image(path, **options)

    monkeypatch.setattr(image_files, 'read_image', counting_read_image)
    items = scan_corpus[0] + scan_corpus[1]
    cache_dir = str(tmp_path / 'cache')

    first = datasets.scan_images(items, cache_dir=cache_dir, progress=False)
    assert sorted(decoded) == sorted(path for path, _ in items)
    assert os.path.exists(os.path.join(cache_dir, datasets.SCAN_CACHE_FILE))

    del decoded[:]
    assert datasets.scan_images(items, cache_dir=cache_dir, progress=False) == first
    assert decoded == []

    # Repair the truncated file (new size and mtime): only it is decoded again.
    truncated = scan_corpus[1][2][0]
    save(truncated, photo(30, 40), format='JPEG')
    good, bad = datasets.scan_images(items, cache_dir=cache_dir, progress=False)
    assert decoded == [truncated]
    assert truncated in [path for path, _ in good] and len(bad) == 2

    # A damaged cache costs a rescan, not a crash.
    with open(os.path.join(cache_dir, datasets.SCAN_CACHE_FILE), 'w') as f:
        f.write('{not json')
    del decoded[:]
    assert datasets.scan_images(items, cache_dir=cache_dir, progress=False) == (good, bad)
    assert len(decoded) == len(items)


def test_report_shows_odd_names_readably(capsys):
    datasets.report_skipped([(os.fsdecode(b'/d/caf\xe9.jpg'), 'truncated')] * 12, shown=2)
    out = capsys.readouterr().out
    assert out.splitlines() == ['  /d/caf\\xe9.jpg: truncated'] * 2 + ['  ... and 10 more']


# --- ILSVRC-2012's train/: a folder per WordNet id -----------------------------------

def imagenet_train(root, indices, per_class=2):
    """Folders of the given bvlc_alexnet classes, named by their WordNet ids."""
    import class_names
    wnids = class_names.imagenet_wnids()
    for index in indices:
        for i in range(per_class):
            save(os.path.join(str(root), wnids[index], 'ILSVRC_%d_%d.JPEG' % (index, i)),
                 photo(48, 64, seed=index * 10 + i))
    return str(root)


def test_imagenet_folders_take_bvlc_alexnets_class_indices(tmp_path):
    import class_names
    found = datasets.find_imagenet(imagenet_train(tmp_path / 'train', (999, 5, 300)))
    assert found.class_names == class_names.imagenet_class_names()
    labels = {os.path.basename(os.path.dirname(path)): label for path, label in found.items}
    wnids = class_names.imagenet_wnids()
    assert labels == {wnids[5]: 5, wnids[300]: 300, wnids[999]: 999}
    assert len(found.items) == 6


@pytest.mark.parametrize('folder, message', [
    ('n99999999', 'n99999999 is not one of the 1000 ILSVRC-2012 classes'),
    ('cats', 'cats is not one of the 1000 ILSVRC-2012 classes'),
])
def test_a_folder_outside_the_1000_classes_is_named(tmp_path, folder, message):
    root = imagenet_train(tmp_path / 'train', (0, 1))
    save(os.path.join(root, folder, 'a.jpg'), photo(48, 64))
    with pytest.raises(datasets.DatasetError, match=message) as caught:
        datasets.find_imagenet(root)
    assert 'move it out of' in str(caught.value)
