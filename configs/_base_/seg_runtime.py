_base_ = 'mmseg::_base_/default_runtime.py'
custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)
# Speed-ups that keep the math (fused MambaOut token mixer, sync-free assigner / sampler,
# fused optimizer step), applied by our tools; train_speedups=False gives the stock path.
# See mmmambaout/engine/train_speedups.py and docs/training_speed.md.
train_speedups = True
