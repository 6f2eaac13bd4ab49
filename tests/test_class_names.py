"""Class names: ImageNet in bvlc order, and the names of fine-tuned models."""
import pytest

import class_names


def test_imagenet_names_in_bvlc_order():
    english = class_names.imagenet_class_names()
    chinese = class_names.imagenet_class_names('zh')
    assert len(english) == len(chinese) == 1000
    assert english[0].startswith('tench') and chinese[0] == '丁鲷'
    assert english[355] == 'llama' and chinese[355] == '美洲驼'      # not 骆驼, a camel
    assert chinese[296] == '北极熊'
    assert english[388].startswith('giant panda') and english[296].startswith('ice bear')
    assert english[999].startswith('toilet tissue')
    with pytest.raises(ValueError, match='choose from en, zh'):
        class_names.imagenet_class_names('fr')


def test_fallback_names():
    assert class_names.fallback_names(3) == ['class 0', 'class 1', 'class 2']
