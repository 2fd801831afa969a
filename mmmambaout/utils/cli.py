"""Shared pieces of ``tools/train.py`` and ``tools/test.py``.

One entry point serves detection, segmentation and classification configs: the
config's ``default_scope`` (mmdet, mmseg, mmpretrain) picks the few behaviours that
differ between the upstream tools (how ``--out`` and ``--show-dir`` are wired).
"""
import os
import os.path as osp
import warnings

from mmengine.config import Config, DictAction

SUPPORTED_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def add_common_args(parser):
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings in the config, key=value pairs, e.g. '
        'train_dataloader.dataset.data_root=/data/coco/ or key="[a,b]"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args):
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file not found: {args.config}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SUPPORTED_SCOPES:
        raise ValueError(f'{args.config}: default_scope must be one of {SUPPORTED_SCOPES}, '
                         f'got {scope!r}')
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def use_amp(cfg):
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


def fall_back_to_fp32_without_gpu(cfg):
    """AmpOptimWrapper needs a GPU; on a CPU-only machine train in fp32 instead of failing."""
    import torch
    if cfg.optim_wrapper.get('type') != 'AmpOptimWrapper' or torch.cuda.is_available():
        return
    warnings.warn('the config trains with CUDA mixed precision (AmpOptimWrapper) but no GPU '
                  'is available: training in fp32 with OptimWrapper instead')
    cfg.optim_wrapper.type = 'OptimWrapper'
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        cfg.optim_wrapper.pop(key, None)


def distribute_on_cpu_without_gpu(cfg):
    """Multi-process runs on a CPU-only machine: a gloo process group (mmengine's own
    init_dist calls torch.cuda.set_device), and DDP without device ids (mmengine passes
    the local rank as a CUDA device id)."""
    import torch
    import torch.distributed as dist
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'--launcher {cfg.launcher} without a GPU is not supported; '
                           'use tools/dist_train.sh (torchrun, --launcher pytorch)')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    _replace_sync_bn(cfg.model)  # SyncBatchNorm runs on CUDA only
    if not dist.is_initialized():
        dist.init_process_group('gloo')  # reads torchrun's RANK, WORLD_SIZE, MASTER_*
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.update(device_ids=None, broadcast_buffers=False,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


def config_dicts(node):
    """Every dict in a nested config (the node itself, its values, list items, ...)."""
    if isinstance(node, dict):
        yield node
        children = node.values()
    elif isinstance(node, (list, tuple)):
        children = node
    else:
        return
    for child in children:
        yield from config_dicts(child)


def _replace_sync_bn(model_cfg):
    for node in config_dicts(model_cfg):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'


def enable_auto_scale_lr(cfg):
    if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
        cfg.auto_scale_lr.enable = True
    else:
        raise RuntimeError('--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                           'base_batch_size=16)` in the config')


def set_resume(cfg, resume):
    """``--resume`` alone: latest checkpoint in work_dir (``<work_dir>/last_checkpoint``),
    or, with none there, a fresh start said in one line; ``--resume CKPT``: that one."""
    if resume == 'auto':
        pointer = osp.join(cfg.work_dir, 'last_checkpoint')
        latest = open(pointer).read().strip() if osp.isfile(pointer) else ''
        if not latest:
            print(f'--resume: no checkpoint to resume in {cfg.work_dir} (no last_checkpoint '
                  'there): starting from scratch', flush=True)
            cfg.resume = False
            return
        if not osp.isfile(latest):
            raise FileNotFoundError(f'--resume: {pointer} names {latest}, which does not exist')
        cfg.resume = True
        cfg.load_from = latest
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume: checkpoint not found: {resume}')
        cfg.resume = True
        cfg.load_from = resume


def set_test_outputs(cfg, out=None, show_dir=None, show=False, wait_time=2):
    """Wire ``--out`` / ``--show-dir`` / ``--show`` the way each upstream test.py does."""
    scope = cfg.default_scope
    if show or show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise RuntimeError('--show/--show-dir need a visualization hook in default_hooks')
        if scope not in ('mmdet', 'mmseg'):
            raise RuntimeError(f'--show/--show-dir is not supported for {scope} configs')
        vis.draw, vis.interval, vis.show, vis.wait_time = True, 1, show, wait_time
        if show_dir and scope == 'mmdet':
            vis.test_out_dir = show_dir
        elif show_dir:
            cfg.visualizer.save_dir = show_dir
    if out:
        if scope == 'mmdet':
            if not out.endswith(('.pkl', '.pickle')):
                raise ValueError('--out must be a .pkl file for detection configs')
            _append_test_metric(cfg, dict(type='DumpDetResults', out_file_path=out))
        elif scope == 'mmseg':
            cfg.test_evaluator['output_dir'] = out
            cfg.test_evaluator['keep_results'] = True
        else:
            _append_test_metric(cfg, dict(type='mmpretrain.DumpResults', out_file_path=out))


def _append_test_metric(cfg, metric):
    evaluator = cfg.test_evaluator
    evaluator = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    cfg.test_evaluator = evaluator + [metric]


def disable_pretrained(model_cfg):
    """Remove every Pretrained init and ``pretrained=`` so nothing is downloaded."""
    for node in config_dicts(model_cfg):
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        if 'pretrained' in node:
            node['pretrained'] = None
