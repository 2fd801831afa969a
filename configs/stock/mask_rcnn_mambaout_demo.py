# configs/demo/mask_rcnn_mambaout_demo.py with mmdet's stock components (see
# ./mask_rcnn_mambaout_t_1x_coco.py).
_base_ = ['../demo/mask_rcnn_mambaout_demo.py', '../_base_/stock/mask_rcnn.py']
model = {{_base_.stock_model}}
optim_wrapper = {{_base_.stock_optim_wrapper}}
custom_hooks = []
