#!/usr/bin/env python
"""Time our MambaOut backbone against timm's (same arch, same weights, same input).

Forward + backward of the last-stage features (timm ``forward_features``; ours with
``out_indices=(3, )``, ``norm_out=False``), both in training mode with drop path 0.
Runs alternate between the two models so that a shared machine's load hits both alike;
medians are reported. Examples::

    python tools/analysis/benchmark_backbone.py --arch tiny --size 320 320 --batch 2 --iters 10
    python tools/analysis/benchmark_backbone.py --arch tiny --size 800 1280 --batch 2 \
        --device cuda --dtype bf16 --iters 50 [--cuda-graph]

``--cuda-graph`` times CUDA-graph replays of each model's forward+backward: the GPU time
alone. Eager timings on a GPU this fast are partly host-bound (Python and kernel-launch
overhead of ~20 small ops per block), so they also measure the host CPU.

``--compile`` compiles the blocks of each stage of both models as one function per stage
(ours: ``MambaOut(compile_stages=True)``; timm's stages through the same
``compiled_blocks_runner``) and adds timm eager as a baseline row. The warm-up steps
include the compilation.
"""
import argparse
import copy
import functools
import platform
import shlex
import statistics
import sys
import time

import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='MambaOut backbone: ours vs timm, fwd+bwd')
    p.add_argument('--arch', default='tiny', choices=['femto', 'kobe', 'tiny', 'small', 'base'])
    p.add_argument('--size', type=int, nargs=2, default=(320, 320), metavar=('H', 'W'))
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16', 'fp16'],
                   help='bf16/fp16: autocast (AMP), weights stay fp32')
    p.add_argument('--compile', nargs='?', const='default', default=None,
                   choices=['default', 'reduce-overhead', 'max-autotune-no-cudagraphs'],
                   metavar='MODE',
                   help="torch.compile each stage's blocks of both models (ours: "
                        'compile_stages=MODE, default mode if none given; '
                        "'reduce-overhead' also replays them as CUDA graphs); adds a timm "
                        'eager row')
    p.add_argument('--fused-mixer', action=argparse.BooleanOptionalAction, default=True,
                   help="our blocks' fused token mixer (MambaOut fused_mixer; CUDA only)")
    p.add_argument('--cuda-graph', action='store_true',
                   help='capture each forward+backward in a CUDA graph and time its replays: '
                        'GPU time without the host (Python, launch) overhead of either model')
    p.add_argument('--iters', type=int, default=10, help='timed iterations per model')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    p.add_argument('--cudnn-benchmark', action='store_true',
                   help='torch.backends.cudnn.benchmark = True (both models)')
    return p.parse_args(argv)


def build_models(arch, device, fused_mixer=True, compile_stages=None):
    import timm

    from mmmambaout.checkpoint import checkpoint_filter_fn
    from mmmambaout.models.backbones.mambaout import MambaOut
    ref = timm.create_model(f'mambaout_{arch}', num_classes=0)
    ours = MambaOut(arch, out_indices=(3, ), norm_out=False, fused_mixer=fused_mixer,
                    compile_stages=compile_stages or False)
    ours.init_weights()
    state = {k: v for k, v in checkpoint_filter_fn(ref.state_dict()).items()
             if not k.startswith('head.')}
    ours.load_state_dict(state)
    return ours.to(device).train(), ref.to(device).train()


def compile_timm_stages(model, mode='default'):
    """timm's stages run ``self.blocks(x)``: that call goes through one compiled
    function per stage, as ours do with ``compile_stages=True``."""
    from mmmambaout.models.layers import compiled_blocks_runner
    for i, stage in enumerate(model.stages):
        stage.blocks.forward = functools.partial(compiled_blocks_runner(f'timm_stage{i}', mode),
                                                 stage.blocks)
    return model


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    amp_dtype = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[args.dtype]

    import mmengine
    import timm
    print('command:', shlex.join([sys.executable] + sys.argv))
    name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or
                                                            platform.machine())
    print(f'device: {device} ({name}), torch {torch.__version__}, timm {timm.__version__}, '
          f'mmengine {mmengine.__version__}, python {platform.python_version()}, '
          f'threads {torch.get_num_threads()}')
    if cuda:
        print(f'cuda {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}')

    torch.manual_seed(0)
    ours, ref = build_models(args.arch, device, args.fused_mixer, args.compile)
    # label -> (model, is ours); with --compile, the compiled timm is a copy, the original
    # stays eager
    models = {'ours': (ours, True)}
    if args.compile:
        models['timm'] = (compile_timm_stages(copy.deepcopy(ref), args.compile), False)
        models['timm eager'] = (ref, False)
    else:
        models['timm'] = (ref, False)
    x = torch.randn(args.batch, 3, *args.size, device=device)

    def step(model, is_ours):
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            y = model(x)[-1] if is_ours else model.forward_features(x)
        y.float().mean().backward()
        return y

    # same math check before timing (fp32 reference tolerance, looser under AMP); with
    # grad on, so that compiled stages build the graphs the timed steps use, and no others
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        feats = ours(x)[-1].detach().float()
        for label, (model, _) in models.items():
            if label != 'ours':
                diff = feats - model.forward_features(x).detach().permute(0, 3, 1, 2).float()
                print(f'max |ours - {label}| on the features: {diff.abs().max().item():.3g}')

    run = {label: functools.partial(step, *m) for label, m in models.items()}
    if args.cuda_graph:
        if not cuda:
            raise SystemExit('--cuda-graph needs a CUDA device')
        for label in models:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up outside the capture (cuDNN, Triton)
                for _ in range(3):
                    run[label]()
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run[label]()
            run[label] = graph.replay

    def timed(label):
        if cuda:
            torch.cuda.synchronize(device)
        t, c = time.perf_counter(), time.process_time()
        run[label]()
        if cuda:
            torch.cuda.synchronize(device)
        cpu_times[label].append((time.process_time() - c) * 1000)
        return (time.perf_counter() - t) * 1000

    cpu_times = {label: [] for label in models}

    for _ in range(args.warmup):
        for label in models:
            timed(label)
    times = {label: [] for label in models}
    cpu_times = {label: [] for label in models}  # process CPU time: steadier than wall
    labels = list(models)
    for it in range(args.iters):
        for label in (labels if it % 2 == 0 else labels[::-1]):  # no order bias
            times[label].append(timed(label))
    cpu_med = {k: statistics.median(v) for k, v in cpu_times.items()}
    peak = {}
    for label in models:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            timed(label)
            peak[label] = torch.cuda.max_memory_allocated(device) / 2**20
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'arch {args.arch}, input {args.batch}x3x{args.size[0]}x{args.size[1]}, '
          f'dtype {args.dtype}, fused mixer {args.fused_mixer}, compile {args.compile}, '
          f'cuda graph {args.cuda_graph}, iters {args.iters} '
          f'(warmup {args.warmup}), cudnn.benchmark {args.cudnn_benchmark}, forward+backward, '
          'median ms:')
    width = max(map(len, models))
    for label in models:
        mem = (f'{peak[label]:.0f} MiB peak' if cuda else
               f'process CPU time {cpu_med[label]:.0f} ms; peak memory n/a on CPU')
        print(f'  {label:{width}s} {med[label]:9.2f} ms  (min {min(times[label]):.2f}, '
              f'max {max(times[label]):.2f})  {mem}')
    for label in labels[1:]:
        print(f'speed-up ({label} / ours): {med[label] / med["ours"]:.3f}x')
        if not cuda:
            print(f'speed-up by process CPU time ({label} / ours): '
                  f'{cpu_med[label] / cpu_med["ours"]:.3f}x')
    return med['ours'], med['timm']


if __name__ == '__main__':
    main()
