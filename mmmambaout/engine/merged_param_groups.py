"""One optimizer param group per distinct setting instead of one per parameter.

With a ``paramwise_cfg`` (our configs: no weight decay on norms and biases), mmengine's
constructors give every parameter its own param group: about 210 groups for Mask R-CNN
MambaOut-T. PyTorch's optimizers loop over groups in Python, so a fused or foreach
AdamW step becomes some 210 small steps, each with its own launches: the host-side cost
of the optimizer step grows with the number of parameters instead of staying constant.

:class:`MergedParamGroupsOptimWrapperConstructor` builds the optimizer wrapper with any
other constructor (``inner_constructor``, mmengine's default if unset), then merges the
groups whose settings (lr, weight decay, betas, every key except ``params``) are equal.
Each parameter keeps exactly the hyper-parameters it had, and a param scheduler scales
every group's lr by the same factor, so the update is the same; Mask R-CNN MambaOut-T
goes from ~210 groups to 2.

The optimizer state in a checkpoint follows the groups, so resume with the same setting
that wrote it (``train_speedups`` on or off on both sides).

Use::

    optim_wrapper = dict(
        constructor='MergedParamGroupsOptimWrapperConstructor',
        inner_constructor='VimLayerDecayOptimWrapperConstructor',   # optional
        optimizer=dict(type='AdamW', lr=1e-4), paramwise_cfg=dict(norm_decay_mult=0.))
"""
from typing import Optional

import torch
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

DEFAULT_INNER = 'DefaultOptimWrapperConstructor'


def _setting_key(group: dict):
    """Hashable description of a group's settings (everything but its parameters)."""
    return tuple(sorted((k, repr(v)) for k, v in group.items() if k != 'params'))


def merge_param_groups(optimizer: torch.optim.Optimizer) -> int:
    """Merge ``optimizer``'s param groups with equal settings, in place, keeping the order
    of first appearance of groups and of parameters; return the number of groups left.

    Only for a fresh optimizer: per-parameter state is keyed by the parameter and is
    kept, but a state dict saved before the merge no longer matches the groups."""
    merged = {}
    for group in optimizer.param_groups:
        key = _setting_key(group)
        if key in merged:
            merged[key]['params'].extend(group['params'])
        else:
            merged[key] = dict(group, params=list(group['params']))
    optimizer.param_groups[:] = list(merged.values())
    return len(optimizer.param_groups)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedParamGroupsOptimWrapperConstructor:
    """Build with ``optim_wrapper.inner_constructor`` (default mmengine's
    ``DefaultOptimWrapperConstructor``), then :func:`merge_param_groups`."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        inner = optim_wrapper_cfg.pop('inner_constructor', DEFAULT_INNER)
        if inner == type(self).__name__:
            raise ValueError(f'inner_constructor cannot be {inner} itself')
        self.inner = OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(type=inner, optim_wrapper_cfg=optim_wrapper_cfg, paramwise_cfg=paramwise_cfg))

    def __call__(self, model):
        optim_wrapper = self.inner(model)
        merge_param_groups(optim_wrapper.optimizer)
        return optim_wrapper
