_base_ = 'mmseg::_base_/default_runtime.py'
custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)
# the environment report and the config go to the log file only, not to the terminal
runner_type = 'LogFileConfigRunner'
# (mmseg keeps default_hooks in its schedules: the checkpoint and preemption hooks are in
# ./schedules/adamw_160k_amp.py)
# TensorBoard event files next to the json logs, in <work_dir>/<timestamp>/vis_data (needs
# the tensorboard package): uncomment these two lines, or put them in a config that
# inherits this one. (--cfg-options cannot do it: it cannot parse dict(...) in a list.)
# vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
# visualizer = dict(vis_backends=vis_backends)
