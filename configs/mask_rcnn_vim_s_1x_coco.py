# Mask R-CNN + FPN, Vim-Small backbone (middle class token, ImageNet-1k weights), COCO 2017
# 1x: the Vim-Tiny recipe with the small arch.
_base_ = './mask_rcnn_vim_t_1x_coco.py'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint='vim_small_midclstok_in1k')),
    neck=dict(in_channels=[384] * 4))
