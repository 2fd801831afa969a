# Demo: UperNet + Vim-Tiny (from scratch) on the generated ADE20K-layout scenes: the
# MambaOut demo (./upernet_mambaout_demo.py) with the backbone replaced, for the
# equal-budget ablation (tools/analysis/ablation_demo.py).
_base_ = './upernet_mambaout_demo.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch='tiny',
        img_size=160,
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.0,
        init_cfg=None),
    decode_head=dict(in_channels=[192] * 4),
    auxiliary_head=dict(in_channels=192))
custom_hooks = []  # MambaOutCompileHook acts on MambaOut backbones only
