# MambaOut-Kobe, ImageNet-1k evaluation of the official release (80.0 top-1 in the paper).
_base_ = './mambaout_t_in1k.py'

model = dict(
    backbone=dict(arch='kobe', drop_path_rate=0.025),
    head=dict(in_channels=288))
load_from = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_kobe.pth'
