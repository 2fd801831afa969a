"""mmdet's AnchorGenerator with the grid anchors cached per feature-map size.

mmdet rebuilds every level's anchors on every call (the RPN calls it for its targets
and again for its proposals): per level a host-to-device copy of the base anchors (a
synchronisation) and about eight small kernels. The anchors depend only on the feature-map
sizes, dtype and device, so they are computed once per such key and handed out as
copies (callers own what they get, as with mmdet).
"""
import torch
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import TASK_UTILS


@TASK_UTILS.register_module()
class CachedAnchorGenerator(AnchorGenerator):
    """:class:`AnchorGenerator` whose ``grid_priors`` are cached by
    ``(featmap_sizes, dtype, device)``; same values, bitwise."""

    #: distinct keys kept (multi-scale training sees a few dozen padded sizes)
    max_cached = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._grid_cache = {}

    def grid_priors(self, featmap_sizes, dtype=torch.float32, device='cuda'):
        key = (tuple(tuple(int(v) for v in s) for s in featmap_sizes), dtype,
               torch.device(device))
        anchors = self._grid_cache.get(key)
        if anchors is None:
            if len(self._grid_cache) >= self.max_cached:
                self._grid_cache.pop(next(iter(self._grid_cache)))
            anchors = super().grid_priors(featmap_sizes, dtype=dtype, device=device)
            self._grid_cache[key] = anchors
        return [a.clone() for a in anchors]
