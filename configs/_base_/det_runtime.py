_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)
# checkpoints are written atomically, so a killed run can always --resume
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1))
