"""Triton forward and backward of the selective scan (CUDA).

One program handles ``BLOCK_D`` channels of one batch element and all N states, and
walks the sequence in chunks of ``BLOCK_L`` steps. Inside a chunk, the recurrence
``h_t = exp(delta'_t A) h_{t-1} + delta'_t B_t u_t`` is an associative scan over the
affine maps ``(a, b)`` along the chunk (``tl.associative_scan``); the state entering
the chunk is carried in registers. Only products of decays ``<= 1`` are formed, so
large ``delta`` underflows to 0 and never gives NaN. The state and all arithmetic are
float32; inputs may be float32, float16 or bfloat16.

The forward's tiles are (step, channel, state), so the scanned axis stays inside a
thread (a sequential scan, no shuffles); the backward's are (channel, state, step),
which keeps its many sums over the states inside a thread instead. Each was the faster
layout for its kernel on an H100 (docs/selective_scan.md).

The forward saves the state every backward chunk (batch, dim, chunks, N); the backward
walks its chunks in reverse, recomputes each chunk's states from the saved one, and
solves the adjoint recurrence ``g_t = C_t dy_t + exp(delta'_{t+1} A) g_{t+1}`` with a
reverse scan. Gradients of B and C are reduced over the channels of a program, those of
A, D and delta_bias over its steps, and added atomically (float32) into zeroed buffers:
on a GPU their last bits may differ from run to run (the order of the additions).

The backward (and, where configured, the forward) splits the sequence into segments of
``SEG_L`` steps that run in parallel programs, so a long sequence is not one program's
serial walk over all its chunks. A segment of the backward needs only the adjoint
entering from its end, an affine function of the one entering the next segment:
``g_first = exp(S A) g_after + b`` with ``S`` the sum of ``delta'`` over the segment and
``b = sum_t exp(S_t A) C_t dy_t`` (``S_t``: the sum up to step t). A first kernel gives
each segment's map; each program of the second composes the maps of the segments after
its own (quadratic in the segment count: small up to some ten thousand steps), then walks
its own chunks as above. The forward's segments work the same way with the state map
``h_end = exp(S A) h_start + h``. As in Mamba, ``A <= 0`` and ``delta' >= 0`` are
assumed, so every factor is a decay ``<= 1``.
"""
import math
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

__all__ = ['selective_scan_triton', 'CONFIGS']

#: Launch parameters per input width, tuned on an H100 at Vim-S shapes (see
#: docs/selective_scan.md). The backward's ``BLOCK_L`` is also the interval at which the
#: forward saves the state, so the two chunk lengths are independent. The backward's
#: ``PREFETCH`` (loads one chunk ahead) is off for 16-bit inputs, where it raises the
#: registers from 168 to 244 (sm_90), fewer programs per SM. ``SEG_L`` is the length of
#: the segments a kernel runs in parallel programs (None: one segment): the backward's a
#: multiple of its ``BLOCK_L``, the forward's a multiple of both ``BLOCK_L``.
CONFIGS = {
    'float32': dict(fwd=dict(BLOCK_L=64, BLOCK_D=4, num_warps=2, SEG_L=None),
                    bwd=dict(BLOCK_L=16, BLOCK_D=4, num_warps=2, PREFETCH=True, SEG_L=1024)),
    '16bit': dict(fwd=dict(BLOCK_L=64, BLOCK_D=1, num_warps=1, SEG_L=None),
                  bwd=dict(BLOCK_L=16, BLOCK_D=2, num_warps=2, PREFETCH=False, SEG_L=None)),
}


def _configs(dtype: torch.dtype):
    """(forward, backward) launch parameters for inputs of ``dtype``."""
    cfg = CONFIGS['16bit' if dtype in (torch.float16, torch.bfloat16) else 'float32']
    fwd, bwd = cfg['fwd'], cfg['bwd']
    for name, seg_l, blocks in (('forward', fwd.get('SEG_L'), (fwd['BLOCK_L'], bwd['BLOCK_L'])),
                                ('backward', bwd.get('SEG_L'), (bwd['BLOCK_L'], ))):
        if seg_l is not None and (seg_l <= 0 or any(seg_l % b for b in blocks)):
            raise ValueError(f"selective scan CONFIGS: the {name}'s SEG_L {seg_l} is not a "
                             f"positive multiple of {' and '.join(map(str, blocks))} "
                             '(BLOCK_L); None runs one segment')
    return fwd, bwd


def _cdiv(a, b):
    """``ceil(a / b)`` for integers, symbolic ones too (``torch.compile``). Not
    ``triton.cdiv``: a jit function, about 2 us a host call, on the path of every launch."""
    return (a + b - 1) // b


def _block_n(N: int) -> int:
    """The state tile: the next power of two >= N, at least 2 (integer arithmetic, not
    ``triton.next_power_of_2``, a jit function)."""
    return max(1 << (N - 1).bit_length(), 2)


def _segments(n_chunks: int, seg_l: Optional[int], block_l: int) -> Tuple[int, int]:
    """(chunks per segment, segments) for ``n_chunks`` chunks of ``block_l`` steps."""
    seg_chunks = n_chunks if seg_l is None else seg_l // block_l
    return seg_chunks, _cdiv(n_chunks, seg_chunks)


@triton.jit
def _affine_combine(a1, b1, a2, b2):
    # compose h -> a1 h + b1, then h -> a2 h + b2
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), accurate for very negative x too
    (log(1 + exp(-20)) rounds to 0 in float32; softplus(-20) is 2.06e-9). log1p(e) as
    log(u) * e / (u - 1) with u = 1 + e rounded (Goldberg): a few ulps for every e."""
    e = tl.exp(-tl.abs(x))
    u = 1.0 + e
    log1p = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
    return tl.maximum(x, 0.0) + log1p


@triton.jit
def _delta(stored, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """delta' (zero where masked) and delta + bias from delta as loaded (``bias``
    broadcast to the tile)."""
    raw = stored.to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias
    dt = raw
    if SOFTPLUS:
        dt = _softplus(raw)
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def _channel_tile(A_ptr, bias_ptr, dim, H, N, HAS_BIAS: tl.constexpr,
                  BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's ``BLOCK_D`` channels (program_id 0) and the states: offsets, masks,
    their B / C group, A (float32) and delta_bias (zero without it)."""
    pid_d = tl.program_id(0)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_d = offs_d < dim
    mask_n = offs_n < N
    mask_dn = mask_d[:, None] & mask_n[None, :]
    A = tl.load(A_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mask_dn,
                other=0.0).to(tl.float32)
    bias = tl.zeros((BLOCK_D,), tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    return offs_d, offs_n, mask_d, mask_n, mask_dn, (pid_d * BLOCK_D) // H, A, bias


@triton.jit
def _segment_chunks(pid_s, seg_chunks, n_chunks, SEGMENTED: tl.constexpr):
    """The chunks ``[lo, hi)`` of segment ``pid_s``: all of them unless ``SEGMENTED``.
    (The chunk count is an argument, not a constant, so a new sequence length compiles no
    new kernel; the unsegmented kernel keeps the plain loop over all chunks.)"""
    if SEGMENTED:
        lo = pid_s * seg_chunks
        return lo, tl.minimum(lo + seg_chunks, n_chunks)
    return 0, n_chunks


@triton.jit
def _store_segment_map(seg_v_ptr, seg_s_ptr, seg, v, S, dim, N, offs_d, offs_n, mask_d,
                       mask_dn):
    """Segment ``seg`` (``batch * n_seg + segment``) as the map ``x -> exp(S A) x + v``:
    ``v`` (BLOCK_D, BLOCK_N) into seg_v (batch, n_seg, dim, N), ``S`` (BLOCK_D, ) into
    seg_s (batch, n_seg, dim)."""
    tl.store(seg_v_ptr + (seg * dim + offs_d[:, None]) * N + offs_n[None, :], v,
             mask=mask_dn)
    tl.store(seg_s_ptr + seg * dim + offs_d, S, mask=mask_d)


@triton.jit
def _apply_segment_map(x, seg_v_ptr, seg_s_ptr, seg, A2, dim, N, offs_d, offs_n, mask_d,
                       mask_dn):
    """Segment ``seg``'s map (:func:`_store_segment_map`) applied to ``x``; ``A2`` is A
    times log2(e)."""
    S = tl.load(seg_s_ptr + seg * dim + offs_d, mask=mask_d, other=0.0)
    v = tl.load(seg_v_ptr + (seg * dim + offs_d[:, None]) * N + offs_n[None, :],
                mask=mask_dn, other=0.0)
    return tl.exp2(S[:, None] * A2) * x + v


# The kernels' counts (chunks, saved states, segments) vary with the sequence length and
# are not specialised: a count of 1 or a multiple of 16 would compile another kernel. L
# is (at most three kernels: 1, a multiple of 16, other), for the alignment of its rows.
@triton.jit(do_not_specialize=['n_seg'])
def _fwd_segment_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, bias_ptr, seg_h_ptr, seg_s_ptr,
                        dim, L, H, G, N, n_seg,
                        HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, SEG_L: tl.constexpr,
                        BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    # Segment k = program_id(2) as an affine map of the state entering it (the last
    # segment's is never needed): h_end = exp(S A) h_start + h, with S the sum of delta'
    # over the segment and h its end state from zero, sum_t exp(S'_t A) delta'_t B_t u_t
    # where S'_t sums delta' over the steps after t. Chunk by chunk, S'_t inside a chunk
    # is a reverse running sum of the next steps' delta' (never a difference of sums).
    # Tiles are (channel, state, step).
    pid_b = tl.program_id(1).to(tl.int64)
    k = tl.program_id(2)
    offs_l = tl.arange(0, BLOCK_L)
    offs_d, offs_n, mask_d, mask_n, mask_dn, grp, A, bias = _channel_tile(
        A_ptr, bias_ptr, dim, H, N, HAS_BIAS, BLOCK_D, BLOCK_N)
    A2 = A * 1.4426950408889634
    row = pid_b * dim * L + offs_d[:, None] * L
    bc_row = (pid_b * G + grp) * N * L + offs_n[:, None] * L

    h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    S = tl.zeros((BLOCK_D,), tl.float32)
    for c in range(0, SEG_L // BLOCK_L):
        l = k * SEG_L + c * BLOCK_L + offs_l
        ml = l < L
        m2 = mask_d[:, None] & ml[None, :]
        u = tl.load(u_ptr + row + l[None, :], mask=m2, other=0.0).to(tl.float32)
        dt, _ = _delta(tl.load(delta_ptr + row + l[None, :], mask=m2, other=0.0), m2,
                       bias[:, None], HAS_BIAS, SOFTPLUS)
        # delta' one step later, within the chunk
        mn = mask_d[:, None] & ((offs_l < BLOCK_L - 1) & (l + 1 < L))[None, :]
        dt_next, _ = _delta(tl.load(delta_ptr + row + l[None, :] + 1, mask=mn, other=0.0),
                            mn, bias[:, None], HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_row + l[None, :], mask=mask_n[:, None] & ml[None, :],
                     other=0.0).to(tl.float32)
        total = tl.sum(dt, axis=1)
        after = tl.cumsum(dt_next, axis=1, reverse=True)
        w = tl.exp2(after[:, None, :] * A2[:, :, None])
        h = (tl.exp2(total[:, None] * A2) * h
             + tl.sum(w * ((dt * u)[:, None, :] * Bt[None, :, :]), axis=2))
        S += total
    _store_segment_map(seg_h_ptr, seg_s_ptr, pid_b * n_seg + k, h, S, dim, N, offs_d, offs_n,
                       mask_d, mask_dn)


@triton.jit(do_not_specialize=['n_chunks', 'n_saved', 'n_seg', 'seg_chunks'])
def _fwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
                out_ptr, states_ptr, seg_h_ptr, seg_s_ptr,
                dim, L, H, G, N, n_chunks, n_saved, n_seg, seg_chunks,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, SAVE_L: tl.constexpr, SEGMENTED: tl.constexpr,
                BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr):
    # Tiles are (step, channel, state), so the scan runs along the leading axis, which
    # Triton's default layout keeps inside a thread: a sequential scan without shuffles.
    # The state after every SAVE_L steps (the backward's chunk) goes to states_ptr.
    # SEGMENTED: program_id(2) is the segment, chunks [c_lo, c_hi), entered with the
    # state that the earlier segments' maps give; else one program walks all chunks.
    pid_b = tl.program_id(1).to(tl.int64)
    pid_s = tl.program_id(2)
    c_lo, c_hi = _segment_chunks(pid_s, seg_chunks, n_chunks, SEGMENTED)
    offs_l = tl.arange(0, BLOCK_L)
    offs_d, offs_n, mask_d, mask_n, mask_dn, grp, A, bias = _channel_tile(
        A_ptr, bias_ptr, dim, H, N, HAS_BIAS, BLOCK_D, BLOCK_N)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    row = pid_b * dim * L + offs_d[None, :] * L  # (1, BLOCK_D)
    bc_row = (pid_b * G + grp) * N * L + offs_n[None, :] * L  # (1, BLOCK_N)
    st_row = ((pid_b * dim + offs_d[:, None]) * n_saved) * N + offs_n[None, :]
    is_last = (offs_l == BLOCK_L - 1)[:, None, None]

    h = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    if SEGMENTED:
        for j in range(0, pid_s):
            h = _apply_segment_map(h, seg_h_ptr, seg_s_ptr, pid_b * n_seg + j, A2, dim, N,
                                   offs_d, offs_n, mask_d, mask_dn)
    for c in range(c_lo, c_hi):
        l = c * BLOCK_L + offs_l
        ml = l < L
        m2 = ml[:, None] & mask_d[None, :]
        mbc = ml[:, None] & mask_n[None, :]
        u = tl.load(u_ptr + row + l[:, None], mask=m2, other=0.0).to(tl.float32)
        dt, _ = _delta(tl.load(delta_ptr + row + l[:, None], mask=m2, other=0.0), m2,
                       bias[None, :], HAS_BIAS, SOFTPLUS)
        Bt = tl.load(B_ptr + bc_row + l[:, None], mask=mbc, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_row + l[:, None], mask=mbc, other=0.0).to(tl.float32)

        dA = tl.exp2(dt[:, :, None] * A2[None, :, :])
        dBu = (dt * u)[:, :, None] * Bt[:, None, :]
        P, hs = tl.associative_scan((dA, dBu), 0, _affine_combine)
        hs = hs + P * h[None, :, :]
        y = tl.sum(hs * Ct[:, None, :], axis=2)
        # padded steps have decay 1 and input 0: the last row is the chunk's end state
        h = tl.sum(tl.where(is_last, hs, 0.0), axis=0)
        if SAVE_L == BLOCK_L:
            tl.store(states_ptr + st_row + c * N, h, mask=mask_dn)
        else:
            k = (l + 1) // SAVE_L - 1
            save = ((l + 1) % SAVE_L == 0) & (k < n_saved)
            tl.store(states_ptr + st_row[None, :, :] + k[:, None, None] * N, hs,
                     mask=save[:, None, None] & mask_dn[None, :, :])

        if HAS_D:
            y += Dv[None, :] * u
        if HAS_Z:
            z = tl.load(z_ptr + row + l[:, None], mask=m2, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + row + l[:, None], y.to(out_ptr.dtype.element_ty), mask=m2)


@triton.jit
def _bwd_loads(c, c_lo, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, states_ptr, dout_ptr,
               row, bc_row, st_row, offs_l, mask_d, mask_n, mask_dn, L, N,
               HAS_Z: tl.constexpr, BLOCK_L: tl.constexpr):
    """Chunk ``c``'s inputs as stored (all masked off for c < c_lo, the segment's first):
    the state entering it, u, delta, delta one step later, B, C, dout and z (dout again
    without z)."""
    l = c * BLOCK_L + offs_l
    ml = (l < L) & (c >= c_lo)
    m2 = mask_d[:, None] & ml[None, :]
    mbc = mask_n[:, None] & ml[None, :]
    mnext = mask_d[:, None] & ((l + 1 < L) & (c >= c_lo))[None, :]
    h0 = tl.load(states_ptr + st_row + (c - 1) * N, mask=mask_dn & (c > 0) & (c >= c_lo),
                 other=0.0)
    u = tl.load(u_ptr + row + l[None, :], mask=m2, other=0.0)
    delta = tl.load(delta_ptr + row + l[None, :], mask=m2, other=0.0)
    delta_next = tl.load(delta_ptr + row + l[None, :] + 1, mask=mnext, other=0.0)
    Bt = tl.load(B_ptr + bc_row + l[None, :], mask=mbc, other=0.0)
    Ct = tl.load(C_ptr + bc_row + l[None, :], mask=mbc, other=0.0)
    dout = tl.load(dout_ptr + row + l[None, :], mask=m2, other=0.0)
    z = dout
    if HAS_Z:
        z = tl.load(z_ptr + row + l[None, :], mask=m2, other=0.0)
    return h0, u, delta, delta_next, Bt, Ct, dout, z


@triton.jit(do_not_specialize=['n_seg'])
def _bwd_segment_kernel(delta_ptr, A_ptr, C_ptr, z_ptr, bias_ptr, dout_ptr,
                        seg_b_ptr, seg_s_ptr, dim, L, H, G, N, n_seg,
                        HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                        SEG_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_L: tl.constexpr):
    # Segment k = 1 + program_id(2) as an affine map of the adjoint after it (segment 0's
    # is never needed): S = sum of delta'_{t+1} over the segment's steps t, and
    # b = sum_t exp(S_t A) C_t dy_t with S_t that sum over the steps before t, i.e. the
    # sum of delta'_s for s from the segment's second step to t: a running sum, never a
    # difference of sums (which would lose the small S_t next to a large delta'). Tiles
    # are (channel, state, step), as in the backward.
    pid_b = tl.program_id(1).to(tl.int64)
    k = tl.program_id(2) + 1
    offs_l = tl.arange(0, BLOCK_L)
    offs_d, offs_n, mask_d, mask_n, mask_dn, grp, A, bias = _channel_tile(
        A_ptr, bias_ptr, dim, H, N, HAS_BIAS, BLOCK_D, BLOCK_N)
    A2 = A * 1.4426950408889634
    row_d = pid_b * dim * L + offs_d * L
    row = row_d[:, None]
    bc_row = (pid_b * G + grp) * N * L + offs_n[:, None] * L

    b = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    S = tl.zeros((BLOCK_D,), tl.float32)
    for c in range(0, SEG_L // BLOCK_L):
        l = k * SEG_L + c * BLOCK_L + offs_l
        ml = l < L
        m2 = mask_d[:, None] & ml[None, :]
        m_after_first = m2 & (l > k * SEG_L)[None, :]
        dt, _ = _delta(tl.load(delta_ptr + row + l[None, :], mask=m_after_first, other=0.0),
                       m_after_first, bias[:, None], HAS_BIAS, SOFTPLUS)
        dy = tl.load(dout_ptr + row + l[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + row + l[None, :], mask=m2, other=0.0).to(tl.float32)
            dy = dy * z * tl.sigmoid(z)
        Ct = tl.load(C_ptr + bc_row + l[None, :], mask=mask_n[:, None] & ml[None, :],
                     other=0.0).to(tl.float32)
        S_t = S[:, None] + tl.cumsum(dt, axis=1)
        w = tl.exp2(S_t[:, None, :] * A2[:, :, None])
        b += tl.sum(w * (dy[:, None, :] * Ct[None, :, :]), axis=2)
        S += tl.sum(dt, axis=1)
    # and the step after the segment's last (the next segment's first; none after L)
    l_next = (k + 1) * SEG_L
    m_next = mask_d & (l_next < L)
    dt_after, _ = _delta(tl.load(delta_ptr + row_d + l_next, mask=m_next, other=0.0),
                         m_next, bias, HAS_BIAS, SOFTPLUS)
    S += dt_after
    _store_segment_map(seg_b_ptr, seg_s_ptr, pid_b * n_seg + k, b, S, dim, N, offs_d, offs_n,
                       mask_d, mask_dn)


@triton.jit(do_not_specialize=['n_chunks', 'n_seg', 'seg_chunks'])
def _bwd_kernel(u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, states_ptr,
                dout_ptr, dlast_ptr, seg_b_ptr, seg_s_ptr,
                du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
                dim, L, H, G, N, n_chunks, n_seg, seg_chunks,
                HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr,
                SOFTPLUS: tl.constexpr, HAS_DLAST: tl.constexpr, PREFETCH: tl.constexpr,
                SEGMENTED: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
                BLOCK_L: tl.constexpr):
    # SEGMENTED: program_id(2) is the segment, chunks [c_lo, c_hi); walked in reverse
    pid_b = tl.program_id(1).to(tl.int64)
    pid_s = tl.program_id(2)
    c_lo, c_hi = _segment_chunks(pid_s, seg_chunks, n_chunks, SEGMENTED)
    offs_l = tl.arange(0, BLOCK_L)
    offs_d, offs_n, mask_d, mask_n, mask_dn, grp, A, bias = _channel_tile(
        A_ptr, bias_ptr, dim, H, N, HAS_BIAS, BLOCK_D, BLOCK_N)
    A2 = A * 1.4426950408889634
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)

    row = pid_b * dim * L + offs_d[:, None] * L
    bc_row = (pid_b * G + grp) * N * L + offs_n[:, None] * L
    st_row = ((pid_b * dim + offs_d[:, None]) * n_chunks) * N + offs_n[None, :]
    dn_off = (pid_b * dim + offs_d[:, None]) * N + offs_n[None, :]
    is_first = (offs_l == 0)[None, None, :]

    if HAS_DLAST:
        gcarry = tl.load(dlast_ptr + dn_off, mask=mask_dn, other=0.0).to(tl.float32)
    else:
        gcarry = tl.zeros((BLOCK_D, BLOCK_N), tl.float32)
    # the adjoint entering from this segment's end: the later segments' maps, last first
    if SEGMENTED:
        for i in range(0, n_seg - 1 - pid_s):
            gcarry = _apply_segment_map(gcarry, seg_b_ptr, seg_s_ptr,
                                        pid_b * n_seg + n_seg - 1 - i, A2, dim, N, offs_d,
                                        offs_n, mask_d, mask_dn)
    dA_acc = tl.zeros((BLOCK_D, BLOCK_N, BLOCK_L), tl.float32)  # reduced over L at the end
    dD_acc = tl.zeros((BLOCK_D,), tl.float32)
    dbias_acc = tl.zeros((BLOCK_D,), tl.float32)

    # PREFETCH: each chunk's loads are issued one chunk ahead (they do not depend on the
    # adjoint carried between chunks), so their latency overlaps the previous chunk's
    # arithmetic in the program's serial walk over the chunks; it costs registers.
    if PREFETCH:
        h0_n, u_n, delta_n, delta_next_n, B_n, C_n, dout_n, z_n = _bwd_loads(
            c_hi - 1, c_lo, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, states_ptr, dout_ptr,
            row, bc_row, st_row, offs_l, mask_d, mask_n, mask_dn, L, N, HAS_Z, BLOCK_L)
    for i in range(0, c_hi - c_lo):
        c = c_hi - 1 - i
        if PREFETCH:
            h0, u, delta, delta_next, Bt, Ct, dy, z = (h0_n, u_n, delta_n, delta_next_n, B_n,
                                                       C_n, dout_n, z_n)
            h0_n, u_n, delta_n, delta_next_n, B_n, C_n, dout_n, z_n = _bwd_loads(
                c - 1, c_lo, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, states_ptr, dout_ptr,
                row, bc_row, st_row, offs_l, mask_d, mask_n, mask_dn, L, N, HAS_Z, BLOCK_L)
        else:
            h0, u, delta, delta_next, Bt, Ct, dy, z = _bwd_loads(
                c, c_lo, u_ptr, delta_ptr, B_ptr, C_ptr, z_ptr, states_ptr, dout_ptr,
                row, bc_row, st_row, offs_l, mask_d, mask_n, mask_dn, L, N, HAS_Z, BLOCK_L)
        u = u.to(tl.float32)
        Bt = Bt.to(tl.float32)
        Ct = Ct.to(tl.float32)
        dy = dy.to(tl.float32)
        z = z.to(tl.float32)

        l = c * BLOCK_L + offs_l
        ml = l < L
        m2 = mask_d[:, None] & ml[None, :]
        mbc = mask_n[:, None] & ml[None, :]
        dt, raw = _delta(delta, m2, bias[:, None], HAS_BIAS, SOFTPLUS)

        # recompute the chunk's states
        dA = tl.exp2(dt[:, None, :] * A2[:, :, None])
        dtu = dt * u
        dBu = dtu[:, None, :] * Bt[None, :, :]
        P, hs = tl.associative_scan((dA, dBu), 2, _affine_combine)
        hs = hs + P * h0[:, :, None]

        if HAS_Z:
            y = tl.sum(hs * Ct[None, :, :], axis=1)
            if HAS_D:
                y += Dv[:, None] * u
            sig = tl.sigmoid(z)
            dz = dy * y * sig * (1.0 + z * (1.0 - sig))
            tl.store(dz_ptr + row + l[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
            dy = dy * z * sig
        if HAS_D:
            dD_acc += tl.sum(dy * u, axis=1)
            du = dy * Dv[:, None]
        else:
            du = tl.zeros((BLOCK_D, BLOCK_L), tl.float32)

        # adjoint: g_t = C_t dy_t + exp(delta'_{t+1} A) g_{t+1}; g after the chunk = gcarry
        mnext = mask_d[:, None] & (l + 1 < L)[None, :]
        dt_next, _ = _delta(delta_next, mnext, bias[:, None], HAS_BIAS, SOFTPLUS)
        a_next = tl.exp2(dt_next[:, None, :] * A2[:, :, None])
        beta = dy[:, None, :] * Ct[None, :, :]
        Pr, g = tl.associative_scan((a_next, beta), 2, _affine_combine, reverse=True)
        g = g + Pr * gcarry[:, :, None]
        gcarry = tl.sum(tl.where(is_first, g, 0.0), axis=2)

        # d(delta' A)_t = g_t exp(delta'_t A) h_{t-1} = g_t (h_t - delta'_t B_t u_t)
        term = g * (hs - dBu)
        gB = tl.sum(g * Bt[None, :, :], axis=1)
        ddt = tl.sum(term * A[:, :, None], axis=1) + gB * u
        dA_acc += term * dt[:, None, :]
        du += gB * dt
        tl.atomic_add(dB_ptr + bc_row + l[None, :], tl.sum(g * dtu[:, None, :], axis=0), mask=mbc)
        tl.atomic_add(dC_ptr + bc_row + l[None, :], tl.sum(hs * dy[:, None, :], axis=0), mask=mbc)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(raw)
        ddt = tl.where(m2, ddt, 0.0)
        dbias_acc += tl.sum(ddt, axis=1)
        tl.store(ddelta_ptr + row + l[None, :], ddt.to(ddelta_ptr.dtype.element_ty), mask=m2)
        tl.store(du_ptr + row + l[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)

    tl.atomic_add(dA_ptr + offs_d[:, None] * N + offs_n[None, :], tl.sum(dA_acc, axis=2),
                  mask=mask_dn)
    if HAS_D:
        tl.atomic_add(dD_ptr + offs_d, dD_acc, mask=mask_d)
    if HAS_BIAS:
        tl.atomic_add(dbias_ptr + offs_d, dbias_acc, mask=mask_d)


def _block_d(requested: int, H: int) -> int:
    """Largest power of two <= requested that divides the group size H."""
    b = max(1, int(requested))
    while b > 1 and H % b:
        b //= 2
    return b


def _n_saved(L, dtype: torch.dtype):
    """How many states the forward saves for a sequence of ``L`` steps (one per backward
    chunk); ``L`` may be symbolic (``torch.compile``)."""
    return _cdiv(L, _configs(dtype)[1]['BLOCK_L'])


def _buffer_views(alloc, *shapes):
    """Contiguous tensors of the given shapes, views of one buffer ``alloc(numel)`` (one
    allocation, and one memset where ``alloc`` zeroes); each starts 64-byte aligned for
    4-byte elements, as the kernels' pointer specialisation prefers."""
    layouts, total = [], 0
    for shape in shapes:
        strides, n = [], 1
        for size in reversed(shape):
            strides.append(n)
            n *= size
        layouts.append((shape, strides[::-1], total))
        total += -(-n // 16) * 16
    buffer = alloc(total)
    # one as_strided per view (a slice and a view cost two calls each, on every launch)
    return [buffer.as_strided(shape, strides, start) for shape, strides, start in layouts]


def _contiguous(*tensors):
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def _launch_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """``(out, states)``: the scan's output and the float32 state saved every backward
    chunk, ``(batch, dim, chunks, N)`` (the last one is the final state). Contiguous
    inputs (the callers copy, once)."""
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    H = dim // G
    block_n = _block_n(N)
    fwd, bwd = _configs(u.dtype)
    save_l = bwd['BLOCK_L']
    n_saved = _cdiv(L, save_l)   # _n_saved, with the configs in hand
    # the forward runs on to the last saved state; padded steps leave the state as is
    n_chunks = _cdiv(n_saved * save_l, fwd['BLOCK_L'])
    out = torch.empty_like(u)
    f32 = dict(device=u.device, dtype=torch.float32)
    states = torch.empty((batch, dim, n_saved, N), **f32)
    bd = _block_d(fwd['BLOCK_D'], H)
    seg_chunks, n_seg = _segments(n_chunks, fwd.get('SEG_L'), fwd['BLOCK_L'])
    # each segment's map of the state entering it (the last segment's unused)
    seg_h = seg_s = states
    if n_seg > 1:
        seg_h, seg_s = _buffer_views(lambda n: torch.empty(n, **f32),
                                     (batch, n_seg, dim, N), (batch, n_seg, dim))
        _fwd_segment_kernel[(_cdiv(dim, bd), batch, n_seg - 1)](
            u, delta, A, B, delta_bias if delta_bias is not None else u, seg_h, seg_s,
            dim, L, H, G, N, n_seg, HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(delta_softplus), SEG_L=fwd['SEG_L'], BLOCK_D=bd, BLOCK_N=block_n,
            BLOCK_L=math.gcd(fwd['SEG_L'], 64), num_warps=fwd['num_warps'])
    _fwd_kernel[(_cdiv(dim, bd), batch, n_seg)](
        u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u, out, states, seg_h, seg_s,
        dim, L, H, G, N, n_chunks, n_saved, n_seg, seg_chunks,
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(delta_softplus), SAVE_L=save_l, SEGMENTED=n_seg > 1, BLOCK_D=bd,
        BLOCK_N=block_n, BLOCK_L=fwd['BLOCK_L'], num_warps=fwd['num_warps'])
    return out, states


def _launch_bwd(u, delta, A, B, C, D, z, delta_bias, states, dout, dlast, delta_softplus,
                one_buffer=True):
    """Gradients of u, delta, A, B, C, D, z, delta_bias (None for an absent optional
    input); ``dout`` None means zero, ``dlast`` (the final state's gradient) may be None.
    Contiguous inputs, as saved by the forward. ``one_buffer``: the float32 gradients
    are views of shared buffers (an operator's outputs may not alias: False there)."""
    batch, dim, L = u.shape
    G, N = B.shape[1], B.shape[2]
    H = dim // G
    n_chunks = states.shape[2]
    bwd = _configs(u.dtype)[1]
    if n_chunks != _cdiv(L, bwd['BLOCK_L']):
        raise RuntimeError(f"selective scan backward: the forward saved {n_chunks} states "
                           f"for {L} steps, the backward's BLOCK_L {bwd['BLOCK_L']} needs "
                           f"{_cdiv(L, bwd['BLOCK_L'])}: CONFIGS changed in between")
    block_n = _block_n(N)
    dout = dout.contiguous() if dout is not None else torch.zeros_like(u)
    dlast = dlast.contiguous() if dlast is not None else None
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty_like(u)
    ddelta = torch.empty_like(delta)
    dz = torch.empty_like(z) if z is not None else None
    seg_chunks, n_seg = _segments(n_chunks, bwd.get('SEG_L'), bwd['BLOCK_L'])
    # the gradients that programs add atomically, zeroed; in eager mode two buffers (one
    # memset each): B's and C's, and the parameters' (which outlive the step as .grad)
    def zeros(*shapes):
        if one_buffer:
            return _buffer_views(lambda n: torch.zeros(n, **f32), *shapes)
        return [torch.zeros(shape, **f32) for shape in shapes]
    dB, dC = zeros(B.shape, C.shape)
    dA, dD, dbias = zeros((dim, N), (dim, ), (dim, ))
    bd = _block_d(bwd['BLOCK_D'], H)
    flags = dict(HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                 SOFTPLUS=bool(delta_softplus), BLOCK_D=bd, BLOCK_N=block_n,
                 num_warps=bwd['num_warps'])
    # each segment's map of the adjoint after it (row 0, the first segment's, unused)
    seg_b = seg_s = dA
    if n_seg > 1:
        seg_b, seg_s = _buffer_views(lambda n: torch.empty(n, **f32),
                                     (batch, n_seg, dim, N), (batch, n_seg, dim))
        _bwd_segment_kernel[(_cdiv(dim, bd), batch, n_seg - 1)](
            delta, A, C, z if z is not None else u,
            delta_bias if delta_bias is not None else u, dout, seg_b, seg_s,
            dim, L, H, G, N, n_seg, SEG_L=bwd['SEG_L'],
            BLOCK_L=math.gcd(bwd['SEG_L'], 64), **flags)
    _bwd_kernel[(_cdiv(dim, bd), batch, n_seg)](
        u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
        delta_bias if delta_bias is not None else u, states, dout,
        dlast if dlast is not None else u, seg_b, seg_s,
        du, ddelta, dz if dz is not None else du, dA, dB, dC, dD, dbias,
        dim, L, H, G, N, n_chunks, n_seg, seg_chunks,
        HAS_D=D is not None, HAS_DLAST=dlast is not None, PREFETCH=bwd['PREFETCH'],
        SEGMENTED=n_seg > 1, BLOCK_L=bwd['BLOCK_L'], **flags)
    return (du, ddelta, dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.to(D.dtype) if D is not None else None, dz,
            dbias.to(delta_bias.dtype) if delta_bias is not None else None)


class _SelectiveScanTriton(torch.autograd.Function):
    """The scan in eager mode (the cheaper call: an operator's dispatch costs more)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        inputs = _contiguous(u, delta, A, B, C, D, z, delta_bias)   # copied once, saved
        out, states = _launch_fwd(*inputs, delta_softplus)
        ctx.save_for_backward(*inputs, states)
        ctx.delta_softplus = bool(delta_softplus)
        ctx.set_materialize_grads(False)
        if not return_last_state:
            return out
        # a copy: a view would keep every saved state alive with the final one
        return out, states[:, :, -1].clone()

    @staticmethod
    def backward(ctx, dout, dlast=None):
        return _launch_bwd(*ctx.saved_tensors, dout, dlast, ctx.delta_softplus) + (None, None)


# Inside torch.compile the scan is two custom operators (``torch.ops.mmmambaout.
# selective_scan_fwd`` / ``_bwd``) with fake (shape) implementations and autograd, so a
# compiled graph keeps it as one opaque node, dynamic sizes included, instead of tracing
# Python that launches Triton kernels. (torch >= 2.4; before, compiling traces the
# autograd.Function.) Outputs are contiguous, as the fakes say.
_OPERATORS = hasattr(torch.library, 'custom_op')
if _OPERATORS:
    def _empty(t):
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)

    @torch.library.custom_op('mmmambaout::selective_scan_fwd', mutates_args=())
    def _scan_fwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                  C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                  delta_bias: Optional[torch.Tensor],
                  delta_softplus: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(out, states, final state)``; states as :func:`_launch_fwd`'s. (Copies to
        contiguous here too: the operator may be called directly.)"""
        out, states = _launch_fwd(*_contiguous(u, delta, A, B, C, D, z, delta_bias),
                                  delta_softplus)
        return out, states, states[:, :, -1].clone()

    @_scan_fwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        batch, dim, L = u.shape
        N = B.shape[2]
        f32 = dict(dtype=torch.float32, device=u.device)
        return (_empty(u), torch.empty((batch, dim, _n_saved(L, u.dtype), N), **f32),
                torch.empty((batch, dim, N), **f32))

    @torch.library.custom_op('mmmambaout::selective_scan_bwd', mutates_args=())
    def _scan_bwd(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                  C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                  delta_bias: Optional[torch.Tensor], states: torch.Tensor,
                  dout: torch.Tensor, dlast: Optional[torch.Tensor],
                  delta_softplus: bool) -> List[torch.Tensor]:
        """:func:`_launch_bwd`'s gradients, an empty tensor for an absent input's
        (operators return tensors)."""
        grads = _launch_bwd(*_contiguous(u, delta, A, B, C, D, z, delta_bias, states),
                            dout, dlast, delta_softplus, one_buffer=False)
        return [g if g is not None else u.new_empty((0, )) for g in grads]

    @_scan_bwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, states, dout, dlast, delta_softplus):
        return [_empty(t) if t is not None else u.new_empty((0, ))
                for t in (u, delta, A, B, C, D, z, delta_bias)]

    def _setup_context(ctx, inputs, output):
        u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, output[1])
        ctx.delta_softplus = delta_softplus
        ctx.set_materialize_grads(False)

    def _scan_backward(ctx, dout, dstates, dlast):
        # the saved states are not visible outside selective_scan_triton: dstates is unused
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        grads = torch.ops.mmmambaout.selective_scan_bwd(
            u, delta, A, B, C, D, z, delta_bias, states,
            dout if dout is not None else torch.zeros_like(u), dlast, ctx.delta_softplus)
        present = (True, ) * 5 + (D is not None, z is not None, delta_bias is not None)
        return tuple(g if p else None for g, p in zip(grads, present)) + (None, )

    _scan_fwd.register_autograd(_scan_backward, setup_context=_setup_context)


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, 'is_compiling', None)
    return bool(is_compiling and is_compiling())


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False):
    """Selective scan with the Triton kernels; B and C grouped (batch, G, N, L)."""
    if A.is_complex():
        raise NotImplementedError('complex A is not supported')
    if _OPERATORS and _compiling():
        u, delta, A, B, C, D, z, delta_bias = _contiguous(u, delta, A, B, C, D, z, delta_bias)
        out, _, last_state = torch.ops.mmmambaout.selective_scan_fwd(
            u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
        return (out, last_state) if return_last_state else out
    # out, or (out, last state): what this function returns
    return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      bool(return_last_state))
