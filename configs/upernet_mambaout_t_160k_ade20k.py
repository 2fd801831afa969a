# UperNet + auxiliary FCN head, MambaOut-Tiny backbone, ADE20K 512x512 crops, 160k
# iterations, batch 16 = 8 GPUs x 2, AdamW lr 1e-4, CUDA AMP, slide inference.
#
# Settings marked [speed] keep the math (docs/training_speed.md); configs/stock/ has this
# config without them, for side-by-side comparisons.
_base_ = [
    './_base_/models/upernet_mambaout.py',
    'mmseg::_base_/datasets/ade20k.py',
    './_base_/schedules/adamw_160k_amp.py',
    './_base_/seg_runtime.py',
]
pretrained = 'https://github.com/yuweihao/MambaOut/releases/download/model/mambaout_tiny.pth'
model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 576]),
    auxiliary_head=dict(in_channels=384),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
# [speed] one param group per distinct setting (one optimizer step, not ~200); with the
# parameters on CUDA, PyTorch's fused AdamW step unless the optimizer sets fused / foreach
optim_wrapper = dict(constructor='MergedParamGroupsOptimWrapperConstructor')
# [speed] on a GPU with Triton, compile MambaOut's stages (without CUDA graphs: with them
# UperNet reserved as much memory as Swin-T); a backbone whose compile_stages is set
# keeps that setting
custom_hooks = [dict(type='MambaOutCompileHook', cuda_graphs=False, memory_budget=0.5)]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
