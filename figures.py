"""Figures the course asks for, drawn with matplotlib into PNG files.

Every picture a script writes goes through here, so they share one look and
never need a screen (the Agg backend):

* save_labelled_images: photos with captions (classification results);
* kernel_tiles + mosaic + save_mosaics: weights or feature maps as grids of
  small tiles, like the paper's Figure 3 (conv1 filters);
* save_curves: loss and accuracy of several training runs overlaid;
* save_retrieval: query images with their nearest neighbours (Figure 4, right);
* cjk_font: a font installed here that draws Chinese, for Chinese class names.

The functions that draw grids return a Figure record (path, tile count, pixel
size) so tests can check what was drawn without looking at it.
"""
from __future__ import annotations

import collections
import functools
import math
import os

import matplotlib

matplotlib.use('Agg')
import matplotlib.font_manager  # noqa: E402  (after choosing the backend)
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
from fontTools import ttLib  # noqa: E402  (a dependency of matplotlib)
from PIL import Image  # noqa: E402

DPI = 100

# Fonts with Chinese glyphs that Windows, macOS and Linux distributions ship or
# package, in order of preference. matplotlib's own DejaVu fonts have none.
CJK_FONTS = (
    'Microsoft YaHei', 'SimHei', 'DengXian', 'SimSun',                        # Windows
    'PingFang SC', 'Heiti SC', 'STHeiti', 'Hiragino Sans GB', 'Songti SC',    # macOS
    'Arial Unicode MS',
    'Noto Sans CJK SC', 'Noto Sans SC', 'Source Han Sans SC', 'Source Han Sans CN',  # Linux
    'WenQuanYi Micro Hei', 'WenQuanYi Zen Hei', 'Droid Sans Fallback',
    'AR PL UMing CN', 'AR PL UKai CN', 'Noto Serif CJK SC',
    # The same glyphs under another region's name: older matplotlib (3.5) lists
    # only the first face of a .ttc collection, which is JP in Noto's.
    'Noto Sans CJK JP', 'Noto Sans CJK TC', 'Noto Sans CJK KR', 'Source Han Sans',
)
# Characters every Chinese figure here needs (class names of the course's photos).
CJK_SAMPLE = '中文类名斑马骆驼猫狗'

# path: the PNG; tiles: how many small images it holds; size: (width, height) in pixels.
Figure = collections.namedtuple('Figure', 'path tiles size')


def save_labelled_images(images, captions, path, columns=3, title=None, font=None):
    """A grid of photos, each with its caption underneath (e.g. top-3 labels).

    Args:
      images: uint8 RGB arrays [H, W, 3] (sizes may differ).
      captions: one string per image (may have several lines).
      path: the PNG to write; its folder is created.
      font: the font family of the captions, e.g. cjk_font() for Chinese
        (default: monospace, which has no Chinese glyphs).
    Returns:
      path.
    """
    columns = max(1, min(columns, len(images)))
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image)
        ax.set_title(caption, fontsize=8, loc='left', family=font or 'monospace')
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return path


# --- Chinese text ------------------------------------------------------------

def has_cjk(text):
    """True if text holds Chinese, Japanese or Korean characters (which
    matplotlib's default fonts cannot draw: they come out as empty boxes)."""
    return any(low <= ord(ch) <= high for ch in text for low, high in _CJK_RANGES)


# Radicals, CJK punctuation, kana, ideographs (U+2E80-U+9FFF), compatibility
# ideographs, vertical and full-width forms, and the ideographs beyond U+FFFF.
_CJK_RANGES = ((0x2E80, 0x9FFF), (0xF900, 0xFAFF), (0xFE30, 0xFE4F), (0xFF00, 0xFFEF),
               (0x20000, 0x3134F))


def cjk_font(text=CJK_SAMPLE):
    """The name of an installed font that draws every character of text, or None.

    The fonts of CJK_FONTS are tried in order; one counts only if its character
    map (cmap) has all of text's characters (white space aside). Fonts installed
    after matplotlib cached its font list are found too (they are added to
    matplotlib's font manager). Other fonts are not tried: some map every
    character to a placeholder box (matplotlib's own 'Last Resort').

    Returns:
      a font family name for matplotlib's `family=` (e.g. 'WenQuanYi Micro Hei'),
      or None when no installed font has the characters.
    """
    needed = frozenset(ord(ch) for ch in text if not ch.isspace())
    manager = matplotlib.font_manager.fontManager
    found = _covering_font(manager.ttflist, needed)
    if found is None and _add_new_system_fonts(manager):
        found = _covering_font(manager.ttflist, needed)
    return found


def _covering_font(entries, needed):
    """The family name of the first CJK_FONTS entry whose characters include `needed`."""
    rank = {name: i for i, name in enumerate(CJK_FONTS)}
    for entry in sorted((e for e in entries if e.name in rank), key=lambda e: rank[e.name]):
        # Newer matplotlib lists each face of a .ttc collection (its index);
        # older ones list the first, which is also the one they draw with.
        if needed <= _characters(entry.fname, getattr(entry, 'index', 0)):
            return entry.name
    return None


@functools.lru_cache(maxsize=None)
def _characters(path, index=0):
    """The code points that a font file's face `index` has glyphs for (none if unreadable)."""
    try:
        with ttLib.TTFont(path, fontNumber=index, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # noqa: BLE001  (a damaged or vanished font file is only skipped)
        return frozenset()


def _add_new_system_fonts(manager):
    """Adds the system's fonts that matplotlib's font list lacks; True if there were any.

    matplotlib caches its font list on first use (~/.cache/matplotlib) and does
    not look again, so a font installed since (apt-get install fonts-noto-cjk)
    is missing from it.
    """
    known = {os.path.realpath(entry.fname) for entry in manager.ttflist}
    new = [path for path in matplotlib.font_manager.findSystemFonts()
           if os.path.realpath(path) not in known]
    for path in new:
        try:
            manager.addfont(path)
        except (OSError, RuntimeError, ValueError):  # a file FreeType cannot open
            continue
    return bool(new)


# --- Grids of tiles: kernels and feature maps ------------------------------

def scale_each(tiles):
    """Scales every tile of [N, h, w, C] to its own range 0..1.

    Each tile gets its own min and max (the paper's Figure 3 shows each kernel
    so), so a weak kernel is as visible as a strong one. A constant tile
    (e.g. a dead ReLU map, all zeros) becomes 0 (black).
    """
    tiles = np.asarray(tiles, np.float32)
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    span = tiles.max(axis=(1, 2, 3), keepdims=True) - low
    return np.where(span > 0, (tiles - low) / np.where(span > 0, span, 1.0), 0.0)


def kernel_tiles(weights, bgr_to_rgb=True):
    """Conv kernels [k, k, C, N] -> tiles [N, k, k, C] for display.

    bvlc_alexnet's conv1 sees BGR input (see datagenerator.py), so its 3 input
    channels are reversed to show the colours the kernel responds to in RGB.
    """
    tiles = np.transpose(np.asarray(weights, np.float32), (3, 0, 1, 2))
    if bgr_to_rgb:
        tiles = tiles[..., ::-1]
    return tiles


def mosaic(tiles, columns, pad=1, pad_value=1.0):
    """Lays tiles [N, h, w, C] (values 0..1) out in rows of `columns`.

    Returns:
      float32 image [rows * (h + pad) + pad, columns * (w + pad) + pad, C],
      tiles separated by `pad` pixels of `pad_value` (white).
    """
    tiles = np.asarray(tiles, np.float32)
    count, height, width, channels = tiles.shape
    columns = max(1, min(columns, count))
    rows = int(math.ceil(count / columns))
    image = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad, channels),
                    pad_value, np.float32)
    for i, tile in enumerate(tiles):
        top = pad + (i // columns) * (height + pad)
        left = pad + (i % columns) * (width + pad)
        image[top:top + height, left:left + width] = tile
    return image


def to_uint8(image, zoom=1):
    """0..1 float image -> uint8, each pixel repeated `zoom` times (for TensorBoard)."""
    image = np.clip(np.round(np.asarray(image) * 255), 0, 255).astype(np.uint8)
    return image.repeat(zoom, axis=0).repeat(zoom, axis=1)


def save_mosaics(panels, path, title=None, columns=None, panel_height=3.6):
    """Draws images in rows of `columns`, each with its caption, in one PNG.

    Args:
      panels: list of (image, caption, tiles): image is float 0..1 [H, W, 1 or 3]
        (a mosaic) or uint8 RGB; tiles is how many small images it holds (0 for a
        photo).
      path: the PNG to write.
      title: the figure's title (say there whether the weights are random).
      columns: panels per row (default: all in one row); widths follow the
        first row's images' aspect.
      panel_height: inches of each row of panels.
    Returns:
      Figure(path, total tiles, (width, height) in pixels).
    """
    columns = columns or len(panels)
    rows = int(math.ceil(len(panels) / columns))
    ratios = [image.shape[1] / image.shape[0] for image, _, _ in panels[:columns]]
    title_lines = title.count('\n') + 1 if title else 0
    width = panel_height * sum(ratios) + 0.2 * columns
    height = rows * (panel_height + 0.45) + 0.25 * title_lines
    # Constrained layout keeps a multi-line title clear of the panels' captions.
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False,
                             layout='constrained', gridspec_kw={'width_ratios': ratios})
    for ax in axes.flat:
        ax.axis('off')
    for ax, (image, caption, _) in zip(axes.flat, panels):
        if image.ndim == 3 and image.shape[2] == 1:
            ax.imshow(image[:, :, 0], cmap='gray', vmin=0, vmax=1, interpolation='nearest')
        else:
            ax.imshow(image, interpolation='nearest')
        ax.set_title(caption, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
    return Figure(path, sum(tiles for _, _, tiles in panels), _pixels(path))


# --- Training curves -------------------------------------------------------

def save_curves(runs, path, title=None):
    """Overlays several runs' loss and accuracy, train solid and validation dashed.

    Args:
      runs: {label: {column: list of floats}} with the columns of a run's
        metrics.csv (epoch, train_loss, train_accuracy, val_loss, val_accuracy);
        NaN marks a missing value.
      path: the PNG to write.
    Returns:
      Figure(path, number of runs, (width, height) in pixels).
    """
    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (label, metrics) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        epochs = metrics['epoch']
        for ax, quantity in ((loss_ax, 'loss'), (accuracy_ax, 'accuracy')):
            ax.plot(epochs, metrics['train_' + quantity], '-', color=colour,
                    label='%s train' % label)
            ax.plot(epochs, metrics['val_' + quantity], '--', marker='o', markersize=3,
                    color=colour, label='%s validation' % label)
    for ax, name in ((loss_ax, 'cross-entropy loss'), (accuracy_ax, 'accuracy')):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel('epoch')
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return Figure(path, len(runs), _pixels(path))


# --- Retrieval -------------------------------------------------------------

def save_retrieval(queries, neighbours, path, title=None, tile_inches=1.7):
    """One row per query: the query image, then its neighbours, nearest first.

    Args:
      queries: list of (uint8 RGB image, caption).
      neighbours: per query, a list of (uint8 RGB image, caption) (e.g. the
        distance and the file name).
      path: the PNG to write.
    Returns:
      Figure(path, number of tiles drawn, (width, height) in pixels).
    """
    columns = 1 + max(len(row) for row in neighbours)
    rows = len(queries)
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(tile_inches * columns, tile_inches * 1.15 * rows + 0.6))
    tiles = 0
    for row_axes, query, row in zip(axes, queries, neighbours):
        for ax in row_axes:
            ax.axis('off')
        for column, (image, caption) in enumerate([query] + list(row)):
            ax = row_axes[column]
            ax.imshow(image)
            ax.set_title(caption, fontsize=7, color='C3' if column == 0 else 'black')
            tiles += 1
        # A line after the query separates it from the answers.
        row_axes[0].axis('on')
        row_axes[0].set_xticks([])
        row_axes[0].set_yticks([])
        for spine in row_axes[0].spines.values():
            spine.set_color('C3')
            spine.set_linewidth(2)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return Figure(path, tiles, _pixels(path))


def _pixels(path):
    """(width, height) of the PNG as written (matplotlib rounds inches x dpi)."""
    with Image.open(path) as image:
        return image.size


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
