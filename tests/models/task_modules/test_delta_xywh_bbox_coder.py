"""SyncFreeDeltaXYWHBBoxCoder against mmdet's DeltaXYWHBBoxCoder: bitwise equal encodings
and decodings for every option, and no tensor made from Python numbers after the first
call (each such tensor is a host-to-device copy, a synchronisation, on CUDA)."""
import pytest
import torch

import mmmambaout  # noqa: F401  (first: provides mmcv's ops, registers the classes)
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.structures.bbox import HorizontalBoxes

from mmmambaout.models.task_modules import SyncFreeDeltaXYWHBBoxCoder

OPTIONS = [dict(), dict(target_means=(0.1, -0.2, 0.05, 0.0), target_stds=(0.1, 0.1, 0.2, 0.2)),
           dict(clip_border=False), dict(add_ctr_clamp=True, ctr_clamp=8),
           dict(use_box_type=True)]


def both(opt):
    return DeltaXYWHBBoxCoder(**opt), SyncFreeDeltaXYWHBBoxCoder(**opt)


@pytest.mark.parametrize('opt', OPTIONS, ids=str)
def test_encode_equals_mmdets(opt, random_boxes):
    boxes = random_boxes
    gen = torch.Generator().manual_seed(0)
    stock, ours = both(opt)
    for n in (0, 1, 37):
        p, g = boxes(n, gen), boxes(n, gen)
        for dtype in (torch.float32, torch.float16):
            assert torch.equal(ours.encode(p.to(dtype), g.to(dtype)),
                               stock.encode(p.to(dtype), g.to(dtype)))
    p, g = boxes(5, gen), boxes(5, gen)
    assert torch.equal(ours.encode(HorizontalBoxes(p), HorizontalBoxes(g)), stock.encode(p, g))


@pytest.mark.parametrize('opt', OPTIONS, ids=str)
def test_decode_equals_mmdets(opt, random_boxes):
    boxes = random_boxes
    gen = torch.Generator().manual_seed(1)
    stock, ours = both(opt)
    for n, k in ((0, 1), (1, 1), (50, 1), (20, 3)):
        if opt.get('use_box_type') and k > 1:
            continue   # mmdet refuses box types for several classes' boxes too
        rois = boxes(n, gen)
        deltas = torch.randn(n, 4 * k, generator=gen) * 2   # exp clipping comes into play
        for dtype in (torch.float32, torch.float16):
            for max_shape in (None, (60, 80)):
                got = ours.decode(rois.to(dtype), deltas.to(dtype), max_shape=max_shape)
                want = stock.decode(rois.to(dtype), deltas.to(dtype), max_shape=max_shape)
                assert type(got) is type(want)
                if isinstance(got, HorizontalBoxes):
                    got, want = got.tensor, want.tensor
                assert got.dtype == want.dtype and torch.equal(got, want), (n, k, dtype)
    # batched (3-d) deltas: mmdet's own path
    rois, deltas = boxes(6, gen).view(2, 3, 4), torch.randn(2, 3, 4, generator=gen)
    got, want = ours.decode(rois, deltas), stock.decode(rois, deltas)
    if isinstance(got, HorizontalBoxes):
        got, want = got.tensor, want.tensor
    assert torch.equal(got, want)


def test_no_tensors_from_python_numbers_after_the_first_call(random_boxes, count_uploads):
    boxes = random_boxes
    gen = torch.Generator().manual_seed(2)
    stock, ours = both(dict())
    p, g = boxes(10, gen), boxes(10, gen)
    deltas = torch.randn(10, 4, generator=gen)
    ours.encode(p, g), ours.decode(p, deltas)   # makes the constants
    for coder, expected in ((stock, 4), (ours, 0)):
        with count_uploads() as counter:
            coder.encode(p, g)
            coder.decode(p, deltas, max_shape=(50, 50))
        assert counter.count == expected, coder   # mmdet's: means and stds, twice


def test_constants_follow_reassignment_and_serve_training_after_inference(random_boxes):
    gen = torch.Generator().manual_seed(3)
    p, g = random_boxes(6, gen), random_boxes(6, gen)
    stock, ours = both(dict())
    with torch.inference_mode():   # constants made here must not be inference tensors
        ours.encode(p, g)
    deltas = torch.randn(6, 4, generator=gen, requires_grad=True)
    ours.decode(p, deltas).sum().backward()   # saves the stds for the backward
    assert deltas.grad is not None
    for coder in (stock, ours):
        coder.means, coder.stds = (0.5, 0.5, 0.0, 0.0), (2.0, 2.0, 1.0, 1.0)
    assert torch.equal(ours.encode(p, g), stock.encode(p, g))
