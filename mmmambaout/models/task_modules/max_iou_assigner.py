"""mmdet's :class:`MaxIoUAssigner` without host-device synchronisations in its assignment.

mmdet's ``assign_wrt_overlaps`` matches low-quality boxes with a Python loop over the
ground truths that reads ``gt_max_overlaps[i]`` on the host (one synchronisation per gt)
and finds the positives for the labels with ``nonzero`` (one more). The same assignment is
computed here with whole-tensor operations only, so a CUDA caller never waits on the
device in it.
"""
import torch
from mmdet.models.task_modules.assigners import AssignResult, MaxIoUAssigner
from mmdet.registry import TASK_UTILS
from torch import Tensor


@TASK_UTILS.register_module()
class SyncFreeMaxIoUAssigner(MaxIoUAssigner):
    """:class:`MaxIoUAssigner` whose ``assign_wrt_overlaps`` never synchronises.

    Same arguments, same results: ``gt_inds``, ``max_overlaps`` and ``labels`` are equal,
    element for element and in dtype, to mmdet's for every option the class has. The
    steps, in mmdet's order:

    1. every box starts at ``-1``;
    2. boxes whose best IoU lies in the negative range get ``0`` (``[0, neg_iou_thr)``
       for a float, ``[lo, hi)`` for a 2-tuple, nothing for anything else: mmdet checks
       ``isinstance`` the same way);
    3. boxes whose best IoU is ``>= pos_iou_thr`` get ``argmax gt + 1``;
    4. low-quality matches, gt by gt in increasing index, later gts overwriting earlier
       ones: gt ``i`` takes part when ``gt_max_overlaps[i] >= min_pos_iou`` and takes
       every box whose IoU with it equals its maximum (``gt_max_assign_all``), or only its
       ``argmax`` box. The final value of a box is therefore ``i + 1`` for the largest such
       ``i`` that takes it, which is what one ``amax`` over the gts (or one
       ``scatter_reduce(amax)`` of the argmax boxes) computes; boxes no gt takes keep
       their value from step 3.

    ``max``/``argmax`` come from the same ``overlaps.max(dim)`` calls as mmdet's, so ties
    resolve identically. The empty cases (no gt or no box, known from shapes) are mmdet's
    own code. What ``assign`` does before (IoU, ignored boxes, ``gpu_assign_thr``,
    ``perm_repeat_gt_cfg``) is inherited unchanged: on CUDA ``assign`` still
    synchronises once, in mmdet's ``bbox_overlaps`` (``union.new_tensor([eps])`` uploads
    from pageable memory; not with ``SyncFreeBboxOverlaps2D``, as our configs name it as
    the ``iou_calculator``), and with ignored boxes (``ignore_iof_thr > 0``) mmdet's
    boolean-mask write may add one. This ``assign_wrt_overlaps`` synchronises not at
    all, mmdet's in its Python loop over the gts (counted in docs/training_speed.md).
    """

    def assign_wrt_overlaps(self, overlaps: Tensor, gt_labels: Tensor) -> AssignResult:
        """Assign w.r.t. the overlaps of priors with gts (k gts, n priors: ``(k, n)``)."""
        num_gts, num_bboxes = overlaps.size(0), overlaps.size(1)
        if num_gts == 0 or num_bboxes == 0:
            return super().assign_wrt_overlaps(overlaps, gt_labels)
        assigned_gt_inds, max_overlaps = self.gt_inds_wrt_overlaps(overlaps)
        pos = assigned_gt_inds > 0
        assigned_labels = torch.where(
            pos, gt_labels[(assigned_gt_inds - 1).clamp(min=0)].long(), -1)
        return AssignResult(
            num_gts=num_gts,
            gt_inds=assigned_gt_inds,
            max_overlaps=max_overlaps,
            labels=assigned_labels)

    def gt_inds_wrt_overlaps(self, overlaps: Tensor):
        """Steps 1-4 over the last two dims of ``(..., k, n)`` overlaps (k >= 1 gts, n >= 1
        priors): ``gt_inds`` (..., n) (-1 ignored, 0 negative, i + 1 gt i) and the best
        IoU of each prior (..., n). Leading dims are independent assignments, e.g. the
        images of a batch with their gts padded by rows of IoU -1, which never win a
        maximum and, with ``min_pos_iou >= 0``, take no low-quality match."""
        num_gts = overlaps.size(-2)
        max_overlaps, argmax_overlaps = overlaps.max(dim=-2)
        gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=-1)

        # 1. and 2.
        assigned_gt_inds = torch.full_like(argmax_overlaps, -1)
        if isinstance(self.neg_iou_thr, float):
            neg = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
            assigned_gt_inds = assigned_gt_inds.masked_fill(neg, 0)
        elif isinstance(self.neg_iou_thr, tuple):
            assert len(self.neg_iou_thr) == 2
            neg = ((max_overlaps >= self.neg_iou_thr[0])
                   & (max_overlaps < self.neg_iou_thr[1]))
            assigned_gt_inds = assigned_gt_inds.masked_fill(neg, 0)

        # 3.
        assigned_gt_inds = torch.where(max_overlaps >= self.pos_iou_thr,
                                       argmax_overlaps + 1, assigned_gt_inds)

        # 4. the last (largest-index) gt taking a box wins; 0 where none takes it
        if self.match_low_quality:
            takes_part = gt_max_overlaps >= self.min_pos_iou
            if self.gt_max_assign_all:
                # int32 ids (k <= 2**31 - 1) keep the (k, n) temporary as small as overlaps
                gt_ids = torch.arange(1, num_gts + 1, dtype=torch.int32,
                                      device=overlaps.device)
                takes = (overlaps == gt_max_overlaps[..., None]) & takes_part[..., None]
                low_quality = torch.where(takes, gt_ids[:, None], 0).amax(dim=-2).long()
            else:
                gt_ids = torch.arange(1, num_gts + 1, device=overlaps.device)
                low_quality = torch.zeros_like(assigned_gt_inds).scatter_reduce_(
                    -1, gt_argmax_overlaps, gt_ids.masked_fill(~takes_part, 0), 'amax')
            assigned_gt_inds = torch.where(low_quality > 0, low_quality, assigned_gt_inds)
        return assigned_gt_inds, max_overlaps
