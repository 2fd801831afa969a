#!/usr/bin/env python
"""Depthwise 7x7 conv (MambaOut's token-mixer conv) per memory layout: the cost of the
first call at a new input shape, and the steady time, forward + backward.

cuDNN builds an execution plan for each new shape of a channels-last depthwise conv;
with detection's varied input sizes that cost recurs for every new size. The layouts:
``cl`` (channels-last, cuDNN), ``nchw`` (contiguous; PyTorch's depthwise kernels) and
``cl_nocudnn`` (channels-last with cuDNN switched off). Shapes: MambaOut-T's four stage
widths at a 1344x800 detection input (stride 4, 8, 16, 32), batch 2; three new sizes per
width (8 px smaller each), then 20 steady calls at the last, after one untimed call at an
unrelated shape. Prints the command, device and versions; the first-call figure is the
mean over the three new sizes. Example::

    python tools/analysis/benchmark_dwconv.py --device cuda
"""
import argparse
import platform
import sys
import time

import torch

WIDTHS = (96, 192, 384, 576)
LAYOUTS = ('cl', 'nchw', 'cl_nocudnn')


def timed(fn, device, n=1):
    sync = torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t0) / n


def measure(layout, dtype, device, size, widths=WIDTHS, steady_iters=20):
    """``[(width, first-call s, steady s)]`` for forward + backward of each width."""
    # one untimed call at a shape used nowhere else, so that the process's own start-up
    # (CUDA context, cuDNN handle, kernel loading) does not land in the first cell
    warm = torch.nn.Conv2d(8, 8, 7, padding=3, groups=8).to(device, dtype)
    x = torch.randn(1, 8, 13, 17, device=device, dtype=dtype, requires_grad=True)
    with torch.backends.cudnn.flags(enabled=layout != 'cl_nocudnn'):
        warm(x.contiguous(memory_format=torch.channels_last) if layout != 'nchw'
             else x).sum().backward()
    rows = []
    for i, c in enumerate(widths):
        conv = torch.nn.Conv2d(c, c, 7, padding=3, groups=c).to(device, dtype)
        if layout == 'cl_nocudnn':   # (with cuDNN the input's layout decides)
            conv = conv.to(memory_format=torch.channels_last)
        firsts = []
        for k in range(3):   # three shapes this conv has not seen
            h, w = (size[0] - 8 * k) >> i, (size[1] - 8 * k) >> i
            x = torch.randn(2, c, h, w, device=device, dtype=dtype)
            if layout != 'nchw':
                x = x.contiguous(memory_format=torch.channels_last)
            x.requires_grad_()
            with torch.backends.cudnn.flags(enabled=layout != 'cl_nocudnn'):
                def step():
                    conv(x).backward(torch.ones_like(x))
                firsts.append(timed(step, device))
                steady = timed(step, device, steady_iters)
        rows.append((c, sum(firsts) / len(firsts), steady))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--size', type=int, nargs=2, default=(200, 336), metavar=('H', 'W'),
                   help='the widest stage\'s map (stride 4 of 800x1344)')
    p.add_argument('--dtypes', nargs='+', default=['fp16', 'fp32'], choices=['fp16', 'bf16', 'fp32'])
    p.add_argument('--steady-iters', type=int, default=20)
    args = p.parse_args(argv)
    dtypes = dict(fp16=torch.float16, bf16=torch.bfloat16, fp32=torch.float32)
    cuda = args.device.startswith('cuda')
    device = torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine()
    print('command: python ' + ' '.join(sys.argv))
    print(f'device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}, cuDNN '
          f'{torch.backends.cudnn.version() if cuda else "-"})')
    print('| dtype | layout | ' + ' | '.join(f'C {c}: first / steady ms' for c in WIDTHS) + ' |')
    print('|---' * (2 + len(WIDTHS)) + '|')
    for name in args.dtypes:
        for layout in LAYOUTS:
            rows = measure(layout, dtypes[name], args.device, args.size,
                           steady_iters=args.steady_iters)
            cells = ' | '.join(f'{1e3 * a:.0f} / {1e3 * b:.3f}' for _, a, b in rows)
            print(f'| {name} | {layout} | {cells} |', flush=True)


if __name__ == '__main__':
    main()
