"""Stochastic depth, shared by MambaOut's Gated CNN blocks and Vim's blocks."""
import torch.nn as nn


def drop_path(x, drop_prob: float, training: bool):
    """Stochastic depth per sample (the residual branch is dropped for whole samples)."""
    if drop_prob == 0. or not training:
        return x
    keep = 1. - drop_prob
    mask = x.new_empty((x.shape[0], ) + (1, ) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):

    def __init__(self, drop_prob: float = 0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f'drop_prob={self.drop_prob:.3f}'
