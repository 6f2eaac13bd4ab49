"""evaluate.py: top-k error by hand, the 10 crops, ground-truth files, the command."""
import os

import numpy as np
import pytest
from PIL import Image


import datasets
import evaluate
import validate_alexnet_on_imagenet as validate
import weight_files
from conftest import random_layers


@pytest.fixture(scope='module')
def val_folder(tmp_path_factory):
    """An ILSVRC-2012-style folder: 5 generated photos, labels in sorted order."""
    folder = tmp_path_factory.mktemp('val')
    rng = np.random.RandomState(0)
    for i in range(5):
        size = (260 + 20 * i, 256)              # width, height
        pixels = (rng.rand(size[1], size[0], 3) * 60 + [40 * i, 200 - 30 * i, 100])
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
            str(folder / ('ILSVRC2012_val_%08d.JPEG' % (i + 1))))
    labels = folder / 'labels.txt'
    labels.write_text('0\n1\n1\n0\n1\n')
    return folder


# --- top-k error on a hand-made example --------------------------------------

PROBABILITIES = np.array([
    [0.10, 0.60, 0.10, 0.10, 0.10],   # label 1: first
    [0.50, 0.20, 0.15, 0.10, 0.05],   # label 2: third
    [0.05, 0.10, 0.15, 0.30, 0.40],   # label 0: last (fifth)
    [0.20, 0.20, 0.20, 0.20, 0.20],   # label 3: all tied -> ranked by index: fourth
])
LABELS = np.array([1, 2, 0, 3])


@pytest.mark.parametrize('k, error', [(1, 3 / 4), (2, 3 / 4), (3, 2 / 4), (4, 1 / 4), (5, 0.0)])
def test_topk_error_by_hand(k, error):
    assert evaluate.topk_error(PROBABILITIES, LABELS, k) == pytest.approx(error)


def test_topk_error_rejects_bad_input():
    with pytest.raises(ValueError, match='only 5 classes'):
        evaluate.topk_error(PROBABILITIES, LABELS, 6)
    with pytest.raises(ValueError, match='labels'):
        evaluate.topk_error(PROBABILITIES, LABELS[:3], 1)


# --- ground-truth files -------------------------------------------------------

def test_ground_truth_formats(tmp_path):
    plain = tmp_path / 'plain.txt'
    plain.write_text('65\n0\n999\n')
    assert evaluate.read_ground_truth(str(plain)) == [(None, 65), (None, 0), (None, 999)]
    one_based = tmp_path / 'one.txt'
    one_based.write_text('66\n1\n1000\n')
    assert evaluate.read_ground_truth(str(one_based), one_based=True) == \
        [(None, 65), (None, 0), (None, 999)]
    named = tmp_path / 'val.txt'
    named.write_text('ILSVRC2012_val_00000001.JPEG 65\nmy photo.jpg 3\n')
    assert evaluate.read_ground_truth(str(named)) == \
        [('ILSVRC2012_val_00000001.JPEG', 65), ('my photo.jpg', 3)]
    wnids = tmp_path / 'synsets.txt'
    wnids.write_text('n01751748\nn01440764\n')
    assert evaluate.read_ground_truth(str(wnids)) == [(None, 65), (None, 0)]


@pytest.mark.parametrize('text, flag, message', [
    ('0\n1\n', True, 'drop --one-based'),
    ('3\ncat\n', False, 'neither a class index nor a WordNet id'),
    ('n99999999\n', False, 'not one of the 1000'),
    ('a.jpg 1\n2\n', False, 'one format'),
    ('\n', False, 'no labels'),
    ('9' * 5000 + '\n', False, 'neither a class index'),
])
def test_bad_ground_truth_says_why(tmp_path, text, flag, message):
    path = tmp_path / 'labels.txt'
    path.write_text(text)
    with pytest.raises(evaluate.GroundTruthError, match=message):
        evaluate.read_ground_truth(str(path), one_based=flag)


def test_imagenet_items_pair_sorted_files_with_lines(val_folder, tmp_path):
    items = evaluate.imagenet_items(str(val_folder), str(val_folder / 'labels.txt'))
    assert [(os.path.basename(p), label) for p, label in items] == [
        ('ILSVRC2012_val_%08d.JPEG' % (i + 1), label) for i, label in enumerate([0, 1, 1, 0, 1])]
    short = tmp_path / 'short.txt'
    short.write_text('0\n1\n')
    with pytest.raises(evaluate.GroundTruthError, match='5 images but .* 2 labels'):
        evaluate.imagenet_items(str(val_folder), str(short))
    named = tmp_path / 'named.txt'
    named.write_text('ILSVRC2012_val_00000002.JPEG 1\nnot_here.JPEG 0\n')
    assert [(os.path.basename(p), label) for p, label in
            evaluate.imagenet_items(str(val_folder), str(named))] == \
        [('ILSVRC2012_val_00000002.JPEG', 1)]


# --- the command ----------------------------------------------------------------

def test_main_on_imagenet_layout_prints_errors_beside_the_paper(weights_npz, val_folder, capsys):
    assert evaluate.main(['--images', str(val_folder), '--labels',
                          str(val_folder / 'labels.txt'), '--weights', weights_npz,
                          '--batch-size', '2', '--no-progress']) == 0
    report = capsys.readouterr().out
    for text in ('center crop', '10 crops, softmax averaged', '40.7%', '18.2%', '42.9%',
                 '19.8%', '5 images, 2 classes', 'not comparable', 'n/a'):
        assert text in report, text
    # The center-crop top-1 error agrees with the classification script's answers.
    items = evaluate.imagenet_items(str(val_folder), str(val_folder / 'labels.txt'))
    results = validate.classify([p for p, _ in items], weights_npz)
    wrong = sum(r['top'][0]['index'] != label for r, (_, label) in zip(results, items))
    line = [l for l in report.splitlines() if 'this model, center crop' in l][0]
    assert line.split()[4] == '%.1f%%' % (100.0 * wrong / len(items))


def test_evaluate_reports_the_top_1_and_top_5_errors(val_folder, tmp_path):
    """Labels placed at chosen ranks of the classifier's own answers: two at the fifth
    place (counted by top-5, not by top-4), one first, two outside the top five."""
    weights = str(tmp_path / 'ten_classes.npz')
    weight_files.save_npz(weights, random_layers(num_classes=10, seed=4))
    paths = sorted(str(p) for p in val_folder.glob('*.JPEG'))
    ranked = [[t['index'] for t in r['top']] for r in validate.classify(paths, weights, top_k=10)]
    labels = [ranked[0][4], ranked[1][4], ranked[2][0], ranked[3][7], ranked[4][9]]
    result = evaluate.evaluate(list(zip(paths, labels)), weights, crops=('center',))
    assert result['center'] == pytest.approx({1: 4 / 5, 5: 2 / 5})


def test_main_on_a_run_split(weights_npz, val_folder, tmp_path, capsys):
    run = tmp_path / 'run1'
    run.mkdir()
    paths = sorted(str(p) for p in val_folder.glob('*.JPEG'))
    datasets.write_split(str(run / 'split.json'), [(paths[0], 0)],
                              [(paths[1], 1), (paths[2], 0)], ['cat', 'dog'])
    assert evaluate.main(['--run', str(run), '--weights', weights_npz, '--crops', 'center']) == 0
    report = capsys.readouterr().out
    assert '2 images, 2 classes' in report and '10 crops, softmax' not in report


def test_random_weights_are_said_plainly(val_folder, capsys):
    assert evaluate.main(['--images', str(val_folder), '--labels', str(val_folder / 'labels.txt'),
                          '--weights', 'none', '--crops', 'center', '--limit', '2']) == 0
    assert 'RANDOM WEIGHTS' in capsys.readouterr().out


def test_labels_out_of_range(weights_npz, val_folder, tmp_path, capsys):
    path = tmp_path / 'labels.txt'
    path.write_text('2\n1\n1\n0\n1\n')
    assert evaluate.main(['--images', str(val_folder), '--labels', str(path),
                          '--weights', weights_npz]) == 2
    err = capsys.readouterr().err
    assert ('label 2 is out of range for a model of 2 classes; the file seems to count from 1: '
            'pass --one-based') in err and err.count('\n') == 1


@pytest.mark.parametrize('args', [['--run', 'nowhere', '--images', 'x'], ['--images', 'x'], []])
def test_either_images_and_labels_or_a_run(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(args)
    assert exit_info.value.code == 2 and 'give either' in capsys.readouterr().err


def test_missing_folder_is_one_line_without_weight_advice(tmp_path, capsys):
    assert evaluate.main(['--images', str(tmp_path / 'nowhere'), '--labels',
                          str(tmp_path / 'labels.txt'), '--weights', 'none']) == 2
    err = capsys.readouterr().err
    assert 'no such image folder' in err and err.count('\n') == 1 and 'weights' not in err


def test_ground_truth_that_is_not_text(tmp_path):
    path = tmp_path / 'labels.txt'
    path.write_bytes(b'\xff\xfe\x00\x01')
    with pytest.raises(evaluate.GroundTruthError, match='not a UTF-8 text file'):
        evaluate.read_ground_truth(str(path))


def test_run_folder_without_split_says_what_to_pass(tmp_path, capsys):
    assert evaluate.main(['--run', str(tmp_path), '--weights', 'none']) == 2
    assert 'no split.json' in capsys.readouterr().err


def test_caffe_preprocessing_with_a_mean_image(weights_npz, val_folder, tmp_path, capsys):
    import caffe_files
    mean = np.random.RandomState(1).uniform(90, 130, (3, 256, 256)).astype(np.float32)
    mean_path = str(tmp_path / 'imagenet_mean.binaryproto')
    caffe_files.write_blobproto(mean_path, mean)
    args = ['--images', str(val_folder), '--labels', str(val_folder / 'labels.txt'),
            '--weights', weights_npz, '--preprocess', 'caffe', '--no-progress']
    assert evaluate.main(args + ['--mean', mean_path]) == 0
    report = capsys.readouterr().out
    assert 'warped to 256x256, mean image' in report and '42.9%' in report
    assert evaluate.main(args + ['--mean', str(tmp_path / 'missing')]) == 2
    assert '--mean pixel' in capsys.readouterr().err
    # The caffe numbers come from the caffe inputs: with another mean they change.
    import inference
    items = evaluate.imagenet_items(str(val_folder), str(val_folder / 'labels.txt'))
    paths = [path for path, _ in items]
    caffe = inference.model_outputs(paths, weights_npz, layer='fc7',
                                    mean_image=mean.transpose(1, 2, 0))[0]['center']
    plain = inference.model_outputs(paths, weights_npz, layer='fc7')[0]['center']
    assert np.abs(caffe - plain).max() > 1e-3 * np.abs(plain).max()
