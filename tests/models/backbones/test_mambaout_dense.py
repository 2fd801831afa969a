"""MambaOut inside mmdet's Mask R-CNN and mmseg's UperNet by ``type='MambaOut'``: one
train step and one predict each, CPU, tiny odd-sized images (the mmcv ops come from
``import mmmambaout``)."""
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper

import mmmambaout  # noqa: F401  (mmcv op backend + registrations)
from mmmambaout.utils.synthetic import det_batch, seg_batch

H, W = 61, 87  # odd on purpose
DIMS = [48, 96, 192, 288]  # femto


def _config(package, rel_path):
    root = Path(__import__(package).__file__).parent / '.mim' / 'configs'
    return Config.fromfile(str(root / rel_path))


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

    data = det_batch(2, (W, H), objects=2, seed=0)
    results = _train_step_then_predict(model, data)
    assert len(results) == 2
    for r in results:
        assert len(r.pred_instances) > 0
        assert r.pred_instances.masks.shape[1:] == (H, W)


def test_upernet_with_mambaout():
    from mmseg.registry import MODELS
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

    data = seg_batch(2, (W, H), num_classes=5, seed=1)
    results = _train_step_then_predict(model, data)
    assert [r.pred_sem_seg.data.shape for r in results] == [(1, H, W)] * 2
