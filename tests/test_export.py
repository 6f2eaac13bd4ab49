"""Tests for export_model.py: each export, loaded back, gives the in-session graph's outputs.

A 2-class model with random weights (fc6 is still 9216x4096, so one export
takes seconds); the exports are made once per module and shared.
"""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import alexnet
import export_model
import image_files
import inference
import preprocessing
import run_folder
import weight_files
from conftest import exit_error, random_layers, tf

NAMES = ['cat', 'dog']


@pytest.fixture(scope='module')
def layers():
    layers = random_layers(num_classes=2, seed=3)
    weights, biases = layers['fc8']
    # He-scaled random weights give logits near +-100 (softmax all 0 and 1);
    # smaller fc8 weights keep the probabilities in between, where errors show.
    layers['fc8'] = (weights * 0.01, biases)
    return layers


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp('export')
    yield path
    shutil.rmtree(str(path), ignore_errors=True)    # about 2 GB of weights and exports


@pytest.fixture(scope='module')
def npz_path(workdir, layers):
    path = workdir / 'weights.npz'
    weight_files.save_npz(str(path), layers, class_names=NAMES)
    return str(path)


@pytest.fixture(scope='module')
def photos(workdir):
    """Three small photos: RGB and grayscale JPEGs and an RGB PNG, of odd sizes."""
    rng = np.random.RandomState(0)
    rows, cols = np.mgrid[0:300, 0:400]
    smooth = np.stack([rows * 0.8, cols * 0.6, (rows + cols) * 0.35], axis=2)
    photo = np.clip(smooth + rng.uniform(0, 40, smooth.shape), 0, 255).astype(np.uint8)
    files = [(workdir / 'wide.jpg', Image.fromarray(photo[:240, :330])),
             (workdir / 'gray.jpg', Image.fromarray(photo[:300, :260, 1]).convert('L')),
             (workdir / 'tall.png', Image.fromarray(photo[::-1, 50:280]))]
    for path, image in files:
        image.save(str(path))
    return [str(path) for path, _ in files]


@pytest.fixture(scope='module')
def reference(photos, npz_path):
    """(model inputs [3, 227, 227, 3], probabilities [3, 2]) from the in-session graph.

    Images are read with PIL (image_files.read_image), not TensorFlow's
    decoders, so this also checks the export's in-graph decoding.
    """
    with tf.Graph().as_default():
        pixels = tf.placeholder(tf.uint8, [None, None, 3])
        preprocessed = preprocessing.preprocess_for_eval(pixels)
        x = tf.placeholder(tf.float32, [None, 227, 227, 3])
        model = alexnet.AlexNet(x, num_classes=2)
        probabilities = tf.nn.softmax(model.fc8)
        with tf.Session() as session:
            batch = np.stack([session.run(preprocessed, {pixels: image_files.read_image(p)})
                              for p in photos])
            inference.restore_weights(session, model, npz_path)
            return batch, session.run(probabilities, {x: batch})


@pytest.fixture(scope='module')
def npz_export(workdir, npz_path):
    """Exports through the real command line, as a user would."""
    out = workdir / 'exports' / 'from_npz'
    export_model.main(['--weights', npz_path, '--out', str(out)])
    return out


@pytest.fixture(scope='module')
def run_dir(workdir, npz_path):
    """A fine-tuning run folder: checkpoints/ written by tf.train.Saver, class_names.txt."""
    run = workdir / 'logs' / 'run1'
    os.makedirs(str(run / 'checkpoints'))
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [None, 227, 227, 3])
        model = alexnet.AlexNet(x, num_classes=2)
        tf.train.get_or_create_global_step()
        optimizer = tf.train.MomentumOptimizer(0.01, 0.9)   # adds slot variables, as training does
        optimizer.minimize(tf.reduce_mean(model.fc8))
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            inference.restore_weights(session, model, npz_path)
            tf.train.Saver().save(session, str(run / 'checkpoints' / 'model.ckpt'),
                                  global_step=7)
    run_folder.write_class_names(str(run), NAMES)
    return run


def run_saved_model(export_dir, photos):
    """Loads a SavedModel in a new graph and runs its serving signature on image files."""
    encoded = []
    for path in photos:
        with open(path, 'rb') as f:
            encoded.append(f.read())
    with tf.Graph().as_default(), tf.Session() as session:
        meta_graph = tf.saved_model.loader.load(
            session, [tf.saved_model.tag_constants.SERVING], str(export_dir))
        signature = meta_graph.signature_def['serving_default']
        fetches = {key: info.name for key, info in signature.outputs.items()}
        return session.run(fetches, {signature.inputs['images'].name: encoded})


def run_frozen_graph(path, batch):
    graph_def = tf.GraphDef()
    with open(str(path), 'rb') as f:
        graph_def.ParseFromString(f.read())
    # Grappler copies the 230 MB of constants in each of its passes (15 s on the
    # first run); without it the numbers are the same and the test is fast.
    config = tf.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    with tf.Graph().as_default():
        tf.import_graph_def(graph_def, name='')
        with tf.Session(config=config) as session:
            probabilities = session.run('probabilities:0', {'input:0': batch})
    return probabilities, graph_def


# --- From an .npz weight file ---------------------------------------------------

def test_reference_probabilities_are_not_saturated(reference):
    _, probabilities = reference
    assert probabilities.shape == (3, 2)
    assert np.all((probabilities > 0.01) & (probabilities < 0.99))


def test_saved_model_matches_the_in_session_graph(npz_export, photos, reference):
    outputs = run_saved_model(npz_export / 'saved_model', photos)
    _, expected = reference
    np.testing.assert_allclose(outputs['probabilities'], expected, atol=1e-5)
    assert outputs['classes'].shape == (3, 2)                       # top k = 2 of 2 classes
    np.testing.assert_array_equal(outputs['classes'][:, 0], expected.argmax(axis=1))
    np.testing.assert_allclose(outputs['scores'], np.sort(expected, axis=1)[:, ::-1], atol=1e-5)
    top_names = [[name.decode() for name in row] for row in outputs['class_names']]
    assert top_names == [[NAMES[i] for i in row] for row in outputs['classes']]


def test_saved_model_signature(npz_export):
    with tf.Graph().as_default(), tf.Session() as session:
        meta_graph = tf.saved_model.loader.load(
            session, [tf.saved_model.tag_constants.SERVING], str(npz_export / 'saved_model'))
    signature = meta_graph.signature_def['serving_default']
    assert signature.method_name == tf.saved_model.signature_constants.PREDICT_METHOD_NAME
    assert list(signature.inputs) == ['images']
    assert signature.inputs['images'].dtype == tf.string.as_datatype_enum
    assert sorted(signature.outputs) == ['class_names', 'classes', 'probabilities', 'scores']


def test_class_names_are_written_and_an_asset(npz_export):
    assert (npz_export / 'class_names.txt').read_text() == 'cat\ndog\n'
    assert (npz_export / 'saved_model' / 'assets' / 'class_names.txt').read_text() == 'cat\ndog\n'


def test_frozen_graph_matches_the_in_session_graph(npz_export, reference):
    batch, expected = reference
    probabilities, graph_def = run_frozen_graph(npz_export / 'frozen_graph.pb', batch)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    ops = {node.op for node in graph_def.node}
    assert not ops & {'VariableV2', 'VarHandleOp', 'Assign'}        # weights are constants now
    assert 'DecodeJpeg' not in ops                                  # input is preprocessed


# --- From a fine-tuning checkpoint ----------------------------------------------

def test_run_folder_checkpoint_exports_identically(run_dir, workdir, photos,
                                                   npz_export):
    out = workdir / 'exports' / 'from_run'
    written = export_model.export(str(run_dir), str(out), formats=['savedmodel'])
    assert sorted(written) == ['class_names', 'savedmodel']
    assert (out / 'class_names.txt').read_text() == 'cat\ndog\n'     # from the run folder
    from_checkpoint = run_saved_model(written['savedmodel'], photos)
    from_npz = run_saved_model(npz_export / 'saved_model', photos)
    for key in ('probabilities', 'classes', 'class_names'):
        np.testing.assert_array_equal(from_checkpoint[key], from_npz[key])


def test_checkpoint_prefix_exports_frozen_only(run_dir, workdir, reference, capsys):
    prefix = run_dir / 'checkpoints' / 'model.ckpt-7'
    out = workdir / 'exports' / 'from_prefix'
    export_model.main(['--weights', str(prefix), '--out', str(out), '--format', 'frozen'])
    assert sorted(os.listdir(str(out))) == ['class_names.txt', 'frozen_graph.pb']
    batch, expected = reference
    probabilities, _ = run_frozen_graph(out / 'frozen_graph.pb', batch)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert 'frozen graph:' in capsys.readouterr().out


# --- Bad input: one clear line ----------------------------------------------------

def _error_of(argv):
    return exit_error(export_model.main, argv)


def test_missing_source(tmp_path):
    message = _error_of(['--weights', str(tmp_path / 'nothing.npz'), '--out', str(tmp_path / 'o')])
    assert 'neither a weight file nor a checkpoint' in message
    assert not (tmp_path / 'o').exists()


def test_random_weights_are_not_exported(tmp_path):
    assert 'would export random weights' in _error_of(['--weights', 'none', '--out',
                                                        str(tmp_path / 'o')])


def test_non_finite_weights_are_not_exported_and_leave_nothing(tmp_path, layers):
    broken = dict(layers, fc7=(layers['fc7'][0].copy(), layers['fc7'][1]))
    broken['fc7'][0][3, 4] = np.nan
    path = str(tmp_path / 'diverged.npz')
    np.savez(path, **{'%s/%s' % (layer, part): value for layer, values in broken.items()
                      for part, value in zip(('weights', 'biases'), values)})
    message = _error_of(['--weights', path, '--out', str(tmp_path / 'o')])
    assert 'fc7' in message and ('finite' in message or 'NaN' in message)
    assert sorted(os.listdir(str(tmp_path))) == ['diverged.npz']


def test_out_folder_not_empty(tmp_path, npz_path):
    (tmp_path / 'old.txt').write_text('x')
    message = _error_of(['--weights', npz_path, '--out', str(tmp_path)])
    assert 'already exists' in message


def test_incomplete_weight_file(tmp_path, layers):
    path = tmp_path / 'partial.npz'
    weight_files.save_npz(str(path), {'conv1': layers['conv1'], 'fc8': layers['fc8']})
    message = _error_of(['--weights', str(path), '--out', str(tmp_path / 'o')])
    assert 'layer conv2 is missing' in message


def test_unknown_format(tmp_path, npz_path):
    with pytest.raises(SystemExit) as exit_info:
        export_model.parse_args(['--weights', npz_path, '--out', str(tmp_path),
                                 '--format', 'savedmodel,onnx'])
    assert exit_info.value.code == 2
    assert export_model.parse_args(['--weights', 'w', '--out', 'o']).format == [
        'savedmodel', 'frozen']
