"""Shared pieces of ``tools/train.py`` and ``tools/test.py``.

One entry point serves detection, segmentation and classification configs: the
config's ``default_scope`` (mmdet, mmseg, mmpretrain) picks the few behaviours that
differ between the upstream tools (how ``--out`` and ``--show-dir`` are wired).
"""
import os.path as osp
import warnings

from . import cli_base
# the tools' first steps (standard library and mmengine.config only) live in cli_base
from .cli_base import (SUPPORTED_SCOPES, UserError, add_common_args,  # noqa: F401
                       check_config_path, config_nodes, run_cli)


def load_config(args):
    """The config with ``--cfg-options`` applied and checked (:func:`cli_base.load_config`,
    then what needs the registries: ``custom_imports`` and the argument names of
    :func:`check_new_cfg_keys`)."""
    cfg = cli_base.load_config(args)
    finish_config(cfg, args)
    return cfg


def finish_config(cfg, args):
    """The part of :func:`load_config` that needs OpenMMLab's registries, for a config
    that :func:`cli_base.load_config` read: run ``custom_imports``, check the new
    ``--cfg-options`` keys against the class signatures."""
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    check_new_cfg_keys(cfg, getattr(args, 'new_cfg_keys', ()))


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


# the environment variable that holds a process's rank on its node, per launcher
LOCAL_RANK_VARS = {'pytorch': 'LOCAL_RANK', 'slurm': 'SLURM_LOCALID',
                   'mpi': 'OMPI_COMM_WORLD_LOCAL_RANK'}


def check_gpu_per_process(cfg):
    """A distributed launch on GPUs needs a GPU for each process of a node: say so, instead
    of CUDA's "invalid device ordinal" traceback from inside mmengine's ``init_dist``."""
    import os

    import torch
    var = LOCAL_RANK_VARS.get(cfg.launcher)
    if var is None or not torch.cuda.is_available() or var not in os.environ:
        return
    local_rank, count = int(os.environ[var]), torch.cuda.device_count()
    if local_rank >= count:
        visible = os.environ.get('CUDA_VISIBLE_DEVICES')
        raise UserError(
            f'process {local_rank} of this node has no GPU: {count} visible'
            + (f' (CUDA_VISIBLE_DEVICES={visible})' if visible is not None else '')
            + '. Start one process per GPU, e.g. tools/dist_train.sh CONFIG '
            f'{count} (slurm: GPUS_PER_NODE={count}).')


def close_process_group():
    """End a distributed run with every rank: a barrier, then the process group destroyed,
    while all peers still answer. (A rank that exits with its group open while another
    still talks to the store can be aborted at exit: seen with two nodes on one host.)"""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
            raise UserError(f'--resume: {pointer} names {latest}, which does not exist. Point '
                            'it at a checkpoint of this run, or give one: --resume CKPT')
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


# -- user errors in the config that need the registries, found before anything is built --


def check_new_cfg_keys(cfg, new_keys):
    """Rule 3 of :func:`cli_base.check_cfg_options`: a ``--cfg-options`` key that the
    config did not have, set under a dict whose ``type`` is a registered class, must be
    an argument of that class: a parameter of its ``__init__``, or of a base class's
    ``__init__`` that it reaches through ``**kwargs`` (e.g. ``model.backbone.with_cp=True``
    is one; ``model.backbone.drop_path_rat=0.1`` is not; a key with sub-keys sets the
    argument named after the parent: ``train_dataloader.dataset.metainfo.classes=...``
    sets ``metainfo``). When the class cannot be told
    (no ``type``, a name registered as different objects, a signature that cannot be
    read, ``**kwargs`` of a function) the key is accepted.

    Args:
        new_keys: ``[(key, parent key path)]`` from :func:`cli_base.check_cfg_options`.
    """
    scope = cfg.get('default_scope')
    for key, parent_path in new_keys:
        node = cli_base.get_key_path(cfg, parent_path)
        if not isinstance(node, dict):
            continue
        leaf = key[len(parent_path) + 1:].split('.')[0]   # the argument the key sets
        obj = registered_type(node.get('type'), scope)
        if obj is None or _init_accepts(obj, leaf) is not False:
            continue
        name = getattr(obj, '__name__', str(node.get('type')))
        params = sorted(_init_parameters(obj))
        candidates = [f'{parent_path}.{p}' for p in params] + cli_base.config_keys(cfg)
        missing = ('' if key == f'{parent_path}.{leaf}' else
                   f'the config has no {parent_path}.{leaf}, and ')
        raise UserError(cli_base.unknown_key_message(
            key, f'{missing}{name} ({parent_path}.type) has no argument {leaf!r}; its '
            f'arguments: {", ".join(params)}', None, candidates))


def registered_type(type_, scope):
    """The class (or function) a config ``type`` names in ``scope``'s registries, or None
    when it is not registered or names different objects in different registries."""
    import importlib
    if type_ is None:
        return None
    if not isinstance(type_, str):
        return type_ if callable(type_) else None
    from mmengine.registry import Registry
    try:
        module = importlib.import_module(f'{scope}.registry')
    except ImportError:
        return None
    found = []
    for registry in vars(module).values():
        if not isinstance(registry, Registry):
            continue
        try:
            obj = registry.get(type_)
        except Exception:  # a registry whose lazy imports fail: not ours to report here
            obj = None
        if obj is not None and not any(obj is f for f in found):
            found.append(obj)
    return found[0] if len(found) == 1 else None


def _init_signatures(obj):
    """Signatures of ``obj``'s ``__init__`` and of the base ``__init__``s it reaches
    through ``**kwargs``; ends with None when a signature cannot be read."""
    import inspect
    if not inspect.isclass(obj):
        try:
            yield inspect.signature(obj)
        except (TypeError, ValueError):
            yield None
        return
    for klass in obj.__mro__:
        init = vars(klass).get('__init__')
        if init is None:
            continue
        if klass is object:
            return
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            yield None
            return
        yield sig
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            return


def _init_parameters(obj):
    names = set()
    for sig in _init_signatures(obj):
        if sig is not None:
            names |= {n for n, p in sig.parameters.items()
                      if n != 'self' and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return names


def _init_accepts(obj, name):
    """True / False, or None when it cannot be told."""
    import inspect
    sig = None
    for sig in _init_signatures(obj):
        if sig is None:
            return None
        if name in sig.parameters:
            return True
    if not inspect.isclass(obj) and sig is not None and any(
            p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None  # a function's **kwargs go where we cannot follow
    return False


def check_archs(cfg):
    """Raise :class:`UserError` if a MambaOut / Vim ``arch`` in ``cfg.model`` is unknown
    (the backbone's own message: the valid archs), before any model is built."""
    from mmmambaout.models.backbones.base import ArchBackbone
    scope = cfg.get('default_scope')
    for path, node in config_nodes(cfg.get('model'), 'model'):
        if 'arch' not in node or 'type' not in node:
            continue
        cls = registered_type(node['type'], scope)
        if not (isinstance(cls, type) and issubclass(cls, ArchBackbone)):
            continue
        try:
            cls._parse_arch(node['arch'])
        except (ValueError, TypeError) as err:
            first = next(iter(cls.arch_settings), 'tiny')
            raise UserError(f'{path}.arch: {err}. Fix it in the config, or e.g. '
                            f'--cfg-options {path}.arch={first}') from None


def check_checkpoints(cfg, load_from_what='load_from', init_cfgs=True):
    """Load, as the run will but with the tensors memory-mapped, every checkpoint file it
    will read: ``cfg.load_from`` (named ``load_from_what`` in messages) and, with
    ``init_cfgs``, each ``init_cfg=dict(type='Pretrained', checkpoint=FILE)`` under
    ``cfg.model``. A damaged file, or one that needs code to be unpickled, raises
    :class:`UserError` before anything is built. :func:`cli_base.check_config_checkpoints`
    has already refused missing files and files that are not checkpoints."""
    from mmmambaout.checkpoint import RELEASED_CHECKPOINT_GLOBALS
    from mmmambaout.compat.mmengine_checkpoint import mmengine_checkpoint_globals
    from mmmambaout.models.backbones.base import ArchBackbone

    from .checkpoint_check import check_checkpoint_loads
    load_from = cfg.get('load_from')
    if load_from and osp.isfile(osp.expanduser(str(load_from))):
        check_checkpoint_loads(osp.expanduser(str(load_from)), load_from_what,
                               allowed_globals=mmengine_checkpoint_globals())
    if not init_cfgs:
        return
    scope = cfg.get('default_scope')
    for key, node, init in cli_base.pretrained_init_cfgs(cfg):
        spec = osp.expanduser(str(init['checkpoint']))
        if not osp.isfile(spec):
            continue  # a URL or a zoo name: downloaded (and checked) when used
        cls = registered_type(node.get('type'), scope)
        ours = isinstance(cls, type) and issubclass(cls, ArchBackbone)
        # our backbones read it with load_checkpoint_file, others with mmengine's loader
        check_checkpoint_loads(spec, f'{key}.checkpoint', allowed_globals=(
            RELEASED_CHECKPOINT_GLOBALS if ours else mmengine_checkpoint_globals()))


def training_progress(runner):
    """Where a (possibly interrupted) training run is: 'in epoch 3/12 after 2401
    iterations', 'after iteration 2400/160000' or 'before training started'."""
    from mmengine.runner import BaseLoop, IterBasedTrainLoop
    loop = getattr(runner, '_train_loop', None) if runner is not None else None
    if not isinstance(loop, BaseLoop):
        return 'before training started'
    it = getattr(loop, '_iter', None)
    max_epochs = getattr(loop, '_max_epochs', None)
    if (not isinstance(loop, IterBasedTrainLoop) and max_epochs is not None
            and getattr(loop, '_epoch', None) is not None):
        return (f'in epoch {min(loop._epoch + 1, max_epochs)}/{max_epochs} '
                f'after {it} iterations')
    max_iters = getattr(loop, '_max_iters', None)
    return f'after iteration {it}/{max_iters}' if max_iters else f'after iteration {it}'
