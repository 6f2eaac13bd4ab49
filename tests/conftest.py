"""Shared test fixtures: TF 1.x graph mode, and weight files in the real bvlc_alexnet format."""
import contextlib
import io
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import cpu_kernels  # noqa: E402,F401  (the scripts' CPU kernels, chosen before TensorFlow loads)
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
tf.logging.set_verbosity(tf.logging.ERROR)


# --- Generated photos and files ---------------------------------------------------

def photo(height, width, seed=0):
    """A smooth random uint8 RGB image [height, width, 3] (JPEG-friendly, not flat)."""
    rng = np.random.RandomState(seed)
    coarse = rng.randint(0, 256, (height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def save(path, image, **options):
    """Saves a PIL image or a NumPy array; returns the path as str."""
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(str(path), **options)
    return str(path)


def touch(path, data=b'x'):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(str(path), 'wb') as f:
        f.write(data)
    return str(path)


def run_graph(build):
    """Runs build() -> tensors in a fresh graph and session; returns their values."""
    with tf.Graph().as_default():
        tensors = build()
        with tf.Session() as session:
            return session.run(tensors)


def read_epoch(dataset_fn, feed=None):
    """All (images, labels) of one pass of the dataset dataset_fn() builds."""
    with tf.Graph().as_default():
        iterator = tf.data.make_initializable_iterator(dataset_fn())
        images, labels = iterator.get_next()
        batches = []
        with tf.Session() as session:
            session.run(iterator.initializer, feed)
            try:
                while True:
                    batches.append(session.run([images, labels]))
            except tf.errors.OutOfRangeError:
                pass
    return (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))


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
    """Runs a script's main(argv), which must return 2 after one line 'error: ...' on
    stderr; returns that line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    message = err.getvalue()
    assert code == 2, (code, message)
    assert message.startswith('error: ') and message.count('\n') == 1, message
    return message.strip()


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


# --- Figures: the font that draws Chinese, and what a figure drew ---------------

@pytest.fixture(scope='session')
def chinese_font():
    """The family name figures.cjk_font() finds; skips the test on a machine without one."""
    import figures
    font = figures.cjk_font()
    if font is None:
        pytest.skip('no font with Chinese glyphs is installed: apt-get install '
                    'fonts-wqy-microhei (.ci/run does), or fonts-noto-cjk')
    return font


class DrawnText(object):
    """What the figures that figures.py saved during a test drew (fixture drawn_text)."""

    def __init__(self, recwarn):
        self.texts = []          # (text, font file) of every non-empty text, as saved
        self._recwarn = recwarn

    def missing_glyphs(self):
        """matplotlib's warnings of characters a font lacks ('Glyph 26001 ... missing')."""
        return [str(w.message) for w in self._recwarn
                if 'Glyph' in str(w.message) and 'missing' in str(w.message)]


@pytest.fixture
def drawn_text(monkeypatch, recwarn):
    """A DrawnText that records every figure figures.py saves during the test."""
    import matplotlib.font_manager
    import matplotlib.text
    import figures
    drawn = DrawnText(recwarn)
    save = figures._save

    def spy(fig, path):
        for text in fig.findobj(matplotlib.text.Text):
            if text.get_visible() and text.get_text():
                # str(): matplotlib >= 3.10 returns a FontPath (a str with a face index).
                font_file = str(matplotlib.font_manager.findfont(text.get_fontproperties()))
                drawn.texts.append((text.get_text(), font_file))
        return save(fig, path)

    monkeypatch.setattr(figures, '_save', spy)
    return drawn
