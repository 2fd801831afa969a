"""Vim (Vision Mamba): a bidirectional selective-state-space backbone for mmdet, mmseg
and mmpretrain.

Paper: `Vision Mamba: Efficient Visual Representation Learning with Bidirectional State
Space Model` (Zhu et al., arXiv 2401.09417). Facts follow hustvl/Vim
(``vim/models_mamba.py``, the bundled ``mamba-1p1p1`` fork's ``Mamba`` with
``bimamba_type='v2'`` and ``if_divide_out=True``); the released ``*_midclstok*`` weights
load unchanged (same parameter names). The selective scan is our own
:func:`mmmambaout.ops.selective_scan` (exact on CPU, Triton / mamba_ssm on CUDA), so the
model needs no CUDA extension.

Layout of this file, top to bottom: arch table, building blocks (RMSNorm, the Mamba
mixer, bidirectional or causal, the block, the stride-16 -> 4-scale pyramid),
position-embedding resizing with the middle class-token slot, the :class:`Vim` backbone.
Checkpoints are read in :mod:`mmmambaout.checkpoint`; what is Vim's own about loading them
(class-token position slot, what a mode does not build) stays here.

The block. Upstream writes a layer as "Add -> Norm -> Mixer": layer ``i`` receives the
previous mixer output ``h`` and the residual ``r``, computes ``r = r + drop_path(h)``,
``h = mixer(norm(r))``; the last add happens before ``norm_f``. Regrouped, the same
additions in the same order read ``r <- r + drop_path_i(mixer_i(norm_i(r)))`` per layer,
with ``r`` the (fp32) residual stream; that is how :class:`VimBlock` computes it (same
parameters, same numbers; the stream after layer ``i`` is what dense outputs read by
default).
Upstream drop-path rates: ``[0] + linspace(0, rate, depth)`` applied to the *incoming*
mixer output, and ``rate`` before ``norm_f``: i.e. the output of layer ``i`` is dropped
with probability ``linspace(0, rate, depth)[i]``, which is what we do.

State-dict layout (identical to upstream)::

    patch_embed.proj.{weight,bias}   cls_token   pos_embed  (1, h0*w0 + 1, D), class-token
                                                             slot at index h0*w0 // 2
    layers.{i}.norm.weight
    layers.{i}.mixer.{in_proj.weight, conv1d.{weight,bias}, x_proj.weight,
                      dt_proj.{weight,bias}, A_log, D, conv1d_b.{weight,bias},
                      x_proj_b.weight, dt_proj_b.{weight,bias}, A_b_log, D_b,
                      out_proj.weight}
    norm_f.weight                                   (classification mode only)
    pyramid.{k}.*  out_norms.{k}.{weight,bias}      (dense mode only)

Options change it only by leaving things out: ``with_cls_token=False`` has no
``cls_token`` and no class slot in ``pos_embed``, ``bidirectional=False`` no ``*_b``
mixer weights, ``pyramid_norm='SyncBN'`` no ``out_norms`` (``pyramid.0.norm`` is then a
BatchNorm). Released weights load into every variant; what a variant does not use is
logged and left out.

The classifier (``head.{weight,bias}`` upstream) belongs to mmpretrain's
``LinearClsHead`` (``head.fc.*``); :func:`mmmambaout.checkpoint.vim_model_state_dict`
renames it.
"""
import logging
import math
import re
from collections import OrderedDict
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model.weight_init import trunc_normal_

from mmmambaout.checkpoint import load_vim_state_dict
from mmmambaout.models.backbones.base import ArchBackbone
from mmmambaout.models.layers import DropPath
from mmmambaout.models.layers.compiled_blocks import (COMPILE_MODES, GRAPH_FREE_MODES,
                                                      compiled_blocks_runner)
from mmmambaout.ops.selective_scan import selective_scan
from mmmambaout.registry import register_model

ARCH_SETTINGS = {
    'tiny': dict(embed_dims=192, depth=24),
    'small': dict(embed_dims=384, depth=24),
    'base': dict(embed_dims=768, depth=24),
}
ARCH_ALIASES = {'t': 'tiny', 's': 'small', 'b': 'base'}
# shared by every arch (and the defaults of a custom dict)
ARCH_DEFAULTS = dict(patch_size=16, d_state=16, expand=2, d_conv=4)


# -- building blocks ------------------------------------------------------------------
class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias (mamba_ssm's), computed in fp32:
    ``x / sqrt(mean(x^2) + eps) * weight``. ``F.rms_norm`` (torch >= 2.4): for CUDA
    tensors torch 2.14 dispatches it to one fused operator (``aten::_fused_rms_norm``,
    and its backward) instead of about five forward and eight backward kernels."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32, w32 = x.float(), self.weight.float()
        if hasattr(F, 'rms_norm'):
            y = F.rms_norm(x32, w32.shape, w32, self.eps)
        else:   # torch < 2.4
            y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps) * w32
        return y.to(x.dtype)

    def extra_repr(self):
        return f'{self.weight.shape[0]}, eps={self.eps}'


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (an ``nn.LayerNorm``, so mmengine's
    ``norm_decay_mult`` sees it)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _fp32(t):
    """At least float32 (the SSM parameters stay fp32 under AMP; float64 stays float64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


class MambaMixer(nn.Module):
    """Vim's Mamba mixer, bidirectional ("bimamba v2", the paper's) or causal (Mamba's).

    ``in_proj`` (no bias) maps ``(B, L, D)`` to ``x, z`` of ``E = expand * D`` channels
    each. One direction: causal depthwise conv1d (kernel ``d_conv``, bias) -> SiLU ->
    ``x_proj`` to ``(dt, B, C)`` (sizes ``dt_rank, N, N``) -> ``delta = dt_proj.weight @
    dt`` with ``dt_proj.bias`` as the scan's ``delta_bias`` (softplus) -> selective scan
    with ``A = -exp(A_log)``, ``D`` and the gate ``silu(z)``.

    * ``bidirectional=True``: the forward direction on ``x, z`` and the backward one on
      ``x.flip, z.flip`` with its own ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``,
      ``A_b_log``, ``D_b``, its output flipped back; ``out_proj((y_fwd + y_bwd) / 2)``
      (upstream's ``if_divide_out=True``, every released model).
    * ``bidirectional=False``: the forward direction only, ``out_proj(y_fwd)`` (Mamba's
      mixer, upstream's ``bimamba_type='none'``): output ``t`` depends on inputs ``<= t``.

    Init (Mamba's): ``dt_proj.weight ~ U(+-dt_rank^-0.5)``, ``softplus(dt_proj.bias)``
    log-uniform in ``[dt_min, dt_max]``, S4D-real ``A_log[c, n] = log(n + 1)``, ``D = 1``.
    ``dt_init_b`` sets ``dt_proj_b.bias``: ``'upstream'`` zero (upstream's ``dt_proj_b``
    is a plain ``nn.Linear`` whose bias ``models_mamba._init_weights`` zeroes, so every
    backward channel starts with step ``softplus(0) = ln 2``), ``'mamba'`` as
    ``dt_proj.bias``. Its weight is ``U(+-dt_rank^-0.5)`` either way (``nn.Linear``'s
    default bound, which is Mamba's).
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 bidirectional: bool = True, dt_init_b: str = 'upstream',
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        if dt_init_b not in ('upstream', 'mamba'):
            raise ValueError(f"dt_init_b must be 'upstream' or 'mamba', got {dt_init_b!r}")
        self.dim, self.d_state, self.d_conv = dim, d_state, d_conv
        self.bidirectional = bidirectional
        self.d_inner = E = int(expand * dim)
        self.dt_rank = R = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * E, bias=False)
        self.out_proj = nn.Linear(E, dim, bias=False)
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1)
        for suffix in ('', '_b') if bidirectional else ('', ):
            setattr(self, 'conv1d' + suffix,
                    nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True))
            setattr(self, 'x_proj' + suffix, nn.Linear(E, R + 2 * d_state, bias=False))
            dt_proj = nn.Linear(R, E, bias=True)
            nn.init.uniform_(dt_proj.weight, -R**-0.5, R**-0.5)
            with torch.no_grad():
                if suffix and dt_init_b == 'upstream':
                    dt_proj.bias.zero_()
                else:
                    dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) +
                                   math.log(dt_min)).clamp(min=dt_init_floor)
                    dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
            setattr(self, 'dt_proj' + suffix, dt_proj)
            # S4D-real, kept in fp32; names as upstream (A_log / A_b_log, D / D_b)
            setattr(self, 'A_b_log' if suffix else 'A_log', nn.Parameter(a_log.clone()))
            setattr(self, 'D' + suffix, nn.Parameter(torch.ones(E)))

    def _directions(self, name: str, name_b: str) -> list:
        """The forward direction's module / parameter ``name`` (and the backward one's)."""
        return [getattr(self, n) for n in ((name, name_b) if self.bidirectional else (name, ))]

    def forward(self, hidden):
        """``(B, L, D)`` -> ``(B, L, D)``.

        Bidirectional, both directions run as one scan over ``2E`` channels: the forward
        branch on ``x`` and the backward branch on ``x.flip`` side by side, each with its
        own conv (one grouped conv1d), ``x_proj``, ``dt_proj``, ``A``, ``D``, and with B / C
        grouped per direction (``(batch, 2, N, L)``: channel ``c`` reads group ``c // E``).
        Same numbers as two separate scans, half the kernel launches. ``k`` below: the
        number of directions.
        """
        L, E, R, N = hidden.shape[1], self.d_inner, self.dt_rank, self.d_state
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)        # (B, E, L) each
        if self.bidirectional:
            x, z = torch.cat((x, x.flip(-1)), dim=1), torch.cat((z, z.flip(-1)), dim=1)
        convs = self._directions('conv1d', 'conv1d_b')
        x = F.silu(F.conv1d(x, torch.cat([c.weight for c in convs]),
                            torch.cat([c.bias for c in convs]), padding=self.d_conv - 1,
                            groups=len(convs) * E)[..., :L])                  # (B, kE, L)
        xs = x.transpose(1, 2).chunk(len(convs), dim=-1)                    # (B, L, E) each
        dbl = torch.stack([proj(xd) for proj, xd in
                           zip(self._directions('x_proj', 'x_proj_b'), xs)], dim=1)
        dt, Bs, Cs = torch.split(dbl, [R, N, N], dim=-1)                    # (B, k, L, .)
        dt_projs = self._directions('dt_proj', 'dt_proj_b')
        delta = torch.cat([dt[:, k] @ p.weight.t() for k, p in enumerate(dt_projs)],
                          dim=-1).transpose(1, 2)                           # (B, kE, L)
        A = -torch.exp(_fp32(torch.cat(self._directions('A_log', 'A_b_log'))))
        y = selective_scan(
            x, delta, A, Bs.transpose(-1, -2), Cs.transpose(-1, -2),
            D=_fp32(torch.cat(self._directions('D', 'D_b'))), z=z,
            delta_bias=_fp32(torch.cat([p.bias for p in dt_projs])), delta_softplus=True)
        if self.bidirectional:
            y_f, y_b = y.chunk(2, dim=1)
            y = (y_f + y_b.flip(-1)) / 2
        return self.out_proj(y.transpose(1, 2))

    def extra_repr(self):
        return f'{self.dim}, d_state={self.d_state}, ' + (
            'bidirectional' if self.bidirectional else 'causal')


class VimBlock(nn.Module):
    """``r <- r + drop_path(mixer(RMSNorm(r)))`` on the residual stream ``r``, kept in
    fp32 (upstream's ``residual_in_fp32``); see the module docstring for why this is
    upstream's "Add -> Norm -> Mixer" regrouped. Returns the new stream and the mixer
    output (upstream's ``hidden_states``, which its segmentation backbone reads)."""

    def __init__(self, dim, d_state, d_conv, expand, drop_path=0., bidirectional=True,
                 dt_init_b='upstream'):
        super().__init__()
        self.norm = RMSNorm(dim, eps=1e-5)
        self.mixer = MambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand,
                                bidirectional=bidirectional, dt_init_b=dt_init_b)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, residual):
        mixed = self.mixer(self.norm(residual))
        return residual + self.drop_path(mixed).float(), mixed


def _pyramid_branch(dim: int, scale: float, norm: str) -> nn.Module:
    """Stride 16 -> stride 16/scale: two 2x transposed convs (``norm`` + GELU between)
    for x4, one for x2, identity for x1, 2x2 max-pool (ceil mode: odd maps keep their
    border) for x0.5."""
    if scale == 4:
        return nn.Sequential(OrderedDict(
            up1=nn.ConvTranspose2d(dim, dim, 2, stride=2),
            norm=LayerNorm2d(dim, eps=1e-6) if norm == 'LN' else nn.SyncBatchNorm(dim),
            act=nn.GELU(), up2=nn.ConvTranspose2d(dim, dim, 2, stride=2)))
    if scale == 2:
        return nn.Sequential(OrderedDict(up1=nn.ConvTranspose2d(dim, dim, 2, stride=2)))
    if scale == 1:
        return nn.Identity()
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


PYRAMID_SCALES = (4, 2, 1, 0.5)  # strides 4, 8, 16, 32 from the stride-16 tokens


# -- position embeddings with the middle class-token slot -----------------------------
def drop_cls_slot(pos_embed: torch.Tensor) -> torch.Tensor:
    """``(1, M + 1, D)`` -> ``(1, M, D)``: the middle class-token slot (index ``M // 2``)
    removed. (Upstream's segmentation backbone drops slot 0 instead, a grid slot of the
    released middle-class-token weights.)"""
    mid = (pos_embed.shape[1] - 1) // 2
    return torch.cat((pos_embed[:, :mid], pos_embed[:, mid + 1:]), dim=1)


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int],
                     dst_grid: Tuple[int, int], mode: str = 'bicubic',
                     cls_slot: bool = True) -> torch.Tensor:
    """Resize a Vim position embedding from grid ``src_grid`` to ``dst_grid``:
    ``(1, h*w + 1, D)`` with the class-token slot in the middle (index ``h*w // 2``), or
    ``(1, h*w, D)`` without one (``cls_slot=False``).

    The class-token slot is taken out before the patch slots are reshaped to the grid
    and interpolated, and put back at the middle of the new sequence. (Upstream's
    segmentation code treats slot 0 as the class token, so for the released
    middle-class-token weights it interpolates a grid shifted by one token.)
    """
    (h0, w0), (h1, w1) = tuple(src_grid), tuple(dst_grid)
    m0, m1 = h0 * w0, h1 * w1
    if pos_embed.shape[1] != m0 + cls_slot:
        raise ValueError(f'pos_embed has {pos_embed.shape[1]} slots, expected {h0}x{w0}'
                         + (' + 1' if cls_slot else ''))
    if (h0, w0) == (h1, w1):
        return pos_embed
    patch = drop_cls_slot(pos_embed) if cls_slot else pos_embed
    dim = patch.shape[-1]
    patch = patch.reshape(1, h0, w0, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch.float(), size=(h1, w1), mode=mode,
                          align_corners=False).to(pos_embed.dtype)
    patch = patch.flatten(2).transpose(1, 2)
    if not cls_slot:
        return patch
    cls_pos = pos_embed[:, m0 // 2:m0 // 2 + 1]
    return torch.cat((patch[:, :m1 // 2], cls_pos, patch[:, m1 // 2:]), dim=1)


def _to_2tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


# -- the backbone -----------------------------------------------------------------------
@register_model
class Vim(ArchBackbone):
    """Vision Mamba (Vim) backbone with a middle class token.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (or ``'t'``, ``'s'``,
            ``'b'``): embed dims 192 / 384 / 768, depth 24, patch 16, d_state 16,
            expand 2, d_conv 4; or a dict with ``embed_dims`` and ``depth`` and optionally
            ``patch_size``, ``d_state``, ``expand``, ``d_conv``.
        img_size (int | tuple): the grid the position embedding is stored at (224 ->
            14x14, as the released weights). Any other input size works: the embedding is
            interpolated (bicubic) to the input's grid on the fly, and a pretrained one is
            resized to this grid when loaded. Defaults to 224.
        patch_stride (int, optional): stride of the patch embedding; ``None`` = patch
            size. The released ``*_ft`` ("+") weights were fine-tuned with stride 8
            (overlapping patches, 27x27 tokens at 224); classification only.
        out_type (str): ``'pyramid'`` (dense tasks): for each of the four
            ``out_indices`` the layer's features (``feature_source``), class token
            removed, reshaped to stride 16, then mapped to strides 4, 8, 16, 32
            respectively (transposed convs / identity / max-pool; ``pyramid_norm``);
            returns four NCHW maps of ``embed_dims`` channels. ``'cls_token'``
            (classification): ``norm_f`` of the last layer's stream at the class token;
            returns ``((B, D), )`` for mmpretrain's ``LinearClsHead``.
        out_indices (Sequence[int]): four layer indices for ``'pyramid'`` (negative ones
            count from the end). Layers after the last one are not built. Defaults to
            ``(5, 11, 17, 23)``.
        bidirectional (bool): ``True`` (Vim): each mixer scans the sequence both ways.
            ``False``: causal, the forward direction only (Mamba's mixer, output token
            ``t`` sees tokens ``<= t``); a bidirectional checkpoint loads with its
            backward-branch weights (``*_b``) left out (logged).
        with_cls_token (bool): insert the class token in the middle of the sequence
            (ours, and needed by ``'cls_token'``). ``False`` (upstream's segmentation
            backbone): no class token and a position embedding without its slot; from a
            checkpoint the middle slot is removed and ``cls_token`` left out (logged).
        feature_source (str): what a dense output reads at a layer: ``'residual'`` (ours)
            the residual stream after it; ``'mixer'`` (upstream's segmentation default,
            ``use_residual_as_feature=False``) that layer's mixer output, before drop
            path.
        pyramid_norm (str): ``'LN'`` (ours): LayerNorm between the stride-4 branch's
            transposed convs and on each of the four outputs. ``'SyncBN'`` (upstream's):
            SyncBatchNorm between the transposed convs, outputs not normalised (plain
            BatchNorm without a distributed launch; mmengine also reverts it then).
        dt_init_b (str): init of the backward ``dt_proj_b.bias``: ``'upstream'`` zero (as
            the released code), ``'mamba'`` Mamba's dt init as ``dt_proj`` (see
            :class:`MambaMixer`). Only matters without a checkpoint.
        frozen_stages (int): ``-1`` freezes nothing; ``0`` the patch embedding, class
            token and position embedding; ``k > 0`` also the first ``k`` layers.
        drop_path_rate (float): stochastic depth, ``linspace(0, rate, depth)[i]`` for
            layer ``i`` (as upstream).
        with_cp (bool): checkpoint each layer (torch.utils.checkpoint) whenever
            gradients are on.
        compile_layers (bool | str): in training steps (with grad) run each layer through
            ``torch.compile`` (``True`` or a ``torch.compile`` mode; ``'reduce-overhead'``
            also replays it as a CUDA graph per input size). The layers share one
            compiled function and, all alike, one graph; the selective scan in it is one
            node (the Triton scan's custom operator). Without grad the layers run eagerly,
            as MambaOut's compiled stages do. Exclusive with ``with_cp``. Off by default:
            in Mask R-CNN it gave no clear gain (docs/training_speed.md).
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)``
            with an official Vim checkpoint (path, URL or zoo name such as
            ``'vim_tiny_midclstok_in1k'``), or one of ours.

    Inputs whose sides are not a multiple of the patch grid are zero-padded on the
    bottom / right, so a ``97x131`` image gives ``7x9`` tokens (stride-16 maps of
    ``ceil(H/16) x ceil(W/16)``).

    Dense features, ours against upstream's segmentation backbone (``seg/backbone/vim.py``
    ``VisionMambaSeg``, Vim-T UperNet config): ours keep the class token in the sequence
    (as in pre-training), read the residual stream (what the next layer reads: the
    embeddings plus every mixer output so far) and normalise with LayerNorm (independent
    of the batch size, as ViTDet's simple pyramid); upstream removes the class token,
    reads each layer's mixer output (that layer's update alone) and puts SyncBatchNorm
    between the transposed convs, nothing after.
    ``with_cls_token=False, feature_source='mixer', pyramid_norm='SyncBN'`` is upstream's.
    """

    arch_settings = ARCH_SETTINGS
    arch_aliases = ARCH_ALIASES
    custom_arch_keys = "'embed_dims' and 'depth'"
    pretrained_missing_ok = r'^(pyramid|out_norms)\.'  # dense heads: not in classifiers

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_stride: Optional[int] = None,
                 in_channels: int = 3,
                 out_type: str = 'pyramid',
                 out_indices: Sequence[int] = (5, 11, 17, 23),
                 bidirectional: bool = True,
                 with_cls_token: bool = True,
                 feature_source: str = 'residual',
                 pyramid_norm: str = 'LN',
                 dt_init_b: str = 'upstream',
                 frozen_stages: int = -1,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 compile_layers: Union[bool, str] = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if compile_layers not in (True, False) + COMPILE_MODES:
            raise ValueError(f'compile_layers must be a bool or one of {COMPILE_MODES} '
                             f'(torch.compile modes), got {compile_layers!r}')
        if compile_layers and with_cp:
            raise ValueError('compile_layers and with_cp are exclusive: with_cp checkpoints '
                             'each layer in eager mode; use one of them')
        # a str, not the compiled function: pickle, deepcopy
        self.compile_mode = (compile_layers if isinstance(compile_layers, str) else
                             'default' if compile_layers else None)
        self.arch = self._parse_arch(arch)
        dim, depth = self.arch['embed_dims'], self.arch['depth']
        self.embed_dims, self.num_layers = dim, depth
        self.patch_size = self.arch['patch_size']
        self.patch_stride = patch_stride or self.patch_size
        if out_type not in ('pyramid', 'cls_token'):
            raise ValueError(f"out_type must be 'pyramid' or 'cls_token', got {out_type!r}")
        self.out_type = out_type
        for name, value, choices in (('feature_source', feature_source, ('residual', 'mixer')),
                                     ('pyramid_norm', pyramid_norm, ('LN', 'SyncBN'))):
            if value not in choices:
                raise ValueError(f'{name} must be one of {choices}, got {value!r}')
            if out_type == 'cls_token' and value != choices[0]:
                raise ValueError(f"{name}={value!r} is for out_type='pyramid'")
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        self.bidirectional, self.with_cls_token = bidirectional, with_cls_token
        self.feature_source, self.pyramid_norm = feature_source, pyramid_norm
        if out_type == 'pyramid':
            if self.patch_stride != 16:
                raise ValueError('the dense pyramid needs stride-16 tokens, got patch '
                                 f'stride {self.patch_stride}')
            if not isinstance(out_indices, Sequence) or len(out_indices) != 4:
                raise ValueError('out_indices must be four layer indices (one per pyramid '
                                 f'level), got {out_indices!r}')
            indices = self._normalise_out_indices(out_indices, depth)
            if indices != sorted(set(indices)):
                raise ValueError(f'out_indices must be increasing, got {out_indices!r}')
            self.out_indices = tuple(indices)
            num_built = self.out_indices[-1] + 1
        else:
            self.out_indices = (depth - 1, )
            num_built = depth
        self._check_frozen_stages(frozen_stages, num_built)
        self._check_drop_path_rate(drop_path_rate)
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

        img_size = _to_2tuple(img_size)
        self.pos_grid = tuple(self._grid(s) for s in img_size)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(in_channels, dim, self.patch_size,
                                          stride=self.patch_stride)
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.pos_grid[0] * self.pos_grid[1] + with_cls_token, dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.layers = nn.ModuleList([
            VimBlock(dim, self.arch['d_state'], self.arch['d_conv'], self.arch['expand'],
                     drop_path=rates[i], bidirectional=bidirectional, dt_init_b=dt_init_b)
            for i in range(num_built)
        ])
        if out_type == 'cls_token':
            self.norm_f = RMSNorm(dim, eps=1e-5)
            self.out_channels = (dim, )
        else:
            self.pyramid = nn.ModuleList(
                _pyramid_branch(dim, s, pyramid_norm) for s in PYRAMID_SCALES)
            self.out_norms = nn.ModuleList(
                LayerNorm2d(dim, eps=1e-6) if pyramid_norm == 'LN' else nn.Identity()
                for _ in PYRAMID_SCALES)
            self.out_channels = (dim, ) * 4
        # upstream initialises at construction, so init_weights has nothing to add
        # without a checkpoint (ArchBackbone._init_from_scratch stays a no-op)
        self._default_init()
        self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        arch = cls._lookup_arch(arch)
        unknown = set(arch) - {'embed_dims', 'depth'} - set(ARCH_DEFAULTS)
        if unknown or not {'embed_dims', 'depth'} <= set(arch):
            raise ValueError("a custom Vim arch dict needs 'embed_dims' and 'depth' (and "
                             f'optionally {", ".join(ARCH_DEFAULTS)}), got {sorted(arch)}')
        arch = dict(ARCH_DEFAULTS, **arch)
        if not all(isinstance(v, int) and v > 0 for v in arch.values()):
            raise ValueError(f'Vim arch values must be positive ints, got {arch}')
        return arch

    def _grid(self, size: int) -> int:
        """Tokens along a side of ``size`` pixels (after padding)."""
        p, s = self.patch_size, self.patch_stride
        return (max(size, p) - p + s - 1) // s + 1

    def _pad(self, x):
        H, W = x.shape[-2:]
        p, s = self.patch_size, self.patch_stride
        ph = (self._grid(H) - 1) * s + p - H
        pw = (self._grid(W) - 1) * s + p - W
        return F.pad(x, (0, pw, 0, ph)) if ph or pw else x

    # -- forward ----------------------------------------------------------------------
    def _layer(self, layer, residual):
        if self.with_cp and torch.is_grad_enabled():
            return cp.checkpoint(layer, residual, use_reentrant=False)
        if (self.compile_mode is not None and torch.is_grad_enabled()
                and not torch.compiler.is_compiling()):
            mode = self.compile_mode
            if not residual.requires_grad and not layer.norm.weight.requires_grad:
                mode = GRAPH_FREE_MODES.get(mode, mode)   # frozen: no backward to replay
            torch._dynamo.maybe_mark_dynamic(residual, 1)  # one graph for every length
            return compiled_blocks_runner('vim_layer', mode)([layer], residual)
        return layer(residual)

    def forward(self, x):
        x = self.patch_embed.proj(self._pad(x))
        B, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                                   # (B, M, D)
        mid = h * w // 2
        pos = resize_pos_embed(self.pos_embed, self.pos_grid, (h, w),
                               cls_slot=self.with_cls_token)
        if self.with_cls_token:
            tokens = torch.cat((tokens[:, :mid], self.cls_token.expand(B, -1, -1),
                                tokens[:, mid:]), dim=1)
        residual = (tokens + pos).float()
        feats = []
        for i, layer in enumerate(self.layers):
            residual, mixed = self._layer(layer, residual)
            if self.out_type == 'pyramid' and i in self.out_indices:
                feats.append(residual if self.feature_source == 'residual' else mixed)
        if self.out_type == 'cls_token':
            return (self.norm_f(residual)[:, mid], )
        outs = []
        for k, f in enumerate(feats):
            if self.with_cls_token:
                f = torch.cat((f[:, :mid], f[:, mid + 1:]), dim=1)              # drop it
            f = f.transpose(1, 2).reshape(B, -1, h, w)
            outs.append(self.out_norms[k](self.pyramid[k](f)).contiguous())
        return tuple(outs)

    # -- freezing ---------------------------------------------------------------------
    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.patch_embed
        for i in range(self.frozen_stages):
            yield self.layers[i]

    def _frozen_parameters(self):
        if self.frozen_stages >= 0:
            yield self.pos_embed
            if self.with_cls_token:
                yield self.cls_token

    # -- initialisation ---------------------------------------------------------------
    def _default_init(self):
        """Upstream's init: lecun-normal patch conv, trunc-normal(0.02) class token and
        position embedding, the mixers' own (:class:`MambaMixer`; its only Linear biases
        are ``dt_proj`` / ``dt_proj_b``), ``out_proj`` kaiming-uniform scaled by
        ``1/sqrt(depth)``, PyTorch defaults else."""
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        trunc_normal_(proj.weight, std=math.sqrt(1. / fan_in) / .87962566103423978)
        nn.init.zeros_(proj.bias)
        trunc_normal_(self.pos_embed, std=.02)
        if self.with_cls_token:
            trunc_normal_(self.cls_token, std=.02)
        for layer in self.layers:
            mixer = layer.mixer
            nn.init.kaiming_uniform_(mixer.out_proj.weight, a=math.sqrt(5))
            with torch.no_grad():
                mixer.out_proj.weight /= math.sqrt(self.num_layers)

    def _pretrained_state_dict(self, checkpoint, prefix):
        state_dict, args = load_vim_state_dict(checkpoint, prefix=prefix, return_args=True)
        model_name = getattr(args, 'model', '') or ''
        if 'stride8' in model_name and self.patch_stride != 8:
            print_log(f'Vim: checkpoint {checkpoint!r} was trained with patch stride 8 '
                      f'({model_name}) but this model uses stride {self.patch_stride}',
                      logger='current', level=logging.WARNING)
        ckpt_cls = 'cls_token' in state_dict
        unused = {}
        for key in list(state_dict):
            reason = self._unused_reason(key)
            if reason:
                unused.setdefault(reason, []).append(key)
                del state_dict[key]
        for reason, keys in unused.items():
            print_log(f'Vim: checkpoint weights this model does not use ({reason}): '
                      f'{_summarise(keys)}', logger='current', level=logging.INFO)
        pos = state_dict.get('pos_embed')
        # without a class token in the checkpoint there is no slot to give ours: left as
        # is, and loading reports the missing cls_token and a pos_embed that does not fit
        if pos is not None and (ckpt_cls or not self.with_cls_token):
            if ckpt_cls and not self.with_cls_token:
                pos = drop_cls_slot(pos)
            if pos.shape != self.pos_embed.shape:
                src = _square_grid(pos.shape[1] - self.with_cls_token, checkpoint)
                pos = resize_pos_embed(pos, src, self.pos_grid, cls_slot=self.with_cls_token)
                print_log(f'Vim: pos_embed resized from {src[0]}x{src[1]} to '
                          f'{self.pos_grid[0]}x{self.pos_grid[1]}' +
                          (' (class-token slot kept, middle of the sequence)'
                           if self.with_cls_token else ''),
                          logger='current', level=logging.INFO)
            state_dict['pos_embed'] = pos
        return state_dict

    def _unused_reason(self, key: str) -> Optional[str]:
        """Why checkpoint weight ``key`` has no place in this model, or None."""
        if key.startswith('head.'):
            return "the classifier, mmpretrain's head"
        if self.out_type == 'pyramid' and key.startswith('norm_f.'):
            return 'norm_f: dense outputs'
        if key == 'cls_token' and not self.with_cls_token:
            return 'the class token and its position slot: with_cls_token=False'
        m = re.match(r'^layers\.(\d+)\.', key)
        if m and int(m.group(1)) >= len(self.layers):
            return f'layers after the last output, {len(self.layers) - 1}'
        if not self.bidirectional and re.match(
                r'^layers\.\d+\.mixer\.(conv1d_b|x_proj_b|dt_proj_b|A_b_log|D_b)\b', key):
            return 'the backward branch: bidirectional=False'
        return None


def _summarise(keys, limit=6):
    return ', '.join(keys[:limit]) + (f' and {len(keys) - limit} more' if len(keys) > limit
                                      else '')


def _square_grid(num_patches: int, source) -> Tuple[int, int]:
    side = int(round(math.sqrt(num_patches)))
    if side * side != num_patches:
        raise ValueError(f'pos_embed of {source!r} has {num_patches} patch slots, not a '
                         'square grid: cannot tell its shape to resize it')
    return side, side
