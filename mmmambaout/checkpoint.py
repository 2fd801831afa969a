"""Checkpoints of every family: safe reading, unwrapping, key conversion, loading into a
model, and released weights by URL.

Safe reading: tensors and plain containers only, never arbitrary code. Every checkpoint
this project reads from outside (released backbones, zoo downloads, user files) goes
through :func:`load_checkpoint_file`. ``.safetensors`` files are read with safetensors;
everything else with ``torch.load(weights_only=True)`` plus the smallest allow-list that
the released files need (Vim's checkpoints keep their ``argparse.Namespace`` of training
arguments under ``'args'``). A pickle that asks for anything else is refused with an
explanation instead of being executed.

Layout of this file, top to bottom: safe reading; unwrapping (:func:`extract_state_dict`)
and loading a converted state dict into a module; MambaOut (official release, timm and
our formats -> ours); Vim (upstream names are ours); loaders of released weights by URL
for mmengine (``load_from=<url>``).
"""
import argparse
import logging
import pickle
import re
from typing import Optional

import torch

# Classes that released checkpoints legitimately contain besides tensors and containers.
RELEASED_CHECKPOINT_GLOBALS = (argparse.Namespace, )


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint needs classes outside the allow-list to be unpickled."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or is not a checkpoint at all."""


def load_checkpoint_file(path, map_location='cpu'):
    """Load a checkpoint file without executing pickled code.

    Args:
        path (str | os.PathLike): a ``.pth``/``.pt``/``.bin``/``.ckpt`` pickle file or a
            ``.safetensors`` file; or an http(s) URL or a model zoo name, downloaded into
            the cache first (see :func:`mmmambaout.zoo.resolve_checkpoint`).
        map_location: as for :func:`torch.load`.

    Returns:
        dict: whatever the file holds (a state dict, or a dict around one).
    """
    from .zoo import resolve_checkpoint  # a path, an http(s) URL or a model zoo name

    path = resolve_checkpoint(path)
    if path.endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        device = map_location if isinstance(map_location, str) else 'cpu'
        try:
            return load_file(path, device=device)
        except SafetensorError as err:
            raise CorruptCheckpointError(_damaged(path, err)) from err
    try:
        with torch.serialization.safe_globals(list(RELEASED_CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if 'pickle data was truncated' in str(err):
            raise CorruptCheckpointError(_damaged(path, err)) from err
        raise UnsafeCheckpointError(
            f'refused to load {path!r}: it is not a plain weights file. Loading it '
            'would need to unpickle objects outside the allow-list '
            f'({", ".join(c.__module__ + "." + c.__qualname__ for c in RELEASED_CHECKPOINT_GLOBALS)}), '
            'which could run arbitrary code. If you trust the file, re-save its state '
            'dict with `torch.save(obj["state_dict"], new_path)` in a trusted session, '
            f'or convert it to .safetensors. {_refused_global_detail(err)}') from err
    except (PermissionError, FileNotFoundError):
        raise
    except (RuntimeError, EOFError, OSError) as err:  # OSError: seek past a truncated end
        raise CorruptCheckpointError(_damaged(path, err)) from err


def _damaged(path, err):
    return (f'could not read checkpoint {path!r}: the file is damaged (e.g. truncated) or '
            f'not a checkpoint ({type(err).__name__}: {err}). Delete it and download it again.')


def extract_state_dict(checkpoint):
    """Return the state dict inside a loaded checkpoint ('state_dict', 'model' or 'module' wrapper, or itself)."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'expected a dict checkpoint, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model', 'module', 'model_ema'):
        if key in checkpoint and isinstance(checkpoint[key], dict):
            return checkpoint[key]
    return checkpoint


def _strip_prefix(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _select_prefix(state_dict, prefix, source):
    """The keys under ``prefix`` (``'backbone'`` or ``'backbone.'``), prefix removed;
    an error naming ``source`` if there are none."""
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    selected = _strip_prefix(state_dict, prefix)
    if not selected:
        raise ValueError(f'no key of {source} starts with prefix {prefix!r}; first keys: '
                         f'{list(state_dict)[:5]}')
    return selected


def _strip_module(state_dict):
    """Keys saved from a DataParallel / DDP wrapper lose their ``module.``."""
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return _strip_prefix(state_dict, 'module.')
    return state_dict


def load_converted_state_dict(module, state_dict: dict, source,
                              expected_missing: Optional[str] = None):
    """Load ``state_dict`` (our layout) into ``module`` non-strictly and report.

    Raises on shape mismatches (wrong arch) and when no key matches at all; logs missing
    and unexpected keys through the mmengine logger. Missing keys matching the regex
    ``expected_missing`` (e.g. dense output norms absent from classification checkpoints)
    are mentioned at INFO level only.
    """
    from mmengine.logging import print_log

    own = module.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and own[k].shape != v.shape]
    name = type(module).__name__
    if mismatched:
        raise RuntimeError(f'{name}: checkpoint {source} does not fit this model (wrong arch?); '
                           f'{len(mismatched)} shape mismatches, e.g. ' + '; '.join(mismatched[:3]))
    if not any(k in own for k in state_dict):
        raise RuntimeError(f'{name}: no key of checkpoint {source} matches the model, nothing '
                           f'loaded. First checkpoint keys: {list(state_dict)[:5]}; first model '
                           f'keys: {list(own)[:5]}. Wrong file or wrong prefix?')
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    expected = [k for k in missing if expected_missing and re.match(expected_missing, k)]
    missing = [k for k in missing if k not in expected]
    print_log(f'{name}: loaded {len(state_dict) - len(unexpected)} tensors from {source}',
              logger='current', level=logging.INFO)
    if expected:
        print_log(f'{name}: initialised from scratch (not in the checkpoint, as expected): '
                  f'{", ".join(expected)}', logger='current', level=logging.INFO)
    if missing:
        print_log(f'{name}: missing keys in {source}: {", ".join(missing)}',
                  logger='current', level=logging.WARNING)
    if unexpected:
        print_log(f'{name}: unexpected keys in {source}: {", ".join(unexpected)}',
                  logger='current', level=logging.WARNING)
    return missing, unexpected


# -- MambaOut ------------------------------------------------------------------------------
# Our layout: stem.*, stages.{i}.downsample.*, stages.{i}.blocks.{j}.*, norm{i} (dense
# outputs) and head.{norm,fc1,hidden_norm,fc2} (MambaOutClsHead); see models/backbones/
# mambaout.py.
_OFFICIAL_MARKERS = re.compile(r'^(downsample_layers\.|stages\.\d+\.\d+\.|norm\.)')


def checkpoint_format(state_dict) -> str:
    """``'official'`` (yuweihao/MambaOut release) or ``'timm'`` / ``'ours'`` (same backbone)."""
    if any(_OFFICIAL_MARKERS.match(k) for k in state_dict):
        return 'official'
    if any(k.startswith('head.pre_logits.') or k.startswith('head.fc.') for k in state_dict):
        return 'timm'
    return 'ours'


def convert_official_key(key: str) -> str:
    key = re.sub(r'^downsample_layers\.0\.', 'stem.', key)
    key = re.sub(r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.', key)
    key = re.sub(r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.', key)
    key = re.sub(r'^head\.norm\.', 'head.hidden_norm.', key)   # LN(4C) inside the MLP
    key = re.sub(r'^norm\.', 'head.norm.', key)                  # LN after pooling
    return key


def convert_timm_key(key: str) -> str:
    key = re.sub(r'^head\.pre_logits\.fc\.', 'head.fc1.', key)
    key = re.sub(r'^head\.pre_logits\.norm\.', 'head.hidden_norm.', key)
    key = re.sub(r'^head\.fc\.', 'head.fc2.', key)
    return key


def checkpoint_filter_fn(state_dict: dict) -> dict:
    """Official or timm MambaOut state dict -> our layout (backbone keys + ``head.*``).

    Our own layout passes through unchanged, so the function is idempotent.
    """
    fmt = checkpoint_format(state_dict)
    convert = {'official': convert_official_key, 'timm': convert_timm_key}.get(fmt)
    if convert is None:
        return dict(state_dict)
    return {convert(k): v for k, v in state_dict.items()}


def load_mambaout_state_dict(checkpoint, prefix: Optional[str] = None) -> dict:
    """Load a checkpoint (path, or whatever ``load_checkpoint_file`` accepts) in any
    supported format and return it in our layout: backbone keys plus ``head.*`` keys.

    ``prefix`` (e.g. ``'backbone.'``) selects and strips the keys under it. Without one,
    a wrapping ``module.`` is removed, and a file with only ``backbone.*`` model keys
    (an mmdet / mmseg / mmpretrain checkpoint) is read as its backbone plus ``head.*``.
    """
    if isinstance(checkpoint, dict):
        state_dict = extract_state_dict(checkpoint)
        source = 'the given state dict'
    else:
        state_dict = extract_state_dict(load_checkpoint_file(checkpoint))
        source = repr(checkpoint)
    if prefix:
        state_dict = _select_prefix(state_dict, prefix, source)
    else:
        state_dict = _strip_module(state_dict)
        if any(k.startswith('backbone.') for k in state_dict) and not any(
                k.startswith(('stem.', 'stages.', 'downsample_layers.')) for k in state_dict):
            backbone = _strip_prefix(state_dict, 'backbone.')
            backbone.update({k: v for k, v in state_dict.items() if k.startswith('head.')})
            state_dict = backbone
    return checkpoint_filter_fn(state_dict)


def mambaout_model_state_dict(state_dict: dict) -> dict:
    """Our layout -> keys of a whole model (``backbone.*`` plus ``head.*``), as mmpretrain's
    ``ImageClassifier`` (and mmdet / mmseg models, for the backbone part) name them."""
    return {(k if k.startswith('head.') else 'backbone.' + k): v for k, v in state_dict.items()}


# -- Vim -----------------------------------------------------------------------------------
def load_vim_state_dict(checkpoint, prefix: Optional[str] = None, return_args: bool = False):
    """Load a Vim checkpoint (official: ``{'model': ..., 'args': Namespace, ...}``; or an
    mmdet / mmseg / mmpretrain checkpoint of ours) safely and return backbone keys in
    upstream naming plus ``head.*`` (and the training ``args`` if asked).

    ``prefix`` (e.g. ``'backbone.'``) selects and strips the keys under it. Without one, a
    wrapping ``module.`` is removed, and a file whose model keys are under ``backbone.``
    is read as its backbone, with ``head.fc.*`` renamed ``head.*``.
    """
    raw = checkpoint if isinstance(checkpoint, dict) else load_checkpoint_file(checkpoint)
    args = raw.get('args') if isinstance(raw, dict) else None
    state_dict = extract_state_dict(raw)
    if prefix:
        source = repr(checkpoint) if isinstance(checkpoint, str) else 'the given state dict'
        state_dict = _select_prefix(state_dict, prefix, source)
    else:
        state_dict = _strip_module(state_dict)
        if any(k.startswith('backbone.') for k in state_dict) and 'pos_embed' not in state_dict:
            out = _strip_prefix(state_dict, 'backbone.')
            out.update({'head.' + k: v for k, v in _strip_prefix(state_dict, 'head.fc.').items()})
            state_dict = out
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith('rope.')}
    return (state_dict, args) if return_args else state_dict


def vim_model_state_dict(state_dict: dict) -> dict:
    """Upstream keys -> an mmpretrain ``ImageClassifier`` with ``LinearClsHead``:
    ``backbone.*`` and ``head.fc.*``."""
    return {('head.fc.' + k[5:] if k.startswith('head.') else 'backbone.' + k): v
            for k, v in state_dict.items()}


# -- released weights by URL ---------------------------------------------------------------
#: ``load_from=<URL>`` under these prefixes (our ImageNet configs) reads the released
#: weights with the loaders below instead of mmengine's plain ``torch.load``
MAMBAOUT_RELEASE_URL = 'https://github.com/yuweihao/MambaOut/releases/download/model/'
VIM_RELEASE_URL_PREFIX = 'https://huggingface.co/hustvl/Vim-'


def release_loader(load_model_state_dict):
    """A loader for mmengine's ``CheckpointLoader``: ``load(filename, map_location)``
    returns ``{'state_dict': load_model_state_dict(filename)}`` (the whole model's state
    dict with our key names), moved to ``map_location``."""

    def load(filename, map_location=None):
        state_dict = load_model_state_dict(filename)
        if isinstance(map_location, (str, torch.device)):
            state_dict = {k: v.to(map_location) for k, v in state_dict.items()}
        return {'state_dict': state_dict}

    return load


RELEASE_LOADERS = {
    MAMBAOUT_RELEASE_URL: release_loader(
        lambda filename: mambaout_model_state_dict(load_mambaout_state_dict(filename))),
    VIM_RELEASE_URL_PREFIX: release_loader(
        lambda filename: vim_model_state_dict(load_vim_state_dict(filename))),
}
_release_loaders_registered = False


def register_release_loaders():
    """Let mmengine load released weights by URL (``load_from=<url>``, which
    ``tools/test.py`` uses without running ``init_weights``): a registration in
    mmengine's ``CheckpointLoader`` of :data:`RELEASE_LOADERS` under their URL prefixes
    (ours: mmengine has no loader for them; a longer prefix wins over its ``https://``).
    ``import mmmambaout`` calls it; once per process."""
    global _release_loaders_registered
    if _release_loaders_registered:
        return
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, load in RELEASE_LOADERS.items():
        CheckpointLoader.register_scheme(prefix, load)
    _release_loaders_registered = True


def _refused_global_detail(err):
    """What a refused ``torch.load(weights_only=True)`` asked for, without torch's advice
    (which suggests turning weights_only off)."""
    from .utils.checkpoint_check import refused_global
    name = refused_global(err)
    return f'It asks for {name}.' if name else ''
