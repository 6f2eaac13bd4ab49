"""Class names: ImageNet in bvlc order, and the names of fine-tuned models."""
import pytest

import class_names
import weight_files


def test_imagenet_names_in_bvlc_order():
    english = class_names.imagenet_class_names()
    chinese = class_names.imagenet_class_names('zh')
    assert len(english) == len(chinese) == 1000
    assert english[0].startswith('tench') and chinese[0] == '丁鲷'
    assert english[355] == 'llama'
    assert english[388].startswith('giant panda') and english[296].startswith('ice bear')
    assert english[999].startswith('toilet tissue')
    with pytest.raises(ValueError, match='choose from en, zh'):
        class_names.imagenet_class_names('fr')


def test_names_for_fine_tuned_sources(tmp_path):
    npz = str(tmp_path / 'w.npz')
    weight_files.save_npz(npz, {}, class_names=['cat', 'dog'])
    assert class_names.class_names_for(npz, 2) == ['cat', 'dog']
    run = tmp_path / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    class_names.write_run_class_names(str(run), ['Cat', 'Dog', 'Fox'])
    assert class_names.class_names_for(str(run), 3) == ['Cat', 'Dog', 'Fox']
    assert class_names.class_names_for(str(run / 'checkpoints' / 'model.ckpt-7'), 3)[2] == 'Fox'
    assert class_names.class_names_for(str(tmp_path / 'x.npy'), 1000, 'zh')[388] == '大熊猫'
    assert class_names.class_names_for(str(tmp_path / 'x.npy'), 2) == ['class 0', 'class 1']
