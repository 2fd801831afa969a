"""MambaOut inside mmdet's Mask R-CNN and mmseg's UperNet by ``type='MambaOut'``: one
train step and one predict each, CPU, tiny odd-sized images (the mmcv ops come from
``import mmmambaout``)."""
from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData, PixelData

import mmmambaout  # noqa: F401  (mmcv op backend + registrations)

H, W = 61, 87  # odd on purpose
DIMS = [48, 96, 192, 288]  # femto


def _config(package, rel_path):
    root = Path(__import__(package).__file__).parent / '.mim' / 'configs'
    return Config.fromfile(str(root / rel_path))


def _images(gen):
    return [torch.randint(0, 256, (3, H, W), generator=gen, dtype=torch.uint8) for _ in range(2)]


def _backbone(**kwargs):
    return dict(type='MambaOut', arch='femto', out_indices=(0, 1, 2, 3), drop_path_rate=0.1,
                frozen_stages=1, **kwargs)


def _train_step_then_predict(model, data):
    model.train()
    frozen = model.backbone.stem.conv1.weight.detach().clone()
    trained = model.backbone.stages[3].blocks[0].fc1.weight.detach().clone()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-2))
    losses = model.train_step(data, optim)
    assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
    assert torch.equal(model.backbone.stem.conv1.weight, frozen)
    assert not torch.equal(model.backbone.stages[3].blocks[0].fc1.weight, trained)
    model.eval()
    with torch.no_grad():
        return model.test_step(data)


def test_mask_rcnn_with_mambaout():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = _config('mmdet', '_base_/models/mask-rcnn_r50_fpn.py')
    cfg.model.backbone = _backbone()
    cfg.model.neck.in_channels = DIMS
    cfg.model.train_cfg.rcnn.sampler.num = 32
    cfg.model.train_cfg.rpn_proposal.max_per_img = 100
    cfg.model.test_cfg.rpn.max_per_img = 50
    cfg.model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=5)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()

    samples = []
    for boxes in ([[4., 6, 40, 50], [45, 10, 80, 58]], [[10., 20, 30, 55]]):
        s = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                        scale_factor=(1.0, 1.0)))
        masks = np.zeros((len(boxes), H, W), np.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes):
            m[int(y1):int(y2), int(x1):int(x2)] = 1
        s.gt_instances = InstanceData(bboxes=torch.tensor(boxes),
                                      labels=torch.tensor([3, 7][:len(boxes)]),
                                      masks=BitmapMasks(masks, H, W))
        samples.append(s)
    gen = torch.Generator().manual_seed(0)
    results = _train_step_then_predict(model, dict(inputs=_images(gen), data_samples=samples))
    assert len(results) == 2
    for r in results:
        assert len(r.pred_instances) > 0
        assert r.pred_instances.masks.shape[1:] == (H, W)


def test_upernet_with_mambaout():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = _config('mmseg', '_base_/models/upernet_r50.py')
    cfg.model.pretrained = None
    cfg.model.backbone = _backbone(with_cp=True)
    cfg.model.data_preprocessor = dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(H, W))
    cfg.model.decode_head.update(in_channels=DIMS, channels=32, num_classes=5,
                                 norm_cfg=dict(type='BN', requires_grad=True))
    cfg.model.auxiliary_head.update(in_channels=DIMS[2], channels=16, num_classes=5,
                                    norm_cfg=dict(type='BN', requires_grad=True))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()

    gen = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, H, W), generator=gen))
        samples.append(s)
    results = _train_step_then_predict(model, dict(inputs=_images(gen), data_samples=samples))
    assert [r.pred_sem_seg.data.shape for r in results] == [(1, H, W)] * 2
