"""image_files.py: every format read as RGB, the size limits, FIFOs, odd names, safe walks."""
import os

import numpy as np
import pytest
from PIL import Image

import image_files
from conftest import photo, save, touch

GOOD = ('rgb.jpg', 'gray.jpg', 'cmyk.jpg', 'rgba.png', 'gray16.png', 'animated.gif')
BAD = ('empty.jpg', 'truncated.jpg', 'text.jpg')


@pytest.fixture
def corpus(tmp_path):
    """{name: path} of the GOOD and BAD files, as Microsoft's PetImages has them."""
    folder = tmp_path / 'corpus'
    image = photo(60, 80)
    rgba = np.dstack([image, np.tile(np.arange(80, dtype=np.uint8) * 3, (60, 1))])
    paths = {
        'rgb.jpg': save(folder / 'rgb.jpg', image, quality=90),
        'gray.jpg': save(folder / 'gray.jpg', image[:, :, 1]),
        'cmyk.jpg': save(folder / 'cmyk.jpg', Image.fromarray(image).convert('CMYK')),
        'rgba.png': save(folder / 'rgba.png', rgba),
        'gray16.png': save(folder / 'gray16.png', image[:, :, 0].astype(np.uint16) * 257),
        'empty.jpg': touch(folder / 'empty.jpg', b''),
        'text.jpg': touch(folder / 'text.jpg', b'<html>404 Not Found</html>\n'),
    }
    with open(paths['rgb.jpg'], 'rb') as f:
        paths['truncated.jpg'] = touch(folder / 'truncated.jpg', f.read()[:1500])
    paths['animated.gif'] = str(folder / 'animated.gif')
    Image.fromarray(image).save(paths['animated.gif'], save_all=True,
                                append_images=[Image.fromarray(image[::-1])])
    assert Image.open(paths['gray16.png']).mode.startswith('I')
    assert Image.open(paths['cmyk.jpg']).mode == 'CMYK'
    return paths


def test_every_good_format_becomes_rgb(corpus):
    image = photo(60, 80)
    for name in GOOD:
        rgb = image_files.read_image(corpus[name])
        assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8, name
    gray = image_files.read_image(corpus['gray.jpg']).astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 1          # grayscale -> R = G = B
    # 16-bit is scaled to 0..255, not clipped: v * 257 / 65535 * 255 = v.
    np.testing.assert_array_equal(image_files.read_image(corpus['gray16.png'])[..., 1],
                                  image[:, :, 0])
    # Alpha goes on white: transparent pixels (alpha 0 in column 0) become white.
    assert (image_files.read_image(corpus['rgba.png'])[:, 0] == 255).all()
    # A GIF gives its first frame.
    np.testing.assert_array_equal(image_files.read_image(corpus['animated.gif']),
                                  np.asarray(Image.open(corpus['animated.gif']).convert('RGB')))


@pytest.mark.parametrize('name, reason', [('empty.jpg', 'cannot identify image'),
                                          ('truncated.jpg', 'truncated'),
                                          ('text.jpg', 'cannot identify image')])
def test_bad_files_raise_one_line_image_error(corpus, name, reason):
    with pytest.raises(image_files.ImageError, match=reason) as err:
        image_files.read_image(corpus[name])
    assert str(err.value).startswith(corpus[name]) and '\n' not in str(err.value)


def test_exif_rotation_is_applied(tmp_path):
    image = Image.fromarray(photo(40, 100))
    exif = image.getexif()
    exif[0x0112] = 6                                   # orientation: rotate 90 degrees
    path = str(tmp_path / 'rotated.jpg')
    image.save(path, exif=exif)
    assert image_files.read_image(path).shape == (100, 40, 3)


@pytest.mark.parametrize('size', [(1, 30000), (30000, 1), (21 * 50, 50)])
def test_strips_no_photo_has_are_refused_before_decoding(tmp_path, size):
    path = str(tmp_path / 'strip.png')
    Image.new('RGB', size).save(path)
    with pytest.raises(image_files.ImageError, match='longer than 20 times'):
        image_files.read_image(path)


def test_twenty_to_one_is_still_a_photo(tmp_path):
    path = str(tmp_path / 'panorama.png')
    Image.new('RGB', (20 * 30, 30), (10, 200, 30)).save(path)
    assert image_files.read_image(path).shape == (30, 600, 3)


def test_too_many_pixels_are_refused(tmp_path):
    path = str(tmp_path / 'huge.png')
    Image.new('L', (8000, 7000)).save(path)        # 56 million pixels, 2 MB compressed
    with pytest.raises(image_files.ImageError, match='more than the 50 million'):
        image_files.read_image(path)


def test_big_jpeg_decodes_reduced_by_the_decoder(tmp_path):
    path = save(tmp_path / 'big.jpg', photo(2400, 3000, seed=2), quality=85)
    rgb = image_files.read_image(path)
    # shorter side 2400 -> reduced by 4 in the decoder (draft): 600 x 750
    assert rgb.shape == (600, 750, 3)
    full = np.asarray(Image.open(path).convert('RGB'), np.float32)
    box = full.reshape(600, 4, 750, 4, 3).mean(axis=(1, 3))     # what 1/4 scale should show
    assert np.abs(rgb.astype(np.float32) - box).mean() < 6


def test_big_png_is_reduced_after_decoding(tmp_path):
    image = photo(1100, 1300, seed=3)
    path = save(tmp_path / 'big.png', image)
    rgb = image_files.read_image(path)
    # shorter side 1100 -> reduced by 2: 550 x 650, each pixel the mean of a 2x2 box
    assert rgb.shape == (550, 650, 3)
    box = image.astype(np.float32).reshape(550, 2, 650, 2, 3).mean(axis=(1, 3))
    assert np.abs(rgb - box).max() <= 1


def test_photos_below_twice_the_reduced_side_are_read_exactly(tmp_path):
    image = photo(1000, 1023, seed=4)
    path = save(tmp_path / 'exact.png', image)
    np.testing.assert_array_equal(image_files.read_image(path), image)


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs on this system')
def test_a_fifo_named_like_a_photo_is_refused_without_blocking(tmp_path):
    fifo = str(tmp_path / 'x.jpg')
    os.mkfifo(fifo)
    with pytest.raises(image_files.ImageError, match='not a regular file'):
        image_files.read_image(fifo)          # would wait forever for a writer if opened


def test_a_folder_is_not_an_image(tmp_path):
    os.mkdir(str(tmp_path / 'folder.jpg'))
    with pytest.raises(image_files.ImageError, match='a folder'):
        image_files.read_image(str(tmp_path / 'folder.jpg'))


def test_missing_file(tmp_path):
    with pytest.raises(image_files.ImageError, match='No such file'):
        image_files.read_image(str(tmp_path / 'gone.jpg'))


# --- Odd names -------------------------------------------------------------------------

def odd_name(folder, stem=b'caf\xe9'):
    """A file name that is not UTF-8 (Latin-1 bytes), as str with surrogate escapes."""
    return os.path.join(str(folder), os.fsdecode(stem + b'.jpg'))


def test_names_that_are_not_utf8_are_read_and_shown_readably(tmp_path):
    path = odd_name(tmp_path)
    save(path, photo(30, 40))
    assert image_files.read_image(path).shape == (30, 40, 3)
    shown = image_files.display_path(path)
    assert shown.endswith('caf\\xe9.jpg')
    shown.encode('utf-8')                      # printable anywhere
    files, skipped = image_files.list_images(str(tmp_path))
    assert files == [path] and skipped == []


def test_is_image_name():
    assert image_files.is_image_name('a.JPG') and image_files.is_image_name('b.webp')
    assert not image_files.is_image_name('._a.jpg') and not image_files.is_image_name('a.txt')


# --- Walking folders safely ----------------------------------------------------------

def test_list_images_sorted_recursive_hidden_and_other_files_skipped(tmp_path):
    expected = [touch(tmp_path / 'a.jpg'), touch(tmp_path / 'b.PNG'),
                touch(tmp_path / 'sub' / 'c.jpg'), touch(tmp_path / 'sub' / 'deeper' / 'd.gif'),
                touch(tmp_path / 'z' / 'e.bmp')]
    for ignored in ('Thumbs.db', 'notes.txt', '.hidden.jpg', '.folder/x.jpg'):
        touch(tmp_path / ignored)
    files, skipped = image_files.list_images(str(tmp_path))
    assert files == expected and skipped == []
    files, _ = image_files.list_images(str(tmp_path), recursive=False)
    assert files == expected[:2]


def test_links_to_itself_or_a_parent_are_skipped_not_followed(tmp_path):
    cat = tmp_path / 'Cat'
    photos = [touch(cat / 'a.jpg'), touch(cat / 'b.jpg')]
    os.symlink('.', str(cat / 'self'))
    os.symlink('..', str(cat / 'up'))
    os.symlink('.', str(cat / 'again'))       # two self-links: exponential without the rule
    touch(tmp_path / 'Dog' / 'd.jpg')
    files, skipped = image_files.list_images(str(cat))
    assert files == photos
    reasons = dict(skipped)
    assert set(reasons) == {str(cat / 'self'), str(cat / 'up'), str(cat / 'again')}
    assert all('holds this folder' in reason for reason in reasons.values())


def test_links_into_an_excluded_folder_are_skipped(tmp_path):
    cat, dog = tmp_path / 'Cat', tmp_path / 'Dog'
    own = touch(cat / 'a.jpg')
    touch(dog / 'd.jpg')
    os.symlink(str(dog), str(cat / 'dogs'))
    os.symlink(str(dog / 'd.jpg'), str(cat / 'dog.jpg'))
    files, skipped = image_files.list_images(str(cat), exclude=[str(dog)])
    assert files == [own]
    assert sorted(dict(skipped)) == [str(cat / 'dog.jpg'), str(cat / 'dogs')]


def test_a_folder_reached_twice_and_a_file_reached_twice_count_once(tmp_path):
    top = tmp_path / 'top'
    first = touch(top / 'one' / 'a.jpg')
    os.symlink(str(top / 'one'), str(top / 'two'))            # the same folder again
    os.link(first, str(top / 'one' / 'hard.jpg'))             # the same file again
    files, skipped = image_files.list_images(str(top))
    assert files == [first]
    assert {path: reason.split(' ')[1] for path, reason in skipped} == {
        str(top / 'one' / 'hard.jpg'): 'same', str(top / 'two'): 'link'}


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='no FIFOs on this system')
def test_fifos_and_broken_links_are_skipped_with_a_reason(tmp_path):
    good = touch(tmp_path / 'a.jpg')
    os.mkfifo(str(tmp_path / 'pipe.jpg'))
    os.symlink(str(tmp_path / 'gone.jpg'), str(tmp_path / 'broken.jpg'))
    files, skipped = image_files.list_images(str(tmp_path))
    assert files == [good]
    reasons = dict(skipped)
    assert 'FIFO' in reasons[str(tmp_path / 'pipe.jpg')]
    assert 'No such file' in reasons[str(tmp_path / 'broken.jpg')]


def test_image_paths_takes_files_as_given_and_walks_folders(tmp_path):
    folder_image = touch(tmp_path / 'folder' / 'a.jpg')
    given = touch(tmp_path / 'notes.txt')
    files, skipped = image_files.image_paths([given, str(tmp_path / 'folder'),
                                              str(tmp_path / 'missing.jpg')])
    assert files == [given, folder_image]
    assert skipped == [(str(tmp_path / 'missing.jpg'), 'no such file or folder')]


def test_out_of_memory_is_not_taken_for_a_broken_file(tmp_path, monkeypatch):
    """A photo that cannot be decoded for want of memory is not skipped as unreadable:
    training would lose it without a word."""
    path = save(tmp_path / 'good.png', photo(40, 30))

    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(Image.Image, 'load', no_memory)
    with pytest.raises(MemoryError):
        image_files.read_image(path)
