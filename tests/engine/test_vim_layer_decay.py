"""VimLayerDecayOptimWrapperConstructor: which lr and weight decay each parameter gets."""
from pathlib import Path

import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import mmmambaout  # noqa: F401  (registers the constructor and Vim)
from mmmambaout.engine.vim_layer_decay import vim_layer_id
from mmmambaout.models.backbones.vim import Vim

REPO = Path(__file__).resolve().parents[2]
LR, WD, RATE = 1e-3, 0.05, 0.5


class _Model(nn.Module):

    def __init__(self, **kwargs):
        super().__init__()
        self.backbone = Vim(dict(embed_dims=32, depth=4), out_indices=(0, 1, 2, 3), **kwargs)
        self.decode_head = nn.Linear(32, 3)


def _groups_by_name(model, optim_wrapper):
    by_param = {id(p): g for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    return {n: by_param.get(id(p)) for n, p in model.named_parameters()}


def _expected_layer(name):
    if name.startswith(('backbone.patch_embed.', 'backbone.cls_token', 'backbone.pos_embed')):
        return 0
    if name.startswith('backbone.layers.'):
        return int(name.split('.')[2]) + 1
    return 5  # pyramid, output norms, heads: depth + 1


def _build(model, **paramwise):
    cfg = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
               constructor='VimLayerDecayOptimWrapperConstructor',
               paramwise_cfg=dict(layer_decay_rate=RATE, **paramwise))
    return build_optim_wrapper(model, cfg)


def test_lr_per_layer_and_decay_rules_compose():
    model = _Model()
    groups = _groups_by_name(model, _build(model, custom_keys={
        'pos_embed': dict(decay_mult=0.), 'norm': dict(decay_mult=0.),
        'A_log': dict(decay_mult=0.), 'decode_head': dict(lr_mult=10.)}))
    for name, group in groups.items():
        layer = _expected_layer(name)
        assert group['layer_id'] == layer, name
        lr_mult = 10. if name.startswith('decode_head') else 1.
        assert group['lr'] == pytest.approx(LR * lr_mult * RATE**(5 - layer)), name
        no_decay = any(k in name for k in ('pos_embed', 'norm', 'A_log'))
        assert group['weight_decay'] == (0. if no_decay else WD), name
    # spot checks of the mapping on Vim's real names
    assert groups['backbone.patch_embed.proj.weight']['lr'] == pytest.approx(LR * RATE**5)
    assert groups['backbone.layers.0.mixer.A_b_log']['lr'] == pytest.approx(LR * RATE**4)
    assert groups['backbone.layers.3.mixer.out_proj.weight']['lr'] == pytest.approx(LR * RATE)
    assert groups['backbone.out_norms.0.weight']['lr'] == pytest.approx(LR)


def test_frozen_parameters_left_out():
    model = _Model(frozen_stages=1)
    groups = _groups_by_name(model, _build(model))
    assert groups['backbone.pos_embed'] is None
    assert groups['backbone.layers.0.mixer.D'] is None
    assert groups['backbone.layers.1.mixer.D']['lr'] == pytest.approx(LR * RATE**3)


def test_layer_ids_with_wrappers():
    assert vim_layer_id('module.backbone.layers.3.mixer.D', 24) == 4
    assert vim_layer_id('backbone.cls_token', 24) == 0
    assert vim_layer_id('layers.7.norm.weight', 24) == 8          # a bare Vim
    assert vim_layer_id('neck.layers.0.conv.weight', 24) == 25      # not the backbone's
    assert vim_layer_id('backbone.blocks.0.attn.qkv.weight', 24) == 25


def test_rate_one_changes_nothing_and_validation():
    model = _Model()
    ow = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR, weight_decay=WD),
        constructor='VimLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=1.0)))
    assert {g['lr'] for g in ow.optimizer.param_groups} == {LR}
    for bad, match in ((dict(), 'layer_decay_rate'), (dict(layer_decay_rate=0.), r'\(0, 1\]')):
        with pytest.raises(ValueError, match=match):
            build_optim_wrapper(model, dict(
                type='OptimWrapper', optimizer=dict(type='AdamW', lr=LR),
                constructor='VimLayerDecayOptimWrapperConstructor', paramwise_cfg=bad))


def test_switched_on_in_a_real_config():
    """The documented --cfg-options switch on the UperNet config: the config's no-decay
    list still applies, num_layers is read from the model."""
    cfg = Config.fromfile(str(REPO / 'configs/upernet_vim_t_160k_ade20k.py'))
    cfg.merge_from_dict({'optim_wrapper.constructor': 'VimLayerDecayOptimWrapperConstructor',
                         'optim_wrapper.paramwise_cfg.layer_decay_rate': 0.9})
    ow_cfg = cfg.optim_wrapper.to_dict()
    ow_cfg.update(type='OptimWrapper')          # AmpOptimWrapper wants CUDA
    ow_cfg.pop('loss_scale')
    model = _Model()
    groups = _groups_by_name(model, build_optim_wrapper(model, ow_cfg))
    base_lr = ow_cfg['optimizer']['lr']
    assert groups['backbone.layers.2.mixer.in_proj.weight']['lr'] == pytest.approx(
        base_lr * 0.9**2)
    for name in ('backbone.pos_embed', 'backbone.cls_token', 'backbone.layers.1.mixer.D_b',
                 'backbone.layers.1.mixer.A_log', 'backbone.layers.1.norm.weight'):
        assert groups[name]['weight_decay'] == 0., name
    assert groups['backbone.layers.1.mixer.x_proj_b.weight']['weight_decay'] == 0.01
