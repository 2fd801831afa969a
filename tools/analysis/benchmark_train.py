"""Time the training step of detection / segmentation configs side by side on one device.

Synthetic inputs (no data loader): random images with ``--objects`` boxes and masks per
image (detection) or a random label map (segmentation); pretrained init switched off;
SyncBN reverted to BN. Warm-up iterations, then timed ones; prints s/iter, img/s and
peak memory per config, with the exact command, device and versions. Peak memory is
what tensors held (``max_memory_allocated``) and what the caching allocator reserved
(``max_memory_reserved``); only the latter sees memory that CUDA graphs (e.g.
``compile_stages='reduce-overhead'``) keep in their private pools.

Upstream configs are named ``mmdet::path/in/their/configs.py`` or ``mmseg::...``; a
config may carry its own overrides after ``#``, e.g. without compiled stages:
``configs/mask_rcnn_mambaout_t_1x_coco.py#model.backbone.compile_stages=False``. The stock
components of our configs: ``configs/stock/``.

Host-bound steps (Mask R-CNN is one) move with the host: the same config can measure
differently in two processes on one machine (docs/training_speed.md). ``--rounds R``
keeps every config built and times them R times, config after config, so that drift hits
all configs alike; s/iter is then the median over all rounds and each round's median is
printed too. Peak memory is that of the first timed round, less what other configs still
hold.

``--det-size`` takes one or more ``W H`` pairs; with several, each iteration takes the
next size in turn, as keep-ratio resizing gives in real training (e.g. to see how
``compile_stages`` copes with variable sizes).

Example (the table in README.md):
    python tools/analysis/benchmark_train.py configs/mask_rcnn_mambaout_t_1x_coco.py \
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py \
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --amp --iters 50
"""
import argparse
import json
import os.path as osp
import platform
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmmambaout  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmmambaout.utils.synthetic import batch_for  # noqa: E402
from mmmambaout.utils.train_step import build_train_step, parse_cfg_options  # noqa: E402


def det_sizes(values):
    """``[W, H, W, H, ...]`` -> ``[(W, H), ...]``."""
    if not values or len(values) % 2:
        raise SystemExit(f'--det-size takes W H pairs, got {values}')
    return [tuple(values[i:i + 2]) for i in range(0, len(values), 2)]


class Step:
    """One config's training step, built once, timed in one or more rounds."""

    def __init__(self, name, args):
        self.name, self.args = name, args
        self.cuda = args.device.startswith('cuda')
        sizes = det_sizes(args.det_size)
        if self.cuda:
            torch.cuda.empty_cache()
            # memory other configs still hold (their weights and optimizer state) is not
            # this one's: subtracted from the peaks
            self.base = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        cfg, self.model, self.optim_wrapper, data = build_train_step(
            name, args.device, args.amp, args.batch, sizes[0], args.seg_size, args.objects,
            parse_cfg_options(args.cfg_options))
        # several detection sizes: one batch each, taken in turn (as keep-ratio resizing gives)
        self.batches = [data] + [
            batch_for(cfg, args.batch, size, args.seg_size, objects=args.objects)
            for size in (sizes[1:] if cfg.default_scope == 'mmdet' else ())]
        self.sizes = sizes if cfg.default_scope == 'mmdet' else [tuple(args.seg_size)]
        self.i, self.times, self.rounds, self.losses = 0, [], [], []
        self.run(args.warmup)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def run(self, iters, timed=False):
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            log_vars = self.model.train_step(self.batches[self.i % len(self.batches)],
                                             self.optim_wrapper)
            if self.cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if self.args.print_iters:
                size = self.sizes[self.i % len(self.batches)]
                print(f'{self.name} iteration {self.i + 1} ({"timed" if timed else "warm-up"}, '
                      f'size {size}): {times[-1]:.3f} s', flush=True)
            self.i += 1
            if timed:
                self.losses.append(float(log_vars['loss']))
        if timed:
            self.times += times
            self.rounds.append(float(np.median(times)))

    def result(self):
        s_iter = float(np.median(self.times))
        peak = reserved = float('nan')
        if self.cuda:   # the peaks of the first timed round, where nothing ran in between
            peak = (self.peaks[0] - self.base[0]) / 2**30
            reserved = (self.peaks[1] - self.base[1]) / 2**30
        return dict(config=self.name, s_iter=s_iter, img_s=self.args.batch / s_iter,
                    round_s_iter=self.rounds, peak_gib=peak, reserved_gib=reserved,
                    params_m=sum(p.numel() for p in self.model.parameters()) / 1e6,
                    finite=bool(np.isfinite(self.losses).all()), last_loss=self.losses[-1])

    def first_round(self):
        self.run(self.args.iters, timed=True)
        if self.cuda:
            self.peaks = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()


def benchmark(name, args):
    """Build, warm up and time one config (one round); its result dict."""
    step = Step(name, args)
    step.first_round()
    return step.result()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=50)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--amp', action='store_true', help='AmpOptimWrapper (fp16, dynamic loss scale)')
    parser.add_argument('--det-size', type=int, nargs='+', default=[1333, 800], metavar='W H',
                        help='detection input size; several W H pairs are used in turn, one '
                             'per iteration (variable input sizes, as in real training)')
    parser.add_argument('--seg-size', type=int, nargs=2, default=(512, 512), metavar=('W', 'H'))
    parser.add_argument('--objects', type=int, default=8)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='key=value overrides applied to every config')
    parser.add_argument('--rounds', type=int, default=1,
                        help='time every config this many times, config after config (all '
                             'stay built); s/iter is the median over all rounds, each round\'s '
                             'median is printed too')
    parser.add_argument('--print-iters', action='store_true',
                        help='print the time of every iteration, warm-up included, with its '
                             'input size (where compilation, recompilation and CUDA graph '
                             'recordings fall)')
    parser.add_argument('--out', help='also write the results as JSON here')
    args = parser.parse_args()

    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else platform.processor()
    import mmdet
    import mmengine
    import mmseg
    print('command: python ' + ' '.join(sys.argv))
    print(f'device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}); '
          f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')
    if args.rounds < 1:
        raise SystemExit(f'--rounds must be at least 1, got {args.rounds}')
    print(f'batch {args.batch}, {args.warmup} warm-up + {args.iters} timed iterations (median)'
          f'{f" x {args.rounds} rounds" if args.rounds > 1 else ""}, amp={args.amp}, '
          f'detection sizes {det_sizes(args.det_size)}')
    header = ('| config | params (M) | s/iter | img/s | peak GiB | peak reserved GiB | '
              'losses finite |' + (' s/iter per round |' if args.rounds > 1 else ''))
    print(header + '\n' + '|---' * header.count(' |') + '|')
    rows, kept = [], []

    def report(step):
        r = step.result()
        rows.append(r)
        rounds = (' ' + ' / '.join(f'{t:.3f}' for t in r['round_s_iter']) + ' |'
                  if args.rounds > 1 else '')
        print(f"| {r['config']} | {r['params_m']:.1f} | {r['s_iter']:.3f} | {r['img_s']:.1f} | "
              f"{r['peak_gib']:.2f} | {r['reserved_gib']:.2f} | {r['finite']} |{rounds}",
              flush=True)

    for name in args.configs:
        step = Step(name, args)
        step.first_round()
        if args.rounds > 1:
            kept.append(step)
        else:
            report(step)
        del step   # frees the model before the next is built (one round)
    # more rounds: every config again, config after config, so that a host that speeds up
    # or slows down during the run affects all of them alike
    for _ in range(args.rounds - 1):
        for step in kept:
            step.run(2)   # settle after the other configs' steps
            step.run(args.iters, timed=True)
    for step in kept:
        report(step)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=sys.argv, device=device, torch=torch.__version__, rows=rows), f,
                      indent=1)


if __name__ == '__main__':
    main()
