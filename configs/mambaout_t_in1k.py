# MambaOut-Tiny, ImageNet-1k evaluation of the official release (82.7 top-1 in the paper).
#   python tools/test.py configs/mambaout_t_in1k.py <official .pth, or omit to use load_from>
# Eval preprocessing as the official / timm default_cfg: crop_pct 1.0, bicubic,
# resize the shorter side to int(224 / crop_pct) = 224, center crop 224, ImageNet mean/std.
# `load_from` may point at the official release URL directly: mmmambaout registers a
# checkpoint loader for it that converts the official keys to this model's on the fly.
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)

arch = 'tiny'
crop_pct = 1.0
img_size = 224

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

data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(img_size / crop_pct), edge='short',
         backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
val_dataloader = dict(
    batch_size=64,
    num_workers=5,
    dataset=dict(type='ImageNet', data_root='data/imagenet', split='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
val_cfg = dict()
test_dataloader = val_dataloader
test_evaluator = val_evaluator
test_cfg = dict()

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
resume = False
randomness = dict(seed=None, deterministic=False)
