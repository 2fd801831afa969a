"""Vim (Vision Mamba): a bidirectional selective-state-space backbone for mmdet, mmseg
and mmpretrain.

Paper: `Vision Mamba: Efficient Visual Representation Learning with Bidirectional State
Space Model` (Zhu et al., arXiv 2401.09417). Facts follow hustvl/Vim
(``vim/models_mamba.py``, the bundled ``mamba-1p1p1`` fork's ``Mamba`` with
``bimamba_type='v2'`` and ``if_divide_out=True``); the released ``*_midclstok*`` weights
load unchanged (same parameter names). The selective scan is our own
:func:`mmmambaout.ops.selective_scan` (exact on CPU, Triton / mamba_ssm on CUDA), so the
model needs no CUDA extension.

Layout of this file, top to bottom: arch table, building blocks (RMSNorm, the
bidirectional mixer, the block, the stride-16 -> 4-scale pyramid), position-embedding
resizing with the middle class-token slot, the :class:`Vim` backbone. Checkpoints are read
in :mod:`mmmambaout.checkpoint`; what is Vim's own about loading them (class-token
position slot, layers and norms a mode does not build) stays here.

The block. Upstream writes a layer as "Add -> Norm -> Mixer": layer ``i`` receives the
previous mixer output ``h`` and the residual ``r``, computes ``r = r + drop_path(h)``,
``h = mixer(norm(r))``; the last add happens before ``norm_f``. Regrouped, the same
additions in the same order read ``r <- r + drop_path_i(mixer_i(norm_i(r)))`` per layer,
with ``r`` the (fp32) residual stream; that is how :class:`VimBlock` computes it (same
parameters, same numbers; the stream after layer ``i`` is what dense outputs read).
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
    """RMSNorm with a weight and no bias (mamba_ssm's), computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)

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


class BiMambaMixer(nn.Module):
    """Bidirectional Mamba mixer (Vim's "bimamba v2").

    ``in_proj`` (shared, no bias) maps ``(B, L, D)`` to ``x, z`` of ``E = expand * D``
    channels each. The forward direction runs on ``x, z``, the backward direction on
    ``x.flip, z.flip`` with its own ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``,
    ``A_b_log``, ``D_b``; its output is flipped back. Per direction: causal depthwise
    conv1d (kernel ``d_conv``, bias) -> SiLU -> ``x_proj`` to ``(dt, B, C)`` (sizes
    ``dt_rank, N, N``) -> ``delta = dt_proj.weight @ dt`` with ``dt_proj.bias`` as the
    scan's ``delta_bias`` (softplus) -> selective scan with ``A = -exp(A_log)``, ``D``
    and the gate ``silu(z)``. Output: ``out_proj((y_fwd + y_bwd) / 2)`` (upstream's
    ``if_divide_out=True``, used by every released model).
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.dim, self.d_state, self.d_conv = dim, d_state, d_conv
        self.d_inner = E = int(expand * dim)
        self.dt_rank = R = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * E, bias=False)
        self.out_proj = nn.Linear(E, dim, bias=False)
        for suffix in ('', '_b'):
            setattr(self, 'conv1d' + suffix,
                    nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1, bias=True))
            setattr(self, 'x_proj' + suffix, nn.Linear(E, R + 2 * d_state, bias=False))
            dt_proj = nn.Linear(R, E, bias=True)
            # Mamba's init: weight ~ U(-R^-0.5, R^-0.5); softplus(bias) log-uniform in
            # [dt_min, dt_max]
            nn.init.uniform_(dt_proj.weight, -R**-0.5, R**-0.5)
            dt = torch.exp(torch.rand(E) * (math.log(dt_max) - math.log(dt_min)) +
                           math.log(dt_min)).clamp(min=dt_init_floor)
            with torch.no_grad():
                dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1
            setattr(self, 'dt_proj' + suffix, dt_proj)
        # S4D-real init, kept in fp32; names as upstream (A_log / A_b_log, D / D_b)
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1)
        self.A_log = nn.Parameter(a_log.clone())
        self.A_b_log = nn.Parameter(a_log.clone())
        self.D = nn.Parameter(torch.ones(E))
        self.D_b = nn.Parameter(torch.ones(E))

    def forward(self, hidden):
        """``(B, L, D)`` -> ``(B, L, D)``.

        Both directions run as one scan over ``2E`` channels: the forward branch on
        ``x`` and the backward branch on ``x.flip`` side by side, each with its own conv
        (one grouped conv1d), ``x_proj``, ``dt_proj``, ``A``, ``D``, and with B / C grouped
        per direction (``(batch, 2, N, L)``: channel ``c`` reads group ``c // E``). Same
        numbers as two separate scans, half the kernel launches.
        """
        L, E, R, N = hidden.shape[1], self.d_inner, self.dt_rank, self.d_state
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)        # (B, E, L) each
        xs = torch.cat((x, x.flip(-1)), dim=1)                               # (B, 2E, L)
        zs = torch.cat((z, z.flip(-1)), dim=1)
        conv_w = torch.cat((self.conv1d.weight, self.conv1d_b.weight))
        conv_b = torch.cat((self.conv1d.bias, self.conv1d_b.bias))
        xs = F.silu(F.conv1d(xs, conv_w, conv_b, padding=self.d_conv - 1, groups=2 * E)[..., :L])
        x_f, x_b = xs.transpose(1, 2).chunk(2, dim=-1)                      # (B, L, E) each
        dbl = torch.stack((self.x_proj(x_f), self.x_proj_b(x_b)), dim=1)    # (B, 2, L, R+2N)
        dt, Bs, Cs = torch.split(dbl, [R, N, N], dim=-1)
        delta = torch.cat((dt[:, 0] @ self.dt_proj.weight.t(),
                           dt[:, 1] @ self.dt_proj_b.weight.t()), dim=-1).transpose(1, 2)
        A = -torch.exp(_fp32(torch.cat((self.A_log, self.A_b_log))))
        y = selective_scan(
            xs, delta, A, Bs.transpose(-1, -2), Cs.transpose(-1, -2),
            D=_fp32(torch.cat((self.D, self.D_b))), z=zs,
            delta_bias=_fp32(torch.cat((self.dt_proj.bias, self.dt_proj_b.bias))),
            delta_softplus=True)
        y_f, y_b = y.chunk(2, dim=1)
        return self.out_proj(((y_f + y_b.flip(-1)) / 2).transpose(1, 2))


class VimBlock(nn.Module):
    """``r <- r + drop_path(mixer(RMSNorm(r)))`` on the residual stream ``r``, kept in
    fp32 (upstream's ``residual_in_fp32``); see the module docstring for why this is
    upstream's "Add -> Norm -> Mixer" regrouped."""

    def __init__(self, dim, d_state, d_conv, expand, drop_path=0.):
        super().__init__()
        self.norm = RMSNorm(dim, eps=1e-5)
        self.mixer = BiMambaMixer(dim, d_state=d_state, d_conv=d_conv, expand=expand)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, residual):
        return residual + self.drop_path(self.mixer(self.norm(residual))).float()


def _pyramid_branch(dim: int, scale: float) -> nn.Module:
    """Stride 16 -> stride 16/scale: two 2x transposed convs (LN + GELU between) for x4,
    one for x2, identity for x1, 2x2 max-pool (ceil mode: odd maps keep their border)
    for x0.5."""
    if scale == 4:
        return nn.Sequential(OrderedDict(
            up1=nn.ConvTranspose2d(dim, dim, 2, stride=2), norm=LayerNorm2d(dim, eps=1e-6),
            act=nn.GELU(), up2=nn.ConvTranspose2d(dim, dim, 2, stride=2)))
    if scale == 2:
        return nn.Sequential(OrderedDict(up1=nn.ConvTranspose2d(dim, dim, 2, stride=2)))
    if scale == 1:
        return nn.Identity()
    return nn.MaxPool2d(2, stride=2, ceil_mode=True)


PYRAMID_SCALES = (4, 2, 1, 0.5)  # strides 4, 8, 16, 32 from the stride-16 tokens


# -- position embeddings with the middle class-token slot -----------------------------
def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Tuple[int, int],
                     dst_grid: Tuple[int, int], mode: str = 'bicubic') -> torch.Tensor:
    """Resize a Vim position embedding ``(1, h*w + 1, D)`` whose class-token slot sits in
    the middle (index ``h*w // 2``) from grid ``src_grid`` to ``dst_grid``.

    The class-token slot is taken out before the patch slots are reshaped to the grid
    and interpolated, and put back at the middle of the new sequence. (Upstream's
    segmentation code treats slot 0 as the class token, so for the released
    middle-class-token weights it interpolates a grid shifted by one token.)
    """
    (h0, w0), (h1, w1) = tuple(src_grid), tuple(dst_grid)
    m0, m1 = h0 * w0, h1 * w1
    if pos_embed.shape[1] != m0 + 1:
        raise ValueError(f'pos_embed has {pos_embed.shape[1]} slots, expected {h0}x{w0} + 1')
    if (h0, w0) == (h1, w1):
        return pos_embed
    cls_pos = pos_embed[:, m0 // 2:m0 // 2 + 1]
    patch = torch.cat((pos_embed[:, :m0 // 2], pos_embed[:, m0 // 2 + 1:]), dim=1)
    dim = patch.shape[-1]
    patch = patch.reshape(1, h0, w0, dim).permute(0, 3, 1, 2)
    patch = F.interpolate(patch.float(), size=(h1, w1), mode=mode,
                          align_corners=False).to(pos_embed.dtype)
    patch = patch.flatten(2).transpose(1, 2)
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
            ``out_indices`` the residual stream after that layer, class token removed,
            reshaped to stride 16, then mapped to strides 4, 8, 16, 32 respectively
            (transposed convs / identity / max-pool) and normalised (LayerNorm per
            output); returns four NCHW maps of ``embed_dims`` channels.
            ``'cls_token'`` (classification): ``norm_f`` of the last layer's stream at the
            class token; returns ``((B, D), )`` for mmpretrain's ``LinearClsHead``.
        out_indices (Sequence[int]): four layer indices for ``'pyramid'`` (negative ones
            count from the end). Layers after the last one are not built. Defaults to
            ``(5, 11, 17, 23)``.
        frozen_stages (int): ``-1`` freezes nothing; ``0`` the patch embedding, class
            token and position embedding; ``k > 0`` also the first ``k`` layers.
        drop_path_rate (float): stochastic depth, ``linspace(0, rate, depth)[i]`` for
            layer ``i`` (as upstream).
        with_cp (bool): checkpoint each layer (torch.utils.checkpoint) whenever
            gradients are on.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)``
            with an official Vim checkpoint (path, URL or zoo name such as
            ``'vim_tiny_midclstok_in1k'``), or one of ours.

    Inputs whose sides are not a multiple of the patch grid are zero-padded on the
    bottom / right, so a ``97x131`` image gives ``7x9`` tokens (stride-16 maps of
    ``ceil(H/16) x ceil(W/16)``).
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
                 frozen_stages: int = -1,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = self._parse_arch(arch)
        dim, depth = self.arch['embed_dims'], self.arch['depth']
        self.embed_dims, self.num_layers = dim, depth
        self.patch_size = self.arch['patch_size']
        self.patch_stride = patch_stride or self.patch_size
        if out_type not in ('pyramid', 'cls_token'):
            raise ValueError(f"out_type must be 'pyramid' or 'cls_token', got {out_type!r}")
        self.out_type = out_type
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
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(
            torch.zeros(1, self.pos_grid[0] * self.pos_grid[1] + 1, dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.layers = nn.ModuleList([
            VimBlock(dim, self.arch['d_state'], self.arch['d_conv'], self.arch['expand'],
                     drop_path=rates[i]) for i in range(num_built)
        ])
        if out_type == 'cls_token':
            self.norm_f = RMSNorm(dim, eps=1e-5)
            self.out_channels = (dim, )
        else:
            self.pyramid = nn.ModuleList(_pyramid_branch(dim, s) for s in PYRAMID_SCALES)
            self.out_norms = nn.ModuleList(LayerNorm2d(dim, eps=1e-6) for _ in PYRAMID_SCALES)
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
        return layer(residual)

    def forward(self, x):
        x = self.patch_embed.proj(self._pad(x))
        B, _, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)                                   # (B, M, D)
        mid = h * w // 2
        pos = resize_pos_embed(self.pos_embed, self.pos_grid, (h, w))
        tokens = torch.cat((tokens[:, :mid], self.cls_token.expand(B, -1, -1),
                            tokens[:, mid:]), dim=1) + pos
        residual = tokens.float()
        feats = []
        for i, layer in enumerate(self.layers):
            residual = self._layer(layer, residual)
            if self.out_type == 'pyramid' and i in self.out_indices:
                feats.append(residual)
        if self.out_type == 'cls_token':
            return (self.norm_f(residual)[:, mid], )
        outs = []
        for k, f in enumerate(feats):
            f = torch.cat((f[:, :mid], f[:, mid + 1:]), dim=1)                  # drop class token
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
            yield from (self.cls_token, self.pos_embed)

    # -- initialisation ---------------------------------------------------------------
    def _default_init(self):
        """Upstream's init: lecun-normal patch conv, trunc-normal(0.02) class token and
        position embedding, zero Linear biases except ``dt_proj`` (kept from its own init),
        ``out_proj`` kaiming-uniform scaled by ``1/sqrt(depth)``, PyTorch defaults else."""
        proj = self.patch_embed.proj
        fan_in = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1]
        trunc_normal_(proj.weight, std=math.sqrt(1. / fan_in) / .87962566103423978)
        nn.init.zeros_(proj.bias)
        trunc_normal_(self.pos_embed, std=.02)
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
        # Not ours to load: the classifier (mmpretrain's head), norm_f in dense mode and
        # layers past the last dense output.
        dropped = [k for k in state_dict if self._not_in_this_model(k)]
        state_dict = {k: v for k, v in state_dict.items() if k not in dropped}
        if dropped:
            print_log(f'Vim: not used in this mode ({self.out_type}): '
                      f'{_summarise(dropped)}', logger='current', level=logging.INFO)
        pos = state_dict.get('pos_embed')
        if pos is not None and pos.shape != self.pos_embed.shape:
            src = _square_grid(pos.shape[1] - 1, checkpoint)
            state_dict['pos_embed'] = resize_pos_embed(pos, src, self.pos_grid)
            print_log(f'Vim: pos_embed resized from {src[0]}x{src[1]} to '
                      f'{self.pos_grid[0]}x{self.pos_grid[1]} (class-token slot kept, '
                      'middle of the sequence)', logger='current', level=logging.INFO)
        return state_dict

    def _not_in_this_model(self, key: str) -> bool:
        if key.startswith('head.'):
            return True
        if self.out_type == 'pyramid' and key.startswith('norm_f.'):
            return True
        m = re.match(r'^layers\.(\d+)\.', key)
        return bool(m) and int(m.group(1)) >= len(self.layers)


def _summarise(keys, limit=6):
    return ', '.join(keys[:limit]) + (f' and {len(keys) - limit} more' if len(keys) > limit
                                      else '')


def _square_grid(num_patches: int, source) -> Tuple[int, int]:
    side = int(round(math.sqrt(num_patches)))
    if side * side != num_patches:
        raise ValueError(f'pos_embed of {source!r} has {num_patches} patch slots, not a '
                         'square grid: cannot tell its shape to resize it')
    return side, side
