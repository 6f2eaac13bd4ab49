"""finetune.py: the graph's loss and updates against NumPy, then main() on generated photos."""
import contextlib
import csv
import json
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import alexnet
import command_line
import finetune
import run_folder
import validate_alexnet_on_imagenet as validate
import weight_files
from conftest import exit_error, random_layers, run_graph


def make_images(folder, per_class=6, size=(64, 48), seed=0):
    """Reddish cats and bluish dogs: separable by colour alone."""
    rng = np.random.RandomState(seed)
    for name, colour in (('cat', (200, 40, 40)), ('dog', (40, 40, 200))):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.randint(-30, 30, (size[1], size[0], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, name, '%d.jpg' % i))
    return folder


@pytest.fixture
def dataset(tmp_path):
    return make_images(str(tmp_path / 'data'))


@pytest.fixture(scope='module')
def pretrained(module_dir):
    """2-class weights whose activations stay O(1) on +-100 pixels, fc8 starting at zero,
    standing in for pretrained weights: the loss starts at ln 2 and SGD is stable."""
    layers = random_layers(num_classes=2, seed=3)
    layers['conv1'] = (layers['conv1'][0] / 100, layers['conv1'][1])
    layers['fc8'] = (np.zeros_like(layers['fc8'][0]), np.zeros(2, np.float32))
    path = str(module_dir / 'pretrained.npz')
    weight_files.save_npz(path, layers)
    return path


def run(dataset, run_dir, *extra):
    args = ['--data', dataset, '--run', str(run_dir), '--batch-size', '4',
            '--val-fraction', '0.25', '--no-progress', '--summary-every', '1',
            '--keep-checkpoints', '1'] + list(extra)     # a checkpoint is about 450 MB
    return finetune.main(args)


def metrics(run_dir):
    with open(os.path.join(str(run_dir), 'metrics.csv'), newline='') as f:
        return list(csv.DictReader(f))


# --- The graph: loss, weight decay and which variables learn, against NumPy ----------

def test_loss_is_cross_entropy_plus_half_the_decay_times_squared_weights(graph):
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([0, 2, 1, 1, 0], np.int32)
    weights = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=7).astype(np.float32)]
    cross_entropy, total = finetune.loss_fn(tf.constant(logits), tf.constant(labels), 0.0005,
                                            [tf.constant(w) for w in weights])
    with tf.Session() as session:
        got_ce, got_total = session.run([cross_entropy, total])
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    want_ce = -log_softmax[np.arange(5), labels].mean()
    want_decay = 0.0005 * sum((w.astype(np.float64) ** 2).sum() / 2 for w in weights)
    assert got_ce == pytest.approx(want_ce, rel=1e-6)
    assert got_total == pytest.approx(want_ce + want_decay, rel=1e-6)


def test_one_step_changes_exactly_the_trained_layers_by_momentum_sgd(graph):
    """A fast check of what fine-tuning updates: fc7 and fc8 move by -lr * gradient
    (first momentum step), every other variable keeps its exact bits."""
    x = tf.constant(np.random.RandomState(1).uniform(-50, 50, (2, 227, 227, 3)), tf.float32)
    labels = tf.constant([0, 1])
    model = alexnet.AlexNet(x, num_classes=2)
    train_layers = ['fc7', 'fc8']
    _, loss = finetune.loss_fn(model.fc8, labels, 0.0005,
                               model.variables(train_layers, biases=False))
    step = tf.train.get_or_create_global_step()
    train_op, gradients = finetune.training(loss, model.variables(train_layers), 0.01, 0.9, step)
    assert [v.op.name for _, v in gradients] == ['fc7/weights', 'fc7/biases', 'fc8/weights',
                                                 'fc8/biases']
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        before = model.read_weights(session)
        grads = session.run([g for g, _ in gradients])
        session.run(train_op)
        after = model.read_weights(session)
    for layer in alexnet.LAYER_NAMES:
        for part in (0, 1):
            if layer in train_layers:
                continue
            np.testing.assert_array_equal(after[layer][part], before[layer][part], layer)
    for (layer, part), grad in zip([(l, p) for l in train_layers for p in (0, 1)], grads):
        np.testing.assert_allclose(after[layer][part], before[layer][part] - 0.01 * grad,
                                   rtol=1e-5, atol=1e-8)
    # Weight decay reaches the weights' gradients, not the biases': d/dw (wd * |w|^2 / 2).
    assert not np.allclose(grads[2], 0)


def one_photo_each(tmp_path):
    """[(path, label)] of one generated photo of a cat (0) and one of a dog (1)."""
    folder = make_images(str(tmp_path / 'd'), per_class=1)
    return [(os.path.join(folder, name, '0.jpg'), i) for i, name in enumerate(('cat', 'dog'))]


def test_the_trainers_step_is_momentum_sgd_on_the_trained_layers_only(tmp_path, pretrained):
    """Two steps of the real Trainer against NumPy: v1 = v0 - lr g1, v2 = v1 - lr (m g1 + g2),
    the loss decays the trained weights (not their biases), nothing else moves."""
    items = one_photo_each(tmp_path)
    layers = weight_files.load_weights(pretrained)
    layers = {name: (w, np.ones_like(b)) for name, (w, b) in layers.items()}   # biases count
    start = str(tmp_path / 'start.npz')
    weight_files.save_npz(start, layers)
    lr, momentum, decay = 0.01, 0.9, 0.0005
    recipe = finetune.Recipe(lr, momentum, decay, 1.0, 2)
    with tf.Graph().as_default():
        trainer = finetune.Trainer(items, items, 2, recipe, ['fc7', 'fc8'], [], start, seed=0)
        with tf.Session() as session:
            session.run(trainer.init)
            trainer.model.load_initial_weights(session)
            before = trainer.model.read_weights(session)
            steps = []
            for epoch in (0, 1):
                session.run(trainer.train_iterator.initializer, {trainer.epoch_to_read: epoch})
                handle = session.run(trainer.train_iterator.string_handle())
                ce, total, grads, _ = session.run(
                    [trainer.cross_entropy, trainer.loss, [g for g, _ in trainer.gradients],
                     trainer.train_op], {trainer.handle: handle})
                steps.append((ce, total, grads))
            after = trainer.model.read_weights(session)
    assert [v.op.name for _, v in trainer.gradients] == ['fc7/weights', 'fc7/biases',
                                                         'fc8/weights', 'fc8/biases']
    for layer in alexnet.LAYER_NAMES[:6]:
        for part in (0, 1):
            np.testing.assert_array_equal(after[layer][part], before[layer][part], layer)
    ce, total, _ = steps[0]
    want_decay = decay * sum((layers[l][0].astype(np.float64) ** 2).sum() / 2
                             for l in ('fc7', 'fc8'))
    assert total - ce == pytest.approx(want_decay, rel=1e-4)
    (_, _, g1), (_, _, g2) = steps
    for i, (layer, part) in enumerate([(l, p) for l in ('fc7', 'fc8') for p in (0, 1)]):
        want = before[layer][part] - lr * g1[i] - lr * (momentum * g1[i] + g2[i])
        np.testing.assert_allclose(after[layer][part], want, rtol=1e-4, atol=1e-6,
                                   err_msg='%s/%d' % (layer, part))


@contextlib.contextmanager
def trainer_moved_from(pretrained, tmp_path, learning_rate):
    """(session, trainer, weights as loaded): an fc8 Trainer on one photo per class, started
    from `pretrained`, then conv1 moved by +1, so that a checkpoint differs from the file."""
    items = one_photo_each(tmp_path)
    recipe = finetune.Recipe(learning_rate, 0.9, 0.0005, 0.5, 2)
    with tf.Graph().as_default():
        trainer = finetune.Trainer(items, items, 2, recipe, ['fc8'], [], pretrained, seed=0)
        with tf.Session() as session:
            finetune.start_weights(session, trainer, None, pretrained)
            loaded = trainer.model.read_weights(session)
            conv1 = trainer.model.variables(['conv1'])[0]
            session.run(tf.assign_add(conv1, tf.ones_like(conv1)))
            yield session, trainer, loaded


def test_a_resumed_run_starts_from_its_checkpoint_not_the_pretrained_file(tmp_path, pretrained):
    with trainer_moved_from(pretrained, tmp_path, 0.01) as (session, trainer, loaded):
        prefix = trainer.saver.save(session, str(tmp_path / 'model.ckpt'), global_step=3)
        saved = trainer.model.read_weights(session)
        finetune.start_weights(session, trainer, prefix, pretrained)
        resumed = trainer.model.read_weights(session)
    np.testing.assert_array_equal(resumed['conv1'][0], saved['conv1'][0])
    assert not np.array_equal(resumed['conv1'][0], loaded['conv1'][0])


def test_a_checkpoint_from_before_the_schedule_resumes_at_the_given_rate(tmp_path, pretrained,
                                                                         capsys):
    """A run saved before the learning rate was a variable: its checkpoint lacks the
    schedule. Every variable it has is restored; the rate is the run's --learning-rate,
    or one given with --resume."""
    with trainer_moved_from(pretrained, tmp_path, 0.02) as (session, trainer, _):
        schedule = set(trainer.schedule.values())
        old = tf.train.Saver([v for v in tf.global_variables() if v not in schedule])
        prefix = old.save(session, str(tmp_path / 'model.ckpt'), global_step=3)
        saved = trainer.model.read_weights(session)
        for given, rate in ((None, 0.02), (0.005, 0.005)):
            finetune.start_weights(session, trainer, prefix, pretrained, given)
            assert 'has no learning-rate schedule' in capsys.readouterr().out
            np.testing.assert_array_equal(trainer.model.read_weights(session)['conv1'][0],
                                          saved['conv1'][0])
            assert trainer.read_schedule(session).learning_rate == pytest.approx(rate)


# --- Arguments --------------------------------------------------------------------------

@pytest.mark.parametrize('argv, message', [
    (['--learning-rate', 'nan'], '--learning-rate must be a number above 0'),
    (['--learning-rate', 'inf'], '--learning-rate must be a number above 0'),
    (['--learning-rate', '0'], '--learning-rate must be a number above 0'),
    (['--momentum', 'nan'], '--momentum must be in [0, 1)'),
    (['--momentum', '1'], '--momentum must be in [0, 1)'),
    (['--weight-decay', '-1'], '--weight-decay must be'),
    (['--keep-prob', '0'], '--keep-prob must be in (0, 1]'),
    (['--seed', '-1'], '--seed must be in 0..2147483647'),
    (['--seed', '2147483648'], '--seed must be in 0..2147483647'),
    (['--max-steps', '0'], 'must be at least 1'),
    (['--max-steps', '-5'], 'must be at least 1'),
    (['--batch-size', 'x'], 'is not a whole number'),
    (['--epochs', '0'], 'must be at least 1'),
    (['--val-fraction', '1'], '--val-fraction must be in [0, 1)'),
    (['--train-layers', 'fc6,fc9'], 'unknown layer fc9'),
    (['--cache-views', '0'], "'ten-crops' or a positive number"),
    (['--devices', '0'], 'must be at least 1'),
    (['--lr-drops', '-1'], '--lr-drops must be at least 0'),
    (['--lr-min-gain', 'nan'], '--lr-min-gain must be in [0, 1)'),
    (['--lr-drops', '3', '--val-fraction', '0'], '--lr-drops 3 needs a validation error'),
    (['--val-images', 'val'], '--val-images and --val-labels go together'),
    (['--val-images', 'val', '--val-labels', 'val.txt'], 'add --classes imagenet'),
    (['--recipe', 'paper', '--val-fraction', '0'], '--lr-drops 3 needs a validation error'),
    (['--model-parallel', '/gpu:0,/gpu:1', '--devices', '2'], 'go separately'),
])
def test_bad_arguments_are_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        finetune.parse_args(argv)
    assert exit_info.value.code == command_line.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and err.count('\n') == 1 and 'usage' not in err


def test_the_paper_recipe_sets_its_defaults_and_flags_still_win():
    args = finetune.parse_args(['--recipe', 'paper'])
    assert (args.weights, args.epochs, args.lr_drops, args.classes) == ('none', 90, 3, 'imagenet')
    assert args.train_layers == list(alexnet.LAYER_NAMES)
    assert (args.learning_rate, args.momentum, args.weight_decay, args.keep_prob,
            args.batch_size) == (0.01, 0.9, 0.0005, 0.5, 128)
    assert finetune.parse_args(['--recipe', 'paper', '--epochs', '5']).epochs == 5
    default = finetune.parse_args([])
    assert default.lr_drops == 0 and not default.learning_rate_given
    assert finetune.parse_args(['--learning-rate', '0.01']).learning_rate_given


def test_the_schedule_divides_after_patience_epochs_without_gain_at_most_max_drops_times():
    rule = finetune.PlateauRule(patience=2, min_gain=0.01, max_drops=2, factor=10.0)
    state = finetune.ScheduleState(0.01, float('inf'), 0, 0)
    errors = [0.90, 0.80, 0.795, 0.792, 0.70, 0.70, 0.695, 0.70, 0.70, 0.60]
    rates, decisions, bests = [], [], []
    for error in errors:
        state, decision = finetune.next_learning_rate(state, error, rule)
        rates.append(state.learning_rate)
        decisions.append(decision.split(':')[0].split(' (')[0])
        bests.append(state.best_error)
    # The rate for the next epoch, decided after each one.
    np.testing.assert_allclose(rates, [0.01] * 3 + [0.001] * 3 + [0.0001] * 4)
    assert decisions == ['improved', 'improved', 'no gain of 0.01 for 1 of 2 epochs',
                         'divided by 10 to 0.001', 'improved', 'no gain of 0.01 for 1 of 2 epochs',
                         'divided by 10 to 0.0001', 'no gain; rate kept',
                         'no gain; rate kept', 'improved']
    # A gain smaller than min_gain does not move the best: 0.795 and 0.792 wait for 0.79.
    assert bests == [0.90, 0.80, 0.80, 0.80, 0.70, 0.70, 0.70, 0.70, 0.70, 0.60]
    assert state.drops == 2 and state.epochs_without_gain == 0


def test_train_layers_all_and_the_default_without_pretraining():
    assert finetune.parse_args(['--train-layers', 'all']).train_layers == list(alexnet.LAYER_NAMES)
    assert finetune.parse_args(['--weights', 'none']).train_layers == list(alexnet.LAYER_NAMES)
    assert finetune.parse_args([]).train_layers == ['fc6', 'fc7', 'fc8']
    assert finetune.parse_args(['--train-layers', 'fc8,fc7']).train_layers == ['fc7', 'fc8']


def test_a_batch_larger_than_memory_is_refused_up_front(dataset, tmp_path, capsys):
    assert run(dataset, tmp_path / 'run', '--weights', 'none', '--batch-size', '100000000') == 2
    err = capsys.readouterr().err
    assert '--batch-size 100000000 needs about' in err and 'use at most' in err
    assert not (tmp_path / 'run').exists()                 # nothing half-made is left


def test_fc8_starts_new_when_classes_differ(bvlc_npy):
    """The 1000-class file fits fc6 and fc7, not fc8: fc8 is new, the rest loads."""
    skip = finetune.layers_to_load(str(bvlc_npy), ['fc6', 'fc7', 'fc8'], num_classes=2)
    assert skip == ['fc8']
    assert finetune.layers_to_load('none', ['fc8'], 2) == list(alexnet.LAYER_NAMES)


def test_missing_weights_stop_with_instructions_and_leave_no_run_folder(dataset, tmp_path,
                                                                        capsys):
    code = run(dataset, tmp_path / 'run', '--weights', str(tmp_path / 'bvlc_alexnet.npy'))
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert 'download.py weights' in err and '--weights none' in err
    assert not (tmp_path / 'run').exists()


def test_pretrained_file_is_checked_against_alexnets_shapes(tmp_path, monkeypatch):
    seen = []

    def load_weights(path, expected=None):
        seen.append(expected)
        raise weight_files.WeightFileError('refused by the test')
    monkeypatch.setattr(weight_files, 'load_weights', load_weights)
    path = tmp_path / 'w.npy'
    path.write_bytes(b'')
    with pytest.raises(weight_files.WeightFileError, match='refused by the test'):
        finetune.layers_to_load(str(path), ['fc8'], num_classes=2)
    assert seen == [finetune.alexnet.expected_weight_shapes]


def test_missing_data_and_nothing_to_resume(dataset, tmp_path, capsys):
    assert run(str(tmp_path / 'nowhere'), tmp_path / 'run', '--weights', 'none') == 2
    assert 'does not exist' in capsys.readouterr().err
    assert run(dataset, tmp_path / 'run', '--weights', 'none', '--resume') == 2
    assert 'nothing to resume' in capsys.readouterr().err


def test_a_second_writer_is_refused_at_once(dataset, tmp_path, capsys):
    with run_folder.WriterLock(str(tmp_path / 'run')):
        assert run(dataset, tmp_path / 'run', '--weights', 'none') == 2
    err = capsys.readouterr().err
    assert 'is being written by process %d' % os.getpid() in err and err.count('\n') == 1


def test_a_run_folder_that_cannot_be_written_is_one_line(dataset, tmp_path, capsys):
    a_file = tmp_path / 'a_file'
    a_file.write_text('kept')
    for target in (a_file, a_file / 'run'):
        assert run(dataset, target, '--weights', 'none') == 2
        err = capsys.readouterr().err
        assert err.startswith('error: cannot write a run in ') and err.count('\n') == 1, err
    assert a_file.read_text() == 'kept'


def test_a_failed_save_leaves_no_partial_file(tmp_path):
    class FullDisk:
        def save(self, session, prefix, global_step):
            with open('%s-%d.data-00000-of-00001.tempstate42' % (prefix, global_step), 'wb') as f:
                f.write(b'half a checkpoint')
            raise tf.errors.ResourceExhaustedError(
                None, None, '%s-%d.data: No space left on device' % (prefix, global_step))

    folder = str(tmp_path / 'checkpoints')
    with pytest.raises(finetune.RunError) as caught:
        finetune.save_checkpoint(None, FullDisk(), folder, 7)
    message = str(caught.value)
    assert 'step 7' in message and 'no space left on the disk' in message
    assert '--resume' in message and '\n' not in message
    assert os.listdir(folder) == []


# --- Whole runs ----------------------------------------------------------------------------

@pytest.mark.slow
def test_loss_falls_and_exported_weights_classify(dataset, tmp_path, pretrained, capsys):
    run_dir = tmp_path / 'run'
    assert run(dataset, run_dir, '--weights', pretrained, '--train-layers', 'fc8',
               '--epochs', '4', '--learning-rate', '0.001', '--keep-prob', '1.0') == 0
    rows = metrics(run_dir)
    assert [int(r['epoch']) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]['train_loss']) < 0.5 * float(rows[0]['train_loss'])
    assert float(rows[-1]['val_accuracy']) == 1.0
    assert 'pretrained weights from %s; training fc8' % pretrained in capsys.readouterr().out
    for name in ('curves.png', 'split.json', 'class_names.txt', 'weights.npz', 'run.json'):
        assert (run_dir / name).exists(), name
    # The exported weights: only fc8 changed, and they classify in the classification script.
    before = weight_files.load_weights(pretrained)
    after = weight_files.load_weights(str(run_dir / 'weights.npz'))
    assert weight_files.load_class_names(str(run_dir / 'weights.npz')) == ['cat', 'dog']
    for layer in alexnet.LAYER_NAMES[:-1]:
        np.testing.assert_array_equal(after[layer][0], before[layer][0], layer)
    photo = os.path.join(dataset, 'dog', '0.jpg')
    results = validate.classify([photo], str(run_dir / 'weights.npz'), top_k=2)
    assert results[0]['top'][0]['name'] == 'dog'


class InterruptAfter(object):
    """Stands in for tqdm's progress bar: yields `steps` step numbers, then Ctrl-C."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, iterable, **options):
        self.iterable = iterable
        return self

    def __iter__(self):
        for index, value in enumerate(self.iterable):
            if index == self.steps:
                raise KeyboardInterrupt
            yield value

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


@pytest.mark.slow
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(
        dataset, tmp_path, pretrained, monkeypatch, capsys):
    """Same seed: 2 epochs in one go == 1 epoch, Ctrl-C one step into the second, resumed
    (from a copy of the run folder, its newest checkpoint cut short)."""
    options = ('--weights', pretrained, '--train-layers', 'fc7,fc8', '--keep-checkpoints', '3')
    assert run(dataset, tmp_path / 'whole', '--epochs', '2', *options) == 0
    assert run(dataset, tmp_path / 'parts', '--epochs', '1', *options) == 0
    monkeypatch.setattr(finetune, 'tqdm', InterruptAfter(1))
    assert run(dataset, tmp_path / 'parts', '--epochs', '2', '--resume', *options) == 130
    assert 'continue with: ' in capsys.readouterr().err
    monkeypatch.undo()
    # The run folder moves, and its newest checkpoint is damaged on the way.
    moved = tmp_path / 'elsewhere' / 'parts'
    shutil.move(str(tmp_path / 'parts'), str(moved))
    newest = run_folder.checkpoint_prefixes(str(moved / 'checkpoints'))[0]
    assert newest.endswith('model.ckpt-3')                  # 2 steps, then 1 before Ctrl-C
    data = glob.glob(newest + '.data-*')[0]
    with open(data, 'r+b') as f:
        f.truncate(os.path.getsize(data) // 2)
    # ... so the resume starts over from the end of epoch 1, and still ends identical.
    assert run(dataset, moved, '--epochs', '2', '--resume', *options) == 0
    assert 'model.ckpt-3 is damaged' in capsys.readouterr().err
    whole = weight_files.load_weights(str(tmp_path / 'whole' / 'weights.npz'))
    parts = weight_files.load_weights(str(moved / 'weights.npz'))
    for layer in ('fc7', 'fc8'):
        for part in (0, 1):
            np.testing.assert_array_equal(parts[layer][part], whole[layer][part], layer)
    assert [r['train_loss'] for r in metrics(moved)] == [r['train_loss']
                                                         for r in metrics(tmp_path / 'whole')]


@pytest.mark.slow
def test_resume_after_ctrl_c_with_another_batch_size_finishes_the_epoch(
        dataset, tmp_path, pretrained, monkeypatch, capsys):
    options = ('--weights', pretrained, '--train-layers', 'fc8', '--keep-checkpoints', '2')
    monkeypatch.setattr(finetune, 'tqdm', InterruptAfter(1))
    assert run(dataset, tmp_path / 'run', '--epochs', '1', *options) == 130
    monkeypatch.undo()
    # 4 of the 8 training photos are done; batches of 8 finish the epoch in one step,
    # and the epoch's loss and accuracy count all 8 photos.
    assert run(dataset, tmp_path / 'run', '--epochs', '1', '--resume', '--batch-size', '8',
               *options) == 0
    rows = metrics(tmp_path / 'run')
    assert len(rows) == 1 and int(rows[0]['step']) == 2 and np.isfinite(
        float(rows[0]['train_loss']))
    # A smaller --max-steps than the steps already done ends that epoch without training.
    monkeypatch.setattr(finetune, 'tqdm', InterruptAfter(1))
    assert run(dataset, tmp_path / 'run', '--epochs', '2', '--resume', *options) == 130
    monkeypatch.undo()
    assert run(dataset, tmp_path / 'run', '--epochs', '2', '--resume', '--max-steps', '1',
               *options) == 0
    rows = metrics(tmp_path / 'run')
    assert [int(r['step']) for r in rows] == [2, 3] and np.isfinite(float(rows[1]['train_loss']))
    # A finished run is not trained again by accident.
    assert run(dataset, tmp_path / 'run', '--epochs', '2', '--resume', *options) == 0
    assert 'has already trained 2 epochs' in capsys.readouterr().out


@pytest.mark.slow
def test_resume_keeps_the_last_checkpoints_and_best_holds_the_weights(dataset, tmp_path):
    keep = ('--keep-checkpoints', '2', '--weights', 'none', '--train-layers', 'fc8')
    assert run(dataset, tmp_path / 'run', '--epochs', '2', *keep) == 0
    assert run(dataset, tmp_path / 'run', '--epochs', '3', '--resume', *keep) == 0
    rows = metrics(tmp_path / 'run')
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert [int(r['step']) for r in rows] == [2, 4, 6]   # 8 training images, batches of 4
    steps = sorted(int(p.split('-')[-1]) for p in
                   run_folder.checkpoint_prefixes(str(tmp_path / 'run' / 'checkpoints')))
    assert steps == [4, 6]                                # the last 2 epochs
    with open(str(tmp_path / 'run' / 'checkpoints' / 'checkpoint')) as f:
        assert '/' not in f.read()                        # relative paths: the folder can move
    latest = dict(tf.train.list_variables(str(tmp_path / 'run' / 'checkpoints' / 'model.ckpt-6')))
    best = dict(tf.train.list_variables(run_folder.checkpoint_of(str(tmp_path / 'run' / 'best'))))
    assert 'fc8/weights/Momentum' in latest and 'epoch_state/seen' in latest
    assert set(best) == {'%s/%s' % (layer, part) for layer in alexnet.LAYER_NAMES
                         for part in ('weights', 'biases')} | {'global_step', 'epoch_state/epoch'}


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(dataset, tmp_path, capsys):
    options = ('--weights', 'none', '--train-layers', 'fc8')
    assert run(dataset, tmp_path / 'run', '--epochs', '1', *options) == 0
    code = run(dataset, tmp_path / 'run', '--epochs', '2', '--resume', '--learning-rate', '1e30',
               *options)
    assert code == command_line.EXIT_DIVERGED
    assert 'lower --learning-rate' in capsys.readouterr().err
    assert run_folder.checkpoint_of(str(tmp_path / 'run')).endswith('model.ckpt-2')
    assert len(metrics(tmp_path / 'run')) == 1


def test_histograms_read_an_even_sample_of_at_most_2_to_the_20_values():
    limit = 2 ** 20
    # One value over the limit: every 2nd value, not the first 2^20 nor all of them.
    values = np.arange(limit + 1, dtype=np.float32).reshape(1, -1)
    sample = run_graph(lambda: finetune.histogram_sample(tf.constant(values)))
    np.testing.assert_array_equal(sample, np.arange(0, limit + 1, 2, dtype=np.float32))
    small = np.arange(24, dtype=np.float32).reshape(4, 6)          # a bias-sized tensor: whole
    np.testing.assert_array_equal(
        run_graph(lambda: finetune.histogram_sample(tf.constant(small))), small.ravel())


@pytest.mark.slow
def test_tensorboard_reads_the_logs(dataset, tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    # A disk with 100 MB free: the run warns up front, and goes on.
    usage = shutil.disk_usage(str(tmp_path))._replace(free=100 * 2 ** 20)
    monkeypatch.setattr(finetune.shutil, 'disk_usage', lambda path: usage)
    assert run(dataset, tmp_path / 'run', '--weights', 'none', '--train-layers', 'fc6,fc7,fc8',
               '--epochs', '2', '--summary-every', '100') == 0
    out, err = capsys.readouterr()
    assert 'no pretrained weights' in out and 'stay frozen at their RANDOM values' in out
    # 2 classes: 56,876,418 weights (the layer table); fc6-fc8 train, with a momentum each;
    # plus the int64 step, epoch, seen, steps, correct and the float64 loss sum.
    weights = 56876418 * 4
    trained = (9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2) * 4
    checkpoint = weights + trained + 6 * 8
    needed = 2 * checkpoint + 2 * weights        # --keep-checkpoints 1, best/, weights.npz
    assert 'has 100 MB free' in err and 'up to %.0f MB' % (needed / 2 ** 20) in err
    train = EventAccumulator(str(tmp_path / 'run' / 'train'), size_guidance={'images': 0})
    train.Reload()
    tags = train.Tags()
    assert {'loss', 'accuracy', 'batch/loss', 'learning_rate'} <= set(tags['scalars'])
    assert {'fc6/weights/value', 'fc8/biases/gradient'} <= set(tags['histograms'])
    assert not any(tag.startswith('conv') for tag in tags['histograms'])  # frozen: not logged
    # Big tensors are sampled: every 36th of fc6's 9216 x 4096 weights, every 16th of fc7's
    # gradient; fc8's 4096 x 2 whole.
    counts = {tag: train.Histograms(tag)[0].histogram_value.num
              for tag in ('fc6/weights/value', 'fc7/weights/gradient', 'fc8/weights/value')}
    assert counts == {'fc6/weights/value': 9216 * 4096 // 36,
                      'fc7/weights/gradient': 4096 * 4096 // 16, 'fc8/weights/value': 8192}
    assert any(tag.startswith('input') for tag in tags['images'])
    assert tags['graph']
    validation = EventAccumulator(str(tmp_path / 'run' / 'validation'))
    validation.Reload()
    # One point per epoch in both, at the same steps: the two lines share their x values.
    assert [s.step for s in validation.Scalars('accuracy')] == [2, 4]
    assert [s.step for s in train.Scalars('accuracy')] == [2, 4]


@pytest.mark.slow
def test_bad_files_are_skipped_and_listed(dataset, tmp_path, capsys):
    """PetImages-like trouble: the undecodable files are listed, the odd formats are used."""
    cat, dog = os.path.join(dataset, 'cat'), os.path.join(dataset, 'dog')
    zero, text, truncated = (os.path.join(cat, 'zero.jpg'), os.path.join(dog, 'text.jpg'),
                             os.path.join(dog, os.fsdecode(b'caf\xe9.jpg')))
    open(zero, 'wb').close()
    with open(text, 'w') as f:
        f.write('not an image')
    with open(os.path.join(dog, '0.jpg'), 'rb') as f:
        head = f.read()[:400]
    with open(truncated, 'wb') as f:
        f.write(head)
    Image.new('CMYK', (50, 40), (0, 200, 200, 0)).save(os.path.join(cat, 'cmyk.jpg'))
    Image.new('RGBA', (50, 40), (200, 0, 0, 128)).save(os.path.join(cat, 'alpha.png'))
    Image.new('L', (50, 40), 90).save(os.path.join(dog, 'gray.jpg'))
    Image.new('P', (50, 40), 3).save(os.path.join(dog, 'palette.gif'))
    Image.fromarray(np.full((40, 50), 40000, np.uint16)).save(os.path.join(cat, 'deep.png'))
    options = ('--weights', 'none', '--train-layers', 'fc8', '--epochs', '1',
               '--val-fraction', '0')
    assert run(dataset, tmp_path / 'run', *options) == 0
    with open(str(tmp_path / 'run' / 'bad_files.txt'), encoding='utf-8') as f:
        listed = sorted(line.split('\t')[0] for line in f)
    assert listed == sorted([zero, text, os.path.join(dog, 'caf\\xe9.jpg')])
    out = capsys.readouterr().out
    assert '3 cannot be read and are skipped' in out
    assert '17 training and 0 validation images' in out     # 12 good + 5 odd formats
    # The split holds the odd name exactly, so a rerun in the same folder works too.
    assert run(dataset, tmp_path / 'run', '--resume', *options[:-4], '--epochs', '2') == 0


@pytest.mark.slow
def test_demo_on_the_bundled_photos(tmp_path, capsys):
    """What `make demo` runs (without weights): the 5 photos in data/sample, end to end."""
    sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'data', 'sample')
    assert finetune.main(['--data', sample, '--val-fraction', '0.4', '--epochs', '2',
                          '--batch-size', '4', '--learning-rate', '0.001', '--weights', 'none',
                          '--train-layers', 'fc6,fc7,fc8', '--run', str(tmp_path / 'demo'),
                          '--keep-checkpoints', '1', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert '3 training and 2 validation images' in out
    assert 'cannot train a classifier' in out and 'download.py petimages' in out
    assert 'no pretrained weights' in out
    assert (tmp_path / 'demo' / 'curves.png').exists()
    assert len(metrics(tmp_path / 'demo')) == 2


@pytest.mark.slow
def test_cache_decoded_photos(dataset, tmp_path):
    assert run(dataset, tmp_path / 'run', '--weights', 'none', '--train-layers', 'fc8',
               '--epochs', '2', '--cache-decoded') == 0
    cached = glob.glob(str(tmp_path / '.decoded-cache' / '*.index'))
    assert len(cached) == 2                          # the training and the validation photos
    assert [int(r['step']) for r in metrics(tmp_path / 'run')] == [2, 4]


@pytest.mark.slow
def test_the_paper_recipe_on_an_imagenet_layout_with_its_schedule(tmp_path, capsys):
    """ILSVRC-2012's folders (3 of the 1000 wnids) and a validation folder with its
    ground truth: labels in bvlc_alexnet's order, the rate divided by the rule, the
    schedule kept in the checkpoint and continued by --resume."""
    import class_names
    from test_datasets import imagenet_train
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    classes = (999, 5, 300)
    train = imagenet_train(tmp_path / 'train', classes, per_class=2)
    val = imagenet_train(tmp_path / 'val_folders', classes, per_class=1)
    wnids = class_names.imagenet_wnids()
    os.makedirs(str(tmp_path / 'val'))
    with open(str(tmp_path / 'val.txt'), 'w') as f:
        for index in classes:        # "FILE WNID" lines, as evaluate.py reads them
            name = 'ILSVRC_%d_0.JPEG' % index
            shutil.move(os.path.join(val, wnids[index], name), str(tmp_path / 'val' / name))
            f.write('%s %s\n' % (name, wnids[index]))
    run_dir = tmp_path / 'run'
    options = ['--recipe', 'paper', '--data', train, '--val-images', str(tmp_path / 'val'),
               '--val-labels', str(tmp_path / 'val.txt'), '--run', str(run_dir),
               '--train-layers', 'fc8', '--batch-size', '4', '--max-steps', '1',
               '--lr-patience', '1', '--lr-min-gain', '0.5', '--lr-drops', '2',
               '--no-progress', '--keep-checkpoints', '1', '--summary-every', '100']
    assert finetune.main(options + ['--epochs', '3']) == 0
    out = capsys.readouterr().out
    assert '997 of the 1000 ILSVRC-2012 classes have no folder of images' in out
    assert '6 training and 3 validation images' in out
    assert 'learning rate divided by 10 to 0.001' in out
    split = json.load(open(str(run_dir / 'split.json')))
    labels = {os.path.basename(os.path.dirname(path)): label for path, label in split['train']}
    assert labels == {wnids[i]: i for i in classes}
    assert sorted(label for _, label in split['val']) == sorted(classes)
    assert run_folder.read_class_names(str(run_dir)) == class_names.imagenet_class_names()
    assert weight_files.load_weights(str(run_dir / 'weights.npz'))['fc8'][0].shape == (4096, 1000)
    # No validation error falls by 0.5: after epoch 1 (the first always improves) every
    # epoch divides, twice at most.
    rows = metrics(run_dir)
    assert [float(r['learning_rate']) for r in rows] == [0.01, 0.01, 0.001]
    assert [r['schedule'].split(':')[0] for r in rows] == [
        'improved', 'divided by 10 to 0.001', 'divided by 10 to 0.0001']
    checkpoint = run_folder.checkpoint_of(str(run_dir))
    assert tf.train.load_variable(checkpoint, 'epoch_state/learning_rate') == \
        pytest.approx(1e-4, rel=1e-6)
    assert tf.train.load_variable(checkpoint, 'epoch_state/drops') == 2
    # --resume goes on at 0.0001 with no division left; a rate given replaces it.
    assert finetune.main(options + ['--epochs', '4', '--resume']) == 0
    assert finetune.main(options + ['--epochs', '5', '--resume', '--learning-rate', '0.05']) == 0
    assert 'learning rate 0.05 from now on (--learning-rate; the run was at 0.0001)' in \
        capsys.readouterr().out
    rows = metrics(run_dir)
    np.testing.assert_allclose([float(r['learning_rate']) for r in rows],
                               [0.01, 0.01, 0.001, 0.0001, 0.05])
    assert rows[3]['schedule'] == 'no gain; rate kept (all 2 divisions made)'
    train_logs = EventAccumulator(str(run_dir / 'train'))
    train_logs.Reload()
    np.testing.assert_allclose([s.value for s in train_logs.Scalars('epoch/learning_rate')],
                               [0.01, 0.01, 0.001, 0.0001, 0.05], rtol=1e-6)


def test_a_run_being_written_is_refused_for_that_before_what_it_lacks(tmp_path):
    """A second writer started while the first has not saved a checkpoint yet is told
    the run is being written (not that there is nothing to resume), and the first
    writer's folder is left as it was."""
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'split.json').write_text('{}')
    for resume in ([], ['--resume']):
        with run_folder.WriterLock(str(run)):
            message = exit_error(finetune.main, ['--data', str(tmp_path), '--run', str(run),
                                                 '--no-progress'] + resume)
        assert 'is being written by process %d' % os.getpid() in message, message
        assert sorted(os.listdir(str(run))) == ['lock', 'split.json']
