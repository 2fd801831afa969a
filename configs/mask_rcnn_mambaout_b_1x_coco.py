# Mask R-CNN + FPN, MambaOut-Base backbone, COCO 2017 1x: the MambaOut-Tiny recipe
# (configs/mask_rcnn_mambaout_t_1x_coco.py) with the base arch and drop path 0.6.
# Paper (Table 2): base box/mask AP as in README.
_base_ = './mask_rcnn_mambaout_t_1x_coco.py'
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_base.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512, 768]))
