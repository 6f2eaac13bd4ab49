"""preprocessing.py against its published constants and independent NumPy computations."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

import preprocessing as pp
from conftest import photo, run_graph

# The published numbers, written out here, not read from the module under test:
# Caffe's ilsvrc_2012_mean.npy averaged per channel, in BGR order (bvlc_alexnet's input);
MEAN_BGR = np.array([104.00698793, 116.66876762, 122.67891434])
# fb.resnet.torch's PCA of ImageNet RGB pixels in 0..1: eigenvalues, eigenvectors as columns.
EIGVAL = np.array([0.2175, 0.0188, 0.0045])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009],
                   [-0.5808, -0.0045, -0.8140],
                   [-0.5836, -0.6948, 0.4203]])


def np_resize_bilinear(image, height, width):
    """Bilinear resize with TF 1.x resize_images' sampling: source = target * in / out."""
    def axis(out_size, in_size):
        source = np.arange(out_size) * (in_size / out_size)
        low = np.floor(source).astype(int)
        return low, np.minimum(low + 1, in_size - 1), (source - low).astype(np.float32)
    y0, y1, fy = axis(height, image.shape[0])
    x0, x1, fx = axis(width, image.shape[1])
    image = image.astype(np.float32)
    fx = fx[None, :, None]
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def np_model_input(rgb):
    return rgb[..., ::-1].astype(np.float64) - MEAN_BGR


def test_constants_are_the_published_ones():
    assert (pp.IMAGE_SIZE, pp.SCALE_SIZE, pp.PCA_ALPHA_STDDEV) == (227, 256, 0.1)
    np.testing.assert_array_equal(pp.IMAGENET_MEAN_BGR, MEAN_BGR)
    np.testing.assert_array_equal(pp.PCA_EIGVAL, EIGVAL)
    np.testing.assert_array_equal(pp.PCA_EIGVEC, EIGVEC)


def test_model_input_is_bgr_minus_the_mean():
    image = np.zeros((300, 260, 3), np.uint8) + np.array([10, 120, 250], np.uint8)   # RGB
    out = run_graph(lambda: pp.preprocess_for_eval(tf.constant(image)))
    assert out.shape == (227, 227, 3)
    np.testing.assert_allclose(out, np.broadcast_to([250 - 104.00698793, 120 - 116.66876762,
                                                     10 - 122.67891434], out.shape), atol=1e-4)
    back = pp.model_input_to_rgb(out[None])[0]
    assert (back == [10, 120, 250]).all()


def test_eval_is_center_crop_of_the_resized_image():
    image = photo(200, 300, seed=1)                         # -> 256 x 384 after scaling
    out = run_graph(lambda: pp.preprocess_for_eval(tf.constant(image)))
    scaled = np_resize_bilinear(image, 256, 384)
    top, left = (256 - 227) // 2, (384 - 227) // 2
    np.testing.assert_allclose(out, np_model_input(scaled[top:top + 227, left:left + 227]),
                               atol=0.01)


def test_uint8_and_float_inputs_scale_alike():
    image = photo(300, 260, seed=2)

    def build():
        return (pp.resize_shorter_side(tf.constant(image)),
                pp.resize_shorter_side(tf.constant(image.astype(np.float32))))
    from_uint8, from_float = run_graph(build)
    assert from_uint8.dtype == np.float32 and from_uint8.shape == (295, 256, 3)
    np.testing.assert_array_equal(from_uint8, from_float)


def test_ten_crops_are_corners_center_and_mirrors():
    image = photo(260, 300, seed=2)

    def build():
        return pp.ten_crops(tf.constant(image)), pp.resize_shorter_side(tf.constant(image))
    crops, scaled = run_graph(build)

    assert crops.shape == (10, 227, 227, 3) and scaled.shape[0] == 256
    height, width = scaled.shape[:2]
    corners = [(0, 0), (0, width - 227), (height - 227, 0), (height - 227, width - 227),
               ((height - 227) // 2, (width - 227) // 2)]
    for i, (top, left) in enumerate(corners):
        window = np_model_input(scaled[top:top + 227, left:left + 227])
        np.testing.assert_allclose(crops[i], window, atol=1e-4)
        np.testing.assert_array_equal(crops[5 + i], crops[i][:, ::-1])
    np.testing.assert_array_equal(crops[4], run_graph(
        lambda: pp.preprocess_for_eval(tf.constant(image))))


def test_pca_offset_is_eigvec_times_alpha_times_eigval():
    alpha = np.array([0.1, -0.2, 0.05])
    offset = run_graph(lambda: pp.pca_color_offset(tf.constant(alpha, tf.float32)))
    expected = (EIGVEC @ (alpha * EIGVAL)) * 255           # RGB, in 0..255 units
    np.testing.assert_allclose(offset, expected, rtol=1e-5)


def test_augmentation_draws_repeat_per_key_and_have_the_papers_spread():
    keys = [[7, i] for i in range(4000)]
    draws = run_graph(lambda: tf.map_fn(pp.augmentation_draws, tf.constant(keys, tf.int64),
                                        dtype=tf.float32))
    again = run_graph(lambda: pp.augmentation_draws(tf.constant([7, 3], tf.int64)))
    np.testing.assert_array_equal(draws[3], again)
    uniform, alphas = draws[:, :3], draws[:, 3:]
    assert 0 <= uniform.min() and uniform.max() < 1 and abs(uniform.mean() - 0.5) < 0.02
    # a_i ~ N(0, 0.1): a spread ten times off (N(0, 1) or N(0, 0.01)) fails here.
    np.testing.assert_allclose(alphas.std(axis=0), 0.1, rtol=0.06)
    assert np.abs(alphas.mean(axis=0)).max() < 0.01


def test_random_view_switches():
    image = photo(256, 300, seed=4)
    draws = np.array([0.9, 0.1, 0.2, 0.3, -0.1, 0.2], np.float32)   # crop, mirror, alphas

    def build(**switches):
        def views():
            scaled = pp.resize_shorter_side(tf.constant(image))
            return pp.random_view(scaled, tf.constant(draws), **switches), scaled
        return views
    plain, scaled = run_graph(build(random_crop=False, flip=False, pca_noise=False))
    center = run_graph(lambda: pp.preprocess_for_eval(tf.constant(image)))
    np.testing.assert_array_equal(plain, center)
    # The crop: top = floor(0.9 * (256 - 227 + 1)), left = floor(0.1 * (300 - 227 + 1)).
    crop, _ = run_graph(build(flip=False, pca_noise=False))
    np.testing.assert_allclose(crop, np_model_input(scaled[27:27 + 227, 7:7 + 227]), atol=1e-4)
    mirrored, _ = run_graph(build(random_crop=False, pca_noise=False))
    np.testing.assert_array_equal(mirrored, center[:, ::-1])           # draw 0.2 < 0.5
    noisy, _ = run_graph(build(random_crop=False, flip=False))
    offset_bgr = (EIGVEC @ (draws[3:] * EIGVAL) * 255)[::-1]
    np.testing.assert_allclose(noisy - center, np.broadcast_to(offset_bgr, center.shape),
                               atol=1e-3)


@pytest.mark.parametrize('draw, mirrored', [(0.49, True), (0.5, False)])
def test_mirror_threshold(draw, mirrored):
    image = photo(240, 240, seed=5)
    draws = [0, 0, draw, 0, 0, 0]
    out, center = run_graph(lambda: (pp.random_view(pp.resize_shorter_side(tf.constant(image)),
                                                    tf.constant(draws, tf.float32),
                                                    random_crop=False, pca_noise=False),
                                     pp.preprocess_for_eval(tf.constant(image))))
    np.testing.assert_array_equal(out, center[:, ::-1] if mirrored else center)


def test_caffe_warp_is_opencvs_bilinear_resize_minus_the_mean_image():
    cv2 = pytest.importorskip('cv2', reason='opencv-python-headless (requirements-dev.txt) '
                                            'is the independent reference')
    image = photo(375, 500, seed=6)
    mean = np.random.RandomState(0).uniform(90, 130, (256, 256, 3)).astype(np.float32)
    warped, center = run_graph(lambda: (pp.caffe_warp(tf.constant(image), mean),
                                        pp.caffe_center_crop(tf.constant(image), mean)))
    # Caffe's convert_imageset: cv::imread (BGR), cv::resize to 256x256, 8-bit pixels.
    expected = cv2.resize(np.ascontiguousarray(image[:, :, ::-1]), (256, 256),
                          interpolation=cv2.INTER_LINEAR).astype(np.float32) - mean
    # OpenCV interpolates 8-bit pixels in fixed point (11-bit weights): values near
    # a half level round the other way, one level off; pixel centers at 0 (TF 1.x's
    # default sampling) would be 2.4 levels off on average here, 10 at most.
    difference = np.abs(warped - expected)
    assert difference.max() <= 1.0 + 1e-4 and difference.mean() < 0.2
    np.testing.assert_array_equal(center, warped[14:241, 14:241])
