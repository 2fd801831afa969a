# configs/demo/upernet_mambaout_demo.py without the [speed] settings, with an eager
# MambaOut and the composite token mixer (same model, same math): the baseline for
# side-by-side comparisons.
_base_ = ['../demo/upernet_mambaout_demo.py', '../_base_/stock/upernet.py']
model = {{_base_.stock_model}}
optim_wrapper = {{_base_.stock_optim_wrapper}}
custom_hooks = []
