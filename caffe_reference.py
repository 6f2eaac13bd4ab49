"""OpenCV's Caffe engine as an independent check of this project's AlexNet graph.

The graph in alexnet.py claims to compute what Caffe's bvlc_alexnet computes:
the same LRN constants, the same two groups in conv2/4/5, the same 3x3/2 max
pooling, and fc6 reading pool5 in the order of the converted weights. This
module runs the same weights through a second, unrelated implementation,
OpenCV's ``cv2.dnn.readNetFromCaffe`` (opencv-python-headless 4.x; the 5.x
series has no Caffe importer), which parses the .caffemodel with its own
protobuf reader and runs Caffe's NCHW layers, and compares layer by layer:

    deploy prototxt (bvlc_alexnet_deploy.prototxt) + .caffemodel -> OpenCV -> conv1 .. prob
    .caffemodel -> caffemodel.read_caffemodel -> .npz -> AlexNet.load_initial_weights -> conv1..fc8

tests/test_caffe_reference.py does it with random weights written as a
caffemodel; compare() does it for a user who has the real
bvlc_alexnet.caffemodel, on their own photos, and reports both engines' top 5
and the largest difference at each compared layer:

    result = caffe_reference.compare('weights/bvlc_alexnet.caffemodel', ['images/llama.jpg'])
    print(caffe_reference.format_comparison(result))

Two details of Caffe matter here. Its ReLUs run in place (top = bottom), so
once the net has run, the blob `conv1` holds conv1's output after ReLU; OpenCV,
asked for layer conv1, gives the output before it. opencv_forward applies that
ReLU, so every compared tensor is what this graph's layer attributes hold.
And Caffe's blobs are NCHW with BGR channels: images go in as this project's
[N, 227, 227, 3] BGR transposed to [N, 3, 227, 227], and outputs come back
transposed to [N, H, W, C].

Images for compare() are prepared Caffe's way (its convert_imageset and data
layer), not preprocessing.py's: the photo is warped to 256x256 with bilinear
interpolation (cv2.resize, what convert_imageset uses; no aspect ratio kept),
the mean image (imagenet_mean.binaryproto, 256x256 BGR) or the mean pixel is
subtracted, and the central 227x227 is cut out, in BGR order. Both engines get
the same input, so the comparison does not depend on this choice.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

import numpy as np
import cpu_kernels  # noqa: F401  (first: it chooses TensorFlow's CPU kernels)
import tensorflow.compat.v1 as tf

import alexnet
import caffemodel
import class_names
import image_files
import inference
import preprocessing
import weight_files

DEPLOY_PROTOTXT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               'bvlc_alexnet_deploy.prototxt')
OPENCV_REQUIREMENT = 'opencv-python-headless==4.14.0.94'
COMPARED_LAYERS = ('conv1', 'norm1', 'pool2', 'conv5', 'fc6', 'fc8')
# Layers whose ReLU runs in place in the prototxt: OpenCV returns them before it.
RELU_IN_PLACE = ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7')
TOLERANCE = 1e-4       # largest difference allowed, relative to the layer's largest value
CAFFE_SCALE = 256      # Caffe warps every photo to 256x256 before cropping


def deploy_prototxt(num_classes=alexnet.NUM_CLASSES):
    """The text of bvlc_alexnet_deploy.prototxt with fc8's num_output set to num_classes."""
    with open(DEPLOY_PROTOTXT, encoding='utf-8') as f:
        text = f.read()
    head, marker, tail = text.partition('name: "fc8"')
    old = 'num_output: %d' % alexnet.NUM_CLASSES
    if not marker or old not in tail:
        raise ValueError('%s: no fc8 layer with %s' % (DEPLOY_PROTOTXT, old))
    return head + marker + tail.replace(old, 'num_output: %d' % num_classes, 1)


def write_deploy_prototxt(path, num_classes=alexnet.NUM_CLASSES):
    with open(path, 'w', encoding='utf-8') as f:
        f.write(deploy_prototxt(num_classes))


def import_cv2():
    """OpenCV with its Caffe importer, or ImportError saying what to install."""
    try:
        import cv2
    except ImportError:
        raise ImportError('OpenCV is not installed; pip install %s (in requirements-dev.txt)'
                          % OPENCV_REQUIREMENT) from None
    if not hasattr(cv2, 'dnn') or not hasattr(cv2.dnn, 'readNetFromCaffe'):
        raise ImportError('OpenCV %s has no Caffe importer (the 5.x series dropped it); '
                          'pip install %s' % (cv2.__version__, OPENCV_REQUIREMENT))
    return cv2


def opencv_forward(prototxt_path, caffemodel_path, images, layer_names=COMPARED_LAYERS):
    """Runs OpenCV's Caffe engine on a batch.

    Args:
      prototxt_path: the deploy net (deploy_prototxt with the model's class count).
      caffemodel_path: the weights, read by OpenCV's own parser.
      images: float32 [N, 227, 227, 3], BGR minus the mean (this project's input).
      layer_names: Caffe layer names to return; 'prob' for the softmax.
    Returns:
      {layer: float32 array}: [N, H, W, C] for maps, [N, units] for FC layers, each
      after the ReLU Caffe runs in place on it (see the module docstring).
    """
    cv2 = import_cv2()
    net = cv2.dnn.readNetFromCaffe(os.fspath(prototxt_path), os.fspath(caffemodel_path))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    batch = np.ascontiguousarray(np.asarray(images, np.float32).transpose(0, 3, 1, 2))
    net.setInput(batch)                                        # -> [N, 3, 227, 227]
    outputs = net.forward(list(layer_names))
    result = {}
    for name, output in zip(layer_names, outputs):
        output = np.asarray(output, np.float32)
        if output.ndim == 4 and output.shape[2:] != (1, 1):
            output = output.transpose(0, 2, 3, 1)              # NCHW -> NHWC
        else:
            output = output.reshape(len(batch), -1)            # [N, units(, 1, 1)]
        if name in RELU_IN_PLACE:
            output = np.maximum(output, 0)
        result[name] = output
    return result


def project_forward(weights_path, images, layer_names=COMPARED_LAYERS, num_classes=None):
    """Runs this project's graph (alexnet.AlexNet) on a batch.

    Args:
      weights_path: .npy/.npz weight file, loaded with load_initial_weights.
      images: float32 [N, 227, 227, 3], BGR minus the mean.
      layer_names: names from the layer table (conv1, norm1, pool1, ..., fc8) or 'prob'.
      num_classes: fc8's outputs; default: the weight file's.
    Returns:
      {layer: float32 array}, [N, H, W, C] or [N, units].
    """
    if num_classes is None:
        num_classes = inference.num_classes_of(weights_path)
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 227, 227, 3])
        model = alexnet.AlexNet(x, num_classes=num_classes, weights_path=weights_path)
        tensors = {layer.name: layer.output for layer in model.layers}
        tensors['prob'] = tf.nn.softmax(model.fc8)
        unknown = [name for name in layer_names if name not in tensors]
        if unknown:
            raise ValueError('unknown layers %s; choose from %s'
                             % (unknown, ', '.join(sorted(tensors))))
        with tf.Session() as session:
            model.load_initial_weights(session)
            values = session.run([tensors[name] for name in layer_names], {x: images})
    return dict(zip(layer_names, values))


def differences(ours, theirs):
    """{layer: {'max_abs_diff', 'max_abs', 'relative', 'tolerance'}}: the largest
    difference, the largest magnitude (of OpenCV's output), their ratio and the largest
    ratio allowed, for each layer of both."""
    result = {}
    for name in ours:
        if name not in theirs:
            continue
        a = np.asarray(ours[name], np.float64)
        b = np.asarray(theirs[name], np.float64)
        if a.shape != b.shape:
            raise ValueError('%s: this graph gives %s, OpenCV %s' % (name, a.shape, b.shape))
        diff, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
        result[name] = {'max_abs_diff': diff, 'max_abs': scale,
                        'relative': diff / scale if scale else diff, 'tolerance': TOLERANCE}
    if 'prob' in result and 'fc8' in result:
        # A softmax output moves by at most half the largest change of its inputs, so prob
        # is allowed half of fc8's absolute allowance (as a ratio to prob's largest value,
        # as 'relative' is). With logits in the hundreds, as a random-weight net's are,
        # float32's last digits move probabilities by more than TOLERANCE itself.
        result['prob']['tolerance'] = max(
            TOLERANCE, 0.5 * TOLERANCE * result['fc8']['max_abs'] / (result['prob']['max_abs'] or 1))
    return result


# --- Photos, Caffe's way ------------------------------------------------

def caffe_input(rgb, mean):
    """One photo as Caffe's data layer prepared bvlc_alexnet's: [227, 227, 3] BGR - mean.

    Args:
      rgb: uint8 [H, W, 3] RGB (image_files.read_image).
      mean: float32 [3, 256, 256] BGR mean image (caffemodel.read_mean_image), or a
        BGR mean pixel of 3 values.
    """
    cv2 = import_cv2()
    bgr = np.ascontiguousarray(rgb[:, :, ::-1]).astype(np.float32)
    warped = cv2.resize(bgr, (CAFFE_SCALE, CAFFE_SCALE), interpolation=cv2.INTER_LINEAR)
    mean = np.asarray(mean, np.float32)
    centered = warped - (mean.transpose(1, 2, 0) if mean.ndim == 3 else mean)
    top = (CAFFE_SCALE - preprocessing.IMAGE_SIZE) // 2        # 14: the central crop
    return centered[top:top + preprocessing.IMAGE_SIZE, top:top + preprocessing.IMAGE_SIZE]


def _sha1(path):
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _top(prob, names, top_k):
    order = np.argsort(-prob)[:top_k]
    return [{'index': int(i), 'name': names[i], 'prob': float(prob[i])} for i in order]


def compare(caffemodel_path, image_paths, mean_path=None, top_k=5, batch_size=8):
    """Both engines on the same weights and photos: top-k and layer differences.

    Args:
      caffemodel_path: e.g. weights/bvlc_alexnet.caffemodel.
      image_paths: photos (any format image_files.read_image reads).
      mean_path: imagenet_mean.binaryproto; default: preprocessing's mean pixel.
      top_k: classes to report per image.
      batch_size: photos per forward run.
    Returns:
      dict: 'caffemodel', 'sha1', 'canonical' (the BVLC file?), 'mean', 'opencv'
      (version), 'num_classes', 'images' (per photo: 'image' and 'ours'/'opencv' top-k
      lists of {'index', 'name', 'prob'}, or 'error'), 'layers' ({layer: differences()
      over all photos}, 'prob' included).
    Raises:
      weight_files.WeightFileError: the caffemodel or mean file is unusable.
      ImportError: OpenCV is missing.
    """
    cv2 = import_cv2()
    caffemodel_path = os.fspath(caffemodel_path)
    layers = caffemodel.read_caffemodel(caffemodel_path, alexnet.expected_weight_shapes)
    num_classes = layers['fc8'][1].shape[0]
    if mean_path:
        mean, mean_name = caffemodel.read_mean_image(mean_path), os.fspath(mean_path)
    else:
        mean = np.array(preprocessing.IMAGENET_MEAN_BGR, np.float32)
        mean_name = 'mean pixel %s (BGR)' % (preprocessing.IMAGENET_MEAN_BGR,)
    names = (class_names.imagenet_class_names() if num_classes == alexnet.NUM_CLASSES
             else [str(i) for i in range(num_classes)])
    result = {'caffemodel': caffemodel_path, 'sha1': _sha1(caffemodel_path),
              'mean': mean_name, 'opencv': cv2.__version__, 'num_classes': num_classes,
              'images': [], 'layers': {}}
    result['canonical'] = result['sha1'] == caffemodel.BVLC_ALEXNET_SHA1
    readable = []
    for path in image_paths:
        try:
            readable.append((path, caffe_input(image_files.read_image(path), mean)))
        except image_files.ImageError as err:
            result['images'].append({'image': path, 'error': str(err)})
    folder = tempfile.mkdtemp(prefix='caffe_reference-')
    try:
        npz, prototxt = os.path.join(folder, 'weights.npz'), os.path.join(folder, 'deploy.prototxt')
        weight_files.save_npz(npz, layers)
        del layers
        write_deploy_prototxt(prototxt, num_classes)
        wanted = COMPARED_LAYERS + ('prob',)
        worst = {}
        for start in range(0, len(readable), batch_size):
            chunk = readable[start:start + batch_size]
            batch = np.stack([image for _, image in chunk])
            ours = project_forward(npz, batch, wanted, num_classes)
            theirs = opencv_forward(prototxt, caffemodel_path, batch, wanted)
            for name, diff in differences(ours, theirs).items():
                if name not in worst or diff['max_abs_diff'] > worst[name]['max_abs_diff']:
                    worst[name] = diff
            for i, (path, _) in enumerate(chunk):
                result['images'].append({'image': path,
                                         'ours': _top(ours['prob'][i], names, top_k),
                                         'opencv': _top(theirs['prob'][i], names, top_k)})
        result['layers'] = worst
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def format_comparison(result):
    """The result of compare() as text: per photo both top-k lists, then the layer table."""
    lines = ['%s (SHA-1 %s, %s), %s, OpenCV %s' % (
        result['caffemodel'], result['sha1'],
        'the BVLC file' if result['canonical'] else 'not the BVLC file',
        result['mean'], result['opencv'])]
    for entry in result['images']:
        lines.append(entry['image'])
        if 'error' in entry:
            lines.append('  error: ' + entry['error'])
            continue
        same = [e['index'] for e in entry['ours']] == [e['index'] for e in entry['opencv']]
        lines.append('  %-44s  %-44s%s' % ('this graph', 'OpenCV (Caffe)',
                                           '' if same else '  DIFFERENT ORDER'))
        for a, b in zip(entry['ours'], entry['opencv']):
            lines.append('  %4d %6.2f%% %-30.30s  %4d %6.2f%% %-30.30s' % (
                a['index'], 100 * a['prob'], a['name'], b['index'], 100 * b['prob'], b['name']))
    if result['layers']:
        lines.append('%-6s  %14s  %14s  %12s' % ('layer', 'largest diff', 'largest value',
                                                 'relative'))
        for name, diff in result['layers'].items():
            lines.append('%-6s  %14.6g  %14.6g  %12.3g%s' % (
                name, diff['max_abs_diff'], diff['max_abs'], diff['relative'],
                '' if diff['relative'] <= diff['tolerance'] else '  ABOVE %g' % diff['tolerance']))
    return '\n'.join(line.rstrip() for line in lines)
