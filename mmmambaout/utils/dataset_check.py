"""Fail early, with one clear message, when a config's dataset is not on disk or its
classes do not match the model's heads.

Called by ``tools/train.py`` and ``tools/test.py`` before any model is built, so a
user who has not yet placed COCO or ADE20K learns in a second what is expected where
and which ``--cfg-options`` key moves it, instead of reading a traceback from deep
inside a dataset class minutes later; and one who trains on their own classes learns
before training, not at the first evaluation, that the heads need their number.
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


class ClassCountError(UserError, ValueError):
    """The dataset's classes and the model's heads disagree in number."""


# heads whose outputs are the dataset's classes (an RPN's one class is not); in panoptic
# metainfo the detection heads predict the thing classes
CLASS_HEADS = ('roi_head.bbox_head', 'roi_head.mask_head', 'bbox_head', 'mask_head',
               'decode_head', 'auxiliary_head')
THING_HEADS = ('roi_head.bbox_head', 'roi_head.mask_head', 'bbox_head', 'mask_head')


def head_class_counts(model_cfg):
    """``[(head key, key path of num_classes, num_classes)]`` of every head in
    ``model_cfg`` that predicts the dataset's classes (lists of heads, as in Cascade
    R-CNN, item by item). None for models that ground text (their heads' ``num_classes``
    is a text length, not a class count)."""
    if 'language_model' in model_cfg:
        return None
    counts = []
    for key in CLASS_HEADS:
        node = model_cfg
        for part in key.split('.'):
            node = node.get(part) if isinstance(node, dict) else None
        items = enumerate(node) if isinstance(node, (list, tuple)) else [(None, node)]
        for i, head in items:
            if isinstance(head, dict) and isinstance(head.get('num_classes'), int):
                path = f'model.{key}' + ('' if i is None else f'.{i}')
                counts.append((key, f'{path}.num_classes', head['num_classes']))
    return counts


def _count(names):
    """How many classes a ``metainfo`` entry names: a sequence, or (as mmengine reads a
    string) the lines of a file; None when that cannot be told here."""
    if isinstance(names, str):
        if not osp.isfile(names):
            return None
        from mmengine.fileio import list_from_file
        return len(list_from_file(names))
    return len(names)


def _plural(n, word):
    return f'{n} {word}' + ('' if n == 1 else 'es' if word.endswith('s') else 's')


def check_num_classes(cfg: Config, loaders=ALL_LOADERS):
    """Raise :class:`ClassCountError` when a dataset names its classes
    (``metainfo.classes``) and a head predicts another number of them: with more, the
    first evaluation fails on a class the dataset does not have; with fewer, training
    fails on a label the head cannot predict. Loaders whose datasets name different
    numbers (a concatenation of sets with their own classes) are not checked."""
    heads = head_class_counts(cfg.get('model') or {})
    if not heads:
        return
    for loader in loaders:
        if not cfg.get(loader):
            continue
        named = []
        for key_path, ds in _dataset_cfgs(cfg[loader]['dataset'], f'{loader}.dataset'):
            meta = ds.get('metainfo') or {}
            if meta.get('classes') is None:
                continue
            things = _count(meta['thing_classes']) if 'thing_classes' in meta else None
            named.append((key_path, _count(meta['classes']), things))
        if not named or len({n[1:] for n in named}) > 1 or named[0][1] is None:
            continue
        key_path, n, things = named[0]
        wrong = []
        for key, path, count in heads:
            expected = things if things is not None and key in THING_HEADS else n
            if count != expected:
                wrong.append((path, count, expected))
        if wrong:
            what = (f'{key_path}.metainfo names {_plural(n, "class")}'
                    + (f', {things} of them things' if things is not None else ''))
            raise ClassCountError(
                f'{what}, but ' + ', '.join(f'{path}={count}' for path, count, _ in wrong)
                + '. Each head must predict as many classes as the dataset has (more: the '
                'evaluation fails on classes the dataset lacks; fewer: training fails on '
                'labels the head cannot predict). Set the heads to the dataset\'s classes:\n'
                '  --cfg-options ' + ' '.join(f'{path}={expected}' for path, _, expected in wrong)
                + f'\nor, if the model\'s classes are the ones you meant, name those in '
                f'{key_path}.metainfo.classes.')
