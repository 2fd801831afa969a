"""The Triton kernels (selective scan, gated conv mixer, parallel NMS) run on the CPU through Triton's
interpreter (``TRITON_INTERPRET=1``), so CI without a GPU still checks their indexing,
masking and arithmetic against the references. Timing means nothing there; the CUDA
tests in test_selective_scan.py / test_gated_conv_mixer.py cover the compiled kernels.

The interpreter is chosen when ``triton.jit`` decorates a kernel, so the checks run in a
fresh interpreter with the variable set (``python this_file.py``). Tolerances: relative
L2 1e-5 against the float64 recurrence (scan, float32 inputs) and max abs 1e-6 against
the PyTorch elementwise passes (mixer, float32); NMS keeps exactly torchvision's boxes.
"""
import inspect
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def grouped(args):
    """``args`` with B / C grouped (batch, G, N, L), as the public function passes them."""
    args = dict(args)
    if args['B'].dim() == 3:
        args['B'], args['C'] = args['B'].unsqueeze(1), args['C'].unsqueeze(1)
    return args


def scan_checks():
    sys.path.insert(0, HERE)
    from test_selective_scan import check_against_plain, make_inputs

    from mmmambaout.ops.selective_scan.triton import CONFIGS, selective_scan_triton

    def fn(args, softplus):
        return selective_scan_triton(**grouped(args), delta_softplus=softplus,
                                     return_last_state=True)

    # the forward's chunk longer than, shorter than and equal to the saved-state interval
    # (the backward's chunk), with channel blocks of 1, 2 and 4, the backward's loads one
    # chunk ahead or not; segments (forward, backward) one chunk long, several chunks
    # long, longer than any case's sequence, or none
    n = 0
    for fwd_l, bwd_l, block_d, prefetch, fwd_seg, bwd_seg in (
            (64, 16, 4, True, 64, 32), (16, 32, 2, False, 32, 64),
            (32, 32, 1, True, None, 32), (16, 16, 2, False, 512, None)):
        CONFIGS['float32'] = dict(fwd=dict(BLOCK_L=fwd_l, BLOCK_D=block_d, num_warps=1,
                                           SEG_L=fwd_seg),
                                  bwd=dict(BLOCK_L=bwd_l, BLOCK_D=block_d, num_warps=1,
                                           PREFETCH=prefetch, SEG_L=bwd_seg))
        longest = max(fwd_l, bwd_l)
        # delta' up to about 200 next to small ones over several segments: the segment
        # maps' sums must not lose the small ones
        cases = [dict(L=1), dict(L=longest + 5), dict(L=2 * longest, groups=2, dim=8),
                 dict(L=23, optional=False), dict(L=19, delta_scale=200.0),
                 dict(L=3 * longest + 1, delta_scale=200.0, dim=2, N=3)]
        for case in cases:
            softplus = case.get('optional', True)
            check_against_plain(make_inputs(**case), softplus, fn, 1e-5, 1e-5)
        n += len(cases)
    return n + output_only_check() + softplus_check()


def output_only_check():
    """Without ``return_last_state`` (no final-state copy) the output and gradients are
    those of the call that returns the final state too, bit for bit."""
    sys.path.insert(0, HERE)
    from test_selective_scan import make_inputs

    from mmmambaout.ops.selective_scan.triton import selective_scan_triton
    args = grouped(make_inputs(L=70, seed=5))
    names = sorted(args)
    results = []
    for with_last in (False, True):
        out = selective_scan_triton(**args, delta_softplus=True, return_last_state=with_last)
        out = out[0] if with_last else out
        results.append((out, torch.autograd.grad(out.sin().sum(), [args[k] for k in names])))
    assert torch.equal(results[0][0], results[1][0])
    for name, a, b in zip(names, results[0][1], results[1][1]):
        assert torch.equal(a, b), name
    return 1


def scan_operator_checks():
    """The scan as PyTorch operators (what torch.compile sees): ``torch.library.opcheck``
    (schema, fake tensors, autograd registration, AOT dispatch with dynamic shapes), on
    contiguous and on transposed inputs, and ``torch.compile(..., backend='aot_eager',
    fullgraph=True, dynamic=True)`` over a function around the scan (no graph break; L
    symbolic) giving the eager outputs and gradients bit for bit, with only the output used
    (no final-state gradient) and with both."""
    sys.path.insert(0, HERE)
    from test_selective_scan import make_inputs

    from mmmambaout.ops.selective_scan.triton import selective_scan_triton

    n = 0
    for case in (dict(L=21), dict(L=9, optional=False), dict(L=40, groups=2, dim=8)):
        args = grouped(make_inputs(**case))
        plain = {k: v.detach() for k, v in args.items()}
        full = [plain[k] for k in ('u', 'delta', 'A', 'B', 'C')] + [
            plain.get(k) for k in ('D', 'z', 'delta_bias')] + [True]
        torch.library.opcheck(torch.ops.mmmambaout.selective_scan_fwd.default, full)
        # a transposed u: the outputs are contiguous, as the fake implementation says
        full[0] = full[0].transpose(1, 2).contiguous().transpose(1, 2)
        torch.library.opcheck(torch.ops.mmmambaout.selective_scan_fwd.default, full)
        n += 1

    def step(args, with_last):
        out, last = selective_scan_triton(**args, delta_softplus=True, return_last_state=True)
        loss = (out.sin() * 2).sum()
        return loss + last.pow(2).sum() if with_last else loss

    # dynamo's graph holds the operator as one node (not the Python that launches kernels)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.compile(step, backend=record, fullgraph=True)(grouped(make_inputs(L=8)), True)
    targets = [str(node.target) for node in graphs[0].graph.nodes]
    assert targets.count('mmmambaout.selective_scan_fwd') == 1, targets
    compiled = torch.compile(step, backend='aot_eager', fullgraph=True, dynamic=True)
    for with_last in (False, True):
        for L in (13, 30):   # a second length: the same graph, L symbolic
            args = grouped(make_inputs(L=L, seed=L))
            names = sorted(args)
            eager_grads = torch.autograd.grad(step(args, with_last), [args[k] for k in names])
            loss = compiled(args, with_last)
            grads = torch.autograd.grad(loss, [args[k] for k in names])
            assert torch.equal(loss, step(args, with_last))
            for name, a, b in zip(names, eager_grads, grads):
                assert torch.equal(a, b), name
            n += 1
    return n + scan_macs_check()


def scan_macs_check():
    """tools/analysis/get_flops.py counts the Triton scan's node in its jit trace (what it
    traces on a GPU): 9 * batch * L * dim * N, plus batch * dim * L each for D and z when
    given."""
    sys.path[:0] = [HERE, os.path.join(os.path.dirname(os.path.dirname(HERE)), 'tools',
                                       'analysis')]
    import get_flops
    from test_selective_scan import make_inputs

    from mmmambaout.ops.selective_scan.triton import selective_scan_triton

    class Scan(torch.nn.Module):
        def forward(self, u, delta, A, B, C, *optional):
            return selective_scan_triton(u, delta, A, B, C, *optional, delta_softplus=True)

    n = 0
    for optional in (True, False):
        args = grouped(make_inputs(L=11, optional=optional))
        inputs = [args[k].detach() for k in ('u', 'delta', 'A', 'B', 'C')] + (
            [args[k].detach() for k in ('D', 'z', 'delta_bias')] if optional else [])
        (batch, dim, L), N = args['u'].shape, args['A'].shape[1]
        counted = get_flops.trace_count(Scan(), tuple(inputs))
        assert counted.total() == 9 * batch * L * dim * N + batch * dim * L * 2 * optional, (
            optional, counted.by_operator())
        n += 1
    return n


def softplus_check():
    """The scan's softplus against float64 from -30 to 30: relative 1e-6 (float32), where
    log(1 + exp(x)) gives 0 from about -17 on."""
    import triton
    import triton.language as tl

    from mmmambaout.ops.selective_scan.triton import _softplus
    globals()['_softplus'] = _softplus   # a jitted kernel resolves names in its globals

    @triton.jit
    def kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(y_ptr + offs, _softplus(tl.load(x_ptr + offs, mask=mask)), mask=mask)

    x = torch.tensor([-30., -20., -17., -5., -4.6, -1., 0., 1e-3, 1., 4.6, 19.9, 20., 30.])
    y = torch.empty_like(x)
    kernel[(1, )](x, y, len(x), BLOCK=16)
    ref = torch.nn.functional.softplus(x.double())
    assert ((y.double() - ref).abs() / ref).max() < 1e-6, (y, ref)
    assert y[1].item() > 0   # softplus(-20) = 2.06e-9, not 0
    return 1


def mixer_checks():
    from mmmambaout.ops.gated_conv_mixer import _TorchGate
    from mmmambaout.ops.gated_conv_mixer.triton import BLOCK_H, BLOCK_M, TritonGate
    g = torch.Generator().manual_seed(0)
    shapes = [((2, 5, 7), 40, 15), ((1, BLOCK_M + 1, 1), BLOCK_H + 3, BLOCK_H + 3),
              ((3, 2, 2), 12, 5)]
    for shape, hidden, nc in shapes:
        y = torch.randn(*shape, 2 * hidden, generator=g)
        conv = torch.randn(*shape, nc, generator=g)
        dout = torch.randn(*shape, hidden, generator=g)
        assert (TritonGate.forward(y, conv, hidden)
                - _TorchGate.forward(y, conv, hidden)).abs().max() < 1e-6
        grads = []
        for impl in (TritonGate, _TorchGate):
            dy = torch.full_like(y, float('nan'))
            dy[..., 2 * hidden - nc:] = 0   # the conv backward's slice, not the gate's
            dconv = torch.full_like(conv, float('nan'))
            impl.backward(dout, y, conv, hidden, dy, dconv)
            grads.append((dy, dconv))
        for a, b in zip(*grads):
            assert torch.isfinite(a).all()   # every element written
            assert (a - b).abs().max() < 1e-6
    return len(shapes) + mixer_fp16_check()


def mixer_fp16_check():
    """fp16 at large magnitudes: the fused gate computes in float32, so where the
    composite fp16 backward's intermediate dout * v overflows (300 x 300 > 65504) and
    meets GELU'(g) ~ 0 (inf * 0 = nan), its gradients stay finite. Against float64, per
    element: 2^-10 relative (the fp16 rounding of the result, with float32's), plus
    2^-22 of the factors' product (float32's 1 + erf(g / sqrt 2) loses the small values
    of the normal CDF below g ~ -4 to cancellation, as PyTorch's CUDA GELU does), plus
    2^-24 (fp16's subnormal spacing)."""
    from mmmambaout.ops.gated_conv_mixer.triton import TritonGate
    hidden, nc = 24, 8
    g = torch.Generator().manual_seed(0)
    gate = torch.linspace(-12, 12, hidden)
    # magnitude 300 where GELU'(g) ~ 0 (dout * v overflows, the true gradient does not),
    # 100 elsewhere (every true result within fp16's range)
    amp = torch.where(gate < -5, 300., 100.)
    uniform = lambda n: (torch.rand(2, 3, 4, n, generator=g) - 0.5) * 2  # noqa: E731
    y = torch.cat((gate.expand(2, 3, 4, hidden), amp * uniform(hidden)), -1)
    conv = amp[hidden - nc:] * uniform(nc)
    dout = amp * uniform(hidden)
    y, conv, dout = y.half(), conv.half(), dout.half()
    dy, dconv = torch.zeros_like(y), torch.zeros_like(conv)
    out = TritonGate.forward(y, conv, hidden)
    TritonGate.backward(dout, y, conv, hidden, dy, dconv)

    y64, c64, d64 = y.double(), conv.double(), dout.double()
    gate = y64[..., :hidden]
    v = torch.cat((y64[..., hidden:2 * hidden - nc], c64), -1)
    cdf = 0.5 * (1 + torch.erf(gate / 2**0.5))
    pdf = torch.exp(-0.5 * gate**2) / (2 * torch.pi)**0.5
    ref_out, ref_dg, ref_dv = gate * cdf * v, d64 * v * (cdf + gate * pdf), d64 * gate * cdf
    scale_out, scale_dg, scale_dv = (gate * v).abs(), (d64 * v).abs() * (1 + gate.abs()), \
        (d64 * gate).abs()
    assert (d64 * v).abs().max() > 65504          # the composite's intermediate overflows
    for got, ref, scale in ((out, ref_out, scale_out), (dy[..., :hidden], ref_dg, scale_dg),
                            (dy[..., hidden:2 * hidden - nc], ref_dv[..., :hidden - nc],
                             scale_dv[..., :hidden - nc]),
                            (dconv, ref_dv[..., hidden - nc:], scale_dv[..., hidden - nc:])):
        assert torch.isfinite(got).all()
        bad = (got.double() - ref).abs() > 2**-10 * ref.abs() + 2**-22 * scale + 2**-24
        assert not bad.any(), (got.double()[bad][:5], ref[bad][:5])
    return 1


def nms_checks():
    import torchvision

    from mmmambaout.ops.parallel_nms import greedy_nms_sorted
    g = torch.Generator().manual_seed(0)
    cases = [(1, 0.5), (70, 0.5), (300, 0.7), (257, 0.3)]
    for n, thr in cases:
        centers = torch.rand(n, 2, generator=g) * 60          # dense: long suppression chains
        wh = torch.rand(n, 2, generator=g) * 30 + 1
        boxes = torch.cat((centers - wh / 2, centers + wh / 2), 1)
        boxes[3::7] = boxes[0]                                 # exact duplicates
        boxes[5::11, 2:] = boxes[5::11, :2]                    # empty boxes (0/0 IoU)
        b = boxes[torch.rand(n, generator=g).argsort(descending=True)]
        ref = torch.zeros(n, dtype=torch.bool)
        ref[torchvision.ops.nms(b, torch.arange(n, 0, -1).float(), thr)] = True
        keep = greedy_nms_sorted(b, thr)
        assert keep is not None and torch.equal(keep, ref), (n, thr)
    # a chain where each box only overlaps its neighbours: it takes ~n steps to settle
    x = torch.arange(40).float() * 0.2
    chain = torch.stack((x, torch.zeros(40), x + 1, torch.ones(40)), 1)
    assert greedy_nms_sorted(chain, 0.5, max_steps=8) is None
    keep = greedy_nms_sorted(chain, 0.5, max_steps=64, check_every=1)
    ref = torch.zeros(40, dtype=torch.bool)
    ref[torchvision.ops.nms(chain, torch.arange(40, 0, -1).float(), 0.5)] = True
    assert torch.equal(keep, ref)
    return len(cases) + 1 + nms_per_class_checks()


def nms_per_class_checks():
    """ClassBatchedNMSBBoxHead's multiclass NMS (all classes in the same launches)
    against mmdet's, whose mmcv batched_nms loops over the classes from split_thr
    candidates on: the same boxes, scores and labels in the same order (distinct scores;
    mmcv's sort leaves equal ones in any order, so with ties the same detections and the
    same sequence of scores). Every case checks that the batched kernels gave the result
    (the head falls back to mmcv's loop when they fail or do not settle)."""
    import mmmambaout.models.heads.class_batched_nms_bbox_head as head_module
    import mmmambaout.ops.parallel_nms as parallel_nms
    from mmdet.models.layers import multiclass_nms as mmdet_nms
    ran = []

    def spy(*args):
        keep = batched(*args)
        ran.append(keep is not None)
        return keep
    batched, parallel_nms.nms_per_class = parallel_nms.nms_per_class, spy

    def check(ours, ref, ties=False):
        assert ran and all(ran) and head_module.BATCHED_NMS.reason is None, ran
        ran.clear()
        if not ties:
            assert all(torch.equal(a, b) for a, b in zip(ours, ref))
            return
        assert torch.equal(ours[0][:, -1], ref[0][:, -1])             # score sequence
        as_set = [sorted(map(tuple, torch.cat([d, lab[:, None]], 1).tolist()))
                  for d, lab in (ours, ref)]
        assert as_set[0] == as_set[1]

    g = torch.Generator().manual_seed(1)
    n, classes = 300, 7
    for per_class_boxes, thr, nms_cfg, max_num, extent, size, ties in (
            (True, 0.0, dict(type='nms', iou_threshold=0.5), 100, 200, 80, False),
            # small boxes: widths + 1 change their IoUs
            (True, 0.1, dict(type='nms', iou_threshold=0.5, offset=1, max_num=600), -1, 20, 4,
             False),
            (False, 0.0, dict(type='nms', iou_threshold=0.3), -1, 200, 80, False),
            (True, 0.0, dict(type='nms', iou_threshold=0.5), -1, 100, 40, True)):
        centers = torch.rand(n, classes if per_class_boxes else 1, 2, generator=g) * extent
        wh = torch.rand(n, centers.shape[1], 2, generator=g) * size + 1
        bboxes = torch.cat((centers - wh / 2, centers + wh / 2), -1).view(n, -1)
        scores = torch.randperm(n * (classes + 1), generator=g).float().view(n, -1)
        scores = (scores / scores.sum(1, keepdim=True))
        if ties:                                            # 16 score levels
            scores = (scores * 64).round() / 64 + 1 / 128
        scores[:, 3] = 0                                    # a class without candidates
        nms_cfg = dict(nms_cfg, split_thr=200)              # mmcv: the loop over classes
        ref = mmdet_nms(bboxes, scores, thr, nms_cfg, max_num)
        ours = head_module.multiclass_nms(bboxes, scores, thr, nms_cfg, max_num)
        check(ours, ref, ties)
        assert len(ours[0]) > 20 and 3 not in ours[1], nms_cfg
    # disjoint boxes, all kept: equal scores come by index
    x = torch.arange(50.) * 10
    disjoint = torch.stack((x, 0 * x, x + 5, 0 * x + 5), 1)
    tied = torch.randint(0, 4, (50, ), generator=g).float()
    keep = batched(disjoint, tied, torch.randint(0, 5, (50, ), generator=g), 0.5)
    assert keep.tolist() == sorted(range(50), key=lambda i: (-tied[i].item(), i))
    # no candidate at all, split_thr 0: mmdet's empty result
    empty = head_module.multiclass_nms(bboxes, scores, 2.0, dict(nms_cfg, split_thr=0), -1)
    assert empty[0].shape == (0, 5) and empty[1].shape == (0, )
    # the head's predictions through that path (CPU tensors: the interpreter runs them)
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'models', 'heads'))
    from test_class_batched_nms_bbox_head import heads, predictions, random_rois

    head_module._triton_device = lambda t: True
    ours, stock = heads('cpu', 6)
    rois, feats = random_rois(300, 'cpu')
    nms = dict(type='nms', iou_threshold=0.5, split_thr=100)
    with torch.no_grad():
        got = predictions(ours, rois, feats, 0.0, nms)
        assert len(got[0]) == 100
        check(got, predictions(stock, rois, feats, 0.0, nms))
    return 6


@pytest.mark.parametrize('which', ['scan', 'scan_operator', 'mixer', 'nms'])
def test_triton_kernels_under_interpreter(which):
    pytest.importorskip('triton')
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, __file__, which], env=env, capture_output=True,
                          text=True, timeout=600, cwd=os.path.dirname(os.path.dirname(HERE)))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'cases passed' in proc.stdout


def fix_interpreter_index():
    """Triton 3.6's interpreter converts a runtime scalar (a one-element array) to an
    index with ``int(array)``, which NumPy >= 2.4 refuses for arrays of one dimension, so
    ``range(0, n)`` over a kernel argument fails there ("only 0-dimensional arrays can be
    converted to Python scalars"). Triton 3.8 squeezes first; do the same on versions
    without that fix. Interpreter only: compiled kernels never see NumPy."""
    from triton.runtime import interpreter
    original = interpreter._patch_lang_tensor
    if 'squeeze' in inspect.getsource(original):
        return

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, '__index__', lambda self: int(self.handle.data.squeeze()))
    interpreter._patch_lang_tensor = patch


if __name__ == '__main__':
    fix_interpreter_index()
    n = {'scan': scan_checks, 'scan_operator': scan_operator_checks, 'mixer': mixer_checks,
         'nms': nms_checks}[sys.argv[1]]()
    print(f'{sys.argv[1]}: {n} cases passed')
