# UperNet + auxiliary FCN head with a MambaOut backbone (mmseg's Swin UperNet skeleton).
_base_ = 'mmseg::_base_/models/upernet_swin.py'
model = dict(
    data_preprocessor=dict(size=(512, 512)),
    backbone=dict(
        _delete_=True,
        type='MambaOut',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        with_cp=False,
        fused_mixer=True),  # the token mixer as one Triton op on CUDA (same math)
    decode_head=dict(in_channels=[96, 192, 384, 576], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
