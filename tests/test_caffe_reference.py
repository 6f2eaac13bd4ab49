"""OpenCV's Caffe engine and this graph agree on the same caffemodel, and the check
would catch the plausible conversion bugs (fc6's flatten order, the groups, LRN's alpha)."""
import glob
import hashlib
import os
import re

import numpy as np
import pytest

import alexnet
import caffe_reference
import caffemodel
import weight_files
from caffe_files import write_blobproto, write_caffemodel
from conftest import random_layers

pytest.importorskip('cv2', reason='OpenCV is not installed: pip install %s (requirements-dev.txt)'
                    % caffe_reference.OPENCV_REQUIREMENT)

NUM_CLASSES = 7      # any count: the prototxt's fc8 follows the file
LAYERS = caffe_reference.COMPARED_LAYERS
CLEARLY = 100 * caffe_reference.TOLERANCE   # how far off a wrong conversion must be
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def setup(module_dir):
    """A random-weight caffemodel in bvlc_alexnet.caffemodel's layout (V1 layers, legacy
    shapes), converted the real way (read_caffemodel -> save_npz), and OpenCV's outputs."""
    path = str(module_dir / 'random.caffemodel')
    write_caffemodel(path, random_layers(NUM_CLASSES, seed=3), layout='layers', legacy=True)
    prototxt = str(module_dir / 'deploy.prototxt')
    caffe_reference.write_deploy_prototxt(prototxt, NUM_CLASSES)
    layers = caffemodel.read_caffemodel(path, alexnet.expected_weight_shapes)
    npz = str(module_dir / 'converted.npz')
    weight_files.save_npz(npz, layers)
    images = np.random.RandomState(1).uniform(-120, 130, (3, 227, 227, 3)).astype(np.float32)
    opencv = caffe_reference.opencv_forward(prototxt, path, images, LAYERS + ('prob',))
    return {'caffemodel': path, 'npz': npz, 'layers': layers, 'images': images,
            'opencv': opencv, 'folder': module_dir}


def test_opencv_agrees_with_this_graph(setup):
    ours = caffe_reference.project_forward(setup['npz'], setup['images'], LAYERS + ('prob',))
    assert ours['conv1'].shape == (3, 55, 55, 96) and ours['norm1'].shape == (3, 55, 55, 96)
    assert ours['pool2'].shape == (3, 13, 13, 256) and ours['conv5'].shape == (3, 13, 13, 256)
    assert ours['fc6'].shape == (3, 4096) and ours['fc8'].shape == (3, NUM_CLASSES)
    differences = caffe_reference.differences(ours, setup['opencv'])
    assert sorted(differences) == sorted(LAYERS + ('prob',))
    for name in LAYERS:
        assert differences[name]['max_abs'] > 1, name     # real signal, not zeros
        assert differences[name]['relative'] <= caffe_reference.TOLERANCE, (name, differences)
    np.testing.assert_array_equal(ours['fc8'].argmax(1), setup['opencv']['fc8'].argmax(1))


def converted_wrongly(setup, bug):
    """The converted weights as a converter with `bug` would have made them."""
    layers = dict(setup['layers'])
    if bug == 'fc6 flattened in (c, h, w) order':
        # Caffe's fc6 merely transposed: rows in Caffe's (c, h, w) order
        weights, biases = layers['fc6']
        layers['fc6'] = (weights.reshape(6, 6, 256, -1).transpose(2, 0, 1, 3).reshape(9216, -1),
                         biases)
    elif bug == 'conv2 groups swapped':
        weights, biases = layers['conv2']
        layers['conv2'] = (np.concatenate([weights[..., 128:], weights[..., :128]], axis=3),
                           np.concatenate([biases[128:], biases[:128]]))
    path = str(setup['folder'] / 'wrong.npz')
    weight_files.save_npz(path, layers)
    return path


@pytest.mark.parametrize('bug, layer', [('fc6 flattened in (c, h, w) order', 'fc6'),
                                        ('conv2 groups swapped', 'pool2'),
                                        ('LRN alpha not divided by 5', 'norm1')])
def test_the_check_catches(setup, monkeypatch, bug, layer):
    if bug.startswith('LRN'):
        monkeypatch.setattr(alexnet, 'LRN_ALPHA', 1e-4)      # Caffe's alpha as TF's
        weights = setup['npz']
    else:
        weights = converted_wrongly(setup, bug)
    ours = caffe_reference.project_forward(weights, setup['images'], (layer, 'fc8'))
    differences = caffe_reference.differences(ours, setup['opencv'])
    assert differences[layer]['relative'] > CLEARLY, differences
    assert differences['fc8']['relative'] > CLEARLY, differences


def test_deploy_prototxt_matches_the_graph():
    text = caffe_reference.deploy_prototxt(NUM_CLASSES)
    outputs = re.findall(r'name: "(\w+)"\s+type: "(?:Convolution|InnerProduct)".*?'
                         r'num_output: (\d+)', text, re.S)
    shapes = alexnet.expected_weight_shapes(NUM_CLASSES)
    assert [name for name, _ in outputs] == list(alexnet.LAYER_NAMES)
    assert [int(n) for _, n in outputs] == [shapes[name][1][0] for name in alexnet.LAYER_NAMES]
    lrn = re.findall(r'local_size: (\d+) alpha: ([\d.e-]+) beta: ([\d.]+) k: ([\d.]+)', text)
    assert len(lrn) == 2
    for size, alpha, beta, k in lrn:
        assert int(size) == 2 * alexnet.LRN_DEPTH_RADIUS + 1
        assert float(alpha) == pytest.approx(alexnet.LRN_ALPHA * int(size))  # Caffe divides by n
        assert (float(beta), float(k)) == (alexnet.LRN_BETA, alexnet.LRN_BIAS)
    assert re.findall(r'group: (\d+)', text) == ['2', '2', '2']         # conv2, conv4, conv5
    assert text.replace('num_output: %d' % NUM_CLASSES, 'num_output: 1000') == \
        caffe_reference.deploy_prototxt()


@pytest.mark.parametrize('mean_kind', ['image', 'pixel'])
def test_caffe_input(mean_kind):
    rng = np.random.RandomState(4)
    rgb = rng.randint(0, 256, (256, 256, 3)).astype(np.uint8)    # 256x256: the warp keeps it
    mean = (rng.uniform(90, 130, (3, 256, 256)) if mean_kind == 'image'
            else np.array([104.0, 117.0, 123.0])).astype(np.float32)
    got = caffe_reference.caffe_input(rgb, mean)
    bgr = rgb[:, :, ::-1].astype(np.float32)
    full_mean = mean.transpose(1, 2, 0) if mean.ndim == 3 else np.broadcast_to(mean, (256, 256, 3))
    np.testing.assert_allclose(got, (bgr - full_mean)[14:241, 14:241], atol=1e-4)
    # another size is warped to 256x256 whole (no aspect ratio kept): a uniform photo stays so
    flat = caffe_reference.caffe_input(np.full((100, 300, 3), (10, 20, 30), np.uint8), mean)
    uniform = np.array([30, 20, 10], np.float32) - full_mean     # BGR of RGB (10, 20, 30)
    np.testing.assert_allclose(flat, uniform[14:241, 14:241], atol=1e-3)
    assert got.shape == flat.shape == (227, 227, 3) and got.dtype == np.float32


def test_compare_on_photos(setup, tmp_path):
    mean_path = str(tmp_path / 'mean.binaryproto')
    write_blobproto(mean_path, np.random.RandomState(5).uniform(90, 130, (3, 256, 256))
                    .astype(np.float32))
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a photo')
    photos = sorted(glob.glob(os.path.join(REPO, 'images', '*.jpg')))
    assert len(photos) == 6
    result = caffe_reference.compare(setup['caffemodel'], photos + [str(broken)],
                                     mean_path=mean_path, top_k=3, batch_size=4)
    with open(setup['caffemodel'], 'rb') as f:
        assert result['sha1'] == hashlib.sha1(f.read()).hexdigest()
    assert not result['canonical'] and result['num_classes'] == NUM_CLASSES
    assert result['mean'] == mean_path
    assert [entry['image'] for entry in result['images']] == [str(broken)] + photos
    assert 'cannot identify image' in result['images'][0]['error']
    for entry in result['images'][1:]:
        assert [e['index'] for e in entry['ours']] == [e['index'] for e in entry['opencv']]
        assert len(entry['ours']) == 3
        np.testing.assert_allclose([e['prob'] for e in entry['ours']],
                                   [e['prob'] for e in entry['opencv']],
                                   atol=result['layers']['prob']['tolerance']
                                   * result['layers']['prob']['max_abs'])
    assert sorted(result['layers']) == sorted(LAYERS + ('prob',))
    assert all(d['relative'] <= d['tolerance'] for d in result['layers'].values())
    assert all(d['tolerance'] == caffe_reference.TOLERANCE for name, d in result['layers'].items()
               if name != 'prob')
    text = caffe_reference.format_comparison(result)
    assert 'not the BVLC file' in text and 'ABOVE' not in text and 'DIFFERENT' not in text
    assert all(photo in text for photo in photos) and 'error: ' in text
    assert re.search(r'^fc6 +[\d.e+-]+ +[\d.e+-]+ +[\d.e+-]+$', text, re.M)


def test_alexnet_command_checks_a_caffemodel_against_opencv(setup, tmp_path, capsys):
    photo = os.path.join(REPO, 'images', 'llama.jpg')
    assert alexnet.main(['--check-against-opencv', setup['caffemodel'], photo]) == 0
    out = capsys.readouterr().out
    assert photo in out and 'conv1' in out and 'fc8' in out and 'DIFFERENT' not in out
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'')
    assert alexnet.main(['--check-against-opencv', setup['caffemodel'], photo,
                         str(broken)]) == 1
    assert alexnet.main(['--check-against-opencv', str(tmp_path / 'none.caffemodel'),
                         photo]) == 2
    assert capsys.readouterr().err.count('\n') == 1


def test_every_script_takes_a_caffemodel_as_weights(setup):
    import validate_alexnet_on_imagenet as validate
    photo = os.path.join(REPO, 'images', 'llama.jpg')
    from_caffemodel = validate.classify([photo], setup['caffemodel'], top_k=3)
    from_npz = validate.classify([photo], setup['npz'], top_k=3)
    assert [e['index'] for e in from_caffemodel[0]['top']] == [e['index']
                                                              for e in from_npz[0]['top']]
    np.testing.assert_allclose([e['prob'] for e in from_caffemodel[0]['top']],
                               [e['prob'] for e in from_npz[0]['top']], rtol=1e-6)


def test_probabilities_are_allowed_half_the_logits_absolute_tolerance():
    """Softmax moves a probability by at most half the largest change of the logits: the
    prob layer's allowance follows fc8's scale, and only prob's."""
    logits = np.array([[300.0, 299.5, -40.0]])
    moved = logits + [[4e-4, -4e-4, 0.0]]         # fc8 off by 1.3e-6 of its largest value
    probs = [np.exp(z - z.max()) / np.exp(z - z.max()).sum() for z in (logits, moved)]
    got = caffe_reference.differences({'fc8': moved, 'prob': probs[1]},
                                      {'fc8': logits, 'prob': probs[0]})
    assert got['fc8']['tolerance'] == caffe_reference.TOLERANCE
    # 'tolerance' is relative to the layer's largest value, as 'relative' is
    largest = probs[0].max()
    assert got['prob']['tolerance'] == pytest.approx(0.5 * caffe_reference.TOLERANCE * 300 / largest)
    # the probabilities moved by more than TOLERANCE, and within half the logits' change
    assert caffe_reference.TOLERANCE < got['prob']['max_abs_diff'] <= 0.5 * 8e-4
    assert got['prob']['relative'] <= got['prob']['tolerance']
    # small logits: TOLERANCE itself
    small = caffe_reference.differences({'fc8': logits / 1e4, 'prob': probs[0]},
                                        {'fc8': logits / 1e4, 'prob': probs[0]})
    assert small['prob']['tolerance'] == caffe_reference.TOLERANCE
