# Vim-Small (middle class token), ImageNet-1k evaluation of the released weights
# (80.5 top-1 reported by the authors; configs/metafiles/vim.yml).
#   python tools/test.py configs/vim_t_in1k.py <checkpoint, or omit to use load_from>
# Eval preprocessing as upstream (vim/datasets.py, eval_crop_ratio 0.875): resize the
# shorter side to int(224 / 0.875) = 256 (bicubic), center crop 224, ImageNet mean/std.
# `load_from` may point at the released Hugging Face URL directly: mmmambaout registers a
# checkpoint loader for it that maps the upstream keys to this model (head -> head.fc).
# The "+" weights (`*_ft_*`, 81.6) were fine-tuned with overlapping patches (stride 8):
#   --cfg-options model.backbone.patch_stride=8 load_from=<..._ft_78p3acc.pth URL>
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)

arch = 'small'
embed_dims = 384
img_size = 224
eval_crop_ratio = 0.875

model = dict(
    type='ImageClassifier',
    backbone=dict(type='Vim', arch=arch, img_size=img_size, out_type='cls_token',
                  drop_path_rate=0.0),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=embed_dims,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, 5)))
load_from = ('https://huggingface.co/hustvl/Vim-small-midclstok/resolve/main/'
             'vim_s_midclstok_80p5acc.pth')

data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=int(img_size / eval_crop_ratio), edge='short',
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
