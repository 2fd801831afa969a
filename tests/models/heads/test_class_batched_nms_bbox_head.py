"""ClassBatchedNMSBBoxHead predicts exactly what mmdet's Shared2FCBBoxHead predicts with
the same weights: on the CPU through mmdet's code, on CUDA with COCO's sizes (1000 RoIs x
80 classes, so from ``split_thr`` candidates on all classes in the same kernels). Scores
of random weights have no ties, so the order is compared too. The kernels themselves run
under Triton's interpreter in tests/ops/test_triton_kernels_interpreted.py."""
import mmmambaout  # noqa: F401  (mmcv op backend before mmdet)
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config, ConfigDict


def heads(device, num_classes):
    cfg = Config.fromfile('configs/mask_rcnn_mambaout_t_1x_coco.py').model.roi_head.bbox_head
    assert cfg.type == 'ClassBatchedNMSBBoxHead'
    torch.manual_seed(0)
    ours = MODELS.build(dict(cfg, num_classes=num_classes)).to(device).eval()
    stock = MODELS.build(dict(cfg, type='Shared2FCBBoxHead', num_classes=num_classes))
    stock.load_state_dict(ours.state_dict())
    return ours, stock.to(device).eval()


def predictions(head, rois, feats, score_thr, nms):
    cls_score, bbox_pred = head(feats)
    cfg = ConfigDict(score_thr=score_thr, nms=nms, max_per_img=100)
    meta = dict(img_shape=(800, 1216), scale_factor=(0.8, 0.8))
    res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ), [meta], cfg,
                               rescale=True)[0]
    return res.bboxes, res.scores, res.labels


def random_rois(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([1100., 700.])
    wh = torch.rand(n, 2, generator=g) * 300 + 4
    rois = torch.cat((torch.zeros(n, 1), xy, xy + wh), 1).to(device)
    feats = torch.randn(n, 256, 7, 7, generator=g).to(device) * 4   # spread the scores
    return rois, feats


def assert_same(ours, stock):
    for a, b in zip(ours, stock):
        assert a.shape == b.shape and torch.equal(a, b)


@torch.no_grad()
def test_cpu_predictions_are_mmdets():
    ours, stock = heads('cpu', 6)
    rois, feats = random_rois(300, 'cpu')
    nms = dict(type='nms', iou_threshold=0.5, split_thr=100)
    assert_same(predictions(ours, rois, feats, 0.0, nms),
                predictions(stock, rois, feats, 0.0, nms))


@pytest.mark.cuda
@torch.no_grad()
@pytest.mark.parametrize('score_thr, nms', [
    (0.0, dict(type='nms', iou_threshold=0.5)),                      # 80000 candidates
    (0.01, dict(type='nms', iou_threshold=0.5)),
    (0.0, dict(type='nms', iou_threshold=0.6, offset=1, max_num=50)),
    (0.0, dict(type='nms', iou_threshold=0.5, class_agnostic=True)),   # mmdet's path
])
def test_cuda_predictions_are_mmdets(score_thr, nms, monkeypatch):
    import mmmambaout.models.heads.class_batched_nms_bbox_head as head_module
    import mmmambaout.ops.parallel_nms as parallel_nms
    ran = []

    def spy(*args):
        ran.append(batched(*args))
        return ran[-1]
    batched = parallel_nms.nms_per_class
    monkeypatch.setattr(parallel_nms, 'nms_per_class', spy)
    ours, stock = heads('cuda', 80)
    rois, feats = random_rois(1000, 'cuda')
    got = predictions(ours, rois, feats, score_thr, nms)
    assert len(got[0]) == min(100, nms.get('max_num', 100))
    assert_same(got, predictions(stock, rois, feats, score_thr, nms))
    # the batched kernels gave it (the head falls back to mmcv's loop if they fail): at
    # score_thr 0 all 80000 candidates go there, except with class-agnostic NMS (mmdet's)
    assert head_module.BATCHED_NMS.reason is None and all(k is not None for k in ran)
    if score_thr == 0:
        assert len(ran) == (0 if nms.get('class_agnostic') else 1)


@torch.no_grad()
def test_failing_kernels_fall_back_to_mmcvs_loop_with_one_warning(monkeypatch):
    import mmmambaout.models.heads.class_batched_nms_bbox_head as head_module
    import mmmambaout.ops.parallel_nms as parallel_nms

    def broken(*args):
        raise RuntimeError('no kernel')
    monkeypatch.setattr(head_module, '_triton_device', lambda t: True)
    monkeypatch.setattr(head_module.BATCHED_NMS, 'reason', None)
    monkeypatch.setattr(parallel_nms, 'nms_per_class', broken)
    ours, stock = heads('cpu', 6)
    rois, feats = random_rois(300, 'cpu')
    nms = dict(type='nms', iou_threshold=0.5, split_thr=100)
    with pytest.warns(UserWarning, match='no kernel'):
        got = predictions(ours, rois, feats, 0.0, nms)
    assert head_module.BATCHED_NMS.reason == 'RuntimeError: no kernel'
    assert_same(got, predictions(stock, rois, feats, 0.0, nms))


@pytest.mark.parametrize('nms, applies', [
    (dict(type='nms', iou_threshold=0.5), True),
    (dict(type='nms', iou_threshold=0.5, class_agnostic=False, offset=1, max_num=9), True),
    (dict(type='nms', iou_threshold=0.5, class_agnostic=True), False),
    (dict(type='soft_nms', iou_threshold=0.5), False),
    (dict(type='nms', iou_threshold=0.5, min_score=0.1), False),   # a key it does not know
    (None, False),                                                  # mmcv: no NMS at all
])
def test_which_settings_take_the_batched_path(monkeypatch, nms, applies):
    import sys

    import mmmambaout.models.heads.class_batched_nms_bbox_head as head_module
    monkeypatch.setattr(head_module, '_triton_device', lambda t: True)
    cfg = ConfigDict(score_thr=0.0, nms=nms, max_per_img=100)
    roi = torch.zeros(3, 5)
    assert head_module._batched_nms_applies(roi, cfg) == applies
    assert not head_module._batched_nms_applies(roi[:0], cfg)
    # a full mmcv build's nms compares IoUs another way: mmdet's path
    monkeypatch.setattr(sys.modules['mmcv.ops.nms'].ext_module, 'nms', lambda *a, **k: None)
    assert not head_module._batched_nms_applies(roi, cfg)
