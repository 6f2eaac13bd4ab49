"""Preprocessing: from a photo to AlexNet's input (paper sections 2 and 4.1).

The one home of the input's constants (size, mean, channel order, PCA colour
noise) and of the TensorFlow ops that use them. Every script, the tf.data
pipeline (datagenerator.py), the feature cache and the exported SavedModel
build their inputs from these functions; none redefines a constant.

The paper, as done here:

* every image is scaled so that its shorter side is 256 (section 2);
* training (section 4.1) takes a random 227x227 crop, flips it horizontally
  with probability 1/2, and adds PCA colour noise: the eigenvectors p_i and
  eigenvalues l_i of the ImageNet RGB pixel covariance, weighted by
  a_i ~ N(0, 0.1) drawn once per image, give [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T,
  added to every pixel;
* testing takes the center 227x227 crop, or the paper's ten patches (the four
  corners and the center, and their mirrors; section 4.1, "at test time");
* the network sees BGR minus the ImageNet mean pixel, as the Caffe bvlc_alexnet
  weights were trained.

    image = tf.placeholder(tf.uint8, [None, None, 3])     # RGB, any size
    x = preprocess_for_eval(image)                        # -> [227, 227, 3]
    scaled = resize_shorter_side(image)                   # training: scale, then
    x = random_view(scaled, augmentation_draws(key))      # crop, mirror, colour

Deviations from the paper:

* 227x227 crops, not 224 (bvlc_alexnet's input size);
* crops come from the whole image scaled to shorter side 256, where the paper
  first cuts out its central 256x256 square; for square photos this is the
  same, for others the crops see the whole photo;
* the PCA eigenvalues/vectors are those of ImageNet pixels in 0..1 published
  with fb.resnet.torch (the paper gives none), scaled by 255 for our pixels.
"""
from __future__ import annotations

import numpy as np
import tensorflow.compat.v1 as tf

IMAGE_SIZE = 227           # AlexNet's input side (bvlc_alexnet; the paper says 224)
SCALE_SIZE = 256           # shorter side before cropping (section 2)
# Mean pixel of the ILSVRC-2012 training set in BGR order, from Caffe's
# ilsvrc_2012_mean.npy, which bvlc_alexnet was trained with.
IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)

# PCA of ImageNet RGB pixels scaled to 0..1 (fb.resnet.torch): eigenvalues, and
# the eigenvectors as columns (PCA_EIGVEC[c][i] is channel c of eigenvector i).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
PCA_ALPHA_STDDEV = 0.1     # a_i ~ N(0, 0.1), section 4.1


# --- Scaling, cropping, channel order ----------------------------------------

def resize_shorter_side(image, size=SCALE_SIZE):
    """Scales an RGB image [H, W, 3] (uint8 or float) so its shorter side is `size`.

    Returns float32 [H', W', 3], bilinear (TF 1.x resize_images sampling). A
    uint8 image is resized as it is, without a float copy of the full image.
    """
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size)  # rounding guard
    resized = tf.image.resize_images(image, new_shape, method=tf.image.ResizeMethod.BILINEAR)
    return tf.cast(resized, tf.float32)


def center_crop(image, size=IMAGE_SIZE):
    """The central size x size window of a [H, W, C] tensor."""
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def rgb_to_model_input(image):
    """RGB pixels 0..255 -> float32 BGR minus the ImageNet mean, as bvlc_alexnet expects."""
    bgr = tf.reverse(tf.cast(image, tf.float32), axis=[-1])
    return bgr - tf.constant(IMAGENET_MEAN_BGR, tf.float32)


def model_input_to_rgb(batch):
    """Undoes rgb_to_model_input in NumPy: uint8 RGB images for display."""
    rgb = (np.asarray(batch, np.float32) + np.array(IMAGENET_MEAN_BGR, np.float32))[..., ::-1]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


# --- Testing: the center crop and the ten patches ------------------------------

def preprocess_for_eval(image):
    """uint8 RGB [H, W, 3] -> float32 [227, 227, 3] model input: scale to 256, center crop."""
    cropped = center_crop(resize_shorter_side(image), IMAGE_SIZE)
    cropped.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    return rgb_to_model_input(cropped)


def ten_windows(image):
    """[H, W, 3] -> [10, 227, 227, 3]: the top-left, top-right, bottom-left,
    bottom-right and center windows, then the same five mirrored."""
    shape = tf.shape(image)
    bottom, right = shape[0] - IMAGE_SIZE, shape[1] - IMAGE_SIZE
    crops = [tf.image.crop_to_bounding_box(image, top, left, IMAGE_SIZE, IMAGE_SIZE)
             for top, left in ((0, 0), (0, right), (bottom, 0), (bottom, right))]
    crops.append(center_crop(image, IMAGE_SIZE))
    crops = tf.stack(crops)                                              # -> [5, 227, 227, 3]
    crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)      # -> [10, 227, 227, 3]
    crops.set_shape([10, IMAGE_SIZE, IMAGE_SIZE, 3])
    return crops


def ten_crops(image):
    """uint8 RGB [H, W, 3] -> float32 [10, 227, 227, 3] model inputs, the paper's test patches.

    Scales the shorter side to 256, then takes ten_windows. Average the 10
    softmax outputs for the paper's prediction.
    """
    return rgb_to_model_input(ten_windows(resize_shorter_side(image)))


# --- Caffe's own test preprocessing (for its published bvlc_alexnet numbers) ------------

def caffe_warp(image, mean_image):
    """uint8 RGB [H, W, 3] -> float32 [256, 256, 3] BGR minus the mean image, as Caffe's tools
    prepared bvlc_alexnet's validation images.

    Caffe's convert_imageset warped every photo to 256x256 (no aspect ratio
    kept) with OpenCV's bilinear cv::resize, whose pixel centers sit at +0.5,
    and stored 8-bit pixels; its data layer then subtracted the 256x256 mean
    image (imagenet_mean.binaryproto), in BGR order. Its published top-1 57.1%
    and top-5 80.2% take the central 227x227 of that (offset 14).

    Args:
      image: uint8 RGB [H, W, 3].
      mean_image: float32 [256, 256, 3] BGR (caffemodel.read_mean_image,
        transposed), or a BGR mean pixel [3].
    """
    warped = tf.image.resize_bilinear(tf.expand_dims(image, 0), [SCALE_SIZE, SCALE_SIZE],
                                      half_pixel_centers=True)[0]       # -> [256, 256, 3]
    warped = tf.clip_by_value(tf.round(warped), 0.0, 255.0)              # stored as 8 bits
    return tf.reverse(warped, axis=[-1]) - tf.constant(mean_image, tf.float32)


def caffe_center_crop(image, mean_image):
    """Caffe's test input: the central 227x227 of caffe_warp, float32 [227, 227, 3]."""
    cropped = center_crop(caffe_warp(image, mean_image), IMAGE_SIZE)
    cropped.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    return cropped


def caffe_ten_crops(image, mean_image):
    """Caffe's 10-view test (its classifier's oversample): ten_windows of caffe_warp."""
    return ten_windows(caffe_warp(image, mean_image))


# --- Training: random crop, mirror, PCA colour noise (section 4.1) ----------------

def augmentation_draws(key):
    """The random numbers one training view needs, as a pure function of key (int64 [2]).

    Returns float32 [6]: [0:2] the crop's top and left as fractions of the free
    room, uniform in [0, 1); [2] < 0.5 means mirror; [3:6] the PCA alphas
    a_i ~ N(0, 0.1). The same key gives the same numbers in any run, on any
    thread, so augmentation repeats exactly with a seed.
    """
    key = tf.cast(key, tf.int64)
    uniform = tf.random.stateless_uniform([3], seed=key)
    alpha = tf.random.stateless_normal([3], seed=key + tf.constant([1, 0], tf.int64))
    return tf.concat([uniform, alpha * PCA_ALPHA_STDDEV], axis=0)


def pca_color_offset(alpha):
    """The PCA colour noise of section 4.1 for alpha [3]: an RGB offset [3] in 0..255 units.

    offset = [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T, with the eigenvectors p_i as
    columns, times 255 because the eigen-decomposition is of pixels in 0..1.
    """
    eigvec = tf.constant(PCA_EIGVEC, tf.float32)                          # [3 channels, 3 vectors]
    weighted = tf.cast(alpha, tf.float32) * tf.constant(PCA_EIGVAL, tf.float32)  # [3]
    return tf.reduce_sum(eigvec * weighted[None, :], axis=1) * 255.0      # -> [3] RGB


def random_view(scaled, draws, random_crop=True, flip=True, pca_noise=True):
    """One augmented training view of a scaled image (section 4.1).

    Args:
      scaled: float32 RGB [H, W, 3] with a shorter side of 256 (resize_shorter_side).
      draws: float32 [6] from augmentation_draws.
      random_crop, flip, pca_noise: switch each augmentation on (else: the
        center crop, no mirror, no colour noise).
    Returns:
      float32 [227, 227, 3] model input.
    """
    if random_crop:
        # Any 227x227 window: top in 0..H-227, left in 0..W-227, uniformly.
        room = tf.shape(scaled)[:2] - IMAGE_SIZE                         # [2]
        offsets = tf.cast(tf.floor(draws[0:2] * tf.cast(room + 1, tf.float32)), tf.int32)
        offsets = tf.minimum(offsets, room)                              # float rounding guard
        crop = tf.image.crop_to_bounding_box(scaled, offsets[0], offsets[1],
                                             IMAGE_SIZE, IMAGE_SIZE)
    else:
        crop = center_crop(scaled, IMAGE_SIZE)
    crop.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    if flip:
        crop = tf.cond(draws[2] < 0.5, lambda: tf.reverse(crop, axis=[1]), lambda: crop)
    if pca_noise:
        # The same offset for every pixel of this image; no clipping, as in the paper.
        crop = crop + pca_color_offset(draws[3:6])
    return rgb_to_model_input(crop)                                      # -> [227, 227, 3]
