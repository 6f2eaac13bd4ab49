"""cpu_kernels.py: every script turns TensorFlow's oneDNN kernels on before TensorFlow
loads, unless the user chose otherwise."""
import glob
import os
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

import cpu_kernels

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONEDNN_EXISTS = int(tf.VERSION.split('.')[0]) >= 2       # TF 1.15's package has none


def is_script(path):
    with open(path, encoding='utf-8') as f:
        return "__name__ == '__main__'" in f.read()


SCRIPTS = sorted(os.path.basename(path) for path in glob.glob(os.path.join(REPO, '*.py'))
                 if is_script(path))
# Records which of the two modules Python looks up first when the script is imported.
IMPORT_ORDER = """
import sys
order = []
class Recorder(object):
    def find_spec(self, name, path=None, target=None):
        if name in ('tensorflow', 'cpu_kernels') and name not in order:
            order.append(name)
sys.meta_path.insert(0, Recorder())
import %s
print(' '.join(order) or 'none')
"""


@pytest.mark.parametrize('script', SCRIPTS)
def test_every_script_chooses_the_kernels_before_tensorflow_loads(script):
    result = subprocess.run([sys.executable, '-c', IMPORT_ORDER % script[:-3]], cwd=REPO,
                            timeout=300, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr[-2000:]
    order = result.stdout.split('\n')[-2]
    # download.py never loads TensorFlow, bench.py only in the parts it runs.
    expected = {'download.py': 'none', 'bench.py': 'cpu_kernels'}
    assert order == expected.get(script, 'cpu_kernels tensorflow')


def test_the_scripts_are_found():
    assert {'finetune.py', 'alexnet.py', 'evaluate.py', 'bench.py', 'download.py',
            'validate_alexnet_on_imagenet.py'} <= set(SCRIPTS)


def onednn_in_a_script(environment):
    """Whether TensorFlow, loaded by `import finetune` in a fresh process, uses oneDNN."""
    code = ('import finetune\n'
            'from tensorflow.python.util import _pywrap_util_port\n'
            'print(_pywrap_util_port.IsMklEnabled())\n')
    env = {key: value for key, value in os.environ.items() if key != cpu_kernels.ONEDNN}
    env.update(environment, TF_CPP_MIN_LOG_LEVEL='3')
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env, timeout=300,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()[-1]


@pytest.mark.skipif(not ONEDNN_EXISTS, reason='TensorFlow 1.15 has no oneDNN kernels')
def test_onednn_is_on_unless_the_user_turned_it_off():
    assert onednn_in_a_script({}) == 'True'
    assert onednn_in_a_script({cpu_kernels.ONEDNN: '0'}) == 'False'
