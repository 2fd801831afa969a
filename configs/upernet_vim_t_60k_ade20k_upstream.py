# UperNet + auxiliary FCN head, Vim-Tiny backbone, ADE20K 512x512 crops: the recipe of the
# Vim authors' released segmentation code, which the paper's Vim-Ti 41.0 mIoU is credited
# to (configs/metafiles/vim.yml says which text states what). Read from hustvl/Vim:
#   seg/configs/vim/upernet/upernet_vim_tiny_24_512_slide_60k.py  (60k iterations, AdamW
#     betas (0.9, 0.999), layer decay 0.92 over 24 layers, warm-up 1500 iterations from
#     1e-6 then poly decay with power 1.0 to 0, batch 8 per GPU, slide inference 341)
#   seg/scripts/ft_vim_tiny_upernet.sh  (4 GPUs per node; overrides lr 2e-4, wd 0.1)
#   seg/backbone/vim.py VisionMambaSeg  (features: each chosen layer's mixer output, no
#     class token; SyncBN between the stride-4 branch's transposed convs, no output norm)
# What stays ours (upernet_vim_t_160k_ade20k.py, docs): the class-token-aware
# position-embedding resize, CUDA AMP, the no-weight-decay list (upstream's own
# constructor decays A_log and pos_embed and spares only 1-D weights and biases), and
# layer decay as its rule says: upstream's LayerDecayOptimizerConstructor looks for
# `backbone.blocks.<i>`, which Vim does not have, so its run trained every layer at the
# full lr and only patch_embed / pos_embed at 0.92**25 (about 0.12x).
# 4 GPUs x 8 images = batch 32:
#   bash tools/dist_train.sh configs/upernet_vim_t_60k_ade20k_upstream.py 4
_base_ = './upernet_vim_t_160k_ade20k.py'
max_iters = 60000
model = dict(
    backbone=dict(with_cls_token=False, feature_source='mixer', pyramid_norm='SyncBN'))
optim_wrapper = dict(
    # MergedParamGroupsOptimWrapperConstructor (base config) builds with this one, then
    # merges the groups
    inner_constructor='VimLayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=2e-4, weight_decay=0.1),
    paramwise_cfg=dict(layer_decay_rate=0.92))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=max_iters, by_epoch=False),
]
# upstream validated every 1000 iterations and kept the best checkpoint by mIoU
train_cfg = dict(max_iters=max_iters, val_interval=6000)
default_hooks = dict(checkpoint=dict(interval=6000))
auto_scale_lr = dict(base_batch_size=32)
train_dataloader = dict(batch_size=8)
