"""Weight files in every format weight_files reads, made byte by byte for the tests.

No TensorFlow here: the fuzz worker (fuzz_weights.py) imports this module too.

* Python 2's bvlc_alexnet.npy: np.save under Python 2 pickles (protocol 2) the 0-d
  object array that holds the dict; its strings are Python 2 `str`, i.e. the
  BINSTRING / SHORT_BINSTRING opcodes that Python 3's pickle never emits, so those
  bytes are written here opcode by opcode.
* Python 3's .npy: the real pickle.dumps (protocols 2-5) and np.save of the dict.
* .npz: weight_files.save_npz, np.savez_compressed, and raw_zip for zips that
  no library would write (lying sizes, bombs).
"""
import io
import pickle
import struct
import zlib

import numpy as np

import weight_files


# --- Python 2 pickles, opcode by opcode ------------------------------------------

def py2_str(data):
    if isinstance(data, str):
        data = data.encode('latin1')
    if len(data) < 256:
        return b'U' + bytes([len(data)]) + data            # SHORT_BINSTRING
    return b'T' + struct.pack('<i', len(data)) + data        # BINSTRING


def py2_int(value):
    if 0 <= value < 256:
        return b'K' + bytes([value])                         # BININT1
    return b'J' + struct.pack('<i', value)                   # BININT


def py2_dtype(descr, byteorder):
    """numpy.dtype(descr, 0, 1), then BUILD with its 8-tuple state."""
    return (b'cnumpy\ndtype\n' + py2_str(descr) + py2_int(0) + py2_int(1) + b'\x87R'
            + b'(' + py2_int(3) + py2_str(byteorder) + b'NNN' + py2_int(-1) + py2_int(-1)
            + py2_int(63 if descr == 'O8' else 0) + b'tb')


# _reconstruct(ndarray, (0,), 'b'): an empty array that BUILD fills
RECONSTRUCT = (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n'
               + py2_int(0) + b'\x85' + py2_str('b') + b'\x87R')


def py2_tuple(values):
    return b'(' + b''.join(py2_int(v) for v in values) + b't'


def py2_ndarray(shape, dtype_pickle, payload, fortran=False):
    """_reconstruct(ndarray, (0,), 'b') then BUILD (1, shape, dtype, fortran, payload)."""
    return (RECONSTRUCT + b'(' + py2_int(1) + py2_tuple(shape) + dtype_pickle
            + (b'\x88' if fortran else b'\x89') + payload + b'tb')


def py2_array(array, byteorder='<', fortran=False):
    """An array as Python 2's np.save pickled it, its dtype state saying `byteorder`
    ('<', '>', or '|' / '=' for this machine's order)."""
    array = np.asarray(array)
    descr = '%s%d' % (array.dtype.kind, array.dtype.itemsize)
    data = array.astype(np.dtype(descr).newbyteorder(byteorder if byteorder in '<>' else '='))
    return py2_ndarray(array.shape, py2_dtype(descr, byteorder),
                       py2_str(data.tobytes(order='F' if fortran else 'C')), fortran)


def npy_header(shape_text='()', descr="'|O'", version=1):
    header = "{'descr': %s, 'fortran_order': False, 'shape': %s, }" % (descr, shape_text)
    header = header.encode('latin1')
    prefix = 10 if version == 1 else 12
    header += b' ' * (63 - (prefix + len(header)) % 64) + b'\n'
    if version == 1:
        return b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header
    return b'\x93NUMPY' + bytes([version, 0]) + struct.pack('<I', len(header)) + header


# The 0-d object array whose one element is the dict of layers: its BUILD state is
# (1, (), dtype('O8'), False, [the dict]); the dict's entries go between these two.
PY2_OPEN = (b'\x80\x02' + RECONSTRUCT + b'(' + py2_int(1) + b')' + py2_dtype('O8', '|')
            + b'\x89' + b']' + b'}(')
PY2_CLOSE = b'u' + b'a' + b'tb' + b'.'     # SETITEMS, APPEND to the list, state, BUILD, STOP


def py2_layer_entries(layers, unicode_keys=False, byteorder='<'):
    """[(key pickle, value pickle)] of {layer: (W, b)}: keys Python 2 `str` or `unicode`."""
    entries = []
    for name, (weights, biases) in layers.items():
        key = name.encode('utf-8')
        key = b'X' + struct.pack('<I', len(key)) + key if unicode_keys else py2_str(key)
        value = (b']' + b'(' + py2_array(np.asarray(weights, np.float32), byteorder)
                 + py2_array(np.asarray(biases, np.float32), byteorder) + b'e')
        entries.append((key, value))
    return entries


def py2_npy(entries):
    """The whole Python 2 bvlc_alexnet.npy for pickled dict entries."""
    return npy_header() + PY2_OPEN + b''.join(k + v for k, v in entries) + PY2_CLOSE


def write_py2_weights_npy(path, layers, unicode_keys=False, byteorder='<'):
    """Writes {layer: (W, b)} exactly as Python 2's np.save wrote bvlc_alexnet.npy.

    Keys are Python 2 `str` (SHORT_BINSTRING), or `unicode` (BINUNICODE) if asked.
    """
    with open(path, 'wb') as f:
        f.write(py2_npy(py2_layer_entries(layers, unicode_keys, byteorder)))


# --- Python 3 ---------------------------------------------------------------------

def layer_dict(layers):
    return {name: [np.asarray(w, np.float32), np.asarray(b, np.float32)]
            for name, (w, b) in layers.items()}


def py3_npy(layers, protocol):
    """What np.save(allow_pickle=True) of the layer dict writes, with this pickle protocol."""
    holder = np.empty((), dtype=object)
    holder[()] = layer_dict(layers)
    return npy_header() + pickle.dumps(holder, protocol=protocol)


def np_save_npy(layers):
    """np.save of the layer dict itself (NumPy chooses the protocol)."""
    buffer = io.BytesIO()
    np.save(buffer, layer_dict(layers), allow_pickle=True)
    return buffer.getvalue()


def npz_bytes(layers, class_names=None, compressed=False):
    """save_npz's file, or np.savez_compressed's with the same keys (deflated members)."""
    arrays = {}
    for name, (w, b) in layers.items():
        arrays[name + '/weights'] = np.asarray(w, np.float32)
        arrays[name + '/biases'] = np.asarray(b, np.float32)
    if class_names is not None:
        arrays[weight_files.CLASS_NAMES_KEY] = np.array(class_names, dtype='<U%d' % max(
            [len(n) for n in class_names] + [1]))
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def npy_member(array):
    """A plain .npy of one array (an .npz member)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def raw_zip(members):
    """A zip of (name, stored bytes, method, declared size, crc) as given, true or not."""
    out, directory = io.BytesIO(), io.BytesIO()
    for name, payload, method, size, crc in members:
        name = name.encode('latin1')
        offset = out.tell()
        out.write(struct.pack('<4s5H3L2H', b'PK\x03\x04', 20, 0, method, 0, 33, crc,
                              len(payload), size, len(name), 0) + name + payload)
        directory.write(struct.pack('<4s6H3L5H2L', b'PK\x01\x02', 20, 20, 0, method, 0, 33, crc,
                                    len(payload), size, len(name), 0, 0, 0, 0, 0, offset) + name)
    start = out.tell()
    out.write(directory.getvalue())
    out.write(struct.pack('<4s4H2LH', b'PK\x05\x06', 0, 0, len(members), len(members),
                          len(directory.getvalue()), start, 0))
    return out.getvalue()


def deflated_zeros(prefix, mebibytes):
    """Raw deflate of prefix + `mebibytes` MiB of zeros, about 1 KB per MiB, made fast:
    after a full flush the compressor starts afresh, so each MiB compresses to the
    same bytes, which are repeated instead of compressed again."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunk = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert chunk == again
    return head + chunk * mebibytes + compressor.flush()


def stored(name, data):
    """A zip member stored as is, with its true size and CRC."""
    return (name, data, 0, len(data), zlib.crc32(data))


def npz_members(layers):
    """save_npz's members of `layers`, stored, for raw_zip (to change or add some)."""
    return [stored(key + '.npy', npy_member(layers[key.split('/')[0]][key.endswith('biases')]))
            for key in weight_files.ARRAY_KEYS]


def deflated(name, data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return (name, compressor.compress(data) + compressor.flush(), 8, len(data), zlib.crc32(data))


# --- Tiny "AlexNet" shapes, for fast tests and the fuzz ----------------------------

def tiny_shapes(num_classes):
    """{layer: (weights shape, biases shape)}: AlexNet's 8 layers, a few values each."""
    shapes = {'conv1': ((3, 3, 1, 2), (2,))}
    for name in ('conv2', 'conv3', 'conv4', 'conv5'):
        shapes[name] = ((1, 1, 2, 2), (2,))
    shapes['fc6'] = ((2, 3), (3,))
    shapes['fc7'] = ((3, 3), (3,))
    shapes['fc8'] = ((3, num_classes), (num_classes,))
    return shapes


def tiny_layers(num_classes=2, seed=0):
    rng = np.random.RandomState(seed)
    return {name: (rng.standard_normal(w).astype(np.float32),
                   rng.standard_normal(b).astype(np.float32))
            for name, (w, b) in tiny_shapes(num_classes).items()}
