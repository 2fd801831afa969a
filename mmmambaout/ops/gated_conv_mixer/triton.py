"""Triton elementwise passes of the fused Gated CNN token mixer (CUDA).

Rows are pixels (``M = B * H * W``), columns the ``hidden`` channels. Column ``j`` of
the output gates ``v_j = y[hidden + j]`` for ``j < hidden - C`` (identity part) and
``conv[j - (hidden - C)]`` otherwise; all arithmetic in float32, one rounding at the end.
"""
import torch
import triton
import triton.language as tl

BLOCK_M, BLOCK_H, NUM_WARPS = 32, 128, 4


@triton.jit
def _load_gate_inputs(y_ptr, conv_ptr, rows, cols, mask, hidden, n_id, n_conv):
    r = rows.to(tl.int64)[:, None]
    c = cols[None, :]
    g = tl.load(y_ptr + r * (2 * hidden) + c, mask=mask, other=0.).to(tl.float32)
    is_id = c < n_id
    vi = tl.load(y_ptr + r * (2 * hidden) + hidden + c, mask=mask & is_id, other=0.)
    vc = tl.load(conv_ptr + r * n_conv + (c - n_id), mask=mask & (c >= n_id), other=0.)
    v = tl.where(is_id, vi.to(tl.float32), vc.to(tl.float32))
    return g, v, r, c, is_id


# M (pixels) changes with every input size: not specialised on it (its divisibility by 16
# would compile a second variant per kernel for some image sizes, at test time per new size)
@triton.jit(do_not_specialize=['M'])
def _fwd_kernel(y_ptr, conv_ptr, out_ptr, M, hidden, n_id, n_conv,
                BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (rows < M)[:, None] & (cols < hidden)[None, :]
    g, v, r, c, _ = _load_gate_inputs(y_ptr, conv_ptr, rows, cols, mask, hidden, n_id, n_conv)
    act = 0.5 * g * (1. + tl.erf(g * 0.7071067811865476))
    tl.store(out_ptr + r * hidden + c, (act * v).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=['M'])
def _bwd_kernel(dout_ptr, y_ptr, conv_ptr, dy_ptr, dconv_ptr, M, hidden, n_id, n_conv,
                BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (rows < M)[:, None] & (cols < hidden)[None, :]
    g, v, r, c, is_id = _load_gate_inputs(y_ptr, conv_ptr, rows, cols, mask, hidden, n_id,
                                          n_conv)
    d = tl.load(dout_ptr + r * hidden + c, mask=mask, other=0.).to(tl.float32)
    cdf = 0.5 * (1. + tl.erf(g * 0.7071067811865476))
    pdf = tl.exp(-0.5 * g * g) * 0.3989422804014327
    dtype = dy_ptr.dtype.element_ty
    tl.store(dy_ptr + r * (2 * hidden) + c, (d * v * (cdf + g * pdf)).to(dtype), mask=mask)
    dv = (d * g * cdf).to(dtype)
    tl.store(dy_ptr + r * (2 * hidden) + hidden + c, dv, mask=mask & is_id)
    tl.store(dconv_ptr + r * n_conv + (c - n_id), dv, mask=mask & (c >= n_id))


def _grid(M, hidden):
    # integer ceil division: triton.cdiv is a jit function, about 2 us a host call
    return (-(-M // BLOCK_M), -(-hidden // BLOCK_H))


class TritonGate:

    @staticmethod
    def forward(y, conv, hidden):
        n_conv = conv.shape[-1]
        M = y.numel() // y.shape[-1]
        out = torch.empty(y.shape[:-1] + (hidden, ), device=y.device, dtype=y.dtype)
        _fwd_kernel[_grid(M, hidden)](y, conv, out, M, hidden, hidden - n_conv, n_conv,
                                      BLOCK_M=BLOCK_M, BLOCK_H=BLOCK_H, num_warps=NUM_WARPS)
        return out

    @staticmethod
    def backward(dout, y, conv, hidden, dy, dconv):
        n_conv = conv.shape[-1]
        M = y.numel() // y.shape[-1]
        _bwd_kernel[_grid(M, hidden)](dout, y, conv, dy, dconv, M, hidden, hidden - n_conv,
                                      n_conv, BLOCK_M=BLOCK_M, BLOCK_H=BLOCK_H,
                                      num_warps=NUM_WARPS)
