"""A child process that runs the project's scripts and functions case after case, under limits.

The hostile-input tests (tests/test_hostile_*.py) hand it one case at a time: a
script's main(argv), or a function returning something JSON can hold. The child
runs with an address-space limit (RLIMIT_AS), so a case that would allocate
gigabytes fails there instead of taking the machine down; the parent gives each
case a time limit and kills the child if it is exceeded (a hang). A child that
dies (a signal, the limit) is reported with the case that killed it and a new
one is started for the next case.

    with ScriptWorker(limit_mb=3000) as worker:
        result = worker.main('validate_alexnet_on_imagenet', ['x.jpg', '--weights', 'none'])
        result.code, result.out, result.err       # exit status and what it printed
        worker.call('datasets', 'find_dataset', ['data/x'])   # (value, error) of a function
"""
import collections
import contextlib
import io
import json
import os
import select
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# code: exit status; out, err: what it printed; seconds: how long it took;
# value: a function's result (JSON), error: 'ExceptionType: message' if it raised.
Result = collections.namedtuple('Result', 'code out err seconds value error')


class WorkerDied(AssertionError):
    """The child died or hung on a case: the test fails with what happened."""


class ScriptWorker(object):
    """The parent's handle on the child; see the module docstring."""

    def __init__(self, limit_mb=3000, timeout=120):
        self.limit_mb = limit_mb
        self.timeout = timeout
        self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _start(self):
        # glibc reserves 64 MB of address space per thread arena, up to 8 per core: with
        # TensorFlow's and tf.data's threads that alone could meet the limit on a busy
        # machine, and a case would run out of memory for no reason of its own.
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', OPENBLAS_NUM_THREADS='1',
                   PYTHONDONTWRITEBYTECODE='1', PYTHONIOENCODING='utf-8', MALLOC_ARENA_MAX='2')
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), str(self.limit_mb)], cwd=REPO,
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def close(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def _ask(self, request, timeout):
        if self.process is None:
            self._start()
        self.process.stdin.write((json.dumps(request) + '\n').encode('utf-8'))
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout or self.timeout)
        if not ready:
            self.close()
            raise WorkerDied('%s hung: no answer in %s s' % (request, timeout or self.timeout))
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            self.process = None
            raise WorkerDied('%s killed the process (exit status %d%s)' % (
                request, code, ', signal %d' % -code if code < 0 else ''))
        return Result(**json.loads(line.decode('utf-8')))

    def main(self, module, argv, cwd=None, timeout=None):
        """Runs module.main(argv) in the child; returns a Result."""
        return self._ask({'module': module, 'main': argv, 'cwd': cwd}, timeout)

    def call(self, module, function, args, cwd=None, timeout=None):
        """Runs module.function(*args) in the child; returns a Result (value or error)."""
        return self._ask({'module': module, 'function': function, 'args': args, 'cwd': cwd},
                         timeout)


# --- The child -----------------------------------------------------------------------

def _jsonable(value):
    if hasattr(value, 'shape') and hasattr(value, 'dtype'):       # a NumPy array: its shape
        return {'ndarray': list(value.shape), 'dtype': str(value.dtype)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _run_case(request):
    import importlib
    out, err = io.StringIO(), io.StringIO()
    value = error = None
    code = 0
    started = time.time()
    if request.get('cwd'):
        os.chdir(request['cwd'])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module = importlib.import_module(request['module'])
            if 'main' in request:
                code = module.main(request['main'])
            else:
                value = _jsonable(getattr(module, request['function'])(*request['args']))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if not isinstance(exit_.code, int) and exit_.code is not None:
                print(exit_.code, file=err)
        except BaseException as caught:            # what the test must see as a failure
            import traceback
            code = -1
            error = '%s: %s' % (type(caught).__name__, caught)
            err.write('Traceback (caught by the worker)\n' + traceback.format_exc())
    os.chdir(REPO)
    return {'code': code if code is not None else 0, 'out': out.getvalue(),
            'err': err.getvalue(), 'seconds': time.time() - started, 'value': value,
            'error': error}


def _child(limit_mb):
    import resource
    sys.path.insert(0, REPO)
    sys.path.insert(0, HERE)
    limit = limit_mb * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    answers = os.fdopen(os.dup(1), 'w', encoding='utf-8')
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)   # C code printing cannot garble the answers
    for line in sys.stdin:
        answers.write(json.dumps(_run_case(json.loads(line)), ensure_ascii=True) + '\n')
        answers.flush()


if __name__ == '__main__':
    _child(int(sys.argv[1]))
