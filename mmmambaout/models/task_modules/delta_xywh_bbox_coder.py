"""mmdet's DeltaXYWHBBoxCoder without uploading its constants on every call.

mmdet's ``bbox2delta`` and ``delta2bbox`` build the normalisation means and standard
deviations with ``new_tensor(list)`` on each call: for CUDA boxes two host-to-device
copies from pageable memory, each a synchronisation. A Mask R-CNN step encodes the RPN's
and the RoI head's targets and decodes every image's proposals, so about ten per step.
Here the two tensors are made once per device and dtype; the arithmetic is mmdet's,
element for element (bitwise equal results); encoding also computes x and y (and width
and height) as pairs instead of one coordinate at a time (fewer kernels).
"""
import math

import torch
from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import HorizontalBoxes, get_box_tensor


@TASK_UTILS.register_module()
class SyncFreeDeltaXYWHBBoxCoder(DeltaXYWHBBoxCoder):
    """:class:`DeltaXYWHBBoxCoder` whose means and stds stay on the boxes' device (made
    once per device and dtype). Same arguments, same results, bitwise; decoding batched
    (3-d) deltas, and anything under ONNX export, is mmdet's own code."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._constants = {}

    def _means_stds(self, like: torch.Tensor):
        # keyed by the values too, in case someone reassigns them; made as normal tensors
        # even under inference_mode, which a later training call could not save
        key = (like.device, like.dtype, tuple(self.means), tuple(self.stds))
        if key not in self._constants:
            with torch.inference_mode(False):
                self._constants[key] = (like.new_tensor(self.means),
                                        like.new_tensor(self.stds))
        return self._constants[key]

    def encode(self, bboxes, gt_bboxes):
        """Deltas ``(dx, dy, dw, dh)`` that turn ``bboxes`` into ``gt_bboxes``,
        normalised: mmdet's ``bbox2delta`` (float32)."""
        bboxes, gt_bboxes = get_box_tensor(bboxes), get_box_tensor(gt_bboxes)
        assert bboxes.size(0) == gt_bboxes.size(0)
        assert bboxes.size(-1) == gt_bboxes.size(-1) == 4
        assert bboxes.size() == gt_bboxes.size()
        p, g = bboxes.float(), gt_bboxes.float()
        p_ctr, p_wh = (p[..., :2] + p[..., 2:]) * 0.5, p[..., 2:] - p[..., :2]
        g_ctr, g_wh = (g[..., :2] + g[..., 2:]) * 0.5, g[..., 2:] - g[..., :2]
        deltas = torch.cat(((g_ctr - p_ctr) / p_wh, torch.log(g_wh / p_wh)), dim=-1)
        means, stds = self._means_stds(deltas)
        return (deltas - means) / stds

    def decode(self, bboxes, pred_bboxes, max_shape=None, wh_ratio_clip=16 / 1000):
        """Boxes from ``bboxes`` and predicted deltas: mmdet's ``delta2bbox`` for 2-d
        deltas ``(N, 4 * k)``; otherwise mmdet's ``decode``."""
        if pred_bboxes.ndim != 2 or torch.onnx.is_in_onnx_export():
            return super().decode(bboxes, pred_bboxes, max_shape, wh_ratio_clip)
        rois = get_box_tensor(bboxes)
        assert pred_bboxes.size(0) == rois.size(0)
        decoded = self._delta2bbox(rois, pred_bboxes, max_shape, wh_ratio_clip)
        if self.use_box_type:
            assert decoded.size(-1) == 4, \
                'Cannot warp decoded boxes with box type when decoded boxes have shape of (N, num_classes * 4)'
            decoded = HorizontalBoxes(decoded)
        return decoded

    def _delta2bbox(self, rois, deltas, max_shape, wh_ratio_clip):
        num_bboxes, num_classes = deltas.size(0), deltas.size(1) // 4
        if num_bboxes == 0:
            return deltas
        means, stds = self._means_stds(deltas)
        deltas = deltas.reshape(-1, 4) * stds + means
        d_ctr, d_wh = deltas[:, :2], deltas[:, 2:]
        rois = rois.repeat(1, num_classes).reshape(-1, 4)
        p_ctr, p_wh = (rois[:, :2] + rois[:, 2:]) * 0.5, rois[:, 2:] - rois[:, :2]
        shift = p_wh * d_ctr
        max_ratio = abs(math.log(wh_ratio_clip))
        if self.add_ctr_clamp:
            shift = torch.clamp(shift, max=self.ctr_clamp, min=-self.ctr_clamp)
            d_wh = torch.clamp(d_wh, max=max_ratio)
        else:
            d_wh = d_wh.clamp(min=-max_ratio, max=max_ratio)
        ctr, wh = p_ctr + shift, p_wh * d_wh.exp()
        boxes = torch.cat([ctr - wh * 0.5, ctr + wh * 0.5], dim=-1)
        if self.clip_border and max_shape is not None:
            boxes[..., 0::2].clamp_(min=0, max=max_shape[1])
            boxes[..., 1::2].clamp_(min=0, max=max_shape[0])
        return boxes.reshape(num_bboxes, -1)
