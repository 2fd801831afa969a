"""SyncFreeRandomSampler against mmdet's RandomSampler: the same picks on the CPU for the
same seed (and the same generator state after), one synchronisation per sample on CUDA."""
import itertools
import warnings

import numpy as np
import pytest
import torch

import mmmambaout  # noqa: F401  (first: provides mmcv's ops, registers the classes)
from mmdet.models.task_modules.assigners import AssignResult
from mmdet.models.task_modules.samplers import RandomSampler
from mmdet.models.task_modules.samplers.sampling_result import random_boxes
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData

from mmmambaout.models.task_modules import SyncFreeRandomSampler

OPTIONS = [
    dict(num=num, pos_fraction=frac, neg_pos_ub=ub, add_gt_as_proposals=add_gt)
    for num, frac, ub, add_gt in itertools.product(
        (4, 16, 64), (0.25, 0.5, 1.0), (-1, 0, 1, 3), (True, False))
]

# (priors, gts, P(positive), P(negative)); the rest are ignored (-1)
SCENES = [
    (200, 6, 0.2, 0.6),    # more of both than asked for: two permutations
    (40, 3, 0.05, 0.9),    # few positives
    (40, 3, 0.0, 0.9),     # no positives
    (40, 3, 0.6, 0.0),     # no negatives
    (30, 0, 0.0, 0.7),     # no gts
    (8, 2, 0.3, 0.3),      # fewer candidates than asked for
    (0, 2, 0.5, 0.5),      # no priors
    (1, 1, 1.0, 0.0),      # one prior
]


def _option_id(opt):
    return '-'.join(f'{k}={v}' for k, v in opt.items())


def _inputs(num_priors, num_gts, p_pos, p_neg, seed):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(num_priors, generator=g)
    gt_inds = torch.full((num_priors, ), -1, dtype=torch.long)
    gt_inds[u < p_pos + p_neg] = 0
    if num_gts:
        pos = u < p_pos
        gt_inds[pos] = torch.randint(1, num_gts + 1, (int(pos.sum()), ), generator=g)
    labels = torch.randint(0, 80, (num_gts, ), generator=g)
    assigned_labels = torch.where(gt_inds > 0, labels[(gt_inds - 1).clamp(min=0)], -1) \
        if num_gts else torch.full_like(gt_inds, -1)
    assign = AssignResult(num_gts, gt_inds, torch.rand(num_priors, generator=g),
                          assigned_labels)
    pred = InstanceData(priors=random_boxes(num_priors, 100, rng=seed))
    gt = InstanceData(bboxes=random_boxes(num_gts, 100, rng=seed + 1), labels=labels)
    return assign, pred, gt


FIELDS = ('pos_inds', 'neg_inds', 'pos_priors', 'neg_priors', 'pos_is_gt',
          'pos_assigned_gt_inds', 'pos_gt_labels', 'pos_gt_bboxes')


def _assert_same(ours, ref):
    for name in FIELDS:
        a, b = getattr(ours, name), getattr(ref, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name
    for name in ('num_pos', 'num_neg', 'avg_factor', 'num_gts'):
        assert getattr(ours, name) == getattr(ref, name), name


def _sample(sampler, scene, data_seed, torch_seed):
    assign, pred, gt = _inputs(*scene, data_seed)
    torch.manual_seed(torch_seed)
    result = sampler.sample(assign, pred, gt)
    return result, torch.get_rng_state(), assign


@pytest.mark.parametrize('opt', OPTIONS, ids=_option_id)
def test_sample_equals_mmdet_on_cpu(opt):
    ref, ours = RandomSampler(**opt), SyncFreeRandomSampler(**opt)
    drew = 0
    for i, scene in enumerate(SCENES):
        for seed in range(3):
            r, r_state, r_assign = _sample(ref, scene, 10 * i + seed, seed)
            o, o_state, o_assign = _sample(ours, scene, 10 * i + seed, seed)
            _assert_same(o, r)
            # same draws: the generators end in the same state
            assert torch.equal(o_state, r_state)
            assert torch.equal(o_assign.gt_inds, r_assign.gt_inds)   # add_gt_ alike
            drew += not torch.equal(r_state, torch.manual_seed(seed).get_state())
    if opt['num'] < 64:
        assert drew   # randperm was exercised, not only the take-everything branch


def test_both_permutations_drawn():
    # 40 positives and ~120 negatives for num=16: both branches random
    opt = dict(num=16, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True)
    for seed in range(20):
        r, r_state, _ = _sample(RandomSampler(**opt), SCENES[0], seed, seed)
        o, o_state, _ = _sample(SyncFreeRandomSampler(**opt), SCENES[0], seed, seed)
        _assert_same(o, r)
        assert torch.equal(o_state, r_state)
        assert o.pos_inds.numel() == 4 and o.neg_inds.numel() == 12


@pytest.mark.parametrize('num', (0, 3, 10))
def test_sample_pos_neg_alone_equal_mmdet(num):
    ref, ours = RandomSampler(8, 0.5), SyncFreeRandomSampler(8, 0.5)
    for i, scene in enumerate(SCENES):
        assign, _, _ = _inputs(*scene, i)
        for method in ('_sample_pos', '_sample_neg'):
            torch.manual_seed(i)
            a = getattr(ours, method)(assign, num)
            torch.manual_seed(i)
            b = getattr(ref, method)(assign, num)
            # mmdet returns an unsqueezed (0, 1) tensor when there is no candidate
            assert torch.equal(a, b.reshape(-1))


@pytest.mark.parametrize('kind', (torch.tensor, np.array, list))
def test_random_choice_equals_mmdet(kind):
    # both samplers put a list or array on the current CUDA device when there is one,
    # where the draws differ (CUDA vs CPU generator): only the CPU draws can be equal
    if kind is not torch.tensor and torch.cuda.is_available():
        pytest.skip('non-tensor galleries are sampled on CUDA when it is available')
    gallery = kind([5, 9, 2, 7, 11, 3, 8])
    for num in (0, 3, 7):
        torch.manual_seed(num)
        a = SyncFreeRandomSampler(4, 0.5).random_choice(gallery, num)
        torch.manual_seed(num)
        b = RandomSampler(4, 0.5).random_choice(gallery, num)
        assert type(a) is type(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_registered():
    sampler = TASK_UTILS.build(dict(type='SyncFreeRandomSampler', num=512, pos_fraction=0.25))
    assert type(sampler) is SyncFreeRandomSampler


def _to(device, assign, pred, gt):
    assign.gt_inds, assign.max_overlaps, assign.labels = (
        t.to(device) for t in (assign.gt_inds, assign.max_overlaps, assign.labels))
    return assign, pred.to(device), gt.to(device)


def _syncs(fn):
    """Run fn under CUDA's sync debug mode; return its result and where each reported
    synchronisation was called from (``file:line``)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            out = fn()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    # one warning per synchronising call; PyTorch >= 2.11 also warns once that the mode
    # is a prototype ("... does not yet detect all synchronizing operations")
    return out, [f'{w.filename}:{w.lineno}' for w in caught
                 if 'called a synchronizing CUDA operation' in str(w.message)]


@pytest.mark.cuda
@pytest.mark.parametrize('opt', OPTIONS[::5], ids=_option_id)
def test_one_sync_on_cuda(opt):
    for i, scene in enumerate(SCENES):
        assign, pred, gt = _inputs(*scene, i)
        n_gts = len(gt) if opt['add_gt_as_proposals'] else 0
        gt_inds = torch.cat([torch.arange(1, n_gts + 1), assign.gt_inds])
        assign, pred, gt = _to('cuda', assign, pred, gt)
        res, syncs = _syncs(lambda: SyncFreeRandomSampler(**opt).sample(assign, pred, gt))
        assert len(syncs) == 1, syncs
        # a valid sample: distinct sorted candidates of the right kind, mmdet's counts
        pos, neg = res.pos_inds.cpu(), res.neg_inds.cpu()
        n_pos = min(int((gt_inds > 0).sum()), int(opt['num'] * opt['pos_fraction']))
        n_neg = opt['num'] - n_pos
        if opt['neg_pos_ub'] >= 0:
            n_neg = min(n_neg, int(opt['neg_pos_ub'] * max(1, n_pos)))
        n_neg = min(int((gt_inds == 0).sum()), n_neg)
        assert pos.numel() == n_pos and (gt_inds[pos] > 0).all()
        assert neg.numel() == n_neg and (gt_inds[neg] == 0).all()
        for inds in (pos, neg):
            assert (inds.diff() > 0).all()
    # the count has teeth: mmdet's sampler synchronises more
    assign, pred, gt = _to('cuda', *_inputs(*SCENES[0], 0))
    assert len(_syncs(lambda: RandomSampler(**opt).sample(assign, pred, gt))[1]) > 1
