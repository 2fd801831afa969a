"""SyncFreeMaxIoUAssigner against mmdet's MaxIoUAssigner: equal results, no syncs on CUDA."""
import itertools

import pytest
import torch

import mmmambaout  # noqa: F401  (first: provides mmcv's ops, registers the classes)
from mmdet.models.task_modules.assigners import MaxIoUAssigner
from mmdet.models.task_modules.samplers.sampling_result import random_boxes
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData

from mmmambaout.models.task_modules import SyncFreeMaxIoUAssigner

# neg_iou_thr: floats, tuples, and an int (mmdet's isinstance checks assign no negatives)
OPTIONS = [
    dict(pos_iou_thr=pos, neg_iou_thr=neg, min_pos_iou=min_pos, match_low_quality=low,
         gt_max_assign_all=assign_all)
    for pos, neg, min_pos, low, assign_all in itertools.product(
        (0.3, 0.5, 0.7), (0.3, 0.5, (0.0, 0.3), (0.1, 0.5), 0), (0.0, 0.3, 0.5, 0.95),
        (True, False), (True, False))
]


def _option_id(opt):
    return '-'.join(f'{k}={v}' for k, v in opt.items())


def _overlaps_cases():
    """IoUs quantised to 0.1 steps (ties everywhere), duplicated gts and boxes, ignored
    boxes (-1 columns), several dtypes, and the empty shapes."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for i in range(40):
        k = int(torch.randint(1, 9, (1, ), generator=g))
        n = int(torch.randint(1, 41, (1, ), generator=g))
        ov = (torch.rand(k, n, generator=g) * 11).floor().clamp(max=10) / 10
        if k > 1 and i % 2 == 0:   # a gt repeated: identical rows
            a, b = torch.randperm(k, generator=g)[:2].tolist()
            ov[b] = ov[a]
        if n > 1 and i % 3 == 0:   # a box repeated
            a, b = torch.randperm(n, generator=g)[:2].tolist()
            ov[:, b] = ov[:, a]
        if n > 2 and i % 4 == 1:   # ignored boxes, as assign() marks them
            ov[:, torch.rand(n, generator=g) < 0.2] = -1
        if i % 5 == 2:             # low IoUs only: low-quality matches decide
            ov = ov * 0.3
        dtype = (torch.float32, torch.float64, torch.float16)[i % 3]
        labels = torch.randint(0, 80, (k, ), generator=g)
        cases.append((ov.to(dtype), labels))
    cases.append((torch.full((3, 5), 0.4), torch.tensor([4, 5, 6])))   # all tied
    cases.append((torch.zeros(2, 6), torch.tensor([1, 2])))            # all zero
    for k, n in ((0, 5), (3, 0), (0, 0)):
        cases.append((torch.rand(k, n), torch.randint(0, 80, (k, ))))
    return cases


CASES = _overlaps_cases()


def _assert_same(ours, ref):
    assert ours.num_gts == ref.num_gts
    for name in ('gt_inds', 'max_overlaps', 'labels'):
        a, b = getattr(ours, name), getattr(ref, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name


@pytest.mark.parametrize('opt', OPTIONS, ids=_option_id)
def test_assign_wrt_overlaps_equals_mmdet(opt):
    ref, ours = MaxIoUAssigner(**opt), SyncFreeMaxIoUAssigner(**opt)
    for overlaps, labels in CASES:
        _assert_same(ours.assign_wrt_overlaps(overlaps.clone(), labels),
                     ref.assign_wrt_overlaps(overlaps.clone(), labels))


@pytest.mark.parametrize('assign_all', (True, False))
def test_later_gts_overwrite_earlier(assign_all):
    # box 0: best of gt 0 and gt 1 (tie 0.4), box 1: also gt 0's best (tie) -> gt 1 wins box 0
    overlaps = torch.tensor([[0.4, 0.4, 0.1], [0.4, 0.2, 0.1]])
    opt = dict(pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.3, gt_max_assign_all=assign_all)
    res = SyncFreeMaxIoUAssigner(**opt).assign_wrt_overlaps(overlaps, torch.tensor([7, 8]))
    ref = MaxIoUAssigner(**opt).assign_wrt_overlaps(overlaps, torch.tensor([7, 8]))
    _assert_same(res, ref)
    # with assign_all gt 0 takes boxes 0 and 1, gt 1 retakes box 0; without, argmax (first
    # maximum) of both gts is box 0 and gt 1 takes it last
    expected = [2, 1, 0] if assign_all else [2, -1, 0]
    assert res.gt_inds.tolist() == expected


@pytest.mark.parametrize('ignore_wrt_candidates', (True, False))
@pytest.mark.parametrize('opt', OPTIONS[::7], ids=_option_id)
def test_assign_equals_mmdet(opt, ignore_wrt_candidates):
    opt = dict(opt, ignore_iof_thr=0.5, ignore_wrt_candidates=ignore_wrt_candidates)
    ref, ours = MaxIoUAssigner(**opt), SyncFreeMaxIoUAssigner(**opt)
    for seed in range(10):
        num_gts = seed % 5   # 0 included
        priors = random_boxes(30 + seed, 64, rng=seed)
        priors = torch.cat([priors, priors[:5]])   # repeated priors
        pred = InstanceData(priors=priors)
        gt = InstanceData(bboxes=torch.cat([priors[:num_gts] + 0.5, random_boxes(2, 64, seed)]),
                          labels=torch.randint(0, 10, (num_gts + 2, )))
        ignore = InstanceData(bboxes=random_boxes(seed % 3, 64, rng=seed + 100))
        _assert_same(ours.assign(pred, gt, ignore), ref.assign(pred, gt, ignore))
        _assert_same(ours.assign(pred, gt), ref.assign(pred, gt))


def test_registered():
    assigner = TASK_UTILS.build(dict(type='SyncFreeMaxIoUAssigner', pos_iou_thr=0.7,
                                     neg_iou_thr=0.3, min_pos_iou=0.3))
    assert type(assigner) is SyncFreeMaxIoUAssigner


@pytest.mark.cuda
def test_no_sync_on_cuda():
    """assign_wrt_overlaps under sync debug mode 'error'. (assign() as a whole still
    synchronises once, in mmdet's bbox_overlaps: ``union.new_tensor([eps])`` uploads from
    pageable memory.)"""
    device = torch.device('cuda')
    g = torch.Generator().manual_seed(1)
    priors = random_boxes(3000, 800, rng=1).to(device)
    gt_bboxes = random_boxes(20, 800, rng=2).to(device)
    gt_labels = torch.randint(0, 80, (20, ), generator=g).to(device)
    overlaps = TASK_UTILS.build(dict(type='BboxOverlaps2D'))(gt_bboxes, priors)
    cases = [(overlaps, gt_labels)] + [(ov.to(device), lab.to(device)) for ov, lab in CASES]
    for opt in OPTIONS:
        ref, ours = MaxIoUAssigner(**opt), SyncFreeMaxIoUAssigner(**opt)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode('error')
        try:
            results = [ours.assign_wrt_overlaps(ov, lab) for ov, lab in cases]
        finally:
            torch.cuda.set_sync_debug_mode('default')
        for r, (ov, lab) in zip(results, cases):
            _assert_same(r, ref.assign_wrt_overlaps(ov, lab))
    # the check has teeth: mmdet's loop synchronises
    torch.cuda.set_sync_debug_mode('error')
    try:
        with pytest.raises(RuntimeError, match='synchroniz'):
            MaxIoUAssigner(0.7, 0.3, 0.3).assign_wrt_overlaps(overlaps, gt_labels)
    finally:
        torch.cuda.set_sync_debug_mode('default')
