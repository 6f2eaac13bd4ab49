"""inference.py: weights from any source, and the network run over image files."""

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import alexnet
import image_files
import inference
import preprocessing
import run_folder
import weight_files
from conftest import photo, save, touch


def test_average_crops_means_each_images_crops():
    outputs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5],      # image 0
                        [0.9, 0.1], [0.9, 0.1], [0.6, 0.4]])     # image 1
    np.testing.assert_allclose(inference.average_crops(outputs, 3), [[0.5, 0.5], [0.8, 0.2]])


def test_ten_crop_probabilities_are_the_mean_softmax_of_the_crops(weights_npz, tmp_path):
    path = save(tmp_path / 'p.jpg', photo(260, 300, seed=3))
    outputs, used, failed = inference.model_outputs([path], weights_npz, crops=('center', 'ten'))
    assert used == [path] and failed == []
    # Independently: the network on each crop, softmax, then the mean.
    rgb = image_files.read_image(path)
    with tf.Graph().as_default():
        image = tf.placeholder(tf.uint8, [None, None, 3])
        x = tf.placeholder(tf.float32, [None, 227, 227, 3])
        model = alexnet.AlexNet(x, num_classes=2)
        with tf.Session() as session:
            model.load_initial_weights(session, weights_npz)
            crops, center = session.run([preprocessing.ten_crops(image),
                                         preprocessing.preprocess_for_eval(image)], {image: rgb})
            logits = session.run(model.fc8, {x: np.concatenate([crops, center[None]])})
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(outputs['ten'][0], softmax[:10].mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(outputs['center'][0], softmax[10], rtol=1e-4, atol=1e-6)


def test_unreadable_files_are_reported_and_the_rest_classified(weights_npz, tmp_path):
    good = [save(tmp_path / ('%d.jpg' % i), photo(240, 250, seed=i)) for i in range(3)]
    bad = touch(tmp_path / 'bad.jpg', b'<html>')
    paths = [good[0], bad, good[1], good[2]]
    outputs, used, failed = inference.model_outputs(paths, weights_npz, batch_size=2)
    assert used == good and [path for path, _ in failed] == [bad]
    alone, _, _ = inference.model_outputs(good[1:2], weights_npz)
    np.testing.assert_allclose(outputs['center'][1], alone['center'][0], rtol=1e-5)


def test_none_keeps_the_random_weights(graph):
    x = tf.placeholder(tf.float32, [None, 227, 227, 3])
    model = alexnet.AlexNet(x, num_classes=inference.num_classes_of(inference.RANDOM_WEIGHTS))
    with tf.Session() as session:
        session.run(tf.global_variables_initializer())
        before = session.run(model.variables(['conv1', 'fc8']))
        inference.restore_weights(session, model, inference.RANDOM_WEIGHTS)
        after = session.run(model.variables(['conv1', 'fc8']))
    assert model.fc8.shape.as_list() == [None, 1000]
    for want, got in zip(before, after):
        np.testing.assert_array_equal(got, want)


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(weight_files.WeightFileError) as err:
        inference.resolve_weights(str(tmp_path / 'bvlc_alexnet.npy'))
    assert 'download.py weights' in str(err.value) and '--weights none' in str(err.value)


def test_names_for_fine_tuned_sources(tmp_path, weights_npz):
    assert inference.class_names_for(weights_npz, 2) == ['cat', 'dog']
    run = tmp_path / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    run_folder.write_class_names(str(run), ['Cat', 'Dog', 'Fox'])
    assert inference.class_names_for(str(run), 3) == ['Cat', 'Dog', 'Fox']
    assert inference.class_names_for(str(run / 'checkpoints' / 'model.ckpt-7'), 3)[2] == 'Fox'
    assert inference.class_names_for(str(tmp_path / 'x.npy'), 1000, 'zh')[388] == '大熊猫'
    assert inference.class_names_for(str(tmp_path / 'x.npy'), 2) == ['class 0', 'class 1']


def test_labels_say_random_weights(tmp_path):
    assert 'RANDOM WEIGHTS' in inference.weights_label('none')
    run = tmp_path / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    (run / 'run.json').write_text('{"weights": "none"}')
    for source in (run, run / 'checkpoints' / 'model.ckpt-4', run / 'weights.npz'):
        assert 'trained from RANDOM WEIGHTS' in inference.weights_label(str(source))
    (run / 'run.json').write_text('{"weights": "weights/bvlc_alexnet.npy"}')
    assert 'RANDOM' not in inference.weights_label(str(run))
