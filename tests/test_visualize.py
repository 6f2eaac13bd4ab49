"""visualize.py and the grids of figures.py: tiles, sizes, colours, curves, commands."""
import os

import numpy as np
import pytest
from PIL import Image

import tensorflow.compat.v1 as tf

import figures
import run_folder
import visualize
import weight_files


@pytest.fixture(scope='module')
def striped_jpg(tmp_path_factory):
    """A 300x240 photo of vertical black and white stripes (a 'zebra')."""
    x = np.arange(300)
    row = np.where((x // 12) % 2 == 0, 255, 20).astype(np.uint8)
    image = np.repeat(np.repeat(row[None, :, None], 240, axis=0), 3, axis=2)
    path = tmp_path_factory.mktemp('images') / 'zebra.jpg'
    Image.fromarray(image).save(str(path), quality=95)
    return str(path)


def png_size(path):
    with Image.open(path) as image:
        return image.size


# --- Grids ------------------------------------------------------------------

def test_mosaic_places_each_tile_in_rows_of_columns():
    tiles = np.stack([np.full((11, 11, 3), i / 95.0) for i in range(96)])
    grid = figures.mosaic(tiles, columns=16, pad=1)
    assert grid.shape == (6 * 12 + 1, 16 * 12 + 1, 3)
    for i in (0, 15, 16, 95):
        top, left = 1 + (i // 16) * 12, 1 + (i % 16) * 12
        np.testing.assert_allclose(grid[top:top + 11, left:left + 11], i / 95.0)
    assert np.all(grid[0] == 1.0)          # white padding


def test_scale_each_gives_every_tile_its_own_range():
    tiles = np.stack([np.linspace(-0.01, 0.03, 12).reshape(2, 2, 3),
                      np.linspace(5.0, 9.0, 12).reshape(2, 2, 3),
                      np.zeros((2, 2, 3))])
    scaled = figures.scale_each(tiles)
    np.testing.assert_allclose(scaled[:2].min(axis=(1, 2, 3)), [0, 0])
    np.testing.assert_allclose(scaled[:2].max(axis=(1, 2, 3)), [1, 1])
    assert np.all(scaled[2] == 0)          # a dead map stays black


def test_kernel_tiles_show_bgr_weights_in_rgb():
    kernel = np.zeros((11, 11, 3, 96), np.float32)
    kernel[:, :, 0, 7] = 1.0               # input channel 0 is blue in BGR
    tiles = figures.kernel_tiles(kernel)
    assert tiles.shape == (96, 11, 11, 3)
    assert np.all(tiles[7, :, :, 2] == 1.0) and np.all(tiles[7, :, :, :2] == 0)


def test_conv2_panels_one_48_tile_grid_per_filter():
    kernel = np.random.RandomState(0).standard_normal((5, 5, 48, 256)).astype(np.float32)
    panels = visualize.conv2_kernel_panels(kernel, [0, 200])
    assert [tiles for _, _, tiles in panels] == [48, 48]
    assert panels[0][0].shape == (6 * 6 + 1, 8 * 6 + 1, 1)
    assert 'maps 0-47' in panels[0][1] and 'maps 48-95' in panels[1][1]
    with pytest.raises(visualize.InputError, match='0-255'):
        visualize.conv2_kernel_panels(kernel, [256])


# --- Commands ---------------------------------------------------------------

def test_filters_command_draws_96_tiles_and_logs_tensorboard(tmp_path, weights_npz, capsys):
    out, log_dir = tmp_path / 'filters.png', tmp_path / 'tb'
    assert visualize.main(['filters', '--weights', weights_npz, '--out', str(out),
                           '--tensorboard-dir', str(log_dir)]) == 0
    printed = capsys.readouterr().out
    assert '96 tiles' in printed and 'RANDOM' not in printed
    figure = visualize.draw_filters(weights_npz, str(tmp_path / 'again.png'))
    assert figure.tiles == 96 and png_size(out) == figure.size
    # one row of 16 x 6 tiles, 3.6 inches high at 100 dpi plus the titles
    assert 900 < figure.size[0] < 1050 and 380 < figure.size[1] < 480
    events = [str(p) for p in log_dir.iterdir() if 'tfevents' in p.name]
    tags = {(value.tag, value.image.height, value.image.width)
            for path in events for event in tf.train.summary_iterator(path)
            for value in event.summary.value}
    # 6 rows x 16 columns of 11x11 tiles with 1 pixel between, 4 times bigger
    assert any(tag.startswith('conv1_filters') and (height, width) == (73 * 4, 193 * 4)
               for tag, height, width in tags), tags


def test_filter_mosaic_is_the_kernels_in_order(weights_npz):
    kernel = weight_files.load_weights(weights_npz)['conv1'][0]
    grid, count = visualize.conv1_filter_mosaic(kernel)
    assert count == 96
    tile = kernel[:, :, ::-1, 17]          # 18th kernel, RGB: row 1, column 1 of 16
    expected = (tile - tile.min()) / (tile.max() - tile.min())
    np.testing.assert_allclose(grid[13:24, 13:24], expected, atol=1e-6)


def test_random_weights_are_named_in_title_and_output(tmp_path, capsys, monkeypatch):
    titles = []
    save = figures.save_mosaics

    def spy(panels, path, title=None, **kwargs):
        titles.append(title)
        return save(panels, path, title=title, **kwargs)
    monkeypatch.setattr(figures, 'save_mosaics', spy)
    assert visualize.main(['filters', '--weights', 'none', '--out',
                           str(tmp_path / 'f.png')]) == 0
    assert 'RANDOM WEIGHTS' in capsys.readouterr().out
    assert 'RANDOM WEIGHTS' in titles[0]


def test_features_command_draws_maps_beside_image_and_conv2(tmp_path, weights_npz,
                                                            striped_jpg, capsys):
    out, conv2_out = tmp_path / 'features.png', tmp_path / 'conv2.png'
    assert visualize.main(['features', '--image', striped_jpg, '--weights', weights_npz,
                           '--out', str(out), '--conv2-out', str(conv2_out),
                           '--conv2-filters', '0', '1', '130', '--tensorboard-dir',
                           str(tmp_path / 'tb')]) == 0
    printed = capsys.readouterr().out
    assert '96 tiles' in printed and '144 tiles' in printed    # 3 filters x 48 channels
    features, conv2 = visualize.draw_features(striped_jpg, weights_npz, str(out),
                                              str(conv2_out), (0, 1, 130))
    assert (features.tiles, conv2.tiles) == (96, 144)
    assert png_size(out) == features.size and png_size(conv2_out) == conv2.size
    # the image and its 16 x 6 maps side by side; conv2: one row of 3 filters
    assert features.size[0] > 3 * features.size[1] and conv2.size[0] > conv2.size[1]


def test_conv1_activations_are_the_networks_relu_maps(weights_npz, striped_jpg):
    crop, maps, conv2 = visualize.conv1_activations(striped_jpg, weights_npz)
    assert crop.shape == (227, 227, 3) and crop.dtype == np.uint8
    assert maps.shape == (55, 55, 96) and maps.min() >= 0
    assert conv2.shape == (5, 5, 48, 256)
    # One neuron by hand: window (row 10, column 20) of the BGR-minus-mean crop.
    weights, biases = weight_files.load_weights(weights_npz)['conv1']
    x = crop[..., ::-1].astype(np.float32) - np.array([104.00698793, 116.66876762, 122.67891434],
                                                      np.float32)
    window = x[40:51, 80:91]                                     # stride 4
    expected = max(0.0, float((window[..., None] * weights).sum(axis=(0, 1, 2))[5] + biases[5]))
    # the crop was rounded to uint8 for display, hence the tolerance
    assert maps[10, 20, 5] == pytest.approx(expected, rel=0.05, abs=0.5)


def write_metrics(folder, rows):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.csv'), 'w') as f:
        f.write('epoch,step,train_loss,train_accuracy,val_loss,val_accuracy,'
                'learning_rate,seconds\n')
        for row in rows:
            f.write(','.join(str(v) for v in row) + '\n')


def test_curves_overlay_runs_from_metrics_csv(tmp_path, capsys):
    write_metrics(tmp_path / 'pretrained', [(1, 10, 0.6, 0.7, 0.4, 0.8, 0.001, 5.0),
                                            (2, 20, 0.3, 0.9, 0.25, 0.9, 0.001, 9.5)])
    write_metrics(tmp_path / 'scratch', [(1, 10, 0.7, 0.5, '', '', 0.01, 5.0),
                                         (2, 20, 0.69, 0.52, 0.69, 0.5, 0.01, 9.0)])
    out = tmp_path / 'curves.png'
    assert visualize.main(['curves', '--run', str(tmp_path / 'pretrained'),
                           str(tmp_path / 'scratch' / 'metrics.csv'), '--out', str(out)]) == 0
    assert '2 tiles' in capsys.readouterr().out
    metrics = run_folder.read_metrics(str(tmp_path / 'scratch'))
    np.testing.assert_allclose(metrics['epoch'], [1, 2])
    assert np.isnan(metrics['val_loss'][0]) and metrics['val_accuracy'][1] == 0.5
    assert [visualize.run_label(str(tmp_path / r)) for r in ('pretrained', 'scratch/metrics.csv')] \
        == ['pretrained', 'scratch']
    figure = visualize.draw_curves([str(tmp_path / 'pretrained')], str(out))
    assert figure.tiles == 1 and png_size(out) == figure.size


def test_curves_errors_say_what_to_pass(tmp_path, capsys):
    assert visualize.main(['curves', '--run', str(tmp_path), '--out',
                           str(tmp_path / 'c.png')]) == 2
    assert 'no metrics.csv' in capsys.readouterr().err
    (tmp_path / 'metrics.csv').write_text('epoch,loss\n1,0.5\n')
    assert visualize.main(['curves', '--run', str(tmp_path), '--out',
                           str(tmp_path / 'c.png')]) == 2
    assert 'missing columns train_loss' in capsys.readouterr().err


def test_curves_of_a_run_from_random_weights_say_so(tmp_path, monkeypatch):
    write_metrics(tmp_path / 'scratch', [(1, 10, 0.7, 0.5, 0.7, 0.5, 0.01, 5.0)])
    (tmp_path / 'scratch' / 'run.json').write_text('{"weights": "none"}')
    write_metrics(tmp_path / 'pretrained', [(1, 10, 0.6, 0.7, 0.4, 0.8, 0.001, 5.0)])
    titles = []
    monkeypatch.setattr(figures, 'save_curves',
                        lambda metrics, out, title: titles.append(title))
    visualize.draw_curves([str(tmp_path / 'pretrained'), str(tmp_path / 'scratch')],
                          str(tmp_path / 'c.png'))
    assert 'scratch: trained from RANDOM WEIGHTS' in titles[0]
    assert 'pretrained:' not in titles[0]


def test_missing_weights_file_exits_2_with_hint(tmp_path, capsys):
    assert visualize.main(['filters', '--weights', str(tmp_path / 'nope.npy'),
                           '--out', str(tmp_path / 'f.png')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and '--weights none' in err
    assert not (tmp_path / 'f.png').exists()
