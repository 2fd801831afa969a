"""LevelSortedRoIExtractor against mmdet's SingleRoIExtractor (float32): pooled features
and the gradients of the feature maps bitwise equal on the CPU; on CUDA (skipped without a
GPU) pooled features equal and gradients to 1e-5 relative, as RoIAlign's backward adds
with atomics in no fixed order. One read-back per call."""
import mmmambaout  # noqa: F401  (mmcv op backend before mmdet)
import pytest
import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

from mmmambaout.models.roi_extractors import LevelSortedRoIExtractor

STRIDES = [4, 8, 16, 32]


def extractors(**kwargs):
    cfg = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
               out_channels=4, featmap_strides=STRIDES, **kwargs)
    return SingleRoIExtractor(**cfg), LevelSortedRoIExtractor(**cfg)


def case(num_rois, max_size=300., seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 4, 256 // s, 320 // s, generator=g) for s in STRIDES]
    xy = torch.rand(num_rois, 2, generator=g) * 200
    wh = torch.rand(num_rois, 2, generator=g) * max_size + 2
    rois = torch.cat((torch.randint(0, 2, (num_rois, 1), generator=g).float(), xy, xy + wh), 1)
    return feats, rois


def run(extractor, feats, rois, **kwargs):
    feats = [f.clone().requires_grad_() for f in feats]
    out = extractor(feats, rois, **kwargs)
    out.backward(torch.arange(out.numel(), dtype=out.dtype, device=out.device)
                 .reshape(out.shape).sin())
    return out, [f.grad for f in feats]


CUDA = pytest.param('cuda', marks=pytest.mark.cuda)


@pytest.mark.parametrize('device', ['cpu', CUDA])
@pytest.mark.parametrize('num_rois, max_size, scale', [
    (60, 300., None),      # every level used
    (40, 40., None),       # small RoIs only: the coarse levels get none
    (25, 300., 1.5),       # roi_scale_factor
    (0, 300., None),       # no RoIs at all
])
def test_equals_mmdet(num_rois, max_size, scale, device):
    stock, ours = extractors()
    feats, rois = case(num_rois, max_size)
    feats, rois = [f.to(device) for f in feats], rois.to(device)
    kwargs = {} if scale is None else dict(roi_scale_factor=scale)
    ref, ref_grads = run(stock, feats, rois, **kwargs)
    got, got_grads = run(ours, feats, rois, **kwargs)
    assert got.shape == ref.shape == (num_rois, 4, 7, 7)
    assert torch.equal(got, ref)
    for a, b in zip(ref_grads, got_grads):
        assert (a is None) == (b is None)
        if a is not None and device == 'cpu':
            assert torch.equal(a, b)
        elif a is not None:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_one_readback_per_call():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func).startswith(('aten.nonzero', 'aten._local_scalar_dense')):
                Count.reads += 1
            return func(*args, **(kwargs or {}))
    _, ours = extractors()
    feats, rois = case(60)
    with Count():
        ours(feats, rois)
    # tolist() of the counts is one device-to-host copy (no nonzero / item per level)
    assert Count.reads == 0
