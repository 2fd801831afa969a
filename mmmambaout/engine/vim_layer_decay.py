"""Layer-wise learning-rate decay for Vim backbones, as an mmengine optim-wrapper
constructor.

Upstream's segmentation code (BEiT's ``LayerDecayOptimizerConstructor``) looks for
``backbone.blocks.<i>``, a name Vim does not have (its layers are ``backbone.layers.<i>``),
so every layer there trains at the full lr. This constructor matches Vim's names.

Use (off by default in our configs)::

    optim_wrapper = dict(
        constructor='VimLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.92))   # plus any of the usual options

Layer ids (BEiT convention, ``n`` = number of Vim layers, default read from the model's
``backbone.num_layers``, or ``paramwise_cfg.num_layers``):

* ``backbone.patch_embed.*``, ``backbone.cls_token``, ``backbone.pos_embed``: 0
* ``backbone.layers.<i>.*``: ``i + 1``
* everything else (pyramid, output norms, ``norm_f``, neck, heads): ``n + 1``

A parameter of layer id ``k`` gets ``lr * layer_decay_rate ** (n + 1 - k)`` (heads keep
the base lr). The decay multiplies whatever lr the standard mmengine rules give
(``custom_keys`` ``lr_mult``, ``bias_lr_mult``, ...); weight decay is left to those rules
(``decay_mult``, ``norm_decay_mult``, ...), so the configs' no-decay list still applies.
Names are matched after an optional ``module.`` (DDP) prefix; a bare Vim (no ``backbone.``)
is matched too.
"""
import re
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

_EMBED = re.compile(r'^(?:module\.)?(?:backbone\.)?(?:patch_embed\.|cls_token$|pos_embed$)')
_LAYER = re.compile(r'^(?:module\.)?(?:backbone\.)?layers\.(\d+)\.')


def vim_layer_id(name: str, num_layers: int) -> int:
    """Layer id of parameter ``name`` (see the module docstring)."""
    if _EMBED.match(name):
        return 0
    m = _LAYER.match(name)
    if m:
        return int(m.group(1)) + 1
    return num_layers + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class VimLayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor plus Vim layer-wise lr decay.

    ``paramwise_cfg`` takes, besides the usual keys, ``layer_decay_rate`` (required, in
    ``(0, 1]``) and ``num_layers`` (optional).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        if 'layer_decay_rate' not in paramwise_cfg:
            raise ValueError('VimLayerDecayOptimWrapperConstructor needs '
                             'paramwise_cfg.layer_decay_rate')
        self.layer_decay_rate = float(paramwise_cfg.pop('layer_decay_rate'))
        if not 0. < self.layer_decay_rate <= 1.:
            raise ValueError(f'layer_decay_rate must be in (0, 1], got {self.layer_decay_rate}')
        self.num_layers = paramwise_cfg.pop('num_layers', None)
        # a non-empty paramwise_cfg makes the base class build per-parameter groups
        paramwise_cfg.setdefault('custom_keys', {})
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def _infer_num_layers(self, module: nn.Module) -> int:
        if self.num_layers is not None:
            return int(self.num_layers)
        model = getattr(module, 'module', module)  # DDP
        for candidate in (getattr(model, 'backbone', None), model):
            n = getattr(candidate, 'num_layers', None)
            if isinstance(n, int):
                return n
        raise ValueError('cannot tell the number of Vim layers (no backbone.num_layers): '
                         'set paramwise_cfg.num_layers')

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module=None) -> None:
        first = len(params)
        super().add_params(params, module, prefix, is_dcn_module)
        if prefix:  # the base class recurses through self.add_params; scale once, at the top
            return
        num_layers = self._infer_num_layers(module)
        names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
        for group in params[first:]:
            (param, ) = group['params']
            layer_id = vim_layer_id(names[id(param)], num_layers)
            scale = self.layer_decay_rate**(num_layers + 1 - layer_id)
            group['lr'] = group.get('lr', self.base_lr) * scale
            group['layer_id'] = layer_id
        print_log(f'Vim layer-wise lr decay {self.layer_decay_rate} over {num_layers} layers: '
                  f'lr x{self.layer_decay_rate**(num_layers + 1):.3g} (embeddings) .. x1 '
                  f'(heads), {len(params) - first} parameters', logger='current')
