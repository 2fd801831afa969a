# Mask R-CNN + FPN, MambaOut-Small backbone, COCO 2017 1x: the MambaOut-Tiny recipe
# (configs/mask_rcnn_mambaout_t_1x_coco.py) with the small arch and drop path 0.4.
# Paper (Table 2): small box/mask AP as in README.
_base_ = './mask_rcnn_mambaout_t_1x_coco.py'
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_small.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 576]))
