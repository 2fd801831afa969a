# Demo: UperNet + MambaOut on the generated ADE20K-layout scenes (tools/misc/make_demo_data.py),
# small enough to train and evaluate on a laptop CPU in minutes. Inherits the real ADE20K
# config and changes only what a CPU demo must: data, image scale, schedule, arch width,
# no pretrained download.
_base_ = '../upernet_mambaout_t_160k_ade20k.py'

data_root = 'data/demo/ade/ADEChallengeData2016'
metainfo = dict(  # = mmmambaout.datasets.demo_data.DEMO_ADE_METAINFO (a test keeps them equal)
    classes=('wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road'),
    palette=[[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3],
             [120, 120, 80], [140, 140, 140]])
num_classes = 7
crop_size = (160, 160)
image_scale = (256, 256)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='femto', drop_path_rate=0.0, init_cfg=None),
    # 128 instead of 512 channels in the heads: the PPM and FPN convs dominate on a CPU
    decode_head=dict(in_channels=[48, 96, 192, 288], channels=128, num_classes=num_classes),
    auxiliary_head=dict(in_channels=192, channels=64, num_classes=num_classes),
    test_cfg=dict(_delete_=True, mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),  # the dataset's reduce_zero_label maps 0 to ignore
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 300
# no validation while training: tools/run_demo.sh evaluates the final checkpoint with tools/test.py
train_cfg = dict(max_iters=max_iters, val_begin=max_iters + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=30, end=max_iters, by_epoch=False),
]
# fp32 (a CPU demo; the base trains with CUDA mixed precision); from scratch, a short
# schedule needs a larger step than fine-tuning from ImageNet; foreach: one step over all
# parameters of a group (PyTorch's default on the CPU loops over them: ~15x slower here)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='MergedParamGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, foreach=True),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=100, max_keep_ckpts=2))  # every 100 iterations, the last two kept
