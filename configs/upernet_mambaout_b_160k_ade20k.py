# UperNet + auxiliary FCN head, MambaOut-Base backbone, ADE20K 160k: the MambaOut-Tiny
# recipe (configs/upernet_mambaout_t_160k_ade20k.py) with the base arch and drop path 0.6.
_base_ = './upernet_mambaout_t_160k_ade20k.py'
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_base.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[128, 256, 512, 768]),
    auxiliary_head=dict(in_channels=512))
