"""Fail early, with one clear message, when a config's dataset is not on disk.

Called by ``tools/train.py`` and ``tools/test.py`` before any model is built, so a
user who has not yet placed COCO or ADE20K learns in a second what is expected where
and which ``--cfg-options`` key moves it, instead of reading a traceback from deep
inside a dataset class minutes later.
"""
import os
import os.path as osp

from mmengine.config import Config

from .cli_base import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A user error (the tools print its message alone, exit status 2), and a
    FileNotFoundError for code that catches those."""


def _dataset_cfgs(cfg, key_path):
    """Yield (key path, dataset cfg) of every leaf dataset below ``cfg``, through wrappers."""
    if 'dataset' in cfg:  # RepeatDataset, ClassBalancedDataset, MultiImageMixDataset
        yield from _dataset_cfgs(cfg['dataset'], f'{key_path}.dataset')
    elif 'datasets' in cfg:  # ConcatDataset
        for i, sub in enumerate(cfg['datasets']):
            yield from _dataset_cfgs(sub, f'{key_path}.datasets.{i}')
    else:
        yield key_path, cfg


def _join(root, path):
    return path if not root or osp.isabs(path) else osp.join(root, path)


def _expected_paths(ds):
    """(what, path, must_be) for the files / folders a dataset needs."""
    root = ds.get('data_root', '') or ''
    if ds.get('ann_file'):
        yield 'annotation file', _join(root, ds['ann_file']), 'file'
    prefix = ds.get('data_prefix', {}) or {}
    for key in ('img', 'img_path', 'seg_map_path', 'seg'):
        if prefix.get(key):
            yield f'data_prefix.{key} folder', _join(root, prefix[key]), 'nonempty_dir'


ALL_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def find_missing_dataset_paths(cfg, loaders=ALL_LOADERS):
    """Return [(loader key path, what, path)] of everything missing or empty."""
    missing = []
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for key_path, ds in _dataset_cfgs(cfg[loader]['dataset'], f'{loader}.dataset'):
            for what, path, must_be in _expected_paths(ds):
                if path.startswith(('s3:', 'http:', 'https:', 'petrel:')):
                    continue  # remote backends: the dataset itself reports
                ok = osp.isfile(path) if must_be == 'file' else _is_nonempty_dir(path)
                if not ok:
                    missing.append((key_path, what, path))
    return missing


def _is_nonempty_dir(path):
    if not osp.isdir(path):
        return False
    with os.scandir(path) as entries:
        return next(entries, None) is not None


def check_dataset_paths(cfg: Config, loaders=ALL_LOADERS):
    """Raise :class:`DatasetNotFoundError` listing every missing dataset path."""
    missing = find_missing_dataset_paths(cfg, loaders)
    if not missing:
        return
    lines = [f'  {path}  ({what}, from {key})' for key, what, path in missing]
    keys = list(dict.fromkeys(key for key, _, _ in missing))  # train, val, test order
    fix = ' '.join(f'{k}.data_root=/path/to/dataset' for k in keys)
    raise DatasetNotFoundError(
        'dataset not found or incomplete. Expected:\n' + '\n'.join(lines) +
        '\nPlace the dataset there (relative paths are relative to the current '
        'directory), or point the config at it, e.g.\n  --cfg-options ' + fix +
        '\nFor a quick try without any download, run the demo: see README.')
