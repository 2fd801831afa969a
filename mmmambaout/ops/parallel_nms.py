"""Greedy NMS without a serial loop over the boxes (Triton, CUDA).

torchvision's CUDA NMS builds the IoU bitmask in parallel, then resolves it in one
thread block that walks the boxes in score order, one synchronised step per box. For
the RPN's ~9000 boxes per image that walk occupies a single SM for milliseconds while the
host waits for the result (measured: docs/training_speed.md).

Greedy NMS keeps box ``i`` (score order) iff no kept earlier box overlaps it:
``keep_i = not any_{j < i} (M[i, j] and keep_j)``, ``M[i, j] = IoU(j, i) > threshold``.
The system is triangular, so it has exactly one solution, the greedy one, and the
Jacobi iteration ``keep <- F(keep)`` from "keep all" reaches it: after step ``k`` the
first ``k`` boxes are right, and in practice the longest chain of suppressions decides
(a few tens of steps). Each step is one parallel pass over the bit-packed ``M``. A step
that changes nothing means the solution is reached; after ``max_steps`` without that,
the caller falls back to the serial kernel.

IoUs are computed in float32 as torchvision does (``inter / (area_j + area_i - inter)``
compared with ``>``), so the kept set is torchvision's.
"""
import torch
import triton
import triton.language as tl

#: boxes per program in the mask kernel (rows) and words per load in a step
BLOCK_I, BLOCK_W = 32, 16


# the box count changes with every call: one compiled variant for all counts
@triton.jit(do_not_specialize=['k', 'n_words'])
def _mask_kernel(boxes_ptr, counts_ptr, mask_ptr, k, n_words, threshold,
                 HAS_COUNTS: tl.constexpr, BLOCK_I: tl.constexpr):
    """Group ``g``'s mask[i, w] bit b: box j = 64 w + b comes before box i and
    IoU(j, i) > threshold. A group holds ``counts[g]`` boxes (all ``k`` without counts)."""
    g = tl.program_id(2).to(tl.int64)
    n = tl.load(counts_ptr + g) if HAS_COUNTS else k
    boxes_ptr += g * k * 4
    mask_ptr += g * k * n_words
    i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    w = tl.program_id(1)
    lane = tl.arange(0, 64)
    j = w * 64 + lane
    mi, mj = i < n, j < n
    x1i = tl.load(boxes_ptr + 4 * i, mask=mi, other=0.)
    y1i = tl.load(boxes_ptr + 4 * i + 1, mask=mi, other=0.)
    x2i = tl.load(boxes_ptr + 4 * i + 2, mask=mi, other=0.)
    y2i = tl.load(boxes_ptr + 4 * i + 3, mask=mi, other=0.)
    x1j = tl.load(boxes_ptr + 4 * j, mask=mj, other=0.)
    y1j = tl.load(boxes_ptr + 4 * j + 1, mask=mj, other=0.)
    x2j = tl.load(boxes_ptr + 4 * j + 2, mask=mj, other=0.)
    y2j = tl.load(boxes_ptr + 4 * j + 3, mask=mj, other=0.)
    width = tl.maximum(tl.minimum(x2i[:, None], x2j[None, :])
                       - tl.maximum(x1i[:, None], x1j[None, :]), 0.)
    height = tl.maximum(tl.minimum(y2i[:, None], y2j[None, :])
                        - tl.maximum(y1i[:, None], y1j[None, :]), 0.)
    inter = width * height
    area_i = (x2i - x1i) * (y2i - y1i)
    area_j = (x2j - x1j) * (y2j - y1j)
    # IEEE division as torchvision's CUDA kernel (Triton's ``/`` is an approximate one)
    iou = tl.math.div_rn(inter, area_j[None, :] + area_i[:, None] - inter)
    hit = (iou > threshold) & (j[None, :] < i[:, None]) & mj[None, :]
    bits = tl.where(hit, tl.full((1, 64), 1, tl.int64) << lane.to(tl.int64)[None, :], 0)
    tl.store(mask_ptr + i.to(tl.int64) * n_words + w, tl.sum(bits, axis=1), mask=mi)


@triton.jit(do_not_specialize=['k', 'n_words'])
def _step_kernel(mask_ptr, counts_ptr, keep_in_ptr, keep_out_ptr, k, n_words,
                 HAS_COUNTS: tl.constexpr, BLOCK_W: tl.constexpr):
    """One Jacobi step for the 64 boxes of one output word of group ``program_id(1)``."""
    pid = tl.program_id(0)
    g = tl.program_id(1).to(tl.int64)
    n = tl.load(counts_ptr + g) if HAS_COUNTS else k
    mask_ptr += g * k * n_words
    keep_in_ptr += g * n_words
    keep_out_ptr += g * n_words
    lane = tl.arange(0, 64)
    rows = pid * 64 + lane
    mr = rows < n
    hit = tl.zeros((64, ), tl.int32)
    # boxes of this word can only be suppressed by boxes of words <= pid
    for w0 in range(0, pid + 1, BLOCK_W):
        ws = w0 + tl.arange(0, BLOCK_W)
        mw = ws <= pid
        m = tl.load(mask_ptr + rows.to(tl.int64)[:, None] * n_words + ws[None, :],
                    mask=mr[:, None] & mw[None, :], other=0)
        kept = tl.load(keep_in_ptr + ws, mask=mw, other=0)
        hit = tl.maximum(hit, tl.max(((m & kept[None, :]) != 0).to(tl.int32), axis=1))
    keep = (hit == 0) & mr
    bits = tl.where(keep, tl.full((64, ), 1, tl.int64) << lane.to(tl.int64), 0)
    tl.store(keep_out_ptr + pid, tl.sum(bits, axis=0))


def greedy_nms_sorted(boxes: torch.Tensor, threshold: float, max_steps: int = 64,
                      check_every: int = 4):
    """Keep mask (bool, ``[n]``) of greedy NMS over float32 ``boxes`` ``[n, 4]`` already
    in descending score order, or ``None`` if ``max_steps`` Jacobi steps did not settle
    (the caller then uses a serial NMS). Checks for a fixed point (one host sync) every
    ``check_every`` steps."""
    keep = greedy_nms_sorted_groups(boxes[None], None, threshold, max_steps, check_every)
    return None if keep is None else keep[0]


def greedy_nms_sorted_groups(boxes: torch.Tensor, counts, threshold: float,
                             max_steps: int = 64, check_every: int = 4):
    """:func:`greedy_nms_sorted` of ``G`` independent groups at once: ``boxes``
    ``[G, k, 4]``, group ``g``'s ``counts[g]`` boxes first (int32 ``[G]`` on the boxes'
    device; ``None``: all ``k``), each group in descending score order. Keep mask
    ``[G, k]`` (False past a group's count) or ``None``. One launch per step for all
    groups: per-class NMS without a loop over the classes."""
    num_groups, k = boxes.shape[:2]
    boxes = boxes.contiguous()
    n_words = triton.cdiv(k, 64)
    has_counts = counts is not None
    counts = counts.to(torch.int32).contiguous() if has_counts else boxes   # unused
    mask = torch.empty((num_groups, k, n_words), dtype=torch.int64, device=boxes.device)
    _mask_kernel[(triton.cdiv(k, BLOCK_I), n_words, num_groups)](
        boxes, counts, mask, k, n_words, float(threshold), HAS_COUNTS=has_counts,
        BLOCK_I=BLOCK_I)
    cur = torch.full((num_groups, n_words), -1, dtype=torch.int64, device=boxes.device)
    nxt = torch.empty_like(cur)
    for step in range(1, max_steps + 1):
        _step_kernel[(n_words, num_groups)](mask, counts, cur, nxt, k, n_words,
                                            HAS_COUNTS=has_counts, BLOCK_W=BLOCK_W)
        if step % check_every == 0 and torch.equal(cur, nxt):
            cur = nxt
            break
        cur, nxt = nxt, cur
    else:
        return None
    shifts = torch.arange(64, device=boxes.device)
    return ((cur[..., None] >> shifts) & 1).bool().view(num_groups, -1)[:, :k]


def nms_per_class(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                  threshold: float, max_mask_bytes: int = 2**28):
    """Greedy NMS of each class on its own (float32 ``boxes`` ``[n, 4]``, ``labels``
    ``[n]``): the kept indices by descending score, equal scores by index (as mmcv's
    ``batched_nms`` lists them before its sort), or ``None`` if the iteration did not
    settle or the bit mask would exceed ``max_mask_bytes``. Boxes are packed class by
    class, each class in descending score order, into ``[classes, largest class, 4]``,
    and all classes run in the same launches (two host syncs size the packing). Boxes of
    different classes never suppress each other, so this is mmcv's ``batched_nms`` with or
    without its ``split_thr`` loop over the classes."""
    if not len(boxes):
        return labels.new_zeros(0)
    classes, label = torch.unique(labels, return_inverse=True)   # present classes only
    order = scores.argsort(descending=True, stable=True)
    order = order[label[order].argsort(stable=True)]      # class-major, by score within
    label = label[order]
    counts = torch.bincount(label, minlength=len(classes))
    k = int(counts.max())
    if len(classes) * k * triton.cdiv(k, 64) * 8 > max_mask_bytes:
        return None
    pos = torch.arange(len(order), device=boxes.device) - (counts.cumsum(0) - counts)[label]
    packed = boxes.new_zeros(len(classes), k, 4)
    packed[label, pos] = boxes[order]
    keep = greedy_nms_sorted_groups(packed, counts, threshold)
    if keep is None:
        return None
    kept = order[keep[label, pos]].sort().values          # by index, then stably by score
    return kept[scores[kept].argsort(descending=True, stable=True)]
