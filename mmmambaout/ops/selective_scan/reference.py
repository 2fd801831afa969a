"""Chunked PyTorch selective scan: the reference every fast path is tested against.

The recurrence (mamba_ssm's semantics; float32 arithmetic, float64 for float64 inputs)::

    delta' = softplus(delta + delta_bias)   (or delta + delta_bias)
    h_t    = exp(delta'_t * A) * h_{t-1} + delta'_t * B_t * u_t       h_{-1} = 0
    y_t    = sum_n h_t[n] * C_t[n]
    out    = (y + D * u) * silu(z)

The sequence is cut into chunks of ``chunk_size`` steps; only one chunk's
``(chunk, batch, dim, N)`` tensors exist at a time, so memory is linear in L with a
small constant (the state at each chunk boundary is kept for the backward pass).
Inside a chunk the linear recurrence is solved either

* ``'sequential'``: one fused ``addcmul`` per step (cheapest on CPU), or
* ``'parallel'``: a Hillis-Steele scan of the affine maps ``h -> a*h + b`` in
  ``ceil(log2(chunk))`` vectorised steps (few kernel launches; used on CUDA).

Neither form divides by a decay or takes ``exp`` of a positive number: the scan only
multiplies decays ``exp(delta*A) <= 1`` together, so long sequences and huge ``delta``
underflow to the exact limit 0 instead of producing ``inf * 0 = NaN`` (the failure of
closed forms that use ``exp(cumsum)`` ratios).

The backward pass is explicit (``torch.autograd.Function``): it walks the chunks in
reverse, recomputes each chunk's states from the saved boundary state, runs the adjoint
recurrence ``g_t = C_t * dy_t + exp(delta'_{t+1} A) * g_{t+1}`` and reduces the
gradients of every input chunk by chunk.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['selective_scan_reference', 'DEFAULT_CHUNK_SIZE']

#: default chunk length per scan method
DEFAULT_CHUNK_SIZE = {'sequential': 128, 'parallel': 256}


def _scan(a: torch.Tensor, b: torch.Tensor, method: str, reverse: bool = False) -> torch.Tensor:
    """Solve ``h_t = a_t * h_{t-1} + b_t`` (``h_{-1} = 0``) along dim 0, in place in ``b``.

    With ``reverse=True``: ``h_t = a_t * h_{t+1} + b_t`` with ``h_T = 0``. ``a`` may be
    overwritten by the parallel method. Returns ``b`` (now holding ``h``).
    """
    T = b.shape[0]
    if method == 'sequential':
        if reverse:
            for t in range(T - 2, -1, -1):
                b[t].addcmul_(a[t], b[t + 1])
        else:
            for t in range(1, T):
                b[t].addcmul_(a[t], b[t - 1])
        return b
    if method != 'parallel':
        raise ValueError(f'unknown scan method {method!r}')
    k = 1
    while k < T:
        # Right-hand sides are materialised before the in-place update, so every
        # element reads the values of the previous level (Hillis-Steele).
        if reverse:
            b[:-k] += a[:-k] * b[k:]
            if 2 * k < T:
                a[:-k] = a[:-k] * a[k:]
        else:
            b[k:] += a[k:] * b[:-k]
            if 2 * k < T:
                a[k:] = a[k:] * a[:-k]
        k *= 2
    return b


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs (gradcheck)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _prepare_delta(delta: torch.Tensor, delta_bias: Optional[torch.Tensor], softplus: bool):
    """Compute-dtype delta after bias and softplus, and d(delta')/d(delta) (None if 1)."""
    x = delta.to(_compute_dtype(delta))
    if delta_bias is not None:
        x = x + delta_bias.to(x.dtype)[:, None]
    if softplus:
        return F.softplus(x), torch.sigmoid(x)
    return x, None


class _SelectiveScanFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, method):
        batch, dim, L = u.shape
        G, N = B.shape[1], B.shape[2]
        H = dim // G
        cdt = _compute_dtype(u)
        dl, _ = _prepare_delta(delta, delta_bias, delta_softplus)
        uf = u.to(cdt)
        A4 = A.to(cdt).view(G, H, N)
        dl_g = dl.view(batch, G, H, L)
        u_g = uf.view(batch, G, H, L)
        Bf = B.to(cdt)
        Cf = C.to(cdt)
        n_chunks = max(1, -(-L // chunk_size))
        # state at the end of each chunk (the start of the next one)
        states = u.new_empty((n_chunks, batch, G, H, N), dtype=cdt)
        y = u.new_empty((batch, G, H, L), dtype=cdt)
        h = u.new_zeros((batch, G, H, N), dtype=cdt)
        for c in range(n_chunks):
            l0, l1 = c * chunk_size, min(L, (c + 1) * chunk_size)
            _, hs = _chunk_states(dl_g[..., l0:l1], u_g[..., l0:l1], A4, Bf[..., l0:l1], h, method)
            y[..., l0:l1] = torch.einsum('tbghn,bgnt->bght', hs, Cf[..., l0:l1])
            states[c] = hs[-1]
            h = states[c]
        out = y.view(batch, dim, L)
        if D is not None:
            out = out + uf * D.to(cdt)[:, None]
        if z is not None:
            out = out * F.silu(z.to(cdt))
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.delta_softplus = delta_softplus
        ctx.chunk_size = chunk_size
        ctx.method = method
        ctx.set_materialize_grads(False)
        last_state = states[-1].reshape(batch, dim, N)
        return out.to(u.dtype), last_state

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        method, chunk_size = ctx.method, ctx.chunk_size
        batch, dim, L = u.shape
        G, N = B.shape[1], B.shape[2]
        H = dim // G
        cdt = _compute_dtype(u)
        dl, dsoftplus = _prepare_delta(delta, delta_bias, ctx.delta_softplus)
        uf = u.to(cdt)
        A4 = A.to(cdt).view(G, H, N)
        dl_g = dl.view(batch, G, H, L)
        u_g = uf.view(batch, G, H, L)
        Bf = B.to(cdt)
        Cf = C.to(cdt)
        Df = D.to(cdt).view(G, H) if D is not None else None
        if dout is None:
            dout = torch.zeros_like(uf)
        dout_g = dout.to(cdt).view(batch, G, H, L)
        z_g = z.to(cdt).view(batch, G, H, L) if z is not None else None

        d_dl = torch.empty_like(dl_g)
        du = torch.empty_like(u_g)
        dz = torch.empty_like(u_g) if z is not None else None
        dB = torch.empty_like(Bf)
        dC = torch.empty_like(Cf)
        dA = torch.zeros_like(A4)
        dD = torch.zeros((G, H), dtype=cdt, device=u.device) if D is not None else None

        n_chunks = states.shape[0]
        # adjoint of the state just after the current chunk, times the decay into it
        carry = (dlast.to(cdt).view(batch, G, H, N) if dlast is not None
                 else u.new_zeros((batch, G, H, N), dtype=cdt))
        for c in range(n_chunks - 1, -1, -1):
            l0, l1 = c * chunk_size, min(L, (c + 1) * chunk_size)
            h0 = states[c - 1] if c > 0 else torch.zeros_like(states[0])
            dl_c, u_c = dl_g[..., l0:l1], u_g[..., l0:l1]
            B_c, C_c = Bf[..., l0:l1], Cf[..., l0:l1]
            dA_c, hs = _chunk_states(dl_c, u_c, A4, B_c, h0, method, keep_decay=True)

            # output gate and skip connection
            dy = dout_g[..., l0:l1]
            if z is not None:
                y = torch.einsum('tbghn,bgnt->bght', hs, C_c)
                if D is not None:
                    y = y + u_c * Df[..., None]
                zc = z_g[..., l0:l1]
                sig = torch.sigmoid(zc)
                dz[..., l0:l1] = dy * y * sig * (1 + zc * (1 - sig))
                dy = dy * zc * sig
            if D is not None:
                dD += (dy * u_c).sum(dim=(0, 3))
                du_c = dy * Df[..., None]
            else:
                du_c = torch.zeros_like(dy)
            dC[..., l0:l1] = torch.einsum('tbghn,bght->bgnt', hs, dy)

            # adjoint recurrence g_t = C_t dy_t + dA_{t+1} g_{t+1}; g after the chunk = carry
            g = dy.permute(3, 0, 1, 2)[..., None] * C_c.permute(3, 0, 1, 2)[:, :, :, None, :]
            g[-1] += carry
            a_next = torch.empty_like(dA_c)
            a_next[:-1] = dA_c[1:]
            a_next[-1] = 0
            g = _scan(a_next, g, method, reverse=True)
            carry = dA_c[0] * g[0]

            # d(delta' A)_t = g_t * dA_t * h_{t-1}
            h_prev = torch.cat([h0[None], hs[:-1]], dim=0)
            term = g * dA_c * h_prev
            gB = torch.einsum('tbghn,bgnt->bght', g, B_c)
            d_dl[..., l0:l1] = torch.einsum('tbghn,ghn->bght', term, A4) + gB * u_c
            dA += torch.einsum('tbghn,bght->ghn', term, dl_c)
            du[..., l0:l1] = du_c + gB * dl_c
            dB[..., l0:l1] = torch.einsum('tbghn,bght->bgnt', g, dl_c * u_c)

        d_dl = d_dl.view(batch, dim, L)
        if dsoftplus is not None:
            d_dl = d_dl * dsoftplus
        ddelta_bias = d_dl.sum(dim=(0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
        return (du.view(batch, dim, L).to(u.dtype), d_dl.to(delta.dtype),
                dA.view(dim, N).to(A.dtype), dB.to(B.dtype), dC.to(C.dtype),
                dD.view(dim).to(D.dtype) if D is not None else None,
                dz.view(batch, dim, L).to(z.dtype) if z is not None else None,
                ddelta_bias, None, None, None)


def _chunk_states(dl_c, u_c, A4, B_c, h0, method, keep_decay=False):
    """Decays exp(delta' A) and states h_t of one chunk, each (T, batch, G, H, N), from
    the state h0 before it. The decays are valid only with ``keep_decay``."""
    dA_c = torch.exp(dl_c.permute(3, 0, 1, 2)[..., None] * A4)
    hs = (dl_c * u_c).permute(3, 0, 1, 2)[..., None] * B_c.permute(3, 0, 1, 2)[:, :, :, None, :]
    hs[0].addcmul_(dA_c[0], h0)
    a = dA_c.clone() if (keep_decay and method == 'parallel') else dA_c
    return dA_c, _scan(a, hs, method)


def default_method(device: torch.device) -> str:
    return 'parallel' if device.type == 'cuda' else 'sequential'


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False,
                             chunk_size: Optional[int] = None, method: Optional[str] = None):
    """Selective scan in chunked PyTorch. Shapes as :func:`selective_scan`, with B and C
    already grouped ``(batch, G, N, L)``. ``method`` is ``'sequential'`` or ``'parallel'``
    (default: parallel on CUDA, sequential elsewhere)."""
    method = method or default_method(u.device)
    chunk_size = int(chunk_size or DEFAULT_CHUNK_SIZE[method])
    if chunk_size < 1:
        raise ValueError(f'chunk_size must be positive, got {chunk_size}')
    out, last_state = _SelectiveScanFunction.apply(u, delta, A, B, C, D, z, delta_bias,
                                                   bool(delta_softplus), chunk_size, method)
    return (out, last_state) if return_last_state else out
