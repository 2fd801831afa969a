"""mmdet's AnchorGenerator with grid anchors and valid flags cached per size.

mmdet rebuilds every level's anchors on every call (the RPN calls it for its targets
and again for its proposals): per level a host-to-device copy of the base anchors (a
synchronisation) and about eight small kernels; and each image's valid flags, another
eight small ops per level. Anchors depend only on the feature-map sizes, dtype and
device, valid flags on the feature-map sizes, the padded image size and the device, so
each is computed once per such key and handed out as copies (callers own what they get,
as with mmdet).
"""
import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import TASK_UTILS


def _sizes(featmap_sizes):
    return tuple(tuple(int(v) for v in s) for s in featmap_sizes)


@TASK_UTILS.register_module()
class CachedAnchorGenerator(AnchorGenerator):
    """:class:`AnchorGenerator` whose ``grid_priors`` are cached by
    ``(featmap_sizes, dtype, device)`` and ``valid_flags`` by
    ``(featmap_sizes, pad_shape, device)``; same values, bitwise."""

    #: distinct keys kept per cache (multi-scale training sees a few dozen padded sizes)
    max_cached = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._grid_cache = {}
        self._flags_cache = {}

    def _cached(self, cache, key, build):
        tensors = cache.get(key)
        if tensors is None:
            if len(cache) >= self.max_cached:
                cache.pop(next(iter(cache)))
            tensors = cache[key] = build()
        return [t.clone() for t in tensors]

    def grid_priors(self, featmap_sizes, dtype=torch.float32, device='cuda'):
        key = (_sizes(featmap_sizes), dtype, torch.device(device))
        return self._cached(self._grid_cache, key, lambda: super(
            CachedAnchorGenerator, self).grid_priors(featmap_sizes, dtype=dtype, device=device))

    def valid_flags(self, featmap_sizes, pad_shape, device='cuda'):
        key = (_sizes(featmap_sizes), tuple(int(v) for v in pad_shape[:2]),
               torch.device(device))
        return self._cached(self._flags_cache, key, lambda: super(
            CachedAnchorGenerator, self).valid_flags(featmap_sizes, pad_shape, device=device))
