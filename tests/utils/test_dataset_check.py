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
    assert [h[1:] for h in head_class_counts(det_cfg(3, cascade=True).model)] == [
        ('model.roi_head.bbox_head.0.num_classes', 3), ('model.roi_head.bbox_head.1.num_classes', 3),
        ('model.roi_head.mask_head.num_classes', 3)]
    seg = dict(decode_head=dict(num_classes=150), auxiliary_head=[dict(num_classes=150)])
    assert [h[1:] for h in head_class_counts(seg)] == [
        ('model.decode_head.num_classes', 150), ('model.auxiliary_head.0.num_classes', 150)]
    # text-grounding detectors: num_classes is a text length (Grounding DINO: 256)
    assert head_class_counts(dict(language_model=dict(), bbox_head=dict(num_classes=256))) is None


def test_matching_or_unnamed_classes_pass():
    check_num_classes(det_cfg(3))
    check_num_classes(det_cfg(80, classes=None))   # the dataset's own classes: not checked


def test_mismatch_names_keys_and_fix():
    with pytest.raises(ClassCountError) as err:
        check_num_classes(det_cfg(80))
    message = str(err.value)
    assert message.startswith('train_dataloader.dataset.dataset.metainfo names 3 classes, but '
                              'model.roi_head.bbox_head.num_classes=80, '
                              'model.roi_head.mask_head.num_classes=80. ')
    assert ('--cfg-options model.roi_head.bbox_head.num_classes=3 '
            'model.roi_head.mask_head.num_classes=3\n') in message
    assert 'name those in train_dataloader.dataset.dataset.metainfo.classes' in message
    # only the loaders asked for (tools/test.py: the test loader)
    check_num_classes(det_cfg(80), loaders=('test_dataloader', ))
    with pytest.raises(ClassCountError, match='names 1 class, but'):
        check_num_classes(det_cfg(80, classes=('disc', )))


def test_classes_from_a_file(tmp_path):
    names = tmp_path / 'classes.txt'
    names.write_text('disc\nsquare\ntriangle\n')
    check_num_classes(det_cfg(3, classes=str(names)))   # mmengine reads a path's lines
    with pytest.raises(ClassCountError, match='names 3 classes'):
        check_num_classes(det_cfg(2, classes=str(names)))
    check_num_classes(det_cfg(2, classes='disc'))   # not a file: not counted here


def test_panoptic_heads_predict_the_things():
    cfg = det_cfg(2, classes=('disc', 'square', 'sky'))
    cfg.train_dataloader.dataset.dataset.metainfo.update(thing_classes=('disc', 'square'),
                                                         stuff_classes=('sky', ))
    check_num_classes(cfg)
    cfg.model.roi_head.bbox_head.num_classes = 3
    with pytest.raises(ClassCountError, match=r'names 3 classes, 2 of them things, but '
                                              r'model.roi_head.bbox_head.num_classes=3'):
        check_num_classes(cfg)


def test_sets_with_their_own_classes_not_checked():
    """A concatenation of sets that name different numbers of classes (mmdet's ODinW
    evaluation) has no single count to check against."""
    cfg = det_cfg(80)
    cfg.val_dataloader = dict(dataset=dict(type='ConcatDataset', datasets=[
        dict(metainfo=dict(classes=('a', 'b'))), dict(metainfo=dict(classes=('c', )))]))
    check_num_classes(cfg, loaders=('val_dataloader', ))
