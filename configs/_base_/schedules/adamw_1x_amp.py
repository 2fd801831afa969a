# COCO 1x as in the MambaOut paper (built on mmdet's Swin-T Mask R-CNN recipe):
# AdamW lr 1e-4 wd 0.05, no decay on norms and biases, linear warm-up for 1000
# iterations, steps at epochs 8 and 11, CUDA mixed precision with dynamic loss scale,
# total batch 16 (8 GPUs x 2 images).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
auto_scale_lr = dict(enable=False, base_batch_size=16)
