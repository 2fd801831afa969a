"""The token mixer of MambaOut's Gated CNN block as one op.

``gated_conv_mixer(y, weight, bias, hidden)`` takes the ``fc1`` output ``y``
``[B, H, W, 2 * hidden]``, read as the gate ``g`` (``hidden`` channels), an identity
part ``i`` (``hidden - C``) and a conv part ``c`` (``C = weight.shape[0]``), and returns
``GELU(g) * cat(i, dwconv(c))`` ``[B, H, W, hidden]`` (exact, erf GELU; ``dwconv`` a
depthwise ``k x k`` conv, stride 1, same padding).

Backends:

* ``'reference'``: the composite PyTorch ops (split, conv, GELU, cat, mul), any device;
  what the fused path is tested against.
* ``'fused'``: one ``autograd.Function``. Forward: the depthwise conv (cuDNN / oneDNN;
  channels-last, or NCHW for float32 on CUDA, see ``_conv_layout``), then GELU, gating
  and the concatenation in one elementwise pass.
  Backward: one elementwise pass writes the gradients of ``g`` and ``i`` straight into
  the gradient of ``y`` and the gradient of the conv output; the conv backward fills
  the ``c`` slice. It saves only ``y`` and the conv output for the backward (the
  composite version also keeps ``GELU(g)``, the concatenation and a copy of ``c``:
  about 30% less activation memory per block) and launches no cat / split copies.
  The elementwise passes are Triton kernels on CUDA and PyTorch ops elsewhere (the
  latter exist to test the op's plumbing on CPU).

``backend='auto'`` is ``'fused'`` for CUDA tensors when Triton imports, else
``'reference'``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ['CONV_LAYOUTS', 'check_conv_layout', 'gated_conv_mixer',
           'gated_conv_mixer_reference', 'triton_available']

_TRITON = None


def triton_available() -> bool:
    global _TRITON
    if _TRITON is None:
        try:
            from . import triton as _  # noqa: F401
            _TRITON = True
        except Exception:  # ImportError, or a Triton without a working backend
            _TRITON = False
    return _TRITON


def _split_sizes(y, weight, hidden):
    conv_channels = weight.shape[0]
    if y.shape[-1] != 2 * hidden or not 0 < conv_channels <= hidden:
        raise ValueError(f'gated_conv_mixer: y has {y.shape[-1]} channels, expected '
                         f'2 * hidden = {2 * hidden} with 0 < conv channels '
                         f'({conv_channels}) <= hidden')
    return hidden, hidden - conv_channels, conv_channels


CONV_LAYOUTS = ('auto', 'channels_last', 'nchw')


def check_conv_layout(layout):
    """Raise ``ValueError`` unless ``layout`` is one of :data:`CONV_LAYOUTS`."""
    if layout not in CONV_LAYOUTS:
        raise ValueError(f'conv_layout must be one of {CONV_LAYOUTS}, got {layout!r}')


def _conv_layout(c, layout='auto'):
    """Memory format for the depthwise conv of ``c``: ``layout``, or for ``'auto'``
    channels-last, except float32 on CUDA: there cuDNN builds a plan per new input shape
    for channels-last depthwise convs (about 0.4 s per shape for forward and backward on
    an H200, 0.75 s in fp16), while PyTorch's NCHW depthwise kernels need no plan and are
    faster in float32. In fp16 / bf16 channels-last stays faster per call (measured:
    docs/training_speed.md, "Time to steady speed")."""
    check_conv_layout(layout)
    if layout == 'nchw' or (layout == 'auto' and c.is_cuda and c.dtype == torch.float32):
        return torch.contiguous_format
    return torch.channels_last


class _GradInStandardLayout(torch.autograd.Function):
    """Identity; the gradient comes back with the standard contiguous strides. A
    channels-last conv returns its ``[C, 1, k, k]`` weight gradient with strides
    ``[k*k, 1, k, 1]``: the same memory (dim 1 has size 1), which autograd accepts as the
    parameter's layout, but DDP compares strides exactly and warns ("Grad strides do not
    match bucket view strides") on every rank. The copy is ``C * k * k`` elements."""

    @staticmethod
    def forward(ctx, t):
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad.clone(memory_format=torch.contiguous_format)


def _dwconv(c, weight, bias, layout='auto'):
    """Depthwise conv of an NHWC tensor (layout: :func:`_conv_layout`); NHWC contiguous out."""
    if weight.requires_grad and torch.is_grad_enabled():
        weight = _GradInStandardLayout.apply(weight)
    c = c.permute(0, 3, 1, 2)
    c = c.contiguous(memory_format=_conv_layout(c, layout))
    out = F.conv2d(c, weight, bias, padding=weight.shape[-1] // 2, groups=weight.shape[0])
    return out.permute(0, 2, 3, 1).contiguous()


def gated_conv_mixer_reference(y, weight, bias, hidden, conv_layout='auto'):
    g, i, c = torch.split(y, _split_sizes(y, weight, hidden), dim=-1)
    return F.gelu(g) * torch.cat((i, _dwconv(c, weight, bias, conv_layout)), dim=-1)


class _TorchGate:
    """The elementwise passes in PyTorch ops (CPU; tests of the fused op's plumbing)."""

    @staticmethod
    def forward(y, conv, hidden):
        g, v = y[..., :hidden], torch.cat((y[..., hidden:y.shape[-1] - conv.shape[-1]], conv), -1)
        return F.gelu(g) * v

    @staticmethod
    def backward(dout, y, conv, hidden, dy, dconv):
        ni = hidden - conv.shape[-1]
        acc = torch.promote_types(y.dtype, torch.float32)
        g = y[..., :hidden].to(acc)
        v = torch.cat((y[..., hidden:hidden + ni], conv), -1).to(acc)
        d = dout.to(acc)
        cdf = 0.5 * (1 + torch.erf(g * 0.7071067811865476))
        pdf = torch.exp(-0.5 * g * g) * 0.3989422804014327
        dy[..., :hidden] = d * v * (cdf + g * pdf)
        dv = d * g * cdf
        dy[..., hidden:hidden + ni] = dv[..., :ni]
        dconv.copy_(dv[..., ni:])


def _gate_impl(device):
    if device.type == 'cuda' and triton_available():
        from .triton import TritonGate
        return TritonGate
    return _TorchGate


class _GatedConvMixer(torch.autograd.Function):

    @staticmethod
    def forward(ctx, y, weight, bias, hidden, conv_layout):
        _, _, nc = _split_sizes(y, weight, hidden)
        impl = _gate_impl(y.device)
        y = y.contiguous()
        # conv weights in y's dtype, as autocast would give them (no autocast context
        # here: entering one costs host time on every block)
        w = weight.to(y.dtype)
        b = bias.to(y.dtype) if bias is not None else None
        conv = _dwconv(y[..., 2 * hidden - nc:], w, b, conv_layout)
        out = impl.forward(y, conv, hidden)
        ctx.save_for_backward(y, conv, w)
        ctx.hidden, ctx.has_bias, ctx.weight_dtype = hidden, bias is not None, weight.dtype
        ctx.conv_layout = conv_layout
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return out

    @staticmethod
    def backward(ctx, dout):
        y, conv, w = ctx.saved_tensors
        hidden, nc = ctx.hidden, w.shape[0]
        impl = _gate_impl(y.device)
        dy = torch.empty_like(y)
        dconv = torch.empty_like(conv)
        impl.backward(dout.contiguous(), y, conv, hidden, dy, dconv)
        # the conv input is re-read from y (a strided slice) instead of saving a copy
        c = y[..., 2 * hidden - nc:].permute(0, 3, 1, 2)
        layout = _conv_layout(c, ctx.conv_layout)
        c = c.contiguous(memory_format=layout)
        pad = w.shape[-1] // 2
        dc, dw, db = torch.ops.aten.convolution_backward(
            dconv.permute(0, 3, 1, 2).contiguous(memory_format=layout), c, w,
            [nc] if ctx.has_bias else None,
            [1, 1], [pad, pad], [1, 1], False, [0, 0], nc,
            [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias])
        if ctx.needs_input_grad[0]:
            dy[..., 2 * hidden - nc:] = dc.permute(0, 2, 3, 1)
        return (dy if ctx.needs_input_grad[0] else None,
                # in the weight's own (contiguous) layout: a channels-last conv returns
                # strides [k*k, 1, k, 1], which DDP would copy into its buckets each step
                dw.to(ctx.weight_dtype, memory_format=torch.contiguous_format)
                if dw is not None else None,
                db.to(ctx.bias_dtype) if ctx.has_bias and db is not None else None, None, None)


def gated_conv_mixer(y, weight, bias, hidden, backend='auto', conv_layout='auto'):
    """``GELU(g) * cat(i, dwconv(c))`` for the ``fc1`` output ``y``; see the module doc.
    ``conv_layout`` (``'auto'``, ``'channels_last'``, ``'nchw'``): the memory layout the
    depthwise conv runs in (``_conv_layout``); the result is the same up to rounding."""
    if backend == 'auto':
        backend = 'fused' if y.is_cuda and triton_available() else 'reference'
    if backend == 'reference':
        return gated_conv_mixer_reference(y, weight, bias, hidden, conv_layout)
    if backend == 'fused':
        return _GatedConvMixer.apply(y, weight, bias, hidden, conv_layout)
    raise ValueError(f"gated_conv_mixer backend must be 'auto', 'fused' or 'reference', "
                     f'got {backend!r}')
