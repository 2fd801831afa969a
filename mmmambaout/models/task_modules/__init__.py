from .anchor_generator import CachedAnchorGenerator  # noqa: F401
from .delta_xywh_bbox_coder import SyncFreeDeltaXYWHBBoxCoder  # noqa: F401
from .iou2d_calculator import SyncFreeBboxOverlaps2D  # noqa: F401
from .max_iou_assigner import SyncFreeMaxIoUAssigner  # noqa: F401
from .random_sampler import SyncFreeRandomSampler  # noqa: F401
