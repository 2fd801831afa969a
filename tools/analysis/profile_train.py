"""Profile the training step of a config: where the time goes, on the host and the GPU.

Runs warm-up iterations, then ``--iters`` iterations under ``torch.profiler`` (CPU + CUDA
activity) and one more iteration with CUDA sync debugging on, and prints per iteration:
wall time, GPU busy time (kernels and copies), kernel launches, host-device
synchronisations, host-to-device copies (count, time), host and GPU time per phase of the
step (data preprocessor, backbone + neck, RPN, RoI head / decode heads, backward,
optimizer step), the top operators by GPU time and by host time, and the Python lines
that caused synchronisations. ``--device cpu`` gives the host-side part only.
``--count-ops`` adds, for one more iteration, the number of aten operators each phase
dispatches and how many of them read data back to the host (``nonzero``, ``item``, ...:
each a synchronisation on CUDA): a measure of host work that needs no GPU (the operators
differ somewhat between devices: CUDA-only fused paths, CPU-only optimizer details).

Same step as ``benchmark_train.py`` (synthetic batch, same options). Example::

    python tools/analysis/profile_train.py configs/mask_rcnn_mambaout_t_1x_coco.py --amp \
        --trace /tmp/trace.json
"""
import argparse
import collections
import os.path as osp
import sys
import time
import traceback
import warnings

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmmambaout  # noqa: E402,F401
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from mmmambaout.utils.train_step import build_train_step, parse_cfg_options  # noqa: E402

SYNC_CALLS = ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaEventSynchronize')
LAUNCH_CALLS = ('cudaLaunchKernel', 'cuLaunchKernel', 'cudaLaunchKernelExC', 'cuLaunchKernelEx')


def sync_sources(step):
    """Run ``step`` once with CUDA sync debug warnings; count them by first non-torch frame."""
    counts = collections.Counter()
    torch_dir = osp.dirname(torch.__file__)

    def hook(message, category, filename, lineno, file=None, line=None):
        if 'synchronizing' not in str(message):
            return
        for frame in reversed(traceback.extract_stack()[:-1]):
            if not frame.filename.startswith(torch_dir) and 'warnings' not in frame.filename:
                counts[f'{frame.filename}:{frame.lineno} ({frame.name})'] += 1
                return
        counts[f'{filename}:{lineno}'] += 1

    old = warnings.showwarning
    warnings.showwarning = hook
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('always')
            warnings.showwarning = hook
            step()
    finally:
        torch.cuda.set_sync_debug_mode('default')
        warnings.showwarning = old
    return counts


# (attribute path, phase name): the parts of a detector / segmentor training step
PHASES = (
    ('data_preprocessor.forward', 'data preprocessor'),
    ('extract_feat', 'backbone + neck forward'),
    ('rpn_head.loss_and_predict', 'RPN targets, loss, proposals'),
    ('roi_head.loss', 'RoI head targets and loss'),
    ('decode_head.loss', 'decode head loss'),
    ('auxiliary_head.loss', 'auxiliary head loss'),
)
OPTIM_PHASES = (('backward', 'backward (all)'), ('step', 'optimizer step'))
PHASE_ORDER = [label for _, label in PHASES + OPTIM_PHASES]   # the step's order, for tables


_ACTIVE_PHASES = []   # labels of the phases being run, innermost last


def _wrap(obj, attr, label):
    fn = getattr(obj, attr)

    def wrapped(*args, **kwargs):
        _ACTIVE_PHASES.append(label)
        try:
            with record_function(f'phase: {label}'):
                return fn(*args, **kwargs)
        finally:
            _ACTIVE_PHASES.pop()

    setattr(obj, attr, wrapped)


# operators whose output size or value the host must read from the device
READBACK_OPS = ('aten.nonzero', 'aten.masked_select', 'aten.unique', 'aten._unique',
                'aten._local_scalar_dense', 'aten.equal', 'aten.is_nonzero')


def count_ops(step):
    """Run ``step`` once; aten operators (and read-backs) dispatched per phase."""
    from torch.utils._python_dispatch import TorchDispatchMode
    ops, readbacks = collections.Counter(), collections.Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            phase = _ACTIVE_PHASES[-1] if _ACTIVE_PHASES else 'other'
            ops[phase] += 1
            if str(func).startswith(READBACK_OPS):
                readbacks[phase] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        step()
    return ops, readbacks


def mark_phases(model, optim_wrapper):
    """Wrap the step's parts (those the model has) in named profiler ranges."""
    for path, label in PHASES:
        *parents, attr = path.split('.')
        obj = model
        for part in parents:
            obj = getattr(obj, part, None)
        if obj is not None and hasattr(obj, attr):
            _wrap(obj, attr, label)
    for attr, label in OPTIM_PHASES:
        _wrap(optim_wrapper, attr, label)


def phase_table(table, n):
    # on CUDA a record_function range is also reported as a GPU annotation of the same
    # name (no host time, its span as "device time"): keep the host-side event only
    rows = [e for e in table if e.key.startswith('phase: ')
            and 'CPU' in str(getattr(e, 'device_type', 'CPU'))]
    rows.sort(key=lambda e: PHASE_ORDER.index(e.key[len('phase: '):]))
    lines = ['| phase | host ms | GPU ms (kernels it launched) |', '|---|---|---|']
    for e in rows:
        lines.append(f'| {e.key[len("phase: "):]} | {e.cpu_time_total / n / 1e3:.1f} | '
                     f'{e.device_time_total / n / 1e3:.1f} |')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument('--det-size', type=int, nargs=2, default=(1333, 800))
    parser.add_argument('--seg-size', type=int, nargs=2, default=(512, 512))
    parser.add_argument('--objects', type=int, default=8)
    parser.add_argument('--top', type=int, default=25)
    parser.add_argument('--cfg-options', nargs='+', default=[])
    parser.add_argument('--trace', help='write a Chrome trace here')
    parser.add_argument('--count-ops', action='store_true',
                        help='also count the aten operators of each phase (one more step)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='cpu: host-side profile only (no GPU time, no sync count)')
    args = parser.parse_args()
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        parser.error('no CUDA device: use --device cpu for a host-side profile')

    _, model, optim_wrapper, data = build_train_step(
        args.config, args.device, args.amp, args.batch, args.det_size, args.seg_size, args.objects,
        parse_cfg_options(args.cfg_options))

    mark_phases(model, optim_wrapper)

    def step():
        return model.train_step(data, optim_wrapper)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    print('command: python ' + ' '.join(sys.argv))
    name = torch.cuda.get_device_name() if cuda else 'cpu'
    print(f'device: {name}; torch {torch.__version__}')
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(args.iters):
            step()
        sync()
        wall = (time.perf_counter() - t0) / args.iters
    if args.trace:
        prof.export_chrome_trace(args.trace)

    n = args.iters
    table = prof.key_averages()
    launches = syncs = h2d = 0
    h2d_us = 0.
    spans = []
    for e in prof.events():
        if getattr(e, 'device_type', None) == torch.autograd.DeviceType.CUDA:
            # user annotations (e.g. 'Optimizer.step#AdamW.step') span idle gaps too
            if getattr(e, 'is_user_annotation', False) or e.name.startswith('Optimizer.'):
                continue
            spans.append((e.time_range.start, e.time_range.end))
            if 'Memcpy HtoD' in e.name:
                h2d += 1
                h2d_us += e.device_time
        elif e.name in LAUNCH_CALLS:
            launches += 1
        elif e.name in SYNC_CALLS:
            syncs += 1
    gpu_us = 0.   # union of kernel / copy intervals: time the GPU had work
    end = float('-inf')
    for a, b in sorted(spans):
        if b > end:
            gpu_us += b - max(a, end)
            end = b
    gpu_line = (f', GPU busy {gpu_us / n / 1e3:.1f} ms '
                f'({gpu_us / n / 1e3 / (wall * 1e3) * 100:.0f}%), {launches / n:.0f} kernel '
                f'launches, {syncs / n:.0f} synchronisations, {h2d / n:.0f} host-to-device '
                f'copies ({h2d_us / n / 1e3:.2f} ms)' if cuda else '')
    print(f'\nper iteration (mean of {n}, profiler on): wall {wall * 1e3:.1f} ms{gpu_line}')

    print('\nthe step by phase, per iteration (profiler on; host ms include the time the '
          'host waited in synchronisations):')
    print(phase_table(table, n))

    if cuda:
        print(f'\ntop {args.top} operators by GPU (self) time, totals over {n} iterations '
          '(user-annotation rows such as Optimizer.step include idle time):')
        print(table.table(sort_by='self_device_time_total', row_limit=args.top,
                          max_name_column_width=60))
    print(f'\ntop {args.top} operators by host (self) time, totals over {n} iterations:')
    print(table.table(sort_by='self_cpu_time_total', row_limit=args.top, max_name_column_width=60))

    if args.count_ops:
        ops, readbacks = count_ops(step)
        order = PHASE_ORDER + ['other']
        print('\naten operators dispatched in one iteration, by phase (read-backs: nonzero, '
              'item, ...; each a synchronisation on CUDA):')
        print('| phase | aten ops | read-backs |\n|---|---|---|')
        for label in sorted(ops, key=order.index):
            print(f'| {label} | {ops[label]} | {readbacks[label]} |')
        print(f'| total | {sum(ops.values())} | {sum(readbacks.values())} |')

    if not cuda:
        return
    counts = sync_sources(step)
    print(f'\nsynchronising calls in one iteration: {sum(counts.values())}, by source line:')
    for where, c in counts.most_common(40):
        print(f'{c:5d}  {where}')


if __name__ == '__main__':
    main()
