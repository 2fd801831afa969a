# MambaOut-Tiny, ImageNet-1k evaluation of the official release (82.7 top-1 in the paper).
#   python tools/test.py configs/mambaout_t_in1k.py <official .pth, or omit to use load_from>
# Eval preprocessing as the official / timm default_cfg: crop_pct 1.0, bicubic,
# resize the shorter side to int(224 / crop_pct) = 224, center crop 224, ImageNet mean/std.
# `load_from` may point at the official release URL directly: mmmambaout registers a
# checkpoint loader for it that converts the official keys to this model's on the fly.
_base_ = './_base_/imagenet_eval.py'

arch = 'tiny'

model = dict(
    type='ImageClassifier',
    # classification: last stage only, no dense output norm (the head normalises
    # after pooling, as the official model does)
    backbone=dict(type='MambaOut', arch=arch, out_indices=(3, ), norm_out=False,
                  drop_path_rate=0.2),
    neck=None,
    head=dict(
        type='MambaOutClsHead',
        num_classes=1000,
        in_channels=576,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
load_from = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_tiny.pth'
