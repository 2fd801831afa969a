import importlib
import os
import runpy
import os.path as osp
import warnings

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mmmambaout.datasets import demo_data
from mmmambaout.datasets.demo_data import (DEMO_ADE_METAINFO, DEMO_CLASSES, DEMO_METAINFO,
                                           ade_demo_paths, demo_data_ready, make_ade_demo,
                                           make_coco_demo, make_demo_data)

SMALL = dict(num_train=16, num_val=4)
# pycocotools' mask decoding trips a NumPy 2 deprecation whatever the data.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo'))
    make_demo_data(root, **SMALL)
    return root


def _all_files(root):
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                found[osp.relpath(path, root)] = f.read()
    return found


def _import_openmmlab(module):
    """mmdet/mmseg dataset modules load mmcv.ops, whose backend importing mmmambaout provides."""
    import mmmambaout  # noqa: F401
    return importlib.import_module(module)


def test_same_seed_same_bytes_other_seed_differs(tmp_path, demo_root):
    first = _all_files(demo_root)
    # coco: jpgs, 2 jsons, marker; ade: jpgs, pngs, marker
    assert len(first) == (20 + 2 + 1) + (20 + 20 + 1)
    make_demo_data(str(tmp_path / 'a'), **SMALL)
    assert _all_files(str(tmp_path / 'a')) == first
    make_demo_data(str(tmp_path / 'b'), seed=1, **SMALL)
    other = _all_files(str(tmp_path / 'b'))
    assert other.keys() == first.keys()
    assert sum(first[k] != other[k] for k in first) > 0.9 * len(first)


def test_first_images_do_not_depend_on_count(tmp_path, demo_root):
    root = str(tmp_path)
    make_ade_demo(root, num_train=3, num_val=1)
    fewer = _all_files(ade_demo_paths(root)['train_img_dir'])
    more = _all_files(ade_demo_paths(demo_root)['train_img_dir'])
    assert fewer and all(more[k] == v for k, v in fewer.items())


def test_ready_marker_interrupted_kept_and_forced(tmp_path, monkeypatch):
    root = str(tmp_path)
    assert not demo_data_ready(root)
    calls = []

    def failing_write(path, img):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_write(path, img)

    real_write = demo_data._write_jpg
    monkeypatch.setattr(demo_data, '_write_jpg', failing_write)
    with pytest.raises(KeyboardInterrupt):
        make_coco_demo(root, num_train=4, num_val=2)
    monkeypatch.setattr(demo_data, '_write_jpg', real_write)
    assert not demo_data_ready(root, 'coco')
    assert os.listdir(root) == []  # no half-written tree, no temp dir left over

    paths = make_coco_demo(root, num_train=4, num_val=2)
    assert demo_data_ready(root, 'coco') and not demo_data_ready(root, 'all')
    ann_file = paths['train_ann_file']
    stamp = os.stat(ann_file).st_mtime_ns
    make_coco_demo(root, num_train=4, num_val=2)  # same parameters: kept
    assert os.stat(ann_file).st_mtime_ns == stamp
    make_coco_demo(root, num_train=4, num_val=2, force=True)
    make_coco_demo(root, num_train=5, num_val=2)  # other parameters: made again
    assert len(COCO(ann_file).imgs) == 5


def test_coco_annotations_are_exact_visible_masks(demo_root):
    coco = COCO(osp.join(demo_root, 'coco/annotations/instances_train2017.json'))
    assert [coco.cats[i]['name'] for i in sorted(coco.cats)] == list(DEMO_CLASSES)
    assert len(coco.imgs) == 16
    occluded = 0
    for img_id, img in coco.imgs.items():
        jpg = cv2.imread(osp.join(demo_root, 'coco/train2017', img['file_name']))
        assert jpg.shape[:2] == (img['height'], img['width'])
        covered = np.zeros(jpg.shape[:2], bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id)):
            mask = coco.annToMask(ann).astype(bool)
            assert ann['iscrowd'] == 0 and ann['area'] == mask.sum() > 0
            ys, xs = np.nonzero(mask)
            tight = [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann['bbox'] == [float(v) for v in tight]
            # An occluded part belongs only to the object on top: visible masks are disjoint.
            assert not (covered & mask).any()
            covered |= mask
            is_ring = coco.cats[ann['category_id']]['name'] == 'ring'
            occluded += isinstance(ann['segmentation'], dict) and not is_ring
    assert occluded > 0
    areas = np.array([a['area'] for a in coco.anns.values()])
    assert (areas < 32 ** 2).any() and (areas > 64 ** 2).any() and areas.min() >= 40


def test_ground_truth_as_predictions_scores_full_ap(demo_root):
    coco = COCO(osp.join(demo_root, 'coco/annotations/instances_val2017.json'))
    results = [dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'],
                    segmentation=mask_utils.encode(np.asfortranarray(coco.annToMask(a))),
                    score=1.0) for a in coco.anns.values()]
    for iou_type in ('bbox', 'segm'):
        evaluator = COCOeval(coco, coco.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        assert evaluator.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]


def test_coco_loads_in_mmdet_without_warnings(demo_root):
    datasets = _import_openmmlab('mmdet.datasets')
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets.transforms import LoadAnnotations
    coco = COCO(osp.join(demo_root, 'coco/annotations/instances_val2017.json'))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        # mmdet decodes masks with pycocotools, which trips a NumPy 2 deprecation on any data.
        warnings.filterwarnings('ignore', "__array__ implementation doesn't accept a copy",
                                DeprecationWarning)
        dataset = datasets.CocoDataset(
            data_root=osp.join(demo_root, 'coco'), ann_file='annotations/instances_val2017.json',
            data_prefix=dict(img='val2017/'), metainfo=DEMO_METAINFO,
            pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True)])
        assert len(dataset) == 4 and dataset.metainfo['classes'] == DEMO_CLASSES
        sample = dataset[0]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=sample['img_id']))
    assert sample['img'].shape[:2] == sample['gt_masks'].masks.shape[1:]
    assert sample['gt_bboxes_labels'].tolist() == [a['category_id'] - 1 for a in anns]
    for mask, ann in zip(sample['gt_masks'].masks, anns):
        assert np.array_equal(mask.astype(bool), coco.annToMask(ann).astype(bool))


def test_ade_labels_and_file_pairs(demo_root):
    paths = ade_demo_paths(demo_root)
    seen = set()
    for split in ('train', 'val'):
        images = sorted(os.listdir(paths[f'{split}_img_dir']))
        assert images[0] == f'ADE_{split}_00000001.jpg'
        assert [n[:-4] + '.png' for n in images] == sorted(os.listdir(paths[f'{split}_seg_dir']))
        for name in images:
            img = cv2.imread(osp.join(paths[f'{split}_img_dir'], name))
            seg = cv2.imread(osp.join(paths[f'{split}_seg_dir'], name[:-4] + '.png'),
                             cv2.IMREAD_UNCHANGED)
            assert seg.dtype == np.uint8 and seg.shape == img.shape[:2]
            assert seg.max() <= len(DEMO_ADE_METAINFO['classes'])
            seen.update(np.unique(seg).tolist())
    assert seen == set(range(len(DEMO_ADE_METAINFO['classes']) + 1))


def test_ade_loads_in_mmseg_without_warnings(demo_root):
    datasets = _import_openmmlab('mmseg.datasets')
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.transforms import LoadAnnotations
    paths = ade_demo_paths(demo_root)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        dataset = datasets.ADE20KDataset(
            data_root=paths['data_root'], metainfo=DEMO_ADE_METAINFO, reduce_zero_label=True,
            data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
            pipeline=[LoadImageFromFile(), LoadAnnotations()])
        assert len(dataset) == 4
        assert dataset.metainfo['classes'] == DEMO_ADE_METAINFO['classes']
        assert dataset.metainfo['palette'] == DEMO_ADE_METAINFO['palette']
        samples = [dataset[i] for i in range(len(dataset))]
    for sample in samples:
        raw = cv2.imread(sample['seg_map_path'], cv2.IMREAD_UNCHANGED).astype(np.int64)
        expected = np.where(raw == 0, 255, raw - 1)  # reduce_zero_label; ids keep their order
        assert np.array_equal(sample['gt_seg_map'], expected)
        assert sample['img'].shape[:2] == raw.shape


def test_cli(tmp_path, capsys):
    script = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'misc', 'make_demo_data.py')
    module = runpy.run_path(script)
    module['main'](['--out', str(tmp_path), '--kind', 'coco', '--num-train', '3',
                    '--num-val', '1', '--min-size', '64', '--max-size', '96'])
    assert 'train: 3 images' in capsys.readouterr().out
    assert demo_data_ready(str(tmp_path), 'coco') and not demo_data_ready(str(tmp_path), 'ade')
