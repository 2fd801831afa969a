"""Measure how fast a config's training data loader produces images, per data-loader worker.

Builds the config's ``train_dataloader`` exactly as training does (mmengine
``Runner.build_dataloader``: dataset, sampler, batch sampler, collate, worker seeding,
the config's ``env_cfg.mp_cfg``), then for every ``--workers`` count iterates ``--warmup``
batches and times ``--batches`` more, with nothing consuming them: what is measured is
the rate the pipeline (decode, annotations, resize, flip, masks, packing, collate,
transfer from the workers) can feed a training process. ``0`` workers = everything in
the main process, i.e. the rate of one worker.

With ``--gpu-img-s R`` (the images/s one GPU trains at, e.g. from
tools/analysis/benchmark_train.py) it prints how many workers one GPU needs:
``ceil(headroom * R / per-worker img/s)``, headroom 1.2 by default. Also reported: the
CPU time per image of the main process and of the workers (Linux ``/proc``), and with
``--profile-transforms`` the time of each pipeline transform.

Examples (the demo data: ``python tools/misc/make_demo_data.py --out data/demo --kind coco``):
    # the demo config (256x256 pipeline)
    python tools/analysis/benchmark_dataloader.py configs/demo/mask_rcnn_mambaout_demo.py
    # the full COCO 1x pipeline (1333x800 resize, flip, polygon/RLE masks -> bitmaps)
    # on the demo images; --classes-from-ann takes the class names from the annotations
    python tools/analysis/benchmark_dataloader.py configs/mask_rcnn_mambaout_t_1x_coco.py \\
        --data-root data/demo/coco/ --classes-from-ann --workers 0 1 2 --gpu-img-s 15.1 30
"""
import argparse
import copy
import gc
import json
import math
import os
import os.path as osp
import platform
import shlex
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmmambaout  # noqa: E402,F401  (mmcv op backend before any mmdet / mmseg import)
from mmengine.config import Config, DictAction  # noqa: E402

from mmmambaout.utils.dataset_check import (DatasetNotFoundError,  # noqa: E402
                                            _dataset_cfgs, check_dataset_paths)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2],
                        help='num_workers values to measure, 0 = the main process '
                        '(default: 0 1 2)')
    parser.add_argument('--batches', type=int, default=50, help='timed batches per run')
    parser.add_argument('--warmup', type=int, default=None,
                        help='untimed batches first (default: max(5, 2 x workers): worker '
                        'start-up and the first prefetches)')
    parser.add_argument('--batch-size', type=int, help="override the config's batch size")
    parser.add_argument('--data-root',
                        help='set data_root of every train dataset (after --cfg-options)')
    parser.add_argument('--classes-from-ann', action='store_true',
                        help="set the train dataset's metainfo.classes to the category names "
                        "of its COCO annotation file (e.g. the COCO configs on the demo data)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value pairs')
    parser.add_argument('--gpu-img-s', type=float, nargs='+', default=[],
                        help='images/s one GPU trains at: print the workers it needs')
    parser.add_argument('--headroom', type=float, default=1.2,
                        help='safety factor on the GPU rate for --gpu-img-s (default 1.2)')
    parser.add_argument('--profile-transforms', action='store_true',
                        help='also time each pipeline transform (main process, batches x '
                        'batch size samples)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', help='also write the results as JSON here')
    args = parser.parse_args(argv)
    if any(w < 0 for w in args.workers):
        parser.error('--workers must be >= 0')
    if args.batches < 1:
        parser.error('--batches must be >= 1')
    if args.headroom <= 0:
        parser.error('--headroom must be > 0')
    return args


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


def versions():
    import cv2
    import mmcv
    import mmengine
    import numpy
    import torch
    out = dict(python=platform.python_version(), torch=torch.__version__,
               mmengine=mmengine.__version__, mmcv=mmcv.__version__, numpy=numpy.__version__,
               opencv=cv2.__version__)
    for name in ('mmdet', 'mmseg', 'mmpretrain'):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def load_config(args):
    if not osp.isfile(args.config):
        raise SystemExit(f'error: config file not found: {args.config}')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if not cfg.get('train_dataloader'):
        raise SystemExit(f'error: {args.config} has no train_dataloader')
    leaves = [ds for _, ds in _dataset_cfgs(cfg.train_dataloader.dataset, '')]
    if args.data_root is not None:
        for ds in leaves:
            ds.data_root = args.data_root
    if args.batch_size is not None:
        cfg.train_dataloader.batch_size = args.batch_size
    try:
        check_dataset_paths(cfg, loaders=('train_dataloader', ))
    except DatasetNotFoundError as exc:
        raise SystemExit(f'error: {exc}'.replace(
            '--cfg-options train_dataloader.dataset.data_root=/path/to/dataset',
            '--data-root /path/to/dataset (or --cfg-options '
            'train_dataloader.dataset.data_root=/path/to/dataset)'))
    if args.classes_from_ann:
        for ds in leaves:
            names = ann_category_names(ds)
            if names is None:
                raise SystemExit('error: --classes-from-ann needs a COCO-style JSON ann_file '
                                 f'with "categories"; dataset {ds.get("type")} has '
                                 f'{ds.get("ann_file")!r}')
            ds.metainfo = dict(classes=tuple(names))
    return cfg


def _ann_path(ds):
    ann = ds.get('ann_file')
    if not ann:
        return None
    root = ds.get('data_root') or ''
    return ann if not root or osp.isabs(ann) else osp.join(root, ann)


def ann_category_names(ds):
    path = _ann_path(ds)
    if not path or not path.endswith('.json') or not osp.isfile(path):
        return None
    with open(path) as f:
        cats = json.load(f).get('categories')
    return [c['name'] for c in sorted(cats, key=lambda c: c['id'])] if cats else None


def build_dataset(cfg):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    try:
        dataset = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
        if hasattr(dataset, 'full_init'):
            dataset.full_init()
    except ValueError as exc:  # mmengine serializes an empty data list with np.concatenate
        if 'need at least one array' not in str(exc):
            raise
        raise SystemExit(empty_dataset_message(cfg)) from exc
    if len(dataset) == 0:
        raise SystemExit(empty_dataset_message(cfg))
    return dataset


def empty_dataset_message(cfg):
    from mmengine.registry import DATASETS

    def short(names):
        names = tuple(names)
        return f'({len(names)}): {", ".join(names[:8])}{", ..." if len(names) > 8 else ""}'

    lines = ['error: the train dataset is empty after filtering (no image with an '
             'annotation of a configured class?)']
    leaves = [ds for _, ds in _dataset_cfgs(cfg.train_dataloader.dataset, '')]
    ds = leaves[0]
    classes = (ds.get('metainfo') or {}).get('classes')
    if classes is None:
        cls = ds.get('type')
        if isinstance(cls, str):
            with DATASETS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
                cls = registry.get(cls)
        classes = getattr(cls, 'METAINFO', {}).get('classes', ())
    names = ann_category_names(ds)
    lines.append(f'  config classes {short(classes)}')
    if names is not None:
        lines.append(f'  categories in {_ann_path(ds)} {short(names)}')
    lines.append('  Use --classes-from-ann, or --cfg-options '
                 'train_dataloader.dataset.metainfo.classes="(\'a\',\'b\',...)"')
    return '\n'.join(lines)


def loader_for(cfg, dataset, workers, seed):
    from mmengine.runner import Runner
    loader_cfg = cfg.train_dataloader.to_dict()
    loader_cfg.pop('dataset')
    loader_cfg = copy.deepcopy(loader_cfg)
    loader_cfg['num_workers'] = workers
    if workers == 0:  # torch refuses persistent workers / prefetching without workers
        loader_cfg.pop('persistent_workers', None)
        loader_cfg.pop('prefetch_factor', None)
    loader_cfg['dataset'] = dataset  # built once, shared by every run
    return Runner.build_dataloader(loader_cfg, seed=seed)


def batch_stats(batch):
    """(images, sum of H*W, sum of instances, mask type name) of one collated batch."""
    inputs = batch['inputs'] if isinstance(batch, dict) else batch[0]
    samples = batch.get('data_samples') if isinstance(batch, dict) else None
    n = len(inputs)
    pixels = sum(int(x.shape[-2]) * int(x.shape[-1]) for x in inputs)
    instances, mask_type = 0, None
    for s in samples or ():
        gt = getattr(s, 'gt_instances', None)
        if gt is not None:
            instances += len(gt)
            if 'masks' in gt and mask_type is None:
                mask_type = type(gt.masks).__name__
    return n, pixels, instances, mask_type


def proc_cpu_seconds(pid):
    """user + system CPU seconds of a process from /proc (Linux); None elsewhere."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


def workers_cpu_seconds(iterator):
    """{pid: CPU seconds} of a data loader iterator's worker processes."""
    pids = [p.pid for p in getattr(iterator, '_workers', []) or []]
    return {pid: proc_cpu_seconds(pid) for pid in pids}


def measure(cfg, dataset, workers, batches, warmup, seed):
    from mmengine.runner import set_random_seed
    set_random_seed(seed)
    loader = loader_for(cfg, dataset, workers, seed)
    state = dict(epoch=0, restarts=0, it=iter(loader))

    def next_batch():
        while True:
            try:
                return next(state['it'])
            except StopIteration:  # epoch end: as the training loop does
                state['epoch'] += 1
                state['restarts'] += 1
                sampler = getattr(loader, 'sampler', None)
                if hasattr(sampler, 'set_epoch'):
                    sampler.set_epoch(state['epoch'])
                state['it'] = iter(loader)

    t_start = time.perf_counter()
    for _ in range(warmup):
        next_batch()
    t_warm = time.perf_counter()
    restarts_before = state['restarts']
    images = pixels = instances = 0
    mask_type = None
    workers_cpu0 = workers_cpu_seconds(state['it'])
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(batches):
        n, px, inst, mt = batch_stats(next_batch())
        images += n
        pixels += px
        instances += inst
        mask_type = mask_type or mt
    elapsed = time.perf_counter() - t0
    main_cpu = time.process_time() - cpu0
    workers_cpu1 = workers_cpu_seconds(state['it'])
    worker_cpu = None  # CPU seconds of all workers over the timed batches
    if workers and workers_cpu0 and set(workers_cpu0) == set(workers_cpu1) and None not in (
            *workers_cpu0.values(), *workers_cpu1.values()):
        worker_cpu = sum(workers_cpu1[p] - workers_cpu0[p] for p in workers_cpu0)
    restarts_timed = state['restarts'] - restarts_before
    del state, loader
    gc.collect()  # shut the workers down before the next run
    img_s = images / elapsed
    per_worker = img_s / max(workers, 1)
    return dict(workers=workers, batches=batches, warmup=warmup, images=images,
                seconds=elapsed, img_s=img_s, img_s_per_worker=per_worker,
                ms_per_image=1000 * elapsed / images,
                ms_per_image_per_worker=1000 / per_worker,
                main_cpu_ms_per_image=1000 * main_cpu / images,
                worker_cpu_ms_per_image=None if worker_cpu is None else 1000 * worker_cpu / images,
                warmup_seconds=t_warm - t_start,
                epoch_restarts_timed=restarts_timed,
                mean_pixels=pixels / images, mean_instances=instances / images,
                mask_type=mask_type)


def profile_transforms(dataset, samples, seed):
    """Mean ms per sample of each pipeline transform (main process, no collate)."""
    from mmengine.runner import set_random_seed
    set_random_seed(seed)
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None)
    if transforms is None:
        return None
    spent = [0.0] * len(transforms)

    def timed(i, t):
        def call(data):
            t0 = time.perf_counter()
            out = t(data)
            spent[i] += time.perf_counter() - t0
            return out
        return call

    original = list(transforms)
    transforms[:] = [timed(i, t) for i, t in enumerate(original)]
    try:
        t0 = time.perf_counter()
        for k in range(samples):
            dataset[k % len(dataset)]
        total = time.perf_counter() - t0
    finally:
        transforms[:] = original
    rows = [(type(t).__name__, 1000 * s / samples) for t, s in zip(original, spent)]
    rows.append(('rest of __getitem__ (data info, retries)', 1000 * (total - sum(spent)) / samples))
    return dict(samples=samples, total_ms=1000 * total / samples, rows=rows)


def pick_per_worker(results):
    """The per-worker rate the GPU estimate uses: 1 worker (one process per core, the main
    process free), else 0 workers (the main process), else the fewest workers measured."""
    by_w = {r['workers']: r for r in results}
    for w in (1, 0):
        if w in by_w:
            return by_w[w]
    return by_w[min(by_w)]


def workers_needed(gpu_img_s, per_worker_img_s, headroom):
    return math.ceil(headroom * gpu_img_s / per_worker_img_s)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    prog, rest = (sys.argv[0], sys.argv[1:]) if argv is None else (osp.relpath(__file__), argv)
    cmd = 'python ' + shlex.join([prog, *rest])
    ver = versions()
    machine = dict(cpu=cpu_model(), cpus=os.cpu_count(), usable_cpus=usable_cpus(),
                   platform=platform.platform())
    print(f'command: {cmd}')
    print(f'machine: {machine["cpu"]}, {machine["usable_cpus"]} usable of {machine["cpus"]} '
          f'logical CPUs; {machine["platform"]}')
    print('versions: ' + ', '.join(f'{k} {v}' for k, v in ver.items()))

    # what Runner.setup_env does for the data loader: start method, OpenCV threads
    from mmengine.utils.dl_utils import set_multi_processing
    set_multi_processing(**cfg.get('env_cfg', {}).get('mp_cfg', {}), distributed=False)

    t0 = time.perf_counter()
    dataset = build_dataset(cfg)
    build_s = time.perf_counter() - t0
    loader_cfg = cfg.train_dataloader
    leaf = next(ds for _, ds in _dataset_cfgs(loader_cfg.dataset, ''))
    pipeline = ', '.join(
        t['type'] + (f'({t["scale"]})' if 'scale' in t else '')
        for t in leaf.get('pipeline', []))
    print(f'dataset: {type(dataset).__name__}, {len(dataset)} images '
          f'(data_root {leaf.get("data_root")}, built in {build_s:.1f} s); '
          f'batch_size {loader_cfg.batch_size}, '
          f'batch_sampler {(loader_cfg.get("batch_sampler") or {}).get("type")}, '
          f'persistent_workers {loader_cfg.get("persistent_workers", False)}')
    print(f'pipeline: {pipeline}')
    max_needed = max(args.warmup if args.warmup is not None else max(5, 2 * w)
                     for w in args.workers) + args.batches
    per_epoch = math.ceil(len(dataset) / loader_cfg.batch_size)
    if max_needed > per_epoch:
        print(f'note: {max_needed} batches > {per_epoch} per epoch: the loader is restarted '
              'inside a run (as at an epoch boundary in training)')
    import cv2
    import torch
    print(f'cv2 threads {cv2.getNumThreads()} (env_cfg.mp_cfg, inherited by the workers); torch '
          f'threads 1 in each worker (set by torch) and in the main process for the 0-worker '
          f'run, else {torch.get_num_threads()}')

    results = []
    for w in args.workers:
        warmup = args.warmup if args.warmup is not None else max(5, 2 * w)
        # 0 workers stands for one worker: one torch thread, as torch sets in every worker
        threads = torch.get_num_threads()
        if w == 0:
            torch.set_num_threads(1)
        try:
            r = measure(cfg, dataset, w, args.batches, warmup, args.seed)
        finally:
            torch.set_num_threads(threads)
        results.append(r)
        print(f'workers {w}: {r["images"]} images in {r["seconds"]:.2f} s: '
              f'{r["img_s"]:.2f} img/s total, {r["img_s_per_worker"]:.2f} img/s per worker, '
              f'{r["ms_per_image"]:.1f} ms per image (wall), '
              f'{r["ms_per_image_per_worker"]:.1f} ms per image per worker', flush=True)

    def ms(v):
        return '-' if v is None else f'{v:.1f}'

    print()
    print(f'{args.batches} timed batches after a warm-up (max(5, 2 x workers) batches unless '
          '--warmup); per worker = total / max(workers, 1); CPU = user + system time of the '
          'main process / of all workers together, over the timed batches')
    print('| workers | images | s | img/s total | img/s per worker | ms/image (wall) | '
          'ms/image per worker | main CPU ms/image | workers CPU ms/image |\n'
          '|---|---|---|---|---|---|---|---|---|')
    for r in results:
        print(f'| {r["workers"]} | {r["images"]} | {r["seconds"]:.2f} | {r["img_s"]:.2f} | '
              f'{r["img_s_per_worker"]:.2f} | {r["ms_per_image"]:.1f} | '
              f'{r["ms_per_image_per_worker"]:.1f} | {ms(r["main_cpu_ms_per_image"])} | '
              f'{ms(r["worker_cpu_ms_per_image"])} |')
    r0 = results[0]
    side = math.sqrt(r0['mean_pixels'])
    print(f'output: mean {r0["mean_pixels"] / 1e6:.2f} Mpixel per image (~{side:.0f}^2), '
          f'{r0["mean_instances"]:.2f} instances per image, masks {r0["mask_type"]}')
    restarted = [r['workers'] for r in results if r['epoch_restarts_timed']]
    if restarted:
        print(f'note: the runs with {restarted} workers crossed an epoch end while timed')
    busy = [r['workers'] for r in results if r['workers'] + 1 > machine['usable_cpus']]
    if busy:
        print(f'note: with {busy} workers the workers and the main process share '
              f'{machine["usable_cpus"]} CPUs: the per-worker rate there is a lower bound')
    profile = None
    if args.profile_transforms:
        samples = args.batches * loader_cfg.batch_size
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as in a worker
        try:
            profile = profile_transforms(dataset, samples, args.seed)
        finally:
            torch.set_num_threads(threads)
        if profile:
            print(f'\nper transform, main process, 1 torch thread, {samples} samples (no collate, '
                  'no transfer): '
                  f'{profile["total_ms"]:.2f} ms per sample')
            for name, t in profile['rows']:
                print(f'  {name}: {t:.2f} ms ({100 * t / profile["total_ms"]:.0f}%)')

    ref = pick_per_worker(results)
    gpu = []
    if args.gpu_img_s:
        print(f'\nworkers per GPU = ceil({args.headroom:g} headroom x GPU img/s / per-worker '
              f'img/s), per-worker rate {ref["img_s_per_worker"]:.2f} img/s (the '
              f'{ref["workers"]}-worker run; one CPU core per worker, plus one for the '
              'training process):')
        for g in args.gpu_img_s:
            n = workers_needed(g, ref['img_s_per_worker'], args.headroom)
            gpu.append(dict(gpu_img_s=g, workers=n))
            print(f'  GPU at {g:g} img/s: {n} workers '
                  f'(ceil({args.headroom:g} x {g:g} / {ref["img_s_per_worker"]:.2f}) = '
                  f'ceil({args.headroom * g / ref["img_s_per_worker"]:.2f}))')
        if ref['workers'] and ref['worker_cpu_ms_per_image'] is not None:
            print(f'  CPU time per image in that run: {ref["worker_cpu_ms_per_image"]:.1f} ms '
                  f'in the worker, {ref["main_cpu_ms_per_image"]:.1f} ms in the main (training) '
                  'process receiving the batches')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=cmd, config=args.config, machine=machine, versions=ver,
                           dataset=dict(type=type(dataset).__name__, images=len(dataset),
                                        batch_size=loader_cfg.batch_size, pipeline=pipeline),
                           results=results, per_worker_reference=ref['workers'],
                           headroom=args.headroom, workers_per_gpu=gpu,
                           transform_profile=profile), f, indent=2)
        print(f'results written to {args.out}')
    return results


if __name__ == '__main__':
    main()
