"""Train a detector, segmentor or classifier from an mmmambaout (or any mmdet / mmseg /
mmpretrain) config. Same arguments as mmdet's tools/train.py."""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

# cli_base needs only the standard library: loaded without the package's __init__ (torch,
# mmcv, OpenMMLab: seconds), so that argument errors are reported at once
from mmmambaout_mmcv_finder import load_submodule  # noqa: E402

cli_base = load_submodule('mmmambaout.utils.cli_base')
# what the Ctrl-C summary needs: the arguments, the config, the runner once built
_run = {}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or, with no value, from the latest checkpoint '
                        'in the work dir')
    cli_base.add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    _run.update(argv=argv, args=args)
    # user errors first, before torch and OpenMMLab are imported (a second, not ten)
    cli_base.check_config_path(args.config)
    if args.resume not in (None, 'auto'):
        cli_base.check_checkpoint_path(args.resume, '--resume',
                                       cli_base.LOAD_FROM_FIXES['--resume'])
    cfg = cli_base.load_config(args)
    _run['cfg'] = cfg
    missing = [k for k in ('train_dataloader', 'train_cfg', 'optim_wrapper') if not cfg.get(k)]
    if missing:
        raise cli_base.UserError(
            f'{args.config} cannot be trained: it has no {", ".join(missing)} (an evaluation '
            f'config?). Evaluate with python tools/test.py {args.config} CHECKPOINT, or train '
            'a config that has them.')
    # --resume replaces load_from (cli.set_resume): by its checkpoint, checked above, or
    # by the work dir's latest
    cli_base.check_config_checkpoints(cfg, load_from_what=None if args.resume else 'load_from')
    dataset_check = cli_base.light_module('mmmambaout.utils.dataset_check')
    dataset_check.check_dataset_paths(cfg)
    dataset_check.check_num_classes(cfg)

    import mmmambaout  # noqa: F401  (mmcv op backend, compat, registries)
    from mmmambaout.utils import cli
    cli.finish_config(cfg, args)
    cli.distribute_on_cpu_without_gpu(cfg)
    cli.check_gpu_per_process(cfg)
    if args.amp:
        cli.use_amp(cfg)
    cli.fall_back_to_fp32_without_gpu(cfg)
    if args.auto_scale_lr:
        cli.enable_auto_scale_lr(cfg)
    cli.set_resume(cfg, args.resume)
    # config errors that need the registries, before anything is built, printed or written
    cli.check_archs(cfg)
    cli.check_checkpoints(cfg, load_from_what={None: 'load_from', 'auto': '--resume (the '
                                               'latest checkpoint in the work dir)'}.get(
                                                   args.resume, '--resume'))

    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    _run['runner'] = runner
    runner.train()
    cli.close_process_group()
    return runner


def interrupted():
    """The one line printed on Ctrl-C: where training stopped, the last complete
    checkpoint, the command that resumes. Only rank 0 prints it."""
    import os
    if os.environ.get('RANK', '0') != '0':
        return False
    args = _run.get('args')
    if args is None:
        return 'interrupted'
    cfg = _run.get('cfg')
    work_dir = cfg.work_dir if cfg is not None else args.work_dir or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    runner = _run.get('runner')
    if runner is not None:
        from mmmambaout.utils.cli import training_progress
        progress = training_progress(runner)
    else:
        progress = 'before training started'
    return cli_base.training_interrupted_message(
        progress, work_dir, cli_base.resume_command(_run['argv'], work_dir))


if __name__ == '__main__':
    sys.exit(cli_base.run_cli(main, on_interrupt=interrupted))
