#!/usr/bin/env python
"""How each backbone's cost grows with the sequence: forward + backward time and peak memory
over input sizes, and the exponent b of a fit ``time ~ L^b``.

L is the token count a stride-16 model sees at that input, ``(H / 16) * (W / 16)``, the
paper's measure (tools/analysis/sequence_length.py); every backbone is timed on the same
inputs, so the exponents compare how each one scales: 1 for a cost linear in the tokens,
2 for attention's quadratic term once it dominates. Swin-T (mmdet's ``SwinTransformer``)
attends within 7x7 windows, so it is linear too. Models are built once each, in training
mode, drop path 0, batch 8 (so that the GPU, not the host's launches, sets the time), AMP
(bf16) on CUDA; sizes are timed in turn, warm-up first.
The fit uses the sizes from the middle of the range up (small sizes are launch-bound).

    python tools/analysis/benchmark_scaling.py --sizes 224 384 512 768 1024 1280 1536 \
        --csv scaling.csv --plot docs/scaling.png

Models: mambaout_t (our MambaOut-T, eager fused mixer), mambaout_t_hybrid (stages 0-2
bidirectional SSM, the Mask R-CNN hybrid config's backbone), mambaout_t_allssm, vim_t,
vim_s, swin_t. ``--models`` picks some.
"""
import argparse
import math
import platform
import shlex
import statistics
import sys
import time
import os.path as osp

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

MODELS = {
    'mambaout_t': dict(type='MambaOut', arch='tiny'),
    'mambaout_t_hybrid': dict(type='MambaOut', arch='tiny',
                              token_mixers=('bi_ssm', 'bi_ssm', 'bi_ssm', 'gated_cnn')),
    'mambaout_t_allssm': dict(type='MambaOut', arch='tiny', token_mixers=('bi_ssm', ) * 4),
    'vim_t': dict(type='Vim', arch='tiny', out_indices=(5, 11, 17, 23)),
    'vim_s': dict(type='Vim', arch='small', out_indices=(5, 11, 17, 23)),
    'swin_t': dict(type='SwinTransformer', embed_dims=96, depths=(2, 2, 6, 2),
                   num_heads=(3, 6, 12, 24), window_size=7, out_indices=(0, 1, 2, 3)),
}


def tokens(size: int) -> int:
    return (size // 16) ** 2


def build(name, device):
    import mmmambaout  # noqa: F401  (registers MambaOut / Vim)
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    import mmdet.models  # noqa: F401
    model = DET_MODELS.build(dict(MODELS[name])).to(device)
    model.train()  # (mmdet's SwinTransformer.train returns None)
    return model


def fit_exponent(points):
    """Least-squares slope of log(time) against log(L)."""
    xs = [math.log(L) for L, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys))
            / sum((x - mx) ** 2 for x in xs))


def measure(model, size, device, dtype, iters, warmup, batch=1):
    x = torch.randn(batch, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)

    def step():
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            loss = sum(o.float().mean() for o in model(x))
        loss.backward()

    for _ in range(warmup):
        step()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else float('nan')
    model.zero_grad(set_to_none=True)
    return statistics.median(times), peak


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--sizes', type=int, nargs='+', default=[224, 384, 512, 768, 1024, 1280, 1536])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--batch', type=int, default=8,
                   help='images per step: enough that the GPU, not the host, sets the time')
    p.add_argument('--iters', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--csv', help='write the measurements here')
    p.add_argument('--plot', help='write a log-log plot (PNG) here')
    args = p.parse_args(argv)
    dtype = torch.bfloat16 if args.device == 'cuda' else None
    card = torch.cuda.get_device_name() if args.device == 'cuda' else platform.processor() or 'cpu'
    print('command: python ' + ' '.join(shlex.quote(a) for a in sys.argv))
    print(f'device: {card}; torch {torch.__version__}, CUDA {torch.version.cuda}; '
          f'{"bf16 autocast" if dtype else "fp32"}, batch {args.batch}, forward + backward, median of '
          f'{args.iters} after {args.warmup} warm-up')
    rows = []
    for name in args.models:
        model = build(name, args.device)
        for size in args.sizes:
            try:
                t, peak = measure(model, size, args.device, dtype, args.iters, args.warmup,
                                  args.batch)
            except torch.cuda.OutOfMemoryError:
                t, peak = float('nan'), float('nan')
                torch.cuda.empty_cache()
            rows.append((name, size, tokens(size), t, peak))
            print(f'{name:18s} {size:5d}x{size:<5d} L={tokens(size):6d} '
                  f'{t * 1e3:9.2f} ms  {peak:7.2f} GiB', flush=True)
        del model
        if args.device == 'cuda':
            torch.cuda.empty_cache()
    fit_from = args.sizes[len(args.sizes) // 2 - 1] if len(args.sizes) > 3 else args.sizes[0]
    print(f'\n| model | ' + ' | '.join(f'{s}² (L {tokens(s)})' for s in args.sizes)
          + f' | exponent b (time ~ L^b, sizes >= {fit_from}) |')
    print('|---|' + '---|' * (len(args.sizes) + 1))
    exponents = {}
    for name in args.models:
        mine = [r for r in rows if r[0] == name]
        points = [(L, t) for _, s, L, t, _ in mine if s >= fit_from and t == t]
        exponents[name] = fit_exponent(points) if len(points) >= 2 else float('nan')
        cells = [f'{t * 1e3:.1f} ms, {m:.2f} GiB' for *_, t, m in mine]
        print(f'| {name} | ' + ' | '.join(cells) + f' | {exponents[name]:.2f} |')
    if args.csv:
        with open(args.csv, 'w') as f:
            f.write('model,size,tokens,seconds,peak_gib\n')
            f.writelines(f'{n},{s},{L},{t:.6f},{m:.4f}\n' for n, s, L, t, m in rows)
    if args.plot:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for name in args.models:
            pts = [(L, t * 1e3) for n, _, L, t, _ in rows if n == name and t == t]
            ax.loglog(*zip(*pts), marker='o', label=f'{name} (b={exponents[name]:.2f})')
        ax.set_xlabel('tokens L = (H/16)(W/16)')
        ax.set_ylabel('forward + backward, ms')
        ax.set_title(f'{card}, bf16, batch {args.batch}', fontsize=9)
        ax.grid(True, which='both', alpha=.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    return rows, exponents


if __name__ == '__main__':
    main()
