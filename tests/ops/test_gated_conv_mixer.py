"""The fused Gated CNN token mixer against the composite PyTorch ops.

CPU: the fused autograd op (elementwise passes in PyTorch) against the reference in
float64 (max abs 1e-12) and float32 (1e-5), plus float64 gradcheck. CUDA (skipped
without a GPU): the Triton passes against the float64 reference, relative L2 error
1e-5 in float32 and 1e-2 in bf16 / fp16, outputs and every gradient; and the backbone
with and without the fused mixer.
"""
import pytest
import torch

from mmmambaout.models.backbones.mambaout import MambaOut
from mmmambaout.ops.gated_conv_mixer import (gated_conv_mixer, gated_conv_mixer_reference,
                                             triton_available)


def cuda(test):
    """A CUDA case of the Triton kernels: marked ``cuda``, and skipped without Triton."""
    return pytest.mark.cuda(
        pytest.mark.skipif(not triton_available(), reason='needs Triton')(test))


def make_inputs(shape, hidden, conv_channels, kernel=7, dtype=torch.float64, device='cpu',
                bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(*shape, 2 * hidden, generator=g, dtype=torch.float64)
    w = torch.randn(conv_channels, 1, kernel, kernel, generator=g, dtype=torch.float64) * 0.2
    b = torch.randn(conv_channels, generator=g, dtype=torch.float64) if bias else None
    dout = torch.randn(*shape, hidden, generator=g, dtype=torch.float64)
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32  # parameters
    y = y.to(device, dtype).requires_grad_()
    w = w.to(device, pdtype).requires_grad_()
    b = b.to(device, pdtype).requires_grad_() if bias else None
    return y, w, b, dout.to(device, dtype)


def run(backend, y, w, b, hidden, dout):
    out = gated_conv_mixer(y, w, b, hidden, backend=backend)
    params = [t for t in (y, w, b) if t is not None]
    return [out] + list(torch.autograd.grad(out, params, dout))


@pytest.mark.parametrize('shape, hidden, conv_channels, bias', [
    ((2, 7, 9), 40, 15, True),      # odd spatial size, conv part < hidden
    ((1, 5, 4), 12, 12, False),     # conv part == hidden (no identity part), no bias
    ((3, 1, 1), 8, 3, True),        # 1x1 map
])
@pytest.mark.parametrize('dtype, tol', [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_fused_matches_reference_cpu(shape, hidden, conv_channels, bias, dtype, tol):
    y, w, b, dout = make_inputs(shape, hidden, conv_channels, dtype=dtype, bias=bias)
    ref = run('reference', y, w, b, hidden, dout)
    fused = run('fused', y, w, b, hidden, dout)
    for name, r, f in zip(('out', 'dy', 'dw', 'db'), ref, fused):
        assert f.dtype == r.dtype and f.shape == r.shape
        assert (r - f).abs().max().item() <= tol * max(1., r.abs().max().item()), name


@pytest.mark.parametrize('backend', ['fused', 'reference'])
def test_weight_gradient_in_the_weight_layout(backend):
    """The conv runs channels-last, whose weight gradient has strides [k*k, 1, k, 1];
    the op returns it contiguous, the weight's own layout (DDP's gradient buckets would
    otherwise copy it on every step and warn "Grad strides do not match bucket view
    strides")."""
    y, w, b, dout = make_inputs((2, 9, 11), 16, 8, dtype=torch.float32)
    gated_conv_mixer(y, w, b, 16, backend=backend).backward(dout)
    assert w.grad.stride() == w.stride()


DDP_PROBE = """
import sys, warnings, torch, torch.distributed as dist
from mmmambaout.ops.gated_conv_mixer import gated_conv_mixer
backend, store = sys.argv[1], sys.argv[2]

class Mixer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 8, 7, padding=3, groups=8)

    def forward(self, y):
        if backend == 'plain':   # a channels-last conv with nothing done about its layout
            c = y[..., 24:].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
            return self.conv(c)
        return gated_conv_mixer(y, self.conv.weight, self.conv.bias, 16, backend=backend)

dist.init_process_group('gloo', init_method='file://' + store, rank=0, world_size=1)
model = torch.nn.parallel.DistributedDataParallel(Mixer())
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    for _ in range(2):
        model(torch.randn(2, 9, 11, 32)).sum().backward()
dist.destroy_process_group()
print(sum('bucket view strides' in str(w.message) for w in caught))
"""


@pytest.mark.parametrize('backend, warnings', [('fused', 0), ('reference', 0), ('plain', 1)])
def test_ddp_stride_warning(tmp_path, backend, warnings):
    """DDP (gloo, one process) over the op: no "Grad strides do not match bucket view
    strides" warning (autograd's channels-last conv returns the weight gradient with
    strides [k*k, 1, k, 1]); a plain channels-last conv does warn. The reference is also
    what compiled stages run. DDP warns once per process: each case runs in its own."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, '-c', DDP_PROBE, backend, str(tmp_path / 'store')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == str(warnings), proc.stdout


@pytest.mark.parametrize('backend', ['fused', 'reference'])
@pytest.mark.parametrize('layout', ['channels_last', 'nchw'])
def test_conv_layouts_same_result(backend, layout):
    """Each forced layout gives the reference's output and gradients (float64, 1e-12)."""
    y, w, b, dout = make_inputs((2, 7, 9), 40, 15)
    ref = run('reference', y, w, b, 40, dout)
    out = gated_conv_mixer(y, w, b, 40, backend=backend, conv_layout=layout)
    got = [out] + list(torch.autograd.grad(out, (y, w, b), dout))
    for name, r, g in zip(('out', 'dy', 'dw', 'db'), ref, got):
        assert (r - g).abs().max().item() <= 1e-12 * max(1., r.abs().max().item()), name
    with pytest.raises(ValueError, match="conv_layout must be one of"):
        gated_conv_mixer(y, w, b, 40, backend=backend, conv_layout='nhwc')


def test_fused_gradcheck_float64():
    y, w, b, _ = make_inputs((1, 5, 6), 12, 5, kernel=3)
    assert torch.autograd.gradcheck(
        lambda y, w, b: gated_conv_mixer(y, w, b, 12, backend='fused'), (y, w, b))


def test_auto_is_reference_on_cpu_and_errors():
    y, w, b, _ = make_inputs((1, 3, 3), 8, 4)
    assert torch.equal(gated_conv_mixer(y, w, b, 8), gated_conv_mixer_reference(y, w, b, 8))
    with pytest.raises(ValueError, match="backend must be 'auto', 'fused' or 'reference'"):
        gated_conv_mixer(y, w, b, 8, backend='cuda')
    with pytest.raises(ValueError, match='expected 2 \\* hidden = 18'):
        gated_conv_mixer(y, w, b, 9)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@cuda
@pytest.mark.parametrize('dtype, tol', [(torch.float32, 1e-5), (torch.bfloat16, 1e-2),
                                        (torch.float16, 1e-2)])
@pytest.mark.parametrize('shape, hidden, conv_channels', [
    ((2, 50, 81), 256, 96),       # MambaOut-T stage 1 (rows not a multiple of the block)
    ((1, 13, 7), 341, 128),       # MambaOut-B stage 1 width: hidden not a multiple of 128
    ((2, 3, 3), 40, 40),          # no identity part
])
def test_triton_matches_reference_cuda(dtype, tol, shape, hidden, conv_channels):
    y, w, b, dout = make_inputs(shape, hidden, conv_channels, device='cuda', dtype=dtype)
    ref = run('reference', *(t.detach().double().requires_grad_() for t in (y, w, b)),
              hidden, dout.double())
    fused = run('fused', y, w, b, hidden, dout)
    assert fused[0].dtype == dtype and fused[1].dtype == dtype
    assert fused[2].dtype == fused[3].dtype == torch.float32   # parameter dtype
    for name, r, f in zip(('out', 'dy', 'dw', 'db'), ref, fused):
        assert torch.isfinite(f).all(), name
        assert rel(f, r) < tol, (name, rel(f, r))


@cuda
def test_backbone_fused_matches_composite_cuda():
    """fp32 (TF32 off): relative L2 1e-4 on outputs and parameter gradients; bf16 autocast:
    3e-2 (the fused gate rounds once, the composite ops three times)."""
    torch.manual_seed(0)
    arch = dict(depths=[2, 1, 2, 1], dims=[32, 48, 64, 96])
    fused = MambaOut(arch, fused_mixer=True).cuda().train()
    plain = MambaOut(arch, fused_mixer=False).cuda().train()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 97, 131, device='cuda')
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for dtype, tol in ((None, 1e-4), (torch.bfloat16, 3e-2)):
            results, proj = [], None
            for m in (plain, fused):
                m.zero_grad()
                with torch.autocast('cuda', dtype=dtype or torch.float32,
                                    enabled=dtype is not None):
                    outs = m(x)
                if proj is None:  # a fixed random projection: gradients of order one
                    proj = [torch.randn(o.shape, device='cuda') for o in outs]
                sum((o.float() * p).sum() for o, p in zip(outs, proj)).backward()
                results.append([o.float() for o in outs] +
                               [p.grad.clone() for p in m.parameters()])
            for r, f in zip(*results):
                assert rel(f, r) < tol, (dtype, rel(f, r))
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
