# configs/mask_rcnn_mambaout_t_1x_coco.py with mmdet's stock components in place of the
# [speed] ones, an eager MambaOut and the composite token mixer (same model, same math):
# the baseline for side-by-side comparisons.
_base_ = ['../mask_rcnn_mambaout_t_1x_coco.py', '../_base_/stock/mask_rcnn.py']
model = {{_base_.stock_model}}
optim_wrapper = {{_base_.stock_optim_wrapper}}
custom_hooks = []
