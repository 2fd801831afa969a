"""Build one training step of any config (model, optimizer wrapper, synthetic batch).

Shared by the benchmarks and the profiler in ``tools/analysis``: they must time exactly
the same model and step. Upstream configs are named ``mmdet::path/in/their/configs.py`` or
``mmseg::...``.
"""
import contextlib
import logging
import os.path as osp

from mmengine.config import Config

from mmmambaout.utils.cli import disable_pretrained
from mmmambaout.utils.synthetic import batch_for


def config_path(name: str) -> str:
    """The file of config ``name`` (``mmdet::...`` / ``mmseg::...``: the installed
    package's); FileNotFoundError if there is none."""
    if '::' in name:
        pkg, rel = name.split('::', 1)
        module = __import__(pkg)
        name = osp.join(osp.dirname(module.__file__), '.mim', 'configs', rel)
    if not osp.isfile(name):
        raise FileNotFoundError(f'config {name!r} not found')
    return name


def resolve_config(name: str) -> Config:
    return Config.fromfile(config_path(name))


@contextlib.contextmanager
def _quiet_mmengine_logs():
    """Hide mmengine's INFO lines (every parameter's initialisation, every param group's
    options: hundreds of lines per model) while a tool builds; warnings still show."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def build_train_step(name, device, amp=False, batch=2, det_size=(1333, 800),
                     seg_size=(512, 512), objects=8, cfg_options=None):
    """``name`` is a config, optionally with overrides after ``#``
    (``configs/x.py#model.backbone.compile_stages=False``, comma-separated). Return
    ``(cfg, model, optim_wrapper, data)``; ``model.train_step(data, optim_wrapper)`` runs
    one iteration. The model is what the config names (``configs/stock/`` for the stock
    components); a ``MambaOutCompileHook`` in the config is applied as in training
    (on CUDA with Triton); pretrained init is off, SyncBN becomes BN, ``amp`` swaps in an
    ``AmpOptimWrapper`` with dynamic loss scale (and forces it off when ``False``)."""
    from mmengine.optim import build_optim_wrapper
    cfg, model = build_model(name, device, cfg_options)
    model.train()
    optim_cfg = cfg.optim_wrapper.copy()
    if amp:
        optim_cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
    elif optim_cfg.get('type') == 'AmpOptimWrapper':
        optim_cfg.type = 'OptimWrapper'
        optim_cfg.pop('loss_scale', None)
    with _quiet_mmengine_logs():
        optim_wrapper = build_optim_wrapper(model, optim_cfg)
    apply_compile_hooks(cfg, model, optim_wrapper)
    data = batch_for(cfg, batch, det_size, seg_size, objects=objects)
    return cfg, model, optim_wrapper, data


def build_model(name, device, cfg_options=None):
    """``(cfg, model)`` of config ``name`` (overrides after ``#`` as in
    :func:`build_train_step`, then ``cfg_options``), initialised from scratch (pretrained
    init off), SyncBN reverted to BN, on ``device``."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    name, _, overrides = name.partition('#')
    cfg = resolve_config(name)
    cfg_options = dict(cfg_options or {})
    cfg_options.update(parse_cfg_options(overrides.split(',') if overrides else []))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    disable_pretrained(cfg.model)
    init_default_scope(cfg.default_scope)
    __import__(f'{cfg.default_scope}.models')
    model = MODELS.build(cfg.model)
    with _quiet_mmengine_logs():
        model.init_weights()
    return cfg, revert_sync_batchnorm(model).to(device)


def apply_compile_hooks(cfg, model, optim_wrapper):
    """What the config's ``MambaOutCompileHook`` does when training starts, without a
    Runner (one process)."""
    from types import SimpleNamespace

    from mmengine.logging import MMLogger
    from mmengine.registry import HOOKS
    for hook_cfg in cfg.get('custom_hooks', []):
        if hook_cfg.get('type') == 'MambaOutCompileHook':
            hook = HOOKS.build(dict(hook_cfg))
            hook.before_train(SimpleNamespace(model=model, optim_wrapper=optim_wrapper,
                                              logger=MMLogger.get_current_instance()))


def parse_cfg_options(pairs):
    """``['a.b=1', 'c=x']`` -> dict, values parsed as Python literals where possible."""
    import ast
    out = {}
    for pair in pairs or ():
        if '=' not in pair:
            raise ValueError(f'--cfg-options entries look like key=value, got {pair!r}')
        key, value = pair.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out
