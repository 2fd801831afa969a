"""mmdet's :class:`RandomSampler` with one host-device synchronisation per ``sample``.

mmdet's sampler finds the positive and the negative candidates with ``nonzero`` (two
synchronisations), draws each permutation on the CPU and uploads it, and deduplicates
the picks with ``unique`` (two more synchronisations on CUDA).
"""
import torch
from mmdet.models.task_modules.samplers import RandomSampler, SamplingResult
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import BaseBoxes, cat_boxes


def _indices_of(mask, count):
    """``mask.nonzero().squeeze(1)`` when ``count == mask.sum()``, without synchronising."""
    return torch.nonzero_static(mask, size=count).squeeze(1)


@TASK_UTILS.register_module()
class SyncFreeRandomSampler(RandomSampler):
    """:class:`RandomSampler` that synchronises once per ``sample`` instead of about four.

    Same arguments and the same sampling: up to ``int(num * pos_fraction)`` positives
    chosen uniformly without replacement, negatives up to ``num`` minus the positives
    (bounded by ``neg_pos_ub`` times them when ``neg_pos_ub >= 0``), gts prepended as
    proposals by the base class when ``add_gt_as_proposals``; indices come back sorted,
    as mmdet's ``unique`` returns them. Each permutation is ``torch.randperm(n)[:num]``
    over the ``n`` candidates as in mmdet, but drawn on the candidates' device. On the
    CPU that is the very call mmdet makes, so with the same seed the same indices are
    picked and the generator is left in the same state; on CUDA it draws from the CUDA
    generator (and no longer consumes the CPU one).

    Synchronisations left, per ``sample`` call: one, a ``tolist()`` of the two candidate
    counts (positives, negatives). It cannot go: how many indices are sampled, hence the
    shapes of every tensor of the :class:`SamplingResult`, depends on those counts, and
    the host has to know them to allocate the results (and, on the CPU, to draw
    ``randperm`` of the same length as mmdet). Everything after it is shape-known:
    candidate indices come from ``nonzero_static`` with the known count, and
    ``sort`` replaces ``unique`` (a permutation's picks are distinct, so sorting gives
    ``unique``'s result). ``_sample_pos``/``_sample_neg`` called on their own (as mmdet's
    combined samplers do) count their candidates themselves: one synchronisation each.
    """

    def random_choice(self, gallery, num):
        """mmdet's ``random_choice`` with the permutation drawn on ``gallery``'s device."""
        assert len(gallery) >= num

        is_tensor = isinstance(gallery, torch.Tensor)
        if not is_tensor:
            if torch.cuda.is_available():
                device = torch.cuda.current_device()
            else:
                device = 'cpu'
            gallery = torch.tensor(gallery, dtype=torch.long, device=device)
        perm = torch.randperm(gallery.numel(), device=gallery.device)[:num]
        rand_inds = gallery[perm]
        if not is_tensor:
            rand_inds = rand_inds.cpu().numpy()
        return rand_inds

    def _choose(self, mask, count, num_expected):
        candidates = _indices_of(mask, count)
        if count <= num_expected:
            return candidates
        return self.random_choice(candidates, num_expected)

    def _sample_pos(self, assign_result, num_expected, num_candidates=None, **kwargs):
        """Indices of up to ``num_expected`` random positives (``gt_inds > 0``).

        ``num_candidates``, when the caller knows it, is the number of positives.
        """
        mask = assign_result.gt_inds > 0
        if num_candidates is None:
            num_candidates = int(mask.sum())
        return self._choose(mask, num_candidates, num_expected)

    def _sample_neg(self, assign_result, num_expected, num_candidates=None, **kwargs):
        """Indices of up to ``num_expected`` random negatives (``gt_inds == 0``).

        ``num_candidates``, when the caller knows it, is the number of negatives.
        """
        mask = assign_result.gt_inds == 0
        if num_candidates is None:
            num_candidates = int(mask.sum())
        return self._choose(mask, num_candidates, num_expected)

    def sample_indices(self, assign_result, num_pos_candidates, num_neg_candidates, **kwargs):
        """Sorted positive and negative indices of one assignment, given how many
        candidates of each kind it has (known on the host: no synchronisation)."""
        num_expected_pos = int(self.num * self.pos_fraction)
        pos_inds = self.pos_sampler._sample_pos(
            assign_result, num_expected_pos, num_candidates=num_pos_candidates, **kwargs)
        pos_inds = pos_inds.sort().values  # distinct already: = mmdet's unique()
        num_sampled_pos = pos_inds.numel()
        num_expected_neg = self.num - num_sampled_pos
        if self.neg_pos_ub >= 0:
            _pos = max(1, num_sampled_pos)
            neg_upper_bound = int(self.neg_pos_ub * _pos)
            if num_expected_neg > neg_upper_bound:
                num_expected_neg = neg_upper_bound
        neg_inds = self.neg_sampler._sample_neg(
            assign_result, num_expected_neg, num_candidates=num_neg_candidates, **kwargs)
        return pos_inds, neg_inds.sort().values

    def sample(self, assign_result, pred_instances, gt_instances, **kwargs):
        """:meth:`BaseSampler.sample`, counting both kinds of candidates in one sync."""
        gt_bboxes = gt_instances.bboxes
        priors = pred_instances.priors
        gt_labels = gt_instances.labels
        if len(priors.shape) < 2:
            priors = priors[None, :]

        gt_flags = priors.new_zeros((priors.shape[0], ), dtype=torch.uint8)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            if (isinstance(gt_bboxes, BaseBoxes) and isinstance(priors, BaseBoxes)):
                gt_bboxes_ = gt_bboxes.convert_to(type(priors))
            else:
                gt_bboxes_ = gt_bboxes
            priors = cat_boxes([gt_bboxes_, priors], dim=0)
            assign_result.add_gt_(gt_labels)
            gt_ones = priors.new_ones(gt_bboxes_.shape[0], dtype=torch.uint8)
            gt_flags = torch.cat([gt_ones, gt_flags])

        gt_inds = assign_result.gt_inds
        # the one synchronisation
        num_pos_candidates, num_neg_candidates = torch.stack(
            ((gt_inds > 0).sum(), (gt_inds == 0).sum())).tolist()
        pos_inds, neg_inds = self.sample_indices(assign_result, num_pos_candidates,
                                                 num_neg_candidates, bboxes=priors, **kwargs)

        return SamplingResult(
            pos_inds=pos_inds,
            neg_inds=neg_inds,
            priors=priors,
            gt_bboxes=gt_bboxes,
            assign_result=assign_result,
            gt_flags=gt_flags)
