#!/usr/bin/env python
"""A small ablation anyone can rerun: MambaOut vs MambaOut with SSM stages vs Vim, at an
equal training budget on the generated demo data, over several seeds.

Not COCO or ADE20K: the demo sets (tools/misc/make_demo_data.py) are small synthetic
scenes, the models small (MambaOut-F width, Vim-T) and trained from scratch for the demo
schedules (configs/demo/). What it can show is whether, on the same data, budget and
recipe, adding a selective scan to the Gated CNN stages or replacing the backbone by a Vim
changes the result beyond the spread between seeds; it is a smoke-scale result.

Variants (same config, schedule and optimizer; only the backbone differs):
  mambaout     configs/demo/*_mambaout_demo.py (MambaOut-F, Gated CNN in all stages)
  hybrid       the same with bidirectional SSM blocks where L > 6D in the real configs
               (detection stages 0-2, segmentation stages 0-1)
  allssm       the same with SSM blocks in all four stages
  vim          configs/demo/*_vim_demo.py (Vim-T)
Each run trains with tools/train.py (stages eager: compilation would only add start-up
time), evaluates the final checkpoint on the demo val split, and the table gives mean,
population standard deviation and the per-seed values of bbox / segm mAP or mIoU.

    python tools/analysis/ablation_demo.py --tasks det seg --seeds 0 1 2 --parallel 8 \
        --work-dir work_dirs/ablation
"""
import argparse
import glob
import json
import os
import os.path as osp
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from compare_seeds import run_parallel  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'det': {'mambaout': 'configs/demo/mask_rcnn_mambaout_demo.py',
            'vim': 'configs/demo/mask_rcnn_vim_demo.py'},
    'seg': {'mambaout': 'configs/demo/upernet_mambaout_demo.py',
            'vim': 'configs/demo/upernet_vim_demo.py'},
}
MIXERS = {
    'det': {'hybrid': "('bi_ssm','bi_ssm','bi_ssm','gated_cnn')",
            'allssm': "('bi_ssm','bi_ssm','bi_ssm','bi_ssm')"},
    'seg': {'hybrid': "('bi_ssm','bi_ssm','gated_cnn','gated_cnn')",
            'allssm': "('bi_ssm','bi_ssm','bi_ssm','bi_ssm')"},
}
METRICS = {'det': ('coco/bbox_mAP', 'coco/segm_mAP'), 'seg': ('mIoU', )}
VARIANTS = ('mambaout', 'hybrid', 'allssm', 'vim')


def data_options(task, data):
    if task == 'det':
        root = f'{data}/coco/'
        ann = f'{root}annotations/instances_val2017.json'
        return [f'{k}.dataset.data_root={root}' for k in
                ('train_dataloader', 'val_dataloader', 'test_dataloader')] + [
                    f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    root = f'{data}/ade/ADEChallengeData2016'
    return [f'{k}.dataset.data_root={root}' for k in
            ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def commands(task, variant, seed, data, work):
    config = CONFIGS[task]['vim' if variant == 'vim' else 'mambaout']
    opts = data_options(task, data) + [f'randomness.seed={seed}']
    if variant != 'vim':
        opts.append('model.backbone.compile_stages=False')
    if variant in MIXERS[task]:
        opts.append(f'model.backbone.token_mixers={MIXERS[task][variant]}')
    train = [sys.executable, 'tools/train.py', config, '--work-dir', work, '--cfg-options', *opts]
    return config, opts, train


def metric_values(work, task):
    """The final evaluation's metrics, from tools/test.py's json log in the work dir."""
    logs = sorted(glob.glob(osp.join(work, 'test', '*', '*.json')))
    for path in reversed(logs):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if all(k in record for k in METRICS[task]):
                    return {k: record[k] for k in METRICS[task]}
    return None


def run_one(task, variant, seed, data, root, extra=()):
    """Train, then evaluate the last checkpoint, in one background shell."""
    work = osp.join(root, f'{task}_{variant}_seed{seed}')
    config, opts, train = commands(task, variant, seed, data, work)
    opts, train = opts + list(extra), train + list(extra)
    test = shlex.join([sys.executable, 'tools/test.py', config, '@CKPT@', '--work-dir',
                       osp.join(work, 'test'), '--cfg-options', *opts])
    test = test.replace('@CKPT@', f'"$(cat {shlex.quote(work)}/last_checkpoint)"')
    log = open(osp.join(root, f'{task}_{variant}_seed{seed}.log'), 'w')
    return subprocess.Popen(['bash', '-c', f'{shlex.join(train)} && {test}'], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_NUM_THREADS='2'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--tasks', nargs='+', default=['det', 'seg'], choices=['det', 'seg'])
    p.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=VARIANTS)
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--parallel', type=int, default=4, help='runs at a time (one GPU is shared)')
    p.add_argument('--data', default='data/demo', help='demo data (made if missing)')
    p.add_argument('--data-args', default='', help='more make_demo_data.py arguments')
    p.add_argument('--options', nargs='*', default=[],
                   help='more --cfg-options for every run (e.g. a shorter schedule)')
    p.add_argument('--work-dir', default='work_dirs/ablation')
    args = p.parse_args(argv)
    print('command: python ' + ' '.join(shlex.quote(a) for a in sys.argv), flush=True)
    subprocess.run([sys.executable, 'tools/misc/make_demo_data.py', '--out', args.data,
                    *shlex.split(args.data_args)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    os.makedirs(args.work_dir, exist_ok=True)
    jobs = [(t, v, s) for t in args.tasks for v in args.variants for s in args.seeds]
    results, start = {}, time.time()

    def done(job, returncode):
        task, variant, seed = job
        work = osp.join(args.work_dir, f'{task}_{variant}_seed{seed}')
        results[job] = metric_values(work, task) if returncode == 0 else None
        print(f'[{time.time() - start:6.0f} s] {task} {variant} seed {seed}: '
              f'{results[job] or f"failed (exit {returncode})"}', flush=True)

    run_parallel(jobs, args.parallel,
                 lambda job: run_one(*job, args.data, args.work_dir, args.options), done)
    for task in args.tasks:
        print(f'\n{task}: mean ± std over seeds {args.seeds} (per seed)')
        print('| variant | ' + ' | '.join(METRICS[task]) + ' |')
        print('|---|' + '---|' * len(METRICS[task]))
        for variant in args.variants:
            cells = []
            for metric in METRICS[task]:
                values = [results[(task, variant, s)][metric] for s in args.seeds
                          if results.get((task, variant, s))]
                if not values:
                    cells.append('failed')
                    continue
                spread = statistics.pstdev(values) if len(values) > 1 else 0.0
                cells.append(f'{statistics.fmean(values):.3f} ± {spread:.3f} '
                             f'({", ".join(f"{v:.3f}" for v in values)})')
            print(f'| {variant} | ' + ' | '.join(cells) + ' |')
    return results


if __name__ == '__main__':
    main()
