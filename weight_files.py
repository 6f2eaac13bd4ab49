"""Reading and writing AlexNet weight files, safely.

Two formats hold the same thing, a mapping ``{layer: (weights, biases)}``:

* ``bvlc_alexnet.npy``, the course's file: Caffe's ``bvlc_alexnet`` model
  converted by caffe-tensorflow and saved by ``np.save`` under Python 2. It is an
  ``.npy`` whose payload is a pickle (protocol 2) of a 0-d object array holding a
  dict ``{'conv1': [W, b], ...}``; the array bytes are Python 2 ``str``.
  ``np.load(..., allow_pickle=True)`` would run whatever code a hostile file
  names, so this module reads it with a restricted unpickler that admits only the
  few NumPy callables that rebuild arrays and refuses everything else.
* ``.npz`` (``np.savez``), this project's own format for fine-tuned weights: plain
  arrays under keys ``conv1/weights``, ``conv1/biases``, ... plus an optional
  ``class_names`` array of strings; read with ``allow_pickle=False``.

Every problem is raised as one ``WeightFileError`` whose message names the file,
says what is wrong and what to do.
"""
from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile

import numpy as np

try:  # NumPy >= 2 moved the pickle helper; files written by NumPy 1 name the old place.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct

CLASS_NAMES_KEY = 'class_names'

# The only globals an AlexNet .npy pickle needs: rebuild an ndarray and its dtype.
_SAFE_GLOBALS = {
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}

GET_WEIGHTS_HINT = ('download it with `python download.py weights` '
                    '(or put bvlc_alexnet.npy in weights/ yourself)')


class WeightFileError(ValueError):
    """A weight file is missing, unreadable, unsafe or does not fit the model."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays, dicts, lists and strings; refuses any other global."""

    def find_class(self, module, name):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                'refused global %s.%s (only NumPy arrays are allowed)' % (module, name))


def _npy_payload(path, raw):
    """Returns the pickle bytes of an object-dtype .npy file."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    except ValueError as err:
        raise WeightFileError('%s: corrupt .npy header (%s); %s'
                              % (path, err, GET_WEIGHTS_HINT)) from None
    if dtype != np.dtype(object) or shape != ():
        raise WeightFileError(
            '%s: a .npy of %s %s, not the dict of layers bvlc_alexnet.npy holds; %s'
            % (path, dtype, shape, GET_WEIGHTS_HINT))
    return raw[stream.tell():]


def _load_npy(path, raw):
    payload = _npy_payload(path, raw)
    try:
        # latin1 turns Python 2 `str` array bytes back into the raw bytes NumPy needs.
        array = _RestrictedUnpickler(io.BytesIO(payload), encoding='latin1').load()
    except pickle.UnpicklingError as err:
        raise WeightFileError('%s: unsafe or corrupt pickle (%s); it was not loaded; %s'
                              % (path, err, GET_WEIGHTS_HINT)) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError) as err:
        raise WeightFileError('%s: truncated or corrupt file (%s: %s); %s'
                              % (path, type(err).__name__, err, GET_WEIGHTS_HINT)) from None
    content = array.item() if isinstance(array, np.ndarray) and array.shape == () else array
    if not isinstance(content, dict):
        raise WeightFileError('%s: holds a %s, not a dict of layers; %s'
                              % (path, type(content).__name__, GET_WEIGHTS_HINT))
    layers = {}
    for key, value in content.items():
        name = key.decode('latin1') if isinstance(key, bytes) else key
        if not isinstance(name, str):
            raise WeightFileError('%s: layer key %r is not a string' % (path, key))
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise WeightFileError('%s: layer %s should be [weights, biases], found %s'
                                  % (path, name, type(value).__name__))
        layers[name] = (_numeric(path, name + '/weights', value[0]),
                        _numeric(path, name + '/biases', value[1]))
    return layers


def _numeric(path, name, value):
    if not isinstance(value, np.ndarray) or value.dtype.kind != 'f':
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise WeightFileError('%s: %s should be a float array, found %s' % (path, name, kind))
    return value.astype(np.float32, copy=False)


def _load_npz(path):
    layers = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                if key == CLASS_NAMES_KEY:
                    continue
                layer, _, part = key.partition('/')
                if part not in ('weights', 'biases'):
                    raise WeightFileError('%s: unexpected key %r (want <layer>/weights, '
                                          '<layer>/biases)' % (path, key))
                layers.setdefault(layer, {})[part] = _numeric(path, key, archive[key])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise WeightFileError('%s: unreadable .npz (%s); save it again with '
                              'weight_files.save_npz' % (path, err)) from None
    for layer, parts in layers.items():
        if len(parts) != 2:
            raise WeightFileError('%s: layer %s has only %s' % (path, layer, list(parts)))
    return {layer: (parts['weights'], parts['biases']) for layer, parts in layers.items()}


def load_weights(path):
    """Reads a weight file (.npy of bvlc_alexnet, or this project's .npz).

    Returns:
      dict {layer name: (weights, biases)} of float32 arrays.
    Raises:
      WeightFileError: missing, truncated, not a weight file, or unsafe.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise WeightFileError('%s: no such file; %s' % (path, GET_WEIGHTS_HINT))
    with open(path, 'rb') as f:
        raw = f.read()
    if raw.startswith(b'\x93NUMPY'):
        return _load_npy(path, raw)
    if raw.startswith(b'PK'):
        return _load_npz(path)
    raise WeightFileError('%s: neither a .npy nor a .npz file (it starts with %r); %s'
                          % (path, raw[:8], GET_WEIGHTS_HINT))


def load_class_names(path):
    """Returns the class names stored in an .npz weight file, or None if it has none."""
    path = os.fspath(path)
    with open(path, 'rb') as f:
        if f.read(2) != b'PK':
            return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if CLASS_NAMES_KEY not in archive.files:
                return None
            return [str(name) for name in archive[CLASS_NAMES_KEY]]
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise WeightFileError('%s: unreadable class names (%s)' % (path, err)) from None


def save_npz(path, layers, class_names=None):
    """Writes ``{layer: (weights, biases)}`` as a safe .npz, atomically.

    The file appears under its name only once completely written, so an
    interrupted save never leaves a half file behind.
    """
    path = os.fspath(path)
    arrays = {}
    for layer, (weights, biases) in layers.items():
        arrays[layer + '/weights'] = np.asarray(weights, np.float32)
        arrays[layer + '/biases'] = np.asarray(biases, np.float32)
    if class_names is not None:
        arrays[CLASS_NAMES_KEY] = np.array([str(name) for name in class_names])
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix='.npz.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_shapes(path, layers, expected, skip_layer=()):
    """Checks that ``layers`` has every expected layer not skipped, with its shape.

    Args:
      path: the file the layers came from (for the message).
      layers: {layer: (weights, biases)} as read by load_weights.
      expected: {layer: (weights shape, biases shape)} of the graph.
      skip_layer: layers that will not be loaded.
    Raises:
      WeightFileError naming the file, the layer, expected and found shapes.
    """
    for layer, shapes in expected.items():
        if layer in skip_layer:
            continue
        if layer not in layers:
            raise WeightFileError(
                '%s: layer %s is missing (the file has %s); use a complete weight file '
                'or add %s to skip_layer to train it from scratch'
                % (path, layer, ', '.join(sorted(layers)) or 'none', layer))
        for part, want, array in zip(('weights', 'biases'), shapes, layers[layer]):
            if tuple(array.shape) != tuple(want):
                raise WeightFileError(
                    '%s: %s/%s has shape %s, the model expects %s; check num_classes, '
                    'or add %s to skip_layer to train it from scratch'
                    % (path, layer, part, tuple(array.shape), tuple(want), layer))
