"""BatchedRPNHead against mmdet's RPNHead (float32). CPU: proposals bitwise equal, the
loss to float32 rounding (rtol 1e-6, one sum instead of five). CUDA (skipped without a
GPU): the same proposals; losses to 1e-5 relative, since CUDA reductions and atomics may
sum in another order. Gradients, and the packed forward against the per-level one, to
1e-5: the convolutions over the packed levels have another shape, so the library may
pick another algorithm that sums in another order."""
import mmmambaout  # noqa: F401  (mmcv op backend before mmdet)
import pytest
import torch
from mmdet.models.dense_heads import RPNHead
from mmdet.models.task_modules.prior_generators import anchor_inside_flags
from mmdet.models.utils import multi_apply
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from mmmambaout.models.heads import BatchedRPNHead
from mmmambaout.models.heads.batched_rpn_head import pack_levels

STRIDES = [4, 8, 16, 32, 64]


def head_kwargs(use_sigmoid=True):
    return dict(
        in_channels=8, feat_channels=8,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                              strides=STRIDES),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4,
                        target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=use_sigmoid, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        train_cfg=ConfigDict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                          min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                         add_gt_as_proposals=False),
            allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=ConfigDict(nms_pre=300, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7),
                            min_bbox_size=0))


def heads(use_sigmoid=True):
    torch.manual_seed(0)
    stock = RPNHead(**head_kwargs(use_sigmoid))
    ours = BatchedRPNHead(**head_kwargs(use_sigmoid))
    ours.load_state_dict(stock.state_dict())
    return stock, ours


CUDA = pytest.param('cuda', marks=pytest.mark.cuda)


def inputs(pad=(128, 160), device='cpu'):
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 8, -(-pad[0] // s), -(-pad[1] // s), generator=g) for s in STRIDES]
    metas = [dict(img_shape=(128, 150), pad_shape=pad, batch_input_shape=pad,
                  scale_factor=(1.5, 1.5)),
             dict(img_shape=(100, 160), pad_shape=pad, batch_input_shape=pad,
                  scale_factor=(0.5, 0.5))]
    gts = []
    for _ in range(2):
        xy = torch.rand(4, 2, generator=g) * 100
        gts.append(InstanceData(bboxes=torch.cat((xy, xy + 10 + 40 * torch.rand(4, 2, generator=g)), 1),
                                labels=torch.zeros(4, dtype=torch.long)))
    return [f.to(device) for f in feats], metas, [gt.to(device) for gt in gts]


@pytest.mark.parametrize('device', ['cpu', CUDA])
@pytest.mark.parametrize('use_sigmoid', [True, False])
@pytest.mark.parametrize('rescale', [False, True])
def test_proposals_equal_mmdet(use_sigmoid, rescale, device):
    stock, ours = (h.to(device) for h in heads(use_sigmoid))
    feats, metas, _ = inputs(device=device)
    outs = stock(feats)
    ref = stock.predict_by_feat(*outs, batch_img_metas=metas, rescale=rescale)
    got = ours.predict_by_feat(*outs, batch_img_metas=metas, rescale=rescale)
    for r, o in zip(ref, got):
        assert len(r) > 0
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(r.get(key), o.get(key)), key


@pytest.mark.parametrize('device', ['cpu', CUDA])
def test_loss_and_gradients_equal_mmdet(device):
    results = []
    for head in heads():
        head = head.to(device)
        feats, metas, gts = inputs(device=device)
        feats = [f.requires_grad_() for f in feats]
        torch.manual_seed(5)    # the sampler draws
        losses = head.loss_by_feat(*head(feats), gts, metas)
        total = sum(sum(v) if isinstance(v, list) else v for v in losses.values())
        total.backward()
        results.append((losses, [f.grad for f in feats]))
    (stock_losses, stock_grads), (our_losses, our_grads) = results
    for key in ('loss_rpn_cls', 'loss_rpn_bbox'):
        assert len(stock_losses[key]) == 5 and our_losses[key].dim() == 0
        rtol = 1e-6 if device == 'cpu' else 1e-5
        torch.testing.assert_close(our_losses[key], sum(stock_losses[key]), rtol=rtol, atol=0)
    for a, b in zip(stock_grads, our_grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('pad', [(128, 160), (97, 211), (64, 40)])
def test_pack_levels_keeps_levels_apart(pad):
    feats, _, _ = inputs(pad)
    canvas, places = pack_levels(feats, gap=1)
    covered = torch.zeros(canvas.shape[-2:], dtype=torch.long)
    for f, (r, c) in zip(feats, places):
        h, w = f.shape[-2:]
        assert torch.equal(canvas[..., r:r + h, c:c + w], f)
        # a level plus its one-pixel ring (what a 3x3 convolution reads) touches no other
        covered[max(r - 1, 0):r + h + 1, max(c - 1, 0):c + w + 1] += 1
        covered[r:r + h, c:c + w] += 10
    assert covered.max() == 11   # a pixel of a level is in no other level's ring
    inside = torch.zeros_like(covered, dtype=torch.bool)
    for f, (r, c) in zip(feats, places):
        inside[r:r + f.size(-2), c:c + f.size(-1)] = True
    assert (canvas[..., ~inside] == 0).all()


@pytest.mark.parametrize('device', ['cpu', CUDA])
@pytest.mark.parametrize('pad', [(128, 160), (97, 211)])
def test_packed_forward_equals_per_level(device, pad):
    """float64, so that only the packing is tested, not rounding: the convolutions over
    the packed levels have another shape, for which the library may pick an algorithm
    that sums in another order (in float32 on an H100: 1e-4 relative in the weight
    gradient). Outputs and every gradient to 1e-10."""
    stock, ours = (h.to(device).double() for h in heads())
    feats, _, _ = inputs(pad, device=device)
    grads = []
    for head in (stock, ours):
        x = [f.double().requires_grad_() for f in feats]
        cls, reg = head(x)
        assert [c.shape for c in cls] == [f.shape[:1] + (3, ) + f.shape[2:] for f in feats]
        grads.append((cls, reg, torch.autograd.grad(
            sum((c * c).sum() + r.sum() for c, r in zip(cls, reg)),
            x + list(head.parameters()))))
    for a, b in zip(grads[0], grads[1]):
        for x, y in zip(a, b):
            torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-10)


def test_stacked_rpn_convs_run_per_level():
    kwargs = head_kwargs()
    torch.manual_seed(0)
    stock = RPNHead(num_convs=2, **kwargs)
    ours = BatchedRPNHead(num_convs=2, **kwargs)
    ours.load_state_dict(stock.state_dict())
    feats, _, _ = inputs()
    for a, b in zip(stock(feats), ours(feats)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    ours.num_convs, ours.pack_levels = 1, False   # the switch
    ours.rpn_conv = stock.rpn_conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    for a, b in zip(stock(feats), ours(feats)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def target_heads(**train_cfg):
    """mmdet's head (MaxIoUAssigner, RandomSampler) and ours with the sync-free ones that
    our configs name (which take the batched target path)."""
    stock_kwargs, our_kwargs = head_kwargs(), head_kwargs()
    for kwargs in (stock_kwargs, our_kwargs):
        for key, value in train_cfg.items():
            part, _, name = key.rpartition('.')
            (kwargs['train_cfg'][part] if part else kwargs['train_cfg'])[name] = value
    our_kwargs['train_cfg']['assigner']['type'] = 'SyncFreeMaxIoUAssigner'
    our_kwargs['train_cfg']['sampler']['type'] = 'SyncFreeRandomSampler'
    return RPNHead(**stock_kwargs), BatchedRPNHead(**our_kwargs)


def target_inputs(device, num_gts=(4, 7)):
    feats, metas, _ = inputs(device=device)
    g = torch.Generator().manual_seed(3)
    gts = []
    for n in num_gts:
        xy = torch.rand(n, 2, generator=g) * 110
        boxes = torch.cat((xy, xy + 4 + 40 * torch.rand(n, 2, generator=g)), 1)
        if n > 2:
            boxes[1] = boxes[0]   # a duplicate gt: ties in every maximum
            boxes[2] = torch.tensor([3., 3., 6., 5.])   # small: low-quality matches only
        gts.append(InstanceData(bboxes=boxes, labels=torch.zeros(n, dtype=torch.long)).to(device))
    return feats, metas, gts


def mmdet_targets(head, feats, metas, gts):
    anchors, valid = head.get_anchors([f.shape[-2:] for f in feats], metas, device=feats[0].device)
    out = multi_apply(head._get_targets_single, [torch.cat(a) for a in anchors],
                      [torch.cat(v) for v in valid], gts, metas, [None] * len(gts),
                      unmap_outputs=True)
    return ([torch.stack(t) for t in out[:4]], sum(r.avg_factor for r in out[6]))


@pytest.mark.parametrize('device', ['cpu', CUDA])
@pytest.mark.parametrize('train_cfg', [
    {},
    {'allowed_border': 0, 'pos_weight': 2.0},
    {'assigner.gt_max_assign_all': False, 'assigner.neg_iou_thr': (0.1, 0.3)},
    {'assigner.match_low_quality': False, 'sampler.neg_pos_ub': 2},
    {'sampler.num': 16},
])
def test_batched_targets_equal_mmdet(device, train_cfg):
    """Labels, weights and box targets of all images at once, bitwise equal to mmdet's
    per-image ones with the same seed (CPU); on CUDA the sampler draws from the CUDA
    generator, so there the assignment is compared, before sampling."""
    stock, ours = (h.to(device) for h in target_heads(**train_cfg))
    feats, metas, gts = target_inputs(device)
    anchors, valid = ours.get_anchors([f.shape[-2:] for f in feats], metas, device=device)
    assert ours._can_batch_targets(anchors, gts, None)
    if device == 'cpu':
        torch.manual_seed(7)
        ref, ref_avg = mmdet_targets(stock, feats, metas, gts)
        torch.manual_seed(7)
        *got, avg = ours._batched_targets(torch.cat(anchors[0]), [torch.cat(v) for v in valid],
                                          gts, metas)
        assert avg == ref_avg
        for r, o in zip(ref, got):
            assert r.dtype == o.dtype and torch.equal(r, o)
    for flags, meta, gt in zip(valid, metas, gts):   # the assignment itself, image by image
        inside = anchor_inside_flags(torch.cat(anchors[0]), torch.cat(flags), meta['img_shape'],
                                     ours.train_cfg['allowed_border'])
        ref = stock.assigner.assign(InstanceData(priors=torch.cat(anchors[0])[inside]), gt)
        overlaps = stock.assigner.iou_calculator(gt.bboxes[None], torch.cat(anchors[0])[None])
        got, _ = ours.assigner.gt_inds_wrt_overlaps(overlaps.masked_fill(~inside, -1))
        assert torch.equal(got[0][inside], ref.gt_inds)
        assert (got[0][~inside] == -1).all()


@pytest.mark.parametrize('num_gts', [(4, 7), (3, 0)])
def test_batched_loss_equals_mmdet(num_gts):
    """Batched targets, and mmdet's per-image path for an image without gts (or ignored
    boxes, other assigners, ...): the losses of mmdet's head, same seed, CPU."""
    stock, ours = target_heads()
    ours.load_state_dict(stock.state_dict())
    feats, metas, gts = target_inputs('cpu', num_gts)
    anchors, _ = ours.get_anchors([f.shape[-2:] for f in feats], metas, device='cpu')
    assert ours._can_batch_targets(anchors, gts, None) == (0 not in num_gts)
    results = []
    for head in (stock, ours):
        torch.manual_seed(5)
        results.append(head.loss_by_feat(*head(feats), gts, metas))
    for key in ('loss_rpn_cls', 'loss_rpn_bbox'):
        torch.testing.assert_close(results[1][key], sum(results[0][key]), rtol=1e-6, atol=0)
