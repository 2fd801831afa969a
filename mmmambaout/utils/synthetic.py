"""Synthetic inputs for whole-model checks and benchmarks (no dataset, no data loader).

Random images with random boxes and box-shaped masks (detection), a random label map
(segmentation) or a random label (classification), packed as each library's data samples
so they go through the model's own data preprocessor.
"""
import numpy as np
import torch


def det_batch(batch, size, objects, num_classes=80, seed=0):
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    rng = np.random.default_rng(seed)
    w, h = size
    inputs, samples = [], []
    for i in range(batch):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        xy = rng.uniform(0, 0.7, (objects, 2)) * [w, h]
        wh = rng.uniform(0.05, 0.3, (objects, 2)) * [w, h]
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w - 1, h - 1])], 1).astype(np.float32)
        masks = np.zeros((objects, h, w), np.uint8)
        for k, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            masks[k, y1:y2 + 1, x1:x2 + 1] = 1
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            scale_factor=(1.0, 1.0), flip=False))
        sample.gt_instances = InstanceData(
            bboxes=torch.from_numpy(boxes),
            labels=torch.from_numpy(rng.integers(0, num_classes, objects)),
            masks=BitmapMasks(masks, h, w))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def seg_batch(batch, size, num_classes, seed=0):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    rng = np.random.default_rng(seed)
    w, h = size
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.from_numpy(rng.integers(0, num_classes, (1, h, w))).long())
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def cls_batch(batch, size, num_classes, seed=0):
    from mmpretrain.structures import DataSample
    rng = np.random.default_rng(seed)
    w, h = size
    inputs = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
              for _ in range(batch)]
    samples = [DataSample().set_gt_label(int(rng.integers(num_classes))) for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def batch_for(cfg, batch, det_size, seg_size, cls_size=(224, 224), objects=8, seed=0):
    """A synthetic batch for the task of ``cfg`` (chosen by its default_scope)."""
    scope = cfg.default_scope
    if scope == 'mmdet':
        num_classes = cfg.model.roi_head.bbox_head.num_classes
        return det_batch(batch, det_size, objects, num_classes, seed)
    if scope == 'mmseg':
        return seg_batch(batch, seg_size, cfg.model.decode_head.num_classes, seed)
    return cls_batch(batch, cls_size, cfg.model.head.num_classes, seed)
