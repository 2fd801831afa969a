"""MambaOut: a Gated CNN backbone for mmdet, mmseg and mmpretrain.

Paper: `MambaOut: Do We Really Need Mamba for Vision?` (Yu & Wang, arXiv 2405.07992).
Architecture facts follow the official release (yuweihao/MambaOut) and the paper; the
weights of the official release and of timm load unchanged (keys converted on the fly).

Layout of this file, top to bottom: arch table, building blocks (stem, downsample,
Gated CNN block, stage), the :class:`MambaOut` backbone. Checkpoints (official, timm and
our formats, converted on the fly) are read in :mod:`mmmambaout.checkpoint`; the compiled
stages run through :mod:`mmmambaout.models.layers.compiled_blocks`.

Tensors are channels-last (``[B, H, W, C]``) inside the stages: LayerNorm and the two
Linear layers work on the last dim directly. The 3x3 strided convs and the 7x7 depthwise
conv see ``x.permute(0, 3, 1, 2)``, which for a contiguous NHWC tensor is a
``channels_last`` NCHW view, so they run in channels-last memory format (cuDNN / oneDNN
NHWC kernels) and the permute back is again free.

Our state-dict layout (backbone)::

    stem.{conv1,norm1,conv2,norm2}
    stages.{i}.downsample.{conv,norm}      (i >= 1)
    stages.{i}.blocks.{j}.{norm,fc1,conv,fc2}
    norm{i}                                 (output norms, dense mode only)

and for the classifier head (:class:`MambaOutClsHead`): ``head.{norm,fc1,hidden_norm,fc2}``.
"""
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.model.weight_init import trunc_normal_

from mmmambaout.checkpoint import load_mambaout_state_dict
from mmmambaout.models.backbones.base import ArchBackbone
from mmmambaout.models.layers import (COMPILE_MODES, GRAPH_FREE_MODES, DropPath, TokenSSM,
                                      compiled_blocks_runner)
from mmmambaout.ops.gated_conv_mixer import check_conv_layout, gated_conv_mixer
from mmmambaout.registry import register_model

ARCH_SETTINGS = {
    'femto': dict(depths=(3, 3, 9, 3), dims=(48, 96, 192, 288)),
    'kobe': dict(depths=(3, 3, 15, 3), dims=(48, 96, 192, 288)),
    'tiny': dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 576)),
    'small': dict(depths=(3, 4, 27, 3), dims=(96, 192, 384, 576)),
    'base': dict(depths=(3, 4, 27, 3), dims=(128, 256, 512, 768)),
}
ARCH_ALIASES = {'f': 'femto', 'k': 'kobe', 't': 'tiny', 's': 'small', 'b': 'base'}
# token mixer per stage: MambaOut's Gated CNN, or the same block with a selective scan
# after its convolution (a Mamba block; MambaOut paper Fig. 1), scanned both ways or causally
TOKEN_MIXERS = {'gated_cnn': None, 'bi_ssm': True, 'causal_ssm': False}


def _layer_norm(dim):
    return nn.LayerNorm(dim, eps=1e-6)


def _to_nchw(x):
    """NHWC tensor -> NCHW view (``channels_last`` in memory when ``x`` is contiguous)."""
    return x.permute(0, 3, 1, 2)


def _to_nhwc(x):
    return x.permute(0, 2, 3, 1)


class Stem(nn.Module):
    """Stride 4: conv3x3/2 (C/2) -> LN -> GELU -> conv3x3/2 (C) -> LN. NCHW in, NHWC out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1)
        self.norm1 = _layer_norm(out_channels // 2)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, 3, stride=2, padding=1)
        self.norm2 = _layer_norm(out_channels)

    def forward(self, x):
        # A 3-channel image is cheap to reorder; afterwards every permute is a view.
        x = self.conv1(x.contiguous(memory_format=torch.channels_last))
        x = self.act(self.norm1(_to_nhwc(x)))
        x = self.conv2(_to_nchw(x))
        return self.norm2(_to_nhwc(x))


class Downsample(nn.Module):
    """Stride 2 between stages: conv3x3/2 (with bias) -> LN, no norm before. NHWC in/out."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = _layer_norm(out_channels)

    def forward(self, x):
        return self.norm(_to_nhwc(self.conv(_to_nchw(x))))


class GatedCNNBlock(nn.Module):
    """Gated CNN block, NHWC in/out (pre-norm, residual, no layer scale).

    ``fc1`` expands C to 2H (H = int(expansion_ratio * C)), split into the gate ``g``
    (H), an identity part ``i`` (H - C') and a conv part ``c`` (C' = conv_ratio * C);
    ``out = fc2(GELU(g) * cat(i, dwconv7x7(c)))``. The part between ``fc1`` and ``fc2``
    is one op (:func:`mmmambaout.ops.gated_conv_mixer`): fused kernels on CUDA when
    ``fused`` is on, the composite PyTorch ops otherwise (same math). Under
    ``torch.compile`` it is always the composite ops, which inductor fuses itself (the
    fused op is an ``autograd.Function`` around Triton kernels it would not see into).

    With ``ssm`` (``'bi_ssm'`` or ``'causal_ssm'``) it is the Mamba block of the paper's
    Fig. 1 on the same skeleton: ``c`` goes through the convolution, SiLU and a selective
    scan over the stage's tokens (:class:`~mmmambaout.models.layers.TokenSSM`) before the
    gate: ``out = fc2(GELU(g) * cat(i, SSM(SiLU(dwconv7x7(c)))))``; composite ops.
    """

    def __init__(self,
                 dim: int,
                 expansion_ratio: float = 8 / 3,
                 kernel_size: int = 7,
                 conv_ratio: float = 1.0,
                 drop_path: float = 0.,
                 fused: bool = True,
                 mixer: str = 'gated_cnn',
                 conv_layout: str = 'auto'):
        super().__init__()
        self.hidden = int(expansion_ratio * dim)
        conv_channels = int(conv_ratio * dim)
        self.norm = _layer_norm(dim)
        self.fc1 = nn.Linear(dim, 2 * self.hidden)
        self.conv = nn.Conv2d(
            conv_channels,
            conv_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=conv_channels)
        if TOKEN_MIXERS[mixer] is not None:
            self.ssm = TokenSSM(conv_channels, bidirectional=TOKEN_MIXERS[mixer])
        self.fc2 = nn.Linear(self.hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.fused = fused
        self.conv_layout = conv_layout

    def forward(self, x):
        y = self.fc1(self.norm(x))
        if hasattr(self, 'ssm'):
            nc = self.conv.in_channels
            g, i, c = torch.split(y, [self.hidden, self.hidden - nc, nc], dim=-1)
            c = self.ssm(F.silu(_to_nhwc(self.conv(_to_nchw(c)))))
            mix = F.gelu(g) * torch.cat((i, c), dim=-1)
        else:
            fused = self.fused and not torch.compiler.is_compiling()
            mix = gated_conv_mixer(y, self.conv.weight, self.conv.bias, self.hidden,
                                   backend='auto' if fused else 'reference',
                                   conv_layout=self.conv_layout)
        return x + self.drop_path(self.fc2(mix))


class MambaOutStage(nn.Module):
    """Optional downsample followed by ``depth`` Gated CNN blocks.

    ``compile_name`` (set by :class:`MambaOut`) runs the blocks through
    :func:`compiled_blocks_runner` under that name. Only the blocks: they are where the
    ~20 small ops per block sit; the downsample is one conv and one LayerNorm.

    Compilation serves training steps. Without grad (validation, testing, inference) the
    blocks run eagerly (fused mixer): there each new input size would cost a compilation
    or a CUDA graph recording that a few images do not pay back, so validation inside
    training runs exactly as fast as an eager model from its first image (measured:
    docs/benchmarks.md). A frozen stage in training runs the same compilation without
    graphs (no backward to replay). H and W are marked dynamic on the first call, so a
    stage compiles one graph for its input sizes instead of a static one first (dynamo
    may still recompile on a guard: a square first input, whose H and W then share one
    symbol, or a size-dependent fusion decision of inductor).
    """

    def __init__(self, in_channels, out_channels, depth, drop_path_rates, downsample,
                 fused=True, mixer='gated_cnn', conv_layout='auto'):
        super().__init__()
        self.downsample = Downsample(in_channels, out_channels) if downsample else nn.Identity()
        self.mixer = mixer
        self.blocks = nn.Sequential(*[
            GatedCNNBlock(out_channels, drop_path=drop_path_rates[j], fused=fused, mixer=mixer,
                          conv_layout=conv_layout)
            for j in range(depth)
        ])
        self.with_cp = False
        # strs, not the compiled function: pickle, deepcopy
        self.compile_name, self.compile_mode, self.compile_memory_budget = None, 'default', None

    def forward(self, x):
        x = self.downsample(x)
        if self.compile_name is not None and torch.is_grad_enabled():
            mode = self.compile_mode
            if not next(self.blocks.parameters()).requires_grad:
                mode = GRAPH_FREE_MODES.get(mode, mode)
            # one graph for every H, W (NHWC dims 1, 2): detection sizes vary per batch;
            # not inside a trace of the whole model (torch.compile(model)), which forbids it
            if not torch.compiler.is_compiling():
                torch._dynamo.maybe_mark_dynamic(x, 1)
                torch._dynamo.maybe_mark_dynamic(x, 2)
            run = compiled_blocks_runner(self.compile_name, mode, self.compile_memory_budget)
            try:
                return run(self.blocks, x)
            except torch._dynamo.exc.BackendCompilerFailed as e:
                raise RuntimeError(
                    f'MambaOut compile_stages: torch.compile could not compile '
                    f'{self.compile_name} on {x.device.type} ({type(e.inner_exception).__name__}'
                    f': {e.inner_exception}). It needs a working inductor backend (Triton on '
                    f'CUDA, a C++ compiler on the CPU); or train without it: '
                    f'model.backbone.compile_stages=False') from e
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@register_model
class MambaOut(ArchBackbone):
    """MambaOut backbone (stem + 4 stages of Gated CNN blocks).

    Args:
        arch (str | dict): one of ``'femto'``, ``'kobe'``, ``'tiny'``, ``'small'``,
            ``'base'`` (or ``'f'``, ``'k'``, ``'t'``, ``'s'``, ``'b'``), or a dict with
            ``depths`` and ``dims`` (sequences of equal length). Defaults to ``'tiny'``.
        in_channels (int): input image channels. Defaults to 3.
        out_indices (Sequence[int] | int): stages whose outputs are returned (negative
            indices count from the end). Defaults to ``(0, 1, 2, 3)``.
        norm_out (bool): add a LayerNorm to each output stage, as the authors do for
            detection and segmentation. Set ``False`` for classification, where
            :class:`MambaOutClsHead` normalises after pooling. Defaults to True.
        frozen_stages (int): ``-1`` freezes nothing, ``0`` the stem, ``k`` the stem, the
            first ``k`` stages (with their downsampling) and their output norms.
        drop_path_rate (float): stochastic depth, rising linearly over all blocks from 0.
        with_cp (bool | Sequence[int]): checkpoint each block (torch.utils.checkpoint)
            whenever gradients are on: less activation memory for one more forward per
            block. A sequence of stage indices checkpoints only those stages (the first
            stage holds the most activation memory at detection resolution).
        fused_mixer (bool): run each block's token mixer (GELU gate, depthwise conv,
            concatenation) as one fused op with Triton kernels on CUDA
            (:mod:`mmmambaout.ops.gated_conv_mixer`); ``False`` uses the composite
            PyTorch ops. Same math either way; CPU always uses the composite ops.
        conv_layout (str): the memory layout of the depthwise convolutions (Gated CNN
            stages, eager or compiled): ``'auto'`` (default) is channels-last, except
            NCHW for float32 on CUDA; ``'channels_last'`` or ``'nchw'`` force one. On
            CUDA, cuDNN builds a plan for every new input shape of a channels-last
            depthwise conv (about 0.75 s per stage in fp16 on an H200), which NCHW does
            not, while channels-last is faster per call in fp16: ``'nchw'`` trades a
            few ms per AMP step for no per-size spikes early in detection training
            (docs/training_speed.md, "Time to steady speed"). Same math either way.
        token_mixers (Sequence[str], optional): per stage, ``'gated_cnn'`` (MambaOut's
            block) or a Mamba block on the same skeleton (see :class:`GatedCNNBlock`):
            ``'bi_ssm'`` (forward and backward scans over the stage's tokens, each with
            its own parameters, as Vim) or ``'causal_ssm'`` (forward only). Everything
            else (stem, downsampling, norms, drop path, ``frozen_stages``, ``with_cp``)
            is the same; Gated CNN stages load the official weights, the SSM parameters
            start from Mamba's initialisation, and only Gated CNN stages are compiled.
            ``tools/analysis/sequence_length.py`` shows where L exceeds 6D.
            Defaults to all ``'gated_cnn'``.
        compile_stages (bool | str | None): run each stage's blocks through
            ``torch.compile`` (inductor; one compiled function per stage, see
            :func:`compiled_blocks_runner`; stem, downsampling and output norms stay
            eager) with the composite mixer ops, which inductor fuses: removes most of
            the per-op host (launch) overhead. Compiles on the first training step, with
            H and W dynamic (see :class:`MambaOutStage`); without grad (validation,
            testing) the stages run eagerly. State-dict keys are unchanged. Drop path
            then draws its masks from inductor's RNG. Exclusive with ``with_cp``. A str is
            ``torch.compile``'s ``mode`` (``'reduce-overhead'``: in training steps the
            compiled stages also replay as CUDA graphs, one recorded per input size;
            frozen stages run compiled without graphs). ``None``
            (default): eager, unless :class:`~mmmambaout.engine.MambaOutCompileHook`
            in the config compiles the stages when training starts on a GPU (our
            configs name it); ``True``, ``False`` or a mode is kept as set.
        compile_memory_budget (float, optional): with ``compile_stages``, AOTAutograd's
            activation memory budget (0-1] for the compiled stages: below 1 the backward
            recomputes cheap ops (norms, GELU, gating) instead of keeping their outputs.
            With ``compile_stages=None`` it is the budget ``MambaOutCompileHook`` uses.
            Its effect on memory and speed: docs/training_speed.md. None (default)
            keeps PyTorch's setting.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=..., prefix=...)``
            loads official / timm / our checkpoints, converting keys on the fly.

    Returns from ``forward``: a tuple of NCHW tensors, one per ``out_indices`` entry.

    ``norm_eval`` does not exist: every norm is a LayerNorm, which has no running stats.
    """

    arch_settings = ARCH_SETTINGS
    arch_aliases = ARCH_ALIASES
    custom_arch_keys = "'depths' and 'dims'"
    # dense output norms (not in classifiers) and SSM mixers (not in MambaOut's weights)
    pretrained_missing_ok = r'^(norm\d+\.|stages\.\d+\.blocks\.\d+\.ssm\.)'

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 norm_out: bool = True,
                 frozen_stages: int = -1,
                 drop_path_rate: float = 0.,
                 with_cp: Union[bool, Sequence[int]] = False,
                 fused_mixer: bool = True,
                 conv_layout: str = 'auto',
                 token_mixers: Optional[Sequence[str]] = None,
                 compile_stages: Union[bool, str, None] = None,
                 compile_memory_budget: Optional[float] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch = self._parse_arch(arch)
        depths, dims = self.arch['depths'], self.arch['dims']
        num_stages = len(depths)
        self.depths, self.dims, self.num_stages = depths, dims, num_stages

        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
            raise TypeError(f'out_indices must be an int or a non-empty sequence of ints, '
                            f'got {out_indices!r}')
        indices = self._normalise_out_indices(out_indices, num_stages)
        if len(set(indices)) != len(indices):
            raise ValueError(f'out_indices has duplicates: {out_indices!r}')
        self.out_indices = tuple(sorted(indices))
        self._check_frozen_stages(frozen_stages, num_stages)
        self._check_drop_path_rate(drop_path_rate)
        self.norm_out = norm_out
        self.frozen_stages = frozen_stages
        self.drop_path_rate = drop_path_rate
        if isinstance(with_cp, bool):
            cp_stages = set(range(num_stages)) if with_cp else set()
        elif isinstance(with_cp, Sequence) and all(
                isinstance(i, int) and -num_stages <= i < num_stages for i in with_cp):
            cp_stages = {i % num_stages for i in with_cp}
        else:
            raise ValueError(f'with_cp must be a bool or a sequence of stage indices in '
                             f'[{-num_stages}, {num_stages - 1}], got {with_cp!r}')
        self.with_cp = with_cp
        self.fused_mixer = fused_mixer
        check_conv_layout(conv_layout)
        self.conv_layout = conv_layout
        token_mixers = tuple(token_mixers or ('gated_cnn', ) * num_stages)
        if len(token_mixers) != num_stages or not set(token_mixers) <= set(TOKEN_MIXERS):
            raise ValueError(f'token_mixers must name one of {tuple(TOKEN_MIXERS)} for each '
                             f'of the {num_stages} stages, got {token_mixers!r}')
        self.token_mixers = token_mixers
        self.compile_stages, self.compile_memory_budget = None, None

        self.stem = Stem(in_channels, dims[0])
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        for i in range(num_stages):
            start = sum(depths[:i])
            stage = MambaOutStage(dims[i - 1] if i else dims[0], dims[i], depths[i],
                                  rates[start:start + depths[i]], downsample=i > 0,
                                  fused=fused_mixer, mixer=token_mixers[i],
                                  conv_layout=conv_layout)
            stage.with_cp = i in cp_stages
            self.stages.append(stage)
        if norm_out:
            for i in self.out_indices:
                self.add_module(f'norm{i}', _layer_norm(dims[i]))
        self.out_channels = tuple(dims[i] for i in self.out_indices)
        if compile_stages is not None:
            self.compile_blocks(compile_stages, compile_memory_budget)
        elif compile_memory_budget is not None:
            if not 0. < compile_memory_budget <= 1.:
                raise ValueError(f'compile_memory_budget must be in (0, 1], got '
                                 f'{compile_memory_budget!r}')
            self.compile_memory_budget = compile_memory_budget  # for MambaOutCompileHook
        self._freeze_stages()

    def compile_blocks(self, mode: Union[bool, str], memory_budget: Optional[float] = None):
        """Compile (``mode`` True or a ``torch.compile`` mode) or un-compile (False)
        each stage's blocks; what ``compile_stages`` / ``compile_memory_budget`` do at
        construction, callable later (:class:`~mmmambaout.engine.MambaOutCompileHook`)."""
        if isinstance(mode, str) and mode not in COMPILE_MODES:
            raise ValueError(f'compile_stages must be a bool or one of {COMPILE_MODES} '
                             f'(torch.compile modes), got {mode!r}')
        if mode and any(stage.with_cp for stage in self.stages):
            raise ValueError('compile_stages and with_cp are exclusive: with_cp checkpoints '
                             'each block in eager mode, compile_stages compiles the blocks '
                             'of a stage as one graph; use one of them')
        if memory_budget is not None and not (mode and 0. < memory_budget <= 1.):
            raise ValueError(f'compile_memory_budget must be in (0, 1] and needs '
                             f'compile_stages, got {memory_budget!r} with '
                             f'compile_stages={mode!r}')
        self.compile_stages, self.compile_memory_budget = mode, memory_budget
        for i, stage in enumerate(self.stages):
            # SSM stages stay eager: compiling them around the scan operator has not
            # been measured on a GPU yet
            compiled = mode and stage.mixer == 'gated_cnn'
            stage.compile_name = f'mambaout_stage{i}' if compiled else None
            stage.compile_mode = mode if isinstance(mode, str) else 'default'
            stage.compile_memory_budget = memory_budget

    @classmethod
    def _parse_arch(cls, arch) -> Dict[str, tuple]:
        arch = cls._lookup_arch(arch)
        if set(arch) != {'depths', 'dims'}:
            raise ValueError("a custom arch dict needs exactly the keys 'depths' and 'dims', "
                             f'got {sorted(arch)}')
        depths, dims = tuple(arch['depths']), tuple(arch['dims'])
        if len(depths) != len(dims) or not depths:
            raise ValueError(f'arch depths {depths} and dims {dims} must be non-empty and '
                             'of equal length')
        if not all(isinstance(v, int) and v > 0 for v in depths + dims):
            raise ValueError(f'arch depths and dims must be positive ints, got {arch}')
        return dict(depths=depths, dims=dims)

    def forward(self, x):
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                y = getattr(self, f'norm{i}')(x) if self.norm_out else x
                outs.append(_to_nchw(y).contiguous())
        return tuple(outs)

    # -- freezing ---------------------------------------------------------------------
    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.stem
        for i in range(self.frozen_stages):
            yield self.stages[i]
            if self.norm_out and i in self.out_indices:
                yield getattr(self, f'norm{i}')

    # -- initialisation ---------------------------------------------------------------
    def _init_from_scratch(self):
        # Official init: truncated normal std 0.02 for Linear / Conv weights, zero bias;
        # the SSM mixers keep Mamba's (TokenSSM.reset_parameters)
        ssm_modules = {id(m) for ssm in self.modules() if isinstance(ssm, TokenSSM)
                       for m in ssm.modules()}
        for m in self.modules():
            if id(m) in ssm_modules:
                continue
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _pretrained_state_dict(self, checkpoint, prefix):
        state_dict = load_mambaout_state_dict(checkpoint, prefix=prefix)
        # Classifier head keys belong to MambaOutClsHead: dropped silently here.
        return {k: v for k, v in state_dict.items() if not k.startswith('head.')}
