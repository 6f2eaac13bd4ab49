"""Runs that must survive: hostile flags, two writers, kills, cut and moved checkpoints.

Each case runs finetune.py, export_model.py or evaluate.py through its main() in
tests/script_worker.py's child (an address-space and a time limit) or, where two
processes are the point, as real commands side by side. Each must end with the
documented exit status and one line saying what to do, with nothing lost: the
earlier checkpoints intact, the run folder usable.
"""
import csv
import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import weight_files
from script_worker import ScriptWorker

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='the worker sets RLIMIT_AS')

LIMIT_MB = 6000          # training's threads reserve address space; the cases need far less
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def worker():
    with ScriptWorker(LIMIT_MB, timeout=600) as process:
        yield process


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """Reddish cats and bluish dogs, 6 of each, 64x48."""
    folder = tmp_path_factory.mktemp('data')
    rng = np.random.RandomState(0)
    for name, colour in (('cat', (200, 40, 40)), ('dog', (40, 40, 200))):
        os.makedirs(str(folder / name))
        for i in range(6):
            pixels = np.clip(np.array(colour) + rng.randint(-30, 30, (48, 64, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(str(folder / name / ('%d.jpg' % i)))
    return str(folder)


def options(dataset, run, *extra):
    return ['--data', dataset, '--run', str(run), '--weights', 'none', '--train-layers', 'fc8',
            '--batch-size', '4', '--val-fraction', '0.25', '--no-progress',
            '--keep-checkpoints', '2'] + list(extra)


def one_line_error(result, status=2):
    assert result.code == status, (result.code, result.err[-3000:])
    assert 'Traceback' not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.err
    return errors[0]


def metrics(run):
    with open(os.path.join(str(run), 'metrics.csv'), newline='') as f:
        return list(csv.DictReader(f))


FLAGS = [
    (['--learning-rate', 'nan'], 'must be a number above 0'),
    (['--learning-rate', 'inf'], 'must be a number above 0'),
    (['--learning-rate', '-0.01'], 'must be a number above 0'),
    (['--momentum', 'nan'], 'in [0, 1)'),
    (['--momentum', '1.5'], 'in [0, 1)'),
    (['--weight-decay', 'nan'], 'at least 0'),
    (['--keep-prob', '1.5'], 'in (0, 1]'),
    (['--val-fraction', 'nan'], 'in [0, 1)'),
    (['--seed', '-1'], '0..2147483647'),
    (['--seed', '99999999999'], '0..2147483647'),
    (['--max-steps', '0'], 'at least 1'),
    (['--max-steps', '-5'], 'at least 1'),
    (['--epochs', '0'], 'at least 1'),
    (['--keep-checkpoints', '0'], 'at least 1'),
    (['--summary-every', '0'], 'at least 1'),
    (['--batch-size', '0'], 'at least 1'),
    (['--batch-size', '10000000'], 'use at most'),
    (['--train-layers', 'fc9'], 'unknown layer fc9'),
    (['--cache-views', 'lots'], "'ten-crops' or a positive number"),
    (['--unknown-flag'], 'unrecognized arguments'),
]


@pytest.mark.parametrize('extra, says', FLAGS, ids=[' '.join(f) for f, _ in FLAGS])
def test_bad_flags_are_refused_up_front_and_leave_nothing(worker, dataset, tmp_path, extra,
                                                          says):
    run = tmp_path / 'run'
    result = worker.main('finetune', options(dataset, run, *extra), timeout=300)
    assert says in one_line_error(result)
    assert not run.exists()


def test_a_run_folder_left_half_made_is_refused_with_advice(worker, dataset, tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'split.json').write_text('{}')                    # a run killed while it set up
    message = one_line_error(worker.main('finetune', options(dataset, run), timeout=300))
    assert 'never finished an epoch: delete it to start over' in message


def test_evaluate_and_export_refuse_broken_runs_in_one_line(worker, tmp_path):
    run = tmp_path / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    (run / 'checkpoints' / 'model.ckpt-5.index').write_bytes(b'not an index')
    (run / 'checkpoints' / 'model.ckpt-5.data-00000-of-00001').write_bytes(b'')
    message = one_line_error(worker.main('export_model', ['--weights', str(run), '--out',
                                                           str(tmp_path / 'out')]))
    assert 'no complete checkpoint' in message and not (tmp_path / 'out').exists()
    (run / 'split.json').write_text('[' * 100000)
    message = one_line_error(worker.main('evaluate', ['--run', str(run), '--weights', 'none']))
    assert 'cannot read the split file' in message


@pytest.mark.slow
def test_a_cut_checkpoint_and_a_moved_folder(worker, dataset, tmp_path):
    """Resume and export use the folder's own newest complete checkpoint, wherever it is."""
    run = tmp_path / 'first' / 'run'
    assert worker.main('finetune', options(dataset, run, '--epochs', '2')).code == 0
    moved = tmp_path / 'second' / 'run'
    shutil.copytree(str(run), str(moved))
    shutil.rmtree(str(tmp_path / 'first'))                    # the original is gone
    newest = sorted(glob.glob(str(moved / 'checkpoints' / '*.data-*')))[-1]
    with open(newest, 'r+b') as f:
        f.truncate(100)
    result = worker.main('finetune', options(dataset, moved, '--epochs', '3', '--resume'))
    assert result.code == 0 and 'Traceback' not in result.err, result.err[-3000:]
    assert 'model.ckpt-4 is damaged' in result.err and 'using' in result.err
    assert 'resumed from %s' % (moved / 'checkpoints' / 'model.ckpt-2') in result.out
    assert [int(r['epoch']) for r in metrics(moved)] == [1, 2, 2, 3]   # epoch 2 again
    export = worker.main('export_model', ['--weights', str(moved), '--out',
                                          str(tmp_path / 'export'), '--format', 'frozen'])
    assert export.code == 0, export.err[-3000:]
    assert os.path.isfile(str(tmp_path / 'export' / 'frozen_graph.pb'))


@pytest.mark.slow
def test_resume_with_other_steps_and_batches_trains_on(worker, dataset, tmp_path):
    run = tmp_path / 'run'
    assert worker.main('finetune', options(dataset, run, '--epochs', '1')).code == 0
    for extra in (['--max-steps', '1'], ['--batch-size', '16']):
        epochs = len(metrics(run)) + 1
        result = worker.main('finetune', options(dataset, run, '--resume', '--epochs',
                                                 str(epochs), *extra))
        assert result.code == 0, result.err[-3000:]
        last = metrics(run)[-1]
        assert int(last['epoch']) == epochs and np.isfinite(float(last['train_loss']))


@pytest.mark.slow
def test_a_diverging_run_stops_with_3_and_keeps_finite_weights(worker, dataset, tmp_path):
    run = tmp_path / 'run'
    result = worker.main('finetune', options(dataset, run, '--epochs', '2', '--learning-rate',
                                             '1e38', '--weights', 'none'))
    assert result.code == 3 and 'Traceback' not in result.err, result.err[-3000:]
    assert 'lower --learning-rate' in result.err
    assert not (run / 'weights.npz').exists() and not (run / 'best').exists()


def command(dataset, run, *extra):
    return [sys.executable, 'finetune.py'] + options(dataset, run, *extra)


@pytest.mark.slow
def test_two_writers_of_one_run_one_is_refused(dataset, tmp_path):
    run = tmp_path / 'run'
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    first = subprocess.Popen(command(dataset, run, '--epochs', '2'), cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             universal_newlines=True)
    try:
        deadline = time.time() + 300
        while not (run / 'lock').exists() or not (run / 'lock').read_text():
            assert time.time() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.2)
        second = subprocess.run(command(dataset, run, '--epochs', '2', '--resume'), cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=300)
        out, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert second.returncode == 2 and 'Traceback' not in second.stderr
    assert 'is being written by process %d' % first.pid in second.stderr
    assert first.returncode == 0, err[-3000:]
    assert [int(r['epoch']) for r in metrics(run)] == [1, 2]   # one writer's rows, in order


@pytest.mark.slow
def test_kill_9_mid_epoch_loses_only_that_epoch(dataset, tmp_path):
    run = tmp_path / 'run'
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    assert subprocess.run(command(dataset, run, '--epochs', '1'), cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=600).returncode == 0
    victim = subprocess.Popen(command(dataset, run, '--epochs', '3', '--resume'), cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True)
    for line in victim.stdout:                      # wait until it trains epoch 2
        if line.startswith('resumed from'):
            break
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert [int(r['epoch']) for r in metrics(run)] in ([1], [1, 2])
    done = subprocess.run(command(dataset, run, '--epochs', '3', '--resume'), cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=600)
    assert done.returncode == 0 and 'Traceback' not in done.stderr, done.stderr[-3000:]
    assert [int(r['epoch']) for r in metrics(run)][-1] == 3
    layers = weight_files.load_weights(str(run / 'weights.npz'))
    assert all(np.isfinite(part).all() for pair in layers.values() for part in pair)
