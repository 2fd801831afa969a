"""Vim ``compile_layers``: the layers through one compiled function, same outputs and
gradients as eager, one graph shared by all layers, eager without grad, and the argument
checks. On the CPU with ``aot_eager`` (the dynamo capture and autograd split of
inductor, the same ATen ops as eager, summed in another order: within 1e-5 of each
tensor's largest value, 1.1e-6 measured); the CPU's reference scan loops over the
length, so each length is its own graph there. On CUDA (marked ``cuda``) with inductor,
the Triton scan's operator and CUDA graphs: within 1e-4 (TF32-free fp32) and without graph
breaks (the scan's backend choice once broke each layer's graph into three: 6 graphs for
two lengths on an H100 with torch 2.11); the number of graphs is not checked there."""
import functools

import pytest
import torch
from torch._dynamo.utils import counters

from mmmambaout.models.backbones.vim import Vim

ARCH = dict(embed_dims=16, depth=4)
OUT = (0, 1, 2, 3)
pytestmark = pytest.mark.usefixtures('fresh_dynamo')  # tests/models/conftest.py


def pair(device, mode):
    torch.manual_seed(0)
    eager = Vim(ARCH, out_indices=OUT, img_size=64, drop_path_rate=0.).to(device).train()
    compiled = Vim(ARCH, out_indices=OUT, img_size=64, compile_layers=mode).to(device).train()
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def outputs_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    torch.manual_seed(1)
    sum((o * torch.randn_like(o)).sum() for o in out).backward()
    return out, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def assert_close(a, b, rtol):
    assert (a - b).abs().max() <= rtol * a.abs().max()


def check_same(device, mode, sizes, rtol):
    eager, compiled = pair(device, mode)
    for size in sizes:
        x = torch.randn(2, 3, *size, device=device)
        (out_e, grads_e), (out_c, grads_c) = (outputs_and_grads(m, x) for m in (eager, compiled))
        for a, b in zip(out_e, out_c):
            assert_close(a, b, rtol)
        assert grads_e.keys() == grads_c.keys()
        for name in grads_e:
            assert_close(grads_e[name], grads_c[name], rtol)
    return eager, compiled


def test_cpu_same_as_eager_one_graph_for_all_layers(monkeypatch):
    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='aot_eager'))
    _, compiled = check_same('cpu', True, [(48, 64), (32, 80)], 1e-5)
    # four layers, two lengths: a graph per length (the reference scan's loop), not per
    # layer, and no graph break
    assert counters['stats']['unique_graphs'] == 2, dict(counters['stats'])
    assert not counters['graph_break'], dict(counters['graph_break'])
    with torch.no_grad():   # without grad: eager, no new graph
        compiled(torch.randn(1, 3, 64, 64))
    assert counters['stats']['unique_graphs'] == 2


@pytest.mark.parametrize('kwargs, match', [
    (dict(compile_layers='fast'), 'compile_layers must be'),
    (dict(compile_layers=True, with_cp=True), 'exclusive'),
])
def test_compile_layers_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Vim(ARCH, out_indices=OUT, **kwargs)


@pytest.mark.cuda
def test_cuda_graphs_same_as_eager():
    """Triton scan operator inside the compiled layers, CUDA graphs over two lengths, each
    seen three times (warm-up, recording, replay); rtol 1e-4 (TF32-free fp32)."""
    check_same('cuda', 'reduce-overhead', [(96, 128), (80, 112)] * 3, 1e-4)
    assert not counters['graph_break'], dict(counters['graph_break'])
