"""Safe checkpoint loading: tensors and plain containers only, never arbitrary code.

Every checkpoint this project reads from outside (released backbones, zoo downloads,
user files) goes through :func:`load_checkpoint_file`. ``.safetensors`` files are read
with safetensors; everything else with ``torch.load(weights_only=True)`` plus the
smallest allow-list that the released files need (Vim's checkpoints keep their
``argparse.Namespace`` of training arguments under ``'args'``). A pickle that asks for
anything else is refused with an explanation instead of being executed.
"""
import argparse
import pickle

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
            f'or convert it to .safetensors. Details: {err}') from err
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


def register_release_loader(url_prefix, load_model_state_dict):
    """Let mmengine load released weights by URL (``load_from=<url>``, which
    ``tools/test.py`` uses without running ``init_weights``): files whose name starts with
    ``url_prefix`` are read by ``load_model_state_dict(filename)``, which returns the whole
    model's state dict with our key names. Returns the registered loader."""
    from mmengine.runner.checkpoint import CheckpointLoader

    def load(filename, map_location=None):
        state_dict = load_model_state_dict(filename)
        if isinstance(map_location, (str, torch.device)):
            state_dict = {k: v.to(map_location) for k, v in state_dict.items()}
        return {'state_dict': state_dict}

    CheckpointLoader.register_scheme(url_prefix, load, force=True)
    return load
