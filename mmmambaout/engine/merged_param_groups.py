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
goes from ~210 groups to 3.

The optimizer state in a checkpoint follows the groups. A checkpoint written with one
group per parameter (mmengine's own constructor, a stock config, or an earlier
mmmambaout) still resumes here: its state is mapped onto the merged groups when loaded.
The other way round, resuming a merged checkpoint without the merge, is mmengine's own
path and fails on the group count: resume with the setting that wrote it.

Use::

    optim_wrapper = dict(
        constructor='MergedParamGroupsOptimWrapperConstructor',
        inner_constructor='VimLayerDecayOptimWrapperConstructor',   # optional
        optimizer=dict(type='AdamW', lr=1e-4), paramwise_cfg=dict(norm_decay_mult=0.))
"""
import functools
from typing import Optional

import torch
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

DEFAULT_INNER = 'DefaultOptimWrapperConstructor'
FUSED_OPTIMIZERS = ('Adam', 'AdamW', 'SGD')


def _setting_key(group: dict):
    """Hashable description of a group's settings (everything but its parameters)."""
    return tuple(sorted((k, repr(v)) for k, v in group.items() if k != 'params'))


def merge_param_groups(optimizer: torch.optim.Optimizer) -> int:
    """Merge ``optimizer``'s param groups with equal settings, in place, keeping the order
    of first appearance of groups and of parameters; return the number of groups left.

    For a fresh optimizer. State dicts in the layout from before the merge are converted
    when loaded (:func:`_state_dict_to_merged`)."""
    unmerged = [list(group['params']) for group in optimizer.param_groups]
    merged = {}
    for group in optimizer.param_groups:
        key = _setting_key(group)
        if key in merged:
            merged[key]['params'].extend(group['params'])
        else:
            merged[key] = dict(group, params=list(group['params']))
    if len(merged) < len(unmerged):
        optimizer.param_groups[:] = list(merged.values())
        optimizer.register_load_state_dict_pre_hook(
            functools.partial(_state_dict_to_merged, unmerged=unmerged))
    return len(optimizer.param_groups)


def _state_dict_to_merged(optimizer, state_dict, unmerged):
    """An optimizer state dict laid out as ``unmerged`` (the groups before the merge),
    rewritten for ``optimizer``'s merged groups; any other state dict is returned as is
    (PyTorch then checks it)."""
    groups = state_dict['param_groups']
    if (len(groups) == len(optimizer.param_groups) or len(groups) != len(unmerged)
            or any(len(g['params']) != len(u) for g, u in zip(groups, unmerged))):
        return state_dict
    source = {}   # parameter -> (its id in the loaded state, its loaded group)
    for group, params in zip(groups, unmerged):
        for loaded_id, param in zip(group['params'], params):
            source[param] = (loaded_id, group)
    state, new_groups, new_id = {}, [], 0
    for group in optimizer.param_groups:
        settings = [_setting_key(source[p][1]) for p in group['params']]
        if len(set(settings)) > 1:
            raise ValueError(
                'cannot resume this optimizer state with merged param groups: parameters '
                'that share one group now had different settings in the checkpoint; resume '
                'without MergedParamGroupsOptimWrapperConstructor')
        ids = []
        for param in group['params']:
            loaded_id = source[param][0]
            if loaded_id in state_dict['state']:
                state[new_id] = state_dict['state'][loaded_id]
            ids.append(new_id)
            new_id += 1
        new_groups.append(dict(source[group['params'][0]][1], params=ids))
    return dict(state_dict, state=state, param_groups=new_groups)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedParamGroupsOptimWrapperConstructor:
    """Build with ``optim_wrapper.inner_constructor`` (default mmengine's
    ``DefaultOptimWrapperConstructor``), then :func:`merge_param_groups`.

    When the model's parameters are on CUDA, Adam, AdamW and SGD get PyTorch's fused
    step (one kernel for all parameters of a group; it also lets the AMP loss scaler skip
    its host-side inf check) unless the optimizer config sets ``fused`` or ``foreach``
    itself. On the CPU the optimizer is built as configured.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        optim_wrapper_cfg = dict(optim_wrapper_cfg)
        inner = optim_wrapper_cfg.pop('inner_constructor', DEFAULT_INNER)
        if inner == type(self).__name__:
            raise ValueError(f'inner_constructor cannot be {inner} itself')
        self.inner = OPTIM_WRAPPER_CONSTRUCTORS.build(
            dict(type=inner, optim_wrapper_cfg=optim_wrapper_cfg, paramwise_cfg=paramwise_cfg))

    def __call__(self, model):
        optimizer_cfg = getattr(self.inner, 'optimizer_cfg', None) or {}
        if (optimizer_cfg.get('type') in FUSED_OPTIMIZERS and 'fused' not in optimizer_cfg
                and 'foreach' not in optimizer_cfg
                and any(p.is_cuda for p in model.parameters())):
            self.inner.optimizer_cfg = dict(optimizer_cfg, fused=True)
        optim_wrapper = self.inner(model)
        merge_param_groups(optim_wrapper.optimizer)
        return optim_wrapper
