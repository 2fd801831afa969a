"""How long a user waits for the training speed: run ``tools/train.py`` and time every
iteration from the launch of the command.

    python tools/analysis/time_to_speed.py configs/mask_rcnn_mambaout_t_1x_coco.py \\
        --work-dir work_dirs/speed -- --cfg-options train_dataloader.dataset.data_root=...

With ``--gpus N`` (N > 1) it runs ``tools/dist_train.sh CONFIG N`` instead (one process
per GPU, DDP; rank 0 logs); the table's s/iter is then per GPU, each GPU taking the
config's batch, and img/s counts all GPUs.

Everything after ``--`` goes to ``tools/train.py``; the script adds a log line per
iteration (``default_hooks.logger.interval=1``, ``log_processor.window_size=1``). It then
reads the run's log: mmengine's ``time`` of each iteration (from the end of the previous
one, data loading included) and the wall-clock time of the first iteration's log line,
whole seconds. The time since launch of iteration ``k`` is that of iteration 1 plus the
``time`` of iterations 2..k (so within a second). Steady speed is the median ``time`` of
the last ``--tail`` iterations; the run is *steady from* the first iteration after which
the median of every window of 10 iterations stays within ``--tolerance`` of it; the
mean time per iteration from there on shows the spikes that the medians pass over.

Prints the command, the device and versions, and a table; ``--out`` also writes every
iteration's time as JSON. Run it twice to see a cold start against a warm compile cache
(``$TORCHINDUCTOR_CACHE_DIR``; delete it, or point it at an empty folder, for a cold one).
"""
import argparse
import datetime
import glob
import json
import os
import os.path as osp
import re
import signal
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
LOG_TIME = re.compile(r'^(\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}) - mmengine - INFO - (?:Epoch|Iter)\(train\)')
VAL_LINE = re.compile(r'(?:Epoch|Iter)\(val\)\s*(?:\[\d+\])?\[\s*(\d+)/(\d+)\]\s+eta:.*?\btime: ([\d.]+)')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--work-dir', required=True)
    p.add_argument('--tail', type=int, default=20,
                   help='iterations at the end whose median is the steady time')
    p.add_argument('--tolerance', type=float, default=1.25,
                   help='steady once every 10-iteration median stays within this factor')
    p.add_argument('--gpus', type=int, default=1,
                   help='more than 1: train with tools/dist_train.sh on this many GPUs')
    p.add_argument('--out', help='also write the per-iteration times as JSON here')
    p.add_argument('--timeout', type=float, default=None,
                   help='stop training (Ctrl-C, as a user would) after this many seconds '
                        'and report the iterations that ran')
    p.epilog = 'after --: arguments for tools/train.py'
    return parse_with_train_args(p, argv)


def parse_with_train_args(parser, argv=None):
    """``parser``'s arguments before ``--``; what follows it (arguments for
    ``tools/train.py``) as ``args.train_args``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cut = argv.index('--') if '--' in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.train_args = argv[cut + 1:]
    return args


def with_iteration_logs(train_args):
    """``train_args`` with one log line per unsmoothed iteration time added to (or as)
    its ``--cfg-options``."""
    extra = ['default_hooks.logger.interval=1', 'log_processor.window_size=1']
    args = list(train_args)
    if '--cfg-options' in args:
        i = args.index('--cfg-options') + 1
        return args[:i] + extra + args[i:]
    return args + ['--cfg-options'] + extra


def images_per_iteration(config, train_args):
    """Images per GPU and iteration: the config's train batch size, or the
    ``train_dataloader.batch_size=`` given after ``--``."""
    for arg in train_args:
        if arg.startswith('train_dataloader.batch_size='):
            return int(arg.split('=', 1)[1])
    from mmengine.config import Config
    return Config.fromfile(config).train_dataloader.batch_size


def iteration_times(work_dir):
    """``(first_line_epoch_s, [time of each iteration], [val time per batch])`` from the
    newest run under ``work_dir``."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise SystemExit(f'no scalars.json under {work_dir}/*/vis_data: did the run start?')
    times = []
    with open(runs[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if 'time' in rec and 'loss' in rec:
                times.append(rec['time'])
    log = glob.glob(osp.join(osp.dirname(osp.dirname(runs[-1])), '*.log'))
    first, val = None, []
    with open(log[0]) as f:
        for line in f:
            m = LOG_TIME.match(line)
            if m and first is None:
                first = datetime.datetime.strptime(m.group(1), '%Y/%m/%d %H:%M:%S').timestamp()
            v = VAL_LINE.search(line)
            if v:
                val.append(float(v.group(3)))
    return first, times, val


def steady_from(times, steady, tolerance, window=10):
    """First iteration (1-based) after which every window's median is within
    ``tolerance`` of ``steady``; None with fewer than ``window`` iterations."""
    if len(times) < window:
        return None
    start = len(times)
    for k in range(len(times) - window, -1, -1):
        if statistics.median(times[k:k + window]) > tolerance * steady:
            break
        start = k
    return start + 1


def main(argv=None):
    args = parse_args(argv)

    import torch
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'
    if args.gpus > 1:
        cmd = ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), args.config, str(args.gpus)]
    else:
        cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), args.config]
    cmd += ['--work-dir', args.work_dir] + with_iteration_logs(args.train_args)
    batch = images_per_iteration(args.config, args.train_args)
    print('command: python ' + ' '.join(sys.argv))
    print(f'device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}); '
          f'TORCHINDUCTOR_CACHE_DIR={os.environ.get("TORCHINDUCTOR_CACHE_DIR", "(default)")}')
    launch = time.time()
    # training in a process group of its own, so that --timeout's Ctrl-C reaches every rank;
    # the user's Ctrl-C reaches this script, which passes it on; dist_train.sh's `python`
    # is this interpreter
    env = dict(os.environ, PATH=os.pathsep.join([osp.dirname(sys.executable),
                                                 os.environ.get('PATH', '')]))
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)
    try:
        rc = proc.wait(timeout=args.timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as stop:
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait()
        print(f'stopped after {args.timeout:.0f} s (--timeout)'
              if isinstance(stop, subprocess.TimeoutExpired) else 'stopped (Ctrl-C)')
    total = time.time() - launch
    if rc and rc != 130:
        raise SystemExit(f'tools/train.py exited with {rc}')
    first, times, val = iteration_times(args.work_dir)
    elapsed = [first - launch]
    for t in times[1:]:
        elapsed.append(elapsed[-1] + t)
    steady = statistics.median(times[-args.tail:])
    k = steady_from(times, steady, args.tolerance)
    # the median hides the spikes that remain after the steady point: the mean shows them
    after = times[k - 1:] if k else []
    mean_after = f'{statistics.mean(after):.3f}' if after else '-'
    print(f'| GPUs | iterations | launch -> iter 1 s | -> iter 10 s | -> iter 40 s | -> last s | '
          f'steady s/iter (median of last {args.tail}) | img/s (all GPUs) | steady from iter | '
          f'at s | mean s/iter from there | command total s |')
    print('|---' * 12 + '|')
    at = lambda i: f'{elapsed[i - 1]:.0f}' if i and i <= len(elapsed) else '-'  # noqa: E731
    print(f'| {args.gpus} | {len(times)} | {at(1)} | {at(10)} | {at(40)} | {elapsed[-1]:.0f} | '
          f'{steady:.3f} | {args.gpus * batch / steady:.1f} | {k or "-"} | {at(k)} | '
          f'{mean_after} | {total:.0f} |')
    print('per-iteration s: ' + ' '.join(f'{t:.2f}' for t in times))
    if val:
        print(f'validation: {len(val)} iterations, median {statistics.median(val):.3f} s, '
              f'mean {statistics.mean(val):.3f} s, total {sum(val):.1f} s (first {val[0]:.3f})')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=sys.argv, device=device, torch=torch.__version__,
                           gpus=args.gpus, images_per_gpu=batch,
                           launch_to_iter=elapsed, iter_s=times, val_s=val,
                           steady_s=steady, steady_from=k, total_s=total), f, indent=1)


if __name__ == '__main__':
    main()
