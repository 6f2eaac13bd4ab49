"""caffemodel.py against damaged and hostile files: a seeded byte-level fuzz, and hand-built
attacks, each read in a child process with an address-space and a time limit.

Every outcome must be a one-line WeightFileError or a whole, finite result with
the expected shapes: no other exception, no traceback, no crash, no hang.
"""
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from caffe_files import (blob_chunks, field_bytes, field_varint, caffemodel_bytes, key,
                         layer_chunks, tiny_layers, tiny_shapes, to_caffe_layout, varint)

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
MEMORY_LIMIT = 512 << 20     # address space of a child: the tiny files need far less
TIME_LIMIT = 30              # seconds for one child (one hostile file)
CASE_TIME_LIMIT = 10         # seconds for one fuzz case
MEAN_SHAPE = (3, 4, 4)       # a tiny mean image

pytestmark = pytest.mark.skipif(sys.platform != 'linux', reason='uses RLIMIT_AS and select')


# --- The child: reads files, reports one line each --------------------------

def read_one(kind, path):
    """'ok' for a whole finite result of the expected shapes, 'refused' for a one-line
    WeightFileError naming the file, otherwise 'bug: ...'."""
    import caffemodel
    import weight_files
    try:
        if kind == 'mean':
            mean = caffemodel.read_mean_image(path, MEAN_SHAPE)
            good = mean.shape == MEAN_SHAPE and mean.dtype == np.float32 and np.isfinite(mean).all()
        else:
            layers = caffemodel.read_caffemodel(path, tiny_shapes)
            want = tiny_shapes(layers['fc8'][1].shape[0]) if 'fc8' in layers else {}
            good = list(layers) == list(want) and all(
                array.shape == shape and array.dtype == np.float32 and np.isfinite(array).all()
                for name in want for array, shape in zip(layers[name], want[name]))
        return 'ok' if good else 'bug: a result of the wrong shapes or not finite'
    except weight_files.WeightFileError as err:
        message = str(err)
        if '\n' in message or not message.startswith(path + ': '):
            return 'bug: message not one line naming the file: %r' % message[:200]
        return 'refused'
    except Exception as err:   # any other exception is the bug being looked for
        return 'bug: %s: %s' % (type(err).__name__, str(err)[:200])


def limit_resources():
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def worker(kind, folder):
    """Reads cases from stdin (4-byte length, bytes) and answers one line each."""
    limit_resources()
    path = os.path.join(folder, 'case.' + kind)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    while True:
        header = stdin.read(4)
        if len(header) < 4:
            return
        data = stdin.read(struct.unpack('<I', header)[0])
        with open(path, 'wb') as f:
            f.write(data)
        stdout.write(read_one(kind, path).replace('\n', ' ') + '\n')
        stdout.flush()


CHILD_PRELUDE = ('import sys; sys.path[:0] = [%r, %r]; import test_hostile_caffemodel as t; '
                 % (REPO, TESTS))


def child_env():
    env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1')
    env.pop('PYTHONSTARTUP', None)
    return env


class Worker(object):
    """A child process reading fuzz cases; restarted after a crash or a hang."""

    def __init__(self, kind, folder):
        self.kind, self.folder, self.process = kind, folder, None

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, '-c', CHILD_PRELUDE + 't.worker(%r, %r)' % (self.kind, self.folder)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=child_env(), cwd=self.folder)
        self.pending = b''

    def read(self, data):
        """The child's line for one case, or 'crash: ...' / 'hang' (then a new child)."""
        if self.process is None:
            self.start()
        try:
            self.process.stdin.write(struct.pack('<I', len(data)) + data)
            self.process.stdin.flush()
        except BrokenPipeError:
            return self.restart('crash: the child had exited (%s)' % self.process.poll())
        deadline = time.time() + CASE_TIME_LIMIT
        fd = self.process.stdout.fileno()
        while b'\n' not in self.pending:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
            if not ready:
                return self.restart('hang: no answer in %d s' % CASE_TIME_LIMIT)
            chunk = os.read(fd, 65536)
            if not chunk:
                return self.restart('crash: exit status %s' % self.process.wait())
            self.pending += chunk
        line, self.pending = self.pending.split(b'\n', 1)
        return line.decode()

    def restart(self, outcome):
        self.stop()
        return outcome

    def stop(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            try:
                self.process.stdin.close()      # flushes what a dead child never read
            except BrokenPipeError:
                pass
            self.process.stdout.close()
            self.process = None


# --- The fuzz ----------------------------------------------------------

def mutate(data, rng):
    """One to three byte-level changes; returns (bytes, what was done)."""
    data = bytearray(data)
    done = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.randint(7)
        at = rng.randint(len(data) + 1)
        if kind == 0 and data:                     # flip bits
            at = min(at, len(data) - 1)
            data[at] ^= 1 << rng.randint(8)
            done.append('flip@%d' % at)
        elif kind == 1 and data:                   # a random byte
            at = min(at, len(data) - 1)
            data[at] = rng.randint(256)
            done.append('set@%d' % at)
        elif kind == 2:                            # insert random bytes
            count = rng.randint(1, 9)
            data[at:at] = bytes(rng.randint(0, 256, count).astype(np.uint8))
            done.append('insert%d@%d' % (count, at))
        elif kind == 3:                            # delete a range
            count = rng.randint(1, 17)
            del data[at:at + count]
            done.append('delete%d@%d' % (count, at))
        elif kind == 4:                            # truncate
            del data[at:]
            done.append('cut@%d' % at)
        elif kind == 5 and data:                   # copy a slice elsewhere
            start = rng.randint(len(data))
            piece = data[start:start + rng.randint(1, 33)]
            data[at:at] = piece
            done.append('copy%d@%d' % (len(piece), at))
        else:                                      # a run of 0xff: over-long varints
            count = rng.randint(1, 13)
            data[at:at] = b'\xff' * count
            done.append('ff%d@%d' % (count, at))
    return bytes(data), '+'.join(done)


def fuzz_bases():
    """Small valid files in every layout the reader takes."""
    layers = tiny_layers(seed=7)
    models = [caffemodel_bytes(layers, layout=layout, legacy=legacy, packed=packed,
                               double=double, blobless=blobless)
              for layout, legacy, packed, double, blobless in [
                  ('layer', False, True, False, True), ('layers', True, True, False, True),
                  ('layer', True, False, False, False), ('layers', False, True, True, False)]]
    mean = np.arange(48, dtype=np.float32).reshape(MEAN_SHAPE)
    means = [b''.join(bytes(c) for c in blob_chunks(mean.reshape((1,) + MEAN_SHAPE), legacy=legacy,
                                                    packed=packed))
             for legacy, packed in [(True, True), (False, False)]]
    return models, means


@pytest.fixture
def fast_folder(tmp_path):
    """A folder in memory (/dev/shm) if there is one: writing a case file there takes
    0.03 ms instead of 3 ms on this machine's disk."""
    if not os.path.isdir('/dev/shm'):
        yield str(tmp_path)
        return
    folder = tempfile.mkdtemp(prefix='fuzz-', dir='/dev/shm')
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize('kind, cases', [('model', 10000), ('mean', 3000)])
def test_fuzz(fast_folder, kind, cases):
    models, means = fuzz_bases()
    bases = models if kind == 'model' else means
    rng = np.random.RandomState(2012 if kind == 'model' else 2013)
    worker_ = Worker(kind, fast_folder)
    outcomes, bugs = {'ok': 0, 'refused': 0}, []
    try:
        for base in bases:                         # the unchanged files read whole
            assert worker_.read(base) == 'ok'
        for case in range(cases):
            data, how = mutate(bases[case % len(bases)], rng)
            outcome = worker_.read(data)
            if outcome in outcomes:
                outcomes[outcome] += 1
            else:
                bugs.append('case %d (%s): %s' % (case, how, outcome))
    finally:
        worker_.stop()
    assert not bugs, '%d of %d cases: %s' % (len(bugs), cases, '; '.join(bugs[:5]))
    # both ways out were taken many times: the fuzz reached the reader's checks
    # and also changed values without breaking the format
    assert outcomes['refused'] > cases // 2 and outcomes['ok'] > cases // 50, outcomes


@pytest.mark.parametrize('reaped', [False, True], ids=['dying', 'dead'])
def test_worker_reports_a_crash_and_goes_on(tmp_path, reaped):
    """The harness itself: a child killed by a signal is reported, and the next case runs,
    whether the case reaches the pipe before the child is gone (an end of file) or after
    (a broken pipe)."""
    worker_ = Worker('model', str(tmp_path))
    try:
        worker_.start()
        worker_.process.kill()
        if reaped:
            worker_.process.wait()
        assert worker_.read(b'x').startswith('crash')
        assert worker_.read(b'') == 'refused'
    finally:
        worker_.stop()


# --- Hostile files, one child each --------------------------------------

def nested(number, depth, core=b''):
    """`depth` length-delimited fields `number`, each inside the one before, built from the
    inside out in O(depth): each prefix needs the length of everything within it."""
    prefixes, length = [], len(core)
    for _ in range(depth):
        prefix = key(number, 2) + varint(length)
        prefixes.append(prefix)
        length += len(prefix)
    return b''.join(reversed(prefixes)) + core


def model_with(change):
    """A tiny valid model's Caffe layout, changed by `change(caffe)`, as bytes."""
    caffe = to_caffe_layout(tiny_layers(seed=8))
    change(caffe)
    return caffemodel_bytes(caffe, caffe_layout=True)


def short_blob():
    weights, biases = to_caffe_layout(tiny_layers(seed=8))['conv1']
    blob = blob_chunks(weights.reshape(-1)[:-1], shape=weights.shape)   # one float short
    return b''.join(bytes(c) for c in layer_chunks('conv1', [blob, blob_chunks(biases)]))


def chunks_bytes(chunks):
    return b''.join(bytes(c) for c in chunks)


def put(caffe, name, index, value):
    arrays = list(caffe[name])
    arrays[0] = arrays[0].copy()
    arrays[0].reshape(-1)[index] = value
    caffe[name] = tuple(arrays)


# (what, file kind, bytes builder (run in the test, not at import), phrase of the message)
HOSTILE = [
    ('length 2**62', 'model', lambda: key(100, 2) + varint(2 ** 62) + bytes(16),
     'NetParameter field 100 at byte 0 says it holds 4611686018427387904 bytes, but only 16'),
    ('varint of 11 bytes', 'model', lambda: b'\x80' * 10 + b'\x01', 'longer than 10 bytes'),
    ('varint beyond 64 bits', 'model', lambda: b'\xff' * 9 + b'\x7f', 'more than 64 bits'),
    ('layers nested 100,000 deep', 'model', lambda: nested(100, 100000),
     'layer fc8 with weights and biases is missing (layers with blobs: none)'),
    ('blobs nested 100,000 deep', 'model', lambda: key(100, 2) + varint(len(nested(7, 100000)))
     + nested(7, 100000), 'layer #1 has 1 blobs but no name'),
    ('groups nested 100,000 deep', 'model', lambda: b'\x0b' * 100000, 'a protobuf group'),
    ('a blob with fewer floats than its shape', 'model', short_blob,
     'layer conv1 blob 0 holds 107 values, but its shape (4, 3, 3, 3) needs 108'),
    ('NaN in fc6', 'model', lambda: model_with(lambda c: put(c, 'fc6', 17, np.nan)),
     'layer fc6 weights hold NaN or infinite values'),
    ('infinity in conv2', 'model', lambda: model_with(lambda c: put(c, 'conv2', 0, -np.inf)),
     'layer conv2 weights hold NaN or infinite values'),
    ('no fc8', 'model', lambda: model_with(lambda c: c.pop('fc8')),
     'layer fc8 with weights and biases is missing (layers with blobs: conv1, conv2, conv3, '
     'conv4, conv5, fc6, fc7)'),
    ('an extra layer with blobs', 'model',
     lambda: model_with(lambda c: c.update(conv6=c['conv5'])),
     'layer conv6 has blobs, but this graph has no such layer'),
    ('a layer name with a newline', 'model',
     lambda: model_with(lambda c: c.update({'fc9\nx': c['fc8']})), "layer 'fc9\\nx' has blobs"),
    ('dims of 2**40 without data', 'model', lambda: chunks_bytes(layer_chunks('fc8', [
        blob_chunks(np.zeros(0, np.float32), shape=(2 ** 40, 2 ** 40))])),
     'holds 0 values, but its shape (1099511627776, 1099511627776) needs'),
    ('a negative dim', 'model', lambda: chunks_bytes(layer_chunks('fc8', [
        blob_chunks(np.zeros(0, np.float32), shape=(-3, 0))])), 'negative dimension -3'),
    ('a negative legacy channel count', 'model', lambda: chunks_bytes(layer_chunks('fc8', [
        [field_varint(1, 1), field_varint(2, -2), field_varint(3, -2), field_varint(4, 1)]])),
     'negative legacy dimension (1, -2, -2, 1)'),
    ('33 axes', 'model', lambda: chunks_bytes(layer_chunks('fc8', [
        blob_chunks(np.zeros(1, np.float32), shape=(1,) * 33)])), 'more than 32 axes'),
    ('17 blobs', 'model', lambda: chunks_bytes(layer_chunks('fc8', [[b'']] * 17)),
     'more than 16 blobs'),
    ('1,001 layers', 'model', lambda: field_bytes(100, b'') * 1001, 'more than 1000 layers'),
    ('a million fields', 'model', lambda: field_varint(5, 0) * 1000001,
     'more than 1000000 protobuf fields'),
    ('a name of 2,000 bytes', 'model', lambda: field_bytes(100, field_bytes(1, b'n' * 2000)),
     'has a name of 2000 bytes'),
    ('a million unpacked floats, then garbage', 'model', lambda: field_bytes(100, field_bytes(
        1, b'fc8') + field_bytes(7, (b'\x2d' + bytes(4)) * 1000000 + b'\x0f')),
     'layer fc8 blob 0 has field 1 of wire type 7'),
    ('mean: length 2**62', 'mean', lambda: key(5, 2) + varint(2 ** 62) + bytes(8),
     'the mean image field 5 at byte 0 says it holds 4611686018427387904 bytes'),
    ('mean: NaN', 'mean',
     lambda: chunks_bytes(blob_chunks(np.full(MEAN_SHAPE, np.nan, np.float32))),
     'the mean image holds NaN or infinite values'),
    ('mean: fewer floats', 'mean', lambda: chunks_bytes(blob_chunks(np.zeros(47, np.float32),
                                                            shape=MEAN_SHAPE)),
     'the mean image holds 47 values, but its shape (3, 4, 4) needs 48'),
]


@pytest.mark.parametrize('name, kind, build, phrase', HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file(tmp_path, name, kind, build, phrase):
    path = str(tmp_path / ('hostile.' + kind))
    with open(path, 'wb') as f:
        f.write(build())
    code = (CHILD_PRELUDE + 't.limit_resources(); import resource; '
            'resource.setrlimit(resource.RLIMIT_CPU, (%d, %d)); '
            'import caffemodel, weight_files\n'
            'try:\n'
            '    caffemodel.read_mean_image(%r, t.MEAN_SHAPE) if %r == "mean" else '
            'caffemodel.read_caffemodel(%r, t.tiny_shapes)\n'
            'except weight_files.WeightFileError as err:\n'
            '    print(err); sys.exit(3)\n' % (TIME_LIMIT, TIME_LIMIT, path, kind, path))
    started = time.time()
    result = subprocess.run([sys.executable, '-c', code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=child_env(), timeout=TIME_LIMIT + 10)
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 3, (result.returncode, stdout, stderr[-2000:])
    assert stderr == '' and stdout.count('\n') == 1, stderr[-2000:]
    assert stdout.startswith(path + ': ') and phrase in stdout, stdout
    assert time.time() - started < TIME_LIMIT
