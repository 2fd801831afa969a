# Mask R-CNN + FPN with a MambaOut backbone (mmdet's R-50 skeleton, backbone replaced).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MambaOut',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        with_cp=False,
        fused_mixer=True),  # the token mixer as one Triton op on CUDA (same math)
    neck=dict(in_channels=[96, 192, 384, 576]))
