"""The selective scan of Mamba (S6), behind one function with several backends.

``selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
delta_softplus=False, return_last_state=False, backend='auto')`` has the semantics and
shapes of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``:

==========  ======================================================================
u, delta    (batch, dim, L)
A           (dim, N), real (negative in Mamba: ``-exp(A_log)``)
B, C        (batch, N, L), or grouped (batch, G, N, L) with dim divisible by G
D           (dim,) skip connection, optional
z           (batch, dim, L) gate, optional: ``out = out * silu(z)``
delta_bias  (dim,), optional, added to delta before the optional softplus
==========  ======================================================================

The state and all arithmetic are float32 whatever the input dtype; ``out`` has u's
dtype, ``last_state`` (batch, dim, N) is float32.

Backends:

* ``'mamba_ssm'``: mamba_ssm's CUDA kernel (when ``mamba_ssm`` imports; CUDA inputs),
* ``'triton'``: our Triton forward and backward (``triton`` importable; CUDA inputs),
* ``'reference'``: chunked PyTorch (any device; exact; what the others are tested
  against).

``backend='auto'`` takes the first available of these in that order. The environment
variable ``MMMAMBAOUT_SCAN_BACKEND`` forces one when the argument is ``'auto'``; an
explicit argument wins over the variable. A forced backend that cannot run raises a
``RuntimeError`` that says why.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional, Tuple

import torch

from .reference import selective_scan_reference

__all__ = ['selective_scan', 'available_backends', 'resolve_backend', 'BACKENDS',
           'ENV_VAR', 'selective_scan_reference']

BACKENDS = ('mamba_ssm', 'triton', 'reference')
ENV_VAR = 'MMMAMBAOUT_SCAN_BACKEND'

_import_errors = {}
_imported = {}


def _try_import(name: str):
    # both outcomes kept: a compiled graph can read them where importlib would break it
    if name in _imported:
        return _imported[name], None
    if name in _import_errors:
        return None, _import_errors[name]
    try:
        _imported[name] = importlib.import_module(name)
        return _imported[name], None
    except Exception as exc:  # ImportError, or a broken extension build
        _import_errors[name] = f'{type(exc).__name__}: {exc}'
        return None, _import_errors[name]


def _mamba_ssm_fn():
    mod, err = _try_import('mamba_ssm.ops.selective_scan_interface')
    if mod is None:
        return None, f'mamba_ssm is not importable ({err})'
    return mod.selective_scan_fn, None


def _triton_fn():
    _, err = _try_import('triton')
    if err is not None:
        return None, f'triton is not importable ({err})'
    mod, err = _try_import(__name__ + '.triton')
    if mod is None:
        return None, f'the Triton backend failed to import ({err})'
    return mod.selective_scan_triton, None


def backend_unavailable_reason(name: str, device: torch.device) -> Optional[str]:
    """None if backend ``name`` can run on ``device``, else the reason it cannot."""
    if name == 'reference':
        return None
    if name not in BACKENDS:
        raise ValueError(f'unknown selective-scan backend {name!r}; choose from '
                         f"{('auto',) + BACKENDS}")
    if device.type != 'cuda':
        return f'the {name} backend needs CUDA tensors, got tensors on {device.type!r}'
    _, err = _mamba_ssm_fn() if name == 'mamba_ssm' else _triton_fn()
    return err


def available_backends(device='cuda') -> Tuple[str, ...]:
    """Backends that can run on ``device``, fastest first."""
    device = torch.device(device)
    return tuple(b for b in BACKENDS if backend_unavailable_reason(b, device) is None)


def resolve_backend(backend: str = 'auto', device='cpu') -> str:
    """The backend that :func:`selective_scan` runs for ``backend`` on ``device``."""
    device = torch.device(device)
    source = 'argument'
    if backend in (None, 'auto'):
        env = os.environ.get(ENV_VAR, '').strip()
        if env and env != 'auto':
            backend, source = env, f'environment variable {ENV_VAR}'
        else:
            return available_backends(device)[0]
    if backend not in BACKENDS:
        raise ValueError(f'unknown selective-scan backend {backend!r} (from the {source}); '
                         f"choose from {('auto',) + BACKENDS}")
    reason = backend_unavailable_reason(backend, device)
    if reason is not None:
        raise RuntimeError(f'selective-scan backend {backend!r} was forced by the {source} '
                           f'but cannot run: {reason}')
    return backend


@torch.compiler.assume_constant_result
def _resolved_backend(backend: str, device_type: str) -> str:
    """:func:`resolve_backend` as a compiled graph sees it: dynamo calls it while tracing
    and keeps the name as a constant (tracing into the import checks would break the
    graph around every scan), so ``MMMAMBAOUT_SCAN_BACKEND`` is read once per compile."""
    return resolve_backend(backend, device_type)


def _check_shapes(u, delta, A, B, C, D, z, delta_bias):
    if u.dim() != 3:
        raise ValueError(f'u must be (batch, dim, L), got shape {tuple(u.shape)}')
    batch, dim, L = u.shape
    if L < 1:
        raise ValueError('the sequence length must be at least 1')
    if delta.shape != u.shape:
        raise ValueError(f'delta shape {tuple(delta.shape)} != u shape {tuple(u.shape)}')
    if A.is_complex():
        raise NotImplementedError('complex A is not supported')
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f'A must be (dim={dim}, N), got {tuple(A.shape)}')
    N = A.shape[1]
    for name, t in (('B', B), ('C', C)):
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2] != N or t.shape[3] != L:
            raise ValueError(f'{name} must be (batch, N, L) or (batch, G, N, L) with '
                             f'batch={batch}, N={N}, L={L}; got {tuple(t.shape)}')
        if dim % t.shape[1]:
            raise ValueError(f'dim {dim} is not divisible by the {t.shape[1]} groups of {name}')
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError('B and C must have the same number of groups')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (dim,):
            raise ValueError(f'{name} must be ({dim},), got {tuple(t.shape)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'z shape {tuple(z.shape)} != u shape {tuple(u.shape)}')


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend: str = 'auto'):
    """Selective scan with mamba_ssm's semantics; see the module docstring.

    Returns ``out`` (batch, dim, L) in u's dtype, or ``(out, last_state)`` with
    ``return_last_state``.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    name = _resolved_backend(backend, u.device.type)
    if name == 'mamba_ssm':
        fn, _ = _mamba_ssm_fn()
        return fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    B4 = B if B.dim() == 4 else B.unsqueeze(1)
    C4 = C if C.dim() == 4 else C.unsqueeze(1)
    fn = _triton_fn()[0] if name == 'triton' else selective_scan_reference
    # the final state only when asked for: the Triton backend copies it out otherwise
    return fn(u, delta, A, B4, C4, D, z, delta_bias, delta_softplus, return_last_state)
