# MambaOut-Base, ImageNet-1k evaluation of the official release (84.2 top-1 in the paper).
_base_ = './mambaout_t_in1k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6),
    head=dict(in_channels=768))
load_from = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_base.pth'
