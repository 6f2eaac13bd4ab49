"""caffemodel.py: Caffe's .caffemodel and mean image in every layout, checked against
protobuf's own encoder and against index arithmetic done by loops."""
import itertools
import os

import numpy as np
import pytest

import alexnet
import caffemodel
import weight_files
from caffe_files import (TINY_SHAPES, blob_chunks, caffemodel_bytes, caffemodel_chunks,
                         field_bytes, layer_chunks, tiny_layers, tiny_shapes, to_caffe_layout,
                         write_blobproto, write_caffemodel, write_chunks)

LAYOUTS = list(itertools.product(('layer', 'layers'), (False, True), (True, False)))


def layout_id(params):
    layout, legacy, packed = params
    return '-'.join((layout, 'legacy' if legacy else 'shape',
                     'packed' if packed else 'unpacked'))


def owner(array):
    """What an array's memory belongs to: None if to NumPy (not to a memory map)."""
    while isinstance(array, np.ndarray):
        array = array.base
    return array


def assert_layers_equal(got, want):
    assert list(got) == list(want)
    for name in want:
        for part, a, b in zip(('weights', 'biases'), got[name], want[name]):
            assert a.dtype == np.float32 and a.flags['C_CONTIGUOUS'], (name, part)
            assert owner(a) is None, (name, part, 'a view of the closed file')
            np.testing.assert_array_equal(a, b, err_msg='%s %s' % (name, part))


def one_line_error(call, *args, **kwargs):
    with pytest.raises(weight_files.WeightFileError) as err:
        call(*args, **kwargs)
    message = str(err.value)
    assert '\n' not in message
    return message


# --- Caffe's layout -> this project's, by loops over every index ------------

def project_from_caffe_by_loops(caffe, shapes):
    """What read_caffemodel must return, computed element by element from the
    definitions in caffemodel.py's docstring (Caffe's blob layouts)."""
    result, channels, first_fc = {}, None, True
    for name, (w_shape, b_shape) in shapes.items():
        caffe_w, caffe_b = caffe[name]
        out = np.zeros(w_shape, np.float32)
        if len(w_shape) == 4:
            kh, kw, cin, cout = w_shape
            for i, j, c, o in itertools.product(range(kh), range(kw), range(cin), range(cout)):
                out[i, j, c, o] = caffe_w[o, c, i, j]
            channels = cout
        elif first_fc:
            first_fc = False
            side = int(round((w_shape[0] // channels) ** 0.5))
            for h, w, c, o in itertools.product(range(side), range(side), range(channels),
                                                range(w_shape[1])):
                # this graph flattens pool5 as (h, w, c), Caffe as (c, h, w)
                out[(h * side + w) * channels + c, o] = caffe_w[o, (c * side + h) * side + w]
        else:
            for i, o in itertools.product(range(w_shape[0]), range(w_shape[1])):
                out[i, o] = caffe_w[o, i]
        result[name] = (out, np.asarray(caffe_b, np.float32).reshape(b_shape))
    return result


def caffe_shape(shape):
    """A blob's shape in Caffe for an array of `shape` in this project's layout."""
    if len(shape) == 4:                     # [kh, kw, in/g, out] -> [out, in/g, kh, kw]
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(reversed(shape))           # [in, out] -> [out, in]; biases as they are


def random_caffe_layers(shapes, seed=0):
    """Random arrays in Caffe's layout for shapes given in this project's layout."""
    rng = np.random.RandomState(seed)
    return {name: (rng.standard_normal(caffe_shape(w)).astype(np.float32),
                   rng.standard_normal(b).astype(np.float32))
            for name, (w, b) in shapes.items()}


# --- An independent encoder: protobuf's own, on caffe.proto's field numbers ---

def protobuf_classes(packed):
    """NetParameter and friends, built by the protobuf package from a descriptor of the
    caffe.proto fields caffemodel.py reads (floats packed as caffe.proto says, or not)."""
    descriptor_pb2 = pytest.importorskip('google.protobuf.descriptor_pb2')
    from google.protobuf import descriptor_pool, message_factory
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name='caffe_subset_%d.proto' % packed,
                                               package='caffe')

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype,
                            label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if type_name:
                f.type_name = '.caffe.' + type_name
            if repeated and ftype in (field.TYPE_FLOAT, field.TYPE_DOUBLE, field.TYPE_INT64):
                f.options.packed = packed

    message('BlobShape', [('dim', 1, field.TYPE_INT64, True, None)])
    message('BlobProto', [('shape', 7, field.TYPE_MESSAGE, False, 'BlobShape'),
                          ('data', 5, field.TYPE_FLOAT, True, None),
                          ('double_data', 8, field.TYPE_DOUBLE, True, None),
                          ('num', 1, field.TYPE_INT32, False, None),
                          ('channels', 2, field.TYPE_INT32, False, None),
                          ('height', 3, field.TYPE_INT32, False, None),
                          ('width', 4, field.TYPE_INT32, False, None)])
    message('LayerParameter', [('name', 1, field.TYPE_STRING, False, None),
                               ('type', 2, field.TYPE_STRING, False, None),
                               ('bottom', 3, field.TYPE_STRING, True, None),
                               ('top', 4, field.TYPE_STRING, True, None),
                               ('blobs', 7, field.TYPE_MESSAGE, True, 'BlobProto')])
    message('V1LayerParameter', [('bottom', 2, field.TYPE_STRING, True, None),
                                 ('top', 3, field.TYPE_STRING, True, None),
                                 ('name', 4, field.TYPE_STRING, False, None),
                                 ('type', 5, field.TYPE_INT32, False, None),   # an enum
                                 ('blobs', 6, field.TYPE_MESSAGE, True, 'BlobProto')])
    message('NetParameter', [('name', 1, field.TYPE_STRING, False, None),
                             ('layers', 2, field.TYPE_MESSAGE, True, 'V1LayerParameter'),
                             ('layer', 100, field.TYPE_MESSAGE, True, 'LayerParameter')])
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    if hasattr(message_factory, 'GetMessageClass'):           # protobuf >= 4.21
        get = message_factory.GetMessageClass
    else:                                                     # protobuf 3.x (TF 1.15)
        get = message_factory.MessageFactory(pool).GetPrototype
    return get(pool.FindMessageTypeByName('caffe.NetParameter'))


def fill_blob(blob, array, legacy):
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - array.ndim) + array.shape
    else:
        blob.shape.dim.extend(array.shape)
    blob.data.extend(array.reshape(-1).tolist())


def protobuf_caffemodel(caffe, layout, legacy, packed):
    net = protobuf_classes(packed)(name='AlexNet')
    if layout == 'layer':                   # layers without blobs, to be skipped
        net.layer.add(name='data', type='Input')
        net.layer.add(name='relu0', type='ReLU')
    else:
        net.layers.add(name='data', type=5)
        net.layers.add(name='relu0', type=18)
    for name, arrays in caffe.items():
        layer = net.layer.add() if layout == 'layer' else net.layers.add()
        layer.name = name
        layer.bottom.append('x')
        layer.top.append(name)
        for array in arrays:
            fill_blob(layer.blobs.add(), array, legacy)
    return net.SerializeToString()


@pytest.mark.parametrize('params', LAYOUTS, ids=layout_id)
def test_reads_what_protobuf_writes(tmp_path, params):
    layout, legacy, packed = params
    caffe = random_caffe_layers(TINY_SHAPES, seed=1)
    path = tmp_path / 'net.caffemodel'
    path.write_bytes(protobuf_caffemodel(caffe, layout, legacy, packed))
    got = caffemodel.read_caffemodel(path, TINY_SHAPES)
    assert_layers_equal(got, project_from_caffe_by_loops(caffe, TINY_SHAPES))


@pytest.mark.parametrize('params', LAYOUTS, ids=layout_id)
def test_test_writer_agrees_with_protobuf(params):
    layout, legacy, packed = params
    layers = tiny_layers(seed=2)
    net = protobuf_classes(packed)()
    net.ParseFromString(caffemodel_bytes(layers, layout=layout, legacy=legacy, packed=packed))
    stored = net.layer if layout == 'layer' else net.layers
    weighted = [layer for layer in stored if layer.blobs]
    assert [layer.name for layer in weighted] == list(TINY_SHAPES)
    assert len(stored) == 1 + 8 + 15    # data, 8 weighted, relu/norm/pool/drop/loss
    caffe = {}
    for layer in weighted:
        arrays = []
        for blob, want in zip(layer.blobs, TINY_SHAPES[layer.name]):
            shape = caffe_shape(want)
            if legacy:
                assert (blob.num, blob.channels, blob.height, blob.width) == (
                    (1,) * (4 - len(shape)) + shape)
            else:
                assert tuple(blob.shape.dim) == shape
            arrays.append(np.array(blob.data, np.float32).reshape(shape))
        caffe[layer.name] = arrays
    # the writer's Caffe layout, mapped back by the loops, is what it was given
    assert_layers_equal(project_from_caffe_by_loops(caffe, TINY_SHAPES), layers)


@pytest.mark.parametrize('params', LAYOUTS, ids=layout_id)
@pytest.mark.parametrize('double', [False, True], ids=['float', 'double'])
def test_round_trip_every_layout(tmp_path, params, double):
    layout, legacy, packed = params
    layers = tiny_layers(seed=3)
    path = tmp_path / 'net.caffemodel'
    write_caffemodel(path, layers, layout=layout, legacy=legacy, packed=packed, double=double)
    assert_layers_equal(caffemodel.read_caffemodel(path, TINY_SHAPES), layers)


def test_class_count_comes_from_fc8(tmp_path):
    layers = tiny_layers(seed=4, shapes=tiny_shapes(7))
    path = tmp_path / 'net.caffemodel'
    write_caffemodel(path, layers)
    asked = []

    def expected(num_classes):
        asked.append(num_classes)
        return tiny_shapes(num_classes)
    assert_layers_equal(caffemodel.read_caffemodel(path, expected), layers)
    assert asked == [7]


def test_full_size_bvlc_alexnet(tmp_path, bvlc_layers):
    """The real file's size and layout (V1 layers, legacy shapes, packed floats)."""
    path = tmp_path / 'bvlc_alexnet.caffemodel'
    write_caffemodel(path, bvlc_layers, layout='layers', legacy=True)
    # bvlc_alexnet.caffemodel has 243,862,418 bytes; ours lacks only the layer settings
    assert abs(os.path.getsize(str(path)) - 243862418) < 2000
    assert_layers_equal(caffemodel.read_caffemodel(path, alexnet.expected_weight_shapes),
                        bvlc_layers)
    size = os.path.getsize(str(path))
    with open(str(path), 'r+b') as f:
        f.truncate(size // 2)                 # cut inside fc6's data
    message = one_line_error(caffemodel.read_caffemodel, path, alexnet.expected_weight_shapes)
    assert str(path) in message and 'says it holds' in message and 'BVLC model zoo' in message


# --- What a wrong file is told --------------------------------------------

def write_tiny(tmp_path, layers=None, **options):
    path = tmp_path / 'net.caffemodel'
    write_caffemodel(path, tiny_layers() if layers is None else layers, **options)
    return path


def test_wrong_class_count_names_layer_and_shapes(tmp_path):
    path = write_tiny(tmp_path, tiny_layers(shapes=tiny_shapes(4)))
    message = one_line_error(caffemodel.read_caffemodel, path, TINY_SHAPES)
    assert message == ('%s: layer fc8 weights have Caffe shape (4, 5), this graph expects '
                       '(3, 5); use a caffemodel of the same architecture and class count; %s'
                       % (path, caffemodel.GET_CAFFEMODEL_HINT))


def test_legacy_shape_mismatch_says_legacy(tmp_path):
    shapes = dict(TINY_SHAPES, conv1=((3, 3, 3, 5), (5,)))
    message = one_line_error(caffemodel.read_caffemodel, write_tiny(tmp_path, legacy=True), shapes)
    assert 'layer conv1 weights have Caffe shape (4, 3, 3, 3) (legacy num/channels' in message
    assert 'this graph expects (5, 3, 3, 3)' in message


def test_legacy_shape_needs_leading_ones(tmp_path):
    """Caffe reads an fc blob's legacy (num, channels, height, width) as (1, 1, out, in)."""
    caffe = to_caffe_layout(tiny_layers())
    caffe['fc8'] = (np.zeros((2, 1, 3, 5), np.float32), caffe['fc8'][1])   # 2 x (3, 5)
    path = tmp_path / 'net.caffemodel'
    write_chunks(path, caffemodel_chunks(caffe, layout='layers', legacy=True, caffe_layout=True))
    assert 'layer fc8 weights have Caffe shape (2, 1, 3, 5) (legacy' in one_line_error(
        caffemodel.read_caffemodel, path, TINY_SHAPES)


def test_blobless_layers_are_ignored_and_unknown_weighted_ones_refused(tmp_path):
    layers = tiny_layers()
    path = write_tiny(tmp_path, layers, blobless=True)
    assert_layers_equal(caffemodel.read_caffemodel(path, TINY_SHAPES), layers)
    message = one_line_error(caffemodel.read_caffemodel, path,
                             {k: v for k, v in TINY_SHAPES.items() if k != 'conv3'})
    assert 'layer conv3 has blobs, but this graph has no such layer' in message
    assert 'not a bvlc_alexnet model' in message


def test_mixed_layouts_refused(tmp_path):
    chunks = (layer_chunks('relu1', [], 'layer', 'ReLU')
              + layer_chunks('relu2', [], 'layers', 'ReLU'))
    path = tmp_path / 'mixed.caffemodel'
    write_chunks(path, chunks)
    assert "mixes Caffe's 'layer' and old 'layers'" in one_line_error(
        caffemodel.read_caffemodel, path, TINY_SHAPES)


def test_v0_layer_refused_with_the_upgrade_tool(tmp_path):
    path = tmp_path / 'v0.caffemodel'
    path.write_bytes(field_bytes(2, field_bytes(1, field_bytes(1, b'conv1'))))
    message = one_line_error(caffemodel.read_caffemodel, path, TINY_SHAPES)
    assert "V0 format" in message and 'upgrade_net_proto_binary' in message


def test_data_and_double_data_together_refused(tmp_path):
    weights, biases = to_caffe_layout(tiny_layers())['conv1']
    blob = blob_chunks(weights) + list(blob_chunks(weights, double=True)[1:])
    path = tmp_path / 'both.caffemodel'
    write_chunks(path, layer_chunks('conv1', [blob, blob_chunks(biases)]))
    assert 'layer conv1 blob 0 holds both data and double_data' in one_line_error(
        caffemodel.read_caffemodel, path, TINY_SHAPES)


def test_double_beyond_float32_refused(tmp_path):
    layers = tiny_layers()
    layers['fc7'][1][2] = 1.0   # becomes 1e300 below
    path = write_tiny(tmp_path, layers, double=True)
    data = path.read_bytes()
    one = np.float64(1.0).tobytes()
    assert data.count(one) == 1
    path.write_bytes(data.replace(one, np.float64(1e300).tobytes()))
    assert 'layer fc7 biases hold NaN or infinite values' in one_line_error(
        caffemodel.read_caffemodel, path, TINY_SHAPES)


@pytest.mark.parametrize('content, phrase', [
    (b'', 'empty file'),
    (b'\x93NUMPY\x01\x00v\x00{"descr"', 'wire type 3'),
    (b'<html>404</html>', 'NetParameter has field'),
    (b'\x0a\x07AlexNet', 'no Caffe layers found'),
])
def test_not_a_caffemodel(tmp_path, content, phrase):
    path = tmp_path / 'x.caffemodel'
    path.write_bytes(content)
    message = one_line_error(caffemodel.read_caffemodel, path, TINY_SHAPES)
    assert message.startswith(str(path) + ': ') and phrase in message
    assert message.endswith(caffemodel.GET_CAFFEMODEL_HINT)


def test_missing_file(tmp_path):
    message = one_line_error(caffemodel.read_caffemodel, tmp_path / 'no.caffemodel', TINY_SHAPES)
    assert 'no such file' in message and 'BVLC model zoo' in message


# --- The mean image ------------------------------------------------------

@pytest.mark.parametrize('legacy, double', [(True, False), (False, False), (True, True)])
def test_mean_image(tmp_path, legacy, double):
    mean = np.random.RandomState(5).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    path = tmp_path / 'imagenet_mean.binaryproto'
    write_blobproto(path, mean, legacy=legacy, double=double)
    got = caffemodel.read_mean_image(path)
    assert got.dtype == np.float32 and got.shape == (3, 256, 256) and owner(got) is None
    np.testing.assert_array_equal(got, mean)


def test_mean_image_of_another_shape(tmp_path):
    path = tmp_path / 'mean.binaryproto'
    write_blobproto(path, np.zeros((3, 227, 227), np.float32))
    message = one_line_error(caffemodel.read_mean_image, path)
    assert message == ('%s: the mean image has shape (1, 3, 227, 227), expected (3, 256, 256) '
                       '(BGR, 256x256); %s' % (path, caffemodel.GET_MEAN_HINT))
