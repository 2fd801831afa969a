"""Evaluate a checkpoint on a config's test set. Same arguments as mmdet's tools/test.py."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

# cli_base needs only the standard library: loaded without the package's __init__ (torch,
# mmcv, OpenMMLab: seconds), so that argument errors are reported at once
from mmmambaout_mmcv_finder import load_submodule  # noqa: E402

cli_base = load_submodule('mmmambaout.utils.cli_base')


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
    cli_base.add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # user errors first, before torch and OpenMMLab are imported (a second, not ten)
    cli_base.check_config_path(args.config)
    if '://' not in args.checkpoint:  # URLs: mmengine's CheckpointLoader downloads them
        cli_base.check_checkpoint_path(args.checkpoint, 'CHECKPOINT',
                                       cli_base.LOAD_FROM_FIXES['CHECKPOINT'])
    cfg = cli_base.load_config(args)
    cfg.load_from = args.checkpoint
    dataset_check = cli_base.light_module('mmmambaout.utils.dataset_check')
    dataset_check.check_dataset_paths(cfg, loaders=('test_dataloader', ))
    dataset_check.check_num_classes(cfg, loaders=('test_dataloader', ))

    import mmmambaout  # noqa: F401  (mmcv op backend, compat, registries)
    from mmmambaout.utils import cli
    cli.finish_config(cfg, args)
    cli.distribute_on_cpu_without_gpu(cfg)
    cli.check_gpu_per_process(cfg)
    cli.set_test_outputs(cfg, out=args.out, show_dir=args.show_dir, show=args.show,
                         wait_time=args.wait_time)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise cli.UserError('--tta needs `tta_model` and `tta_pipeline` in the config')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    # config errors before anything is built or printed (testing runs no init_weights)
    cli.check_archs(cfg)
    cli.check_checkpoints(cfg, load_from_what='CHECKPOINT', init_cfgs=False)

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    metrics = runner.test()
    cli.close_process_group()
    return metrics


if __name__ == '__main__':
    sys.exit(cli_base.run_cli(main))
