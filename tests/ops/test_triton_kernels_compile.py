"""Every Triton kernel compiles for NVIDIA GPUs on the CPU: Triton's CUDA backend lowers
it to a cubin (its bundled ptxas) for sm_80 and sm_90, with the arguments our launchers
pass (captured from a launch on CPU tensors, not run). The interpreter checks in
test_triton_kernels_interpreted.py run the kernels as Python and miss what only the
compiler checks: a kernel parameter reused as a loop variable of another type, for one,
passed the interpreter and failed on the GPU."""
import pytest
import torch

triton = pytest.importorskip('triton')
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

DTYPES = {torch.float32: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16',
          torch.int32: 'i32', torch.int64: 'i64'}


@pytest.fixture
def launches(monkeypatch):
    """``(kernel, {arg: value}, {option: value})`` of each launch, none run."""
    seen = []

    def getitem(self, grid):
        def launch(*args, **kwargs):
            options = {k: kwargs.pop(k) for k in ('num_warps', 'num_stages') if k in kwargs}
            values = dict(zip(self.arg_names, args), **kwargs)
            seen.append((self, values, options))
        return launch
    monkeypatch.setattr(JITFunction, '__getitem__', getitem)
    return seen


def compile_all(launches, archs=(80, 90)):
    """Compile each distinct launch for each arch; the number of distinct launches."""
    done = set()
    for fn, values, options in launches:
        signature, constexprs = {}, {}
        for p in fn.params:
            v = values[p.name]
            if p.is_constexpr:
                signature[p.name], constexprs[p.name] = 'constexpr', v
            elif isinstance(v, torch.Tensor):
                signature[p.name] = '*' + DTYPES[v.dtype]
            elif isinstance(v, float):
                signature[p.name] = 'fp32'
            else:
                signature[p.name] = 'i32' if -2**31 <= v < 2**31 else 'i64'
        key = (fn.__name__, str(signature), str(constexprs), str(options))
        if key in done:
            continue
        done.add(key)
        for arch in archs:
            compiled = triton.compile(ASTSource(fn, signature, constexprs),
                                      target=GPUTarget('cuda', arch, 32), options=options)
            assert compiled.asm['cubin'], (fn.__name__, arch)
    return len(done)


def test_parallel_nms_kernels_compile(launches):
    from mmmambaout.ops.parallel_nms import greedy_nms_sorted, greedy_nms_sorted_groups
    greedy_nms_sorted(torch.rand(300, 4), 0.5, max_steps=1, check_every=1)
    greedy_nms_sorted_groups(torch.rand(5, 70, 4), torch.full((5, ), 60, dtype=torch.int32),
                             0.5, max_steps=1, check_every=1)
    assert compile_all(launches) == 4


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
def test_gated_conv_mixer_kernels_compile(launches, dtype):
    from mmmambaout.ops.gated_conv_mixer.triton import TritonGate
    y, conv = torch.rand(2, 5, 7, 2 * 96, dtype=dtype), torch.rand(2, 5, 7, 32, dtype=dtype)
    out = TritonGate.forward(y, conv, 96)
    TritonGate.backward(out, y, conv, 96, torch.empty_like(y), torch.empty_like(conv))
    assert compile_all(launches) == 2


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('optional', [True, False])
@pytest.mark.parametrize('segmented', [True, False])
def test_selective_scan_kernels_compile(launches, dtype, optional, segmented, monkeypatch):
    from mmmambaout.ops.selective_scan.triton import CONFIGS, _launch_bwd, _launch_fwd
    # segments in both directions: four kernels; none: the forward and backward alone
    for cfg in CONFIGS.values():
        monkeypatch.setitem(cfg['fwd'], 'SEG_L', 128 if segmented else None)
        monkeypatch.setitem(cfg['bwd'], 'SEG_L', 256 if segmented else None)
    batch, dim, L, G, N = 2, 8, 300, 2, 16
    u, delta, z = (torch.rand(batch, dim, L, dtype=dtype) for _ in range(3))
    A = -torch.rand(dim, N)
    B, C = (torch.rand(batch, G, N, L, dtype=dtype) for _ in range(2))
    D, bias = torch.rand(dim), torch.rand(dim)
    opt = (D, z, bias) if optional else (None, None, None)
    out, states = _launch_fwd(u, delta, A, B, C, *opt, True)
    _launch_bwd(u, delta, A, B, C, *opt, states, out, states[:, :, -1] if optional else None,
                True)
    assert compile_all(launches) == (4 if segmented else 2)


@pytest.mark.parametrize('segmented', [True, False])
def test_selective_scan_kernels_do_not_depend_on_length(launches, segmented, monkeypatch):
    # a new sequence length (a new image size) must not compile new kernels: Triton's own
    # key for a launch (compile-time constants, argument types, and the specialisation of
    # integers equal to 1 or divisible by 16) may change with L only through L itself
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import create_function_from_signature

    from mmmambaout.ops.selective_scan.triton import CONFIGS, _launch_bwd, _launch_fwd
    for cfg in CONFIGS.values():
        monkeypatch.setitem(cfg['fwd'], 'SEG_L', 128 if segmented else None)
        monkeypatch.setitem(cfg['bwd'], 'SEG_L', 256 if segmented else None)
    backend = CUDABackend(GPUTarget('cuda', 90, 32))
    keys = []
    # L: divisible by 16 or not; all of them longer than two segments where segmented
    for L in (600, 1000, 1024, 3136) + (() if segmented else (196, 197)):
        launches.clear()
        u, delta, z = (torch.rand(1, 4, L) for _ in range(3))
        A, D, bias = -torch.rand(4, 16), torch.rand(4), torch.rand(4)
        B, C = (torch.rand(1, 1, 16, L) for _ in range(2))
        out, states = _launch_fwd(u, delta, A, B, C, D, z, bias, True)
        _launch_bwd(u, delta, A, B, C, D, z, bias, states, out, None, True)
        for fn, values, options in launches:
            binder = create_function_from_signature(fn.signature, fn.params, backend)
            _, specialization, _ = binder(**values, debug=False, instrumentation_mode='',
                                          **options)
            keys.append((fn.__name__, str([s for p, s in zip(fn.params, specialization)
                                           if p.name != 'L'])))
    # one key per kernel
    assert len(set(name for name, _ in keys)) == len(set(keys)) == (4 if segmented else 2)
