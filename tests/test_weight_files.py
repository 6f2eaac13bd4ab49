"""Weight files: the real Python 2 .npy format, the safe .npz, and every bad file refused."""
import os
import pickle
import struct

import numpy as np
import pytest

import weight_files
from conftest import npy_header, write_py2_weights_npy

SMALL = {'conv1': (np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.ones(4, np.float32)),
         'fc8': (np.linspace(-1, 1, 300 * 2).astype(np.float32).reshape(300, 2),
                 np.array([0.5, -0.5], np.float32))}
EXPECTED = {'conv1': ((2, 3, 4), (4,)), 'fc8': ((300, 2), (2,))}


def assert_same(layers, want):
    assert sorted(layers) == sorted(want)
    for name in want:
        for got, expected in zip(layers[name], want[name]):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected)


def test_real_format_equals_what_numpy_reads(tmp_path):
    path = str(tmp_path / 'w.npy')
    write_py2_weights_npy(path, SMALL)
    # The file is ours, so NumPy's own pickle reader may check it independently.
    reference = np.load(path, allow_pickle=True, encoding='latin1').item()
    assert_same({k: tuple(v) for k, v in reference.items()}, SMALL)
    assert_same(weight_files.load_weights(path), SMALL)


def test_python2_unicode_keys(tmp_path):
    path = str(tmp_path / 'w.npy')
    write_py2_weights_npy(path, SMALL, unicode_keys=True)
    assert_same(weight_files.load_weights(path), SMALL)


def test_full_size_file_loads(bvlc_npy, bvlc_layers):
    assert_same(weight_files.load_weights(bvlc_npy), bvlc_layers)


def hostile_npy(path, marker):
    """An .npy whose pickle runs os.system when unpickled unsafely."""
    command = ('touch %s' % marker).encode()
    payload = (b'\x80\x02cposix\nsystem\n' + b'U' + bytes([len(command)]) + command
               + b'\x85R.')
    with open(path, 'wb') as f:
        f.write(npy_header() + payload)


def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    path, marker = str(tmp_path / 'evil.npy'), tmp_path / 'pwned'
    hostile_npy(path, marker)
    with pytest.raises(weight_files.WeightFileError) as err:
        weight_files.load_weights(path)
    assert 'refused global posix.system' in str(err.value) and path in str(err.value)
    assert not marker.exists()


def test_hostile_pickle_made_by_python3_is_refused(tmp_path):
    class Evil(object):
        def __reduce__(self):
            return (os.system, ('touch %s' % (tmp_path / 'pwned'),))
    path = str(tmp_path / 'evil.npy')
    with open(path, 'wb') as f:
        f.write(npy_header() + pickle.dumps({'conv1': [Evil(), Evil()]}, protocol=2))
    with pytest.raises(weight_files.WeightFileError, match='refused global'):
        weight_files.load_weights(path)
    assert not (tmp_path / 'pwned').exists()


@pytest.mark.parametrize('cut', [20, 200, 1000])
def test_truncated_file(tmp_path, cut):
    full, path = str(tmp_path / 'full.npy'), str(tmp_path / 'cut.npy')
    write_py2_weights_npy(full, SMALL)
    with open(full, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) - cut])
    with pytest.raises(weight_files.WeightFileError, match='corrupt') as err:
        weight_files.load_weights(path)
    assert path in str(err.value) and '\n' not in str(err.value)


@pytest.mark.parametrize('content, message', [
    (b'', 'neither a .npy nor a .npz'),
    (b'<html>404 Not Found</html>', 'neither a .npy nor a .npz'),
    (b'\x93NUMPY\x01\x00' + struct.pack('<H', 4) + b'junk', 'corrupt .npy header'),
])
def test_not_a_weight_file(tmp_path, content, message):
    path = tmp_path / 'bad.npy'
    path.write_bytes(content)
    with pytest.raises(weight_files.WeightFileError, match=message) as err:
        weight_files.load_weights(path)
    assert 'download.py weights' in str(err.value)


def test_plain_array_npy_is_not_a_weight_file(tmp_path):
    path = str(tmp_path / 'array.npy')
    np.save(path, np.zeros((3, 3), np.float32))
    with pytest.raises(weight_files.WeightFileError, match='not the dict of layers'):
        weight_files.load_weights(path)


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(weight_files.WeightFileError) as err:
        weight_files.load_weights(tmp_path / 'bvlc_alexnet.npy')
    assert 'no such file' in str(err.value) and 'python download.py weights' in str(err.value)


def test_npz_round_trip_with_class_names(tmp_path):
    path = str(tmp_path / 'w.npz')
    weight_files.save_npz(path, SMALL, class_names=['cat', 'dog'])
    assert_same(weight_files.load_weights(path), SMALL)
    assert weight_files.load_class_names(path) == ['cat', 'dog']
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ['class_names', 'conv1/biases', 'conv1/weights',
                                         'fc8/biases', 'fc8/weights']
    assert [p.name for p in tmp_path.iterdir()] == ['w.npz']   # no temporary left behind


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = str(tmp_path / 'w.npz')
    np.savez(path, **{'conv1/weights': np.array([{'a': 1}], dtype=object),
                      'conv1/biases': np.zeros(2, np.float32)})
    with pytest.raises(weight_files.WeightFileError, match='unreadable .npz'):
        weight_files.load_weights(path)


def test_check_shapes_names_layer_expected_and_found(tmp_path):
    path = 'some/file.npy'
    with pytest.raises(weight_files.WeightFileError) as err:
        weight_files.check_shapes(path, {'conv1': SMALL['conv1']}, EXPECTED)
    assert 'layer fc8 is missing' in str(err.value) and path in str(err.value)
    wrong = dict(SMALL, fc8=(np.zeros((300, 3), np.float32), np.zeros(3, np.float32)))
    with pytest.raises(weight_files.WeightFileError, match=r'fc8/weights has shape \(300, 3\), '
                                                           r'the model expects \(300, 2\)'):
        weight_files.check_shapes(path, wrong, EXPECTED)
    weight_files.check_shapes(path, wrong, EXPECTED, skip_layer=['fc8'])
