"""Shared test fixtures: TF 1.x graph mode, and weight files in the real bvlc_alexnet format."""
import os
import shutil
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
tf.logging.set_verbosity(tf.logging.ERROR)


# bvlc_alexnet.npy in the real Python 2 format, written opcode by opcode, lives in
# weight_formats.py (no TensorFlow there, so the fuzz worker can use it too).
from weight_formats import write_py2_weights_npy  # noqa: E402,F401


def random_layers(num_classes=1000, seed=0, scale=None):
    """Random {layer: (W, b)} with bvlc_alexnet's shapes (He-like scale keeps activations sane)."""
    import alexnet
    rng = np.random.RandomState(seed)
    layers = {}
    for name, (w_shape, b_shape) in alexnet.expected_weight_shapes(num_classes).items():
        fan_in = int(np.prod(w_shape[:-1]))
        std = scale if scale is not None else np.sqrt(2.0 / fan_in)
        layers[name] = ((rng.standard_normal(w_shape) * std).astype(np.float32),
                        (rng.standard_normal(b_shape) * 0.01).astype(np.float32))
    return layers


@pytest.fixture(scope='session')
def bvlc_layers():
    """Random weights of the 1000-class model (about 244 MB, made once per session)."""
    return random_layers(1000, seed=0)


@pytest.fixture(scope='session')
def bvlc_npy(tmp_path_factory, bvlc_layers):
    """A bvlc_alexnet.npy in the exact real format, holding bvlc_layers."""
    path = tmp_path_factory.mktemp('weights') / 'bvlc_alexnet.npy'
    write_py2_weights_npy(str(path), bvlc_layers)
    return path


def exit_error(main, argv):
    """Runs a script's main(argv), which must exit with one line 'error: ...'; returns it."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value.code)
    assert message.startswith('error: ') and '\n' not in message
    return message


@pytest.fixture(scope='module')
def module_dir(tmp_path_factory):
    """A folder for one test module's shared files, removed when the module ends."""
    folder = tmp_path_factory.mktemp('module')
    yield folder
    shutil.rmtree(str(folder), ignore_errors=True)


@pytest.fixture
def graph():
    with tf.Graph().as_default() as g:
        yield g


@pytest.fixture(scope='session')
def weights_npz(tmp_path_factory):
    """A 2-class AlexNet (cat, dog) with random weights, as a fine-tuned .npz."""
    from weight_files import save_npz
    path = tmp_path_factory.mktemp('weights') / 'two_classes.npz'
    save_npz(str(path), random_layers(num_classes=2, seed=1), ['cat', 'dog'])
    return str(path)
