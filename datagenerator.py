"""Input pipeline and the one home of preprocessing (paper section 4.1).

Everything that turns a photo into AlexNet's input lives here: reading any image
file as 3-channel RGB, scaling, cropping, and the change to what the
bvlc_alexnet weights expect (BGR channel order minus the ImageNet mean pixel).
Every script imports these; none redefines a constant.

Evaluation (as in the paper's single-crop test): scale the shorter side to 256,
take the center 227x227 crop.
"""
from __future__ import annotations

import numpy as np
import tensorflow.compat.v1 as tf
from PIL import Image, ImageOps

IMAGE_SIZE = 227           # AlexNet's input side (bvlc_alexnet; the paper says 224)
SCALE_SIZE = 256           # shorter side before cropping (section 2)
# Mean pixel of the ILSVRC-2012 training set in BGR order, from Caffe's
# ilsvrc_2012_mean.npy, which bvlc_alexnet was trained with.
IMAGENET_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)


class ImageError(ValueError):
    """An image file could not be read or decoded."""


def read_image(path):
    """Reads any image PIL can decode as a uint8 RGB array [H, W, 3].

    Grayscale, CMYK, palette, 16-bit and alpha images become plain RGB (alpha is
    composited on white); an animated GIF gives its first frame; EXIF rotation is
    applied.

    Raises:
      ImageError: the file is missing, empty, truncated or not an image.
    """
    try:
        with Image.open(path) as image:
            image.seek(0)
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        reason = str(err) or type(err).__name__
        raise ImageError('%s: cannot read image (%s)' % (path, reason)) from None


def _to_rgb(image):
    if image.mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'):
        # 16-bit or float grayscale: scale to 0..255 instead of clipping at 255.
        array = np.asarray(image, np.float64)
        top = 65535.0 if image.mode.startswith('I;16') or array.max() > 255 else 255.0
        gray = np.clip(array * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == 'P' and 'transparency' in image.info:
        image = image.convert('RGBA')
    if image.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        white = Image.new('RGBA', image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert('RGBA'))
    return np.asarray(image.convert('RGB'), dtype=np.uint8)


def resize_shorter_side(image, size=SCALE_SIZE):
    """Scales a [H, W, 3] image tensor so its shorter side is `size` (float32 out)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new_shape = tf.cast(tf.round(shape * scale), tf.int32)
    new_shape = tf.maximum(new_shape, size)  # guard rounding below `size`
    return tf.image.resize_images(tf.cast(image, tf.float32), new_shape,
                                  method=tf.image.ResizeMethod.BILINEAR)


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


def preprocess_for_eval(image):
    """uint8 RGB [H, W, 3] -> float32 [227, 227, 3] model input: scale to 256, center crop."""
    cropped = center_crop(resize_shorter_side(image, SCALE_SIZE), IMAGE_SIZE)
    cropped.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    return rgb_to_model_input(cropped)
