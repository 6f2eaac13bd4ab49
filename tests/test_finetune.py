"""finetune.py run through main() on generated photos, as a user would."""
import csv
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import finetune
import validate_alexnet_on_imagenet as validate
import weight_files
from conftest import random_layers


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
    """A 2-class weight file (random, smallish values) standing in for pretrained weights."""
    path = str(module_dir / 'pretrained.npz')
    weight_files.save_npz(path, random_layers(num_classes=2, seed=3))
    return path


def run(dataset, log_dir, *extra):
    args = ['--data', dataset, '--log-dir', str(log_dir), '--run-name', 'run', '--batch-size', '4',
            '--val-fraction', '0.25', '--no-progress', '--summary-every', '1',
            '--keep-checkpoints', '1'] + list(extra)     # a checkpoint is about 450 MB
    return finetune.main(args)


def metrics(log_dir):
    with open(os.path.join(str(log_dir), 'run', 'metrics.csv'), newline='') as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_loss_falls_and_exported_weights_classify(dataset, tmp_path, capsys):
    layers = random_layers(num_classes=2, seed=3)
    # Pixels are about +-100: scale conv1 so that the features are about 1, and start
    # fc8 at zero, so that the loss starts at ln 2 and plain SGD is stable.
    layers['conv1'] = (layers['conv1'][0] / 100, layers['conv1'][1])
    layers['fc8'] = (np.zeros_like(layers['fc8'][0]), np.zeros(2, np.float32))
    start = str(tmp_path / 'start.npz')
    weight_files.save_npz(start, layers)
    assert run(dataset, tmp_path, '--weights', start, '--train-layers', 'fc8',
               '--epochs', '4', '--learning-rate', '0.001', '--keep-prob', '1.0') == 0
    rows = metrics(tmp_path)
    assert [int(r['epoch']) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]['train_loss']) < 0.5 * float(rows[0]['train_loss'])
    assert float(rows[-1]['val_accuracy']) == 1.0
    assert 'pretrained weights from %s; training fc8' % start in capsys.readouterr().out
    run_dir = tmp_path / 'run'
    for name in ('curves.png', 'split.json', 'class_names.txt', 'weights.npz'):
        assert (run_dir / name).exists(), name
    # The exported weights and class names work in the classification script.
    photo = os.path.join(dataset, 'dog', '0.jpg')
    results, _ = validate.classify([photo], str(run_dir / 'weights.npz'), top_k=2)
    assert results[0]['top'][0]['name'] == 'dog'


@pytest.mark.slow
def test_only_train_layers_change(dataset, tmp_path, pretrained):
    assert run(dataset, tmp_path, '--weights', pretrained, '--train-layers', 'fc7,fc8',
               '--epochs', '1') == 0
    before = weight_files.load_weights(pretrained)
    after = weight_files.load_weights(str(tmp_path / 'run' / 'weights.npz'))
    assert weight_files.load_class_names(str(tmp_path / 'run' / 'weights.npz')) == ['cat', 'dog']
    for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6'):
        for part in (0, 1):
            np.testing.assert_array_equal(after[layer][part], before[layer][part], layer)
    for layer in ('fc7', 'fc8'):
        assert not np.array_equal(after[layer][0], before[layer][0]), layer


def test_fc8_starts_new_when_classes_differ(tmp_path, bvlc_npy, capsys):
    """The 1000-class file fits fc6 and fc7, not fc8: fc8 is new, the rest loads."""
    skip = finetune.layers_to_load(str(bvlc_npy), ['fc6', 'fc7', 'fc8'], num_classes=2)
    assert skip == ['fc8']
    assert finetune.layers_to_load('none', ['fc8'], 2) == list(finetune.alexnet.LAYER_NAMES)


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


@pytest.mark.slow
def test_resume_continues_where_it_stopped(dataset, tmp_path):
    keep = ('--keep-checkpoints', '2')
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '2', *keep) == 0
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '3', '--resume', *keep) == 0
    rows = metrics(tmp_path)
    assert [int(r['epoch']) for r in rows] == [1, 2, 3]
    assert [int(r['step']) for r in rows] == [2, 4, 6]   # 8 training images, batches of 4
    steps = sorted(int(p.split('-')[-1].split('.')[0]) for p in
                   glob.glob(str(tmp_path / 'run' / 'checkpoints' / 'model.ckpt-*.index')))
    assert steps == [4, 6]                                # the last 2 epochs
    # Epoch checkpoints carry the momentum for --resume; best/ only the weights.
    latest = dict(tf.train.list_variables(str(tmp_path / 'run' / 'checkpoints' / 'model.ckpt-6')))
    best = dict(tf.train.list_variables(tf.train.latest_checkpoint(str(tmp_path / 'run' / 'best'))))
    assert 'fc6/weights/Momentum' in latest and 'conv1/weights' in latest
    assert set(best) == {'%s/%s' % (layer, part) for layer in finetune.alexnet.LAYER_NAMES
                         for part in ('weights', 'biases')} | {'global_step', 'epoch'}
    # A finished run is not trained again by accident.
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '3', '--resume') == 0
    assert len(metrics(tmp_path)) == 3


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes_the_epoch(dataset, tmp_path, monkeypatch, capsys):
    real_epoch = finetune.train_epoch

    def interrupted(session, graph, handle, steps, *rest):
        real_epoch(session, graph, handle, 1, *rest)   # one step, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(finetune, 'train_epoch', interrupted)
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '2') == finetune.EXIT_INTERRUPTED
    assert 'continue with --resume --run-name run' in capsys.readouterr().out
    assert glob.glob(str(tmp_path / 'run' / 'checkpoints' / 'model.ckpt-1.index'))
    monkeypatch.setattr(finetune, 'train_epoch', real_epoch)
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '2', '--resume') == 0
    assert [int(r['step']) for r in metrics(tmp_path)] == [2, 4]


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(dataset, tmp_path, capsys):
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '1') == 0
    code = run(dataset, tmp_path, '--weights', 'none', '--epochs', '2', '--resume',
               '--learning-rate', '1e30')
    assert code == finetune.EXIT_DIVERGED
    assert 'lower --learning-rate' in capsys.readouterr().err
    latest = finetune.alexnet.checkpoint_of(str(tmp_path / 'run'))
    assert latest.endswith('model.ckpt-2')
    assert len(metrics(tmp_path)) == 1


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


@pytest.mark.slow
def test_tensorboard_reads_the_logs(dataset, tmp_path, capsys, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    # A disk with 100 MB free: the run warns up front, and goes on.
    usage = shutil.disk_usage(str(tmp_path))._replace(free=100 * 2 ** 20)
    monkeypatch.setattr(finetune.shutil, 'disk_usage', lambda path: usage)
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '1') == 0
    out, err = capsys.readouterr()
    assert 'no pretrained weights' in out
    # 2 classes: 56,876,418 weights (the layer table); fc6-fc8 train, with a momentum each:
    # fc6 9216*4096+4096, fc7 4096*4096+4096, fc8 4096*2+2; plus the int64 step and epoch.
    weights = 56876418 * 4
    trained = (9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 2 + 2) * 4
    checkpoint = weights + trained + 2 * 8
    needed = 2 * checkpoint + 2 * weights        # --keep-checkpoints 1, best/, weights.npz
    assert 'has 100 MB free' in err and 'up to %.0f MB' % (needed / 2 ** 20) in err
    train = EventAccumulator(str(tmp_path / 'run' / 'train'), size_guidance={'images': 0})
    train.Reload()
    tags = train.Tags()
    assert {'loss', 'accuracy', 'learning_rate'} <= set(tags['scalars'])
    assert {'fc6/weights/value', 'fc8/biases/gradient'} <= set(tags['histograms'])
    assert not any(tag.startswith('conv') for tag in tags['histograms'])  # frozen: not logged
    assert any(tag.startswith('input') for tag in tags['images'])
    assert tags['graph']
    validation = EventAccumulator(str(tmp_path / 'run' / 'validation'))
    validation.Reload()
    assert {'loss', 'accuracy'} <= set(validation.Tags()['scalars'])
    assert validation.Scalars('accuracy')[0].step == 2


@pytest.mark.slow
def test_bad_files_are_skipped_and_listed(dataset, tmp_path, capsys):
    """PetImages-like trouble: the undecodable files are listed, the odd formats are used."""
    cat, dog = os.path.join(dataset, 'cat'), os.path.join(dataset, 'dog')
    zero, text, truncated = (os.path.join(cat, 'zero.jpg'), os.path.join(dog, 'text.jpg'),
                             os.path.join(dog, 'truncated.jpg'))
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
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '1', '--val-fraction', '0') == 0
    with open(str(tmp_path / 'run' / 'bad_files.txt')) as f:
        listed = sorted(line.split('\t')[0] for line in f)
    assert listed == sorted([zero, text, truncated])
    out = capsys.readouterr().out
    assert '3 cannot be read and are skipped' in out
    assert '17 training and 0 validation images' in out     # 12 good + 5 odd formats


def test_missing_weights_stop_with_instructions(dataset, tmp_path, capsys):
    code = run(dataset, tmp_path, '--weights', str(tmp_path / 'bvlc_alexnet.npy'))
    err = capsys.readouterr().err
    assert code == 2
    assert 'download.py weights' in err and '--weights none' in err


def test_bad_arguments(dataset, tmp_path, capsys):
    with pytest.raises(SystemExit):
        finetune.parse_args(['--train-layers', 'fc6,fc9'])
    assert 'fc9' in capsys.readouterr().err
    assert run(str(tmp_path / 'nowhere'), tmp_path, '--weights', 'none') == 2
    assert run(dataset, tmp_path, '--weights', 'none', '--resume') == 2
    assert 'nothing to resume' in capsys.readouterr().err


@pytest.mark.slow
def test_demo_on_the_bundled_photos(tmp_path, capsys):
    """What `make demo` runs (without weights): the 5 photos in data/sample, end to end."""
    sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'data', 'sample')
    assert finetune.main(['--data', sample, '--val-fraction', '0.4', '--epochs', '2',
                          '--batch-size', '4', '--learning-rate', '0.001', '--weights', 'none',
                          '--log-dir', str(tmp_path), '--run-name', 'demo', '--no-progress']) == 0
    out = capsys.readouterr().out
    assert '3 training and 2 validation images' in out
    assert 'cannot train a classifier' in out and 'download.py petimages' in out
    assert 'no pretrained weights' in out and 'download.py weights' in out
    assert (tmp_path / 'demo' / 'curves.png').exists()
    with open(str(tmp_path / 'demo' / 'metrics.csv')) as f:
        assert len(list(csv.DictReader(f))) == 2


@pytest.mark.slow
def test_cache_decoded_photos(dataset, tmp_path):
    assert run(dataset, tmp_path, '--weights', 'none', '--epochs', '2', '--cache-decoded') == 0
    cached = glob.glob(str(tmp_path / '.decoded-cache' / '*.index'))
    assert len(cached) == 2                          # the training and the validation photos
    assert [int(r['step']) for r in metrics(tmp_path)] == [2, 4]
