# Mask R-CNN + FPN, MambaOut-Tiny with Mamba blocks (bidirectional selective scan after the
# 7x7 conv) in all four stages: the MambaOut skeleton turned back into a Mamba model, the
# other end of the ablation (see ./mask_rcnn_mambaout_t_hybrid_1x_coco.py).
_base_ = './mask_rcnn_mambaout_t_1x_coco.py'
model = dict(backbone=dict(token_mixers=('bi_ssm', ) * 4))
