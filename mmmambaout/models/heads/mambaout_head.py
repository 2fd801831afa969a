"""The official MambaOut classification head, as an mmpretrain ``ClsHead``."""
import logging
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS

from mmmambaout.checkpoint import load_converted_state_dict, load_mambaout_state_dict


@MODELS.register_module()
class MambaOutClsHead(ClsHead):
    """Global average pool -> LayerNorm -> Linear(C, 4C) -> GELU -> LayerNorm(4C) -> Linear.

    The final LayerNorm comes AFTER pooling (official design), so pair this head with
    ``MambaOut(out_indices=(3, ), norm_out=False)``: it takes the last NCHW map of the
    backbone's output tuple.

    Args:
        num_classes (int): number of classes.
        in_channels (int): channels of the last backbone stage.
        mlp_ratio (float): hidden width of the MLP as a multiple of ``in_channels``.
        init_cfg (dict, optional): defaults to the official init (truncated normal std
            0.02, zero bias). ``dict(type='Pretrained', checkpoint=...)`` loads the head
            from an official / timm / converted checkpoint, converting keys on the fly.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`ClsHead`.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 mlp_ratio: float = 4,
                 init_cfg: Optional[dict] = dict(
                     type='TruncNormal', layer='Linear', std=.02, bias=0.),
                 **kwargs):
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'num_classes={num_classes} must be a positive integer')
        self.num_classes = num_classes
        self.in_channels = in_channels
        hidden = int(mlp_ratio * in_channels)
        self.norm = nn.LayerNorm(in_channels, eps=1e-6)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.act = nn.GELU()
        self.hidden_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.fc2 = nn.Linear(hidden, num_classes)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        """Pooled, normalised features of the last stage, through the MLP's hidden layer."""
        x = feats[-1]
        if x.dim() != 4:
            raise ValueError(f'MambaOutClsHead expects an NCHW map, got shape {tuple(x.shape)}')
        x = self.norm(x.mean((2, 3)))
        return self.hidden_norm(self.act(self.fc1(x)))

    def forward(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.fc2(self.pre_logits(feats))

    def init_weights(self):
        if self.init_cfg is not None and self.init_cfg.get('type') == 'Pretrained':
            checkpoint = self.init_cfg.get('checkpoint')
            state_dict = load_mambaout_state_dict(checkpoint, prefix=self.init_cfg.get('prefix'))
            state_dict = {k[5:]: v for k, v in state_dict.items() if k.startswith('head.')}
            if not state_dict:
                print_log(f'MambaOutClsHead: no head weights in {checkpoint!r}; '
                          'the head keeps its random init', logger='current',
                          level=logging.WARNING)
                return
            load_converted_state_dict(self, state_dict, repr(checkpoint))
            return
        super().init_weights()
