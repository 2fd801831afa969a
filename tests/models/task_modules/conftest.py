import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode


@pytest.fixture
def random_boxes():
    """``random_boxes(n, generator, size=100)``: ``(n, 4)`` x1y1x2y2 boxes, each at
    least one unit wide and high."""
    def make(n, gen, size=100.0):
        xy = torch.rand(n, 2, generator=gen) * size
        return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * size / 2], 1)
    return make


class _Uploads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.lift_fresh.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture
def count_uploads():
    """``with count_uploads() as c: ...``; ``c.count``: tensors made from Python data
    (``torch.tensor`` / ``new_tensor``), each a host-to-device copy for a CUDA device."""
    return _Uploads
