_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)
# the environment report and the config go to the log file only, not to the terminal
runner_type = 'LogFileConfigRunner'
default_hooks = dict(
    # checkpoints are written atomically, so a killed run can always --resume; the best
    # one by box mAP is kept too (best_coco_bbox_mAP_epoch_N.pth), also written atomically
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, save_best='coco/bbox_mAP',
                    rule='greater'),
    # SIGTERM (slurm's notice before preemption) saves a checkpoint at the next iteration
    # boundary and exits; --resume then continues at exactly that iteration
    preemption=dict(type='PreemptionCheckpointHook'))
# TensorBoard event files next to the json logs, in <work_dir>/<timestamp>/vis_data (needs
# the tensorboard package): uncomment these two lines, or put them in a config that
# inherits this one. (--cfg-options cannot do it: it cannot parse dict(...) in a list.)
# vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
# visualizer = dict(vis_backends=vis_backends)
