"""The code stays runnable on the course's TensorFlow 1.15 and on its Python, 3.7.

tests/data/tf115_compat_v1_api.txt lists every public name of tf.compat.v1 in
TensorFlow 1.15.5 (see CREDITS.md); a name not there does not exist in TF 1.15.
"""
import ast
import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(REPO, 'tests', 'data', 'tf115_compat_v1_api.txt')


def python_files():
    files = glob.glob(os.path.join(REPO, '*.py')) + glob.glob(os.path.join(REPO, 'tests', '*.py'))
    return sorted(files)


def tf_chains(source):
    """Every dotted name used under `tf` (the tensorflow.compat.v1 alias) in a module."""
    tree = ast.parse(source)
    chains = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            if isinstance(node, ast.Name) and node.id == 'tf':
                chains.add('.'.join(reversed(parts)))
    return chains


def missing_in_tf115(chains, api):
    """The chains whose names TF 1.15 lacks; past a non-module name, the rest is attributes."""
    modules = {name.rsplit('.', 1)[0] for name in api if '.' in name}
    modules |= {m.rsplit('.', i)[0] for m in list(modules) for i in range(m.count('.') + 1)}
    missing = set()
    for chain in chains:
        parts = chain.split('.')
        for i in range(1, len(parts) + 1):
            prefix = '.'.join(parts[:i])
            if prefix not in api and prefix not in modules:
                missing.add(chain)
                break
            if prefix not in modules:
                break
    return missing


@pytest.fixture(scope='module')
def api():
    with open(API) as f:
        return set(line.strip() for line in f if line.strip())


def test_checker_catches_tf2_only_names(api):
    chains = tf_chains('tf.nn.conv2d(x)\ntf.image.resize(x)\ntf.train.Saver().save\n'
                       'tf.keras.layers.Dense\ntf.experimental.numpy\ntf.GraphKeys.LOSSES\n'
                       'tf.nn.silu(x)\ntf.math.divide_no_nan\n')
    assert missing_in_tf115(chains, api) == {'experimental.numpy', 'nn.silu', 'keras',
                                             'keras.layers', 'keras.layers.Dense'}


@pytest.mark.parametrize('path', python_files(), ids=os.path.basename)
def test_only_tf115_names(path, api):
    with open(path, encoding='utf-8') as f:
        source = f.read()
    plain_import = 'import tensorflow ' + 'as tf'
    assert plain_import not in source, 'use: import tensorflow.compat.v1 as tf'
    assert missing_in_tf115(tf_chains(source), api) == set()


def test_python_37():
    # TF 1.15's wheels stop at Python 3.7, so 3.7 is the floor (make test-tf1 runs there).
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), 'vermin'), '--target=3.7-', '--no-tips', '--violations',
         '--eval-annotations', '--backport', 'typing'] + python_files(),
        capture_output=True, text=True)
    output = result.stdout + result.stderr
    # On Python 3.7 vermin cannot parse newer syntax: it prints 'error: invalid syntax', exits 0.
    assert result.returncode == 0 and 'error:' not in output, output
