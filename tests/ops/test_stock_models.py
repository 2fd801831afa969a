"""OpenMMLab's own configs run on the torchvision-backed mmcv ops: one SGD step and one
predict on two tiny images, CPU, random init (no downloads). The models are the configs'
own (R-50 and all); what is shrunk is the input and, for the two-stage detectors, the
per-image RoI budgets (sampled RoIs, proposals, detections), since the mask head's
convolutions over hundreds of RoIs dominate the CPU time."""
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import InstanceData, PixelData

import mmmambaout  # noqa: F401  (installs the backend)

H, W = 64, 96


def _config(package, rel_path):
    root = Path(__import__(package).__file__).parent / '.mim' / 'configs'
    return Config.fromfile(str(root / rel_path))


def _as_list(x):
    return x if isinstance(x, list) else [x]


def _images(gen):
    return [torch.randint(0, 256, (3, H, W), generator=gen, dtype=torch.uint8) for _ in range(2)]


def _step_then_predict(model, data):
    model.train()
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
    losses = model.train_step(data, optim)
    assert losses and all(torch.isfinite(v).all() for v in losses.values()), losses
    model.eval()
    with torch.no_grad():
        return model.test_step(data)


@pytest.mark.parametrize('config', [
    'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'retinanet/retinanet_r50_fpn_1x_coco.py',
    'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py',
])
def test_mmdet_detector_train_step_and_predict(config):
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = _config('mmdet', config)
    cfg.model.backbone.init_cfg = None
    with_mask = 'mask' in config
    if 'roi_head' in cfg.model:
        for rcnn in _as_list(cfg.model.train_cfg.rcnn):
            rcnn.sampler.num = 32
        cfg.model.train_cfg.rpn_proposal.max_per_img = 100
        cfg.model.test_cfg.rpn.max_per_img = 50
        # random heads score ~1/81: a zero threshold lets detections reach the mask head
        cfg.model.test_cfg.rcnn.update(score_thr=0.0, max_per_img=5)
    else:
        cfg.model.test_cfg.update(score_thr=0.0, max_per_img=5)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)

    gen = torch.Generator().manual_seed(0)
    samples = []
    for boxes in ([[4., 6, 40, 50], [50, 10, 90, 60]], [[10., 20, 30, 60]]):
        s = DetDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W),
                                        scale_factor=(1.0, 1.0)))
        gt = InstanceData(bboxes=torch.tensor(boxes), labels=torch.tensor([3, 7][:len(boxes)]))
        if with_mask:
            masks = np.zeros((len(boxes), H, W), np.uint8)
            for m, (x1, y1, x2, y2) in zip(masks, boxes):
                m[int(y1):int(y2), int(x1):int(x2)] = 1
            gt.masks = BitmapMasks(masks, H, W)
        s.gt_instances = gt
        samples.append(s)
    results = _step_then_predict(model, dict(inputs=_images(gen), data_samples=samples))

    assert len(results) == 2
    for r in results:
        pred = r.pred_instances
        assert len(pred) > 0 and pred.bboxes.shape[1] == 4
        if with_mask:
            assert pred.masks.shape == (len(pred), H, W)


def test_mmseg_upernet_train_step_and_predict():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = _config('mmseg', 'upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py')
    cfg.model.pretrained = None
    cfg.model.data_preprocessor.size = (H, W)  # the config pads to its 512x1024 crop
    for part in ('backbone', 'decode_head', 'auxiliary_head'):  # SyncBN needs a process group
        cfg.model[part].norm_cfg = dict(type='BN', requires_grad=True)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)

    gen = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(H, W), ori_shape=(H, W), pad_shape=(H, W)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, H, W), generator=gen))
        samples.append(s)
    results = _step_then_predict(model, dict(inputs=_images(gen), data_samples=samples))

    assert [r.pred_sem_seg.data.shape for r in results] == [(1, H, W)] * 2
