"""Plain-PyTorch references for the ops of ``mmmambaout.ops.mmcv_backend``, written from
the op definitions (no torchvision, no mmcv). Slow, loop-based, differentiable through
autograd: their gradients are the references for the backward kernels.

Shared by tests/ops/test_mmcv_backend.py (CPU) and tools/analysis/check_ops_cuda.py.
"""
import math

import torch


def _bilinear(feat, y, x):
    """Sample feat (C, H, W) at every (y[i], x[j]) -> (C, len(y), len(x)), RoIAlign's
    pixel model: a point more than one pixel outside the map reads 0, a point within
    one pixel is clamped onto the border, the last row/column is not interpolated
    beyond."""
    _, h, w = feat.shape

    def axis(v, size):
        valid = (v >= -1) & (v <= size)
        v = v.clamp(min=0)
        low = v.floor().long().clamp(max=size - 1)
        high = (low + 1).clamp(max=size - 1)
        v = torch.where(low >= size - 1, low.to(v.dtype), v)
        frac = v - low
        return valid, low, high, frac

    vy, yl, yh, ly = axis(y, h)
    vx, xl, xh, lx = axis(x, w)
    hy, hx = 1 - ly, 1 - lx

    def at(yi, xi):
        return feat[:, yi[:, None], xi[None, :]]

    out = (at(yl, xl) * (hy[:, None] * hx[None, :]) + at(yl, xh) * (hy[:, None] * lx[None, :])
           + at(yh, xl) * (ly[:, None] * hx[None, :]) + at(yh, xh) * (ly[:, None] * lx[None, :]))
    return out * (vy[:, None] & vx[None, :])


def roi_align_ref(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """RoIAlign (average pooling): bin (i, j) of RoI k is the mean of a grid of
    bilinear samples at the centres of a gh x gw subdivision of the bin; gh = sampling_ratio
    or, if that is <= 0, ceil(roi_h / ph). aligned: a pixel's centre is at +0.5 (shift the
    RoI by -0.5); not aligned: RoI sides shorter than 1 are widened to 1."""
    ph, pw = output_size
    out = []
    for roi in rois.tolist():
        b, x1, y1, x2, y2 = roi
        off = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * spatial_scale - off for v in (x1, y1, x2, y2))
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        if gh <= 0 or gw <= 0:  # empty (or inverted) aligned RoI: no samples
            out.append(input.new_zeros(input.size(1), ph, pw))
            continue
        bh, bw = rh / ph, rw / pw
        ys = torch.tensor([y1 + i * bh + (s + 0.5) * bh / gh for i in range(ph) for s in range(gh)],
                          dtype=input.dtype, device=input.device)
        xs = torch.tensor([x1 + j * bw + (s + 0.5) * bw / gw for j in range(pw) for s in range(gw)],
                          dtype=input.dtype, device=input.device)
        samples = _bilinear(input[int(b)], ys, xs)  # (C, ph*gh, pw*gw)
        c = samples.size(0)
        out.append(samples.reshape(c, ph, gh, pw, gw).mean(dim=(2, 4)))
    if not out:
        return input.new_zeros(0, input.size(1), ph, pw)
    return torch.stack(out)


def nms_ref(boxes, scores, iou_threshold, offset=0):
    """Greedy NMS: visit boxes by descending score (ties: lower index first), keep a box
    unless its IoU with an already kept box exceeds the threshold. Widths are
    x2 - x1 + offset."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    b = boxes.double().tolist()
    keep = []

    def iou(p, q):
        iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]) + offset)
        ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]) + offset)
        area = lambda r: (r[2] - r[0] + offset) * (r[3] - r[1] + offset)  # noqa: E731
        inter = iw * ih
        return inter / (area(p) + area(q) - inter)

    for i in order:
        if all(iou(b[i], b[k]) <= iou_threshold for k in keep):
            keep.append(i)
    return torch.tensor(keep, dtype=torch.long)


def sigmoid_focal_loss_ref(logits, target, gamma, alpha, weight=None):
    """Unreduced sigmoid focal loss (Lin et al. 2017) per (sample, class):
    -alpha_t (1 - p_t)^gamma log(p_t), with t = one-hot of target (a target outside
    [0, C) is background: all zeros); optional per-class weight scales sample n's row by
    weight[target[n]] (background rows by 1)."""
    c = logits.size(1)
    t = (target[:, None] == torch.arange(c, device=logits.device)).to(logits.dtype)
    p = torch.sigmoid(logits)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    loss = -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)
    if weight is not None:
        row = torch.stack([weight[k] if 0 <= k < c else weight.new_tensor(1.0)
                           for k in target.tolist()]) if len(target) else weight[:0]
        loss = loss * row[:, None].to(loss.dtype)
    return loss
