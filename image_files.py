"""Image files: which files are images, finding them safely, and reading one as RGB.

Every script that reads photos goes through here (fine-tuning datasets, the
classifier, evaluation, retrieval, feature maps), so they all follow one set
of rules.

Which files are images: regular files whose names end in one of
IMAGE_EXTENSIONS (any case) and do not start with '.'.

Finding them (list_images): folders are walked following symbolic links, but

* each real folder is visited once, and a link to a folder that holds the
  walk's start (`ln -s . self`, `ln -s .. up`) or to a folder the caller
  excludes (another class) is skipped with a reason, so links can neither loop,
  nor multiply photos, nor pull in other classes' photos;
* the same file reached twice (a link, a hard link) counts once;
* FIFOs, devices and sockets named like images are skipped with a reason and
  never opened (opening a FIFO blocks forever).

Reading one (read_image): any format PIL decodes becomes uint8 RGB [H, W, 3]
(grayscale, CMYK, palette, 16-bit, alpha on white, a GIF's first frame, EXIF
rotation applied), within limits no real photo reaches:

* at most MAX_PIXELS pixels are decoded (150 MB of RGB). Big JPEGs decode
  reduced, by PIL's draft mode (1/2, 1/4 or 1/8 in the decoder), to a shorter
  side of REDUCED_SIDE..2*REDUCED_SIDE-1 pixels; other formats are reduced the
  same way after decoding. Photos with a shorter side under 2 * REDUCED_SIDE
  (ImageNet's and PetImages' typical photos) are read exactly;
* the longer side is at most MAX_ASPECT times the shorter one: scaled to a
  shorter side of 256 (section 2 of the paper), a 1x30000 strip would need
  23 GB, while a 1:20 panorama needs 15 MB.

Names that are not valid UTF-8 (a Linux file system allows any bytes) work
everywhere; display_path() shows them readably, with the odd bytes as \\xNN.
"""
from __future__ import annotations

import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps

# PIL warns about big images as it opens them; the limits below decide instead
# (a big JPEG is fine: it decodes reduced), so its warning would only be noise.
warnings.simplefilter('ignore', Image.DecompressionBombWarning)

# File name endings taken for images (compared in lower case).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.gif', '.bmp', '.webp',
                    '.tif', '.tiff', '.ppm', '.pgm', '.pnm')
MAX_PIXELS = 50 * 1000 * 1000    # pixels decoded at most: 150 MB of uint8 RGB
MAX_ASPECT = 20                  # longer side / shorter side, at most
REDUCED_SIDE = 512               # big photos are reduced to a shorter side of 512..1023

# Why a file was skipped, for the kinds of non-regular files.
_FILE_KINDS = ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISSOCK, 'a socket'),
               (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
               (stat.S_ISDIR, 'a folder'))


class ImageError(ValueError):
    """An image file could not be read or decoded (the message says why)."""


def display_path(path):
    """A path as text a person can read: bytes that are not UTF-8 appear as \\xNN."""
    return os.fsencode(path).decode('utf-8', 'backslashreplace')


def is_image_name(name):
    """Whether a file name is an image's: an image extension, not hidden."""
    return not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)


def _not_regular(mode):
    """Why a file of this st_mode is not read, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in _FILE_KINDS:
        if test(mode):
            return 'not a regular file (%s); skipped' % kind
    return 'not a regular file; skipped'


# --- Reading one image -----------------------------------------------------------

def _open_regular(path):
    """Opens path for reading, refusing anything but a regular file.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a
    writer; the check is then made on the open file, so the file cannot be
    swapped between the check and the read.
    """
    reason = _not_regular(os.stat(path).st_mode)     # sockets cannot even be opened
    if reason:
        raise ImageError('%s: %s' % (display_path(path), reason))
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    try:
        reason = _not_regular(os.fstat(fd).st_mode)
        if reason:
            raise ImageError('%s: %s' % (display_path(path), reason))
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def _reduction(size):
    """The integer factor that brings size's shorter side to REDUCED_SIDE..2*REDUCED_SIDE-1."""
    return max(1, min(size) // REDUCED_SIDE)


def _check_size(path, size):
    width, height = size
    if min(width, height) < 1:
        raise ImageError('%s: empty image (%dx%d)' % (display_path(path), width, height))
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError('%s: %dx%d pixels, longer than %d times its width; no photo is, '
                         'skipped' % (display_path(path), width, height, MAX_ASPECT))
    if width * height > MAX_PIXELS:
        raise ImageError('%s: %dx%d pixels, more than the %d million read at most; '
                         'skipped (scale it down to use it)'
                         % (display_path(path), width, height, MAX_PIXELS // 10 ** 6))


def read_image(path, draft=False):
    """Reads any image PIL can decode as a uint8 RGB array [H, W, 3].

    Args:
      path: the image file.
      draft: decode JPEGs at 1/8 size: still reads every byte (so it finds
        truncated files) but is quicker; for checking that a file decodes.

    Raises:
      ImageError: the file is missing, not a regular file, empty, truncated,
        not an image, or beyond the limits in the module docstring.
    """
    try:
        with _open_regular(path) as f, Image.open(f) as image:
            image.seek(0)
            if draft:
                image.draft(None, (1, 1))     # JPEG only; other formats ignore it
            elif image.format == 'JPEG' and _reduction(image.size) > 1:
                # Asks the decoder for the smallest scale that stays at least this size.
                factor = _reduction(image.size)
                image.draft(None, (-(-image.size[0] // factor), -(-image.size[1] // factor)))
            _check_size(path, image.size)
            image = ImageOps.exif_transpose(image)
            if not draft and _reduction(image.size) > 1:
                image = image.reduce(_reduction(image.size))
            return _to_rgb(image)
    except (ImageError, MemoryError):   # out of memory says nothing about the file: not a skip
        raise
    except Image.DecompressionBombError:      # PIL's own limit, above ours: the same answer
        raise ImageError('%s: more than the %d million pixels read at most; skipped'
                         % (display_path(path), MAX_PIXELS // 10 ** 6)) from None
    except Image.UnidentifiedImageError:
        raise ImageError('%s: cannot identify image file (empty, or not an image format PIL '
                         'reads)' % display_path(path)) from None
    except Exception as err:     # PIL raises many kinds on a broken file: all mean "skip it"
        reason = (getattr(err, 'strerror', None) or str(err) or type(err).__name__)
        raise ImageError('%s: cannot read image (%s)' % (display_path(path), reason)) from None


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


# --- Finding images ------------------------------------------------------------------

def _within(path, folder):
    """Whether real path `path` is `folder` or inside it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def list_images(top, recursive=True, exclude=()):
    """The image files in a folder (and its sub-folders), sorted, walked safely.

    Args:
      top: the folder.
      recursive: also look in sub-folders (hidden ones are skipped).
      exclude: folders whose contents must not be reached from here, e.g. the
        other classes' folders of a dataset; a link into one is skipped.
    Returns:
      (files, skipped): files, paths under top in sorted walk order; skipped,
      [(path, reason)] of image-named entries that were not taken.
    """
    top_real = os.path.realpath(top)
    excluded = [os.path.realpath(folder) for folder in exclude]
    files, skipped, seen_files = [], [], {}
    seen_folders = set()          # (device, inode) of every folder taken for the walk
    pending = [top]
    try:
        status = os.stat(top)
        seen_folders.add((status.st_dev, status.st_ino))
    except OSError:
        pass                      # reported when it is listed
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as err:
            skipped.append((folder, 'cannot list the folder (%s)' % (err.strerror or err)))
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith('.'):
                continue
            try:
                is_folder = entry.is_dir()            # follows links
            except OSError:
                is_folder = False
            if is_folder:
                if recursive:
                    reason = _folder_refused(entry, top_real, excluded, seen_folders)
                    if reason:
                        skipped.append((entry.path, reason))
                    else:
                        subfolders.append(entry.path)
                continue
            if not is_image_name(entry.name):
                continue
            reason = _file_refused(entry, excluded, seen_files)
            if reason:
                skipped.append((entry.path, reason))
            else:
                files.append(entry.path)
        pending.extend(reversed(subfolders))          # depth first, in sorted order
    return files, skipped


def _folder_refused(entry, top_real, excluded, seen_folders):
    """Why a sub-folder is not walked, or None (and then it is remembered)."""
    real = os.path.realpath(entry.path)
    if _within(top_real, real):
        return 'a link to %s, which holds this folder; skipped' % display_path(real)
    for other in excluded:
        if _within(real, other) or _within(other, real):
            return 'a link into %s, a folder of its own; skipped' % display_path(other)
    try:
        status = os.stat(entry.path)
    except OSError as err:
        return 'cannot list the folder (%s)' % (err.strerror or err)
    key = (status.st_dev, status.st_ino)
    if key in seen_folders:
        return 'a link to %s, already listed; skipped' % display_path(real)
    seen_folders.add(key)
    return None


def _file_refused(entry, excluded, seen_files):
    """Why an image-named entry is not taken, or None (and then it is remembered)."""
    try:
        status = os.stat(entry.path)
    except OSError as err:
        return 'cannot read file (%s)' % (err.strerror or err)
    reason = _not_regular(status.st_mode)
    if reason:
        return reason
    if entry.is_symlink():
        real = os.path.realpath(entry.path)
        for other in excluded:
            if _within(real, other):
                return 'a link into %s, a folder of its own; skipped' % display_path(other)
    key = (status.st_dev, status.st_ino)
    if key in seen_files:
        return 'the same file as %s; skipped' % display_path(seen_files[key])
    seen_files[key] = entry.path
    return None


def image_paths(paths, recursive=True):
    """Image files of the given files and folders: files as given, folders walked.

    Returns:
      (files, skipped) as list_images; a path that does not exist is skipped
      with the reason.
    """
    files, skipped = [], []
    for path in paths:
        if os.path.isdir(path):
            found, refused = list_images(path, recursive)
            files.extend(found)
            skipped.extend(refused)
        elif os.path.lexists(path):
            files.append(path)
        else:
            skipped.append((path, 'no such file or folder'))
    return files, skipped
