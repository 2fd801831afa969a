"""Merging optimizer param groups: every parameter keeps its own settings, and training
steps are bitwise those of the one-group-per-parameter optimizer (CPU, fp32)."""
import copy

import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper
from mmengine.optim.scheduler import LinearLR

from mmmambaout.engine import merge_param_groups

PARAMWISE = dict(norm_decay_mult=0., bias_decay_mult=0.,
                 custom_keys={'head': dict(lr_mult=0.1)})


class Net(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.norm(self.conv(x).mean((2, 3)))
        return self.head(torch.relu(self.fc(x)))


def build(model, merged, constructor=None):
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, foreach=False),
               paramwise_cfg=copy.deepcopy(PARAMWISE))
    if merged:
        cfg['constructor'] = 'MergedParamGroupsOptimWrapperConstructor'
        if constructor:
            cfg['inner_constructor'] = constructor
    elif constructor:
        cfg['constructor'] = constructor
    return build_optim_wrapper(model, cfg)


def settings_by_param(optimizer):
    return {id(p): {k: v for k, v in g.items() if k != 'params'}
            for g in optimizer.param_groups for p in g['params']}


def test_groups_merge_and_settings_are_kept():
    model = Net()
    stock, merged = build(model, False), build(model, True)
    assert len(stock.optimizer.param_groups) == 8     # one per parameter
    # conv/fc weights (lr 1e-3, wd .05); norm, conv/fc biases (1e-3, 0); head weight and
    # bias (1e-4, .05: a custom key overrides mmengine's bias rule)
    assert len(merged.optimizer.param_groups) == 3
    assert settings_by_param(stock.optimizer) == settings_by_param(merged.optimizer)
    order = [id(p) for g in merged.optimizer.param_groups for p in g['params']]
    assert sorted(order) == sorted(id(p) for p in model.parameters())
    assert merge_param_groups(merged.optimizer) == 3   # idempotent


def test_training_steps_bitwise_equal_with_a_scheduler():
    torch.manual_seed(0)
    a = Net()
    b = copy.deepcopy(a)
    opt_a, opt_b = build(a, False), build(b, True)
    sched = [LinearLR(o.optimizer, start_factor=0.25, by_epoch=False, begin=0, end=3)
             for o in (opt_a, opt_b)]
    x = torch.randn(4, 3, 9, 9)
    for _ in range(4):
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.update_params(model(x).square().mean())
        for s in sched:
            s.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    lrs = sorted({g['lr'] for g in opt_b.optimizer.param_groups})
    assert lrs == sorted({g['lr'] for g in opt_a.optimizer.param_groups})


def test_wraps_another_constructor():
    from mmmambaout.models.backbones import Vim
    model = nn.Module()
    model.backbone = Vim(dict(embed_dims=32, depth=4), out_indices=(0, 1, 2, 3))
    kwargs = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
                  paramwise_cfg=dict(layer_decay_rate=0.5, norm_decay_mult=0.))
    stock = build_optim_wrapper(model, dict(kwargs, constructor='VimLayerDecayOptimWrapperConstructor'))
    merged = build_optim_wrapper(model, dict(
        kwargs, constructor='MergedParamGroupsOptimWrapperConstructor',
        inner_constructor='VimLayerDecayOptimWrapperConstructor'))
    assert settings_by_param(stock.optimizer) == settings_by_param(merged.optimizer)
    distinct = {(g['lr'], g['weight_decay']) for g in stock.optimizer.param_groups}
    assert len(merged.optimizer.param_groups) == len(distinct) < len(stock.optimizer.param_groups)


def test_cannot_wrap_itself():
    with pytest.raises(ValueError, match='inner_constructor cannot be'):
        build(Net(), True, constructor='MergedParamGroupsOptimWrapperConstructor')


def train(model, opt, x, steps):
    for _ in range(steps):
        opt.update_params(model(x).square().mean())


def test_resumes_a_checkpoint_with_one_group_per_parameter():
    torch.manual_seed(0)
    a = Net()
    x = torch.randn(4, 3, 9, 9)
    opt_a = build(a, False)
    sched_a = LinearLR(opt_a.optimizer, start_factor=0.25, by_epoch=False, begin=0, end=5)
    for _ in range(3):
        train(a, opt_a, x, 1)
        sched_a.step()
    b = copy.deepcopy(a)
    opt_b = build(b, True)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))     # what --resume does
    assert len(opt_b.optimizer.param_groups) == 3
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert (settings_by_param(opt_a.optimizer)[id(pa)]
                == settings_by_param(opt_b.optimizer)[id(pb)])
        assert all(torch.equal(u, v) for u, v in zip(opt_a.optimizer.state[pa].values(),
                                                      opt_b.optimizer.state[pb].values()))
    train(a, opt_a, x, 2)
    train(b, opt_b, x, 2)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    # a merged checkpoint loads as usual, and the optimizer still pickles
    opt_c = build(copy.deepcopy(b), True)
    opt_c.load_state_dict(opt_b.state_dict())
    import pickle
    pickle.dumps(opt_c.optimizer)


def test_checkpoint_that_cannot_be_merged_is_refused():
    model = Net()
    stock = build(model, False)
    state = stock.state_dict()
    state['param_groups'][0]['lr'] = 0.5    # conv.weight now differs from fc.weight
    merged = build(model, True)
    with pytest.raises(ValueError, match='without MergedParamGroupsOptimWrapperConstructor'):
        merged.load_state_dict(state)
