"""mmdet's ``Shared2FCBBoxHead`` whose test-time NMS runs all classes in the same kernels.

For each image mmdet's ``multiclass_nms`` keeps the (RoI, class) boxes scoring above
``score_thr``, up to 1000 x 80 = 80000 for COCO, and passes them to mmcv's
``batched_nms``. From its ``split_thr`` (10000) candidates on, that function loops over
the classes: 80 NMS calls per image, each with its host syncs, which made that loop most
of a test step's time with ``score_thr=0`` (docs/benchmarks.md). A low ``score_thr`` or a
model early in training gets there.

:class:`ClassBatchedNMSBBoxHead` runs those candidates through
:func:`mmmambaout.ops.parallel_nms.nms_per_class` instead: the same kept boxes with the
same scores and labels, by descending score (equal scores by index, where mmcv's unstable
sort leaves them in any order). With fewer candidates, off CUDA, for another NMS type
(soft NMS) or class-agnostic NMS it is mmdet's code. Training is unchanged.
"""
import sys

import torch
from mmcv.ops import batched_nms
from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
from mmdet.registry import MODELS
from mmengine.structures import InstanceData

from mmmambaout.ops import mmcv_backend


@MODELS.register_module()
class ClassBatchedNMSBBoxHead(Shared2FCBBoxHead):
    """:class:`Shared2FCBBoxHead` with per-class NMS batched over the classes on CUDA."""

    def _predict_by_feat_single(self, roi, cls_score, bbox_pred, img_meta, rescale=False,
                                rcnn_test_cfg=None):
        if not (self.predict_box_type == 'hbox' and _batched_nms_applies(roi, rcnn_test_cfg)):
            return super()._predict_by_feat_single(roi, cls_score, bbox_pred, img_meta,
                                                   rescale, rcnn_test_cfg)
        # mmdet's boxes and scores of every class, before NMS ("aug test" results)
        raw = super()._predict_by_feat_single(roi, cls_score, bbox_pred, img_meta, rescale,
                                              None)
        dets, labels = multiclass_nms(raw.bboxes, raw.scores, rcnn_test_cfg.score_thr,
                                      rcnn_test_cfg.nms, rcnn_test_cfg.max_per_img)
        return InstanceData(bboxes=dets[:, :-1], scores=dets[:, -1], labels=labels)


def _triton_device(t) -> bool:
    return t.is_cuda


def _batched_nms_applies(roi, rcnn_test_cfg) -> bool:
    if rcnn_test_cfg is None or roi.shape[0] == 0 or not _triton_device(roi):
        return False
    nms_cfg = rcnn_test_cfg.nms
    return (nms_cfg is not None and nms_cfg.get('type', 'nms') == 'nms'
            and not nms_cfg.get('class_agnostic', False)
            and set(nms_cfg) <= {'type', 'iou_threshold', 'offset', 'split_thr', 'max_num',
                                 'class_agnostic'}
            and _mmcv_nms_is_ours())


def _mmcv_nms_is_ours() -> bool:
    """Whether mmcv's ``nms`` is mmmambaout's stand-in, whose float32 IoU test the batched
    kernels reproduce (a full mmcv build compares ``inter > thr * union`` instead)."""
    ext = getattr(sys.modules['mmcv.ops.nms'], 'ext_module', None)
    return getattr(ext, 'nms', None) is mmcv_backend.nms


def multiclass_nms(multi_bboxes, multi_scores, score_thr, nms_cfg, max_num=-1):
    """mmdet's ``multiclass_nms`` for boxes ``[n, 4]`` or ``[n, 4 x classes]``, scores
    ``[n, classes + 1]`` and plain NMS (``nms_cfg`` as mmcv's ``batched_nms`` takes it):
    ``(dets [k, 5], labels [k])``, with :func:`nms_per_class` from ``split_thr``
    candidates on."""
    num_classes = multi_scores.size(1) - 1
    n = multi_scores.size(0)
    if multi_bboxes.shape[1] > 4:
        bboxes = multi_bboxes.view(n, -1, 4)
    else:
        bboxes = multi_bboxes[:, None].expand(n, num_classes, 4)
    scores = multi_scores[:, :-1].reshape(-1)
    labels = torch.arange(num_classes, device=scores.device).expand(n, -1).reshape(-1)
    inds = (scores > score_thr).nonzero().squeeze(1)
    bboxes, scores, labels = bboxes.reshape(-1, 4)[inds], scores[inds], labels[inds]
    if not len(inds):
        return torch.cat([bboxes, scores[:, None]], -1), labels
    if len(inds) < nms_cfg.get('split_thr', 10000):
        dets, keep = batched_nms(bboxes, scores, labels, nms_cfg)
    else:
        keep = _nms_per_class(bboxes, scores, labels, nms_cfg)
        if keep is None:   # did not settle: mmcv's loop over the classes
            dets, keep = batched_nms(bboxes, scores, labels, nms_cfg)
        else:
            if nms_cfg.get('max_num', -1) > 0:
                keep = keep[:nms_cfg['max_num']]
            dets = torch.cat([bboxes[keep], scores[keep, None]], -1)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    return dets, labels[keep]


#: the batched NMS, off for the rest of the process once its Triton kernels fail
BATCHED_NMS = mmcv_backend.DisableOnFailure(
    'ClassBatchedNMSBBoxHead: the batched Triton NMS', "mmcv's loop over the classes")


def _batched_nms(shifted, scores, labels, threshold):
    from mmmambaout.ops.parallel_nms import nms_per_class   # imports Triton
    return nms_per_class(shifted, scores, labels, threshold)


def _nms_per_class(bboxes, scores, labels, nms_cfg):
    """:func:`nms_per_class` on the boxes mmmambaout's mmcv ``nms`` would see in
    ``batched_nms`` (shifted by class, so the same rounding; then its
    :func:`~mmmambaout.ops.mmcv_backend.nms_working_boxes`), or None where it cannot run
    (float64, no Triton, a kernel that failed: then mmcv's loop for the rest of the
    process, with a warning)."""
    if BATCHED_NMS.reason is not None or bboxes.dtype == torch.float64:
        return None
    shifted, threshold = mmcv_backend.nms_working_boxes(
        bboxes + (labels.to(bboxes) * (bboxes.max() + 1))[:, None], nms_cfg['iou_threshold'],
        nms_cfg.get('offset', 0))
    return BATCHED_NMS(_batched_nms, shifted, scores, labels, threshold)
