"""CachedAnchorGenerator hands out mmdet's anchors, bitwise, computed once per key."""
import mmmambaout  # noqa: F401  (mmcv op backend before mmdet)
import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator

from mmmambaout.models.task_modules import CachedAnchorGenerator

RPN = dict(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])


def test_same_anchors_cached_and_owned_by_caller(monkeypatch):
    ref, cached = AnchorGenerator(**RPN), CachedAnchorGenerator(**RPN)
    sizes = [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)]
    expected = ref.grid_priors(sizes, device='cpu')
    calls = []
    original = AnchorGenerator.grid_priors
    monkeypatch.setattr(AnchorGenerator, 'grid_priors',
                        lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    first = cached.grid_priors(sizes, device='cpu')
    first[0].fill_(-1)                      # the caller's copy: must not reach the cache
    second = cached.grid_priors(sizes, device='cpu')
    assert len(calls) == 1
    for e, s in zip(expected, second):
        assert torch.equal(e, s)
    half = cached.grid_priors(sizes, dtype=torch.float64, device='cpu')   # another key
    assert len(calls) == 2 and half[0].dtype == torch.float64


def test_cache_is_bounded():
    gen = CachedAnchorGenerator(**RPN)
    gen.max_cached = 3
    for h in range(5):
        gen.grid_priors([(h + 2, 3)] * 5, device='cpu')
    assert len(gen._grid_cache) == 3


def test_same_valid_flags_cached_per_pad_shape(monkeypatch):
    ref, cached = AnchorGenerator(**RPN), CachedAnchorGenerator(**RPN)
    sizes = [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)]
    calls = []
    original = AnchorGenerator.valid_flags
    monkeypatch.setattr(AnchorGenerator, 'valid_flags',
                        lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    for pad_shape in [(97, 161, 3), (100, 168), (97, 161, 3)]:   # the third is cached
        flags = cached.valid_flags(sizes, pad_shape, device='cpu')
        expected = original(ref, sizes, pad_shape, device='cpu')
        assert all(torch.equal(e, f) for e, f in zip(expected, flags))
        assert not all(f.all() for f in flags) or pad_shape == (100, 168)
        flags[0].fill_(False)                  # the caller's copy only
    assert len(calls) == 2
