"""Evaluate a checkpoint on a config's test set. Same arguments as mmdet's tools/test.py."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmmambaout  # noqa: E402,F401  (mmcv op backend before any mmdet / mmseg import)
from mmmambaout.utils import cli  # noqa: E402
from mmmambaout.utils.dataset_check import check_dataset_paths  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions: a .pkl file (detection) or a folder '
                        'of label maps (segmentation)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='folder where painted images are saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    cli.add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = cli.load_config(args)
    cli.distribute_on_cpu_without_gpu(cfg)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg.load_from = args.checkpoint
    cli.set_test_outputs(cfg, out=args.out, show_dir=args.show_dir, show=args.show,
                         wait_time=args.wait_time)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise RuntimeError('--tta needs `tta_model` and `tta_pipeline` in the config')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    check_dataset_paths(cfg, loaders=('test_dataloader', ))

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
