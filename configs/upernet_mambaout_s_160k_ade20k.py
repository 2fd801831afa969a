# UperNet + auxiliary FCN head, MambaOut-Small backbone, ADE20K 160k: the MambaOut-Tiny
# recipe (configs/upernet_mambaout_t_160k_ade20k.py) with the small arch and drop path 0.4.
_base_ = './upernet_mambaout_t_160k_ade20k.py'
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_small.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 576]),
    auxiliary_head=dict(in_channels=384))
