# UperNet + auxiliary FCN head, MambaOut-Small backbone, ADE20K 512x512 crops, 160k
# iterations, batch 16 = 8 GPUs x 2, AdamW lr 1e-4, CUDA AMP, slide inference.
_base_ = [
    './_base_/models/upernet_mambaout.py',
    'mmseg::_base_/datasets/ade20k.py',
    './_base_/schedules/adamw_160k_amp.py',
    './_base_/seg_runtime.py',
]
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_small.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 576]),
    auxiliary_head=dict(in_channels=384),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
