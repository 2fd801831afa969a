# The stock setup in place of the [speed] settings of our UperNet configs, an eager
# MambaOut and the composite token mixer: the baseline for side-by-side comparisons.
# Used by the configs in configs/stock/ (see ./mask_rcnn.py).
stock_model = dict(backbone=dict(fused_mixer=False))
stock_optim_wrapper = dict(constructor='DefaultOptimWrapperConstructor')
