"""mmdet's BboxOverlaps2D without uploading ``eps`` on every call.

mmdet's ``bbox_overlaps`` floors the union at ``eps`` with ``union.new_tensor([eps])``:
for CUDA boxes a host-to-device copy from pageable memory, a synchronisation, in every
assignment (each image's RoI targets; the RPN's once a step). ``clamp(min=eps)`` gives
the same values without it; everything else is mmdet's arithmetic (bitwise equal).
"""
import torch
from mmdet.models.task_modules.assigners import BboxOverlaps2D
from mmdet.models.task_modules.assigners.iou2d_calculator import cast_tensor_type
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import get_box_tensor


def _clamp_min0(x):
    # as mmdet's fp16_clamp: CPU half has no clamp of its own in old torch, so via float
    if not x.is_cuda and x.dtype == torch.float16:
        return x.float().clamp(min=0).half()
    return x.clamp(min=0)


def bbox_overlaps(bboxes1, bboxes2, mode='iou', is_aligned=False, eps=1e-6):
    """mmdet's ``bbox_overlaps`` (modes ``'iou'``, ``'iof'``, ``'giou'``, aligned or all
    pairs, batch dimensions) without a host-device synchronisation."""
    assert mode in ('iou', 'iof', 'giou'), f'Unsupported mode {mode}'
    assert bboxes1.size(-1) == 4 or bboxes1.size(0) == 0
    assert bboxes2.size(-1) == 4 or bboxes2.size(0) == 0
    assert bboxes1.shape[:-2] == bboxes2.shape[:-2]
    batch_shape, rows, cols = bboxes1.shape[:-2], bboxes1.size(-2), bboxes2.size(-2)
    if is_aligned:
        assert rows == cols
    if rows * cols == 0:
        return bboxes1.new(batch_shape + ((rows, ) if is_aligned else (rows, cols)))

    def area(b):
        return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])

    area1, area2 = area(bboxes1), area(bboxes2)
    if not is_aligned:   # all pairs: rows x cols
        bboxes1, bboxes2 = bboxes1[..., :, None, :], bboxes2[..., None, :, :]
        area1, area2 = area1[..., None], area2[..., None, :]
    wh = _clamp_min0(torch.min(bboxes1[..., 2:], bboxes2[..., 2:])
                     - torch.max(bboxes1[..., :2], bboxes2[..., :2]))
    overlap = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - overlap if mode in ('iou', 'giou') else area1
    union = union.clamp(min=eps)
    ious = overlap / union
    if mode != 'giou':
        return ious
    enclose = _clamp_min0(torch.max(bboxes1[..., 2:], bboxes2[..., 2:])
                          - torch.min(bboxes1[..., :2], bboxes2[..., :2]))
    enclose_area = (enclose[..., 0] * enclose[..., 1]).clamp(min=eps)
    return ious - (enclose_area - union) / enclose_area


@TASK_UTILS.register_module()
class SyncFreeBboxOverlaps2D(BboxOverlaps2D):
    """:class:`BboxOverlaps2D` over :func:`bbox_overlaps`: same arguments and results."""

    def __call__(self, bboxes1, bboxes2, mode='iou', is_aligned=False):
        bboxes1, bboxes2 = get_box_tensor(bboxes1), get_box_tensor(bboxes2)
        assert bboxes1.size(-1) in (0, 4, 5) and bboxes2.size(-1) in (0, 4, 5)
        bboxes1, bboxes2 = bboxes1[..., :4], bboxes2[..., :4]   # no score column
        if self.dtype != 'fp16':
            return bbox_overlaps(bboxes1, bboxes2, mode, is_aligned)
        overlaps = bbox_overlaps(cast_tensor_type(bboxes1, self.scale, self.dtype),
                                 cast_tensor_type(bboxes2, self.scale, self.dtype),
                                 mode, is_aligned)
        # CPU half back to float32, as mmdet's
        return overlaps.float() if not overlaps.is_cuda and overlaps.dtype == torch.float16 \
            else overlaps
