"""A fine-tuning run's folder: the files it holds, its checkpoints, and its one writer.

    logs/<run>/            finetune.py --run logs/<run>
      lock                 names the process writing the run (one writer at a time)
      run.json             how the run started: data, weights, trained layers, seed
      split.json           the training/validation split, reused on --resume
      class_names.txt      one name per class, in label order
      bad_files.txt        photos that did not decode, with the reason
      metrics.csv          one row per epoch: loss, accuracy, learning rate, seconds, and
                           what the learning-rate schedule decided
      curves.png           the training curves
      train/, validation/  TensorBoard logs
      checkpoints/         model.ckpt-<step>.* after every epoch (momentum too), for --resume
      best/                the weights of the best validation accuracy
      weights.npz          the final weights (weight_files.save_npz), for the other scripts

Every script that writes or reads a run uses these names and functions. A run
folder can be moved or copied: checkpoints are found by their files, not by the
paths TensorFlow's `checkpoint` index records, and that index is written with
relative paths. A checkpoint whose files are missing or cut short (a full
disk, a copy interrupted) is passed over for the newest complete one, with a note.
"""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import socket
import sys
import time

import numpy as np
import tensorflow.compat.v1 as tf

import command_line
from image_files import display_path

SETTINGS_FILE = 'run.json'
SPLIT_FILE = 'split.json'
CLASS_NAMES_FILE = 'class_names.txt'
BAD_FILES_FILE = 'bad_files.txt'
METRICS_FILE = 'metrics.csv'
CURVES_FILE = 'curves.png'
WEIGHTS_FILE = 'weights.npz'
LOCK_FILE = 'lock'
CHECKPOINTS_DIR = 'checkpoints'
BEST_DIR = 'best'
TRAIN_LOGS = 'train'
VALIDATION_LOGS = 'validation'
CHECKPOINT_NAME = 'model.ckpt'          # checkpoints are model.ckpt-<global step>
METRICS_COLUMNS = ('epoch', 'step', 'train_loss', 'train_accuracy', 'val_loss',
                   'val_accuracy', 'learning_rate', 'seconds', 'schedule')
CURVE_COLUMNS = ('epoch', 'train_loss', 'train_accuracy', 'val_loss', 'val_accuracy')

RANDOM_START = 'none'                   # run.json's weights of a run from random weights
_STEP = re.compile(r'-(\d+)\.index$')


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (the message says what to do)."""


# --- Small files ------------------------------------------------------------------

def read_class_names(folder):
    """The class names a run stored in its folder, or None."""
    path = os.path.join(folder, CLASS_NAMES_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding='utf-8', errors='replace') as f:
        return [line.rstrip('\n') for line in f if line.strip()]


def write_class_names(folder, names):
    with open(os.path.join(folder, CLASS_NAMES_FILE), 'w', encoding='utf-8') as f:
        f.write(''.join(name + '\n' for name in names))


def write_bad_files(folder, bad):
    """bad_files.txt: one 'path<TAB>reason' line per photo, paths readable (\\xNN for odd bytes)."""
    with open(os.path.join(folder, BAD_FILES_FILE), 'w', encoding='utf-8') as f:
        f.writelines('%s\t%s\n' % (display_path(path), reason) for path, reason in bad)


def append_metrics(folder, row):
    """Appends one epoch's row (a dict with METRICS_COLUMNS) to metrics.csv."""
    path = os.path.join(folder, METRICS_FILE)
    new = not os.path.exists(path)
    columns = METRICS_COLUMNS
    if not new:
        # A run resumed from an older version goes on with the columns its file has.
        with open(path, newline='', encoding='utf-8', errors='replace') as f:
            columns = next(csv.reader(f), None) or METRICS_COLUMNS
    with open(path, 'a', newline='', encoding='utf-8') as f:
        writer = csv.DictWriter(f, columns, extrasaction='ignore')
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_metrics(run):
    """A run's metrics.csv as {column: float array} of CURVE_COLUMNS (NaN where empty).

    Args:
      run: a run folder or a metrics.csv file.
    Raises:
      RunFolderError: no such file, a column missing, or a value that is not a number.
    """
    path = os.path.join(run, METRICS_FILE) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise RunFolderError('%s: no %s; pass fine-tuning run folders (logs/<run>) or their %s'
                             % (display_path(run), METRICS_FILE, METRICS_FILE))
    with open(path, newline='', encoding='utf-8', errors='replace') as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in CURVE_COLUMNS if not rows or c not in rows[0]]
    if missing:
        raise RunFolderError('%s: %s; expected the columns %s' % (
            display_path(path), 'no rows' if not rows else 'missing columns ' + ', '.join(missing),
            ', '.join(CURVE_COLUMNS)))
    try:
        return {column: np.array([float(row[column]) if row[column] not in ('', None)
                                  else math.nan for row in rows]) for column in CURVE_COLUMNS}
    except ValueError as err:
        raise RunFolderError('%s: not a number (%s)' % (display_path(path), err)) from None


def best_accuracy(folder):
    """The best validation accuracy in a run's metrics.csv (for --resume), or -1."""
    try:
        values = read_metrics(folder)['val_accuracy']
    except RunFolderError:
        return -1.0
    values = values[np.isfinite(values)]
    return float(values.max()) if len(values) else -1.0


def read_settings(folder):
    """The run's run.json as a dict ({} if it has none or it is unreadable)."""
    try:
        with open(os.path.join(folder, SETTINGS_FILE), encoding='utf-8') as f:
            settings = json.load(f)
    except (OSError, ValueError, RecursionError):
        return {}
    return settings if isinstance(settings, dict) else {}


def update_settings(folder, **values):
    """Adds values to run.json (e.g. the feature cache a run used), atomically."""
    settings = read_settings(folder)
    settings.update(values)
    temporary = os.path.join(folder, SETTINGS_FILE + '.tmp')
    with open(temporary, 'w', encoding='utf-8') as f:
        json.dump(settings, f, indent=1)
    os.replace(temporary, os.path.join(folder, SETTINGS_FILE))


def started_from_random(source):
    """Whether a run folder (or a file or checkpoint inside one) began from random weights."""
    source = os.fspath(source)
    folder = source if os.path.isdir(source) else os.path.dirname(source)
    for candidate in (folder, os.path.dirname(folder)):
        settings = read_settings(candidate)
        if settings:
            return settings.get('weights') == RANDOM_START
    return False


# --- One writer -------------------------------------------------------------------

class WriterLock(object):
    """The run folder's lock: held by the one process that writes the run.

    An operating-system lock on `lock` (flock; msvcrt on Windows), so a process
    that dies, however it dies, lets go of it; the file names the holder for the
    refusal message. A second writer gets RunFolderError at once.
    """

    def __init__(self, folder):
        self.path = os.path.join(folder, LOCK_FILE)
        self._file = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            lock_file = open(self.path, 'a+', encoding='utf-8')
        except OSError as err:
            raise RunFolderError('cannot write a run in %s (%s); choose a folder you can write '
                                 'with --run' % (display_path(folder),
                                                 err.strerror or type(err).__name__)) from None
        try:
            _lock(lock_file)
        except OSError:
            lock_file.seek(0)
            holder = lock_file.read(200).strip() or 'another process'
            lock_file.close()
            raise RunFolderError('%s is being written by %s; wait for it to finish, or choose '
                                 'another --run' % (display_path(os.path.dirname(self.path)),
                                                    holder)) from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write('process %d on %s since %s\n' % (os.getpid(), socket.gethostname(),
                                                         time.strftime('%Y-%m-%d %H:%M:%S')))
        lock_file.flush()
        self._file = lock_file

    def release(self):
        if self._file is not None:
            # The file stays (removing it would let two processes lock two files).
            self._file.seek(0)
            self._file.truncate()
            _unlock(self._file)
            self._file.close()
            self._file = None


if sys.platform == 'win32':       # pragma: no cover - the course runs on Linux and macOS too
    import msvcrt

    def _lock(f):
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(f):
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock(f):
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(f):
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- Checkpoints ------------------------------------------------------------------

def checkpoint_prefixes(folder):
    """Checkpoint prefixes in a folder, by their .index files, newest (highest step) first."""
    found = []
    for index in glob.glob(os.path.join(glob.escape(folder), '*.index')):
        match = _STEP.search(index)
        found.append((int(match.group(1)) if match else -1, index[:-len('.index')]))
    return [prefix for _, prefix in sorted(found, reverse=True)]


def checkpoint_problem(prefix):
    """Why a checkpoint cannot be restored (missing or short data files), or None."""
    try:
        reader = tf.train.NewCheckpointReader(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as err:       # TF raises several kinds for a damaged index
        return 'its index is unreadable (%s)' % command_line.one_line(err)
    needed = sum(int(np.prod(shape)) * dtypes[name].size for name, shape in shapes.items())
    shards = glob.glob(glob.escape(prefix) + '.data-*-of-*')
    have = sum(os.path.getsize(shard) for shard in shards)
    if have < needed:
        return ('its data holds %d of the %d bytes its index lists (cut short?)'
                % (have, needed))
    return None


def checkpoint_of(source, note=None):
    """The checkpoint prefix `source` names, or None if it names no checkpoint.

    `source` may be a checkpoint prefix (logs/run/checkpoints/model.ckpt-120),
    a folder of checkpoints, or a run folder (its checkpoints/). In a folder the
    newest complete checkpoint is taken; newer ones that are damaged are passed
    over and `note` (default: print to stderr) is told which and why.

    Raises:
      RunFolderError: the folder has checkpoints but none is complete.
    """
    source = os.fspath(source)
    if os.path.isfile(source + '.index'):
        problem = checkpoint_problem(source)
        if problem:
            raise RunFolderError('%s: cannot be restored: %s; pass its run folder to use the '
                                 'newest complete checkpoint' % (display_path(source), problem))
        return source
    for folder in (source, os.path.join(source, CHECKPOINTS_DIR)):
        if not os.path.isdir(folder):
            continue
        prefixes = checkpoint_prefixes(folder)
        if not prefixes:
            continue
        problems = []
        for prefix in prefixes:
            problem = checkpoint_problem(prefix)
            if problem is None:
                if problems:
                    (note or _note)('note: the newest checkpoint %s is damaged: %s; using %s'
                                    % (display_path(problems[0][0]), problems[0][1],
                                       display_path(prefix)))
                return prefix
            problems.append((prefix, problem))
        raise RunFolderError('%s: no complete checkpoint (%s: %s); start the run again without '
                             '--resume, or use its weights.npz'
                             % (display_path(folder), display_path(problems[0][0]),
                                problems[0][1]))
    return None


def _note(text):
    print(text, file=sys.stderr)


def latest_run(log_dir):
    """The most recently changed run folder under log_dir that has checkpoints, or None."""
    if not os.path.isdir(log_dir):
        return None
    runs = [os.path.join(log_dir, name) for name in os.listdir(log_dir)
            if not name.startswith('.')
            and checkpoint_prefixes(os.path.join(log_dir, name, CHECKPOINTS_DIR))]
    return max(runs, key=os.path.getmtime) if runs else None
