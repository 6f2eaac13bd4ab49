"""Hostile weight files, read in a worker process with an address-space and a time limit.

Each attack found on the old unpickling loader (crashes, gigabyte allocations, files
that loaded as garbage) is rebuilt here at test time. The worker (fuzz_weights.Worker)
may use 1 GiB beyond what Python and NumPy take; every file must be refused with a
WeightFileError of one line, fast, with no other exception and no signal. Then the
fuzz: a few thousand mutated files of every format.
"""
import struct
import sys

import numpy as np
import pytest

import fuzz_weights
import weight_files
from weight_formats import (PY2_CLOSE, PY2_OPEN, RECONSTRUCT, deflated_zeros, npy_header,
                            npy_member, npz_bytes, npz_members, py2_dtype, py2_int,
                            py2_layer_entries, py2_npy, py2_str, py2_tuple, raw_zip, stored,
                            tiny_layers)

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='the worker reads /proc and sets RLIMIT_AS')

LAYERS = tiny_layers(num_classes=2, seed=0)
SECONDS = 5.0      # a refusal takes milliseconds; this is for a busy CI machine


@pytest.fixture(scope='module', params=['tiny', 'none'])
def worker(request):
    """A worker checking files against tiny AlexNet shapes, or checking structure only."""
    process = fuzz_weights.Worker(expected=request.param)
    yield process
    process.close()


def refused(worker, data, *phrases):
    """The message refusing `data`; fails on anything but a quick one-line WeightFileError."""
    outcome, message, seconds = worker.check(data)
    assert outcome == 'refused', '%s: %s' % (outcome, message)
    assert '\n' not in message and seconds < SECONDS
    for phrase in phrases:
        assert phrase in message
    return message


def entries_with(index, value):
    entries = py2_layer_entries(LAYERS)
    entries[index] = (entries[index][0], value)
    return entries


# --- The attacks, one by one -------------------------------------------------------

def test_the_worker_loads_a_good_file(worker):
    assert worker.check(py2_npy(py2_layer_entries(LAYERS)))[0] == 'loaded'


def test_dtype_built_with_a_malformed_state(worker):
    # numpy.dtype('V8') BUILT with a 12-item state. For state sizes it does not know,
    # dtype.__setstate__ went on with uninitialised pointers (NumPy issue 30476); the
    # attackers' 175-byte file of this kind crashed the old loader. NumPy never sees it now.
    dtype = b'cnumpy\ndtype\n' + py2_str('V8') + py2_int(0) + py2_int(1) + b'\x87R'
    state = b'(' + py2_int(3) + py2_str('|') + b'N' * 10 + b't'
    data = npy_header() + b'\x80\x02' + dtype + state + b'b.'
    refused(worker, data, 'the pickled array should be an array, found a call of dtype')


def test_object_array_claiming_3e8_items(worker):
    data = (npy_header() + b'\x80\x02' + RECONSTRUCT + b'(' + py2_int(1)
            + b'J\x00\xa3\xe1\x11\x85' + py2_dtype('O8', '|') + b'\x89]tb.')
    refused(worker, data, 'holds a \'O8\' array of shape (300000000,)')


def test_reconstruct_of_1e8_objects(worker):
    # _reconstruct(ndarray, (100000000,), dtype('O8')) allocated 780 MB of pointers
    data = (npy_header() + b'\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n'
            + b'J\x00\xe1\xf5\x05\x85' + py2_dtype('O8', '|') + b'\x87R.')
    refused(worker, data, 'the pickled array is an array without data')


@pytest.mark.parametrize('depth', [200000, 1000])
def test_key_nested_deep(worker, depth):
    # a tuple in a tuple ... as a dict key: a C stack overflow, or a RecursionError
    # while the old loader formatted its message
    key = b'N' + b'\x85' * depth
    data = npy_header() + PY2_OPEN + key + py2_layer_entries(LAYERS)[0][1] + PY2_CLOSE
    refused(worker, data, 'values nested more than 32 deep')


def test_memo_index_0x08000000(worker):
    data = npy_header() + b'\x80\x02Nr\x00\x00\x00\x08.'      # LONG_BINPUT 134217728
    assert len(data) == 137
    refused(worker, data, 'memo index 134217728')


def test_arrays_without_data(worker):
    # eight layers of _reconstruct(ndarray, shape, dtype) never filled: the old loader
    # returned AlexNet full of uninitialised memory
    def empty(shape):
        return (b'cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n' + py2_tuple(shape)
                + py2_dtype('f4', '<') + b'\x87R')
    entries = [(key, b']' + b'(' + empty(LAYERS[name][0].shape) + empty(LAYERS[name][1].shape)
                + b'e') for (key, _), name in zip(py2_layer_entries(LAYERS), LAYERS)]
    refused(worker, py2_npy(entries), 'conv1/weights is an array without data')


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_non_finite_weights(worker, bad):
    weights = LAYERS['conv3'][0].copy()
    weights[0, 0, 1, :] = bad
    layers = dict(LAYERS, conv3=(weights, LAYERS['conv3'][1]))
    for data in (py2_npy(py2_layer_entries(layers)), npz_bytes(layers)):
        refused(worker, data, 'conv3/weights has 2 NaN or infinite values (of 4)')


def test_file_without_fc8(worker):
    layers = {name: arrays for name, arrays in LAYERS.items() if name != 'fc8'}
    refused(worker, py2_npy(py2_layer_entries(layers)), 'layer fc8 is missing')
    refused(worker, npz_bytes(layers), 'layer fc8 is missing')


def test_npy_header_with_an_unclosed_bracket(worker):
    data = npy_header(shape_text='(') + py2_npy(py2_layer_entries(LAYERS))[len(npy_header()):]
    refused(worker, data, 'corrupt .npy header')


def test_refused_globals_never_run(worker):
    data = npy_header() + b'\x80\x02cposix\nsystem\nU\x02idR.'
    refused(worker, data, 'refused global posix.system')


# --- Zip bombs and lying .npz members -------------------------------------------------

def bomb_members(name, payload, method, size, crc):
    """An .npz's members with `name`'s replaced by what is given, true or not."""
    members = npz_members(LAYERS)
    members[weight_files.ARRAY_KEYS.index(name)] = (name + '.npy', payload, method, size, crc)
    return members


def test_zip_bomb_declaring_1_gib(worker):
    # conv1/weights.npy: 1 GiB of zeros after its header, deflated to 1 MB
    count = (1 << 30) // 4 - 32
    header = npy_header(shape_text='(%d,)' % count, descr="'<f4'")
    payload = deflated_zeros(header, 1023)
    size = len(header) + 4 * count
    data = raw_zip(bomb_members('conv1/weights', payload, 8, size, 0))
    assert len(data) < 1.1e6 and size <= (1 << 30)
    refused(worker, data, 'conv1/weights.npy declares %d bytes' % size)


def test_zip_bomb_lying_about_its_size(worker):
    # declares the true size of conv1/weights, but 1 GiB of zeros follows its values
    good = npy_member(LAYERS['conv1'][0])
    data = raw_zip(bomb_members('conv1/weights', deflated_zeros(good, 1024), 8, len(good),
                                0))
    refused(worker, data, 'conv1/weights.npy inflates to more bytes than it declares')


def test_member_header_claiming_1e12_elements(worker):
    header = npy_header(shape_text='(1000000, 1000000)', descr="'<f4'")
    data = raw_zip(bomb_members(*stored('fc6/weights', header + bytes(24))))
    message = refused(worker, data, 'fc6/weights')
    assert ('has shape (1000000, 1000000), the model expects (2, 3)' in message
            or 'holds 24 bytes of data, its shape (1000000, 1000000) needs 4000000000000'
            in message)


def test_member_count_is_not_trusted(worker):
    data = bytearray(npz_bytes(LAYERS))
    data[-12:-10] = struct.pack('<H', 0xFFFF)          # the end record claims 65535 members
    data[-14:-12] = struct.pack('<H', 0xFFFF)
    refused(worker, bytes(data), '.npz')


# --- Memory: the file is mapped, not read and copied ------------------------------------

def test_large_file_is_mapped_not_copied(tmp_path):
    # A 64 MB file, read by a worker allowed 64 MB + 48 MB beyond its start: reading
    # the file and copying its arrays (the old loader: 3 times its size) cannot fit.
    big = dict(LAYERS, fc6=(np.ones((4096, 4096), np.float32), np.ones(4096, np.float32)),
               fc7=(np.ones((4096, 3), np.float32), LAYERS['fc7'][1]))
    data = py2_npy(py2_layer_entries(big))
    worker = fuzz_weights.Worker(expected='none', memory_margin=len(data) + (48 << 20))
    try:
        assert worker.check(data)[:2] == ('loaded', '')
        assert worker.check(data)[:2] == ('loaded', '')     # and the mapping was let go
    finally:
        worker.close()


# --- The fuzz, and the harness that catches what dies --------------------------------

def test_fuzz_a_few_thousand_mutated_files():
    counts, reasons, failures = fuzz_weights.run(cases=6000, seed=2012)
    assert failures == []
    assert counts['loaded'] > 100 and counts['refused'] > 5000    # mutations do both
    assert len(reasons) > 20


def test_the_harness_survives_a_crash_and_a_hang():
    worker = fuzz_weights.Worker(seconds=2.0)
    good = py2_npy(py2_layer_entries(LAYERS))
    try:
        assert worker.check(fuzz_weights.CRASH_CASE)[:2] == ('signal SIGSEGV', 'the worker died')
        assert worker.check(good)[0] == 'loaded'               # a new worker
        assert worker.check(fuzz_weights.HANG_CASE)[0] == 'timeout'
        assert worker.check(good)[0] == 'loaded'
    finally:
        worker.close()


def test_a_run_names_the_case_that_killed_the_worker(monkeypatch):
    real = fuzz_weights.mutate

    def mutate(rng, data):
        mutated, steps = real(rng, data)
        return (fuzz_weights.CRASH_CASE, 'crash') if rng.random() < 0.2 else (mutated, steps)
    monkeypatch.setattr(fuzz_weights, 'mutate', mutate)
    counts, _, failures = fuzz_weights.run(cases=20, seed=7)
    assert failures and all(outcome == 'signal SIGSEGV' for _, outcome, _, _ in failures)
    number = failures[0][0]
    assert fuzz_weights.case(fuzz_weights.seed_files(), 7, number)[0] == fuzz_weights.CRASH_CASE
    assert counts['refused'] + counts['loaded'] == 20 - len(failures)   # the run went on
