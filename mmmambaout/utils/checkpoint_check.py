"""Check, before anything is built, that a checkpoint file will load: one clear error.

:func:`check_checkpoint_loads` runs what the real load will run, ``torch.load`` with only
tensors, containers and an allow-list of globals, but memory-maps the tensors instead
of reading them, so a large checkpoint costs milliseconds. A file that is missing, not a
checkpoint (told from its bytes), damaged, or that would need to run code to be
unpickled raises :class:`~mmmambaout.utils.cli_base.UserError` whose message names the
problem and the fix. A checkpoint that needs code is refused, naming the global it asked
for; the message never suggests turning the safe loading off.
"""
import pickle
import re
import zipfile

from .cli_base import UserError, check_checkpoint_path, refusal_message

_GLOBAL = re.compile(r'GLOBAL ([\w.]+)')


def refused_global(err):
    """The global a refused ``torch.load(weights_only=True)`` asked for, or None."""
    match = _GLOBAL.search(str(err))
    if not match:
        return None
    name = match.group(1)
    return name if '.' in name else f'builtins.{name}'  # torch names builtins bare


def check_checkpoint_loads(path, what, fix='', allowed_globals=None):
    """Raise :class:`UserError` unless ``path`` loads as a checkpoint without running code.

    Args:
        path (str): the checkpoint file.
        what (str): where it comes from, as the user wrote it (``'CHECKPOINT'``,
            ``'load_from'``, ``'model.backbone.init_cfg.checkpoint'``, ...).
        fix (str): how to give a good one (appended when it is missing or not a
            checkpoint).
        allowed_globals: what the real loader allows besides tensors and containers
            (default: :data:`mmmambaout.checkpoint.RELEASED_CHECKPOINT_GLOBALS`).
    """
    import torch

    check_checkpoint_path(path, what, fix)  # missing, or not a checkpoint by its bytes
    if path.endswith('.safetensors'):
        return  # no pickle; the header was checked
    if allowed_globals is None:
        from mmmambaout.checkpoint import RELEASED_CHECKPOINT_GLOBALS
        allowed_globals = RELEASED_CHECKPOINT_GLOBALS
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            torch.load(path, map_location='cpu', weights_only=True,
                       mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        if 'pickle data was truncated' in str(err):
            raise UserError(_damaged(path, what, err)) from None
        raise UserError(refusal_message(path, what, refused_global(err))) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise UserError(_damaged(path, what, err)) from None


def _damaged(path, what, err):
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f'{what}: {path} could not be read as a checkpoint ({reason}): it is damaged '
            '(e.g. cut off while being downloaded or copied) or was not written by '
            'torch.save. Fetch or copy it again.')
