"""SyncFreeBboxOverlaps2D against mmdet's BboxOverlaps2D: bitwise equal overlaps in every
mode, aligned or all pairs, with batch dimensions, score columns, empty inputs and the
fp16 option; and no tensor made from Python numbers (a synchronisation on CUDA)."""
import pytest
import torch

import mmmambaout  # noqa: F401  (first: provides mmcv's ops, registers the classes)
from mmdet.models.task_modules.assigners import BboxOverlaps2D

from mmmambaout.models.task_modules import SyncFreeBboxOverlaps2D


def cases(boxes, gen):
    a, b = boxes(13, gen), boxes(7, gen)
    b[0] = a[0]                              # identical boxes: IoU 1
    b[1] = torch.tensor([5., 5., 5., 9.])    # zero area: the union floor
    yield a, b, False
    yield a[:7], b, True
    yield boxes(12, gen).view(2, 6, 4), boxes(8, gen).view(2, 4, 4), False   # batched
    yield torch.cat([a, torch.rand(13, 1, generator=gen)], 1), b, False      # scores
    yield a, b[:0], False
    yield a[:0], b[:0], True


@pytest.mark.parametrize('mode', ['iou', 'iof', 'giou'])
@pytest.mark.parametrize('calc', [dict(), dict(dtype='fp16', scale=4.0)], ids=str)
def test_overlaps_equal_mmdets(mode, calc, random_boxes):
    gen = torch.Generator().manual_seed(0)
    stock, ours = BboxOverlaps2D(**calc), SyncFreeBboxOverlaps2D(**calc)
    for a, b, aligned in cases(random_boxes, gen):
        for dtype in (torch.float32, torch.float16):
            got = ours(a.to(dtype), b.to(dtype), mode, aligned)
            want = stock(a.to(dtype), b.to(dtype), mode, aligned)
            assert got.shape == want.shape and got.dtype == want.dtype
            assert torch.equal(got, want), (mode, aligned, dtype)


def test_no_tensors_from_python_numbers(random_boxes, count_uploads):
    gen = torch.Generator().manual_seed(1)
    a, b = random_boxes(9, gen), random_boxes(4, gen)
    for calc, expected in ((BboxOverlaps2D(), 1), (SyncFreeBboxOverlaps2D(), 0)):
        with count_uploads() as counter:
            calc(a, b)
        assert counter.count == expected   # mmdet's: eps
