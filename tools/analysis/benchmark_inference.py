"""Time test-time inference of detection / segmentation configs side by side on one device.

Each config runs its own test pipeline (``test_dataloader``: keep-ratio resize, packing;
the image comes from memory instead of a file, ground truth is not loaded) and its model's
``test_step`` (data preprocessor, forward, post-processing back to the original image
size), one image per call as mmdet's and mmseg's test loaders batch them. The images are
random pictures of varied sizes and aspect ratios, as COCO's and ADE20K's are: the long
side 480-640 px, the aspect ratio 0.5-2, landscape and portrait (``--images`` of them,
one seed for all configs). Weights are random (pretrained init off): detectors use
``score_thr=0`` (``--score-thr``) so that each image keeps ``max_per_img`` detections
and runs the mask head on them, as a trained detector does on COCO; without it random
scores fall under 0.05 and the mask head never runs.

The first pass over the images is timed as a whole, from the first image: it includes
whatever a config compiles or tunes at test time. Then ``--rounds`` more passes, config
after config in one process, give the steady images/s (median time per image over
them). ``--as-in-training`` applies the config's ``MambaOutCompileHook`` first, i.e. it
times the model that validation inside ``tools/train.py`` runs; the plain run times what
``tools/test.py`` and the Inferencers run. Peak memory is that of the first pass, less
what other configs still hold.

In one process, the first config also pays what a process pays on first use (CUDA
context, cuBLAS / cuDNN set-up, Triton kernels the configs share), so its first pass is
not comparable with the others'. ``--separate-processes`` runs each config in a fresh
process instead, one after another, for a "from the first image" comparison; steady rates
side by side, for a ratio, come from one process.

Example (the tables in docs/benchmarks.md)::

    python tools/analysis/benchmark_inference.py configs/mask_rcnn_mambaout_t_1x_coco.py \\
        mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py \\
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --images 200 --rounds 2
"""
import argparse
import json
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import mmmambaout  # noqa: E402,F401
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmmambaout.utils.train_step import apply_compile_hooks, build_model  # noqa: E402

SLIDE = dict(mode='slide', crop_size=(512, 512), stride=(341, 341))


def image_sizes(n, seed=0, long_side=(480, 640), aspect=(0.5, 2.0)):
    """``n`` (h, w) pairs: long side uniform in ``long_side``, aspect ratio w / h
    log-uniform in ``aspect`` (landscape and portrait alike)."""
    rng = np.random.default_rng(seed)
    sizes = []
    for _ in range(n):
        long = int(rng.integers(long_side[0], long_side[1] + 1))
        ratio = float(np.exp(rng.uniform(np.log(aspect[0]), np.log(aspect[1]))))
        short = max(32, round(long / max(ratio, 1 / ratio)))
        sizes.append((short, long) if ratio >= 1 else (long, short))
    return sizes


def test_pipeline(cfg):
    """The config's test pipeline, reading the image from memory, without annotations."""
    from mmengine.dataset import Compose
    steps = []
    for step in cfg.test_dataloader.dataset.pipeline:
        step = dict(step)
        kind = step['type'].split('.')[-1]
        if kind == 'LoadAnnotations':
            continue
        if kind == 'LoadImageFromFile':
            step = dict(type='LoadImageFromNDArray')
        steps.append(step)
    return Compose(steps)


def prepared_inputs(cfg, sizes, seed=0):
    """Each image of ``sizes`` through the test pipeline: ``[(inputs, data_sample)]``."""
    rng = np.random.default_rng(seed)
    pipeline = test_pipeline(cfg)
    out = []
    for i, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        packed = pipeline(dict(img=img, img_id=i, img_path=f'{i}.jpg'))
        out.append((packed['inputs'], packed['data_samples']))
    return out


class Inference:
    """One config's model and prepared images, timed in passes."""

    def __init__(self, name, args, sizes):
        self.name, self.args = name, args
        self.cuda = args.device.startswith('cuda')
        if self.cuda:
            torch.cuda.empty_cache()
            self.base = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        cfg, model = build_model(name, args.device)
        if cfg.default_scope == 'mmdet' and args.score_thr is not None:
            model.test_cfg.rcnn.score_thr = args.score_thr
        if cfg.default_scope == 'mmseg' and args.slide:
            model.test_cfg = type(model.test_cfg)(SLIDE)
        if args.as_in_training:
            apply_compile_hooks(cfg, model, None)
        self.model = model.eval()
        self.task = cfg.default_scope
        self.inputs = prepared_inputs(cfg, sizes, args.seed)
        self.times, self.instances = [], []
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        self.first_image_s = self.run_pass()[0]
        self.first_pass_s = time.perf_counter() - start
        if self.cuda:
            self.peak = (torch.cuda.max_memory_allocated() - self.base[0]) / 2**30
            self.reserved = (torch.cuda.max_memory_reserved() - self.base[1]) / 2**30

    def run_pass(self, keep=False):
        times = []
        with torch.no_grad(), torch.autocast(self.args.device.split(':')[0],
                                             dtype=torch.float16, enabled=self.args.amp):
            for inputs, sample in self.inputs:
                t0 = time.perf_counter()
                result = self.model.test_step(dict(inputs=[inputs], data_samples=[sample]))
                if self.cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                if keep and self.task == 'mmdet':
                    self.instances.append(len(result[0].pred_instances))
        if keep:
            self.times += times
        return times

    def result(self):
        s_img = float(np.median(self.times))
        row = dict(config=self.name, img_s=1 / s_img, ms_img=1e3 * s_img,
                   first_pass_s=self.first_pass_s, first_image_s=self.first_image_s,
                   images=len(self.inputs),
                   peak_gib=self.peak if self.cuda else float('nan'),
                   reserved_gib=self.reserved if self.cuda else float('nan'))
        if self.instances:
            row['instances_per_image'] = float(np.mean(self.instances))
        return row


def print_header(device_arg):
    """Print the command, the device and the versions; the device's name."""
    device = (torch.cuda.get_device_name() if device_arg.startswith('cuda')
              else platform.processor() or platform.machine())
    import mmdet
    import mmengine
    import mmseg
    print('command: python ' + ' '.join(sys.argv))
    print(f'device: {device}; torch {torch.__version__} (CUDA {torch.version.cuda}); '
          f'mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}')
    return device


def in_own_process(name, args):
    """This script on config ``name`` alone in a new Python process, same options; its
    result rows (its output is shown as it goes)."""
    options = ['--images', args.images, '--rounds', args.rounds, '--device', args.device,
               '--score-thr', args.score_thr, '--seed', args.seed]
    options += [flag for flag, on in (('--amp', args.amp), ('--slide', args.slide),
                                      ('--as-in-training', args.as_in_training)) if on]
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, 'rows.json')
        print(f'--- {name}, in its own process', flush=True)
        proc = subprocess.run([sys.executable, osp.abspath(__file__), name, '--out', out]
                              + [str(o) for o in options])
        if proc.returncode != 0:
            raise SystemExit(f'error: the process for {name} failed (exit status '
                             f'{proc.returncode}); its output is above')
        with open(out) as f:
            return json.load(f)['rows']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='+',
                        help='config paths, mmdet::/mmseg:: upstream configs, overrides after #')
    parser.add_argument('--images', type=int, default=200)
    parser.add_argument('--rounds', type=int, default=2,
                        help='timed passes over the images after the first, config after config')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='fp16 autocast')
    parser.add_argument('--score-thr', type=float, default=0.0,
                        help='detectors: rcnn score threshold (default 0: max_per_img '
                             'detections per image, as a trained detector keeps on COCO)')
    parser.add_argument('--slide', action='store_true',
                        help='segmentors: slide inference, crop 512, stride 341 (our '
                             'UperNet configs\' test_cfg) for every config')
    parser.add_argument('--as-in-training', action='store_true',
                        help="apply the config's MambaOutCompileHook first: the model that "
                             'validation inside tools/train.py runs')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--separate-processes', action='store_true',
                        help='run each config in a fresh Python process, one after another: '
                             'then every first pass pays what a process pays on first use '
                             '(CUDA context, cuBLAS / cuDNN set-up, shared Triton kernels), '
                             'not just the first config\'s; the steady rates then come from '
                             'different processes')
    parser.add_argument('--out', help='also write the results as JSON here')
    args = parser.parse_args()
    if args.rounds < 1 or args.images < 1:
        raise SystemExit('--rounds and --images must be at least 1')

    device = print_header(args.device)
    sizes = image_sizes(args.images, args.seed)
    print(f'{args.images} images, sizes {min(sizes)}..{max(sizes)} (h, w), batch 1, amp={args.amp}, '
          f'first pass + {args.rounds} timed passes (median per image)'
          + (', each config in its own process' if args.separate_processes else ''))
    if args.separate_processes:
        rows = [row for name in args.configs for row in in_own_process(name, args)]
    else:
        kept = [Inference(name, args, sizes) for name in args.configs]
        for _ in range(args.rounds):
            for inf in kept:
                inf.run_pass(keep=True)
        rows = [inf.result() for inf in kept]
    header = ('| config | img/s | ms/img | first pass s (first image s) | peak GiB | '
              'peak reserved GiB | detections/img |')
    print(header + '\n' + '|---' * header.count(' |') + '|')
    for r in rows:
        print(f"| {r['config']} | {r['img_s']:.1f} | {r['ms_img']:.1f} | "
              f"{r['first_pass_s']:.1f} ({r['first_image_s']:.2f}) | {r['peak_gib']:.2f} | "
              f"{r['reserved_gib']:.2f} | {r.get('instances_per_image', '-')} |", flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=sys.argv, device=device, torch=torch.__version__, rows=rows),
                      f, indent=1)


if __name__ == '__main__':
    main()
