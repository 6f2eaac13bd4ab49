"""retrieval.py: nearest neighbours on crafted features, and the command on generated photos."""
import os

import numpy as np
import pytest
from PIL import Image

import image_files
import inference
import retrieval
import weight_files
from conftest import random_layers

# Five points in 2-d: distances from (0.9, 0) are 0.1, 0.9, 2.1, ~2.19, ~13.5.
FEATURES = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [10.0, 10.0]])


def test_nearest_neighbours_of_crafted_features():
    indices, distances = retrieval.nearest_neighbours(FEATURES, [[0.9, 0.0], [9.0, 9.0]], k=3)
    np.testing.assert_array_equal(indices, [[1, 0, 2], [4, 2, 3]])
    np.testing.assert_allclose(distances[0], [0.1, 0.9, 2.1], atol=1e-9)
    np.testing.assert_allclose(distances[1], [np.sqrt(2), np.sqrt(117), np.sqrt(130)])


def test_queries_from_the_database_leave_themselves_out():
    indices, distances = retrieval.nearest_neighbours(FEATURES, FEATURES[:2], k=10,
                                                      exclude=[0, 1])
    assert indices.shape == (2, 4)                 # k capped at the 4 others
    np.testing.assert_array_equal(indices[:, 0], [1, 0])
    assert 0 not in indices[0] and 1 not in indices[1]
    np.testing.assert_allclose(distances[:, 0], [1.0, 1.0])


def test_ties_keep_the_lower_index_first():
    features = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    indices, distances = retrieval.nearest_neighbours(features, [[0.0, 0.0]], k=4)
    np.testing.assert_array_equal(indices, [[0, 1, 2, 3]])
    np.testing.assert_allclose(distances, [[1.0] * 4])


def test_high_dimensional_distances_match_numpy():
    rng = np.random.RandomState(0)
    features = np.maximum(rng.standard_normal((30, 4096)), 0).astype(np.float32)  # ReLU-like
    queries = features[:3] + 0.01
    indices, distances = retrieval.nearest_neighbours(features, queries, k=5)
    direct = np.linalg.norm(queries[:, None, :].astype(np.float64) - features[None], axis=2)
    np.testing.assert_array_equal(indices, np.argsort(direct, axis=1, kind='stable')[:, :5])
    np.testing.assert_allclose(distances, np.sort(direct, axis=1)[:, :5], rtol=1e-6)


# --- the command on generated photos ------------------------------------------

def stripes(width, period, colour, shift=0):
    x = np.arange(width) + shift
    row = np.where((x // period) % 2 == 0, 1.0, 0.1)
    return (row[None, :, None] * np.array(colour)[None, None, :] * np.ones((240, 1, 1)))


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    """Two pairs of near-duplicates (a photo and a slightly changed copy) and a lone image.

    Whatever the weights, a photo's fc7 vector is nearest its near-duplicate's.
    """
    folder = tmp_path_factory.mktemp('photos')
    os.makedirs(str(folder / 'zebras'))
    os.makedirs(str(folder / 'other'))
    gradient = np.tile(np.linspace(0, 255, 320)[None, :, None], (240, 1, 3)) * [1.0, 0.3, 0.1]
    images = {
        'zebras/a.png': stripes(320, 10, (250, 250, 250)),
        'zebras/a_shifted.png': stripes(320, 10, (250, 250, 250), shift=2),   # moved 2 pixels
        'other/b.png': gradient,
        'other/b_shifted.png': gradient + 3,                                  # a bit brighter
        'other/c.png': np.random.RandomState(3).rand(240, 320, 3) * 255,
    }
    for name, pixels in images.items():
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(str(folder / name))
    return folder


@pytest.fixture(scope='module')
def weights_npz(module_dir):
    path = module_dir / 'two_classes.npz'
    weight_files.save_npz(str(path), random_layers(num_classes=2, seed=3))
    return str(path)


def test_retrieve_finds_the_near_duplicate(photos, weights_npz):
    database, _ = image_files.image_paths([str(photos)])
    results, failed = retrieval.retrieve(database, weights_npz, k=2, max_queries=5)
    assert failed == []
    nearest = {os.path.basename(q): os.path.basename(row[0][0]) for q, row in results}
    assert nearest['a.png'] == 'a_shifted.png' and nearest['a_shifted.png'] == 'a.png'
    assert nearest['b.png'] == 'b_shifted.png'
    for query, row in results:
        assert query not in [path for path, _ in row]             # never itself
        assert row[0][1] <= row[1][1]                             # nearest first


def test_main_draws_a_row_per_query(photos, weights_npz, tmp_path, capsys):
    out = tmp_path / 'retrieval.png'
    assert retrieval.main([str(photos / 'other'), '--queries', str(photos / 'zebras' / 'a.png'),
                           str(photos / 'other' / 'b.png'), '--top-k', '2', '--weights',
                           weights_npz, '--out', str(out)]) == 0
    printed = capsys.readouterr().out
    assert '6 tiles' in printed                                   # 2 queries x (1 + 2)
    with Image.open(str(out)) as image:
        assert image.size == tuple(int(v) for v in
                                   printed.split('pixels')[0].split()[-1].split('x'))
    # b.png is in the searched folder too: its nearest is itself at distance 0
    lines = printed.splitlines()
    b = lines.index(str(photos / 'other' / 'b.png'))
    assert lines[b + 1].split() == ['0', str(photos / 'other' / 'b.png')]


def test_main_with_random_weights_says_so(photos, tmp_path, capsys):
    assert retrieval.main([str(photos / 'zebras'), '--weights', 'none', '--top-k', '1',
                           '--out', str(tmp_path / 'r.png')]) == 0
    assert 'RANDOM WEIGHTS' in capsys.readouterr().out


def test_main_errors(tmp_path, capsys):
    assert retrieval.main([str(tmp_path), '--weights', 'none']) == 2
    assert 'no images in' in capsys.readouterr().err
    assert retrieval.main([str(tmp_path / 'x'), '--weights', 'none']) == 2
    err = capsys.readouterr().err
    assert 'x: no such file or folder' in err and 'no images in' in err
    (tmp_path / 'a.png').write_bytes(b'')
    assert retrieval.main([str(tmp_path), '--weights', str(tmp_path / 'w.npz')]) == 2
    assert '--weights none' in capsys.readouterr().err


def test_two_query_sets_keep_two_figures():
    assert retrieval.default_out(None) == os.path.join('logs', 'retrieval.png')
    assert retrieval.default_out(['images/llama.jpg']) == os.path.join('logs',
                                                                       'retrieval_llama.png')


def test_draw_returns_tile_count(photos, tmp_path):
    a, b = str(photos / 'zebras' / 'a.png'), str(photos / 'other' / 'b.png')
    figure = retrieval.draw([(a, [(b, 1.5), (a, 0.0)]), (b, [(a, 1.5)])],
                            str(tmp_path / 'grid.png'), inference.RANDOM_WEIGHTS)
    assert figure.tiles == 5
    with Image.open(figure.path) as image:
        assert image.size == figure.size
