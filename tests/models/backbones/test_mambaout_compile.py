"""MambaOut ``compile_stages``: same outputs and gradients as eager, one compiled function
per stage, unchanged state dict, pickling and deepcopy.

Tolerances are relative to the largest magnitude of each tensor: 1e-5 for inductor on the
CPU (fp32), 1e-6 for ``aot_eager`` (the same ATen ops as eager), 1e-4 / 2e-2 for CUDA fp32
/ bf16 (the eager side runs the fused Triton mixer there). Most tests swap inductor for
``aot_eager`` (``torch.compile`` patched): the same dynamo capture and autograd split in a
few seconds, where inductor spends ~15 s of C++ compilation per input size on 2 cores.
"""
import copy
import functools
import pickle

import pytest
import torch
from torch._dynamo.utils import counters

import mmmambaout.models.backbones.mambaout as mambaout
from mmmambaout.models.backbones.mambaout import MambaOut
from mmmambaout.models.layers.compiled_blocks import _run_blocks, compiled_blocks_runner

ARCH = dict(depths=[2, 1], dims=[8, 16])
OUT = (0, 1)
pytestmark = pytest.mark.usefixtures('fresh_dynamo')  # tests/models/conftest.py


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(torch, 'compile', functools.partial(torch.compile, backend='aot_eager'))


@pytest.fixture
def mixer_backends(monkeypatch):
    """The ``backend`` of every token-mixer call."""
    seen = []

    def spy(*args, backend, **kwargs):
        seen.append(backend)
        return mixer(*args, backend=backend, **kwargs)

    mixer = mambaout.gated_conv_mixer
    monkeypatch.setattr(mambaout, 'gated_conv_mixer', spy)
    return seen


def pair(device='cpu', compile_kwargs=dict(compile_stages=True), **kwargs):
    torch.manual_seed(0)
    eager = MambaOut(ARCH, out_indices=OUT, **kwargs).to(device).train()
    compiled = MambaOut(ARCH, out_indices=OUT, **compile_kwargs, **kwargs).to(device).train()
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def close(a, b, rtol):
    return (a.float() - b.float()).abs().max() <= rtol * a.float().abs().max()


def check_same(eager, compiled, size, rtol, device='cpu', dtype=None):
    x = torch.randn(2, 3, *size, device=device)
    outs, grads = [], []
    for model in (eager, compiled):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            out = model(x)
        # a random projection as the loss: sum(o * o) of a LayerNorm output has ~0 gradient
        torch.manual_seed(1)
        sum((o.float() * torch.randn_like(o.float())).sum() for o in out).backward()
        outs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    for a, b in zip(*outs):
        assert a.shape == b.shape and close(a, b, rtol), size
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n, g in grads[0].items():
        assert close(g, grads[1][n], rtol), (size, n)


def test_same_outputs_and_grads_inductor():
    eager, compiled = pair()
    for size in [(45, 61), (38, 50)]:
        check_same(eager, compiled, size, rtol=1e-5)
    # gradients in their parameters' strides, the conv weights' too (DDP's buckets
    # compare strides exactly)
    for name, p in compiled.named_parameters():
        assert p.grad.stride() == p.stride(), name


def test_compiled_blocks_use_composite_mixer(aot_eager, mixer_backends):
    eager, compiled = pair()
    check_same(eager, compiled, (45, 61), rtol=1e-6)
    # eager blocks ask for 'auto' (the fused op on CUDA), compiled ones for 'reference'
    assert mixer_backends.count('auto') == mixer_backends.count('reference') == 3


def test_frozen_eval_sizes_and_graphs(aot_eager):
    eager, compiled = pair(frozen_stages=1)
    sizes = [(45, 61), (64, 80), (33, 47)]
    for size in sizes:
        check_same(eager, compiled, size, rtol=1e-6)
    train_graphs = counters['stats']['unique_graphs']
    # stage 0 frozen (compiled without graphs), stage 1 trained: one graph each, H and W
    # dynamic from the first size
    assert train_graphs == len(ARCH['depths'])
    eager.eval(), compiled.eval()
    with torch.no_grad():
        for size in sizes[:2]:
            x = torch.randn(1, 3, *size)
            for a, b in zip(eager(x), compiled(x)):
                assert close(a, b, 1e-6)
    assert counters['stats']['unique_graphs'] == train_graphs   # inference: eager


def test_state_dict_pickle_deepcopy(aot_eager):
    eager, compiled = pair()
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any('_orig_mod' in k for k in compiled.state_dict())
    assert str(compiled.load_state_dict(eager.state_dict())) == '<All keys matched successfully>'
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        ref = compiled(x)
        for clone in (copy.deepcopy(compiled), pickle.loads(pickle.dumps(compiled))):
            assert [s.compile_name for s in clone.stages] == ['mambaout_stage0',
                                                              'mambaout_stage1']
            assert all(torch.equal(a, b) for a, b in zip(ref, clone(x)))
            clone.stages[1].blocks[0].fc2.bias.add_(1.)  # the copy runs its own weights
            assert not torch.equal(ref[1], clone(x)[1])
            assert torch.equal(ref[1], compiled(x)[1])


def test_one_compiled_function_per_stage():
    model = MambaOut(dict(depths=[1, 1, 1], dims=[8, 16, 24]), out_indices=2,
                     compile_stages=True)
    runners = [compiled_blocks_runner(s.compile_name) for s in model.stages]
    assert len({id(r) for r in runners}) == 3
    assert MambaOut(ARCH, out_indices=OUT).stages[0].compile_name is None


@pytest.mark.parametrize('with_cp', [True, (0, )])
def test_with_cp_is_exclusive(with_cp):
    with pytest.raises(ValueError, match='compile_stages and with_cp are exclusive'):
        MambaOut(ARCH, out_indices=OUT, with_cp=with_cp, compile_stages=True)
    MambaOut(ARCH, out_indices=OUT, with_cp=(), compile_stages=True)


@pytest.mark.cuda  # inductor + Triton
@pytest.mark.parametrize('dtype, rtol', [(None, 1e-4), (torch.bfloat16, 2e-2)])
def test_cuda_same_as_fused_eager(mixer_backends, dtype, rtol):
    from mmmambaout.ops.gated_conv_mixer import triton_available
    eager, compiled = pair('cuda')
    for size in [(96, 128), (80, 112)]:
        check_same(eager, compiled, size, rtol, 'cuda', dtype)
    if triton_available():  # 'auto' is the fused op on CUDA: not inside the compiled graph
        assert set(mixer_backends) == {'auto', 'reference'}


@pytest.mark.cuda  # CUDA graphs, Triton
def test_cuda_graphs_same_as_eager_over_sizes_and_modes():
    """What MambaOutCompileHook picks for detectors on CUDA: CUDA graphs with memory budget
    0.5. Each size is seen three times (warm-up, recording, replay), sizes alternating,
    then inference (eager): eager's outputs and gradients every time
    (rtol 1e-4: TF32-free fp32, fused kernels sum in another order)."""
    from mmmambaout.engine.compile_hook import cuda_graph_stats
    eager, compiled = pair('cuda', dict(compile_stages='reduce-overhead',
                                        compile_memory_budget=0.5))
    sizes = [(96, 128), (80, 112)]
    before = cuda_graph_stats()[0]
    for size in sizes * 3:
        check_same(eager, compiled, size, 1e-4, 'cuda')
    # what the hook's log line counts (graphs of forward and backward, per size)
    assert cuda_graph_stats()[0] > before
    eager.eval(), compiled.eval()
    with torch.no_grad():
        for size in sizes * 3:
            x = torch.randn(1, 3, *size, device='cuda')
            for a, b in zip(eager(x), compiled(x)):
                assert close(a, b, 1e-4), size


def test_compiled_for_training_steps_only(monkeypatch):
    """Graph modes run where a backward follows; a frozen stage runs the same compilation
    without graphs; without grad (validation, inference) nothing is compiled."""
    modes = []

    def runner(name, mode='default', memory_budget=None):
        modes.append((name, mode, memory_budget))
        return _run_blocks
    monkeypatch.setattr(mambaout, 'compiled_blocks_runner', runner)
    x = torch.randn(1, 3, 32, 32)
    for compile_stages, graph_free in [('reduce-overhead', 'default'),
                                       ('max-autotune', 'max-autotune-no-cudagraphs'),
                                       (True, 'default')]:
        model = MambaOut(ARCH, out_indices=OUT, compile_stages=compile_stages,
                         compile_memory_budget=0.5)
        mode = 'default' if compile_stages is True else compile_stages
        modes.clear()
        model(x)
        assert modes == [('mambaout_stage0', mode, 0.5), ('mambaout_stage1', mode, 0.5)]
        modes.clear()
        with torch.no_grad():
            model(x)
        assert modes == []
        modes.clear()
        MambaOut(ARCH, out_indices=OUT, compile_stages=compile_stages, frozen_stages=1)(x)
        assert [m for _, m, _ in modes] == [graph_free, mode]


def test_one_graph_per_stage_for_all_sizes(aot_eager):
    """H and W are dynamic from the first call: three sizes (H != W, as detection
    batches are), one graph per stage, and eager's results for each."""
    eager, compiled = pair()
    counters.clear()
    for size in [(40, 56), (72, 48), (64, 96)]:
        check_same(eager, compiled, size, rtol=1e-6)
    assert counters['stats']['unique_graphs'] == len(ARCH['depths'])


def test_inference_is_eager(aot_eager):
    """Without grad no stage compiles, whatever the sizes: eager's outputs exactly."""
    eager, compiled = pair()
    counters.clear()
    with torch.no_grad():
        for size in [(40, 56), (72, 48)]:
            x = torch.randn(1, 3, *size)
            assert all(torch.equal(a, b) for a, b in zip(eager(x), compiled(x)))
    assert counters['stats']['unique_graphs'] == 0


def test_whole_model_compiled_by_the_user(aot_eager):
    """torch.compile(model) (mmengine's ``compile=True``) over compiled stages traces
    through them: eager's outputs and gradients."""
    eager, compiled = pair()
    whole = torch.compile(compiled)
    x = torch.randn(2, 3, 40, 52)
    outs = [m(x) for m in (eager, whole)]
    for a, b in zip(*outs):
        assert close(a, b, 1e-6)
    for out in outs:
        sum(o.sum() for o in out).backward()
    for (n, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert close(p.grad, q.grad, 1e-6), n


def test_compile_mode():
    model = MambaOut(dict(depths=(1, 1), dims=(8, 16)), out_indices=(1, ),
                     compile_stages='reduce-overhead')
    assert [s.compile_mode for s in model.stages] == ['reduce-overhead'] * 2
    assert [s.compile_mode for s in MambaOut(dict(depths=(1, ), dims=(8, )), out_indices=(0, ),
                                             compile_stages=True).stages] == ['default']
    with pytest.raises(ValueError, match='compile_stages must be a bool or one of'):
        MambaOut(dict(depths=(1, ), dims=(8, )), out_indices=(0, ), compile_stages='fast')


def test_compiler_failure_says_how_to_go_on(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    import mmmambaout.models.backbones.mambaout as mambaout

    def broken(name, mode='default', memory_budget=None):
        def run(blocks, x):
            raise BackendCompilerFailed(lambda *a: None, OSError('no C++ compiler'), None)
        return run
    monkeypatch.setattr(mambaout, 'compiled_blocks_runner', broken)
    model = MambaOut(dict(depths=(1, ), dims=(8, )), out_indices=(0, ), compile_stages=True)
    with pytest.raises(RuntimeError, match='(?s)no C\\+\\+ compiler.*compile_stages=False'):
        model(torch.randn(1, 3, 32, 32))


def test_memory_budget_saves_fewer_activations(monkeypatch):
    """``compile_memory_budget`` reaches the partitioner: ``aot_eager_decomp_partition``
    (the min-cut partitioner inductor uses, eager kernels) keeps fewer bytes for the
    backward at 0.5 than at 1.0; outputs and gradients stay eager's (rtol 1e-5: the
    decomposed norms and GELU round differently)."""
    monkeypatch.setattr(torch, 'compile', functools.partial(
        torch.compile, backend='aot_eager_decomp_partition'))

    def saved_bytes(model, x):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        sum(o.sum() for o in out).backward()
        return total[0]

    x = torch.randn(2, 3, 40, 48)
    sizes = {}
    for budget in (1.0, 0.5):
        eager, _ = pair()
        compiled = MambaOut(ARCH, out_indices=OUT, compile_stages=True,
                            compile_memory_budget=budget).train()
        compiled.load_state_dict(eager.state_dict())
        sizes[budget] = saved_bytes(compiled, x)
        check_same(eager, compiled, (40, 48), rtol=1e-5)
    assert sizes[0.5] < 0.9 * sizes[1.0], sizes
    # one compiled function per (stage, mode, budget)
    assert compiled_blocks_runner.cache_info().currsize == 2 * len(ARCH['depths'])


@pytest.mark.parametrize('kwargs', [dict(compile_stages=False, compile_memory_budget=0.5),
                                    dict(compile_memory_budget=2.),
                                    dict(compile_stages=True, compile_memory_budget=0.),
                                    dict(compile_stages=True, compile_memory_budget=1.5)])
def test_memory_budget_checked(kwargs):
    with pytest.raises(ValueError, match='compile_memory_budget must be in'):
        MambaOut(ARCH, out_indices=OUT, **kwargs)
