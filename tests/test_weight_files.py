"""Weight files: every format read by hand, every bad file refused with a one-line message.

Attacks on the reader's memory and time run in a limited worker process in
test_hostile_weights.py; here are the formats, the messages and the limits.
"""
import ast
import mmap
import os
import pickle
import struct

import numpy as np
import pytest

import weight_files
from weight_formats import (PY2_CLOSE, PY2_OPEN, RECONSTRUCT, deflated, np_save_npy,
                            npy_header, npy_member, npz_bytes, npz_members, py2_array,
                            py2_dtype, py2_layer_entries, py2_ndarray, py2_npy, py2_str,
                            py2_tuple, py3_npy, raw_zip, stored, tiny_layers, tiny_shapes,
                            write_py2_weights_npy)

LAYERS = tiny_layers(num_classes=2, seed=0)


def write(tmp_path, data, name='w.npy'):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def assert_same(layers, want):
    assert list(layers) == list(weight_files.LAYER_NAMES)
    for name in want:
        assert len(layers[name]) == 2
        for got, expected in zip(layers[name], want[name]):
            assert got.dtype == np.float32 and got.dtype.isnative
            np.testing.assert_array_equal(got, expected)


def error_of(path, expected=tiny_shapes):
    """The WeightFileError message of loading `path`: one line, starting with the path."""
    with pytest.raises(weight_files.WeightFileError) as err:
        weight_files.load_weights(path, expected=expected)
    message = str(err.value)
    assert message.startswith(str(path) + ': ') and '\n' not in message
    return message


def with_layer(layer, weights=None, biases=None, layers=LAYERS):
    changed = dict(layers)
    w, b = changed[layer]
    changed[layer] = (w if weights is None else weights, b if biases is None else biases)
    return changed


def py2_file(tmp_path, layers):
    """A Python 2 file of {layer: (W, b)}, each array of any dtype."""
    entries = [(py2_str(name), b']' + b'(' + py2_array(w) + py2_array(b) + b'e')
               for name, (w, b) in layers.items()]
    return write(tmp_path, py2_npy(entries))


def npz_file(tmp_path, layers, class_names=None):
    return write(tmp_path, npz_bytes(layers, class_names), 'w.npz')


# --- The formats ------------------------------------------------------------------

def test_python2_file_equals_what_numpy_reads(tmp_path):
    path = str(tmp_path / 'w.npy')
    write_py2_weights_npy(path, LAYERS)
    # The file is ours, so NumPy's own pickle reader may check it independently.
    reference = np.load(path, allow_pickle=True, encoding='latin1').item()
    assert_same({name: tuple(reference[name]) for name in weight_files.LAYER_NAMES}, LAYERS)
    assert_same(weight_files.load_weights(path, expected=tiny_shapes), LAYERS)
    assert_same(weight_files.load_weights(path), LAYERS)


def test_python2_unicode_keys(tmp_path):
    path = str(tmp_path / 'w.npy')
    write_py2_weights_npy(path, LAYERS, unicode_keys=True)
    assert_same(weight_files.load_weights(path, expected=tiny_shapes), LAYERS)


@pytest.mark.parametrize('protocol', range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_python3_pickles_of_every_protocol(tmp_path, protocol):
    data = py3_npy(LAYERS, protocol)
    # protocol 2 wraps bytes in _codecs.encode, 5 pickles arrays by _frombuffer
    assert (b'_codecs' in data) == (protocol == 2)
    assert (b'_frombuffer' in data) == (protocol == 5)
    assert_same(weight_files.load_weights(write(tmp_path, data), expected=tiny_shapes), LAYERS)


def test_np_save_of_the_dict(tmp_path):
    assert_same(weight_files.load_weights(write(tmp_path, np_save_npy(LAYERS))), LAYERS)


def base_of(array):
    """What an array's memory belongs to, through views and memoryviews."""
    base = array
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.obj if isinstance(base, memoryview) else base.base
    return base


@pytest.mark.parametrize('byteorder', ['<', '>', '|', '='])
def test_byte_orders_the_dtype_states(tmp_path, byteorder):
    path = str(tmp_path / 'w.npy')
    write_py2_weights_npy(path, LAYERS, byteorder=byteorder)
    layers = weight_files.load_weights(path, expected=tiny_shapes)
    assert_same(layers, LAYERS)
    weights = layers['fc6'][0]
    if byteorder == '>':             # swapped into this machine's order: a copy
        assert weights.flags.writeable and weights.flags.owndata
    else:                            # a view of the file, not a copy
        assert not weights.flags.writeable and not weights.flags.owndata


def test_arrays_are_views_of_the_mapped_file_which_may_be_replaced(tmp_path):
    path = str(tmp_path / 'w.npy')
    write_py2_weights_npy(path, LAYERS)
    layers = weight_files.load_weights(path)
    weights = layers['conv1'][0]
    assert isinstance(base_of(weights), mmap.mmap)
    with pytest.raises(ValueError, match='read-only'):
        weights[0, 0, 0, 0] = 1.0
    write_py2_weights_npy(str(tmp_path / 'new.npy'), tiny_layers(seed=5))
    os.replace(str(tmp_path / 'new.npy'), path)       # as download.py puts a file in place
    assert_same(layers, LAYERS)
    os.remove(path)
    assert_same(layers, LAYERS)


def test_full_size_file_loads(bvlc_npy, bvlc_layers):
    import alexnet
    layers = weight_files.load_weights(bvlc_npy, expected=alexnet.expected_weight_shapes)
    assert_same(layers, bvlc_layers)


def test_npz_round_trip_with_class_names(tmp_path):
    path = str(tmp_path / 'w.npz')
    weight_files.save_npz(path, LAYERS, class_names=['cat', 'dog'])
    layers = weight_files.load_weights(path, expected=tiny_shapes)
    assert_same(layers, LAYERS)
    assert not layers['fc6'][0].flags.writeable          # stored members: views of the file
    assert weight_files.load_class_names(path) == ['cat', 'dog']
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(weight_files.ARRAY_KEYS + ('class_names',))
        assert archive['class_names'].dtype == np.dtype('<U3')
    assert [p.name for p in tmp_path.iterdir()] == ['w.npz']   # no temporary left behind


@pytest.mark.parametrize('name', ['x' * 257, 'cat\n', 'd\x1b[2Jog'])
def test_save_npz_refuses_class_names_it_could_not_read(tmp_path, name):
    with pytest.raises(ValueError, match='rename that class'):
        weight_files.save_npz(str(tmp_path / 'w.npz'), LAYERS, class_names=['cat', name])
    assert list(tmp_path.iterdir()) == []


def test_npz_with_deflated_members(tmp_path):
    path = write(tmp_path, npz_bytes(LAYERS, ['Katze', 'Hund'], compressed=True), 'w.npz')
    assert_same(weight_files.load_weights(path, expected=tiny_shapes), LAYERS)
    assert weight_files.load_class_names(path) == ['Katze', 'Hund']


def test_class_names_of_files_without_them(tmp_path):
    assert weight_files.load_class_names(npz_file(tmp_path, LAYERS)) is None
    assert weight_files.load_class_names(py2_file(tmp_path, LAYERS)) is None


def test_nothing_is_unpickled_or_parsed_by_numpy(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError('weight_files must not call this')
    for owner, name in [(pickle, 'Unpickler'), (pickle, 'load'), (pickle, 'loads'),
                        (np, 'load'), (np.lib.format, 'read_array_header_1_0'),
                        (np.lib.format, 'read_array_header_2_0'), (np.lib.format, 'read_array'),
                        (ast, 'literal_eval')]:
        monkeypatch.setattr(owner, name, forbidden)
    for data, name in [(py2_npy(py2_layer_entries(LAYERS)), 'w.npy'),
                       (py3_npy(LAYERS, 3), 'w3.npy'), (npz_bytes(LAYERS, ['a', 'b']), 'w.npz')]:
        assert_same(weight_files.load_weights(write(tmp_path, data, name)), LAYERS)
    assert 'pickle' not in vars(weight_files) and 'ast' not in vars(weight_files)


# --- Files that are not weight files, or not whole -----------------------------------

def test_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    command = ('touch %s' % marker).encode()
    payload = (b'\x80\x02cposix\nsystem\n' + b'U' + bytes([len(command)]) + command
               + b'\x85R.')
    path = write(tmp_path, npy_header() + payload)
    message = error_of(path)
    assert 'refused global posix.system' in message and 'download.py weights' in message
    assert not marker.exists()


def test_hostile_pickle_made_by_python3_is_refused(tmp_path):
    class Evil(object):
        def __reduce__(self):
            return (os.system, ('touch %s' % (tmp_path / 'pwned'),))
    data = npy_header() + pickle.dumps({'conv1': [Evil(), Evil()]}, protocol=4)
    assert 'refused global posix.system' in error_of(write(tmp_path, data))
    assert not (tmp_path / 'pwned').exists()


@pytest.mark.parametrize('module, name', [('builtins', 'eval'), ('numpy', 'load'),
                                          ('numpy.core.multiarray', 'scalar'),
                                          ('numpy', 'frombuffer'), ('copyreg', '_reconstructor')])
def test_only_the_numpy_names_np_save_writes_are_recognised(tmp_path, module, name):
    data = npy_header() + b'\x80\x02c%s\n%s\n)R.' % (module.encode(), name.encode())
    assert 'refused global %s.%s' % (module, name) in error_of(write(tmp_path, data))


@pytest.mark.parametrize('cut', [20, 200, 1000])
def test_truncated_file(tmp_path, cut):
    data = py2_npy(py2_layer_entries(LAYERS))
    assert 'truncated or corrupt' in error_of(write(tmp_path, data[:len(data) - cut]))


@pytest.mark.parametrize('content, message', [
    (b'', 'neither a .npy, a .npz nor a .caffemodel'),
    (b'<html>404 Not Found</html>', 'neither a .npy, a .npz nor a .caffemodel'),
    (b'\x93NUMPY\x01\x00' + struct.pack('<H', 4) + b'junk', 'corrupt .npy header'),
    (b'\x93NUMPY\x01\x00' + struct.pack('<H', 5000) + b' ' * 5000, 'corrupt .npy header'),
    (b'\x93NUMPY\x04\x00' + struct.pack('<I', 4) + b'{}  ', 'version 4.0'),
    (b'\x93NUMPY\x01\x00\xff', 'truncated'),
])
def test_not_a_weight_file(tmp_path, content, message):
    path = write(tmp_path, content)
    got = error_of(path)
    assert message in got and 'download.py weights' in got


def test_plain_array_npy_is_not_a_weight_file(tmp_path):
    path = str(tmp_path / 'array.npy')
    np.save(path, np.zeros((3, 3), np.float32))
    assert 'not the dict of layers' in error_of(path)


def test_missing_file_says_how_to_get_it(tmp_path):
    message = error_of(str(tmp_path / 'bvlc_alexnet.npy'))
    assert 'no such file' in message and 'python download.py weights' in message


def test_too_big_a_file_is_not_mapped(tmp_path):
    path = str(tmp_path / 'big.npy')
    with open(path, 'wb') as f:                  # sparse: no disk used
        f.truncate(weight_files.MAX_FILE_BYTES + 1)
    assert 'more than any AlexNet weight file' in error_of(path)


@pytest.mark.parametrize('kind', ['npy', 'npz'])
def test_missing_layer(tmp_path, kind):
    layers = {name: arrays for name, arrays in LAYERS.items() if name != 'fc8'}
    path = py2_file(tmp_path, layers) if kind == 'npy' else npz_file(tmp_path, layers)
    message = error_of(path, expected=None)
    assert 'layer fc8 is missing (the file has conv1, conv2' in message
    assert 'use a complete weight file' in message


def test_npz_missing_half_a_layer(tmp_path):
    members = [member for member in npz_members(LAYERS) if member[0] != 'conv3/biases.npy']
    message = error_of(write(tmp_path, raw_zip(members), 'w.npz'))
    assert 'conv3/biases is missing' in message and 'save_npz' in message


@pytest.mark.parametrize('kind, phrase', [('npy', "unexpected layer 'fc9'"),
                                          ('npz', "unexpected zip member 'fc9/weights.npy'")])
def test_extra_layer(tmp_path, kind, phrase):
    layers = dict(LAYERS, fc9=LAYERS['fc8'])
    path = py2_file(tmp_path, layers) if kind == 'npy' else npz_file(tmp_path, layers)
    assert phrase in error_of(path)


@pytest.mark.parametrize('kind, phrase', [
    ('npy', "conv2/weights has dtype 'f8', expected float32"),
    ('npz', "conv2/weights holds dtype '<f8', expected float32"),
])
def test_not_float32(tmp_path, kind, phrase):
    layers = with_layer('conv2', weights=LAYERS['conv2'][0].astype(np.float64))
    path = (py2_file(tmp_path, layers) if kind == 'npy'
            else write(tmp_path, raw_zip(npz_members(layers)), 'w.npz'))
    assert phrase in error_of(path)


@pytest.mark.parametrize('kind', ['npy', 'npz'])
def test_shapes_the_model_does_not_expect(tmp_path, kind):
    layers = with_layer('fc7', weights=np.ones((3, 4), np.float32))
    path = py2_file(tmp_path, layers) if kind == 'npy' else npz_file(tmp_path, layers)
    message = error_of(path, expected=tiny_shapes)
    assert 'fc7/weights has shape (3, 4), the model expects (3, 3)' in message
    # a dict of shapes works the same; without any, only the structure is checked
    assert 'fc7/weights has shape (3, 4)' in error_of(path, expected=tiny_shapes(2))
    weight_files.load_weights(path)


def test_class_count_comes_from_fc8(tmp_path):
    path = py2_file(tmp_path, tiny_layers(num_classes=5))
    layers = weight_files.load_weights(path, expected=tiny_shapes)
    assert layers['fc8'][0].shape == (3, 5)
    assert 'fc8/weights has shape (3, 5), the model expects (3, 2)' in error_of(
        path, expected=tiny_shapes(2))
    no_classes = with_layer('fc8', biases=np.ones((2, 2), np.float32))
    assert 'fc8/biases has shape (2, 2), expected (N,)' in error_of(
        py2_file(tmp_path, no_classes))


@pytest.mark.parametrize('kind', ['npy', 'npz'])
def test_non_finite_values_are_counted(tmp_path, kind):
    weights = LAYERS['fc6'][0].copy()
    weights[0, :] = np.nan
    weights[1, 0] = -np.inf
    layers = with_layer('fc6', weights=weights)
    path = py2_file(tmp_path, layers) if kind == 'npy' else npz_file(tmp_path, layers)
    assert 'fc6/weights has 4 NaN or infinite values (of 6)' in error_of(path)


@pytest.mark.parametrize('size', [64, 76])
def test_data_not_the_size_of_its_shape(tmp_path, size):
    array = py2_ndarray((3, 3, 1, 2), py2_dtype('f4', '<'), py2_str(b'\0' * size))
    entries = py2_layer_entries(LAYERS)
    entries[0] = (entries[0][0], b']' + b'(' + array + py2_array(LAYERS['conv1'][1]) + b'e')
    message = error_of(write(tmp_path, py2_npy(entries)))
    assert 'conv1/weights holds %d bytes of data, its shape (3, 3, 1, 2) needs 72' % size in message


def test_npz_member_shorter_than_its_header_says(tmp_path):
    members = npz_members(LAYERS)
    name, data = members[10][:2]                        # fc6/weights: 24 bytes of values
    members[10] = stored(name, data[:-8])
    path = write(tmp_path, raw_zip(members), 'w.npz')
    for expected in (None, tiny_shapes):
        message = error_of(path, expected=expected)
        assert 'fc6/weights holds 16 bytes of data, its shape (2, 3) needs 24' in message


def test_npz_member_sizes_are_checked_before_reading(tmp_path):
    members = npz_members(LAYERS)
    values = np.random.RandomState(0).standard_normal(1 << 19).astype(np.float32)  # no bomb
    members[0] = deflated('conv1/weights.npy', npy_member(values))
    message = error_of(write(tmp_path, raw_zip(members), 'w.npz'))
    assert ('conv1/weights.npy declares 2097280 bytes, but its (3, 3, 1, 2) float32 values '
            'and their header take 73 to 4180' in message)


def test_npz_checksum(tmp_path):
    data = bytearray(npz_bytes(LAYERS))
    member = npy_member(LAYERS['fc7'][0])
    data[data.index(member) + len(member) - 1] ^= 1      # in its last value
    assert 'fc7/weights.npy fails its CRC check' in error_of(write(tmp_path, bytes(data), 'w.npz'))


def test_npz_with_pickled_objects_is_refused(tmp_path):
    members = npz_members(LAYERS)
    holder = np.empty(1, dtype=object)
    holder[0] = {'a': 1}
    members[0] = stored('conv1/weights.npy', npy_header('(1,)') + pickle.dumps(holder))
    message = error_of(write(tmp_path, raw_zip(members), 'w.npz'))
    assert 'conv1/weights holds Python objects (a pickle), expected float32' in message


@pytest.mark.parametrize('key, description', [
    (b'N\x85', 'a tuple of 1 item'),
    (py2_str('x' * 1000), 'a 1000-byte string'),
    (b'C\x05conv1', 'a 5-byte string'),                 # bytes, not text
    (b'K\x07', 'an integer'),
])
def test_layer_keys_must_be_short_strings(tmp_path, key, description):
    entries = py2_layer_entries(LAYERS)
    entries[3] = (key, entries[3][1])
    message = error_of(write(tmp_path, py2_npy(entries)))
    assert 'a layer key is %s, not a layer name' % description in message


def test_unprintable_layer_names_are_not_printed(tmp_path):
    entries = py2_layer_entries(LAYERS)
    entries[3] = (py2_str(b'\x1b[2Jconv4'), entries[3][1])
    message = error_of(write(tmp_path, py2_npy(entries)))
    assert 'unexpected layer (9 characters, not plain ASCII)' in message
    assert '\x1b' not in message


def test_arrays_the_pickle_never_fills(tmp_path):
    # _reconstruct(ndarray, shape, dtype) alone gives an array of uninitialised memory
    empty = (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n' + py2_tuple((3, 3, 1, 2))
             + py2_dtype('f4', '<') + b'\x87R')
    entries = py2_layer_entries(LAYERS)
    entries[0] = (entries[0][0], b']' + b'(' + empty + py2_array(LAYERS['conv1'][1]) + b'e')
    assert 'conv1/weights is an array without data' in error_of(write(tmp_path, py2_npy(entries)))


@pytest.mark.parametrize('value, phrase', [
    (b']' + b'(' + b'NN' + b'e', 'conv4/weights should be an array, found None'),
    (b']' + b'(' + b'N' + b'e', 'layer conv4 should be [weights, biases], found a list of 1 item'),
    (b'}', 'layer conv4 should be [weights, biases], found a dict of 0'),
])
def test_layer_values_must_be_two_arrays(tmp_path, value, phrase):
    entries = py2_layer_entries(LAYERS)
    entries[3] = (entries[3][0], value)
    assert phrase in error_of(write(tmp_path, py2_npy(entries)))


def test_fortran_order_and_repeated_layers(tmp_path):
    entries = py2_layer_entries(LAYERS)
    entries[5] = (entries[5][0], b']' + b'(' + py2_array(LAYERS['fc6'][0], fortran=True)
                  + py2_array(LAYERS['fc6'][1]) + b'e')
    assert 'fc6/weights is in Fortran order' in error_of(write(tmp_path, py2_npy(entries)))
    entries = py2_layer_entries(LAYERS)
    assert 'layer conv1 appears twice' in error_of(write(tmp_path, py2_npy(entries + entries[:1])))


# --- Class names in an .npz ------------------------------------------------------

@pytest.mark.parametrize('names, dtype, phrase', [
    (['cat'], '<U3', 'class_names has shape (1,), expected (2,)'),
    (['cat', 'dog'], '>U3', "class_names has dtype '>U3', expected unicode strings"),
    (['c' * 300, 'dog'], '<U300', "'<U300', expected unicode strings ('<U') of at most 256"),
    (['cat', 'd\x1b[2Jog'], '<U7', 'class name 1 has control characters'),
    ([b'cat', b'dog'], '|S3', "class_names has dtype '|S3'"),
])
def test_bad_class_names(tmp_path, names, dtype, phrase):
    members = npz_members(LAYERS)
    members.append(stored('class_names.npy', npy_member(np.array(names, dtype=dtype))))
    path = write(tmp_path, raw_zip(members), 'w.npz')
    assert phrase in error_of(path)
    with pytest.raises(weight_files.WeightFileError, match='class'):
        weight_files.load_class_names(path)


def test_class_names_must_be_valid_unicode(tmp_path):
    member = bytearray(npy_member(np.array(['cat', 'dog'], dtype='<U3')))
    member[-4:] = struct.pack('<I', 0x110000)             # beyond Unicode
    members = npz_members(LAYERS) + [stored('class_names.npy', bytes(member))]
    path = write(tmp_path, raw_zip(members), 'w.npz')
    assert 'class_names is not valid unicode' in error_of(path)


# --- The zip's structure ------------------------------------------------------------

@pytest.mark.parametrize('change, phrase', [
    (lambda m: m + [m[0]], 'zip member conv1/weights.npy appears twice'),
    (lambda m: m + [stored('x/../../etc.npy', b'')], "unexpected zip member 'x/../../etc.npy'"),
    (lambda m: m + [stored('class_names.npy', b'')] + m[1:],
     'zip member conv1/biases.npy appears twice'),
    (lambda m: [m[0][:2] + (12,) + m[0][3:]] + m[1:], 'compressed by method 12'),
    (lambda m: [m[0][:3] + (5000,) + m[0][4:]] + m[1:],
     'conv1/weights.npy declares 5000 bytes from 200 compressed bytes'),
])
def test_zip_directory_is_checked_before_reading(tmp_path, change, phrase):
    path = write(tmp_path, raw_zip(change(npz_members(LAYERS))), 'w.npz')
    assert phrase in error_of(path)


def test_zip_members_may_not_overlap(tmp_path):
    data = bytearray(raw_zip(npz_members(LAYERS)))
    entry = data.index(b'PK\x01\x02')         # conv1/weights.npy's directory entry
    size = struct.unpack_from('<L', data, entry + 20)[0]
    struct.pack_into('<LL', data, entry + 20, size + 100, size + 100)   # into conv1/biases
    assert 'zip members overlap' in error_of(write(tmp_path, bytes(data), 'w.npz'))


def test_zip_truncated_or_with_bytes_after_its_end(tmp_path):
    data = raw_zip(npz_members(LAYERS))
    assert 'no zip end record' in error_of(write(tmp_path, data[:-10], 'w.npz'))
    assert 'bytes after the zip end record' in error_of(write(tmp_path, data + b'x', 'w.npz'))
    assert 'not where its end record says' in error_of(write(tmp_path, data[:1000] + data[1010:],
                                                             'w.npz'))


# --- The .npy header parser ----------------------------------------------------------

@pytest.mark.parametrize('text, parsed', [
    ("{'descr': '<f4', 'fortran_order': False, 'shape': (11, 11, 3, 96), }  \n",
     ('<f4', False, (11, 11, 3, 96))),
    ("{'shape': (4096,), 'fortran_order': True, 'descr': '|O'}\n", ('|O', True, (4096,))),
    ("{'descr': '<U12', 'fortran_order': False, 'shape': ()}\n", ('<U12', False, ())),
    ("{'descr':'<f4','fortran_order':False,'shape':(2,3,)}\n", ('<f4', False, (2, 3))),
])
def test_header_parser_reads_what_numpy_writes(text, parsed):
    assert weight_files._parse_header(text) == parsed


@pytest.mark.parametrize('text', [
    "{'descr': '|O', 'fortran_order': False, 'shape': (, }\n",     # the unclosed bracket
    "{'descr': '|O', 'fortran_order': False, 'shape': ((), }\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': (3), }\n",   # an int, not a tuple
    "{'descr': '|O', 'fortran_order': False, 'shape': (-1,), }\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': (03,), }\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': (1, 2, 3, 4, 5, 6, 7, 8, 9), }\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': (), 'shape': (), }\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': (), 'x': 1}\n",
    "{'descr': '|O', 'fortran_order': False}\n",
    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': ()}\n",
    "{'descr': '|O', 'fortran_order': 0, 'shape': ()}\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': ()}",          # no newline
    "{'descr': '|O', 'fortran_order': False, 'shape': ()}\n\n",
    "{'descr': '|O', 'fortran_order': False, 'shape': ()} x\n",
    "{'descr': \"|O\", 'fortran_order': False, 'shape': ()}\n",
    "{'descr': '\\x7c', 'fortran_order': False, 'shape': ()}\n",
    "{'descr': '|O', 'fortran_order': __import__('os'), 'shape': ()}\n",
    "[]\n", "\n", "{\n", "}\n",
])
def test_header_parser_refuses_anything_else(text):
    with pytest.raises(ValueError):
        weight_files._parse_header(text)


@pytest.mark.parametrize('version', [2, 3])
def test_npy_header_versions_2_and_3(tmp_path, version):
    data = npy_header(version=version) + py2_npy(py2_layer_entries(LAYERS))[len(npy_header()):]
    assert_same(weight_files.load_weights(write(tmp_path, data)), LAYERS)


# --- The pickle's limits --------------------------------------------------------------

def pickle_file(tmp_path, opcodes):
    return write(tmp_path, npy_header() + b'\x80\x02' + opcodes)


@pytest.mark.parametrize('opcodes, phrase', [
    (b'N' * 1001, 'more than 1000 values on the stack'),
    (b'(' * 65, 'more than 64 open MARKs'),
    (b'N' + b'\x85' * 40 + b'.', 'values nested more than 32 deep'),
    (b'\x95' + bytes(8) * 1 + (b'\x95' + bytes(8)) * 100000 + b'N.', 'more than 100000 opcodes'),
    (b'Nr\x00\x00\x00\x08.', 'memo index 134217728'),
    (b'h\x05.', 'memo 5 is empty'),
    (b'T\xe8\x03\x00\x00abc', 'the pickle needs 1000 bytes'),
    (b'\x8d' + struct.pack('<Q', 1 << 62) + b'.', 'the pickle needs 4611686018427387904 bytes'),
    (b'T\xff\xff\xff\xff.', 'a string of negative length'),
    (b'N0.', 'opcode 0x30, which np.save never writes'),                # POP
    (b'NN.', 'STOP leaves 2 values'),
    (b'N.N', '1 bytes after the pickle ends'),
    (b'\x80\x02N.', 'PROTO 2; np.save writes protocol 2 to 5, first'),
    (b'c' + b'a' * 100 + b'\n', 'a global name longer than 64 bytes'),
    (b']q\x00h\x00a.', 'a list put inside itself'),
    (b']q\x00\x85h\x00Na.', 'a list changes after being put inside another value'),
    (b'(N\x85d.', 'a dict key without its value'),
    (b'NNa.', 'APPEND into None, not a list'),
    (b'N)R.', 'REDUCE calls None'),
    (b'cnumpy\ndtype\nNR.', 'REDUCE with None as arguments'),
    (b')Nb.', 'BUILD of a tuple of 0 items'),
    (b'\x8a\x09' + bytes(9) + b'.', 'an integer of 9 bytes'),
])
def test_pickle_limits_and_malformed_pickles(tmp_path, opcodes, phrase):
    message = error_of(pickle_file(tmp_path, opcodes))
    assert phrase in message and 'download.py weights' in message


def test_deep_key_is_refused_without_recursion(tmp_path):
    key = b'N' + b'\x85' * 200000                     # a tuple in a tuple ... 200,000 deep
    entries = py2_layer_entries(LAYERS)
    message = error_of(write(tmp_path, npy_header() + PY2_OPEN + key + entries[0][1]
                             + PY2_CLOSE))
    assert 'nested more than 32 deep' in message


def test_error_descriptions_are_bounded(tmp_path):
    # a hostile 100 KB "dtype name" must not end up in the message
    dtype = py2_dtype('f4', '<').replace(py2_str('f4'), py2_str('x' * 100000))
    entries = py2_layer_entries(LAYERS)
    entries[0] = (entries[0][0], b']' + b'(' + py2_ndarray((1,), dtype, py2_str(bytes(4)))
                  + py2_array(LAYERS['conv1'][1]) + b'e')
    message = error_of(write(tmp_path, py2_npy(entries)))
    assert 'conv1/weights has a dtype named by a 100000-byte string' in message
    assert len(message) < 300


def test_reconstruct_arguments_are_exactly_those_numpy_writes(tmp_path):
    odd = RECONSTRUCT.replace(py2_str('b'), py2_str('c'))
    entries = py2_layer_entries(LAYERS)
    entries[0] = (entries[0][0], entries[0][1].replace(RECONSTRUCT, odd, 1))
    assert 'conv1/weights is not pickled as NumPy pickles an array' in error_of(
        write(tmp_path, py2_npy(entries)))


# --- check_shapes, for the layers a model loads ------------------------------------

def test_check_shapes_names_layer_expected_and_found():
    path = 'some/file.npy'
    with pytest.raises(weight_files.WeightFileError) as err:
        weight_files.check_shapes(path, {'conv1': LAYERS['conv1']}, tiny_shapes(2))
    assert 'layer conv2 is missing' in str(err.value) and path in str(err.value)
    wrong = with_layer('fc8', np.zeros((3, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(weight_files.WeightFileError, match=r'fc8/weights has shape \(3, 3\), '
                                                           r'the model expects \(3, 2\)'):
        weight_files.check_shapes(path, wrong, tiny_shapes(2))
    weight_files.check_shapes(path, wrong, tiny_shapes(2), skip_layer=['fc8'])
