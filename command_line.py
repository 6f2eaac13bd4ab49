"""The command-line convention every script follows.

* One name for one idea, shared where it is the same idea:
  --weights (a weight source: a file, a checkpoint, a run folder or 'none'),
  --out (the file or folder a script writes), --run (a fine-tuning run
  folder), --seed, --batch-size, --top-k, --tensorboard-dir (where TensorBoard
  logs go), --no-progress, --model-parallel (the paper's two-GPU layout).
* An error is one line on stderr, 'error: ...', saying what to do; never a
  traceback, never argparse's usage block.
* Exit statuses: 0 done; 1 done, but some input files could not be read (each
  reported, the others done); 2 bad arguments or input; 3 a training run
  diverged; 130 interrupted (Ctrl-C).
* Printed hints are commands that run as printed: they name the Python that
  runs the script (e.g. .venv/bin/python when it is not on the PATH) and the
  TensorBoard installed beside it.

Every script has parse_args(argv=None), main(argv=None) returning the exit
status, and ends with `sys.exit(main())`.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys

EXIT_OK = 0
EXIT_PARTIAL = 1          # some inputs could not be read; the rest were done
EXIT_BAD_INPUT = 2        # bad arguments, files or settings: nothing was done
EXIT_DIVERGED = 3         # the training loss stopped being finite
EXIT_INTERRUPTED = 130    # Ctrl-C (128 + SIGINT, as shells report it)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults in --help and one-line errors (exit status 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('formatter_class', argparse.ArgumentDefaultsHelpFormatter)
        super(ArgumentParser, self).__init__(*args, **kwargs)

    def error(self, message):
        print('error: %s (see %s --help)' % (message, self.prog), file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def positive_int(text):
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError('%r is not a whole number' % text) from None
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1, not %d' % value)
    return value


def add_weights(parser, default, what='the weights'):
    parser.add_argument('--weights', default=default,
                        help="%s: a weight file (bvlc_alexnet.npz, .npy or .caffemodel, a "
                             "fine-tuned weights.npz), a checkpoint, a "
                             "run folder (its newest checkpoint), or 'none' for random "
                             'weights' % what)


def add_out(parser, default, what):
    parser.add_argument('--out', default=default, help=what)


def add_seed(parser, what='for random weights (--weights none)'):
    parser.add_argument('--seed', type=int, default=0, help=what)


def add_batch_size(parser, default, what='images per forward pass'):
    parser.add_argument('--batch-size', type=positive_int, default=default, help=what)


def add_progress(parser):
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')


def device_pair(text):
    """argparse type: two TensorFlow device names, comma-separated ('/gpu:0,/gpu:1')."""
    devices = tuple(name.strip() for name in text.split(','))
    if len(devices) != 2 or not all(devices):
        raise argparse.ArgumentTypeError('give two devices, one per column, e.g. '
                                         '/gpu:0,/gpu:1; not %r' % text)
    import tensorflow.compat.v1 as tf   # TensorFlow's own reading of a device name
    for device in devices:
        try:
            tf.DeviceSpec.from_string(device)
        except ValueError as err:
            raise argparse.ArgumentTypeError('%r is not a device name (%s); give two like '
                                             '/gpu:0,/gpu:1' % (device, one_line(err))) from None
    return devices


def add_model_parallel(parser, *aliases):
    parser.add_argument('--model-parallel', *aliases, dest='model_parallel', type=device_pair,
                        default=None, metavar='DEVICE,DEVICE',
                        help="the paper's two-GPU layout (section 3.2, Figure 2): half of every "
                             "layer's kernels on each device, e.g. /gpu:0,/gpu:1; the same "
                             'weights and outputs as on one device. A machine without those '
                             'devices runs their ops on the ones it has (soft placement), '
                             'so this also runs on a CPU')


# --- Errors and exit statuses --------------------------------------------------------

def one_line(err):
    """An exception as one line (TensorFlow's messages run to many)."""
    text = getattr(err, 'message', None) or str(err)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def fail(message):
    """Prints 'error: <message>' as one line and returns the exit status for bad input."""
    print('error: %s' % ' '.join(str(message).split()), file=sys.stderr)
    return EXIT_BAD_INPUT


def run_main(body, errors=()):
    """Runs body() and returns its exit status, turning the expected failures into statuses.

    Args:
      body: function without arguments returning an exit status (None: 0).
      errors: exception classes whose message the user should read: one line, status 2.
    """
    try:
        return body() or EXIT_OK
    except tuple(errors) as err:
        return fail(err)
    except MemoryError:
        return fail('out of memory: close other programs, or give fewer or smaller inputs '
                    '(a smaller --batch-size where there is one)')
    except KeyboardInterrupt:
        print('\ninterrupted', file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:       # output piped into `head` that stopped reading
        sys.stdout = open(os.devnull, 'w')
        return EXIT_OK


# --- Hints that run as printed ---------------------------------------------------------

def _program(path):
    """How to name a program in a printed command: its bare name when the PATH finds
    that very file, else a path relative to here (or absolute)."""
    name = os.path.basename(path)
    found = shutil.which(name)
    if found and os.path.abspath(found) == os.path.abspath(path):
        return name
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def python_command(script, *args):
    """The command that runs `script` with this Python, e.g. '.venv/bin/python finetune.py'."""
    return ' '.join([_program(sys.executable), script] + [shlex.quote(str(a)) for a in args])


def tensorboard_command(log_dir):
    """The command that starts the TensorBoard installed beside this Python on log_dir."""
    beside = os.path.join(os.path.dirname(sys.executable), 'tensorboard')
    if os.path.exists(beside):
        program = _program(beside)
    else:
        program = _program(sys.executable) + ' -m tensorboard.main'
    return '%s --logdir %s' % (program, shlex.quote(str(log_dir)))
