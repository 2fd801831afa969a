"""mmengine 0.10.7 on torch >= 2.6: resume (``--resume``) and ``load_from`` with
``weights_only`` kept on.

Written for: mmengine 0.10.7 (any other version: warned about once, left alone).

Resuming a run and ``load_from`` go through
``mmengine.runner.checkpoint._load_checkpoint`` -> ``torch.load`` without
``weights_only``. Since torch 2.6 that means ``weights_only=True``, and the Runner's own
checkpoints hold a few non-tensor objects in their ``meta`` / ``message_hub`` entries,
so loading fails with an UnpicklingError. We keep ``weights_only=True`` and allow,
only while mmengine's checkpoint loader runs, exactly the globals its checkpoints
contain (numpy arrays and scalars, mmengine's ``HistoryBuffer``).

``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'mean')``.
Allowing the real ``builtins.getattr`` would let a pickle reach any attribute of any
allowed object (and from there ``__globals__``), so the name is bound to a getattr that
only looks up registered statistics methods on ``HistoryBuffer``.

The change: ``mmengine.runner.checkpoint._load_checkpoint`` and the same function as
imported into ``mmengine.runner.runner`` and ``mmengine.infer.infer`` are wrapped
(``__wrapped__`` is the original).
"""
import contextlib
import functools

import numpy as np
import torch

from ._version import written_for

LIBRARY = 'mmengine'
WRITTEN_FOR = ('0.10.7', )


def _history_buffer_getattr(obj, name):
    from mmengine.logging import HistoryBuffer
    # the defaults are set on the first HistoryBuffer built, so name them here too
    allowed = {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise RuntimeError(
        f'refused getattr({obj!r}, {name!r}) while loading an mmengine checkpoint: '
        'only HistoryBuffer statistics methods may be looked up')


def mmengine_checkpoint_globals():
    """The globals an mmengine Runner checkpoint needs beyond tensors and containers."""
    from mmengine.logging import HistoryBuffer
    return [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        (np._core.multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        (np._core.multiarray.scalar, 'numpy._core.multiarray.scalar'),
        # numpy 1.x names of the same functions, for checkpoints written there
        (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (np._core.multiarray.scalar, 'numpy.core.multiarray.scalar'),
        # each concrete dtype class (numpy.dtypes.Float64DType, ...) pickles by name
        *{type(np.dtype(c)) for c in np.typecodes['All'] if c not in 'Mm'},
        type(np.dtype('M8[s]')),
        type(np.dtype('m8[s]')),
        (_history_buffer_getattr, 'builtins.getattr'),
    ]


@contextlib.contextmanager
def mmengine_checkpoint_allowlist():
    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        yield


def _with_mmengine_allowlist(load_fn):
    if getattr(load_fn, '_mmmambaout_allowlist', False):
        return load_fn

    @functools.wraps(load_fn)
    def load(*args, **kwargs):
        with mmengine_checkpoint_allowlist():
            return load_fn(*args, **kwargs)

    load._mmmambaout_allowlist = True
    return load


def apply():
    """Wrap every name under which mmengine calls its checkpoint loader (mmengine 0.10.7
    only). Returns whether the change is in place."""
    if not written_for(LIBRARY, WRITTEN_FOR, "mmmambaout's fix of mmengine's checkpoint "
                       'loading on torch >= 2.6',
                       '--resume and load_from of Runner checkpoints may fail with an '
                       'UnpicklingError on torch >= 2.6'):
        return False
    from mmengine.infer import infer
    from mmengine.runner import checkpoint, runner
    # the defining module and the two that import the name at their top (the Runner, and
    # BaseInferencer behind mmdet's DetInferencer / mmseg's MMSegInferencer); the others
    # import it when called, and so get the wrapped one
    for module in (checkpoint, runner, infer):
        module._load_checkpoint = _with_mmengine_allowlist(module._load_checkpoint)
    return True
