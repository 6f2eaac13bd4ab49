"""Reading and writing AlexNet weight files, safely: parsed by hand, never unpickled.

Two formats hold the same thing, ``{layer: (weights, biases)}`` of float32 arrays for
the 8 layers conv1..conv5, fc6..fc8 (a third, Caffe's own ``bvlc_alexnet.caffemodel``,
is read by caffemodel.py; load_weights hands it over by the file's name):

* ``bvlc_alexnet.npy``, the course's file: Caffe's bvlc_alexnet converted by
  caffe-tensorflow and saved by ``np.save`` under Python 2. An ``.npy`` is a magic
  string, a version, and a header that is a Python dict literal
  (``{'descr': '|O', 'fortran_order': False, 'shape': (), }``); here the payload
  after it is a pickle (protocol 2) of a 0-d object array holding the dict
  ``{'conv1': [W, b], ...}``. NumPy pickles each array as
  ``_reconstruct(ndarray, (0,), b'b')`` followed by BUILD with the state
  ``(1, shape, dtype, fortran_order, raw bytes)``, and each dtype as
  ``dtype('f4', False, True)`` followed by BUILD with ``(3, byte order, ...)``.
  Python 3's ``np.save(..., allow_pickle=True)`` writes the same with protocols
  3-5 (protocol 5 pickles an array as ``_frombuffer(bytearray, dtype, shape, 'C')``;
  protocol 2 from Python 3 wraps bytes in ``_codecs.encode(text, 'latin1')``).
* ``.npz``, this project's format for fine-tuned weights (``save_npz``): a zip of
  plain ``.npy`` members ``conv1/weights.npy``, ``conv1/biases.npy``, ... and
  optionally ``class_names.npy`` (one unicode name per class).

Why by hand. A pickle is a program: ``pickle`` and ``np.load(allow_pickle=True)``
call whatever the file names, and even an unpickler restricted to NumPy's array
helpers hands file bytes to NumPy's C code (``dtype.__setstate__``,
``_reconstruct``), which crafted files crash or make allocate gigabytes. Students
share these files by links, so this module never unpickles. It reads the few
opcodes np.save's pickles use into inert values (strings as places in the file,
tuples, lists, dicts, and records of the calls the pickle asks for), refuses every
other opcode and every global but the NumPy names above, checks that the values
have exactly the shape of np.save's pickle, and makes each array itself with
``np.frombuffer`` over exactly the bytes its shape needs. Headers are parsed by a
small strict parser (not ``ast.literal_eval`` or NumPy's header reader), and an
.npz's zip directory is read and checked before any member is inflated.

Everything is bounded (the limits below): the file's size, header lengths, pickle
opcodes, stack, memo, nesting, strings (they must lie inside the file), zip
members and their declared and inflated sizes.

The file is memory-mapped, not read: arrays in this machine's byte order are
read-only views of the mapping (no copy of the 233 MiB); byte-swapped arrays and
deflated .npz members are copies. The mapping lives as long as its arrays.
Replacing or deleting the file meanwhile is safe (download.py renames a finished
download into place), but writing into or truncating the same file while its
arrays are in use changes them or kills the process (SIGBUS): never rewrite a
weight file in place.

Every problem is one ``WeightFileError`` whose one-line message names the file,
the layer, what was expected and what was found, and what to do.
"""
from __future__ import annotations

import collections
import mmap
import os
import re
import struct
import tempfile
import zlib

import numpy as np

LAYER_NAMES = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8')
PARTS = ('weights', 'biases')
ARRAY_KEYS = tuple(layer + '/' + part for layer in LAYER_NAMES for part in PARTS)
CLASS_NAMES_KEY = 'class_names'
CAFFEMODEL_SUFFIX = '.caffemodel'    # Caffe's format has no magic bytes: known by its name

GET_WEIGHTS_HINT = ('get it with `python download.py weights` (it writes '
                    'weights/bvlc_alexnet.npz)')
SAVE_NPZ_HINT = ('use an .npz written by weight_files.save_npz (finetune.py writes '
                 'weights.npz so)')

# Limits. bvlc_alexnet.npy is 233 MiB and a few hundred pickle opcodes nested 9 deep;
# each limit is far above what a real file needs, far below what exhausts memory or time.
MAX_FILE_BYTES = 1 << 30         # the file; also an .npz's members inflated, in all
MAX_CLASSES = 100000             # fc8's outputs
MAX_HEADER_BYTES = 4096          # an .npy header's dict (NumPy writes about 120 bytes)
MAX_DIMS = 8                     # dimensions of an array
MAX_OPCODES = 100000             # pickle opcodes
MAX_STACK = 1000                 # values on the pickle's stack
MAX_MARKS = 64                   # open MARKs
MAX_DEPTH = 32                   # tuples in lists in dicts ...
MAX_MEMO = 1 << 16               # memo indices
MAX_NAME_BYTES = 64              # a global's module or name, a layer key
MAX_CLASS_NAME_CHARS = 256
MAX_EXPANSION = 100              # a deflated member inflates at most 100-fold (+ 1 MiB);
                                 # weights barely compress, a zip bomb 1000-fold
ZIP_CHUNK = 1 << 20              # compressed bytes inflated at a time


class WeightFileError(ValueError):
    """A weight file is missing, unreadable, unsafe or does not fit the model."""


def load_weights(path, expected=None):
    """Reads a weight file: bvlc_alexnet.npy (Python 2 or 3 np.save), this project's .npz,
    or Caffe's bvlc_alexnet.caffemodel (by its name; caffemodel.py).

    Args:
      path: the .npy, .npz or .caffemodel file.
      expected: the shapes the file must have: a dict {layer: (weights shape,
        biases shape)} for every layer, or a callable num_classes -> such a dict
        (num_classes is read from fc8's biases), e.g. alexnet.expected_weight_shapes.
        None checks the structure only: all 8 layers, float32, complete, finite.
    Returns:
      {layer: (weights, biases)} of float32 arrays in LAYER_NAMES order (read-only
      views of the file where possible; see the module docstring).
    Raises:
      WeightFileError: missing, truncated, unsafe, incomplete, not float32, not
        finite, or not of the expected shapes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError('%s: no such file; %s' % (path, GET_WEIGHTS_HINT))
    if path.lower().endswith(CAFFEMODEL_SUFFIX):
        # Caffe's own format (a protobuf, no magic bytes): caffemodel.py reads it.
        import caffemodel    # it imports this module for WeightFileError
        if expected is None:
            raise WeightFileError('%s: a caffemodel is read against the model\'s shapes; pass '
                                  'expected=alexnet.expected_weight_shapes' % path)
        return caffemodel.read_caffemodel(path, expected)
    data = _map_file(path)
    if data[:6] == NPY_MAGIC:
        arrays = _load_npy(path, data, expected)
    elif data[:2] == b'PK':
        arrays = _load_npz(path, data, expected)
    else:
        raise WeightFileError('%s: neither a .npy, a .npz nor a .caffemodel file (it starts with '
                              '%r); %s' % (path, bytes(data[:8]), GET_WEIGHTS_HINT))
    return {layer: (arrays[layer + '/weights'], arrays[layer + '/biases'])
            for layer in LAYER_NAMES}


def load_class_names(path):
    """The class names stored in an .npz weight file, or None if it has none (or is a .npy).

    Raises:
      WeightFileError: the names are not '<U' strings of at most
        MAX_CLASS_NAME_CHARS characters, one per class of fc8, without control
        characters; or the .npz is corrupt.
    """
    path = os.fspath(path)
    data = _map_file(path)
    if data[:2] != b'PK':
        return None
    entries = _zip_entries(path, data)
    if CLASS_NAMES_KEY not in entries:
        return None
    num_classes = None
    if 'fc8/biases' in entries:
        biases = _npz_array(path, data, entries['fc8/biases'], None)
        num_classes = _num_classes(path, biases.shape, SAVE_NPZ_HINT)
    return _npz_class_names(path, data, entries[CLASS_NAMES_KEY], num_classes)


def save_npz(path, layers, class_names=None):
    """Writes ``{layer: (weights, biases)}`` as a safe .npz, atomically.

    The file appears under its name only once completely written, so an
    interrupted save never leaves a half file behind.

    Raises:
      ValueError: a class name load_class_names would refuse (too long, control
        characters), before anything is written.
    """
    path = os.fspath(path)
    arrays = {}
    for layer, (weights, biases) in layers.items():
        arrays[layer + '/weights'] = np.asarray(weights, np.float32)
        arrays[layer + '/biases'] = np.asarray(biases, np.float32)
    if class_names is not None:
        names = [str(name) for name in class_names]
        for name in names:
            if len(name) > MAX_CLASS_NAME_CHARS or _CONTROL.search(name):
                raise ValueError('class name %r is longer than %d characters or has control '
                                 'characters; rename that class'
                                 % (name[:40], MAX_CLASS_NAME_CHARS))
        longest = max([len(name) for name in names] + [1])
        arrays[CLASS_NAMES_KEY] = np.array(names, dtype='<U%d' % longest)   # UTF-32, as read
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.npz.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_shapes(path, layers, expected, skip_layer=()):
    """Checks that ``layers`` has every expected layer not skipped, with its shape.

    Args:
      path: the file the layers came from (for the message).
      layers: {layer: (weights, biases)} as read by load_weights.
      expected: {layer: (weights shape, biases shape)} of the graph.
      skip_layer: layers that will not be loaded.
    Raises:
      WeightFileError naming the file, the layer, expected and found shapes.
    """
    for layer, shapes in expected.items():
        if layer in skip_layer:
            continue
        if layer not in layers:
            raise WeightFileError(
                '%s: layer %s is missing (the file has %s); use a complete weight file '
                'or add %s to skip_layer to train it from scratch'
                % (path, layer, ', '.join(sorted(layers)) or 'none', layer))
        for part, want, array in zip(PARTS, shapes, layers[layer]):
            if tuple(array.shape) != tuple(want):
                raise WeightFileError(
                    '%s: %s/%s has shape %s, the model expects %s; check num_classes, '
                    'or add %s to skip_layer to train it from scratch'
                    % (path, layer, part, tuple(array.shape), tuple(want), layer))


# --- The file -------------------------------------------------------------------

NPY_MAGIC = b'\x93NUMPY'


def _error(path, what, todo):
    return WeightFileError('%s: %s; %s' % (path, what, todo))


def _map_file(path):
    """The file's bytes, memory-mapped read-only: nothing is read before it is used."""
    try:
        with open(path, 'rb') as f:
            size = os.fstat(f.fileno()).st_size
            data = b''
            if 0 < size <= MAX_FILE_BYTES:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise WeightFileError('%s: no such file; %s' % (path, GET_WEIGHTS_HINT)) from None
    except (OSError, ValueError) as err:
        raise WeightFileError('%s: cannot read it (%s); check the path and its permissions'
                              % (path, getattr(err, 'strerror', None) or err)) from None
    if max(size, len(data)) > MAX_FILE_BYTES:
        raise WeightFileError('%s: %d bytes, more than any AlexNet weight file (the limit is '
                              '%d; bvlc_alexnet.npy has 233 MiB); check that it is the right file'
                              % (path, max(size, len(data)), MAX_FILE_BYTES))
    return data


def _load_npy(path, data, expected):
    """The 16 arrays of a bvlc_alexnet.npy, {'conv1/weights': array, ...}."""
    todo = GET_WEIGHTS_HINT
    header = _Cursor(path, data)
    descr, fortran_order, shape = _read_npy_header(path, header.read, 'the file', todo)
    if descr not in ('|O', '|O8') or fortran_order or shape != ():
        raise _error(path, 'a .npy of %s %s, not the dict of layers bvlc_alexnet.npy holds'
                     % (_quoted(descr), _shape_text(shape)), todo)
    top = _Pickle(path, data, header.pos, len(data)).run()
    found = _pickled_layers(path, top)                 # {key: (byte order, shape, data)}
    num_classes = _num_classes(path, found['fc8/biases'][1], todo)
    shapes = _expected_shapes(expected, num_classes)
    for key in ARRAY_KEYS:
        _check_shape(path, key, found[key][1], shapes, todo)
    arrays = {}
    for key in ARRAY_KEYS:
        byteorder, shape, value = found[key]
        buffer, offset, size = _pickled_bytes(path, key, value, 4 * _product(shape))
        arrays[key] = _make_array(path, key, shape, byteorder, buffer, offset, size, todo)
    return arrays


class _Cursor(object):
    """Reads the file's first bytes in order: its .npy header."""

    def __init__(self, path, data):
        self.path, self.data, self.pos = path, data, 0

    def read(self, n):
        if self.pos + n > len(self.data):
            raise _error(self.path, 'the file ends inside its .npy header: it is truncated '
                         'or corrupt', GET_WEIGHTS_HINT)
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk


# --- The .npy header ------------------------------------------------------------
# b'\x93NUMPY', version major and minor, the header's length (2 bytes in version 1,
# 4 in versions 2 and 3), then the header: a dict literal padded with spaces, ending
# in a newline (version 3: UTF-8, before: Latin-1).

_HEADER_TOKEN = re.compile(r" *(?:([{}():,])|'([\w<>|=]{0,32})'|(True|False)"
                           r"|(0|[1-9][0-9]{0,11}))", re.ASCII)
_HEADER_END = re.compile(r' *\n')
_HEADER_KEYS = ('descr', 'fortran_order', 'shape')


def _read_npy_header(path, read, where, todo):
    """(descr, fortran_order, shape) of the .npy header that read(n) returns bytes of."""
    start = read(8)
    if start[:6] != NPY_MAGIC:
        raise _error(path, '%s is not an .npy (corrupt .npy header)' % where, todo)
    version = (start[6], start[7])
    if version == (1, 0):
        size = struct.unpack('<H', read(2))[0]
    elif version in ((2, 0), (3, 0)):
        size = struct.unpack('<I', read(4))[0]
    else:
        raise _error(path, 'corrupt .npy header in %s: version %d.%d (NumPy writes 1.0, 2.0 '
                     'and 3.0)' % ((where,) + version), todo)
    if size > MAX_HEADER_BYTES:
        raise _error(path, 'corrupt .npy header in %s: %d bytes long (at most %d)'
                     % (where, size, MAX_HEADER_BYTES), todo)
    raw = read(size)
    try:
        return _parse_header(raw.decode('utf-8' if version == (3, 0) else 'latin1'))
    except ValueError as err:        # UnicodeDecodeError is a ValueError too
        raise _error(path, 'corrupt .npy header in %s (%s)' % (where, _reason(err)),
                     todo) from None


def _reason(err):
    """The text of one of our own ValueErrors (fixed strings), or the error's class."""
    return str(err) if type(err) is ValueError else type(err).__name__


def _parse_header(text):
    """(descr, fortran_order, shape) from an .npy header. Raises ValueError.

    Accepts only what NumPy writes, e.g. {'descr': '<f4', 'fortran_order': False,
    'shape': (11, 11, 3, 96), } in any key order, then spaces and one newline:
    strings of letters, digits and <>|=, True/False, tuples of non-negative integers.
    """
    tokens, pos = [], 0
    match = _HEADER_TOKEN.match(text)
    while match:
        punctuation, string, boolean, number = match.groups()
        if punctuation:
            tokens.append(('p', punctuation))
        elif string is not None:
            tokens.append(('s', string))
        elif boolean:
            tokens.append(('b', boolean == 'True'))
        else:
            tokens.append(('i', int(number)))
        pos = match.end()
        match = _HEADER_TOKEN.match(text, pos)
    if not _HEADER_END.fullmatch(text, pos):
        raise ValueError('unexpected character at %d' % pos)

    def token(i):
        return tokens[i] if i < len(tokens) else ('end', None)

    if token(0) != ('p', '{'):
        raise ValueError('not a dict')
    fields, i = {}, 1
    while token(i) != ('p', '}'):
        kind, key = token(i)
        if kind != 's' or key not in _HEADER_KEYS or key in fields:
            raise ValueError('an unexpected or repeated key')
        if token(i + 1) != ('p', ':'):
            raise ValueError("no ':' after a key")
        kind, value = token(i + 2)
        i += 3
        if kind in ('s', 'b'):
            fields[key] = value
        elif (kind, value) == ('p', '('):
            dims = []
            while token(i) != ('p', ')'):
                kind, value = token(i)
                if kind != 'i' or len(dims) == MAX_DIMS:
                    raise ValueError('a shape that is not a tuple of up to %d sizes' % MAX_DIMS)
                dims.append(value)
                i += 1
                if token(i) == ('p', ','):
                    i += 1
                elif token(i) != ('p', ')') or len(dims) == 1:
                    raise ValueError('a shape that is not a tuple')
            fields[key] = tuple(dims)
            i += 1
        else:
            raise ValueError('a value that is not a string, True/False or a shape')
        if token(i) == ('p', ','):
            i += 1
        elif token(i) != ('p', '}'):
            raise ValueError("no ',' or '}' after a value")
    if token(i + 1) != ('end', None):
        raise ValueError('text after the dict')
    if (len(fields) != 3 or not isinstance(fields['descr'], str)
            or not isinstance(fields['fortran_order'], bool)
            or not isinstance(fields['shape'], tuple)):
        raise ValueError("not the keys 'descr' (a string), 'fortran_order' (True/False) "
                         "and 'shape' (a tuple)")
    return fields['descr'], fields['fortran_order'], fields['shape']


# --- The pickle, read into inert values -------------------------------------------
# Values on the stack: None, True, False, int, _Span (a string), _Global (a
# recognised NumPy name) and _Node (a tuple, list, dict, or a call the pickle asks
# for and that is never made).

class _Span(object):
    """A pickled string, kept as its place in the file: big ones are never copied.

    kind: 'str' (Python 2 str: bytes that may be text), 'text' (unicode, UTF-8 in
    the file) or 'bytes' (bytes, bytearray).
    """
    __slots__ = ('data', 'start', 'end', 'kind')

    def __init__(self, data, start, end, kind):
        self.data, self.start, self.end, self.kind = data, start, end, kind

    def size(self):
        return self.end - self.start


class _Global(object):
    """One of the NumPy names np.save's pickles use (the only globals recognised)."""
    __slots__ = ('name',)

    def __init__(self, name):
        self.name = name


class _Node(object):
    """A tuple, list or dict the pickle builds, or a call it asks for (never made).

    kind: 'tuple', 'list', 'dict' (items are (key, value) pairs) or 'call' (items:
    [global, arguments tuple], then BUILD's state). depth: how deep it nests.
    contained: it is inside another value, so it may no longer change: depths stay
    true and no value can contain itself.
    """
    __slots__ = ('kind', 'items', 'depth', 'contained')

    def __init__(self, kind):
        self.kind, self.items, self.depth, self.contained = kind, [], 1, False


_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): '_reconstruct',   # NumPy 1 writes
    ('numpy._core.multiarray', '_reconstruct'): '_reconstruct',  # NumPy 2 writes
    ('numpy', 'ndarray'): 'ndarray',
    ('numpy', 'dtype'): 'dtype',
    ('numpy.core.numeric', '_frombuffer'): '_frombuffer',        # protocol 5
    ('numpy._core.numeric', '_frombuffer'): '_frombuffer',
    ('_codecs', 'encode'): '_codecs.encode',                     # Python 3, protocol 2
}


class _Pickle(object):
    """Runs the pickle in data[start:end] into inert values; run() returns the result."""

    def __init__(self, path, data, start, end):
        self.path, self.data, self.start, self.end = path, data, start, end
        self.pos = self.at = start           # the next byte; where this opcode began
        self.stack, self.marks, self.memo = [], [], {}

    def run(self):
        for _ in range(MAX_OPCODES):
            self.at = self.pos
            code = self.byte()
            handler = _OPCODES.get(code)
            if handler is None:
                raise self.fail('opcode 0x%02x, which np.save never writes' % code)
            if handler(self):
                return self.result()
        raise self.fail('more than %d opcodes' % MAX_OPCODES)

    def fail(self, what):
        return _error(self.path, 'unsafe or corrupt pickle at byte %d: %s' % (self.at, what),
                      GET_WEIGHTS_HINT)

    # Reading the opcodes' arguments; nothing reaches past the end of the pickle.
    def need(self, n):
        if n > self.end - self.pos:
            raise _error(self.path, 'the pickle needs %d bytes at byte %d but the file ends '
                         'before: it is truncated or corrupt' % (n, self.pos), GET_WEIGHTS_HINT)

    def byte(self):
        self.need(1)
        self.pos += 1
        return self.data[self.pos - 1]

    def unpack(self, fmt):
        size = struct.calcsize(fmt)
        self.need(size)
        self.pos += size
        return struct.unpack_from(fmt, self.data, self.pos - size)[0]

    def span(self, size, kind):
        if size < 0:
            raise self.fail('a string of negative length')
        self.need(size)
        self.pos += size
        return _Span(self.data, self.pos - size, self.pos, kind)

    def line(self):
        """A GLOBAL's module or name: up to a newline, at most MAX_NAME_BYTES."""
        stop = self.data.find(b'\n', self.pos, min(self.end, self.pos + MAX_NAME_BYTES + 1))
        if stop < 0:
            self.need(min(self.end - self.pos + 1, MAX_NAME_BYTES + 1))   # cut off?
            raise self.fail('a global name longer than %d bytes' % MAX_NAME_BYTES)
        text = bytes(self.data[self.pos:stop]).decode('latin1')
        self.pos = stop + 1
        return text

    # The stack: MARK starts a new segment; pops never reach below it.
    def push(self, value):
        if len(self.stack) >= MAX_STACK:
            raise self.fail('more than %d values on the stack' % MAX_STACK)
        self.stack.append(value)

    def pop_n(self, n):
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            raise self.fail('an opcode takes more values than the stack holds')
        items = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        return items

    def pop(self):
        return self.pop_n(1)[0]

    def top(self):
        value = self.pop()
        self.stack.append(value)
        return value

    def pop_mark(self):
        if not self.marks:
            raise self.fail('an opcode closes a MARK that was never set')
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    # Building values
    def fill(self, node, values):
        """Adds values to a node nothing contains yet; they may no longer change."""
        if node.contained:
            raise self.fail('a %s changes after being put inside another value' % node.kind)
        for value in values:
            if value is node:
                raise self.fail('a %s put inside itself' % node.kind)
            if isinstance(value, _Node):
                value.contained = True
                node.depth = max(node.depth, value.depth + 1)
        if node.depth > MAX_DEPTH:
            raise self.fail('values nested more than %d deep' % MAX_DEPTH)
        if node.kind == 'dict':
            if len(values) % 2:
                raise self.fail('a dict key without its value')
            node.items.extend(zip(values[0::2], values[1::2]))
        else:
            node.items.extend(values)

    def new(self, kind, values=()):
        node = _Node(kind)
        self.fill(node, list(values))
        self.push(node)

    def target(self, kind, opcode):
        """The list or dict on top of the stack that `opcode` adds to."""
        value = self.top()
        if not (isinstance(value, _Node) and value.kind == kind):
            raise self.fail('%s into %s, not a %s' % (opcode, _describe(value), kind))
        return value

    def recognise(self, module, name):
        known = _GLOBALS.get((module, name))
        if known is None:
            shown = module + '.' + name
            shown = ('global ' + shown if _PRINTABLE.fullmatch(shown) else
                     'a global named by %d characters, not plain ASCII' % len(shown))
            raise _error(self.path, 'refused %s (only the NumPy names np.save writes are read, '
                         'and nothing in the file is run)' % shown, GET_WEIGHTS_HINT)
        return _Global(known)

    def result(self):
        if self.marks or len(self.stack) != 1:
            raise self.fail('STOP leaves %d values and %d open MARKs (np.save leaves one value)'
                            % (len(self.stack), len(self.marks)))
        if self.pos != self.end:
            raise self.fail('%d bytes after the pickle ends' % (self.end - self.pos))
        return self.stack[0]

    # The opcodes (the table _OPCODES below says which byte is which).
    def op_proto(self):
        version = self.byte()
        if self.at != self.start or not 2 <= version <= 5:
            raise self.fail('PROTO %d; np.save writes protocol 2 to 5, first' % version)

    def op_frame(self):
        self.need(self.unpack('<Q'))          # a hint for buffering; must lie in the file

    def op_stop(self):
        return True

    def op_mark(self):
        if len(self.marks) >= MAX_MARKS:
            raise self.fail('more than %d open MARKs' % MAX_MARKS)
        self.marks.append(len(self.stack))

    def op_global(self):
        module = self.line()
        self.push(self.recognise(module, self.line()))

    def op_stack_global(self):
        module, name = self.pop_n(2)
        texts = [_text(value, MAX_NAME_BYTES) for value in (module, name)]
        if None in texts:
            raise self.fail('STACK_GLOBAL of %s and %s' % (_describe(module), _describe(name)))
        self.push(self.recognise(*texts))

    def op_long1(self):
        size = self.byte()
        if size > 8:
            raise self.fail('an integer of %d bytes' % size)
        self.need(size)
        self.pos += size
        self.push(int.from_bytes(self.data[self.pos - size:self.pos], 'little', signed=True))

    def op_tuple(self):
        self.new('tuple', self.pop_mark())

    def op_list(self):
        self.new('list', self.pop_mark())

    def op_dict(self):
        self.new('dict', self.pop_mark())

    def op_append(self):
        value = self.pop()
        self.fill(self.target('list', 'APPEND'), [value])

    def op_appends(self):
        values = self.pop_mark()
        self.fill(self.target('list', 'APPENDS'), values)

    def op_setitem(self):
        pair = self.pop_n(2)
        self.fill(self.target('dict', 'SETITEM'), pair)

    def op_setitems(self):
        values = self.pop_mark()
        self.fill(self.target('dict', 'SETITEMS'), values)

    def op_reduce(self):
        function, arguments = self.pop_n(2)
        if not isinstance(function, _Global):
            raise self.fail('REDUCE calls %s' % _describe(function))
        if not (isinstance(arguments, _Node) and arguments.kind == 'tuple'):
            raise self.fail('REDUCE with %s as arguments' % _describe(arguments))
        self.new('call', [function, arguments])

    def op_build(self):
        state = self.pop()
        call = self.top()
        if not (isinstance(call, _Node) and call.kind == 'call' and len(call.items) == 2):
            raise self.fail('BUILD of %s' % _describe(call))
        self.fill(call, [state])

    def op_memoize(self):
        self.put(len(self.memo))

    def put(self, index):
        if not 0 <= index < MAX_MEMO:
            raise self.fail('memo index %d (at most %d)' % (index, MAX_MEMO - 1))
        self.memo[index] = self.top()

    def get(self, index):
        if index not in self.memo:
            raise self.fail('memo %d is empty' % index)
        self.push(self.memo[index])


def _string(length_format, kind):
    return lambda machine: machine.push(machine.span(machine.unpack(length_format), kind))


def _integer(fmt):
    return lambda machine: machine.push(machine.unpack(fmt))


def _constant(value):
    return lambda machine: machine.push(value)


def _tuple_of(n):
    return lambda machine: machine.new('tuple', machine.pop_n(n))


_OPCODES = {
    0x80: _Pickle.op_proto,                          # PROTO
    0x95: _Pickle.op_frame,                          # FRAME
    ord('.'): _Pickle.op_stop,                       # STOP
    ord('('): _Pickle.op_mark,                       # MARK
    ord('c'): _Pickle.op_global,                     # GLOBAL 'module\nname\n'
    0x93: _Pickle.op_stack_global,                   # STACK_GLOBAL
    ord('U'): _string('<B', 'str'),                  # SHORT_BINSTRING (Python 2 str)
    ord('T'): _string('<i', 'str'),                  # BINSTRING
    0x8c: _string('<B', 'text'),                     # SHORT_BINUNICODE
    ord('X'): _string('<I', 'text'),                 # BINUNICODE
    0x8d: _string('<Q', 'text'),                     # BINUNICODE8
    ord('C'): _string('<B', 'bytes'),                # SHORT_BINBYTES
    ord('B'): _string('<I', 'bytes'),                # BINBYTES
    0x8e: _string('<Q', 'bytes'),                    # BINBYTES8
    0x96: _string('<Q', 'bytes'),                    # BYTEARRAY8
    ord('K'): _integer('<B'),                        # BININT1
    ord('M'): _integer('<H'),                        # BININT2
    ord('J'): _integer('<i'),                        # BININT
    0x8a: _Pickle.op_long1,                          # LONG1
    ord('N'): _constant(None),                       # NONE
    0x88: _constant(True),                           # NEWTRUE
    0x89: _constant(False),                          # NEWFALSE
    ord(')'): lambda machine: machine.new('tuple'),  # EMPTY_TUPLE
    ord('t'): _Pickle.op_tuple,                      # TUPLE (from MARK)
    0x85: _tuple_of(1),                              # TUPLE1
    0x86: _tuple_of(2),                              # TUPLE2
    0x87: _tuple_of(3),                              # TUPLE3
    ord(']'): lambda machine: machine.new('list'),   # EMPTY_LIST
    ord('l'): _Pickle.op_list,                       # LIST (from MARK)
    ord('a'): _Pickle.op_append,                     # APPEND
    ord('e'): _Pickle.op_appends,                    # APPENDS (from MARK)
    ord('}'): lambda machine: machine.new('dict'),   # EMPTY_DICT
    ord('d'): _Pickle.op_dict,                       # DICT (from MARK)
    ord('s'): _Pickle.op_setitem,                    # SETITEM
    ord('u'): _Pickle.op_setitems,                   # SETITEMS (from MARK)
    ord('R'): _Pickle.op_reduce,                     # REDUCE: recorded, never called
    ord('b'): _Pickle.op_build,                      # BUILD: recorded as the call's state
    ord('q'): lambda machine: machine.put(machine.unpack('<B')),   # BINPUT
    ord('r'): lambda machine: machine.put(machine.unpack('<I')),   # LONG_BINPUT
    0x94: _Pickle.op_memoize,                                      # MEMOIZE
    ord('h'): lambda machine: machine.get(machine.unpack('<B')),   # BINGET
    ord('j'): lambda machine: machine.get(machine.unpack('<I')),   # LONG_BINGET
}


# --- From the pickle's values to arrays -----------------------------------------

def _pickled_layers(path, top):
    """{key: (byte order, shape, data value)} of the 16 arrays in np.save's pickle of
    the 0-d object array that holds {'conv1': [W, b], ...}."""
    todo = GET_WEIGHTS_HINT
    descr, _, shape, _, data = _array_record(path, top, 'the pickled array')
    content = data.items[0] if _is_node(data, 'list') and len(data.items) == 1 else None
    if descr != 'O8' or shape != () or not _is_node(content, 'dict'):
        raise _error(path, 'the pickle holds a %s array of shape %s with %s, not the dict of '
                     'layers bvlc_alexnet.npy holds' % (_quoted(descr), _shape_text(shape),
                                                        _describe(content or data)), todo)
    found = {}
    for key, value in content.items:
        layer = _text(key, MAX_NAME_BYTES)
        if layer is None:
            raise _error(path, 'a layer key is %s, not a layer name such as conv1'
                         % _describe(key), todo)
        if layer not in LAYER_NAMES:
            raise _error(path, 'unexpected layer %s (bvlc_alexnet has %s)'
                         % (_quoted(layer), ', '.join(LAYER_NAMES)), todo)
        if layer + '/weights' in found:
            raise _error(path, 'layer %s appears twice' % layer, todo)
        if not ((_is_node(value, 'list') or _is_node(value, 'tuple')) and len(value.items) == 2):
            raise _error(path, 'layer %s should be [weights, biases], found %s'
                         % (layer, _describe(value)), todo)
        for part, record in zip(PARTS, value.items):
            name = layer + '/' + part
            descr, byteorder, shape, fortran_order, data = _array_record(path, record, name)
            if descr != 'f4':
                raise _error(path, '%s has dtype %s, expected float32 (f4)'
                             % (name, _quoted(descr)), todo)
            if fortran_order:
                raise _error(path, '%s is in Fortran order, expected C order' % name, todo)
            found[name] = (byteorder, shape, data)
    _check_complete(path, found, todo)
    return found


def _array_record(path, value, name):
    """(descr, byte order, shape, fortran_order, data value) of a pickled ndarray."""
    todo = GET_WEIGHTS_HINT
    arguments = _call_arguments(value, '_reconstruct')
    if arguments is not None:
        # _reconstruct(ndarray, (0,), b'b') makes an empty array; BUILD's state fills it.
        state = _tuple_items(value.items[2], 5) if len(value.items) == 3 else None
        if state is None:
            raise _error(path, '%s is an array without data (a _reconstruct that no BUILD '
                         'fills)' % name, todo)
        if not (len(arguments) == 3 and _is_global(arguments[0], 'ndarray')
                and _int_tuple(arguments[1]) == (0,) and _small_bytes(arguments[2]) == b'b'):
            raise _error(path, '%s is not pickled as NumPy pickles an array '
                         '(_reconstruct(ndarray, (0,), b"b"))' % name, todo)
        version, shape, dtype, fortran_order, data = state
        if version != 1 or type(version) is not int or not isinstance(fortran_order, bool):
            raise _error(path, '%s has a malformed array state' % name, todo)
    else:
        # Protocol 5: _frombuffer(bytearray, dtype, shape, order)
        arguments = _call_arguments(value, '_frombuffer')
        if arguments is None or len(arguments) != 4 or len(value.items) != 2:
            raise _error(path, '%s should be an array, found %s' % (name, _describe(value)),
                         todo)
        data, dtype, shape, order = arguments
        if _text(order, 1) not in ('C', 'F'):
            raise _error(path, "%s has the order %s, expected 'C'" % (name, _describe(order)),
                         todo)
        fortran_order = _text(order, 1) == 'F'
    descr, byteorder = _dtype_record(path, dtype, name)
    shape = _int_tuple(shape)
    if shape is None:
        raise _error(path, '%s has no valid shape (a tuple of up to %d sizes)'
                     % (name, MAX_DIMS), todo)
    return descr, byteorder, shape, fortran_order, data


_BYTE_ORDERS = {'<': '<', '>': '>', '|': '=', '=': '='}   # '|' and '=': this machine's


def _dtype_record(path, value, name):
    """(descr, byte order) of a pickled numpy.dtype: dtype(descr, False, True), then
    BUILD with (3, byte order, None, None, None, -1, -1, flags)."""
    arguments = _call_arguments(value, 'dtype')
    state = _tuple_items(value.items[2], 8) if arguments and len(value.items) == 3 else None
    if not (len(arguments or ()) == 3 and state is not None
            and arguments[1] == 0 and arguments[2] == 1
            and state[0] == 3 and _text(state[1], 1) in _BYTE_ORDERS
            and state[2] is None and state[3] is None and state[4] is None
            and state[5] == -1 and state[6] == -1 and type(state[7]) is int):
        raise _error(path, '%s has %s where its dtype should be (not the numpy.dtype pickle '
                     'np.save writes)' % (name, _describe(value)), GET_WEIGHTS_HINT)
    descr = _text(arguments[0], 8)
    if descr is None:
        raise _error(path, '%s has a dtype named by %s' % (name, _describe(arguments[0])),
                     GET_WEIGHTS_HINT)
    return descr, _BYTE_ORDERS[_text(state[1], 1)]


def _pickled_bytes(path, key, value, nbytes):
    """(buffer, offset, size) of an array's raw data as the pickle holds it."""
    if isinstance(value, _Span) and value.kind != 'text':
        return value.data, value.start, value.size()
    arguments = _call_arguments(value, '_codecs.encode')
    if (arguments is not None and len(arguments) == 2 and _is_text(arguments[0])
            and _text(arguments[1], 8) == 'latin1'):
        # Python 3's protocol 2: the bytes as Latin-1 text, 1 or 2 UTF-8 bytes each.
        text = arguments[0]
        if not nbytes <= text.size() <= 2 * nbytes:
            raise _error(path, '%s holds %d bytes of data text, its shape needs %d bytes'
                         % (key, text.size(), nbytes), GET_WEIGHTS_HINT)
        raw = _latin1_bytes(text)
        if raw is not None:
            return raw, 0, len(raw)
    raise _error(path, '%s has %s where its data should be' % (key, _describe(value)),
                 GET_WEIGHTS_HINT)


def _small_bytes(value):
    """The bytes of a short pickled bytes string (b'b'), however the writer wrote it."""
    if isinstance(value, _Span) and value.kind != 'text' and value.size() <= 8:
        return bytes(value.data[value.start:value.end])
    arguments = _call_arguments(value, '_codecs.encode')
    if (arguments is not None and len(arguments) == 2 and _is_text(arguments[0])
            and arguments[0].size() <= 8 and _text(arguments[1], 8) == 'latin1'):
        return _latin1_bytes(arguments[0])
    return None


def _latin1_bytes(text):
    try:
        return bytes(text.data[text.start:text.end]).decode('utf-8').encode('latin1')
    except UnicodeError:
        return None


def _text(value, limit):
    """The str a pickled string holds if it is text of at most `limit` bytes, else None."""
    if not isinstance(value, _Span) or value.kind == 'bytes' or value.size() > limit:
        return None
    try:
        return bytes(value.data[value.start:value.end]).decode(
            'latin1' if value.kind == 'str' else 'utf-8')
    except UnicodeDecodeError:
        return None


def _is_text(value):
    return isinstance(value, _Span) and value.kind == 'text'


def _is_node(value, kind):
    return isinstance(value, _Node) and value.kind == kind


def _is_global(value, name):
    return isinstance(value, _Global) and value.name == name


def _call_arguments(value, name):
    """The argument values if `value` records a call of the global `name`, else None."""
    if _is_node(value, 'call') and value.items[0].name == name:
        return value.items[1].items
    return None


def _tuple_items(value, length):
    return value.items if _is_node(value, 'tuple') and len(value.items) == length else None


def _int_tuple(value):
    """A shape: a tuple of up to MAX_DIMS non-negative integers, or None."""
    if not (_is_node(value, 'tuple') and len(value.items) <= MAX_DIMS):
        return None
    if not all(type(size) is int and size >= 0 for size in value.items):
        return None
    return tuple(value.items)


_PRINTABLE = re.compile(r'[\w.<>|=:+/ -]{1,80}', re.ASCII)


def _quoted(text):
    """Text for a message: itself in quotes if short and plain, else only its length."""
    if _PRINTABLE.fullmatch(text):
        return "'%s'" % text
    return '(%d characters, not plain ASCII)' % len(text)


def _describe(value):
    """A short, safe description of a pickled value: its kind and size, and its text
    only if short and plain (never a repr of what a hostile file holds)."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return 'an integer'
    if isinstance(value, _Global):
        return 'the global %s' % value.name
    if isinstance(value, _Span):
        text = _text(value, 32)
        if text is not None and _PRINTABLE.fullmatch(text):
            return "the string '%s'" % text
        return 'a %d-byte string' % value.size()
    if _is_node(value, 'call'):
        return 'a call of %s' % value.items[0].name
    if isinstance(value, _Node):
        count = len(value.items)
        return 'a %s of %d item%s' % (value.kind, count, '' if count == 1 else 's')
    return 'nothing'


def _shape_text(shape):
    if len(shape) == 1:
        return '(%d,)' % shape[0]
    return '(%s)' % ', '.join(str(size) for size in shape)


# --- The .npz: a zip of plain .npy members --------------------------------------

_ZipEntry = collections.namedtuple('_ZipEntry', 'key method crc size compressed_size start')
_END_RECORD = struct.Struct('<4s4H2LH')         # end of central directory, 22 bytes
_DIRECTORY_ENTRY = struct.Struct('<4s6H3L5H2L')  # central directory entry, 46 bytes
_LOCAL_HEADER = struct.Struct('<4s5H3L2H')       # local file header, 30 bytes
STORED, DEFLATED = 0, 8
NPZ_KEYS = ARRAY_KEYS + (CLASS_NAMES_KEY,)
_NPY_PREFIX = 12                                 # magic, version, header length (v2)


def _load_npz(path, data, expected):
    """The 16 arrays of an .npz, {'conv1/weights': array, ...}, and its class names checked."""
    todo = SAVE_NPZ_HINT
    entries = _zip_entries(path, data)
    _check_complete(path, entries, todo)
    biases = entries['fc8/biases']
    if biases.size > _NPY_PREFIX + MAX_HEADER_BYTES + 4 * MAX_CLASSES:
        raise _error(path, 'fc8/biases.npy declares %d bytes, more than %d classes need'
                     % (biases.size, MAX_CLASSES), todo)
    arrays = {'fc8/biases': _npz_array(path, data, biases, None)}
    num_classes = _num_classes(path, arrays['fc8/biases'].shape, todo)
    shapes = _expected_shapes(expected, num_classes)
    if shapes is not None:
        # Every member's declared size, before any other is read.
        _check_shape(path, 'fc8/biases', arrays['fc8/biases'].shape, shapes, todo)
        for key in ARRAY_KEYS:
            layer, part = key.split('/')
            shape = shapes[layer][PARTS.index(part)]
            least = 4 * _product(shape) + 1
            most = least - 1 + _NPY_PREFIX + MAX_HEADER_BYTES
            if not least <= entries[key].size <= most:
                raise _error(path, '%s.npy declares %d bytes, but its %s float32 values and '
                             'their header take %d to %d' % (key, entries[key].size,
                                                             _shape_text(shape), least, most),
                             todo)
    for key in ARRAY_KEYS:
        if key not in arrays:
            arrays[key] = _npz_array(path, data, entries[key], shapes)
    if CLASS_NAMES_KEY in entries:
        _npz_class_names(path, data, entries[CLASS_NAMES_KEY], num_classes)
    return arrays


def _zip_entries(path, data):
    """{key: _ZipEntry} from the zip's central directory, every member checked before
    any is read: a known name, once; stored or deflated, not encrypted; inside the
    file, not overlapping another; a declared size it can hold; MAX_FILE_BYTES in all."""
    todo = SAVE_NPZ_HINT
    end = data.rfind(b'PK\x05\x06', max(0, len(data) - _END_RECORD.size - 0xFFFF))
    if end < 0 or end + _END_RECORD.size > len(data):
        raise _error(path, 'no zip end record: the .npz is truncated or corrupt', todo)
    _, disk, directory_disk, disk_count, count, directory_size, directory, comment = (
        _END_RECORD.unpack_from(data, end))
    if end + _END_RECORD.size + comment != len(data):
        raise _error(path, 'bytes after the zip end record: the .npz is corrupt', todo)
    if disk or directory_disk or disk_count != count or directory + directory_size != end:
        raise _error(path, 'the zip directory is not where its end record says: the .npz is '
                     'truncated or corrupt', todo)
    entries, extents, pos = {}, [], directory
    for _ in range(count):     # at most 18 are read: each must be another of the 17 keys
        if pos + _DIRECTORY_ENTRY.size > end:
            raise _error(path, 'the zip directory is cut short: the .npz is corrupt', todo)
        (signature, _, _, flags, method, _, _, crc, compressed_size, size, name_length,
         extra_length, comment_length, _, _, _, offset) = _DIRECTORY_ENTRY.unpack_from(data, pos)
        name = bytes(data[pos + 46:pos + 46 + name_length])
        pos += 46 + name_length + extra_length + comment_length
        if signature != b'PK\x01\x02' or pos > end:
            raise _error(path, 'a corrupt zip directory entry', todo)
        key = name[:-4].decode('latin1') if name.endswith(b'.npy') else None
        if key not in NPZ_KEYS:
            raise _error(path, 'unexpected zip member %s (an AlexNet .npz holds only '
                         'conv1/weights.npy ... fc8/biases.npy and class_names.npy)'
                         % _quoted(name.decode('latin1')), todo)
        if key in entries:
            raise _error(path, 'zip member %s.npy appears twice' % key, todo)
        if flags & 0x41:
            raise _error(path, '%s.npy is encrypted' % key, todo)
        if method not in (STORED, DEFLATED):
            raise _error(path, '%s.npy is compressed by method %d; only stored and deflated '
                         'members are read' % (key, method), todo)
        if (method == STORED and compressed_size != size
                or size > (1 << 20) + MAX_EXPANSION * compressed_size):
            raise _error(path, '%s.npy declares %d bytes from %d compressed bytes: more than '
                         'it can hold (a zip bomb?)' % (key, size, compressed_size), todo)
        start = _member_start(path, data, offset, name, method, directory)
        if start + compressed_size > directory:
            raise _error(path, '%s.npy runs past the end of the zip data: the .npz is '
                         'truncated or corrupt' % key, todo)
        entries[key] = _ZipEntry(key, method, crc, size, compressed_size, start)
        extents.append((offset, start + compressed_size))
    if pos != end:
        raise _error(path, 'the zip directory has bytes between its entries', todo)
    extents.sort()
    if any(following[0] < previous[1] for previous, following in zip(extents, extents[1:])):
        raise _error(path, 'zip members overlap (a zip bomb?)', todo)
    total = sum(entry.size for entry in entries.values())
    if total > MAX_FILE_BYTES:
        raise _error(path, 'the zip members inflate to %d bytes in all, more than %d'
                     % (total, MAX_FILE_BYTES), todo)
    return entries


def _member_start(path, data, offset, name, method, directory):
    """Where a member's data starts, after its local header (which must match)."""
    if offset + _LOCAL_HEADER.size > directory:
        raise _error(path, 'a zip member starts past the zip data', SAVE_NPZ_HINT)
    fields = _LOCAL_HEADER.unpack_from(data, offset)
    name_length, extra_length = fields[9], fields[10]
    start = offset + _LOCAL_HEADER.size
    if (fields[0] != b'PK\x03\x04' or fields[3] != method
            or bytes(data[start:start + name_length]) != name):
        raise _error(path, 'the local header of zip member %s does not match the zip '
                     'directory' % _quoted(name.decode('latin1')), SAVE_NPZ_HINT)
    return start + name_length + extra_length


class _MemberReader(object):
    """Reads one member's bytes in order: never more than it declares; its CRC checked."""

    def __init__(self, path, data, entry):
        self.path, self.data, self.entry = path, data, entry
        self.pos = entry.start                          # the next compressed byte
        self.stop = entry.start + entry.compressed_size
        self.done = 0                                   # bytes read so far
        self.crc = 0
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS) if entry.method == DEFLATED else None
        self.pending = b''                              # compressed, not yet inflated

    def fail(self, what):
        return _error(self.path, '%s.npy %s: the file is truncated or corrupt'
                      % (self.entry.key, what), SAVE_NPZ_HINT)

    def read(self, n):
        """(buffer, offset) of the member's next n bytes: a view of the file if stored."""
        if self.done + n > self.entry.size:
            raise self.fail('ends after %d bytes' % self.entry.size)
        self.done += n
        if self.inflater is None:
            self.pos += n
            self.crc = zlib.crc32(memoryview(self.data)[self.pos - n:self.pos], self.crc)
            return self.data, self.pos - n
        out, filled = bytearray(n), 0
        try:
            while filled < n:
                self.take()
                piece = self.inflater.decompress(self.pending, n - filled)
                if not piece and self.inflater.unconsumed_tail == self.pending:
                    # The stream ended (zlib keeps the rest as its tail) or is stuck.
                    raise self.fail('inflates to fewer bytes than it declares')
                self.pending = self.inflater.unconsumed_tail
                out[filled:filled + len(piece)] = piece
                filled += len(piece)
        except zlib.error as err:
            raise self.fail('has corrupt compressed data (%s)' % err) from None
        self.crc = zlib.crc32(out, self.crc)
        return out, 0

    def read_bytes(self, n):
        buffer, offset = self.read(n)
        return bytes(buffer[offset:offset + n])

    def take(self):
        """More compressed bytes to inflate, ZIP_CHUNK at a time."""
        if not self.pending:
            if self.pos >= self.stop:
                raise self.fail('inflates to fewer bytes than it declares')
            self.pending = self.data[self.pos:min(self.pos + ZIP_CHUNK, self.stop)]
            self.pos += len(self.pending)

    def finish(self):
        """Checks that the member ends here and that its CRC matches."""
        if self.inflater is not None:
            try:
                while not self.inflater.eof:
                    self.take()
                    if self.inflater.decompress(self.pending, 1):
                        raise self.fail('inflates to more bytes than it declares')
                    if self.inflater.unconsumed_tail == self.pending:
                        raise self.fail('has corrupt compressed data')
                    self.pending = self.inflater.unconsumed_tail
            except zlib.error as err:
                raise self.fail('has corrupt compressed data (%s)' % err) from None
            if self.pending or self.inflater.unused_data or self.pos != self.stop:
                raise self.fail('has bytes after its compressed data')
        if self.done != self.entry.size or self.crc != self.entry.crc:
            raise self.fail('fails its CRC check')


def _npz_array(path, data, entry, shapes):
    """The float32 array of one member, its header, size, shape and values checked."""
    todo = SAVE_NPZ_HINT
    key = entry.key
    reader = _MemberReader(path, data, entry)
    descr, fortran_order, shape = _read_npy_header(path, reader.read_bytes, key + '.npy', todo)
    if descr not in ('<f4', '>f4'):
        found = ('Python objects (a pickle)' if descr.startswith('|O')
                 else 'dtype ' + _quoted(descr))
        raise _error(path, "%s holds %s, expected float32 ('<f4')" % (key, found), todo)
    if fortran_order:
        raise _error(path, '%s is in Fortran order, expected C order' % key, todo)
    _check_shape(path, key, shape, shapes, todo)
    nbytes = 4 * _product(shape)
    if entry.size - reader.done != nbytes:
        raise _error(path, '%s holds %d bytes of data, its shape %s needs %d'
                     % (key, entry.size - reader.done, _shape_text(shape), nbytes), todo)
    buffer, offset = reader.read(nbytes)
    reader.finish()
    return _make_array(path, key, shape, descr[0], buffer, offset, nbytes, todo)


_CLASS_NAMES_DESCR = re.compile(r'<U([1-9][0-9]{0,2})')
_CONTROL = re.compile('[\x00-\x1f\x7f-\x9f]')


def _npz_class_names(path, data, entry, num_classes):
    """The class names member: one '<U' (UTF-32) name per class, each short and printable."""
    todo = SAVE_NPZ_HINT
    most = num_classes or MAX_CLASSES
    if entry.size > _NPY_PREFIX + MAX_HEADER_BYTES + 4 * MAX_CLASS_NAME_CHARS * most:
        raise _error(path, 'class_names.npy declares %d bytes, more than %d names of at most '
                     '%d characters need' % (entry.size, most, MAX_CLASS_NAME_CHARS), todo)
    reader = _MemberReader(path, data, entry)
    descr, fortran_order, shape = _read_npy_header(path, reader.read_bytes,
                                                   'class_names.npy', todo)
    match = _CLASS_NAMES_DESCR.fullmatch(descr)
    chars = int(match.group(1)) if match else 0
    if not 1 <= chars <= MAX_CLASS_NAME_CHARS:
        raise _error(path, "class_names has dtype %s, expected unicode strings ('<U') of at "
                     "most %d characters" % (_quoted(descr), MAX_CLASS_NAME_CHARS), todo)
    if fortran_order or len(shape) != 1 or not 1 <= shape[0] <= most or (
            num_classes is not None and shape[0] != num_classes):
        raise _error(path, 'class_names has shape %s, expected (%s,): one name per class of '
                     'fc8' % (_shape_text(shape), num_classes or 'N'), todo)
    nbytes = 4 * chars * shape[0]
    if entry.size - reader.done != nbytes:
        raise _error(path, 'class_names holds %d bytes of data, its shape needs %d'
                     % (entry.size - reader.done, nbytes), todo)
    buffer, offset = reader.read(nbytes)
    reader.finish()
    try:
        text = bytes(buffer[offset:offset + nbytes]).decode('utf-32-le')
    except UnicodeDecodeError:
        raise _error(path, 'class_names is not valid unicode', todo) from None
    names = [text[i:i + chars].rstrip('\x00') for i in range(0, len(text), chars)]
    for index, name in enumerate(names):
        if _CONTROL.search(name):
            raise _error(path, 'class name %d has control characters' % index, todo)
    return names


# --- Checks shared by both formats ----------------------------------------------

def _check_complete(path, keys, todo):
    """Every layer's weights and biases must be there (extra ones were refused already)."""
    present = [layer for layer in LAYER_NAMES if any(layer + '/' + p in keys for p in PARTS)]
    for layer in LAYER_NAMES:
        missing = [part for part in PARTS if layer + '/' + part not in keys]
        if missing:
            what = 'layer ' + layer if len(missing) == 2 else layer + '/' + missing[0]
            raise _error(path, '%s is missing (the file has %s); use a complete weight file'
                         % (what, ', '.join(present) or 'no layers'), todo)


def _num_classes(path, shape, todo):
    if len(shape) != 1 or not 1 <= shape[0] <= MAX_CLASSES:
        raise _error(path, 'fc8/biases has shape %s, expected (N,): one bias per class, N from '
                     '1 to %d' % (_shape_text(shape), MAX_CLASSES), todo)
    return shape[0]


def _expected_shapes(expected, num_classes):
    """{layer: (weights shape, biases shape)} the file must have, or None."""
    if callable(expected):
        expected = expected(num_classes)
    if expected is None:
        return None
    return {layer: (tuple(weights), tuple(biases)) for layer, (weights, biases) in expected.items()}


def _check_shape(path, key, shape, shapes, todo):
    if shapes is not None:
        layer, part = key.split('/')
        want = shapes[layer][PARTS.index(part)]
        if shape != want:
            raise _error(path, '%s has shape %s, the model expects %s'
                         % (key, _shape_text(shape), _shape_text(want)), todo)
    if not shape or 0 in shape:
        raise _error(path, '%s has shape %s: no values' % (key, _shape_text(shape)), todo)


def _product(shape):
    count = 1
    for size in shape:
        count *= size
    return count


def _make_array(path, key, shape, byteorder, buffer, offset, size, todo):
    """The float32 array over exactly buffer[offset:offset + size], finite, native order."""
    count = _product(shape)
    if size != 4 * count:
        raise _error(path, '%s holds %d bytes of data, its shape %s needs %d'
                     % (key, size, _shape_text(shape), 4 * count), todo)
    array = np.frombuffer(buffer, dtype=byteorder + 'f4', count=count, offset=offset)
    array = array.reshape(shape)
    if not array.dtype.isnative:
        array = array.astype(np.float32)      # byte-swapped: the one copy
    # min and max are NaN if any value is, and infinite if any is: no temporary array.
    if not (np.isfinite(array.min()) and np.isfinite(array.max())):
        bad = count - int(np.count_nonzero(np.isfinite(array)))
        raise _error(path, '%s has %d NaN or infinite values (of %d); the weights are broken'
                     % (key, bad, count), todo)
    return array
