# Mask R-CNN + FPN, MambaOut-Tiny with Mamba blocks (bidirectional selective scan after the
# 7x7 conv, Vim-style) in stages 0-2: the stages whose token count exceeds the paper's
# long-sequence threshold 6D at COCO's 800x1280 (L / tau = 111, 13.9, 1.74; stage 3: 0.29;
# tools/analysis/sequence_length.py). Everything else is the MambaOut-T recipe; the Gated
# CNN stage loads the official weights, the SSM parameters start from Mamba's init.
_base_ = './mask_rcnn_mambaout_t_1x_coco.py'
model = dict(backbone=dict(token_mixers=('bi_ssm', 'bi_ssm', 'bi_ssm', 'gated_cnn')))
