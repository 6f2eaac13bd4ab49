"""Writes Caffe files for the tests: .caffemodel (NetParameter) and .binaryproto (BlobProto).

Written field by field in protobuf's wire format from caffe.proto's field numbers
(see caffemodel.py's docstring), independently of caffemodel.py's reader, in
every layout a real file may have: `layer` (LayerParameter, 2015 on) or `layers`
(V1LayerParameter, 2014, like bvlc_alexnet.caffemodel); shapes as BlobShape or the
legacy num/channels/height/width; floats packed or one field each; or doubles.
"""
import math

import numpy as np

# bvlc_alexnet's train_val layers in order: (name, V2 type, V1 type enum, weighted).
_V1_TYPES = {'Data': 5, 'Convolution': 4, 'ReLU': 18, 'LRN': 15, 'Pooling': 17,
             'InnerProduct': 14, 'Dropout': 6, 'SoftmaxWithLoss': 21}
_BLOBLESS_AFTER = {
    'conv1': [('relu1', 'ReLU'), ('norm1', 'LRN'), ('pool1', 'Pooling')],
    'conv2': [('relu2', 'ReLU'), ('norm2', 'LRN'), ('pool2', 'Pooling')],
    'conv3': [('relu3', 'ReLU')],
    'conv4': [('relu4', 'ReLU')],
    'conv5': [('relu5', 'ReLU'), ('pool5', 'Pooling')],
    'fc6': [('relu6', 'ReLU'), ('drop6', 'Dropout')],
    'fc7': [('relu7', 'ReLU'), ('drop7', 'Dropout')],
    'fc8': [('loss', 'SoftmaxWithLoss')],
}


def varint(value):
    """Protobuf base-128 varint of a value 0 <= value < 2**64 (negatives: two's complement)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number, wire):
    return varint(number << 3 | wire)


def field_varint(number, value):
    return key(number, 0) + varint(value)


def field_bytes(number, payload):
    """A length-delimited field; payload is bytes or a list of chunks (returned as a list)."""
    if isinstance(payload, (bytes, bytearray)):
        return key(number, 2) + varint(len(payload)) + bytes(payload)
    return [key(number, 2) + varint(sum(len(c) for c in payload))] + list(payload)


def _data_chunks(values, packed, double):
    """Field 5 (data, float) or 8 (double_data) holding the flat values."""
    number, dtype, wire = (8, '<f8', 1) if double else (5, '<f4', 5)
    flat = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    if packed:
        return field_bytes(number, [memoryview(flat).cast('B')])
    width = flat.dtype.itemsize
    records = np.empty((flat.size, 1 + width), np.uint8)
    records[:, 0] = number << 3 | wire           # one key byte per value
    records[:, 1:] = flat.view(np.uint8).reshape(-1, width)
    return [memoryview(records.reshape(-1))]


def blob_chunks(values, shape=None, legacy=False, packed=True, double=False):
    """A BlobProto of an array in Caffe's layout, as a list of byte chunks."""
    values = np.asarray(values)
    shape = tuple(values.shape if shape is None else shape)
    if legacy:                                   # num, channels, height, width = 1..4
        padded = (1,) * (4 - len(shape)) + shape
        header = b''.join(field_varint(i + 1, d) for i, d in enumerate(padded))
    else:                                        # shape = 7 { dim = 1, packed }
        dims = b''.join(varint(d) for d in shape)
        header = field_bytes(7, field_bytes(1, dims))
    return [header] + _data_chunks(values, packed, double)


def to_caffe_layout(layers):
    """{layer: (W, b)} in this project's layout -> Caffe's (see caffemodel.py):
    conv [kh, kw, in/g, out] -> [out, in/g, kh, kw]; the first FC layer after the
    convolutions [h*w*c, out] -> [out, c*h*w]; other FC [in, out] -> [out, in]."""
    result, channels, first_fc = {}, None, True
    for name, (weights, biases) in layers.items():
        if weights.ndim == 4:
            channels = weights.shape[3]
            caffe = weights.transpose(3, 2, 0, 1)
        elif first_fc and channels:
            side = int(round(math.sqrt(weights.shape[0] // channels)))
            caffe = (weights.reshape(side, side, channels, -1).transpose(3, 2, 0, 1)
                     .reshape(weights.shape[1], -1))
            first_fc = False
        else:
            caffe = weights.T
        result[name] = (np.ascontiguousarray(caffe), biases)
    return result


def layer_chunks(name, blobs, layout='layer', layer_type='Convolution', bottom=None, top=None):
    """One LayerParameter (layout 'layer') or V1LayerParameter ('layers') message's chunks."""
    if layout == 'layer':
        chunks = [field_bytes(1, name.encode()), field_bytes(2, layer_type.encode())]
        name_blob = 7
        bottom_top = (3, 4)
    else:
        chunks = [field_bytes(4, name.encode()), field_varint(5, _V1_TYPES.get(layer_type, 0))]
        name_blob = 6
        bottom_top = (2, 3)
    if bottom:
        chunks.append(field_bytes(bottom_top[0], bottom.encode()))
    if top:
        chunks.append(field_bytes(bottom_top[1], top.encode()))
    flat = list(chunks)
    for blob in blobs:
        flat.extend(field_bytes(name_blob, blob))
    return field_bytes(100 if layout == 'layer' else 2, flat)


def caffemodel_chunks(layers, layout='layer', legacy=False, packed=True, double=False,
                      blobless=True, caffe_layout=False):
    """A NetParameter of {layer: (W, b)} (project layout unless caffe_layout), as chunks."""
    caffe = layers if caffe_layout else to_caffe_layout(layers)
    chunks = [field_bytes(1, b'AlexNet')]
    if blobless:
        chunks.extend(layer_chunks('data', [], layout, 'Data', top='data'))
    previous = 'data'
    for name, (weights, biases) in caffe.items():
        kind = 'Convolution' if weights.ndim == 4 else 'InnerProduct'
        blobs = [blob_chunks(weights, legacy=legacy, packed=packed, double=double),
                 blob_chunks(biases, legacy=legacy, packed=packed, double=double)]
        chunks.extend(layer_chunks(name, blobs, layout, kind, bottom=previous, top=name))
        previous = name
        for extra, extra_type in (_BLOBLESS_AFTER.get(name, []) if blobless else []):
            chunks.extend(layer_chunks(extra, [], layout, extra_type, bottom=previous, top=extra))
    return chunks


def write_chunks(path, chunks):
    with open(str(path), 'wb') as f:
        for chunk in chunks:
            f.write(chunk)


def write_caffemodel(path, layers, **options):
    """Writes {layer: (W, b)} (this project's layout) as a .caffemodel; options as
    caffemodel_chunks: layout='layer'|'layers', legacy, packed, double, blobless."""
    write_chunks(path, caffemodel_chunks(layers, **options))


def caffemodel_bytes(layers, **options):
    return b''.join(bytes(c) for c in caffemodel_chunks(layers, **options))


def write_blobproto(path, array, legacy=True, packed=True, double=False):
    """Writes an array as a BlobProto file (legacy 4-D shape: 1x3x256x256 for the mean)."""
    shape = array.shape
    if legacy:
        shape = (1,) * (4 - len(shape)) + tuple(shape)
    write_chunks(path, blob_chunks(array.reshape(shape), legacy=legacy, packed=packed,
                                   double=double))


# --- Tiny models for fast tests: bvlc_alexnet's layer names, shapes of a few numbers ---

TINY_SHAPES = {   # this project's layout; conv5 gives 2 channels, fc6 reads a 2x2x2 pool5
    'conv1': ((3, 3, 3, 4), (4,)),
    'conv2': ((3, 3, 2, 6), (6,)),     # 2 groups: 4 inputs / 2
    'conv3': ((3, 3, 6, 4), (4,)),
    'conv4': ((3, 3, 2, 4), (4,)),
    'conv5': ((3, 3, 2, 2), (2,)),
    'fc6': ((8, 5), (5,)),
    'fc7': ((5, 5), (5,)),
    'fc8': ((5, 3), (3,)),
}


def tiny_shapes(num_classes=3):
    """TINY_SHAPES with fc8 of num_classes outputs (for expected= as a callable)."""
    return dict(TINY_SHAPES, fc8=((5, num_classes), (num_classes,)))


def tiny_layers(seed=0, shapes=TINY_SHAPES):
    rng = np.random.RandomState(seed)
    return {name: (rng.standard_normal(w).astype(np.float32),
                   rng.standard_normal(b).astype(np.float32))
            for name, (w, b) in shapes.items()}
