# UperNet + auxiliary FCN head, Vim-Tiny backbone (middle class token, ImageNet-1k
# weights), ADE20K 512x512 crops, 160k iterations, batch 16 = 8 GPUs x 2, AdamW lr 1e-4
# wd 0.01, CUDA AMP, slide inference: the schedule, optimizer and runtime of the MambaOut
# UperNet configs. Head width = embed dims as upstream (the paper's 13M / 46M models;
# paper mIoU 41.0 / 44.9 with its own recipe: lr 6e-5, see configs/metafiles/vim.yml).
# The position embedding is resized once from 14x14 to 32x32 (512 crops) when the weights
# load, with the middle class-token slot kept apart.
#
# Layer-wise lr decay (off here; upstream's segmentation recipe uses 0.92):
#   --cfg-options optim_wrapper.inner_constructor=VimLayerDecayOptimWrapperConstructor \
#                 optim_wrapper.paramwise_cfg.layer_decay_rate=0.92
_base_ = './upernet_mambaout_t_160k_ade20k.py'  # its schedule, runtime and [speed] components
arch = 'tiny'
embed_dims = 192
pretrained = 'vim_tiny_midclstok_in1k'  # zoo name (configs/metafiles/vim.yml), or a path / URL
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=arch,
        img_size=512,
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[embed_dims] * 4, channels=embed_dims),
    auxiliary_head=dict(in_channels=embed_dims),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
# No weight decay on the position embedding, the class token, norms (base config), biases
# (base config) and the SSM parameters A_log / A_b_log / D / D_b, as upstream intends
# (mamba_ssm marks A_log and D `_no_weight_decay`).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'pos_embed': dict(decay_mult=0.),
        'cls_token': dict(decay_mult=0.),
        'A_log': dict(decay_mult=0.),
        'A_b_log': dict(decay_mult=0.),
        'mixer.D': dict(decay_mult=0.),  # D and D_b
    }))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
# MambaOutCompileHook acts on MambaOut backbones only
custom_hooks = []
