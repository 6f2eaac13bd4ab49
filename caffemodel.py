"""Reading Caffe's bvlc_alexnet.caffemodel and its mean image, safely, into this project's layout.

``bvlc_alexnet.caffemodel`` (232 MB, BVLC model zoo, SHA-1 9116a64c...) is the
model whose weights this graph reproduces (alexnet.py). It is one protobuf
message ``NetParameter`` (Caffe's src/caffe/proto/caffe.proto) in protobuf's
binary wire format: a run of fields, each a varint key ``number << 3 | wire type``
and then its value:

    wire type 0  varint: 1-10 bytes, 7 bits each, lowest first, high bit = "more follows"
    wire type 1  8 bytes little-endian (a double)
    wire type 2  a varint length, then that many bytes: a string, an embedded
                 message, or a packed repeated field
    wire type 5  4 bytes little-endian (a float)
    (3 and 4 are protobuf's deprecated groups; caffe.proto has none: refused)

The fields read here (numbers from caffe.proto; every other field is skipped
by its length, unread):

    NetParameter
      100 layer    LayerParameter, files from 2015 on:       1 name, 7 blobs
        2 layers   V1LayerParameter, 2014 files (bvlc_alexnet): 4 name, 6 blobs
                   (its field 1 holds a 2013 V0 layer: refused, see below)
    BlobProto      a layer's parameters; also all of imagenet_mean.binaryproto
      7 shape      BlobShape { 1 dim: repeated int64, packed or not }
      1 num, 2 channels, 3 height, 4 width: the legacy 4-D shape, used without `shape`
      5 data       repeated float: packed, [count * 4 bytes], or one 32-bit field per float
      8 double_data  repeated double, the same two ways
      6 diff, 9 double_diff: gradients, skipped

Of bvlc_alexnet's layers only conv1..conv5 and fc6..fc8 have blobs, two each:
weights and biases. They change to this graph's layout (alexnet.py) so:

    conv    [out, in / groups, kh, kw]    -> [kh, kw, in / groups, out]
            (Caffe's group g uses output channels g*out/groups.., as tf.split in alexnet.py)
    fc6     [4096, 256 * 6 * 6], columns in Caffe's (c, h, w) flatten of pool5 [256, 6, 6]
            -> [6 * 6 * 256, 4096], rows in this graph's (h, w, c) flatten of pool5 [6, 6, 256]
    fc7/8   [out, in]                     -> [in, out]
    biases  [out]                         -> [out]

In the legacy 4-D shape an fc layer's weights are (1, 1, out, in) and biases
(1, 1, 1, out), as Caffe's Blob::ShapeEquals reads them.

Decisions:

* double_data is converted to float32 (Caffe writes it for a double-precision
  net); a value beyond float32's range becomes inf and is refused as non-finite.
  A blob with both data and double_data is refused.
* Layers without blobs (data, relu, norm, pool, drop, prob, loss, ...) are
  ignored. A layer with blobs that the graph does not have is refused, as are
  two layers of one name and a file that mixes `layer` and `layers`.
* 2013 files (V0 layers inside V1 ones) are refused: Caffe's
  upgrade_net_proto_binary turns them into a current file.

Safety. The file is memory-mapped and walked in place: blob data becomes an
array by np.frombuffer over exactly its bytes, and the only copy is the one
into this project's layout. Every length is checked against the bytes left in
its enclosing message before use; varints are at most 10 bytes and 64 bits; the
reader descends only into the four messages above (depth at most 4), so no
nesting can make it recurse; and there are limits on the file size, the number
of fields, layers, blobs per layer and axes per blob. Every problem is one
weight_files.WeightFileError naming the file, the layer, expected against
found, and what to do.

    layers = read_caffemodel('weights/bvlc_alexnet.caffemodel', alexnet.expected_weight_shapes)
    weight_files.save_npz('weights/bvlc_alexnet_from_caffe.npz', layers)
    mean = read_mean_image('weights/imagenet_mean.binaryproto')   # -> [3, 256, 256] BGR

This module needs only NumPy (not TensorFlow, not the protobuf package).
"""
from __future__ import annotations

import math
import mmap
import os

import numpy as np

from weight_files import WeightFileError

BVLC_ALEXNET_SHA1 = '9116a64c0fbe4459d18f4bb6b56d647b63920377'
IMAGENET_MEAN_SHA1 = '63e4652e656abc1e87b7a8339a7e02fca63a2c0c'
MEAN_IMAGE_SHAPE = (3, 256, 256)   # BGR, the 256x256 images bvlc_alexnet's crops came from
CLASSIFIER = 'fc8'                 # the layer whose bias count is the number of classes

GET_CAFFEMODEL_HINT = ('use the original bvlc_alexnet.caffemodel from the BVLC model zoo '
                       '(SHA-1 %s)' % BVLC_ALEXNET_SHA1)
GET_MEAN_HINT = ("use imagenet_mean.binaryproto from Caffe's data/ilsvrc12/get_ilsvrc_aux.sh "
                 '(SHA-1 %s)' % IMAGENET_MEAN_SHA1)

# Limits; the real files need far less.
MAX_FILE_BYTES = 1 << 30        # bvlc_alexnet.caffemodel: 243,862,418 bytes
MAX_FIELDS = 1000000            # protobuf fields walked in one file (a run of floats counts once)
MAX_LAYERS = 1000               # bvlc_alexnet's train_val net: 25
MAX_BLOBS_PER_LAYER = 16        # a weighted layer has 2
MAX_AXES = 32                   # Caffe's kMaxBlobAxes
MAX_NAME_BYTES = 1024
MAX_VARINT_BYTES = 10           # 64 bits, 7 a byte

# Field numbers of caffe.proto.
NET_LAYER, NET_V1_LAYERS = 100, 2
LAYER_NAME, LAYER_BLOBS = 1, 7
V1_NAME, V1_BLOBS, V1_V0_LAYER = 4, 6, 1
BLOB_LEGACY_SHAPE = (1, 2, 3, 4)   # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


class _Bad(Exception):
    """A problem in the bytes; read_* add the file name and what to do."""

    def __init__(self, message, advice=None):
        Exception.__init__(self, message)
        self.advice = advice


class _Walk(object):
    """The bytes of one mapped file and a budget of fields to read from them."""

    def __init__(self, buffer):
        self.buffer = buffer                          # the mmap: indexing gives ints
        self.array = np.frombuffer(buffer, np.uint8)  # the same bytes, for NumPy views
        self.fields_left = MAX_FIELDS

    def varint(self, pos, end):
        """(value, position after it) of the varint at pos, within end."""
        value = 0
        for i in range(MAX_VARINT_BYTES):
            if pos >= end:
                raise _Bad('a number is cut off at byte %d' % pos)
            byte = self.buffer[pos]
            pos += 1
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if value >> 64:
                    raise _Bad('the number ending at byte %d has more than 64 bits' % pos)
                return value, pos
        raise _Bad('the number at byte %d is longer than %d bytes' % (pos - MAX_VARINT_BYTES,
                                                                       MAX_VARINT_BYTES))

    def field(self, pos, end, message):
        """Reads the field at pos of a message ending at end.

        Returns (number, wire type, value, start, stop): value is the number for
        a varint, else the payload's size; the payload is bytes start..stop; the
        next field starts at stop.
        """
        self.fields_left -= 1
        if self.fields_left < 0:
            raise _Bad('more than %d protobuf fields: not a Caffe model' % MAX_FIELDS)
        key_pos = pos
        key, pos = self.varint(pos, end)
        number, wire = key >> 3, key & 7
        if number == 0 or number >= 1 << 29:
            raise _Bad('%s has a field numbered %d at byte %d (protobuf allows 1..2**29-1)'
                       % (message, number, key_pos))
        if wire == VARINT:
            value, stop = self.varint(pos, end)
            return number, wire, value, stop, stop
        if wire == LENGTH_DELIMITED:
            size, pos = self.varint(pos, end)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise _Bad('%s has field %d of wire type %d at byte %d (%s)'
                       % (message, number, wire, key_pos,
                          'a protobuf group, which caffe.proto never uses' if wire in (3, 4)
                          else 'no such wire type'))
        if size > end - pos:
            raise _Bad('%s field %d at byte %d says it holds %d bytes, but only %d are left in it'
                       % (message, number, key_pos, size, end - pos))
        return number, wire, size, pos, pos + size

    def fixed_run(self, pos, end, key_byte, width):
        """Counts the records [key_byte, width bytes] from pos on: a repeated float or
        double field written unpacked, one field per value. Read in growing chunks, so
        short runs cost little and long ones are found at NumPy's speed."""
        record = 1 + width
        available = (end - pos) // record
        count, chunk = 0, 64
        while count < available:
            take = min(chunk, available - count)
            first = pos + count * record
            keys = self.array[first:first + take * record:record]
            mismatch = np.flatnonzero(keys != key_byte)
            if mismatch.size:
                return count + int(mismatch[0])
            count += take
            chunk *= 2
        return count


class _Blob(object):
    """One BlobProto, read in place: its shape and where its values are."""

    def __init__(self, shape, legacy, pieces, count, where):
        self.shape = shape          # tuple of ints, as stored
        self.legacy = legacy        # True: the 4-D num/channels/height/width shape
        self.pieces = pieces        # [(dtype, offset, count) or ndarray]
        self.count = count
        self.where = where

    def values(self, walk):
        """The values as a 1-D array: a view of the mapped file when stored packed in one piece."""
        arrays = []
        for piece in self.pieces:
            if isinstance(piece, np.ndarray):
                arrays.append(piece)
            else:
                dtype, offset, count = piece
                arrays.append(np.frombuffer(walk.buffer, dtype, count, offset))
        if not arrays:
            return np.zeros(0, np.float32)
        values = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        if values.dtype.itemsize == 8:
            with np.errstate(over='ignore', invalid='ignore'):   # inf or NaN: refused below
                values = values.astype(np.float32)
        return values


def _signed(value, bits=64):
    return value - (1 << 64) if value >= 1 << (bits - 1) else value


def _dims(walk, start, end, where):
    """The dims of a BlobShape, packed or not."""
    dims = []
    pos = start
    while pos < end:
        number, wire, value, vstart, pos = walk.field(pos, end, where + ' shape')
        if number != SHAPE_DIM:
            continue
        if wire == VARINT:
            found = [value]
        elif wire == LENGTH_DELIMITED:
            found, p = [], vstart
            while p < pos and len(dims) + len(found) <= MAX_AXES:
                dim, p = walk.varint(p, pos)
                found.append(dim)
        else:
            raise _Bad('%s: shape dims have wire type %d, not a number' % (where, wire))
        dims.extend(found)
        if len(dims) > MAX_AXES:
            raise _Bad('%s has more than %d axes (Caffe allows %d)' % (where, MAX_AXES, MAX_AXES))
    for dim in dims:
        if _signed(dim) < 0:
            raise _Bad('%s has a negative dimension %d' % (where, _signed(dim)))
    return dims


def _blob(walk, start, end, where):
    """Reads the BlobProto in bytes start..end."""
    dims, has_shape = [], False
    legacy = [None] * 4
    floats, doubles = [], []
    pos = start
    while pos < end:
        key_pos = pos
        number, wire, value, vstart, pos = walk.field(pos, end, where)
        if number == BLOB_SHAPE:
            if wire != LENGTH_DELIMITED:
                raise _Bad('%s: shape has wire type %d, not a message' % (where, wire))
            has_shape = True
            dims.extend(_dims(walk, vstart, pos, where))   # a repeated message merges
            if len(dims) > MAX_AXES:
                raise _Bad('%s has more than %d axes' % (where, MAX_AXES))
        elif number in BLOB_LEGACY_SHAPE:
            if wire != VARINT:
                raise _Bad('%s: %s has wire type %d, not a number'
                           % (where, ('num', 'channels', 'height', 'width')[number - 1], wire))
            legacy[number - 1] = _signed(value)
        elif number in (BLOB_DATA, BLOB_DOUBLE_DATA):
            width, wire_type, dtype, pieces = ((4, FIXED32, '<f4', floats) if number == BLOB_DATA
                                               else (8, FIXED64, '<f8', doubles))
            if wire == LENGTH_DELIMITED:               # packed: count * width bytes
                if value % width:
                    raise _Bad('%s: packed %s of %d bytes, not a multiple of %d'
                               % (where, 'data' if width == 4 else 'double_data', value, width))
                pieces.append((dtype, vstart, value // width))
            elif wire == wire_type:                    # unpacked: one field per value
                key_byte = number << 3 | wire
                if vstart == key_pos + 1 and walk.buffer[key_pos] == key_byte:
                    count = walk.fixed_run(key_pos, end, key_byte, width)
                    records = walk.array[key_pos:key_pos + count * (1 + width)]
                    pieces.append(records.reshape(count, 1 + width)[:, 1:].copy()
                                  .view(dtype).reshape(-1))
                    pos = key_pos + count * (1 + width)
                else:
                    pieces.append((dtype, vstart, 1))
            else:
                raise _Bad('%s: %s has wire type %d' % (where, 'data' if width == 4
                                                        else 'double_data', wire))
    if floats and doubles:
        raise _Bad('%s holds both data and double_data' % where)
    if has_shape:
        shape, is_legacy = tuple(dims), False
    elif any(v is not None for v in legacy):
        shape, is_legacy = tuple(0 if v is None else v for v in legacy), True
        if min(shape) < 0:
            raise _Bad('%s has a negative legacy dimension %s' % (where, shape))
    else:
        raise _Bad('%s has no shape (neither shape nor num/channels/height/width)' % where)
    count = 1
    for dim in shape:
        count *= dim
    pieces = floats or doubles
    stored = sum(len(p) if isinstance(p, np.ndarray) else p[2] for p in pieces)
    if stored != count:
        raise _Bad('%s holds %d values, but its shape %s needs %d'
                   % (where, stored, shape, count))
    return _Blob(shape, is_legacy, pieces, count, where)


def _show(name):
    """A layer name for a one-line message."""
    if name.replace('_', '').replace('-', '').replace('/', '').isalnum() and len(name) < 80:
        return name
    return repr(name[:80])


def _layer(walk, start, end, v1, index):
    """(name, [(start, stop) of each blob]) of one LayerParameter or V1LayerParameter."""
    name_field, blobs_field = (V1_NAME, V1_BLOBS) if v1 else (LAYER_NAME, LAYER_BLOBS)
    what = 'layer #%d' % index
    name, blobs = None, []
    pos = start
    while pos < end:
        number, wire, value, vstart, pos = walk.field(pos, end, what)
        if v1 and number == V1_V0_LAYER:
            raise _Bad('%s is in Caffe\'s V0 format of 2013' % what,
                       "upgrade it with Caffe's upgrade_net_proto_binary, or "
                       + GET_CAFFEMODEL_HINT)
        if number not in (name_field, blobs_field):
            continue
        if wire != LENGTH_DELIMITED:
            raise _Bad('%s: field %d has wire type %d, not %s'
                       % (what, number, wire, 'a string' if number == name_field else 'a blob'))
        if number == name_field:
            if value > MAX_NAME_BYTES:
                raise _Bad('%s has a name of %d bytes (at most %d)' % (what, value, MAX_NAME_BYTES))
            name = bytes(walk.buffer[vstart:pos]).decode('utf-8', 'replace')
        else:
            blobs.append((vstart, pos))
            if len(blobs) > MAX_BLOBS_PER_LAYER:
                raise _Bad('%s has more than %d blobs' % (what, MAX_BLOBS_PER_LAYER))
    return name, blobs


def _net(walk, end):
    """{name: [_Blob, ...]} of the layers that have blobs, in file order."""
    layers = {}
    kinds, count = set(), 0
    pos = 0
    while pos < end:
        number, wire, value, vstart, pos = walk.field(pos, end, 'NetParameter')
        if number not in (NET_LAYER, NET_V1_LAYERS):
            continue
        if wire != LENGTH_DELIMITED:
            raise _Bad('NetParameter field %d (a layer) has wire type %d, not a message'
                       % (number, wire))
        count += 1
        if count > MAX_LAYERS:
            raise _Bad('more than %d layers' % MAX_LAYERS)
        kinds.add(number)
        if len(kinds) > 1:
            raise _Bad("the file mixes Caffe's 'layer' and old 'layers' fields")
        name, spans = _layer(walk, vstart, pos, number == NET_V1_LAYERS, count)
        if not spans:
            continue                        # relu, norm, pool, data, ...: nothing to load
        if name is None:
            raise _Bad('layer #%d has %d blobs but no name' % (count, len(spans)))
        if name in layers:
            raise _Bad('two layers named %s have blobs' % _show(name))
        layers[name] = [_blob(walk, s, e, 'layer %s blob %d' % (_show(name), i))
                        for i, (s, e) in enumerate(spans)]
    if not count:
        raise _Bad('no Caffe layers found (not a NetParameter)')
    return layers


class _Mapped(object):
    """The file memory-mapped read-only, as a _Walk; closed on exit."""

    def __init__(self, path, hint):
        self.path, self.hint = path, hint

    def __enter__(self):
        path = self.path
        if not os.path.isfile(path):
            raise WeightFileError('%s: no such file; %s' % (path, self.hint))
        try:
            with open(path, 'rb') as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise WeightFileError('%s: empty file; %s' % (path, self.hint))
                if size > MAX_FILE_BYTES:
                    raise WeightFileError('%s: %d bytes, more than the %d this reader accepts; %s'
                                          % (path, size, MAX_FILE_BYTES, self.hint))
                self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as err:
            raise WeightFileError('%s: cannot read (%s); %s' % (path, err, self.hint)) from None
        self.walk = _Walk(self.map)
        return self.walk

    def __exit__(self, *exc):
        self.walk.array = self.walk.buffer = None   # NumPy's view would keep the map open
        try:
            self.map.close()
        except BufferError:   # a view is still referenced (by a traceback): unmapped when freed
            pass
        return False


def _error(path, err, hint):
    return WeightFileError('%s: %s; %s' % (path, err, err.advice or hint))


def _caffe_shape(shape):
    """This project's shape of a weights/biases array -> the same blob's shape in Caffe."""
    if len(shape) == 4:                           # [kh, kw, in/groups, out]
        return (shape[3], shape[2], shape[0], shape[1])
    if len(shape) == 2:                           # [in, out]
        return (shape[1], shape[0])
    return tuple(shape)


def _fits(blob, want):
    """Whether a blob's stored shape is `want` (Caffe's layout); a legacy 4-D shape
    pads `want` with leading 1s, as Caffe's Blob::ShapeEquals does."""
    if blob.legacy:
        return len(want) <= 4 and blob.shape == (1,) * (4 - len(want)) + tuple(want)
    return blob.shape == tuple(want)


def _pool_geometry(expected):
    """(first FC layer, (channels, height, width) of what it reads): the last conv
    layer's output after pooling, which Caffe flattens as (c, h, w). From the shapes
    alone: channels = the last conv layer's outputs; height = width = sqrt(inputs / channels).
    (None, None) without conv layers."""
    channels = None
    for layer, (weights, _) in expected.items():
        if len(weights) == 4:
            channels = weights[3]
        elif len(weights) == 2 and channels:
            side = int(round(math.sqrt(weights[0] // channels)))
            if side * side * channels != weights[0]:
                raise ValueError('%s reads %d inputs, not a square map of %d channels'
                                 % (layer, weights[0], channels))
            return layer, (channels, side, side)
    return None, None


def _to_project(caffe, want, fc_geometry):
    """Caffe's array -> this project's layout: a float32 C-contiguous copy (the one copy)."""
    if len(want) == 4:                      # [out, in/g, kh, kw] -> [kh, kw, in/g, out]
        moved = caffe.reshape(_caffe_shape(want)).transpose(2, 3, 1, 0)
    elif len(want) == 2 and fc_geometry:    # [out, c*h*w] -> [h*w*c, out]
        channels, height, width = fc_geometry
        moved = caffe.reshape(want[1], channels, height, width).transpose(2, 3, 1, 0)
    elif len(want) == 2:                    # [out, in] -> [in, out]
        moved = caffe.reshape(want[1], want[0]).T
    else:
        moved = caffe
    # Always a copy: a view would keep the whole file mapped, and NumPy < 1.22 does not
    # even stop the map from closing under it.
    return np.array(moved, dtype=np.float32, order='C').reshape(want)


def _all_finite(array):
    flat = array.reshape(-1)
    step = 1 << 20   # checked a million at a time: no 37 MB mask for fc6
    return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))


def read_caffemodel(path, expected, classifier=CLASSIFIER):
    """Reads a Caffe .caffemodel into ``{layer: (weights, biases)}`` in this project's layout.

    Args:
      path: the .caffemodel (bvlc_alexnet.caffemodel, or one of the same architecture).
      expected: {layer: (weights shape, biases shape)} in this project's layout, or a
        callable num_classes -> that dict (alexnet.expected_weight_shapes), called
        with the bias count of `classifier` in the file.
      classifier: the layer whose bias count is the number of classes.
    Returns:
      {layer: (weights, biases)} float32 arrays, in `expected`'s order, ready for
      weight_files.save_npz or AlexNet's variables.
    Raises:
      WeightFileError: missing, corrupt, hostile or not this architecture; the one-line
        message names the file, the layer, expected and found, and what to do.
    """
    path = os.fspath(path)
    with _Mapped(path, GET_CAFFEMODEL_HINT) as walk:
        try:
            layers = _net(walk, len(walk.array))
            if callable(expected):
                if classifier not in layers or len(layers[classifier]) < 2:
                    raise _Bad('layer %s with weights and biases is missing (layers with blobs: %s)'
                               % (classifier, ', '.join(map(_show, layers)) or 'none'))
                classes = layers[classifier][1].count
                if classes < 1:
                    raise _Bad('layer %s has no biases, so no classes' % classifier)
                expected = expected(classes)
            result = _check_and_convert(walk, layers, expected)
        except _Bad as err:
            raise _error(path, err, GET_CAFFEMODEL_HINT) from None
    return result


def _check_and_convert(walk, layers, expected):
    unknown = [name for name in layers if name not in expected]
    if unknown:
        raise _Bad('layer %s has blobs, but this graph has no such layer (it has %s)'
                   % (_show(unknown[0]), ', '.join(expected)),
                   'the file is not a bvlc_alexnet model; ' + GET_CAFFEMODEL_HINT)
    missing = [name for name in expected if name not in layers]
    if missing:
        raise _Bad('layer %s is missing (layers with blobs: %s)'
                   % (missing[0], ', '.join(map(_show, layers)) or 'none'))
    first_fc, geometry = _pool_geometry(expected)
    result = {}
    for name, shapes in expected.items():
        blobs = layers[name]
        if len(blobs) != 2:
            raise _Bad('layer %s has %d blobs, this graph expects 2 (weights, biases)'
                       % (name, len(blobs)))
        arrays = []
        for part, blob, want in zip(('weights', 'biases'), blobs, shapes):
            caffe_want = _caffe_shape(want)
            if not _fits(blob, caffe_want):
                raise _Bad('layer %s %s have Caffe shape %s%s, this graph expects %s'
                           % (name, part, blob.shape, ' (legacy num/channels/height/width)'
                              if blob.legacy else '', caffe_want),
                           'use a caffemodel of the same architecture and class count; '
                           + GET_CAFFEMODEL_HINT)
            array = _to_project(blob.values(walk), tuple(want),
                                geometry if name == first_fc else None)
            if not _all_finite(array):
                raise _Bad('layer %s %s hold NaN or infinite values' % (name, part),
                           'the file is damaged; ' + GET_CAFFEMODEL_HINT)
            arrays.append(array)
        result[name] = tuple(arrays)
    return result


def read_mean_image(path, shape=MEAN_IMAGE_SHAPE):
    """Reads a BlobProto file (Caffe's imagenet_mean.binaryproto) as float32 [3, 256, 256] BGR.

    A stored shape with leading 1s (Caffe's 1x3x256x256) fits `shape`.

    Raises:
      WeightFileError: missing, corrupt, hostile, non-finite or of another shape.
    """
    path = os.fspath(path)
    shape = tuple(shape)
    with _Mapped(path, GET_MEAN_HINT) as walk:
        try:
            blob = _blob(walk, 0, len(walk.array), 'the mean image')
            stored = blob.shape
            while len(stored) > len(shape) and stored[0] == 1:
                stored = stored[1:]
            if stored != shape:
                raise _Bad('the mean image has shape %s, expected %s (BGR, 256x256)'
                           % (blob.shape, shape))
            mean = np.array(blob.values(walk), dtype=np.float32).reshape(shape)
            if not _all_finite(mean):
                raise _Bad('the mean image holds NaN or infinite values')
        except _Bad as err:
            raise _error(path, err, GET_MEAN_HINT) from None
    return mean
