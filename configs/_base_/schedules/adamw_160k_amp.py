# ADE20K 160k as in the MambaOut paper (built on mmseg's Swin UperNet recipe): AdamW
# lr 1e-4 (the paper; Swin uses 6e-5) with Swin's weight decay 0.01, no decay on norms and
# biases, linear warm-up for 1500 iterations then poly decay, CUDA mixed precision, total
# batch 16 (8 GPUs x 2 images).
_base_ = 'mmseg::_base_/schedules/schedule_160k.py'
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0., bias_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# checkpoints are written atomically, so a killed run can always --resume; the best one by
# mIoU is kept too (best_mIoU_iter_N.pth), also written atomically
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=16000,
                    save_best='mIoU', rule='greater'),
    # SIGTERM (slurm's notice before preemption) saves a checkpoint at the next iteration
    # boundary and exits; --resume then continues at exactly that iteration
    preemption=dict(type='PreemptionCheckpointHook'))
