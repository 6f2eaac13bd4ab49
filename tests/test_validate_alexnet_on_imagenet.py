"""The classification script, run through main() as a user would."""
import json
import os
import shutil

import numpy as np
import pytest

import class_names
import validate_alexnet_on_imagenet as validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [os.path.join(REPO, 'images', name) for name in ('llama.jpg', 'giant_panda.jpg')]


def test_json_top5_for_each_image_and_error_for_unreadable(tmp_path, bvlc_npy, capsys):
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a jpeg')
    figure = tmp_path / 'figure.png'
    code = validate.main(PHOTOS + [str(broken), '--weights', str(bvlc_npy), '--json',
                                   '--out', str(figure)])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 1
    assert [r['image'] for r in results] == PHOTOS + [str(broken)]
    names = class_names.imagenet_class_names()
    for result in results[:2]:
        probs = [entry['prob'] for entry in result['top']]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        assert 0 < sum(probs) <= 1.0 + 1e-6
        assert all(entry['name'] == names[entry['index']] for entry in result['top'])
    assert 'cannot identify image' in results[2]['error']
    assert '1 of 3 images could not be read' in captured.err
    assert figure.stat().st_size > 10000


def test_probabilities_are_the_models_softmax(tmp_path, bvlc_npy, bvlc_layers):
    """The printed top class is the argmax of a NumPy forward pass on the same input."""
    import tensorflow.compat.v1 as tf
    import image_files
    import preprocessing
    from test_alexnet import np_alexnet
    results = validate.classify(PHOTOS[:1], str(bvlc_npy))
    with tf.Graph().as_default(), tf.Session() as session:
        image = tf.constant(image_files.read_image(PHOTOS[0]))
        x = session.run(preprocessing.preprocess_for_eval(image))
    logits = np_alexnet(x[None].astype(np.float64), bvlc_layers)['fc8'][0]
    prob = np.exp(logits - logits.max())
    prob /= prob.sum()
    top = results[0]['top'][0]
    assert top['index'] == int(np.argmax(prob))
    assert abs(top['prob'] - prob.max()) < 1e-4


def test_default_folder_chinese_names(tmp_path, bvlc_npy, capsys, monkeypatch):
    images = tmp_path / 'images'
    images.mkdir()
    shutil.copy(PHOTOS[0], str(images))
    (images / 'notes.txt').write_text('not an image, not listed')
    monkeypatch.chdir(tmp_path)
    assert validate.main(['--weights', str(bvlc_npy), '--lang', 'zh', '--top-k', '3']) == 0
    out = capsys.readouterr().out
    chinese = set(class_names.imagenet_class_names('zh'))
    lines = out.splitlines()
    assert lines[0] == os.path.join('images', 'llama.jpg')
    assert all(line.split('%  ')[1] in chinese for line in lines[1:4])
    assert (tmp_path / 'logs' / 'validation_results.png').exists()


def test_missing_weights_exit_2_with_instructions(tmp_path, capsys):
    code = validate.main(PHOTOS[:1] + ['--weights', str(tmp_path / 'bvlc_alexnet.npy')])
    err = capsys.readouterr().err
    assert code == 2 and err.count('\n') == 1
    assert 'weights/' in err and 'download.py weights' in err and '--weights none' in err


def test_random_weights_say_so(tmp_path, capsys):
    code = validate.main(PHOTOS[:1] + ['--weights', 'none', '--out', ''])
    assert code == 0
    assert 'RANDOM WEIGHTS' in capsys.readouterr().out


def test_bad_top_k(capsys):
    with pytest.raises(SystemExit) as exit_info:
        validate.parse_args(['--top-k', '0'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'must be at least 1' in err and err.count('\n') == 1


def test_no_images(tmp_path, capsys):
    assert validate.main([str(tmp_path), '--weights', 'none']) == 2
    assert 'no images to classify' in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs on this system')
def test_a_fifo_and_a_huge_image_do_not_stop_the_others(tmp_path, capsys):
    from PIL import Image
    os.mkfifo(str(tmp_path / 'pipe.jpg'))
    Image.new('RGB', (1, 30000)).save(str(tmp_path / 'strip.png'))
    shutil.copy(PHOTOS[0], str(tmp_path / 'llama.jpg'))
    code = validate.main([str(tmp_path / 'pipe.jpg'), str(tmp_path / 'strip.png'),
                          str(tmp_path / 'llama.jpg'), '--weights', 'none', '--out', '', '--json'])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 1
    assert 'not a regular file' in results[0]['error'] and 'longer than' in results[1]['error']
    assert len(results[2]['top']) == 5
    assert '2 of 3 images could not be read' in captured.err


def _top3(stdout):
    """{file name: [class index, ...]} of the top 3 printed for each of PHOTOS."""
    tops, name = {}, None
    for line in stdout.splitlines():
        if line in PHOTOS:
            name = os.path.basename(line)
            tops[name] = []
        elif name and line.startswith('  ') and len(tops[name]) < 3:
            tops[name].append(int(line.split()[0]))
    assert sorted(tops) == sorted(os.path.basename(p) for p in PHOTOS), stdout
    return tops


def _captions(drawn_text, stdout):
    """The figure's caption of each printed image, with the font file it was drawn in."""
    return {text.split('\n')[0]: (text, font_file) for text, font_file in drawn_text.texts
            if text.split('\n')[0] in _top3(stdout)}


def test_chinese_figure_is_drawn_in_a_chinese_font(tmp_path, capsys, chinese_font, drawn_text):
    import matplotlib.font_manager
    figure = tmp_path / 'zh.png'
    assert validate.main(PHOTOS + ['--weights', 'none', '--lang', 'zh', '--out', str(figure)]) == 0
    captured = capsys.readouterr()
    chinese = class_names.imagenet_class_names('zh')
    captions = _captions(drawn_text, captured.out)
    chinese_file = str(matplotlib.font_manager.findfont(
        matplotlib.font_manager.FontProperties(family=[chinese_font])))
    assert sorted(captions) == sorted(os.path.basename(p) for p in PHOTOS)
    for name, indices in _top3(captured.out).items():
        text, font_file = captions[name]
        assert [line.split('% ', 1)[1] for line in text.split('\n')[1:]] == [
            chinese[i][:28] for i in indices]
        assert font_file == chinese_file
    assert drawn_text.missing_glyphs() == []
    titles = [text for text, _ in drawn_text.texts if 'RANDOM WEIGHTS' in text]
    assert len(titles) == 1 and 'note' not in captured.err
    assert figure.stat().st_size > 10000


def test_chinese_figure_without_a_chinese_font_uses_english_and_says_so(
        tmp_path, capsys, drawn_text, monkeypatch):
    import figures
    monkeypatch.setattr(figures, 'cjk_font', lambda text=figures.CJK_SAMPLE: None)
    figure = tmp_path / 'zh.png'
    assert validate.main(PHOTOS + ['--weights', 'none', '--lang', 'zh', '--out', str(figure)]) == 0
    captured = capsys.readouterr()
    assert any(figures.has_cjk(line) for line in captured.out.splitlines())   # printed: Chinese
    english = class_names.imagenet_class_names('en')
    captions = _captions(drawn_text, captured.out)
    for name, indices in _top3(captured.out).items():
        text, _ = captions[name]
        assert [line.split('% ', 1)[1] for line in text.split('\n')[1:]] == [
            english[i].split(',')[0][:28] for i in indices]
    assert drawn_text.missing_glyphs() == []
    assert captured.err.count('\n') == 1
    assert captured.err.startswith('note: no installed font has these Chinese characters')
    assert 'apt-get install fonts-noto-cjk' in captured.err and 'in English' in captured.err
    assert figure.stat().st_size > 10000
