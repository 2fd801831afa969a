# Demo: Mask R-CNN + MambaOut on the generated shapes dataset (tools/misc/make_demo_data.py),
# small enough to train and evaluate on a laptop CPU in minutes. Inherits the real COCO
# config and changes only what a CPU demo must: data, image scale, schedule, arch width,
# no pretrained download.
_base_ = '../mask_rcnn_mambaout_t_1x_coco.py'

data_root = 'data/demo/coco/'
metainfo = dict(  # = mmmambaout.datasets.demo_data.DEMO_METAINFO (a test keeps them equal)
    classes=('disc', 'square', 'triangle', 'ring', 'star', 'cross'),
    palette=[(220, 20, 60), (0, 80, 230), (250, 170, 30), (0, 160, 80), (160, 60, 220),
             (0, 200, 220)])
num_classes = 6
image_scale = (192, 192)  # the images are 160 to 256 pixels a side

# Narrower neck and heads (128 instead of 256 channels; the mask head's convolutions 64),
# fewer sampled RoIs (32 instead of 512 an image: a few shapes each) and training
# proposals: the mask head over 512 RoIs of 256 channels alone would cost seconds per
# step on two CPU cores. (At 224 px, 64-channel mask convs and 48 RoIs: bbox mAP 0.342 in
# 20% more time; at 224 px, 256-channel mask convs and 64 RoIs: 0.351 in 45% more.)
width = 128
model = dict(
    backbone=dict(arch='femto', drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[48, 96, 192, 288], out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=512, num_classes=num_classes),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=64, num_classes=num_classes)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=500),
                   rcnn=dict(sampler=dict(num=32))))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_epochs = 4
# no validation while training: tools/run_demo.sh evaluates the final checkpoint with tools/test.py
train_cfg = dict(max_epochs=max_epochs, val_begin=max_epochs + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[3], gamma=0.1),
]
# fp32 (a CPU demo; the base trains with CUDA mixed precision); from scratch, a short
# schedule needs a larger step than fine-tuning from ImageNet; foreach: one step over all
# parameters of a group (PyTorch's default on the CPU loops over them: ~15x slower here)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    constructor='MergedParamGroupsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, foreach=True),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
# one seed: the demo's numbers are the same run after run (on the same machine)
randomness = dict(seed=0)
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2))  # every epoch, the last two kept
