"""Time the training step of detection / segmentation configs side by side on one device.

Synthetic inputs (no data loader): random images with ``--objects`` boxes and masks per
image (detection) or a random label map (segmentation); pretrained init switched off;
SyncBN reverted to BN. Warm-up iterations, then timed ones; prints s/iter, img/s and
peak memory per config, with the exact command, device and versions. Peak memory is
what tensors held (``max_memory_allocated``) and what the caching allocator reserved
(``max_memory_reserved``); only the latter sees memory that CUDA graphs (e.g.
``compile_stages='reduce-overhead'``) keep in their private pools.

Upstream configs are named ``mmdet::path/in/their/configs.py`` or ``mmseg::...``; a
config may carry its own overrides after ``#``, e.g. our config without its speed-ups:
``configs/mask_rcnn_mambaout_t_1x_coco.py#train_speedups=False``.

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


def benchmark(name, args):
    sizes = det_sizes(args.det_size)
    cfg, model, optim_wrapper, data = build_train_step(
        name, args.device, args.amp, args.batch, sizes[0], args.seg_size, args.objects,
        parse_cfg_options(args.cfg_options))
    # several detection sizes: one batch each, taken in turn (as keep-ratio resizing gives)
    batches = [data] + [batch_for(cfg, args.batch, size, args.seg_size, objects=args.objects)
                        for size in (sizes[1:] if cfg.default_scope == 'mmdet' else ())]
    cuda = args.device.startswith('cuda')
    for i in range(args.warmup):
        model.train_step(batches[i % len(batches)], optim_wrapper)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for i in range(args.iters):
        t0 = time.perf_counter()
        log_vars = model.train_step(batches[(args.warmup + i) % len(batches)], optim_wrapper)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(log_vars['loss']))
    s_iter = float(np.median(times))
    return dict(config=name, s_iter=s_iter, img_s=args.batch / s_iter,
                peak_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else float('nan'),
                reserved_gib=torch.cuda.max_memory_reserved() / 2**30 if cuda else float('nan'),
                params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                finite=bool(np.isfinite(losses).all()), last_loss=losses[-1])


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
    parser.add_argument('--out', help='also write the results as JSON here')
    args = parser.parse_args()

    device = torch.cuda.get_device_name() if args.device.startswith('cuda') else platform.processor()
    import mmdet
    import mmengine
    import mmseg
    print('command: python ' + ' '.join(sys.argv))
    print(f'device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}); '
          f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')
    print(f'batch {args.batch}, {args.warmup} warm-up + {args.iters} timed iterations (median), '
          f'amp={args.amp}, detection sizes {det_sizes(args.det_size)}')
    rows = []
    print('| config | params (M) | s/iter | img/s | peak GiB | peak reserved GiB | losses finite |'
          '\n|---|---|---|---|---|---|---|')
    for name in args.configs:
        r = benchmark(name, args)
        rows.append(r)
        print(f"| {r['config']} | {r['params_m']:.1f} | {r['s_iter']:.3f} | {r['img_s']:.1f} | "
              f"{r['peak_gib']:.2f} | {r['reserved_gib']:.2f} | {r['finite']} |", flush=True)
        if args.device.startswith('cuda'):
            torch.cuda.empty_cache()
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=sys.argv, device=device, torch=torch.__version__, rows=rows), f,
                      indent=1)


if __name__ == '__main__':
    main()
