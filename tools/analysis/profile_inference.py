"""Where a two-stage detector's test step spends its time, phase by phase.

For each config: the images and test pipeline of ``benchmark_inference.py`` (varied
sizes, batch 1, random weights, ``--score-thr`` 0 by default, so that each image keeps
``max_per_img`` detections), one warm-up pass, one plain timed pass (the step time: its
mean per image, where ``benchmark_inference.py`` reports the median), then
one pass with each phase wrapped: the data preprocessor, backbone + neck
(``extract_feat``), the RPN's ``predict``, the RoI head's ``predict_bbox`` (box head and
its multiclass NMS) and ``predict_mask``. Per image and phase: the time (CUDA synchronised
at the phase's start and end, so the phases add up to more than the plain step), the aten
operators it dispatches (counted with a ``TorchDispatchMode``) and, on CUDA, its host-device
synchronisations (the warnings of PyTorch's synchronisation debug mode, a prototype that
does not see every one). mmdet two-stage detectors (``rpn_head`` and ``roi_head``).

Example (docs/benchmarks.md)::

    python tools/analysis/profile_inference.py configs/mask_rcnn_mambaout_t_1x_coco.py \\
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py --images 30
"""
import argparse
import collections
import os.path as osp
import sys
import time
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import mmmambaout  # noqa: E402,F401
import torch  # noqa: E402
from benchmark_inference import image_sizes, prepared_inputs, print_header  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from mmmambaout.utils.train_step import build_model  # noqa: E402

PHASES = (('data_preprocessor', 'forward', 'preprocess'),
          (None, 'extract_feat', 'backbone + neck'),
          ('rpn_head', 'predict', 'RPN predict'),
          ('roi_head', 'predict_bbox', 'RoI box predict'),
          ('roi_head', 'predict_mask', 'RoI mask predict'))


class _OpCount(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def _sync(cuda):
    if cuda:
        torch.cuda.synchronize()


def wrap_phases(model, stats, cuda):
    """Time, ops and syncs of each phase into ``stats[label]`` (instance attributes that
    shadow the methods; nothing else changes)."""
    for owner, method, label in PHASES:
        obj = model if owner is None else getattr(model, owner)
        original = getattr(obj, method)

        def timed(*args, _original=original, _label=label, **kwargs):
            _sync(cuda)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught, _OpCount() as ops:
                warnings.simplefilter('always')
                if cuda:
                    torch.cuda.set_sync_debug_mode('warn')
                try:
                    out = _original(*args, **kwargs)
                finally:
                    if cuda:
                        torch.cuda.set_sync_debug_mode('default')
            _sync(cuda)
            s = stats[_label]
            s[0] += time.perf_counter() - start
            s[1] += ops.n
            s[2] += sum('synchroniz' in str(w.message) for w in caught)
            return out
        obj.__dict__[method] = timed


def profile(name, args, sizes):
    cuda = args.device.startswith('cuda')
    cfg, model = build_model(name, args.device)
    if not (hasattr(model, 'rpn_head') and hasattr(model, 'roi_head')):
        raise SystemExit(f'error: {name} is not a two-stage mmdet detector (rpn_head and '
                         'roi_head); profile_inference.py times those phases')
    model.eval()
    model.test_cfg.rcnn.score_thr = args.score_thr
    items = prepared_inputs(cfg, sizes, args.seed)

    def one_pass():
        out = None
        for inputs, sample in items:
            out = model.test_step(dict(inputs=[inputs], data_samples=[sample]))
        _sync(cuda)
        return out

    with torch.no_grad():
        one_pass()                                     # warm-up: compilation, plans
        start = time.perf_counter()
        one_pass()
        plain = (time.perf_counter() - start) / len(items)
        stats = collections.defaultdict(lambda: [0.0, 0, 0])
        wrap_phases(model, stats, cuda)
        out = one_pass()
    print(f'\n{name}: {plain * 1e3:.1f} ms per image (plain step, mean), score_thr '
          f'{model.test_cfg.rcnn.score_thr}, {len(out[0].pred_instances)} detections on the '
          'last image')
    print('| phase | ms/img | aten ops/img | syncs/img |\n|---|---|---|---|')
    for label, (t, n, s) in stats.items():
        syncs = f'{s / len(items):.1f}' if cuda else '-'
        print(f'| {label} | {t / len(items) * 1e3:.1f} | {n / len(items):.0f} | {syncs} |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+',
                        help='config paths, mmdet:: upstream configs, overrides after #')
    parser.add_argument('--images', type=int, default=30)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--score-thr', type=float, default=0.0,
                        help='rcnn score threshold (default 0, as benchmark_inference.py)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.images < 1:
        raise SystemExit('error: --images must be at least 1')
    print_header(args.device)
    sizes = image_sizes(args.images, args.seed)
    for name in args.configs:
        profile(name, args, sizes)


if __name__ == '__main__':
    main()
