"""mmcv's compiled-op module (``mmcv._ext``) rebuilt on torchvision's kernels and PyTorch.

mmcv-lite has no ``mmcv._ext``; every ``mmcv/ops/*.py`` runs
``ext_loader.load_ext('_ext', [names])`` at import time, which imports ``mmcv._ext`` and
asserts each name is there. So ``import mmcv.ops`` (and with it ``mmdet.models`` and
``mmseg.models``) fails. :func:`install_mmcv_ops_backend` registers a stand-in module:

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
import importlib
import importlib.machinery
import importlib.util
import re
import sys
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
    b = boxes[order].to(_compute_dtype(boxes))
    if offset:
        b = b + b.new_tensor([0, 0, offset, offset])
    ranks = torch.arange(len(b), 0, -1, dtype=b.dtype, device=b.device)
    # mmcv compares the IoU with a float threshold, so an IoU that rounds to the
    # threshold (33/110 vs 0.3) is kept; torchvision compares with a double and would
    # suppress it, unless handed the threshold already rounded to the working precision
    threshold = torch.tensor(iou_threshold, dtype=b.dtype).item()
    return order[_torchvision_ops().nms(b, ranks, threshold)]


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


def roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height,
                       aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    """Gradient of :func:`roi_align_forward` w.r.t. its input, into ``grad_input``."""
    _check_avg_pool(pool_mode)
    n, c, h, w = grad_input.shape
    dtype = _compute_dtype(grad_output)
    grad_input.copy_(_torchvision_ops()._roi_align_backward(
        grad_output.to(dtype), rois.to(dtype), spatial_scale, aligned_height,
        aligned_width, n, c, h, w, sampling_ratio, aligned))


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


def install_mmcv_ops_backend():
    """Register the stand-in ``mmcv._ext`` unless mmcv has a working one.

    Returns True if this call installed it. Must run before the first successful
    ``import mmcv.ops``; an earlier *failed* import is no obstacle, since Python drops
    modules whose import failed and the next ``import mmcv.ops`` starts afresh.
    """
    if importlib.util.find_spec('mmcv') is None or 'mmcv._ext' in sys.modules:
        return False  # no mmcv at all, or an extension (real or ours) already loaded
    try:
        importlib.import_module('mmcv._ext')
        return False
    except ImportError as err:
        if not (isinstance(err, ModuleNotFoundError) and err.name == 'mmcv._ext'):
            # typically an mmcv built against another torch (undefined symbols)
            warnings.warn(f'mmcv._ext exists but does not load ({err}); mmmambaout '
                          'replaces it with its torchvision-backed ops')
    import mmcv
    module = build_ext_module(Path(mmcv.__file__).parent / 'ops')
    sys.modules['mmcv._ext'] = module
    mmcv._ext = module
    return True
