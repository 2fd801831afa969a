"""Mask targets on the device equal mmdet's mask_target (CPU here: bitwise equal)."""
import mmmambaout  # noqa: F401  (mmcv op backend before mmdet)
import numpy as np
import pytest
import torch
from mmdet.structures.mask import BitmapMasks, PolygonMasks, mask_target
from mmengine.config import ConfigDict

from mmmambaout.models.heads import mask_target_on_device


def random_case(seed, num_gts=5, num_pos=17, h=61, w=83):
    rng = np.random.default_rng(seed)
    masks = (rng.random((num_gts, h, w)) > 0.6).astype(np.uint8)
    xy = rng.uniform(-10, [w, h], (num_pos, 2))         # some boxes leave the image
    wh = rng.uniform(1, 40, (num_pos, 2))
    proposals = torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32))
    inds = torch.from_numpy(rng.integers(0, num_gts, num_pos))
    return proposals, inds, BitmapMasks(masks, h, w)


@pytest.mark.parametrize('soft', [False, True])
@pytest.mark.parametrize('mask_size', [28, (14, 21)])
def test_equals_mmdet(soft, mask_size):
    cfg = ConfigDict(mask_size=mask_size, soft_mask_target=soft)
    cases = [random_case(s) for s in range(3)] + [random_case(9, num_pos=0)]
    ours = torch.cat([mask_target_on_device(p, i, m, cfg) for p, i, m in cases])
    ref = mask_target(*map(list, zip(*cases)), cfg)
    assert ours.dtype == ref.dtype == torch.float32 and ours.shape == ref.shape
    assert torch.equal(ours, ref)


def test_polygon_masks_fall_back_to_mmdet():
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    from mmengine.structures import InstanceData

    from mmmambaout.models.heads import OnDeviceTargetFCNMaskHead
    head = OnDeviceTargetFCNMaskHead(num_convs=1, in_channels=4, conv_out_channels=4,
                                     num_classes=2)
    polys = PolygonMasks([[np.array([1., 1., 20., 1., 20., 15.])]], 32, 32)
    res = InstanceData(pos_priors=torch.tensor([[0., 0., 16., 16.]]),
                       pos_assigned_gt_inds=torch.tensor([0]))
    gts = [InstanceData(masks=polys)]
    cfg = ConfigDict(mask_size=7)
    assert torch.equal(head.get_targets([res], gts, cfg),
                       FCNMaskHead.get_targets(head, [res], gts, cfg))


def test_lazily_padded_masks_give_the_padded_targets():
    from mmmambaout.models.data_preprocessors import LazyPaddedBitmapMasks
    cfg = ConfigDict(mask_size=28)
    for seed in range(3):
        proposals, inds, masks = random_case(seed)
        proposals[:, 2:] += 15        # reach into the padding
        eager = masks.pad((64, 96), pad_val=0)
        lazy = LazyPaddedBitmapMasks(masks, 64, 96)
        assert torch.equal(mask_target_on_device(proposals, inds, lazy, cfg),
                           mask_target_on_device(proposals, inds, eager, cfg))
        assert lazy._padded is None    # the device path never padded on the host
