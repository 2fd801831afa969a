# Demo: Mask R-CNN + Vim-Tiny (from scratch) on the generated shapes dataset: the
# MambaOut demo (./mask_rcnn_mambaout_demo.py) with the backbone replaced, for the
# equal-budget ablation (tools/analysis/ablation_demo.py). Vim-T has about the parameters
# of MambaOut-F (7.1 M against 7.3 M with their classifier heads).
_base_ = './mask_rcnn_mambaout_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch='tiny',
        img_size=256,
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.0,
        init_cfg=None),
    neck=dict(in_channels=[192] * 4))
custom_hooks = []  # MambaOutCompileHook acts on MambaOut backbones only
