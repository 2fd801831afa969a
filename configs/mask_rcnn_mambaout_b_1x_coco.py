# Mask R-CNN + FPN, MambaOut-Base backbone, COCO 2017 1x (12 epochs), batch 16 = 8 GPUs x 2,
# AdamW lr 1e-4, CUDA AMP. Paper (Table 2): base box/mask AP as in README.
_base_ = [
    './_base_/models/mask_rcnn_mambaout_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/adamw_1x_amp.py',
    './_base_/det_runtime.py',
]
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_base.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 768]))
train_dataloader = dict(batch_size=2, num_workers=2)
