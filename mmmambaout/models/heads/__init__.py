from .batched_rpn_head import BatchedRPNHead  # noqa: F401
from .class_batched_nms_bbox_head import ClassBatchedNMSBBoxHead  # noqa: F401
from .fcn_mask_head import OnDeviceTargetFCNMaskHead, mask_target_on_device  # noqa: F401
from .mambaout_head import MambaOutClsHead  # noqa: F401
