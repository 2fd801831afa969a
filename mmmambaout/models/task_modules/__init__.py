from .anchor_generator import CachedAnchorGenerator  # noqa: F401
from .max_iou_assigner import SyncFreeMaxIoUAssigner  # noqa: F401
from .random_sampler import SyncFreeRandomSampler  # noqa: F401
