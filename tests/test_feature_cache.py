"""feature_cache.py and finetune.py --cache-features: same numbers as the naive path,
a cache keyed on what it depends on, interrupted caches never used."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf
from PIL import Image

import alexnet
import datagenerator
import feature_cache
import finetune
import weight_files
from conftest import random_layers


def make_images(folder, per_class=4, size=(60, 45), seed=0):
    """Reddish cats and bluish dogs, as in test_finetune."""
    rng = np.random.RandomState(seed)
    items = []
    for label, (name, colour) in enumerate((('cat', (200, 40, 40)), ('dog', (40, 40, 200)))):
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.randint(-30, 30, (size[1], size[0], 3)), 0, 255)
            path = os.path.join(folder, name, '%d.jpg' % i)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            items.append((path, label))
    return items


def small_layers(seed):
    """2-class weights whose activations stay O(1), so losses are well-conditioned."""
    layers = random_layers(num_classes=2, seed=seed)
    return {name: (w * 0.5, b) for name, (w, b) in layers.items()}


@pytest.fixture(scope='module')
def weights(module_dir):
    folder = module_dir
    paths = []
    for seed in (3, 4):
        path = str(folder / ('w%d.npz' % seed))
        weight_files.save_npz(path, small_layers(seed))
        paths.append(path)
    return paths


@pytest.fixture
def items(tmp_path):
    images = make_images(str(tmp_path / 'data'))
    return images[:3] + images[4:7], [images[3], images[7]]     # train 6, val 2


def autotuned(dataset):
    """Whether tf.data autotunes the dataset (None, the default, means it does)."""
    options = dataset.options()
    if hasattr(options, 'autotune'):                              # TF 2.x
        return options.autotune.enabled is not False
    return options.experimental_optimization.autotune is not False


def test_no_dataset_of_a_run_autotunes(items):
    """Under TF 2.x re-initializing an autotuned iterator waits for its tuning thread:
    15 s for each validation of finetune.py on cached features. Every dataset that
    finetune.py iterates again and again has autotuning off."""
    train, val = items
    with tf.Graph().as_default():
        cache = feature_cache.FeatureCache(train, val, 'fc6', 2, batch_size=4)
        datasets = {'cached train': cache.train_data, 'cached val': cache.val_data,
                    'views': feature_cache._view_dataset(train, 2, 4, 0),
                    'ten crops': feature_cache._view_dataset(train, feature_cache.TEN_CROPS,
                                                             4, 0),
                    'naive train': datagenerator.make_dataset(train, 4, training=True),
                    'naive val': datagenerator.make_dataset(val, 4, training=False),
                    'plain tf.data': tf.data.Dataset.range(3)}      # the check can say yes
        assert {name: autotuned(dataset) for name, dataset in datasets.items()} == dict(
            {name: False for name in datasets}, **{'plain tf.data': True})


def test_head_start_says_when_caching_applies():
    assert feature_cache.head_start(['fc6', 'fc7', 'fc8']) == ('fc6', None)
    assert feature_cache.head_start(['fc8', 'fc7']) == ('fc7', None)
    assert feature_cache.head_start(['fc8']) == ('fc8', None)
    first, reason = feature_cache.head_start(['fc6', 'fc7'])
    assert first is None and 'frozen fc8 comes after trained fc6' in reason
    first, reason = feature_cache.head_start(['conv5', 'fc6', 'fc7', 'fc8'])
    assert first is None and 'conv5' in reason
    assert feature_cache.parse_views('ten-crops') == feature_cache.TEN_CROPS
    assert feature_cache.parse_views('3') == 3
    with pytest.raises(ValueError):
        feature_cache.parse_views('0')


def test_head_on_features_equals_full_model(graph):
    """model.head(head_input(first)) is the full graph's fc8, dropout included."""
    x = tf.placeholder(tf.float32, [None, 227, 227, 3])
    model = alexnet.AlexNet(x, num_classes=2)
    features = {first: tf.placeholder(tf.float32, model.head_input(first).shape)
                for first in alexnet.HEAD_LAYERS}
    heads = {first: model.head(features[first], first) for first in alexnet.HEAD_LAYERS}
    # The head adds no variables: it shares the model's.
    assert len(tf.global_variables()) == 16
    images = np.random.RandomState(0).uniform(-100, 100, (2, 227, 227, 3)).astype(np.float32)
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        logits, inputs = session.run([model.fc8, {f: model.head_input(f) for f in features}],
                                     {x: images})
        for first in alexnet.HEAD_LAYERS:
            np.testing.assert_allclose(
                session.run(heads[first], {features[first]: inputs[first]}), logits,
                rtol=1e-5, atol=1e-6, err_msg=first)
        # keep_prob 0.5: the head drops units too.
        dropped = session.run(heads['fc7'], {features['fc7']: inputs['fc7'],
                                             model.keep_prob: 0.5})
        assert not np.allclose(dropped, logits, rtol=1e-3)


def val_loss(train, val, weights_path, train_layers, cache_from, cache_root=None):
    """finetune's validation (loss, accuracy) on the naive or the cached graph."""
    recipe = finetune.Recipe(learning_rate=0.01, momentum=0.9, weight_decay=5e-4,
                             keep_prob=0.5, batch_size=4)
    with tf.Graph().as_default():
        trainer = finetune.Trainer(train, val, 2, recipe, train_layers, [], weights_path,
                                   seed=0, cache_from=cache_from, cache_views=2)
        with tf.Session() as session:
            session.run(trainer.init)
            trainer.model.load_initial_weights(session)
            if cache_from:
                trainer.cache.prepare(session, trainer.model, cache_root, progress=False)
            return finetune.validate(session, trainer)


@pytest.mark.parametrize('train_layers', [['fc6', 'fc7', 'fc8'], ['fc7', 'fc8']])
def test_cached_and_naive_compute_the_same_loss(items, weights, tmp_path, train_layers):
    train, val = items
    first, _ = feature_cache.head_start(train_layers)
    naive = val_loss(train, val, weights[0], train_layers, None)
    cached = val_loss(train, val, weights[0], train_layers, first, str(tmp_path / 'cache'))
    assert naive[0] > 0.01
    assert cached[0] == pytest.approx(naive[0], rel=1e-5)
    assert cached[1] == naive[1]


def prepare(cache_root, train, val, weights_path, views=2, first='fc6'):
    """Opens or builds a cache; returns (folder, built, a copy of the train features)."""
    with tf.Graph().as_default():
        cache = feature_cache.FeatureCache(train, val, first, views, batch_size=8, seed=0)
        model = alexnet.AlexNet(cache.images, num_classes=2)
        with tf.Session() as session:
            model.load_initial_weights(session, weights_path)
            folder = cache.prepare(session, model, str(cache_root), progress=False)
            return folder, cache.built, np.array(cache._arrays['train'])


def test_cache_is_reused_and_rebuilt_when_its_key_changes(items, weights, tmp_path):
    train, val = items
    root = tmp_path / 'cache'
    folder, built, features = prepare(root, train, val, weights[0])
    assert built and os.path.isfile(os.path.join(folder, 'complete.json'))
    assert features.shape == (6, 2, 9216) and np.all(np.abs(features).sum(axis=2) > 0)
    assert not np.array_equal(features[:, 0], features[:, 1])     # two different random views
    # Nothing changed: reused, not recomputed.
    again, built, same = prepare(root, train, val, weights[0])
    assert (again, built) == (folder, False)
    np.testing.assert_array_equal(same, features)
    # Other weights, other preprocessing (views), other frozen boundary: new caches.
    for changed in (dict(weights_path=weights[1]), dict(views=3),
                    dict(views=feature_cache.TEN_CROPS), dict(first='fc7')):
        arguments = dict(dict(weights_path=weights[0]), **changed)
        other, built, _ = prepare(root, train, val, **arguments)
        assert built and other != folder, changed
    # A changed photo (new mtime) or label changes the manifest.
    other, built, _ = prepare(root, train, val[:1] + [(val[1][0], 0)], weights[0])
    assert built and other != folder
    os.utime(train[0][0], ns=(1, 10 ** 18))
    other, built, _ = prepare(root, train, val, weights[0])
    assert built and other != folder


def test_interrupted_cache_is_rebuilt(items, weights, tmp_path):
    train, val = items
    root = tmp_path / 'cache'
    folder, _, features = prepare(root, train, val, weights[0])
    # Killed before the marker: the folder is ignored and rebuilt.
    os.remove(os.path.join(folder, 'complete.json'))
    again, built, rebuilt = prepare(root, train, val, weights[0])
    assert again == folder and built
    np.testing.assert_allclose(rebuilt, features, rtol=1e-6)
    # A truncated array, even with the marker (e.g. a copy cut short): rebuilt.
    path = os.path.join(folder, 'train.npy')
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
    _, built, rebuilt = prepare(root, train, val, weights[0])
    assert built
    np.testing.assert_allclose(rebuilt, features, rtol=1e-6)
    _, built, _ = prepare(root, train, val, weights[0])
    assert not built


@pytest.mark.slow
def test_finetune_cached_end_to_end(tmp_path, weights, capsys):
    make_images(str(tmp_path / 'data'))
    args = ['--data', str(tmp_path / 'data'), '--run', str(tmp_path / 'logs' / 'run'),
            '--batch-size', '4', '--val-fraction', '0.25',
            '--no-progress', '--weights', weights[0], '--train-layers', 'fc7,fc8',
            '--learning-rate', '1e-4', '--cache-features']
    assert finetune.main(args + ['--epochs', '1']) == 0
    assert 'feature cache built in' in capsys.readouterr().out
    # --resume restores the checkpoint into the same model and reuses the cache.
    assert finetune.main(args + ['--epochs', '2', '--resume']) == 0
    out = capsys.readouterr().out
    assert 'feature cache reused' in out and 'epoch 2/2' in out
    run = tmp_path / 'logs' / 'run'
    before = weight_files.load_weights(weights[0])
    after = weight_files.load_weights(str(run / 'weights.npz'))
    for layer in ('conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6'):
        for part in (0, 1):
            np.testing.assert_array_equal(after[layer][part], before[layer][part], layer)
    for layer in ('fc7', 'fc8'):
        assert not np.array_equal(after[layer][0], before[layer][0]), layer
    with open(str(run / 'metrics.csv')) as f:
        assert len(f.readlines()) == 3
    # A frozen layer after a trained one: said, and trained the naive way.
    naive = [arg if arg != str(run) else str(tmp_path / 'logs' / 'naive') for arg in args[:-3]]
    assert finetune.main(naive + ['--train-layers', 'fc6,fc7', '--cache-features',
                                  '--epochs', '1', '--max-steps', '1']) == 0
    assert 'does not apply (frozen fc8 comes after trained fc6' in capsys.readouterr().out


def test_auto_views_are_ten_crops_with_a_gpu_and_two_without(monkeypatch):
    monkeypatch.setattr(alexnet, 'gpu_visible', lambda: True)
    assert feature_cache.parse_views('auto') == feature_cache.TEN_CROPS
    monkeypatch.setattr(alexnet, 'gpu_visible', lambda: False)
    assert feature_cache.parse_views('auto') == 2
    with pytest.raises(ValueError, match="'auto', 'ten-crops' or a positive number"):
        feature_cache.parse_views('many')
