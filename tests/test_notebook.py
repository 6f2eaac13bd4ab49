"""validate_alexnet_on_imagenet.ipynb runs headless from top to bottom (so it cannot rot).

Its settings cell (tagged 'parameters') is replaced by one pointing at generated
photos, runs and a small random-weights .npz; then every cell must run.
"""
import os

import numpy as np
import pytest
from PIL import Image

import weight_files
from conftest import random_layers

# make test-tf1 has neither: they need Python 3.8+ (TF 1.15 runs on 3.7).
nbformat = pytest.importorskip('nbformat', reason='nbformat is not installed: '
                                                  'pip install -r requirements-dev.txt')
nbclient = pytest.importorskip('nbclient', reason='nbclient is not installed: '
                                                  'pip install -r requirements-dev.txt')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'validate_alexnet_on_imagenet.ipynb')
METRICS_HEADER = ('epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,learning_rate,'
                  'seconds\n')


def test_notebook_has_one_parameters_cell_and_no_stored_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1
    assert all(not c.get('outputs') for c in notebook.cells if c.cell_type == 'code')


@pytest.mark.slow
def test_notebook_runs_every_cell(tmp_path):
    photos = tmp_path / 'photos'
    photos.mkdir()
    rng = np.random.RandomState(0)
    for i in range(3):
        pixels = rng.rand(240, 300, 3) * 80 + 60 * i
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(str(photos / ('p%d.jpg' % i)))
    (tmp_path / 'labels.txt').write_text('0\n1\n1\n')
    runs = []
    for name, losses in (('pretrained', (0.5, 0.2)), ('scratch', (0.7, 0.69))):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'metrics.csv').write_text(METRICS_HEADER + ''.join(
            '%d,%d,%s,0.6,%s,0.6,0.001,1.0\n' % (epoch + 1, 10 * (epoch + 1), loss, loss)
            for epoch, loss in enumerate(losses)))
        runs.append(str(tmp_path / name))
    weights = str(tmp_path / 'two_classes.npz')
    weight_files.save_npz(weights, random_layers(num_classes=2, seed=4), ['cat', 'dog'])
    out = tmp_path / 'out'

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    cell = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])][0]
    cell.source = '\n'.join([
        'import os',
        'WEIGHTS = %r' % weights,
        'IMAGES = %r' % str(photos),
        'FEATURE_IMAGE = None',
        'SEARCH = [%r]' % str(photos),
        'RUNS = %r' % runs,
        'VAL_IMAGES = %r' % str(photos),
        'VAL_LABELS = %r' % str(tmp_path / 'labels.txt'),
        'OUT = %r' % str(out),
    ])
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name='python3',
                                     resources={'metadata': {'path': REPO}})
    client.execute()

    for name in ('classified.png', 'conv1_filters.png', 'conv1_features.png',
                 'conv2_kernels.png', 'curves.png', 'retrieval.png'):
        assert (out / name).is_file(), name
    outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
    shown = [o for o in outputs if 'image/png' in o.get('data', {})]
    assert len(shown) == 6
    text = ''.join(o.get('text', '') for o in outputs)
    assert 'weights: %s' % weights in text
    assert 'top-1 error' in text and '40.7%' in text
