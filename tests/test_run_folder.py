"""run_folder.py: one writer per run, checkpoints found by their files, the small files."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import run_folder

HERE = os.path.dirname(os.path.abspath(__file__))


def save_checkpoints(folder, steps, size=1000):
    """Checkpoints of one variable of `size` floats at the given steps, as finetune writes."""
    os.makedirs(str(folder), exist_ok=True)
    with tf.Graph().as_default():
        variable = tf.get_variable('w', [size], initializer=tf.ones_initializer())
        saver = tf.train.Saver(max_to_keep=None, save_relative_paths=True)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            for step in steps:
                saver.save(session, os.path.join(str(folder), 'model.ckpt'), global_step=step)


def cut_short(prefix):
    data = prefix + '.data-00000-of-00001'
    with open(data, 'r+b') as f:
        f.truncate(os.path.getsize(data) // 2)


def test_newest_complete_checkpoint_is_taken_with_a_note(tmp_path):
    run = tmp_path / 'run'
    save_checkpoints(run / 'checkpoints', [3, 10, 7])
    notes = []
    assert run_folder.checkpoint_of(str(run), notes.append).endswith('model.ckpt-10')
    assert notes == []
    cut_short(str(run / 'checkpoints' / 'model.ckpt-10'))
    assert run_folder.checkpoint_of(str(run), notes.append).endswith('model.ckpt-7')
    assert 'model.ckpt-10 is damaged' in notes[0] and 'cut short' in notes[0]
    # Named directly, a damaged checkpoint is refused, not replaced.
    with pytest.raises(run_folder.RunFolderError, match='cannot be restored'):
        run_folder.checkpoint_of(str(run / 'checkpoints' / 'model.ckpt-10'))
    for step in (3, 7):
        cut_short(str(run / 'checkpoints' / ('model.ckpt-%d' % step)))
    with pytest.raises(run_folder.RunFolderError, match='no complete checkpoint'):
        run_folder.checkpoint_of(str(run))
    assert run_folder.checkpoint_of(str(tmp_path / 'empty')) is None


def test_a_moved_run_finds_its_own_checkpoints(tmp_path):
    save_checkpoints(tmp_path / 'a' / 'checkpoints', [5])
    with open(str(tmp_path / 'a' / 'checkpoints' / 'checkpoint')) as f:
        assert '/' not in f.read()
    os.rename(str(tmp_path / 'a'), str(tmp_path / 'b'))
    prefix = run_folder.checkpoint_of(str(tmp_path / 'b'))
    assert prefix == str(tmp_path / 'b' / 'checkpoints' / 'model.ckpt-5')
    # An index with absolute paths of a folder that is gone does not matter either.
    with open(str(tmp_path / 'b' / 'checkpoints' / 'checkpoint'), 'w') as f:
        f.write('model_checkpoint_path: "/gone/model.ckpt-5"\n')
    assert run_folder.checkpoint_of(str(tmp_path / 'b')) == prefix


HOLD = '''
import sys, time
sys.path.insert(0, %r)
import run_folder
lock = run_folder.WriterLock(sys.argv[1])
lock.acquire()
print('holding', flush=True)
time.sleep(60)
'''


def test_one_writer_at_a_time_and_a_dead_writer_lets_go(tmp_path):
    folder = str(tmp_path / 'run')
    holder = subprocess.Popen([sys.executable, '-c', HOLD % os.path.dirname(HERE), folder],
                              stdout=subprocess.PIPE, universal_newlines=True)
    try:
        assert holder.stdout.readline().strip() == 'holding'
        with pytest.raises(run_folder.RunFolderError) as err:
            run_folder.WriterLock(folder).acquire()
        assert 'is being written by process %d' % holder.pid in str(err.value)
        assert '\n' not in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    # Killed: the lock file still names it, but the lock is free.
    with open(os.path.join(folder, 'lock')) as f:
        assert 'process %d' % holder.pid in f.read()
    with run_folder.WriterLock(folder):
        with open(os.path.join(folder, 'lock')) as f:
            assert 'process %d' % os.getpid() in f.read()
    with open(os.path.join(folder, 'lock')) as f:
        assert f.read() == ''


def write_metrics(folder, rows):
    for row in rows:
        run_folder.append_metrics(str(folder), dict(zip(run_folder.METRICS_COLUMNS, row)))


def test_metrics_round_trip_and_best_accuracy(tmp_path):
    assert run_folder.best_accuracy(str(tmp_path)) == -1
    write_metrics(tmp_path, [(1, 10, 0.6, 0.7, 0.4, 0.8, 0.001, 5.0),
                             (2, 20, 0.3, 0.9, None, None, 0.001, 9.5),
                             (3, 30, 0.2, 0.95, 0.3, 0.75, 0.001, 9.0)])
    metrics = run_folder.read_metrics(str(tmp_path))
    np.testing.assert_allclose(metrics['epoch'], [1, 2, 3])
    assert np.isnan(metrics['val_loss'][1])
    assert run_folder.best_accuracy(str(tmp_path)) == 0.8


def test_settings_and_random_start(tmp_path):
    assert run_folder.read_settings(str(tmp_path)) == {}
    (tmp_path / 'run.json').write_text('[' * 100000)
    assert run_folder.read_settings(str(tmp_path)) == {}        # damaged: as if none
    (tmp_path / 'run.json').write_text('{"weights": "none"}')
    run_folder.update_settings(str(tmp_path), feature_cache={'seconds': 1.5})
    assert run_folder.read_settings(str(tmp_path)) == {'weights': 'none',
                                                      'feature_cache': {'seconds': 1.5}}
    assert run_folder.started_from_random(str(tmp_path / 'weights.npz'))


def test_latest_run_is_the_newest_with_checkpoints(tmp_path):
    save_checkpoints(tmp_path / 'old' / 'checkpoints', [1])
    save_checkpoints(tmp_path / 'new' / 'checkpoints', [1])
    (tmp_path / 'empty').mkdir()
    past = time.time() - 100
    os.utime(str(tmp_path / 'old'), (past, past))
    assert run_folder.latest_run(str(tmp_path)) == str(tmp_path / 'new')
    assert run_folder.latest_run(str(tmp_path / 'nowhere')) is None
