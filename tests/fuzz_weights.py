"""Fuzzing the weight-file reader: mutated small files of every format, read in a worker.

    python tests/fuzz_weights.py --cases 100000 --seed 0          # make fuzz
    python tests/fuzz_weights.py --seed 0 --case 1234 --save c.npy   # one case, to look at

Each case takes one of the seed files (Python 2's bvlc_alexnet.npy format, also
byte-swapped; Python 3's .npy with pickle protocols 2-5 and np.save's own; the .npz
of save_npz and of np.savez_compressed; all with tiny "AlexNet" shapes, a few hundred
bytes each) and mutates it: bits flipped, bytes set, inserted or deleted, a truncation,
a chunk duplicated. A worker process reads each case with
weight_files.load_weights(path, expected=tiny_shapes) under an address-space limit
(1 GiB above what Python and NumPy take, about 0.5 GB) and a time limit. Every
outcome must be a WeightFileError with a one-line message ("refused") or all 8 layers,
finite float32, of exactly the expected shapes ("loaded"). Anything else -- another
exception, a wrong result, a signal, a time-out -- is a failure, reported with its
seed and case number; the worker is restarted after it dies and the run goes on.
Prints the counts by outcome and the most common reasons for refusing.
"""
import argparse
import collections
import json
import os
import pickle
import random
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import weight_files  # noqa: E402
from weight_formats import (np_save_npy, npz_bytes, py2_layer_entries, py2_npy,  # noqa: E402
                            py3_npy, tiny_layers, tiny_shapes)

MEMORY_MARGIN = 1 << 30      # address space a worker may take beyond its start
CASE_SECONDS = 20.0          # per case; a real one takes milliseconds
CRASH_CASE = b'FUZZ-WORKER-CRASH'   # makes a worker kill itself: tests the harness
HANG_CASE = b'FUZZ-WORKER-HANG'


# --- The cases --------------------------------------------------------------------

def seed_files():
    """[(name, bytes)] of small valid weight files of every format."""
    layers = tiny_layers(num_classes=2, seed=0)
    seeds = [('py2.npy', py2_npy(py2_layer_entries(layers))),
             ('py2-unicode-keys.npy', py2_npy(py2_layer_entries(layers, unicode_keys=True))),
             ('py2-big-endian.npy', py2_npy(py2_layer_entries(layers, byteorder='>')))]
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        seeds.append(('py3-protocol%d.npy' % protocol, py3_npy(layers, protocol)))
    seeds.append(('np.save.npy', np_save_npy(layers)))
    seeds.append(('save_npz.npz', npz_bytes(layers, ['cat', 'dog'])))
    seeds.append(('savez_compressed.npz', npz_bytes(layers, ['cat', 'dog'], compressed=True)))
    return seeds


INTERESTING = (0, 1, 0x7f, 0x80, 0xff, 0x7fffffff, 0x80000000, 0xffffffff, 0x08000000)


def mutate(rng, data):
    """(mutated bytes, description): 1 to 3 byte-level mutations of `data`."""
    data = bytearray(data)
    steps = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        kind = rng.choice(('flip', 'flip', 'set', 'set', 'int', 'insert', 'delete',
                           'truncate', 'duplicate'))
        at = rng.randrange(max(len(data), 1))
        if kind == 'flip' and data:
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 'set' and data:
            data[at] = rng.choice((0, 0xff, 0x7f, 0x80, rng.randrange(256)))
        elif kind == 'int':
            value = rng.choice(INTERESTING + (rng.randrange(1 << 32),))
            data[at:at + 4] = value.to_bytes(4, 'little')
        elif kind == 'insert':
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 'delete':
            del data[at:at + rng.randint(1, 16)]
        elif kind == 'truncate':
            del data[at:]
        elif kind == 'duplicate' and data:
            start = rng.randrange(len(data))
            chunk = data[start:start + rng.randint(1, 64)]
            data[at:at] = chunk
        steps.append('%s@%d' % (kind, at))
    return bytes(data), ', '.join(steps)


def case(seeds, seed, number):
    """(bytes, description) of case `number` of the run with `seed`."""
    rng = random.Random('%d:%d' % (seed, number))
    name, data = seeds[rng.randrange(len(seeds))]
    data, steps = mutate(rng, data)
    return data, '%s: %s' % (name, steps)


# --- The worker: loads one case at a time under limits -------------------------------

def _address_space():
    """This process's virtual memory size in bytes (Linux)."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmSize in /proc/self/status')


def _check_loaded(layers, expected):
    """None if `layers` is a whole, finite set of exactly the expected shapes, else why not."""
    if list(layers) != list(weight_files.LAYER_NAMES):
        return 'layers %s' % list(layers)[:10]
    num_classes = layers['fc8'][1].shape[0]
    want = expected(num_classes) if expected else None
    for name, arrays in layers.items():
        if len(arrays) != 2:
            return '%s has %d arrays' % (name, len(arrays))
        for part, array in zip(weight_files.PARTS, arrays):
            if not isinstance(array, np.ndarray) or array.dtype != np.float32:
                return '%s/%s is %s' % (name, part, getattr(array, 'dtype', type(array)))
            if want is not None and array.shape != want[name][weight_files.PARTS.index(part)]:
                return '%s/%s has shape %s' % (name, part, array.shape)
            if not (np.isfinite(array.min()) and np.isfinite(array.max())):   # no copy
                return '%s/%s is not finite' % (name, part)
    return None


def worker_main(expected_name, memory_margin):
    """Reads case paths from stdin, one a line; writes one JSON outcome a line."""
    expected = {'tiny': tiny_shapes, 'none': None}[expected_name]
    limit = _address_space() + memory_margin
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    for line in sys.stdin:
        path = line.rstrip('\n')
        outcome, detail = 'loaded', ''
        with open(path, 'rb') as f:
            head = f.read(len(CRASH_CASE))
        if head == CRASH_CASE:
            os.kill(os.getpid(), signal.SIGSEGV)
        if head == HANG_CASE:
            time.sleep(3600)
        try:
            layers = weight_files.load_weights(path, expected=expected)
            problem = _check_loaded(layers, expected)
            if problem:
                outcome, detail = 'wrong result', problem
            layers = None          # let go of the file's mapping before the next case
        except weight_files.WeightFileError as err:
            message = str(err)
            outcome = 'refused' if '\n' not in message else 'multi-line message'
            detail = message
        except BaseException as err:   # any other exception is a bug: report, go on
            outcome, detail = 'exception %s' % type(err).__name__, str(err)[:300]
        sys.stdout.write(json.dumps({'outcome': outcome, 'detail': detail}) + '\n')
        sys.stdout.flush()


class Worker(object):
    """A worker process that loads cases under limits; restarted after it dies."""

    def __init__(self, expected='tiny', memory_margin=MEMORY_MARGIN, seconds=CASE_SECONDS):
        self.expected, self.memory_margin, self.seconds = expected, memory_margin, seconds
        self.process = None
        self.folder = tempfile.mkdtemp(prefix='fuzz-weights-')
        self.count = 0

    def start(self):
        env = dict(os.environ, OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1',
                   MKL_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
        self.stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--worker', '--expected', self.expected,
             '--memory-margin', str(self.memory_margin)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env)

    def check(self, data):
        """(outcome, detail, seconds) of loading `data` as a weight file in the worker."""
        if self.process is None:
            self.start()
        self.count += 1
        path = os.path.join(self.folder, 'case-%d.bin' % self.count)
        with open(path, 'wb') as f:
            f.write(data)
        started = time.time()
        try:
            self.process.stdin.write((path + '\n').encode())
            self.process.stdin.flush()
            ready, _, _ = select.select([self.process.stdout], [], [], self.seconds)
            line = self.process.stdout.readline() if ready else None
        except BrokenPipeError:
            line = b''
        seconds = time.time() - started
        os.remove(path)
        if line:
            reply = json.loads(line.decode())
            return reply['outcome'], reply['detail'], seconds
        return self._died(line is None) + (seconds,)

    def _died(self, timed_out):
        if timed_out:
            self.process.kill()
        code = self.process.wait()
        self.process = None
        if timed_out:
            return 'timeout', 'no answer within %.0f s' % self.seconds
        if code < 0:
            return 'signal %s' % signal.Signals(-code).name, 'the worker died'
        self.stderr.seek(0)
        return 'worker exited %d' % code, self.stderr.read()[-1000:].decode(errors='replace')

    def close(self):
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait()
            self.process = None
        os.rmdir(self.folder)


# --- A run --------------------------------------------------------------------------

GOOD = ('loaded', 'refused')


def reason(message):
    """A refusal's kind: its message without the path, numbers or details."""
    text = message.split(': ', 1)[-1].split(';')[0].split(' (')[0]
    return re.sub(r"\d+|'[^']*'", '#', text)[:70]


def run(cases, seed=0, first=0, worker=None, progress=None):
    """Runs cases first..first+cases-1; returns (outcome counts, reason counts, failures).

    failures: [(case number, outcome, description, detail)].
    """
    seeds = seed_files()
    own = worker is None
    worker = worker or Worker()
    counts, reasons, failures = collections.Counter(), collections.Counter(), []
    try:
        for number in range(first, first + cases):
            data, description = case(seeds, seed, number)
            outcome, detail, _ = worker.check(data)
            counts[outcome] += 1
            if outcome == 'refused':
                reasons[reason(detail)] += 1
            elif outcome not in GOOD:
                failures.append((number, outcome, description, detail))
            if progress and (number - first + 1) % progress == 0:
                print('%d cases: %s' % (number - first + 1, dict(counts)), flush=True)
    finally:
        if own:
            worker.close()
    return counts, reasons, failures


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Fuzz weight_files.load_weights with mutated small weight files.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--cases', type=int, default=10000, help='how many cases to run')
    parser.add_argument('--seed', type=int, default=0, help='the run\'s seed')
    parser.add_argument('--first', type=int, default=0, help='the first case number')
    parser.add_argument('--case', type=int, default=None,
                        help='run only this case and print its outcome')
    parser.add_argument('--save', default=None, help='with --case: write its bytes here')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--expected', default='tiny', choices=('tiny', 'none'),
                        help=argparse.SUPPRESS)
    parser.add_argument('--memory-margin', type=int, default=MEMORY_MARGIN,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.expected, args.memory_margin)
    if args.case is not None:
        data, description = case(seed_files(), args.seed, args.case)
        if args.save:
            with open(args.save, 'wb') as f:
                f.write(data)
        worker = Worker()
        print('seed %d case %d (%s): %s: %s' % ((args.seed, args.case, description)
                                                + worker.check(data)[:2]))
        worker.close()
        return
    started = time.time()
    counts, reasons, failures = run(args.cases, args.seed, args.first,
                                    progress=max(args.cases // 10, 1))
    print('%d cases (seed %d, cases %d-%d) in %.0f s:'
          % (args.cases, args.seed, args.first, args.first + args.cases - 1,
             time.time() - started))
    for outcome, count in counts.most_common():
        print('  %-22s %7d' % (outcome, count))
    print('most common reasons for refusing:')
    for text, count in reasons.most_common(15):
        print('  %7d  %s' % (count, text))
    for number, outcome, description, detail in failures:
        print('FAILED seed %d case %d (%s): %s: %s'
              % (args.seed, number, description, outcome, detail))
    if failures:
        sys.exit('%d failures; rerun one with --seed %d --case N --save case.bin'
                 % (len(failures), args.seed))


if __name__ == '__main__':
    main()
