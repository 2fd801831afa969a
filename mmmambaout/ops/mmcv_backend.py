"""mmcv's compiled-op module (``mmcv._ext``) rebuilt on torchvision's kernels and PyTorch.

mmcv-lite has no ``mmcv._ext``; every ``mmcv/ops/*.py`` runs
``ext_loader.load_ext('_ext', [names])`` at import time, which imports ``mmcv._ext`` and
asserts each name is there. So ``import mmcv.ops`` (and with it ``mmdet.models`` and
``mmseg.models``) fails. :mod:`mmmambaout_mmcv_finder` (installed with mmmambaout,
active in every interpreter) then builds this stand-in with :func:`build_ext_module`:

* real ops, CPU and CUDA, with mmcv's ext call signatures and in-place outputs, for what
  Mask R-CNN, Cascade Mask R-CNN, RetinaNet, FCOS and UperNet run: ``nms`` (also behind
  ``batched_nms`` and ``multiclass_nms``), ``roi_align_forward/backward`` (RoI extractors
  and ``BitmapMasks.crop_and_resize`` for mask targets), ``sigmoid_focal_loss_forward/
  backward`` (mmdet's ``FocalLoss`` takes this path for CUDA tensors) and the two
  version queries of ``mmcv.utils.collect_env``;
* every other name any ``mmcv/ops/*.py`` asks for, read from the installed mmcv's
  sources so that the list follows the mmcv version, as a function that raises
  ``NotImplementedError`` saying how to get the real op.

A working ``mmcv._ext`` (a full mmcv build) is always left alone.
"""
import importlib.machinery
import re
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

_FULL_MMCV = ('install a full mmcv 2.1 build with compiled ops matching your torch and '
              'CUDA (e.g. `mim install mmcv==2.1.0`); mmmambaout then leaves it alone')


def _compute_dtype(t):
    # fp16/bf16 are computed in fp32: nms ranks above 2048 and IoUs need more than 11
    # bits, and the focal loss's logs and powers lose too much; fp64 stays fp64
    return torch.promote_types(t.dtype, torch.float32)


def _torchvision_ops():
    import torchvision  # noqa: F401  (registers torch.ops.torchvision; imported late: ~1 s)
    return torch.ops.torchvision


def nms(boxes, scores, iou_threshold, offset):
    """Greedy NMS; indices of kept boxes in descending score order (mmcv's ``nms``).

    ``offset`` 1 measures widths as ``x2 - x1 + 1``: shifting x2, y2 by +1 gives exactly
    that width, height, area and intersection, so torchvision's kernel can do the rest.
    """
    # Sort here, stably, and hand torchvision strictly decreasing ranks: equal scores
    # then resolve to the lower index on every device (CUDA sorts are not stable).
    order = scores.argsort(descending=True, stable=True)
    b, threshold = nms_working_boxes(boxes[order], iou_threshold, offset)
    if b.is_cuda and b.dtype == torch.float32 and len(b) >= PARALLEL_NMS_MIN_BOXES:
        keep = _parallel_nms(b, threshold)
        if keep is not None:
            return order[keep.nonzero().squeeze(1)]
    ranks = torch.arange(len(b), 0, -1, dtype=b.dtype, device=b.device)
    return order[_torchvision_ops().nms(b, ranks, threshold)]


def nms_working_boxes(boxes, iou_threshold, offset):
    """``(boxes, threshold)`` as :func:`nms` compares them: in the working precision
    (float32 from half precision), x2 and y2 + ``offset``, the threshold rounded to it."""
    b = boxes.to(_compute_dtype(boxes))
    if offset:
        b = b + b.new_tensor([0, 0, offset, offset])
    # mmcv compares the IoU with a float threshold, so an IoU that rounds to the
    # threshold (33/110 vs 0.3) is kept; torchvision compares with a double and would
    # suppress it, unless handed the threshold already rounded to the working precision
    return b, torch.tensor(iou_threshold, dtype=b.dtype).item()


#: from this many boxes on, CUDA float32 NMS runs without torchvision's serial walk
#: (mmmambaout.ops.parallel_nms; same kept boxes, same order); the RPN's ~9000 per image
PARALLEL_NMS_MIN_BOXES = 2048


_OUT_OF_MEMORY = getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError)


class DisableOnFailure:
    """A fast path (Triton kernels) that turns itself off for the rest of the process the
    first time it fails, so that a machine where it cannot run (no working Triton, a GPU
    its kernels do not compile for) still gets the stock path's results, with one
    warning. ``guard(fn, *args)`` returns ``fn(*args)``, or None once a call has raised:
    the caller then takes its other path. The first failure warns, naming the error and
    ``instead`` (the other path); ``reason`` says why the fast path is off (None: on).

    Args:
        what (str): the fast path, as the warning names it.
        instead (str): the path taken instead.
    """

    def __init__(self, what: str, instead: str):
        self.what, self.instead, self.reason = what, instead, None

    def __call__(self, fn, *args, **kwargs):
        if self.reason is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except _OUT_OF_MEMORY:   # the moment's memory, not the path: the caller's problem
            raise
        except Exception as e:
            self.reason = f'{type(e).__name__}: {e}'
            warnings.warn(f'{self.what} is not available here ({self.reason}); using '
                          f'{self.instead}')
            return None


#: the parallel NMS, off for the rest of the process once it fails (no working Triton,
#: or its kernel failed): torchvision's kernel does it all then
PARALLEL_NMS = DisableOnFailure('mmmambaout: the Triton NMS', "torchvision's NMS kernel")


def _greedy_nms_sorted(boxes, threshold):
    from mmmambaout.ops.parallel_nms import greedy_nms_sorted   # imports Triton
    return greedy_nms_sorted(boxes, threshold)


def _parallel_nms(boxes, threshold):
    return PARALLEL_NMS(_greedy_nms_sorted, boxes, threshold)


def _check_avg_pool(pool_mode):
    # mmcv's RoIAlignFunction passes pool_mode 0 for 'max' and 1 for 'avg'
    if pool_mode != 1:
        raise NotImplementedError(
            "RoIAlign(pool_mode='max') is not provided by mmmambaout's torchvision-backed "
            "mmcv ops (torchvision's RoIAlign averages); use pool_mode='avg' or "
            + _FULL_MMCV)


def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height,
                      aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    """RoIAlign into ``output`` (K, C, aligned_height, aligned_width); rois are
    (batch_idx, x1, y1, x2, y2). torchvision's kernel has mmcv's sampling grid (adaptive
    ``ceil(roi_size / bin_count)`` for sampling_ratio 0) and pixel models (-0.5 shift
    when aligned, RoI size clamped to >= 1 when not)."""
    _check_avg_pool(pool_mode)
    # Half-precision features are pooled in float32: fp16 RoI coordinates (spacing 0.5
    # px at 1000 px) and fp16 bin arithmetic move the sampling points visibly.
    dtype = _compute_dtype(input)
    output.copy_(_torchvision_ops().roi_align(
        input.to(dtype), rois.to(dtype), spatial_scale, aligned_height, aligned_width,
        sampling_ratio, aligned))


def _roi_axis(start, size, bins, grid, extent):
    """One axis of RoIAlign's bilinear sampling, summed per bin: window starts (K, bins),
    weights (K, bins, L) of the pixels start..start+L-1 (past the map only with weight
    0) and each RoI's widest window (K,).

    RoIAlign's weights are products of a y and an x factor (so is the in-map test), so
    a bin's weight on pixel (y, x) is ay[y] * ax[x] / count, ay and ax summed over the
    bin's samples. Arithmetic as torchvision's kernel in the working dtype: the in-map
    test and the floor decide which pixel a sample reads."""
    dtype = start.dtype
    b = (size / bins)[:, None, None]
    s = torch.arange(max(int(grid.max()), 1))
    # (K, bins, samples); the clamp only keeps a grid of 0 (empty aligned RoI) finite
    v = (start[:, None, None] + torch.arange(bins, dtype=dtype)[:, None] * b
         + (s + 0.5).to(dtype) * b / grid[:, None, None].clamp(min=1).to(dtype))
    # adaptive grids differ per RoI: samples past a RoI's own grid get weight 0 and are
    # moved onto the first sample so that they don't widen the window
    real = s < grid[:, None, None]
    inside = (v >= -1) & (v <= extent) & real
    v = v.clamp(min=0)
    low = v.long().clamp(max=extent - 1)
    high = (low + 1).clamp(max=extent - 1)
    frac = torch.where(low >= extent - 1, 0, v - low) * inside
    low, high = torch.where(real, low, low[..., :1]), torch.where(real, high, low[..., :1])
    w0 = low.amin(-1)
    lengths = (high.amax(-1) - w0).amax(-1) + 1
    wts = v.new_zeros(*low.shape[:2], int(lengths.max()))
    wts.scatter_add_(-1, low - w0[..., None], inside.to(dtype) - frac)
    wts.scatter_add_(-1, high - w0[..., None], frac)
    return w0, wts, lengths


def _roi_align_entries(rois, shape, pooled, spatial_scale, sampling_ratio, aligned, dtype,
                       max_entries=1 << 21):
    """RoIAlign (avg) as a sparse (K*ph*pw, N*H*W) matrix S, out = S @ features, in
    chunks of RoIs: indices (2, entries) of (pixel, bin) and weights (entries,), explicit
    zeros and repeated indices included."""
    n, h, w = shape
    ph, pw = pooled
    off = 0.5 if aligned else 0.0
    # torchvision scales in double and rounds to the working dtype, then sizes in dtype
    x1, y1, x2, y2 = (rois[:, 1:].double() * spatial_scale - off).to(dtype).unbind(1)
    rw, rh = x2 - x1, y2 - y1
    if not aligned:
        rw, rh = rw.clamp(min=1), rh.clamp(min=1)
    if sampling_ratio > 0:
        gh = gw = torch.full_like(x1, sampling_ratio, dtype=torch.long)
    else:
        gh, gw = torch.ceil(rh / ph).long(), torch.ceil(rw / pw).long()
    count = (gh * gw).clamp(min=1).to(dtype)
    y0, ay, ly = _roi_axis(y1, rh, ph, gh, h)
    x0, ax, lx = _roi_axis(x1, rw, pw, gw, w)
    # every bin of a chunk is padded to the chunk's widest window: chunks of RoIs of
    # similar window area (within 8x), biggest first, so a few large RoIs don't pad all
    area, order = (ly * lx).sort(descending=True)
    area, k = area.tolist(), 0
    while k < len(area):
        end = min(len(area), k + max(1, max_entries // (ph * pw * area[k])))
        end = next((j for j in range(k, end) if 8 * area[j] < area[k]), end)
        sel = order[k:end]
        yl, xl = int(ly[sel].max()), int(lx[sel].max())
        # windows past the map's edge read its last row/column, with weight 0
        ys = (y0[sel, :, None] + torch.arange(yl)).clamp(max=h - 1)
        ys = ys + (rois[sel, 0].long() * h)[:, None, None]
        xs = (x0[sel, :, None] + torch.arange(xl)).clamp(max=w - 1)
        # written straight into one (2, entries) index buffer: on a busy CPU with few cores
        # every large op costs a thread wake-up
        idx = torch.empty(2, len(sel), ph, pw, yl, xl, dtype=torch.long)
        torch.add((ys * w)[:, :, None, :, None], xs[:, None, :, None, :], out=idx[0])
        idx[1].copy_((sel[:, None] * (ph * pw) + torch.arange(ph * pw)).view(-1, ph, pw, 1, 1))
        wts = ay[sel, :, None, :yl, None] * (ax[sel, None, :, None, :xl]
                                              / count[sel, None, None, None, None])
        yield idx.view(2, -1), wts.view(-1)
        k = end


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height,
                       aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    """Gradient of :func:`roi_align_forward` w.r.t. its input, into ``grad_input``."""
    _check_avg_pool(pool_mode)
    n, c, h, w = grad_input.shape
    dtype = _compute_dtype(grad_output)
    if grad_input.device.type != 'cpu' or not len(rois):
        grad_input.copy_(_torchvision_ops()._roi_align_backward(
            grad_output.to(dtype), rois.to(dtype), spatial_scale, aligned_height,
            aligned_width, n, c, h, w, sampling_ratio, aligned))
        return
    # torchvision's CPU backward is serial, scalar and per channel (42% of a CPU Mask
    # R-CNN step); here grad = S^T @ grad_output with S's weights built once for all
    # channels. Sparse COO @ dense runs one axpy over the channels per entry and needs no
    # sorted, coalesced or distinct indices (a CSR S^T would need a sort per call). The
    # forward stays on torchvision's kernel: as fast on CPU (parallel over RoIs), and
    # BitmapMasks.crop_and_resize's mask-sized RoIs would make S large.
    g = grad_output.to(dtype).permute(0, 2, 3, 1).reshape(-1, c)
    grad = None
    for idx, wts in _roi_align_entries(rois, (n, h, w), (aligned_height, aligned_width),
                                       spatial_scale, sampling_ratio, aligned, dtype):
        st = torch.sparse_coo_tensor(idx, wts, (n * h * w, len(g)), check_invariants=False)
        part = torch.sparse.mm(st, g)
        grad = part if grad is None else grad + part
    grad_input.copy_(grad.view(n, h, w, c).permute(0, 3, 1, 2))


def _focal_parts(input, target, weight):
    """Logits in compute precision, positive mask and per-row weight.

    As in mmcv's kernels, row n is positive for class ``target[n]`` only (a target
    outside [0, C), such as mmdet's background label C, makes the row all negative) and
    an optional per-class ``weight`` scales the whole row by ``weight[target[n]]``;
    background rows, which mmcv would read out of bounds for, get weight 1.
    """
    x = input.to(_compute_dtype(input))
    num_classes = x.size(1)
    pos = target[:, None] == torch.arange(num_classes, device=x.device)
    if weight.numel() == 0:
        return x, pos, 1.0
    in_range = (target >= 0) & (target < num_classes)
    w = torch.cat([weight.to(x.dtype), x.new_ones(1)])
    return x, pos, w[torch.where(in_range, target, num_classes)][:, None]


def sigmoid_focal_loss_forward(input, target, weight, output, gamma, alpha):
    """Elementwise sigmoid focal loss into ``output`` (N, C), unreduced."""
    x, pos, w = _focal_parts(input, target, weight)
    p = torch.sigmoid(x)
    # logsigmoid rather than log(p): finite for any logit
    loss_pos = -alpha * (1 - p).pow(gamma) * F.logsigmoid(x)
    loss_neg = -(1 - alpha) * p.pow(gamma) * F.logsigmoid(-x)
    output.copy_(torch.where(pos, loss_pos, loss_neg) * w)


def sigmoid_focal_loss_backward(input, target, weight, grad_input, gamma, alpha):
    """d(loss)/d(input) of :func:`sigmoid_focal_loss_forward` into ``grad_input``."""
    x, pos, w = _focal_parts(input, target, weight)
    p = torch.sigmoid(x)
    grad_pos = -alpha * (1 - p).pow(gamma) * (1 - p - gamma * p * F.logsigmoid(x))
    grad_neg = -(1 - alpha) * p.pow(gamma) * (gamma * (1 - p) * F.logsigmoid(-x) - p)
    grad_input.copy_(torch.where(pos, grad_pos, grad_neg) * w)


def get_compiler_version():
    return 'none (mmcv ops from torchvision via mmmambaout)'


def get_compiling_cuda_version():
    return torch.version.cuda or 'not available'


_IMPLEMENTED = {f.__name__: f for f in (
    nms, roi_align_forward, roi_align_backward, sigmoid_focal_loss_forward,
    sigmoid_focal_loss_backward, get_compiler_version, get_compiling_cuda_version)}


def _unavailable(name):

    def op(*args, **kwargs):
        raise NotImplementedError(
            f"mmcv op '{name}' needs mmcv's compiled extension (mmcv._ext), which this "
            f'environment lacks. mmmambaout provides only '
            f"{', '.join(sorted(_IMPLEMENTED))} from torchvision and PyTorch. To use "
            f'{name}, {_FULL_MMCV}.')

    op.__name__ = op.__qualname__ = name
    return op


_LOAD_EXT = re.compile(r"load_ext\(\s*'_ext'\s*,\s*\[([^\]]*)\]")


def mmcv_ext_names(ops_dir):
    """Every function name the op files in ``ops_dir`` ask ``load_ext('_ext', ...)`` for."""
    names = set()
    for path in Path(ops_dir).glob('*.py'):
        for group in _LOAD_EXT.findall(path.read_text(encoding='utf-8')):
            names.update(re.findall(r"'(\w+)'", group))
    return names


def build_ext_module(ops_dir):
    """The stand-in ``mmcv._ext``: the real ops above plus a raising stub per other name."""
    module = types.ModuleType('mmcv._ext', __doc__)
    module.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None, origin=__file__)
    for name in mmcv_ext_names(ops_dir) - _IMPLEMENTED.keys():
        setattr(module, name, _unavailable(name))
    for name, fn in _IMPLEMENTED.items():
        setattr(module, name, fn)
    return module


def install_mmcv_ops_backend() -> bool:
    """Make ``import mmcv._ext`` find the stand-in wherever mmcv has no working compiled
    extension (:mod:`mmmambaout_mmcv_finder`). The installed ``mmmambaout-mmcv-ext.pth``
    does this at interpreter start; this call covers interpreters that skip it
    (``python -S``, a source checkout on ``PYTHONPATH``). True if this call added it."""
    import mmmambaout_mmcv_finder
    return mmmambaout_mmcv_finder.install()
