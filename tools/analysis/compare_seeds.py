#!/usr/bin/env python
"""Do two training setups learn alike? Train each config with several seeds, side by side,
and compare the validation metrics per epoch: mean, spread and every seed's value.

    python tools/analysis/compare_seeds.py configs/mask_rcnn_mambaout_t_1x_coco.py \\
        configs/stock/mask_rcnn_mambaout_t_1x_coco.py --seeds 0 1 2 --parallel 6 \\
        --work-dir work_dirs/seeds -- --cfg-options train_cfg.max_epochs=3 ...

Each config may carry its own overrides after ``#`` (``CONFIG#key=value,key=value``;
values may hold commas), e.g. ``configs/x.py#model.backbone.drop_path_rate=0.``; upstream
configs are named ``mmdet::path`` or ``mmseg::path``. Everything after ``--`` goes to every
run of ``tools/train.py`` (its ``--cfg-options`` come first, then ``randomness.seed`` and
the config's own overrides). ``--parallel`` runs share the machine (one GPU holds several).

The metrics are the validation results that training logs (set ``train_cfg.val_interval``
for how often), read from each run's ``vis_data/scalars.json``; ``--metrics`` picks them
(default: bbox and segm mAP for detectors, mIoU for segmentors, accuracy/top1 for
classifiers). The tables give, per config and validation epoch (or iteration), the mean
and the sample standard deviation over seeds and each seed's value, and per metric the
last validation's difference of each config's mean from the first config's, beside the
spread (largest minus smallest seed) of the two: "within the spread" when the difference
is no larger than the larger spread. The comparison uses, per metric, the last validation
that every run of both configs logged.

``--time-limit S`` stops the runs still going S seconds after the start (Ctrl-C to each
``tools/train.py``, which ends at the current iteration) and compares what they logged by
then; runs not yet started are left out.
"""
import argparse
import collections
import glob
import json
import os
import os.path as osp
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path[:0] = [ROOT, osp.dirname(osp.abspath(__file__))]
from time_to_speed import parse_with_train_args  # noqa: E402

DEFAULT_METRICS = ('coco/bbox_mAP', 'coco/segm_mAP', 'mIoU', 'accuracy/top1')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('configs', nargs='+', help='CONFIG or CONFIG#key=value,key=value')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--parallel', type=int, default=2, help='runs at a time')
    p.add_argument('--work-dir', required=True, help='one folder per run below it')
    p.add_argument('--time-limit', type=float, default=None, metavar='S',
                   help='stop the runs still going after S seconds and compare what they '
                        'logged by then')
    p.add_argument('--metrics', nargs='+', default=None,
                   help=f'validation metrics to compare (default: those of {DEFAULT_METRICS} '
                        'that the runs log)')
    p.epilog = 'after --: arguments for every tools/train.py run'
    args = parse_with_train_args(p, argv)
    if args.parallel < 1:
        p.error(f'--parallel must be at least 1, got {args.parallel}')
    if args.time_limit is not None and args.time_limit <= 0:
        p.error(f'--time-limit must be positive, got {args.time_limit}')
    return args


def split_config(spec):
    """``'cfg.py#a=1,b=(1,2)'`` -> ``('cfg.py', ['a=1', 'b=(1,2)'])``: a comma starts a new
    override only where a ``key=`` follows."""
    path, _, overrides = spec.partition('#')
    return path, [o for o in re.split(r',(?=[\w.]+=)', overrides) if o] if overrides else []


def resolve(path):
    """A config's absolute path (the runs start in the repository root; ``mmdet::`` /
    ``mmseg::`` names: the installed package's)."""
    from mmmambaout.utils.train_step import config_path
    try:
        return osp.abspath(config_path(path))
    except FileNotFoundError as e:
        raise SystemExit(str(e)) from None


def train_command(spec, seed, work, train_args):
    """``tools/train.py`` for one config and seed: the user's arguments, then the seed and
    the config's own overrides in ``--cfg-options``."""
    path, overrides = split_config(spec)
    args = list(train_args)
    extra = [f'randomness.seed={seed}'] + overrides
    if '--cfg-options' in args:
        i = args.index('--cfg-options') + 1
        while i < len(args) and not args[i].startswith('--'):
            i += 1
        args[i:i] = extra
    else:
        args += ['--cfg-options'] + extra
    return [sys.executable, osp.join(ROOT, 'tools', 'train.py'), resolve(path),
            '--work-dir', work] + args


def run_parallel(jobs, parallel, start, done, poll=2.0, deadline=None, on_stop=None):
    """Start ``start(job)`` (a Popen) for each job, at most ``parallel`` at a time, and call
    ``done(job, returncode)`` as each ends, in the order they end. At ``deadline`` (a
    ``time.monotonic()`` value) no more start, and each running one gets SIGINT and
    ``on_stop(job)`` (before its ``done``)."""
    jobs, running, stopped = list(jobs), [], []
    while jobs or running:
        while jobs and len(running) < parallel:
            job = jobs.pop(0)
            running.append((job, start(job)))
        time.sleep(poll)
        if deadline is not None and time.monotonic() >= deadline:
            jobs = []
            for job, proc in running:
                if proc.poll() is None and job not in stopped:
                    proc.send_signal(signal.SIGINT)
                    stopped.append(job)
                    if on_stop is not None:
                        on_stop(job)
        for item in list(running):
            job, proc = item
            if proc.poll() is not None:
                running.remove(item)
                done(job, proc.returncode)


def validation_metrics(work):
    """``{step: {metric: value}}`` of every validation that the newest run under ``work``
    logged (mmengine's scalars.json: a validation record has no ``loss``)."""
    runs = sorted(glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json')))
    if not runs:
        return {}
    out = {}
    with open(runs[-1]) as f:
        for line in f:
            record = json.loads(line)
            if 'loss' in record or 'step' not in record:
                continue
            out.setdefault(record['step'], {}).update(
                {k: v for k, v in record.items() if isinstance(v, (int, float))})
    return out


def mean_std(values):
    """``'mean ± sample std (v1, v2, ...)'``."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f'{statistics.fmean(values):.3f} ± {std:.3f} '
            f'({", ".join(f"{v:.3f}" for v in values)})')


def summarise(configs, seeds, results, metrics=None):
    """The tables as text lines. ``results[(config, seed)]`` = :func:`validation_metrics`."""
    found = {k for runs in results.values() for rec in runs.values() for k in rec}
    metrics = list(metrics or [m for m in DEFAULT_METRICS if m in found])
    lines = []
    if not metrics:
        return ['no validation metrics in the runs\' logs (did validation run? set '
                'train_cfg.val_interval, or --metrics)']
    steps = sorted({s for runs in results.values() for s in runs})
    if not steps:
        return ['no validation logged by any run']
    lines.append('| config | validation step | ' + ' | '.join(metrics) + ' |')
    lines.append('|---|---|' + '---|' * len(metrics))

    def values(config, step, metric):
        return [results[(config, s)][step][metric] for s in seeds
                if metric in results.get((config, s), {}).get(step, {})]

    for config in configs:
        for step in steps:
            cells = [values(config, step, metric) for metric in metrics]
            if any(cells):
                lines.append(f'| {config} | {step} | '
                             + ' | '.join(mean_std(v) if v else '-' for v in cells) + ' |')
    lines.append('')
    lines.append(f'last validation that every run of both logged: mean difference from '
                 f'{configs[0]}, against the larger spread (max - min over seeds) of the two')
    lines.append('| config | metric | step | difference of means | spread, this / first | '
                 'verdict |')
    lines.append('|---|---|---|---|---|---|')
    for config in configs[1:]:
        for metric in metrics:
            common = [step for step in steps
                      if len(values(configs[0], step, metric)) == len(seeds)
                      and len(values(config, step, metric)) == len(seeds)]
            if not common:
                lines.append(f'| {config} | {metric} | - | - | - | missing runs |')
                continue
            a, b = values(configs[0], common[-1], metric), values(config, common[-1], metric)
            diff = statistics.fmean(b) - statistics.fmean(a)
            spread_a, spread_b = max(a) - min(a), max(b) - min(b)
            verdict = ('within the spread' if abs(diff) <= max(spread_a, spread_b)
                       else 'outside the spread')
            lines.append(f'| {config} | {metric} | {common[-1]} | {diff:+.3f} | '
                         f'{spread_b:.3f} / {spread_a:.3f} | {verdict} |')
    return lines


def log_tail(path, lines=15):
    """The last ``lines`` non-empty lines of a run's log (where its error is), indented;
    printed for a failed run, whose log may sit on a machine the reader cannot open."""
    try:
        with open(path, errors='replace') as f:
            tail = collections.deque((line.rstrip() for line in f if line.strip()), lines)
    except OSError as exc:
        return f'    (no log: {exc})'
    return '\n'.join('    ' + line for line in tail)


def main(argv=None):
    args = parse_args(argv)
    for spec in args.configs:
        resolve(split_config(spec)[0])   # every config found before anything starts
    print('command: python ' + ' '.join(shlex.quote(a) for a in sys.argv), flush=True)
    os.makedirs(args.work_dir, exist_ok=True)
    works = {(c, s): osp.join(args.work_dir, f'config{i}_seed{s}')
             for i, c in enumerate(args.configs) for s in args.seeds}
    results, begin = {}, time.time()

    def start(job):
        log = open(works[job] + '.log', 'w')
        return subprocess.Popen(train_command(job[0], job[1], works[job], args.train_args),
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def done(job, returncode):
        if returncode == 0:
            status = 'done'
        elif job in stopped:
            status = f'stopped at the time limit (exit {returncode})'
        else:
            status = (f'failed (exit {returncode}, see {works[job]}.log), its end:\n'
                      + log_tail(works[job] + '.log'))
        results[job] = validation_metrics(works[job]) if returncode == 0 or job in stopped else {}
        print(f'[{time.time() - begin:6.0f} s] {job[0]} seed {job[1]}: {status}', flush=True)

    stopped = []
    deadline = None if args.time_limit is None else time.monotonic() + args.time_limit
    run_parallel(works, args.parallel, start, done, deadline=deadline, on_stop=stopped.append)
    for i, config in enumerate(args.configs):
        print(f'config{i}: {config}')
    for job in works:
        if job not in results:
            print(f'{job[0]} seed {job[1]}: not run (time limit)')
    print('\n'.join(summarise(args.configs, args.seeds, results, args.metrics)))
    return 0 if all(results.get(job) for job in works) else 1


if __name__ == '__main__':
    sys.exit(main())
