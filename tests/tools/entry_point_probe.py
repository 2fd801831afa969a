"""A hook for tests/tools/test_openmmlab_entry_points.py: which model and optimizer did the
training entry point build? Imported by the test's config (``custom_imports``), so it is
registered in the training process whichever tool starts it.

Before training it writes ``<work_dir>/entry_point_probe.json``: the runner's class, every
module's class by name, the optim wrapper's and optimizer's classes, and per param group
its lr, weight decay and parameter count.
"""
import json
import os.path as osp

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

PROBE_FILE = 'entry_point_probe.json'


def _class_name(obj):
    return f'{type(obj).__module__}.{type(obj).__qualname__}'


@HOOKS.register_module()
class EntryPointProbeHook(Hook):
    priority = 'LOWEST'

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        wrapper = runner.optim_wrapper
        groups = [
            dict(lr=group['lr'], initial_lr=group.get('initial_lr'),
                 weight_decay=group.get('weight_decay'), num_tensors=len(group['params']),
                 num_elements=sum(p.numel() for p in group['params']))
            for group in wrapper.optimizer.param_groups
        ]
        probe = dict(
            runner=_class_name(runner),
            modules={name: _class_name(module) for name, module in model.named_modules()},
            num_parameters=sum(p.numel() for p in model.parameters()),
            optim_wrapper=_class_name(wrapper),
            optimizer=_class_name(wrapper.optimizer),
            param_groups=groups,
        )
        with open(osp.join(runner.work_dir, PROBE_FILE), 'w') as f:
            json.dump(probe, f, indent=1)
