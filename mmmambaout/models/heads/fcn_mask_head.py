"""mmdet's FCN mask head with its training targets computed on the GPU.

mmdet's ``mask_target`` copies each image's positive proposals to the host, uploads the
image's full-resolution ground-truth masks from pageable memory, RoI-aligns them on the
device, copies the result to the host to binarise it and uploads it again: four
host-device round trips and a synchronisation per image. Here the masks go up once
(pinned, asynchronous) and everything else stays on the device. Masks padded lazily by
:class:`~mmmambaout.models.data_preprocessors.LazyMaskPadDetDataPreprocessor` are padded
on the device, and only those of the positive proposals' objects. The arithmetic is
mmdet's: proposals clipped to the mask size, ``roi_align`` (avg, aligned, sampling 0)
of the assigned masks at the proposals, ``>= 0.5`` unless ``soft_mask_target``.
Polygon masks (and anything but :class:`BitmapMasks`) take mmdet's path unchanged.
"""
import torch
from mmcv.ops import roi_align
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS
from mmdet.structures.mask import BitmapMasks
from torch.nn.modules.utils import _pair

from mmmambaout.models.data_preprocessors.lazy_mask_pad import (LazyPaddedBitmapMasks,
                                                                upload_masks)


def _masks_on(gt_masks: BitmapMasks, device, index) -> torch.Tensor:
    """``gt_masks[index]`` as a uint8 tensor on ``device``, of the masks' full size."""
    if isinstance(gt_masks, LazyPaddedBitmapMasks):
        return gt_masks.to_padded_tensor(device, index)
    return upload_masks(gt_masks.masks, device).index_select(0, index)


def mask_target_on_device(pos_proposals, pos_assigned_gt_inds, gt_masks, cfg):
    """Mask targets of one image (``mmdet.structures.mask.mask_target_single``'s result)."""
    mask_size = _pair(cfg.mask_size)
    num_pos = pos_proposals.size(0)
    # without gt masks mmdet's crop_and_resize returns no masks at all, even for positives
    if num_pos == 0 or len(gt_masks) == 0:
        return pos_proposals.new_zeros((0, ) + mask_size)
    boxes = torch.stack((pos_proposals[:, 0].clamp(0, gt_masks.width),
                         pos_proposals[:, 1].clamp(0, gt_masks.height),
                         pos_proposals[:, 2].clamp(0, gt_masks.width),
                         pos_proposals[:, 3].clamp(0, gt_masks.height)), dim=1)
    index = torch.arange(num_pos, device=boxes.device).to(boxes.dtype)[:, None]
    rois = torch.cat((index, boxes), dim=1)
    masks = _masks_on(gt_masks, boxes.device, pos_assigned_gt_inds)
    targets = roi_align(masks[:, None].to(rois.dtype), rois, mask_size, 1.0, 0, 'avg',
                        True).squeeze(1)
    if cfg.get('soft_mask_target', False):
        return targets.float()
    return (targets >= 0.5).float()


@MODELS.register_module()
class OnDeviceTargetFCNMaskHead(FCNMaskHead):
    """:class:`FCNMaskHead` whose ``get_targets`` keeps bitmap-mask targets on the device."""

    def get_targets(self, sampling_results, batch_gt_instances, rcnn_train_cfg):
        gt_masks = [res.masks for res in batch_gt_instances]
        if not all(isinstance(m, BitmapMasks) for m in gt_masks):
            return super().get_targets(sampling_results, batch_gt_instances, rcnn_train_cfg)
        targets = [
            mask_target_on_device(res.pos_priors, res.pos_assigned_gt_inds, masks,
                                  rcnn_train_cfg)
            for res, masks in zip(sampling_results, gt_masks)
        ]
        return torch.cat(targets) if targets else targets


__all__ = ['OnDeviceTargetFCNMaskHead', 'mask_target_on_device']
