# UperNet + auxiliary FCN head, Vim-Small backbone (middle class token, ImageNet-1k
# weights), ADE20K 160k: the Vim-Tiny recipe with the small arch.
_base_ = './upernet_vim_t_160k_ade20k.py'
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint='vim_small_midclstok_in1k')),
    decode_head=dict(in_channels=[384] * 4, channels=384),
    auxiliary_head=dict(in_channels=384))
