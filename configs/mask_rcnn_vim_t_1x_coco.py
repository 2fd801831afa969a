# Mask R-CNN + FPN, Vim-Tiny backbone (middle class token, ImageNet-1k weights), COCO 2017
# 1x (12 epochs), batch 16 = 8 GPUs x 2, AdamW lr 1e-4 wd 0.05, CUDA AMP: the schedule,
# optimizer and runtime of the MambaOut Mask R-CNN configs, for a like-for-like comparison.
# The backbone's four layers 5/11/17/23 (stride 16) become strides 4/8/16/32 (transposed
# convs / identity / max-pool, LayerNorm per output); the position embedding is stored at
# 14x14 (224) and interpolated to each input's grid. No Vim detection weights were released.
#
# Layer-wise lr decay (off here; upstream's segmentation recipe uses 0.92):
#   --cfg-options optim_wrapper.inner_constructor=VimLayerDecayOptimWrapperConstructor \
#                 optim_wrapper.paramwise_cfg.layer_decay_rate=0.92
_base_ = './mask_rcnn_mambaout_t_1x_coco.py'  # its schedule, runtime and [speed] components
arch = 'tiny'
embed_dims = 192
pretrained = 'vim_tiny_midclstok_in1k'  # zoo name (configs/metafiles/vim.yml), or a path / URL
model = dict(
    backbone=dict(
        _delete_=True,
        type='Vim',
        arch=arch,
        img_size=224,
        out_indices=(5, 11, 17, 23),
        drop_path_rate=0.1,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[embed_dims] * 4))
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
train_dataloader = dict(batch_size=2, num_workers=2)
# MambaOutCompileHook acts on MambaOut backbones only
custom_hooks = []
