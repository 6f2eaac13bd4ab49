"""Hostile and odd photos, folders and list files, each run in a child process under limits.

Every case is built here at test time and run in tests/script_worker.py's child
(address space limited to LIMIT_MB, a time limit per case): read_image on one
file, the dataset walk and scan on one folder or list file, the training
pipeline over a dataset, and the classifier's command line on a hostile photo
beside a good one. Each must end in a reported skip or a one-line error with the
documented exit status: no traceback, no signal, no hang, memory within the
limit, and nothing lost (the good photos still read, classified or trained on).
"""
import json
import os
import socket
import struct
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import photo, save
from script_worker import ScriptWorker

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='the worker sets RLIMIT_AS and the cases make FIFOs')

LIMIT_MB = 2500       # TensorFlow and a random AlexNet take about 1.7 GB of address space
TRAINING_LIMIT_MB = 6000   # training's threads reserve more; a 1x30000 strip would want 24 GB
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def worker():
    with ScriptWorker(LIMIT_MB, timeout=120) as process:
        yield process


@pytest.fixture(scope='module')
def trainer():
    with ScriptWorker(TRAINING_LIMIT_MB, timeout=600) as process:
        yield process


# --- Hostile files -----------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack(
        '>I', zlib.crc32(kind + data) & 0xffffffff)


def png_claiming(width, height, extra=b''):
    """A PNG whose header claims width x height, with a few bytes of data."""
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b'\x00' * 64)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', header) + extra
            + png_chunk(b'IDAT', data) + png_chunk(b'IEND', b''))


def jpeg_claiming(folder, width, height):
    """A real small JPEG with its frame header (SOF0) patched to claim width x height."""
    path = save(folder / 'small.jpg', photo(40, 60))
    with open(path, 'rb') as f:
        data = bytearray(f.read())
    os.remove(path)
    at = data.index(b'\xff\xc0') + 5                       # SOF0: length, precision, H, W
    data[at:at + 4] = struct.pack('>HH', height, width)
    return bytes(data)


def bmp_claiming(width, height):
    pixels = b'\x00' * 64
    header = struct.pack('<2sIHHI', b'BM', 54 + len(pixels), 0, 0, 54)
    info = struct.pack('<IiiHHIIiiII', 40, width, height, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return header + info + pixels


def gif_claiming(width, height):
    return (b'GIF89a' + struct.pack('<HH', width, height) + b'\x00\x00\x00'
            + b',\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;')


def png_text_bomb():
    """A PNG with a compressed text chunk that inflates to 64 MB."""
    bomb = b'comment\x00\x00' + zlib.compress(b'\x00' * (64 << 20), 9)
    return png_claiming(8, 8, extra=png_chunk(b'zTXt', bomb))


def good_png(folder, name='good.png'):
    return save(folder / name, photo(240, 260, seed=7))


def make_file(folder, kind):
    """Writes one hostile or odd file named like a photo; returns its path."""
    path = folder / ('%s.png' % kind)
    if kind == 'strip_1x30000':
        Image.new('RGB', (1, 30000)).save(str(path))            # 23.6 GB once scaled to 256
    elif kind == 'strip_30000x1':
        Image.new('L', (30000, 1)).save(str(path))
    elif kind == 'png_12000x12000':
        Image.new('L', (12000, 12000)).save(str(path))          # 140 KB, 432 MB decoded
    elif kind == 'png_claims_1e10_pixels':
        path.write_bytes(png_claiming(100000, 100000))
    elif kind == 'png_claims_40000x40000':
        path.write_bytes(png_claiming(40000, 40000))
    elif kind == 'png_text_bomb':
        path.write_bytes(png_text_bomb())
    elif kind == 'png_bad_crc':
        data = bytearray(png_claiming(8, 8))
        data[-20] ^= 0xff
        path.write_bytes(bytes(data))
    elif kind == 'jpeg_claims_65000x65000':
        path = folder / 'huge.jpg'
        path.write_bytes(jpeg_claiming(folder, 65000, 65000))
    elif kind == 'jpeg_claims_60000x2':
        path = folder / 'wide.jpg'
        path.write_bytes(jpeg_claiming(folder, 60000, 2))
    elif kind == 'bmp_claims_50000x50000':
        path = folder / 'huge.bmp'
        path.write_bytes(bmp_claiming(50000, 50000))
    elif kind == 'gif_claims_65535x65535':
        path = folder / 'huge.gif'
        path.write_bytes(gif_claiming(65535, 65535))
    elif kind == 'fifo':
        path = folder / 'pipe.jpg'
        os.mkfifo(str(path))
    elif kind == 'socket':
        path = folder / 'sock.jpg'
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()
    elif kind == 'device':
        path = folder / 'zero.jpg'
        os.symlink('/dev/zero', str(path))
    elif kind == 'folder':
        path = folder / 'folder.jpg'
        path.mkdir()
    elif kind == 'link_loop':
        path = folder / 'loop.jpg'
        os.symlink('loop.jpg', str(path))
    elif kind == 'broken_link':
        path = folder / 'broken.jpg'
        os.symlink('gone.jpg', str(path))
    elif kind == 'empty':
        path.write_bytes(b'')
    elif kind == 'html':
        path.write_bytes(b'<html><body>404 Not Found</body></html>')
    elif kind == 'random_bytes':
        path.write_bytes(np.random.RandomState(0).bytes(5000))
    elif kind == 'truncated_jpeg':
        path = folder / 'cut.jpg'
        with open(save(folder / 'whole.jpg', photo(200, 300)), 'rb') as f:
            path.write_bytes(f.read()[:700])
        os.remove(str(folder / 'whole.jpg'))
    elif kind == 'bad_name_truncated':
        path = folder / os.fsdecode(b'caf\xe9-\xff.jpg')
        path.write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
    else:
        raise ValueError(kind)
    return str(path)


# (kind, what the reason must say); every one must be refused with a reason.
REFUSED = [
    ('strip_1x30000', 'longer than 20 times'),
    ('strip_30000x1', 'longer than 20 times'),
    ('png_12000x12000', 'more than the 50 million'),
    ('png_claims_1e10_pixels', 'more than the 50 million'),
    ('png_claims_40000x40000', 'more than the 50 million'),
    ('png_text_bomb', 'cannot read image'),
    ('png_bad_crc', 'cannot read image'),
    ('jpeg_claims_65000x65000', 'more than the 50 million'),
    ('jpeg_claims_60000x2', 'longer than 20 times'),
    ('bmp_claims_50000x50000', 'more than the 50 million'),
    ('gif_claims_65535x65535', 'more than the 50 million'),
    ('fifo', 'not a regular file (a FIFO'),
    ('socket', 'not a regular file (a socket'),
    ('device', 'not a regular file (a character device'),
    ('folder', 'not a regular file (a folder'),
    ('link_loop', 'cannot read image'),
    ('broken_link', 'No such file'),
    ('empty', 'cannot identify image'),
    ('html', 'cannot identify image'),
    ('random_bytes', 'cannot identify image'),
    ('truncated_jpeg', 'cannot read image'),
    ('bad_name_truncated', 'cannot'),
]


@pytest.mark.parametrize('kind, reason', REFUSED, ids=[kind for kind, _ in REFUSED])
def test_read_image_refuses_with_a_reason(worker, tmp_path, kind, reason):
    path = make_file(tmp_path, kind)
    result = worker.call('image_files', 'read_image', [path], timeout=30)
    assert result.error and result.error.startswith('ImageError: '), result
    message = result.error[len('ImageError: '):]
    assert reason in message and '\n' not in message, message
    assert message.startswith(os.fsencode(path).decode('utf-8', 'backslashreplace'))
    assert result.seconds < 20


GOOD_ODD = [('exif_orientation_99', (40, 60)), ('one_pixel', (1, 1)), ('panorama_20_to_1', (400, 20)),
            ('animated_gif_300_frames', (30, 40))]


@pytest.mark.parametrize('kind, size', GOOD_ODD, ids=[kind for kind, _ in GOOD_ODD])
def test_odd_but_real_photos_are_read(worker, tmp_path, kind, size):
    width, height = size
    path = str(tmp_path / (kind + ('.gif' if 'gif' in kind else '.jpg')))
    image = Image.fromarray(photo(max(height, 16), max(width, 16))).resize((width, height))
    if kind == 'exif_orientation_99':
        exif = image.getexif()
        exif[0x0112] = 99
        image.save(path, exif=exif)
    elif 'gif' in kind:
        image.save(path, save_all=True, append_images=[image.rotate(i) for i in range(299)])
    else:
        image.save(path)
    result = worker.call('image_files', 'read_image', [path], timeout=30)
    assert result.error is None, result
    assert 'ndarray' in result.value                      # the RGB array came back


# --- The classifier: one bad photo does not stop the others --------------------------

@pytest.mark.slow
def test_the_classifier_reports_each_hostile_photo_and_classifies_the_good(worker, tmp_path):
    good = [good_png(tmp_path, 'a.png'), good_png(tmp_path, 'b.png')]
    hostile = [make_file(tmp_path, kind) for kind in (
        'strip_1x30000', 'png_12000x12000', 'fifo', 'device', 'png_text_bomb',
        'jpeg_claims_65000x65000', 'bad_name_truncated', 'link_loop')]
    argv = [good[0]] + hostile + [good[1], '--weights', 'none', '--out', '', '--json']
    result = worker.main('validate_alexnet_on_imagenet', argv, timeout=300)
    assert result.code == 1 and 'Traceback' not in result.err, result.err[-2000:]
    answers = json.loads(result.out)
    assert [len(a.get('top', ())) for a in answers] == [5] + [0] * len(hostile) + [5]
    assert all(a['error'].count('\n') == 0 for a in answers[1:-1])
    assert 'caf\\xe9-\\xff.jpg' in answers[7]['image']      # shown readably
    assert '8 of 10 images could not be read' in result.err


# --- Folders and list files ----------------------------------------------------------

def two_classes(root, per_class=2):
    """root/Cat and root/Dog with small distinct photos; returns {class: [paths]}."""
    return {name: [save(root / name / ('%d.png' % i), photo(64, 64, seed=10 * c + i))
                   for i in range(per_class)] for c, name in enumerate(('Cat', 'Dog'))}


def find(worker, path):
    """(items, class names, skipped) of datasets.find_dataset in the worker, or the error."""
    result = worker.call('datasets', 'find_dataset', [str(path)], timeout=60)
    return result


def folder_case(kind, root):
    photos = two_classes(root)
    cat = root / 'Cat'
    if kind == 'self_link':
        os.symlink('.', str(cat / 'self'))
    elif kind == 'parent_link':
        os.symlink('..', str(cat / 'up'))
    elif kind == 'two_self_links':
        for i in range(30):                       # 2**30 paths if each were followed
            os.symlink('.', str(cat / ('s%d' % i)))
    elif kind == 'link_to_other_class':
        os.symlink('../Dog', str(cat / 'dogs'))
    elif kind == 'class_is_a_link_to_a_class':
        os.symlink('Cat', str(root / 'Kitten'))
    elif kind == 'link_to_root_as_class':
        os.symlink('.', str(root / 'All'))
    elif kind == 'hard_link_across_classes':
        os.link(photos['Dog'][0], str(cat / 'dog.png'))
    elif kind == 'fifo_in_class':
        os.mkfifo(str(cat / 'pipe.jpg'))
    elif kind == 'device_in_class':
        os.symlink('/dev/zero', str(cat / 'zero.jpg'))
    elif kind == 'deep_nesting':
        deep = cat
        for i in range(60):
            deep = deep / 'd'
        save(deep / 'deep.png', photo(64, 64, seed=99))
    elif kind == 'broken_link_in_class':
        os.symlink('gone.jpg', str(cat / 'broken.jpg'))
    elif kind == 'non_utf8_class':
        os.rename(str(cat), str(root / os.fsdecode(b'Ch\xe4t')))
    else:
        raise ValueError(kind)
    return photos


FOLDERS = ['self_link', 'parent_link', 'two_self_links', 'link_to_other_class',
           'class_is_a_link_to_a_class', 'link_to_root_as_class', 'hard_link_across_classes',
           'fifo_in_class', 'device_in_class', 'deep_nesting', 'broken_link_in_class',
           'non_utf8_class']


@pytest.mark.parametrize('kind', FOLDERS)
def test_folder_walks_take_each_photo_once_in_its_own_class(worker, tmp_path, kind):
    root = tmp_path / 'PetImages'
    folder_case(kind, root)
    result = find(worker, root)
    assert result.error is None, result
    items, names, skipped = result.value
    by_class = {}
    for path, label in items:
        by_class.setdefault(names[label], []).append(os.path.basename(path))
    assert len(items) == len({os.path.realpath(path) for path, _ in items})   # once each
    dogs = ['1.png'] if kind == 'hard_link_across_classes' else ['0.png', '1.png']
    assert sorted(by_class['Dog']) == dogs                 # nothing lost, nothing mislabelled
    cat = [name for name in names if name != 'Dog']
    assert len(cat) == 1 and sorted(by_class[cat[0]])[:2] == ['0.png', '1.png']
    assert all(not name.startswith('dog') for name in by_class[cat[0]])
    if kind not in ('deep_nesting', 'non_utf8_class'):
        assert skipped, 'the case was not reported'
    scan = worker.call('datasets', 'scan_images', [items, None, False], timeout=60)
    assert scan.error is None and len(scan.value[0]) == len(items)


LIST_FILES = [
    ('labels_0_and_5', 'a.png 0\nb.png 5\n', 'no image of class 1, 2, 3, 4'),
    ('label_100000000', 'a.png 0\nb.png 100000000\n', 'labels are 0..K-1 for K classes'),
    ('label_1e30', 'a.png 0\nb.png 1000000000000000000000000000000\n', 'expected'),
    ('negative_label', 'a.png 0\nb.png -1\n', 'expected'),
    ('one_class', 'a.png 0\nb.png 0\n', 'only one class'),
    ('no_label', 'a.png\n', 'expected'),
    ('long_line', 'a.png 0\n' + 'x' * 100000 + ' 1\n', 'longer than 8192'),
    ('binary', '\x00\x01\x02\xff', 'not a UTF-8 text file'),
    ('nothing_exists', 'gone.png 0\nlost.png 1\n', 'none of the files listed'),
    ('empty', '', 'no images listed'),
]


@pytest.mark.parametrize('kind, text, message', LIST_FILES, ids=[c[0] for c in LIST_FILES])
def test_list_files_are_refused_in_one_line(worker, tmp_path, kind, text, message):
    save(tmp_path / 'a.png', photo(64, 64))
    save(tmp_path / 'b.png', photo(64, 64, seed=1))
    with open(str(tmp_path / 'list.txt'), 'w', encoding='latin-1', newline='') as f:
        f.write(text)
    result = find(worker, tmp_path / 'list.txt')
    assert result.error and result.error.startswith('DatasetError: '), result
    assert message in result.error and '\n' not in result.error and len(result.error) < 700


def test_a_list_file_of_a_million_lines_is_read_in_bounded_memory(worker, tmp_path):
    save(tmp_path / 'a.png', photo(64, 64))
    save(tmp_path / 'b.png', photo(64, 64, seed=1))
    with open(str(tmp_path / 'list.txt'), 'w') as f:
        f.write('a.png 0\nb.png 1\n')
        f.write('a.png 0\n' * 1000000)                     # 8 MB of repeats
    result = find(worker, tmp_path / 'list.txt')
    assert result.error is None and len(result.value[0]) == 2, result


# --- Runs over hostile datasets, end to end --------------------------------------------

@pytest.mark.slow
def test_finetune_trains_around_hostile_files_and_records_odd_names(trainer, tmp_path):
    root = tmp_path / 'PetImages'
    two_classes(root, per_class=3)
    cat = root / 'Cat'
    os.mkfifo(str(cat / 'pipe.jpg'))
    os.symlink('..', str(cat / 'up'))
    make_file(cat, 'strip_1x30000')
    make_file(cat, 'bad_name_truncated')
    run = tmp_path / 'logs' / 'run'
    argv = ['--data', str(root), '--run', str(run), '--weights', 'none', '--train-layers', 'fc8',
            '--epochs', '1', '--batch-size', '2', '--val-fraction', '0.3', '--no-progress',
            '--keep-checkpoints', '1']
    result = trainer.main('finetune', argv, timeout=600)
    assert result.code == 0 and 'Traceback' not in result.err, result.err[-3000:]
    assert '2 cannot be read and are skipped' in result.out
    with open(str(run / 'bad_files.txt'), encoding='utf-8') as f:
        bad = f.read()
    assert 'caf\\xe9-\\xff.jpg' in bad and 'longer than 20 times' in bad
    # A rerun (the split.json holds the odd name) resumes cleanly.
    again = trainer.main('finetune', argv[:-2] + ['--resume', '--epochs', '2'], timeout=600)
    assert again.code == 0 and 'Traceback' not in again.err, again.err[-3000:]


@pytest.mark.slow
def test_the_pipeline_skips_a_photo_that_changed_after_the_scan(worker, tmp_path):
    root = tmp_path / 'PetImages'
    photos = two_classes(root, per_class=2)
    items = [[path, label] for label, name in enumerate(('Cat', 'Dog')) for path in photos[name]]
    # Between the scan and training a photo becomes a 1x30000 strip, another a FIFO.
    Image.new('RGB', (1, 30000)).save(photos['Cat'][0], format='PNG')
    os.remove(photos['Dog'][0])
    os.mkfifo(photos['Dog'][0])
    result = worker.call('hostile_pipeline', 'labels_of_one_epoch', [items], timeout=300)
    assert result.error is None, result
    assert sorted(result.value) == [0, 1]                   # the two untouched photos
