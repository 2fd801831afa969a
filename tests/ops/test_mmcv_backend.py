"""mmmambaout.ops.mmcv_backend: names, errors and op parity (how it is found:
tests/ops/test_mmcv_ext_finder.py).

Parity is against tests/ops/op_references.py (plain PyTorch from the op definitions),
through mmcv's public ops (mmcv.ops.nms / roi_align / sigmoid_focal_loss), so mmcv's
autograd Functions and our ext functions are exercised together.
Tolerances: float64 1e-10 absolute (same math, different summation order);
float32 1e-5 absolute and relative, against the reference run in float64 on the same
(float32-representable) inputs.
"""
import ast
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mmmambaout  # noqa: F401  (installs the backend)
import mmcv
import mmcv.ops
from mmmambaout.ops import mmcv_backend

sys.path.insert(0, str(Path(__file__).parent))
from op_references import nms_ref, roi_align_ref, sigmoid_focal_loss_ref  # noqa: E402

OPS_DIR = Path(mmcv.__file__).parent / 'ops'
EXT = sys.modules['mmcv._ext']
# a compiled extension has a __file__ (the .so); the stand-in has none
ours = pytest.mark.skipif(getattr(EXT, '__file__', None) is not None,
                          reason='a compiled mmcv._ext is installed; the backend stays out')


def _close(actual, ref):
    """actual (float64 or float32) against a float64 reference, tolerances as above."""
    tol = 1e-10 if actual.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(actual.double(), ref, atol=tol, rtol=0 if tol < 1e-6 else tol)


def _names_from_ast():
    """load_ext('_ext', [...]) names read with ast, independently of the backend's regex."""
    names = set()
    for path in OPS_DIR.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, 'attr', None) == 'load_ext':
                assert ast.literal_eval(node.args[0]) == '_ext', path
                names.update(ast.literal_eval(node.args[1]))
    return names


# --- names, errors, installation -------------------------------------------------------

@ours
def test_every_ext_name_present():
    names = _names_from_ast()
    assert len(names) > 100  # mmcv 2.1.0 asks for 112
    missing = sorted(n for n in names if not callable(getattr(EXT, n, None)))
    assert not missing, f'mmcv._ext stand-in lacks {missing}'
    assert mmcv_backend.mmcv_ext_names(OPS_DIR) == names
    assert mmcv._ext is EXT


@ours
def test_unimplemented_ops_raise_clear_error():
    stubs = _names_from_ast() - set(mmcv_backend._IMPLEMENTED)
    assert {'nms_rotated', 'deform_conv_forward', 'softnms'} <= stubs
    for name in stubs:
        with pytest.raises(NotImplementedError, match=rf"'{name}'.*mim install mmcv==2\.1\.0"):
            getattr(EXT, name)(torch.zeros(1))
    with pytest.raises(NotImplementedError, match='deform_conv_forward'):
        mmcv.ops.DeformConv2d(2, 2, 3)(torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 3, 3))


@ours
def test_roi_align_max_mode_raises():
    with pytest.raises(NotImplementedError, match="pool_mode='max'.*pool_mode='avg'"):
        mmcv.ops.roi_align(torch.rand(1, 1, 4, 4), torch.tensor([[0., 0, 0, 2, 2]]), 2,
                           1.0, 0, 'max', True)


def _run(code):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_fresh_interpreter_imports_mmdet_mmseg():
    _run('import mmmambaout, mmdet.models, mmseg.models')


def test_failed_mmcv_ops_import_recovers():
    # an import of mmcv.ops that failed before mmmambaout leaves nothing half-made behind
    # (Python drops modules whose import failed): importing mmmambaout then suffices
    _run('try:\n import mmcv.ops\nexcept ImportError:\n pass\n'
         'import mmmambaout, mmdet.models\nfrom mmcv.ops import nms')


def test_custom_imports_in_time_for_mmdet_train_tool(tmp_path):
    """mmdet's tools/train.py imports mmengine and mmdet.utils, then the config's
    custom_imports run; mmcv.ops is first needed when the Runner builds the model."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['mmmambaout'], allow_failed_imports=False)\n")
    _run('from mmengine.config import Config\nfrom mmengine.runner import Runner\n'
         'from mmdet.utils import setup_cache_size_limit_of_dynamo\nimport sys\n'
         "assert 'mmcv.ops' not in sys.modules\n"
         f'Config.fromfile({str(cfg)!r})\n'
         'import mmdet.models\nfrom mmcv.ops import RoIAlign')


# --- nms -----------------------------------------------------------------------------

def _random_boxes(n, gen, size=50.0):
    xy = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=gen, dtype=torch.float64) * size / 2
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize('offset', [0, 1])
@pytest.mark.parametrize('iou', [0.3, 0.5, 0.7])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_nms_matches_reference(offset, iou, dtype):
    gen = torch.Generator().manual_seed(0)
    boxes = _random_boxes(200, gen).to(dtype)
    scores = torch.rand(200, generator=gen).to(dtype)
    _, inds = mmcv.ops.nms(boxes, scores, iou, offset=offset)
    assert torch.equal(inds, nms_ref(boxes, scores, iou, offset))


@pytest.mark.parametrize('offset', [0, 1])
def test_nms_tied_scores_keep_lower_index(offset):
    gen = torch.Generator().manual_seed(1)
    boxes = _random_boxes(100, gen, size=20.0)
    scores = (torch.rand(100, generator=gen) * 3).floor()  # three score levels, many ties
    _, inds = mmcv.ops.nms(boxes, scores, 0.4, offset=offset)
    assert torch.equal(inds, nms_ref(boxes, scores, 0.4, offset))
    same = torch.tensor([[0., 0, 10, 10]] * 4)
    assert mmcv.ops.nms(same, torch.ones(4), 0.5)[1].tolist() == [0]


def test_nms_offset_one_is_plus_one_width():
    # offset 0: touching corners, IoU 0; offset 1: each box is 2x2, overlap 1x1, IoU 1/7
    boxes = torch.tensor([[0., 0, 1, 1], [1, 1, 2, 2]])
    scores = torch.tensor([0.9, 0.8])
    assert mmcv.ops.nms(boxes, scores, 0.1, offset=0)[1].tolist() == [0, 1]
    assert mmcv.ops.nms(boxes, scores, 0.1, offset=1)[1].tolist() == [0]
    assert mmcv.ops.nms(boxes, scores, 0.15, offset=1)[1].tolist() == [0, 1]


def test_nms_iou_equal_to_threshold_is_kept():
    # IoU 33/110 = 0.3 exactly: not above the threshold, in float32 as in float64
    boxes = torch.tensor([[50., 23, 53, 39], [48, 15, 53, 34]])
    for dtype in (torch.float32, torch.float64):
        assert mmcv.ops.nms(boxes.to(dtype), torch.tensor([0.9, 0.8]).to(dtype),
                            0.3)[1].tolist() == [0, 1]


def test_nms_edge_cases():
    dets, inds = mmcv.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert dets.shape == (0, 5) and inds.shape == (0,) and inds.dtype == torch.long
    # zero-area boxes: IoU 0 (offset 0), never suppress each other
    point = torch.tensor([[5., 5, 5, 5], [5, 5, 5, 5]])
    assert mmcv.ops.nms(point, torch.tensor([0.5, 0.6]), 0.5)[1].tolist() == [1, 0]
    assert mmcv.ops.nms(point, torch.tensor([0.5, 0.6]), 0.5, offset=1)[1].tolist() == [1]
    # score threshold and max_num go through the same kernel
    boxes = torch.tensor([[0., 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]])
    _, inds = mmcv.ops.nms(boxes, torch.tensor([0.2, 0.9, 0.6]), 0.5, score_threshold=0.3)
    assert inds.tolist() == [1, 2]
    assert mmcv.ops.nms(boxes.numpy(), torch.tensor([0.2, 0.9, 0.6]).numpy(), 0.5,
                        max_num=1)[1].tolist() == [1]


@pytest.mark.cuda
@pytest.mark.parametrize('offset', [0, 1])
def test_nms_cuda_parallel_path_equals_cpu(offset):
    """From PARALLEL_NMS_MIN_BOXES boxes on, CUDA float32 NMS skips torchvision's serial
    walk (mmmambaout.ops.parallel_nms): same kept indices, same order as on the CPU."""
    gen = torch.Generator().manual_seed(3)
    n = 9000   # an RPN image: 5 levels, batched_nms offsets them apart
    boxes = _random_boxes(n, gen, size=800.0).float()
    scores = torch.rand(n, generator=gen)
    levels = torch.randint(0, 5, (n,), generator=gen)
    assert n >= mmcv_backend.PARALLEL_NMS_MIN_BOXES
    cfg = dict(type='nms', iou_threshold=0.7, offset=offset)
    cpu = mmcv.ops.batched_nms(boxes, scores, levels, cfg)[1]
    cuda = mmcv.ops.batched_nms(boxes.cuda(), scores.cuda(), levels.cuda(), cfg)[1]
    assert torch.equal(cuda.cpu(), cpu)
    assert mmcv_backend.PARALLEL_NMS.reason is None    # the Triton path ran


def test_nms_falls_back_when_the_triton_path_fails(monkeypatch):
    pytest.importorskip('triton')
    import mmmambaout.ops.parallel_nms as parallel_nms

    def broken(boxes, threshold):
        raise RuntimeError('no kernel for this GPU')
    monkeypatch.setattr(parallel_nms, 'greedy_nms_sorted', broken)
    monkeypatch.setattr(mmcv_backend.PARALLEL_NMS, 'reason', None)
    with pytest.warns(UserWarning, match="no kernel for this GPU.*torchvision's NMS"):
        assert mmcv_backend._parallel_nms(torch.zeros(3000, 4), 0.5) is None
    assert mmcv_backend._parallel_nms(torch.zeros(3000, 4), 0.5) is None   # stays off


def test_out_of_memory_does_not_turn_a_fast_path_off():
    guard = mmcv_backend.DisableOnFailure('a fast path', 'the other path')

    def oom():
        raise torch.cuda.OutOfMemoryError('CUDA out of memory')
    with pytest.raises(torch.cuda.OutOfMemoryError):
        guard(oom)
    assert guard.reason is None and guard(lambda: 3) == 3


def test_batched_nms_per_class():
    gen = torch.Generator().manual_seed(2)
    boxes = _random_boxes(150, gen).float()
    scores = torch.rand(150, generator=gen)
    labels = torch.randint(0, 4, (150,), generator=gen)
    dets, keep = mmcv.ops.batched_nms(boxes, scores, labels, dict(type='nms', iou_threshold=0.5))
    expected = set()
    for c in range(4):
        idx = (labels == c).nonzero().squeeze(1)
        expected |= set(idx[nms_ref(boxes[idx], scores[idx], 0.5)].tolist())
    assert set(keep.tolist()) == expected
    assert torch.all(dets[:-1, 4] >= dets[1:, 4])


# --- roi_align -----------------------------------------------------------------------

def _rois(dtype):
    return torch.tensor([
        [0, 1.3, 2.1, 9.7, 8.2],      # inside
        [1, -4.0, -3.0, 6.5, 5.0],    # partly outside (top-left)
        [1, 10.0, 4.0, 19.0, 14.0],   # partly outside (bottom-right)
        [0, 30.0, 30.0, 40.0, 45.0],  # fully outside
        [1, 4.0, 4.0, 4.0, 4.0],      # zero area
        [0, 3.2, 5.0, 3.6, 5.1],      # smaller than a pixel
        [1, 0.0, 0.0, 15.0, 11.0],    # the whole map
    ], dtype=dtype)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('spatial_scale', [1.0, 0.5])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_roi_align_matches_reference(aligned, sampling_ratio, spatial_scale, dtype):
    gen = torch.Generator().manual_seed(3)
    feat = torch.randn(2, 3, 12, 16, generator=gen, dtype=torch.float64).to(dtype)
    rois = _rois(dtype)
    rois[:, 1:] /= spatial_scale  # keep the boxes where they are on the feature map
    args = ((3, 2), spatial_scale, sampling_ratio, 'avg', aligned)
    x = feat.clone().requires_grad_()
    out = mmcv.ops.roi_align(x, rois, *args)
    x_ref = feat.double().requires_grad_()
    ref = roi_align_ref(x_ref, rois.double(), (3, 2), spatial_scale, sampling_ratio, aligned)
    _close(out, ref)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * g.to(dtype)).sum().backward()
    (ref * g).sum().backward()
    _close(x.grad, x_ref.grad)
    assert out[3].abs().max() == 0  # fully outside the map reads zeros


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_roi_align_half_features_pool_at_float32_coordinates(dtype):
    """Half features with float32 RoIs far from the origin: pooled in float32, so only the
    output's rounding differs (relative 2**-8 for bf16, 2**-11 for fp16) from float64."""
    gen = torch.Generator().manual_seed(5)
    feat = torch.randn(1, 4, 64, 700, generator=gen, dtype=torch.float64).to(dtype)
    rois = torch.tensor([[0, 600.3, 10.1, 655.7, 40.9], [0, 512.2, 1.6, 700.0, 63.2]])
    x = feat.clone().requires_grad_()
    out = mmcv.ops.roi_align(x, rois, (7, 7), 1.0, 0, 'avg', True)
    assert out.dtype == dtype
    x_ref = feat.double().requires_grad_()
    ref = roi_align_ref(x_ref, rois.double(), (7, 7), 1.0, 0, True)
    tol = 2**-7 if dtype == torch.bfloat16 else 2**-10
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype)
    (out * g).sum().backward()
    (ref * g.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=tol,
                               atol=tol * x_ref.grad.abs().max().item())


def test_roi_align_module_and_no_boxes():
    layer = mmcv.ops.RoIAlign(7, spatial_scale=0.25, sampling_ratio=0)
    x = torch.rand(2, 4, 8, 8, requires_grad=True)
    out = layer(x, torch.zeros(0, 5))
    assert out.shape == (0, 4, 7, 7)
    out.sum().backward()
    assert x.grad.abs().sum() == 0


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
def test_roi_align_gradcheck(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.5, 0.7, 4.2, 3.9], [1, -1.0, 1.0, 3.0, 6.0],
                         [1, 2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda t: mmcv.ops.roi_align(t, rois, (2, 3), 1.0, sampling_ratio, 'avg', aligned),
        (x,))


def _tv_case(aligned, sampling_ratio, spatial_scale, dtype, seed=6):
    """Features, RoIs (the edge cases above plus one whose samples land exactly on y = -1
    and x = W, the in-map test's borders) and an upstream gradient, for comparisons with
    torchvision's own CPU kernels."""
    gen = torch.Generator().manual_seed(seed)
    feat = torch.randn(2, 3, 12, 16, generator=gen, dtype=torch.float64).to(dtype)
    rois = torch.cat([_rois(dtype), torch.tensor([[0, 13.5, -1.5, 17.5, 4.5]], dtype=dtype)])
    rois[:, 1:] /= spatial_scale
    grad = torch.randn(len(rois), 3, 3, 2, generator=gen, dtype=torch.float64).to(dtype)
    return feat, rois, grad


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('spatial_scale', [1.0, 0.5, 0.25])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_roi_align_cpu_backward_matches_torchvision(aligned, sampling_ratio, spatial_scale, dtype,
                                                    monkeypatch):
    feat, rois, grad = _tv_case(aligned, sampling_ratio, spatial_scale, dtype)
    if spatial_scale == 0.5:  # also summed over RoI chunks
        monkeypatch.setattr(mmcv_backend, '_roi_align_entries', functools.partial(
            mmcv_backend._roi_align_entries, max_entries=50))
    n, c, h, w = feat.shape
    out = torch.full_like(feat, float('nan'))
    mmcv_backend.roi_align_backward(grad, rois, None, None, out, 3, 2, spatial_scale,
                                    sampling_ratio, 1, aligned)
    ref = torch.ops.torchvision._roi_align_backward(grad, rois, spatial_scale, 3, 2, n, c, h, w,
                                                    sampling_ratio, aligned)
    _close(out, ref.double())


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('sampling_ratio', [0, 2])
@pytest.mark.parametrize('spatial_scale', [1.0, 0.25])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_roi_align_cpu_matrix_is_torchvision_forward(aligned, sampling_ratio, spatial_scale,
                                                     dtype):
    """The sparse matrix behind the CPU backward, applied forwards, is torchvision's
    RoIAlign; built in small RoI chunks (max_entries) to cover the chunking too."""
    import torchvision
    feat, rois, _ = _tv_case(aligned, sampling_ratio, spatial_scale, dtype)
    n, c, h, w = feat.shape
    mat = torch.zeros(len(rois) * 6, n * h * w, dtype=dtype)
    chunks = mmcv_backend._roi_align_entries(rois, (n, h, w), (3, 2), spatial_scale,
                                             sampling_ratio, aligned, dtype, max_entries=50)
    for idx, wts in chunks:
        mat.index_put_((idx[1], idx[0]), wts, accumulate=True)
    out = mat @ feat.permute(0, 2, 3, 1).reshape(-1, c)
    ref = torchvision.ops.roi_align(feat, rois, (3, 2), spatial_scale, sampling_ratio, aligned)
    _close(out.view(len(rois), 3, 2, c).permute(0, 3, 1, 2), ref.double())


# --- sigmoid focal loss --------------------------------------------------------------

def _focal_inputs(dtype, n=40, c=5, seed=5):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 3).to(dtype)
    target = torch.randint(0, c + 1, (n,), generator=gen)  # c is background
    weight = torch.rand(c, generator=gen, dtype=torch.float64).to(dtype) + 0.5
    return logits, target, weight


@pytest.mark.parametrize('use_weight', [False, True])
@pytest.mark.parametrize('gamma,alpha', [(2.0, 0.25), (0.0, 0.5), (1.5, 0.75)])
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_sigmoid_focal_loss_matches_reference(use_weight, gamma, alpha, reduction, dtype):
    logits, target, weight = _focal_inputs(dtype)
    w = weight if use_weight else None
    x = logits.clone().requires_grad_()
    out = mmcv.ops.sigmoid_focal_loss(x, target, gamma, alpha, w, reduction)
    x_ref = logits.double().requires_grad_()
    ref = sigmoid_focal_loss_ref(x_ref, target, gamma, alpha, None if w is None else w.double())
    ref = {'none': ref, 'mean': ref.sum() / len(ref), 'sum': ref.sum()}[reduction]
    _close(out, ref)
    g = torch.rand(out.shape, dtype=torch.float64) + 0.5
    (out * g.to(dtype)).sum().backward()
    (ref * g).sum().backward()
    _close(x.grad, x_ref.grad)


@pytest.mark.parametrize('use_weight', [False, True])
def test_sigmoid_focal_loss_gradcheck(use_weight):
    logits, target, weight = _focal_inputs(torch.float64, n=6, c=3)
    x = logits.requires_grad_()
    w = weight if use_weight else None
    assert torch.autograd.gradcheck(
        lambda t: mmcv.ops.sigmoid_focal_loss(t, target, 2.0, 0.25, w, 'none'), (x,))


def test_sigmoid_focal_loss_edge_cases():
    empty = mmcv.ops.sigmoid_focal_loss(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                                        2.0, 0.25, None, 'sum')
    assert empty.item() == 0
    # saturated logits stay finite (log of a saturated sigmoid is taken as logsigmoid)
    x = torch.tensor([[60., -60.], [-60., 60.]], requires_grad=True)
    loss = mmcv.ops.sigmoid_focal_loss(x, torch.tensor([1, 0]), 2.0, 0.25, None, 'none')
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(loss[0], torch.tensor([0.75 * 60, 0.25 * 60]))


def test_mmdet_focal_loss_wrapper_agrees_with_its_python_path():
    """mmdet uses mmcv's focal loss for CUDA tensors and its own one-hot version on CPU;
    both must give the same loss (run here on CPU by calling the mmcv path directly)."""
    from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss, sigmoid_focal_loss
    logits, target, _ = _focal_inputs(torch.float32)
    weight = torch.rand(len(target))
    one_hot = torch.nn.functional.one_hot(target, 6)[:, :5]
    for avg in (None, 7.0):
        torch.testing.assert_close(
            sigmoid_focal_loss(logits, target, weight, avg_factor=avg),
            py_sigmoid_focal_loss(logits, one_hot, weight, avg_factor=avg),
            atol=1e-5, rtol=1e-5)
