"""mmdet's RPN head with its loss and its proposal selection batched over levels / images.

mmdet's ``RPNHead`` computes the loss level by level (five classification and five
regression loss calls, each with its own reshapes, weighting and a host sync in the
loss) after splitting the per-image targets into levels, and selects proposals image by
image and level by level (ten sigmoid / sort / gather sequences for two images). The
detection step is host-bound, so those few hundred small ops per step are time.

:class:`BatchedRPNHead` keeps mmdet's per-image NMS and changes how the rest is laid out:

* forward: the head's convolutions are shared by all levels, so the levels are packed
  into one zero-separated canvas (:func:`pack_levels`) and each convolution runs once
  instead of once per level (4 calls and their 3 backward calls instead of 20 and 15,
  each with cuDNN's host cost). The 3x3 convolution's one-pixel border around each level
  reads zeros, as its padding does, so every output is the per-level one (to float
  rounding: another shape may get another convolution algorithm). Only with mmdet's
  default single 3x3 ``rpn_conv``; a stack of convolutions runs per level.
* targets: with the sync-free assigner and sampler our configs name, the anchors of
  all images are assigned at once: one IoU call over gts padded to the batch's largest
  count (padding and anchors outside an image's valid area get IoU -1: they never win a
  maximum, are never sampled and get weight 0, as mmdet's compaction to the inside
  anchors and ``unmap`` give), the assigner's steps over the batch, one read-back of
  every image's candidate counts, then each image's positives and negatives drawn in
  mmdet's order (positives, negatives, image by image: the same draws) and one encode
  call. Same labels, weights and targets, bitwise. Synchronisations for two images: 4
  (mmdet's IoU and encode upload small constants, and the one read-back) instead of the
  per-image path's (its boolean-mask compaction and ``unmap``s, two IoU, two sampler and
  two encode calls; counted in docs/training_speed.md). Other assigners or samplers,
  ignored boxes, box types or an image without gts take mmdet's per-image path.
* loss: all levels of all images in one classification and one regression loss call.
  Each element's loss and gradient are mmdet's; only the sum runs in another order, so
  the loss values agree to float rounding and the gradients are equal. ``loss_rpn_cls``
  and ``loss_rpn_bbox`` are single tensors instead of one per level (mmdet sums the
  lists when it logs them: the same totals).
* proposals: each level's scores are sigmoided, sorted and cut to ``nms_pre`` for all
  images at once (a row-wise sort, so ties between exactly equal scores may come out in
  another order than mmdet's one-image sort); decoding and NMS stay per image, as
  mmdet's.
"""
import torch
import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.models.task_modules.assigners import AssignResult, BboxOverlaps2D
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.models.utils import multi_apply
from mmdet.registry import MODELS
from mmdet.structures.bbox import cat_boxes, get_box_tensor
from mmengine.structures import InstanceData

from mmmambaout.models.task_modules import (SyncFreeBboxOverlaps2D, SyncFreeMaxIoUAssigner,
                                            SyncFreeRandomSampler)


def _flat(level_map, num_imgs, channels):
    """One level's ``(N, A * channels, H, W)`` map -> ``(N, H W A, channels)`` in mmdet's
    anchor order (row, column, anchor); levels concatenated on dim 1 follow each other."""
    return level_map.permute(0, 2, 3, 1).reshape(num_imgs, -1, channels)


def pack_levels(feats, gap=1):
    """Lay ``(N, C, H_i, W_i)`` maps out on one zero canvas, ``gap`` zero rows / columns
    between any two: the first (largest) level at the top left, the others side by side
    in a band below it (an FPN's later levels, each half the size of the one before, fit
    in about the first's width). Returns the canvas and each level's ``(row, col)``."""
    (h0, w0), rest = feats[0].shape[-2:], feats[1:]
    places, col = [(0, 0)], 0
    for f in rest:
        places.append((h0 + gap, col))
        col += f.size(-1) + gap
    height = h0 + (gap + max(f.size(-2) for f in rest) if rest else 0)
    canvas = feats[0].new_zeros(*feats[0].shape[:2], height, max(w0, col - gap))
    for f, (r, c) in zip(feats, places):
        canvas[..., r:r + f.size(-2), c:c + f.size(-1)] = f
    return canvas, places


def _crop(canvas, places, feats):
    return [canvas[..., r:r + f.size(-2), c:c + f.size(-1)] for f, (r, c) in zip(feats, places)]


@MODELS.register_module()
class BatchedRPNHead(RPNHead):
    """:class:`RPNHead` with its convolutions run once over all levels, one loss call
    over all levels and images and level-wise proposal selection for all images at once
    (see the module doc).

    Args:
        pack_levels (bool): run the convolutions once over all levels packed on one
            canvas (default) instead of once per level.
    """

    def __init__(self, *args, pack_levels: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.pack_levels = pack_levels

    def forward(self, x):
        conv = self.rpn_conv
        if not (self.pack_levels and len(x) > 1 and isinstance(conv, torch.nn.Conv2d)
                and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
                and conv.stride == (1, 1) and conv.dilation == (1, 1)):
            return super().forward(x)
        canvas, places = pack_levels(x, gap=1)
        y = F.relu(conv(canvas))
        return _crop(self.rpn_cls(y), places, x), _crop(self.rpn_reg(y), places, x)

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None):
        num_imgs = len(batch_img_metas)
        featmap_sizes = [s.size()[-2:] for s in cls_scores]
        anchor_list, valid_flag_list = self.get_anchors(
            featmap_sizes, batch_img_metas, device=cls_scores[0].device)
        valid_flags = [torch.cat(v) for v in valid_flag_list]
        if self._can_batch_targets(anchor_list, batch_gt_instances, batch_gt_instances_ignore):
            labels, label_weights, bbox_targets, bbox_weights, avg_factor = \
                self._batched_targets(torch.cat(anchor_list[0]), valid_flags,
                                      batch_gt_instances, batch_img_metas)
        else:
            anchors = [cat_boxes(a) for a in anchor_list]
            if batch_gt_instances_ignore is None:
                batch_gt_instances_ignore = [None] * num_imgs
            (labels, label_weights, bbox_targets, bbox_weights, _, _,
             sampling_results) = multi_apply(
                self._get_targets_single, anchors, valid_flags, batch_gt_instances,
                batch_img_metas, batch_gt_instances_ignore, unmap_outputs=True)[:7]
            avg_factor = sum(r.avg_factor for r in sampling_results)
            self._raw_positive_infos.update(sampling_results=sampling_results)
            labels, label_weights = torch.stack(labels), torch.stack(label_weights)
            bbox_targets, bbox_weights = torch.stack(bbox_targets), torch.stack(bbox_weights)

        loss_cls = self.loss_cls(
            torch.cat([_flat(s, num_imgs, self.cls_out_channels) for s in cls_scores],
                      1).reshape(-1, self.cls_out_channels),
            labels.reshape(-1), label_weights.reshape(-1), avg_factor=avg_factor)
        dim = self.bbox_coder.encode_size
        bbox_pred = torch.cat([_flat(b, num_imgs, dim) for b in bbox_preds], 1).reshape(-1, dim)
        if self.reg_decoded_bbox:
            anchors = torch.stack([get_box_tensor(a) for a in anchors]).reshape(-1, 4)
            bbox_pred = get_box_tensor(self.bbox_coder.decode(anchors, bbox_pred))
        loss_bbox = self.loss_bbox(
            bbox_pred, bbox_targets.reshape(-1, bbox_targets.size(-1)),
            bbox_weights.reshape(-1, bbox_targets.size(-1)), avg_factor=avg_factor)
        return dict(loss_rpn_cls=loss_cls, loss_rpn_bbox=loss_bbox)

    def _can_batch_targets(self, anchor_list, batch_gt_instances, batch_gt_instances_ignore):
        """Whether :meth:`_batched_targets` gives mmdet's targets here: the sync-free
        assigner and sampler with options it covers, the same anchors for every image
        (mmdet's ``get_anchors`` hands every image the same list), plain tensor boxes and
        at least one gt per image."""
        assigner, sampler = self.assigner, self.sampler
        return (type(assigner) is SyncFreeMaxIoUAssigner
                and type(assigner.iou_calculator) in (BboxOverlaps2D, SyncFreeBboxOverlaps2D)
                and assigner.perm_repeat_gt_cfg is None and assigner.min_pos_iou >= 0
                and (assigner.ignore_iof_thr <= 0 or batch_gt_instances_ignore is None
                     or all(i is None or len(i) == 0 for i in batch_gt_instances_ignore))
                and type(sampler) is SyncFreeRandomSampler
                and not sampler.add_gt_as_proposals and not self.reg_decoded_bbox
                and all(levels is anchor_list[0] for levels in anchor_list)
                and all(isinstance(a, torch.Tensor) for a in anchor_list[0])
                and all(isinstance(g.bboxes, torch.Tensor) and len(g) > 0
                        and (assigner.gpu_assign_thr <= 0 or len(g) <= assigner.gpu_assign_thr)
                        for g in batch_gt_instances))

    def _batched_targets(self, anchors, valid_flags, batch_gt_instances, batch_img_metas):
        """Labels, label weights, box targets and weights ``(B, A[, 4])`` of all images
        at once and the sampled count (see the module doc); mmdet's per image."""
        num_imgs, num_anchors = len(batch_img_metas), anchors.size(0)
        inside = torch.stack([
            anchor_inside_flags(anchors, flags, meta['img_shape'][:2],
                                self.train_cfg['allowed_border'])
            for flags, meta in zip(valid_flags, batch_img_metas)])
        counts = [len(g) for g in batch_gt_instances]
        most = max(counts)
        gt_bboxes = anchors.new_zeros(num_imgs, most, 4)
        gt_labels = anchors.new_full((num_imgs, most), -1, dtype=torch.long)
        for i, g in enumerate(batch_gt_instances):
            gt_bboxes[i, :counts[i]] = g.bboxes
            gt_labels[i, :counts[i]] = g.labels
        padding = gt_labels < 0   # (labels are >= 0) built on the device: no upload
        overlaps = self.assigner.iou_calculator(gt_bboxes, anchors.expand(num_imgs, -1, -1))
        overlaps = overlaps.masked_fill(padding[:, :, None] | ~inside[:, None, :], -1)
        gt_inds, _ = self.assigner.gt_inds_wrt_overlaps(overlaps)

        # the one read-back: every image's positives, negatives and inside anchors
        num_pos, num_neg, num_inside = torch.stack(
            ((gt_inds > 0).sum(1), (gt_inds == 0).sum(1), inside.sum(1))).tolist()
        if 0 in num_inside:
            raise ValueError(
                'There is no valid anchor inside the image boundary. Please check the image '
                'size and anchor sizes, or set ``allowed_border`` to -1 to skip the condition.')
        pos_inds, neg_inds, sampled = [], [], 0
        for i in range(num_imgs):   # mmdet's draws, in mmdet's order
            pos, neg = self.sampler.sample_indices(
                AssignResult(counts[i], gt_inds[i], None, None), num_pos[i], num_neg[i])
            pos_inds.append(pos + i * num_anchors)
            neg_inds.append(neg + i * num_anchors)
            sampled += max(len(pos), 1) + max(len(neg), 1)   # SamplingResult.avg_factor
        pos_inds, neg_inds = torch.cat(pos_inds), torch.cat(neg_inds)

        flat_gt_inds = gt_inds.reshape(-1)[pos_inds] - 1
        pos_gt = flat_gt_inds + (pos_inds // num_anchors) * most
        pos_targets = self.bbox_coder.encode(anchors[pos_inds % num_anchors],
                                             gt_bboxes.reshape(-1, 4)[pos_gt])
        dim = pos_targets.size(-1)
        labels = anchors.new_full((num_imgs * num_anchors, ), self.num_classes, dtype=torch.long)
        labels[pos_inds] = gt_labels.reshape(-1)[pos_gt]
        label_weights = anchors.new_zeros(num_imgs * num_anchors, dtype=torch.float)
        pos_weight = self.train_cfg['pos_weight']
        label_weights[pos_inds] = 1.0 if pos_weight <= 0 else pos_weight
        label_weights[neg_inds] = 1.0
        bbox_targets = anchors.new_zeros(num_imgs * num_anchors, dim)
        bbox_targets[pos_inds] = pos_targets
        bbox_weights = anchors.new_zeros(num_imgs * num_anchors, dim)
        bbox_weights[pos_inds] = 1.0
        return (labels.view(num_imgs, -1), label_weights.view(num_imgs, -1),
                bbox_targets.view(num_imgs, num_anchors, dim),
                bbox_weights.view(num_imgs, num_anchors, dim), sampled)

    def predict_by_feat(self, cls_scores, bbox_preds, score_factors=None, batch_img_metas=None,
                        cfg=None, rescale=False, with_nms=True):
        if score_factors is not None:   # not an RPN output: mmdet's path
            return super().predict_by_feat(cls_scores, bbox_preds, score_factors,
                                           batch_img_metas, cfg, rescale, with_nms)
        cfg = self.test_cfg if cfg is None else cfg
        nms_pre = cfg.get('nms_pre', -1)
        num_imgs = len(batch_img_metas)
        priors = self.prior_generator.grid_priors(
            [s.shape[-2:] for s in cls_scores], dtype=cls_scores[0].dtype,
            device=cls_scores[0].device)
        dim = self.bbox_coder.encode_size
        mlvl_scores, mlvl_deltas, mlvl_priors, level_ids = [], [], [], []
        for level, (cls_score, bbox_pred, level_priors) in enumerate(
                zip(cls_scores, bbox_preds, priors)):
            cls_score = _flat(cls_score.detach(), num_imgs, self.cls_out_channels)
            deltas = _flat(bbox_pred.detach(), num_imgs, dim)
            if self.use_sigmoid_cls:
                scores = cls_score.sigmoid()
            else:   # FG labels first since mmdet v2.0; the last column is background
                scores = cls_score.softmax(-1)[..., :-1]
            scores = scores.squeeze(-1)
            if 0 < nms_pre < scores.shape[1]:
                scores, rank = scores.sort(dim=1, descending=True)
                rank, scores = rank[:, :nms_pre], scores[:, :nms_pre]
                deltas = deltas.gather(1, rank[..., None].expand(-1, -1, dim))
                level_priors = level_priors[rank]
            else:
                level_priors = level_priors.expand(num_imgs, -1, -1)
            mlvl_scores.append(scores)
            mlvl_deltas.append(deltas)
            mlvl_priors.append(level_priors)
            level_ids.append(scores.new_full((scores.size(1), ), level, dtype=torch.long))
        scores, deltas = torch.cat(mlvl_scores, 1), torch.cat(mlvl_deltas, 1)
        priors, level_ids = torch.cat(mlvl_priors, 1), torch.cat(level_ids)
        results = []
        for i, img_meta in enumerate(batch_img_metas):
            proposals = InstanceData(
                bboxes=self.bbox_coder.decode(priors[i], deltas[i],
                                              max_shape=img_meta['img_shape']),
                scores=scores[i], level_ids=level_ids)
            results.append(self._bbox_post_process(proposals, cfg=cfg, rescale=rescale,
                                                   img_meta=img_meta))
        return results


__all__ = ['BatchedRPNHead', 'pack_levels']
