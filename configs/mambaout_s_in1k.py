# MambaOut-Small, ImageNet-1k evaluation of the official release (84.1 top-1 in the paper).
_base_ = './mambaout_t_in1k.py'

model = dict(
    backbone=dict(arch='small', drop_path_rate=0.4),
    head=dict(in_channels=576))
load_from = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_small.pth'
