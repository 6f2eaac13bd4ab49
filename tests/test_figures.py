"""figures.py and Chinese: which installed font draws it, and captions drawn with it.

The tests that draw Chinese need a font with Chinese glyphs (.ci/run installs
fonts-wqy-microhei on Debian); without one they skip and say how to get it.
"""
import shutil
import subprocess

import matplotlib.font_manager
import numpy as np
import pytest

import figures

CAPTIONS = ['zebra.jpg\n 91.0% 斑马', 'llama.jpg\n 12.5% 骆驼']


def font_file(family):
    """The file matplotlib draws `family` from (str(): matplotlib >= 3.10 returns a FontPath)."""
    return str(matplotlib.font_manager.findfont(matplotlib.font_manager.FontProperties(
        family=[family])))


def draw_captions(path, font):
    images = [np.zeros((20, 30, 3), np.uint8)] * len(CAPTIONS)
    return figures.save_labelled_images(images, CAPTIONS, str(path), title='RANDOM WEIGHTS',
                                        font=font)


def test_has_cjk():
    assert figures.has_cjk('斑马') and figures.has_cjk('zebra（斑马）')
    assert figures.has_cjk('\uff08')                       # a full-width parenthesis
    assert not figures.has_cjk('zebra, Dülmen, Börnste 100.0%')


def test_captions_in_the_chinese_font_have_every_glyph(chinese_font, drawn_text, tmp_path):
    path = draw_captions(tmp_path / 'zh.png', chinese_font)
    captions = [(text, file) for text, file in drawn_text.texts if text in CAPTIONS]
    assert sorted(text for text, _ in captions) == sorted(CAPTIONS)
    assert {file for _, file in captions} == {font_file(chinese_font)}
    assert drawn_text.missing_glyphs() == []
    # The title is English and keeps the default font.
    assert [file for text, file in drawn_text.texts if text == 'RANDOM WEIGHTS'] == [
        font_file('DejaVu Sans')]
    assert (tmp_path / 'zh.png').stat().st_size > 1000 and path == str(tmp_path / 'zh.png')


def test_captions_in_the_default_font_miss_the_chinese_glyphs(drawn_text, tmp_path):
    # The check above means something: without the font, matplotlib warns.
    draw_captions(tmp_path / 'default.png', None)
    assert len(drawn_text.missing_glyphs()) >= len('斑马骆驼')


@pytest.mark.skipif(shutil.which('fc-list') is None, reason='no fontconfig (fc-list) here')
def test_cjk_font_is_one_fontconfig_lists_for_chinese(chinese_font):
    # An independent judge: fontconfig's own language coverage.
    listed = subprocess.run(['fc-list', ':lang=zh', 'file'], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    files = {line.strip().rstrip(':') for line in listed.splitlines() if line.strip()}
    assert font_file(chinese_font) in files


def test_a_named_font_without_the_characters_is_not_taken(monkeypatch):
    # DejaVu Sans ships with matplotlib: it has Latin letters, no Chinese.
    monkeypatch.setattr(figures, 'CJK_FONTS', ('DejaVu Sans',))
    assert figures.cjk_font('zebra') == 'DejaVu Sans'
    assert figures.cjk_font('斑马') is None


def test_no_font_has_every_character():
    assert figures.cjk_font('斑马\U0010fffd') is None    # a private-use character


def test_a_font_missing_from_matplotlibs_cached_list_is_found(chinese_font, monkeypatch):
    # As after `apt-get install fonts-noto-cjk` on a machine where matplotlib had
    # already cached its font list.
    manager = matplotlib.font_manager.fontManager
    file = font_file(chinese_font)
    monkeypatch.setattr(manager, 'ttflist', [e for e in manager.ttflist if e.fname != file])
    assert figures.cjk_font() == chinese_font
    assert file in {entry.fname for entry in manager.ttflist}     # added back
