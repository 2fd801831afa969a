"""Train a detector, segmentor or classifier from an mmmambaout (or any mmdet / mmseg /
mmpretrain) config. Same arguments as mmdet's tools/train.py."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmmambaout  # noqa: E402,F401  (mmcv op backend before any mmdet / mmseg import)
from mmmambaout.utils import cli  # noqa: E402
from mmmambaout.utils.dataset_check import check_dataset_paths  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or, with no value, from the latest checkpoint '
                        'in the work dir')
    cli.add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = cli.load_config(args)
    cli.distribute_on_cpu_without_gpu(cfg)
    if args.amp:
        cli.use_amp(cfg)
    cli.fall_back_to_fp32_without_gpu(cfg)
    if args.auto_scale_lr:
        cli.enable_auto_scale_lr(cfg)
    cli.set_resume(cfg, args.resume)
    check_dataset_paths(cfg)

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()
    return runner


if __name__ == '__main__':
    main()
