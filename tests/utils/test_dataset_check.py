"""The class-count check of tools/train.py and tools/test.py: heads against the
dataset's ``metainfo.classes`` (the missing-dataset message: tests/tools/test_user_errors.py)."""
import pytest
from mmengine.config import Config

from mmmambaout.utils.dataset_check import ClassCountError, check_num_classes, head_class_counts

CLASSES = ('disc', 'square', 'triangle')


def det_cfg(num_classes, classes=CLASSES, cascade=False):
    bbox = dict(type='Shared2FCBBoxHead', num_classes=num_classes)
    return Config(dict(
        model=dict(type='MaskRCNN', rpn_head=dict(type='RPNHead', num_classes=1),
                   roi_head=dict(bbox_head=[bbox, bbox] if cascade else bbox,
                                 mask_head=dict(num_classes=num_classes))),
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='CocoDataset', metainfo=dict(classes=classes)))),
        test_dataloader=dict(dataset=dict(type='CocoDataset'))))


def test_heads_found_rpn_left_out():
    assert head_class_counts(det_cfg(3, cascade=True).model) == [
        ('model.roi_head.bbox_head.0.num_classes', 3), ('model.roi_head.bbox_head.1.num_classes', 3),
        ('model.roi_head.mask_head.num_classes', 3)]
    seg = dict(decode_head=dict(num_classes=150), auxiliary_head=[dict(num_classes=150)])
    assert head_class_counts(seg) == [('model.decode_head.num_classes', 150),
                                      ('model.auxiliary_head.0.num_classes', 150)]


def test_matching_or_unnamed_classes_pass():
    check_num_classes(det_cfg(3))
    check_num_classes(det_cfg(80, classes=None))   # the dataset's own classes: not checked


def test_mismatch_names_keys_and_fix():
    with pytest.raises(ClassCountError) as err:
        check_num_classes(det_cfg(80))
    message = str(err.value)
    assert message.startswith('train_dataloader.dataset.dataset.metainfo.classes names 3 '
                              'classes, but model.roi_head.bbox_head.num_classes=80, '
                              'model.roi_head.mask_head.num_classes=80')
    assert message.endswith('--cfg-options model.roi_head.bbox_head.num_classes=3 '
                            'model.roi_head.mask_head.num_classes=3')
    # only the loaders asked for (tools/test.py: the test loader)
    check_num_classes(det_cfg(80), loaders=('test_dataloader', ))
