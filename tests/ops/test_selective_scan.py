"""The selective scan against the plain recurrence written from its equations.

Tolerances (relative L2 error ||x - ref|| / ||ref|| against a float64 recurrence):
* float32 inputs: 1e-5 for outputs, last state and every gradient (measured ~1e-7);
* bfloat16 / float16 inputs: the recurrence runs on the same rounded inputs, so only the
  casts to and from the input dtype (out, its gradient, the input gradients) differ:
  1e-2 on CPU, 2e-2 on CUDA's smaller-sample cases such as L = 1 (bf16 has an 8-bit
  mantissa: one rounding is up to 3.9e-3);
* CUDA Triton vs the float64 recurrence: 1e-4 in float32 (exp2 and a different
  association order), 2e-2 in half precision.
CUDA-only cases skip on machines without CUDA; every CPU case always runs.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F

from mmmambaout.ops.selective_scan import (ENV_VAR, available_backends, resolve_backend,
                                           selective_scan)
from mmmambaout.ops.selective_scan.reference import selective_scan_reference

ARG_NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def plain_recurrence(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                     delta_softplus=False):
    """The equations, one step at a time, in float64. B, C: (b, N, L) or (b, G, N, L)."""
    u, delta, A, B, C = (t.double() for t in (u, delta, A, B, C))
    batch, dim, L = u.shape
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    group = dim // B.shape[1]
    B = B.repeat_interleave(group, dim=1)  # (b, dim, N, L)
    C = C.repeat_interleave(group, dim=1)
    if delta_bias is not None:
        delta = delta + delta_bias.double()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(L):
        h = torch.exp(delta[:, :, t, None] * A) * h \
            + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, :, :, t]
        ys.append((h * C[:, :, :, t]).sum(-1))
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + u * D.double()[:, None]
    if z is not None:
        out = out * F.silu(z.double())
    return out, h


def make_inputs(batch=2, dim=6, N=4, L=19, groups=None, dtype=torch.float32, device='cpu',
                optional=True, delta_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(device)

    bshape = (batch, N, L) if groups is None else (batch, groups, N, L)
    delta = rnd(batch, dim, L, scale=0.5) * delta_scale
    if not optional:  # no softplus: keep delta positive so that the state decays
        delta = delta.abs()
    args = dict(
        u=rnd(batch, dim, L).to(dtype),
        delta=delta.to(dtype),
        # Mamba's S4D-real init: A = -(1..N), with some spread per channel
        A=-(torch.arange(1, N + 1).float().repeat(dim, 1)
            * torch.rand(dim, 1, generator=g) * 2).to(device),
        B=rnd(*bshape).to(dtype), C=rnd(*bshape).to(dtype))
    if optional:
        args.update(D=rnd(dim), z=rnd(batch, dim, L).to(dtype), delta_bias=rnd(dim, scale=0.5))
    return {k: v.requires_grad_() for k, v in args.items()}


def rel_err(x, ref):
    """||x - ref|| / ||ref||; where ref is exactly zero (dA at L = 1: h_{-1} = 0), the
    absolute error ||x|| instead (inputs are O(1))."""
    x, ref = x.double(), ref.double()
    assert torch.isfinite(x).all(), 'non-finite values'
    scale = ref.norm()
    return ((x - ref).norm() / (scale if scale > 0 else 1.0)).item()


def run_and_grads(fn, args, softplus, seed=1):
    out, last = fn(args, softplus)
    g = torch.Generator().manual_seed(seed)
    gout = torch.randn(out.shape, generator=g).to(out.device)
    glast = torch.randn(last.shape, generator=g).to(out.device)
    loss = (out.double() * gout.double()).sum() + (last.double() * glast.double()).sum()
    names = [k for k in ARG_NAMES if k in args]
    grads = torch.autograd.grad(loss, [args[k] for k in names])
    return out, last, dict(zip(names, grads))


def check_against_plain(args, softplus, fn, tol_out, tol_grad):
    out, last, grads = run_and_grads(fn, args, softplus)
    ref_out, ref_last, ref_grads = run_and_grads(
        lambda a, sp: plain_recurrence(**a, delta_softplus=sp), args, softplus)
    assert out.dtype == args['u'].dtype
    assert last.dtype == torch.float32
    assert rel_err(out, ref_out) < tol_out
    assert rel_err(last, ref_last) < tol_out
    for name, grad in grads.items():
        assert grad.dtype == args[name].dtype and grad.shape == args[name].shape, name
        err = rel_err(grad, ref_grads[name])
        assert err < tol_grad, f'd{name}: relative error {err:.2e} >= {tol_grad}'


def reference_fn(method, chunk_size):
    def fn(a, softplus):
        B, C = a['B'], a['C']
        if B.dim() == 3:
            B, C = B.unsqueeze(1), C.unsqueeze(1)
        rest = {k: a.get(k) for k in ('D', 'z', 'delta_bias')}
        return selective_scan_reference(a['u'], a['delta'], a['A'], B, C, **rest,
                                        delta_softplus=softplus, return_last_state=True,
                                        chunk_size=chunk_size, method=method)
    return fn


def public_fn(backend):
    def fn(a, softplus):
        return selective_scan(**a, delta_softplus=softplus, return_last_state=True,
                              backend=backend)
    return fn


# ---------------------------------------------------------------- reference, float32
@pytest.mark.parametrize('method', ['sequential', 'parallel'])
@pytest.mark.parametrize('L,chunk', [(1, 4), (19, 4), (19, 7), (16, 16), (19, 64)])
def test_reference_fp32_matches_recurrence(method, L, chunk):
    args = make_inputs(L=L, seed=L + chunk)
    check_against_plain(args, True, reference_fn(method, chunk), 1e-5, 1e-5)


@pytest.mark.parametrize('method', ['sequential', 'parallel'])
def test_reference_grouped_bc(method):
    args = make_inputs(dim=6, groups=3, L=13)
    check_against_plain(args, True, reference_fn(method, 5), 1e-5, 1e-5)


@pytest.mark.parametrize('method', ['sequential', 'parallel'])
def test_reference_without_optional_inputs(method):
    args = make_inputs(L=11, optional=False)
    check_against_plain(args, False, reference_fn(method, 4), 1e-5, 1e-5)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('method', ['sequential', 'parallel'])
def test_reference_half_inputs(dtype, method):
    args = make_inputs(L=23, dtype=dtype)
    check_against_plain(args, True, reference_fn(method, 8), 1e-2, 1e-2)


def test_public_function_default_backend_on_cpu():
    assert resolve_backend('auto', 'cpu') == 'reference'
    assert available_backends('cpu') == ('reference',)
    args = make_inputs(L=9, groups=None)
    check_against_plain(args, True, public_fn('auto'), 1e-5, 1e-5)
    out = selective_scan(**make_inputs(L=9))
    assert out.shape == (2, 6, 9)


# ---------------------------------------------------------------- gradcheck
@pytest.mark.parametrize('method,optional,softplus', [
    ('sequential', True, True), ('parallel', True, True), ('sequential', False, False)])
def test_reference_gradcheck_float64(method, optional, softplus):
    args = make_inputs(batch=1, dim=4, N=3, L=7, groups=2, optional=optional)
    args = {k: v.detach().double().requires_grad_() for k, v in args.items()}
    names = list(args)

    def f(*tensors):
        a = dict(zip(names, tensors))
        rest = {k: a.get(k) for k in ('D', 'z', 'delta_bias')}
        return selective_scan_reference(a['u'], a['delta'], a['A'], a['B'], a['C'], **rest,
                                        delta_softplus=softplus, return_last_state=True,
                                        chunk_size=3, method=method)

    assert torch.autograd.gradcheck(f, tuple(args.values()), eps=1e-6, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------- numerics and memory
@pytest.mark.parametrize('method', ['sequential', 'parallel'])
def test_large_delta_and_long_sequence_stay_finite(method):
    # delta' up to ~2e3 and A down to -2N: exp(delta*A) underflows to exactly 0 within a
    # single step; closed forms built on exp(cumsum) ratios give inf * 0 = NaN here.
    L = 3000
    args = make_inputs(batch=1, dim=3, N=4, L=L, delta_scale=2000.0, seed=3)
    out, last, grads = run_and_grads(reference_fn(method, 256), args, True)
    ref_out, ref_last = plain_recurrence(**{k: v.detach() for k, v in args.items()},
                                         delta_softplus=True)
    assert rel_err(out, ref_out) < 1e-5 and rel_err(last, ref_last) < 1e-5
    assert all(torch.isfinite(g).all() for g in grads.values())
    # tiny delta: long memory, the state accumulates over the whole sequence
    args = make_inputs(batch=1, dim=3, N=4, L=L, delta_scale=1e-3, optional=False, seed=4)
    out, last, grads = run_and_grads(reference_fn(method, 256), args, False)
    ref_out, ref_last = plain_recurrence(**{k: v.detach() for k, v in args.items()})
    assert rel_err(out, ref_out) < 1e-4 and rel_err(last, ref_last) < 1e-4
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_reference_saves_no_full_sequence_state():
    batch, dim, N, L, chunk = 1, 4, 8, 200, 16
    args = make_inputs(batch=batch, dim=dim, N=N, L=L)
    out = selective_scan_reference(args['u'], args['delta'], args['A'],
                                   args['B'].unsqueeze(1), args['C'].unsqueeze(1),
                                   chunk_size=chunk, method='sequential')
    saved = out.grad_fn.saved_tensors
    biggest = max(t.numel() for t in saved if t is not None)
    # inputs are (batch, dim, L); boundary states are (L / chunk, batch, dim, N)
    assert biggest <= max(batch * dim * L, batch * N * L, math.ceil(L / chunk) * batch * dim * N)
    assert biggest < batch * dim * L * N


# ---------------------------------------------------------------- backend choice
def test_forced_backend_unavailable_raises_clear_error(monkeypatch):
    args = make_inputs(L=5)
    with pytest.raises(RuntimeError, match='triton.*CUDA'):
        selective_scan(**args, backend='triton')
    with pytest.raises(RuntimeError, match='mamba_ssm.*CUDA'):
        selective_scan(**args, backend='mamba_ssm')
    monkeypatch.setenv(ENV_VAR, 'triton')
    with pytest.raises(RuntimeError, match=ENV_VAR):
        selective_scan(**args)
    assert selective_scan(**args, backend='reference').shape == (2, 6, 5)  # argument wins
    monkeypatch.setenv(ENV_VAR, 'reference')
    assert resolve_backend('auto', 'cpu') == 'reference'
    monkeypatch.setenv(ENV_VAR, 'nonsense')
    with pytest.raises(ValueError, match='nonsense'):
        selective_scan(**args)
    with pytest.raises(ValueError, match='unknown'):
        selective_scan(**args, backend='cuda_magic')


def test_shape_validation():
    args = make_inputs(L=5)
    bad = dict(args, A=args['A'][:, :2])
    with pytest.raises(ValueError, match='B must be'):
        selective_scan(**bad)
    with pytest.raises(ValueError, match='divisible'):
        selective_scan(**dict(args, B=args['B'].detach().view(2, 1, 4, 5).expand(2, 4, 4, 5),
                              C=args['C'].detach().view(2, 1, 4, 5).expand(2, 4, 4, 5)))
    with pytest.raises(ValueError, match='delta shape'):
        selective_scan(**dict(args, delta=args['delta'][..., :3]))
    with pytest.raises(ValueError, match='D must be'):
        selective_scan(**dict(args, D=args['D'][:2]))


# ---------------------------------------------------------------- CUDA backends
def cuda_inputs(dtype, groups=None, L=300, dim=24, N=16, optional=True, seed=0):
    args = make_inputs(batch=2, dim=dim, N=N, L=L, groups=groups, dtype=dtype, seed=seed,
                       optional=optional)
    return {k: v.detach().cuda().requires_grad_() for k, v in args.items()}


@pytest.mark.cuda
@pytest.mark.parametrize('backend', ['triton', 'reference'])
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-4), (torch.float16, 2e-2),
                                       (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize('L,groups', [(1, None), (300, None), (257, 2), (64, None), (1000, 2)])
def test_cuda_backend_matches_recurrence(backend, dtype, tol, L, groups):
    if backend not in available_backends('cuda'):
        pytest.skip(f'{backend} not available')
    args = cuda_inputs(dtype, groups=groups, L=L)
    check_against_plain(args, True, public_fn(backend), tol, tol)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_cuda_triton_segments_match_recurrence(dtype, tol, monkeypatch):
    # the default configs may run one segment at these lengths: force segments in both
    # directions (fwd 128 steps, bwd 256: 8 and 4 segments at L 1000, the last partial)
    if 'triton' not in available_backends('cuda'):
        pytest.skip('triton not available')
    from mmmambaout.ops.selective_scan.triton import CONFIGS
    for cfg in CONFIGS.values():
        monkeypatch.setitem(cfg, 'fwd', dict(cfg['fwd'], SEG_L=128))
        monkeypatch.setitem(cfg, 'bwd', dict(cfg['bwd'], SEG_L=256))
    args = cuda_inputs(dtype, groups=2, L=1000)
    check_against_plain(args, True, public_fn('triton'), tol, tol)


@pytest.mark.cuda
def test_cuda_triton_without_optional_inputs_and_large_delta():
    if 'triton' not in available_backends('cuda'):
        pytest.skip('triton not available')
    args = cuda_inputs(torch.float32, optional=False, L=100)
    check_against_plain(args, False, public_fn('triton'), 1e-4, 1e-4)
    args = make_inputs(batch=1, dim=8, N=16, L=4000, delta_scale=2000.0, seed=3)
    args = {k: v.detach().cuda().requires_grad_() for k, v in args.items()}
    out, last, grads = run_and_grads(public_fn('triton'), args, True)
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    assert all(torch.isfinite(g).all() for g in grads.values())


@pytest.mark.cuda
def test_cuda_auto_backend_is_fast_path():
    assert resolve_backend('auto', 'cuda') in ('mamba_ssm', 'triton')
    if os.environ.get(ENV_VAR):
        pytest.skip(f'{ENV_VAR} is set')


def test_backend_choice_for_cuda_tensors_traces_without_a_graph_break():
    """The two helpers selective_scan calls to choose and fetch the backend for CUDA
    tensors, traced as a compiled graph would (fullgraph: a graph break raises); tracing
    their import checks once split every compiled Vim layer into three graphs. Only the
    choice runs here (CPU), not selective_scan itself: tests/models/backbones/
    test_vim_compile.py checks a whole compiled layer on CUDA for graph breaks."""
    pytest.importorskip('triton')
    import mmmambaout.ops.selective_scan as scan

    def choice(x):
        name = scan._resolved_backend('auto', 'cuda')
        fn, _ = scan._triton_fn() if name == 'triton' else (None, None)
        return x + (fn is not None)
    assert scan.resolve_backend('auto', 'cuda') in ('triton', 'mamba_ssm')
    out = torch.compile(choice, backend='eager', fullgraph=True)(torch.zeros(2))
    assert out.tolist() == [float(scan.resolve_backend('auto', 'cuda') == 'triton')] * 2


@pytest.mark.parametrize('name', ['triton', 'reference'])
@pytest.mark.parametrize('return_last_state', [False, True])
def test_dispatch_asks_the_backend_for_the_final_state_only_when_asked(
        name, return_last_state, monkeypatch):
    # a backend told to return the final state makes it (the Triton one copies it out of
    # its saved states, one more kernel per call): selective_scan passes the caller's
    # choice through, and returns what the backend returns
    import mmmambaout.ops.selective_scan as scan
    calls = []

    def backend(*args):
        calls.append(args[-1])
        return ('out', 'last') if args[-1] else 'out'

    monkeypatch.setattr(scan, '_resolved_backend', lambda backend, device_type: name)
    monkeypatch.setattr(scan, '_triton_fn', lambda: (backend, None))
    monkeypatch.setattr(scan, 'selective_scan_reference', backend)
    args = make_inputs()
    result = scan.selective_scan(**args, return_last_state=return_last_state)
    assert calls == [return_last_state]
    assert result == (('out', 'last') if return_last_state else 'out')
