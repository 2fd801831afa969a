"""Every change mmmambaout makes to a third-party library, in one place.

One module per change, each naming the library versions it was written for. Before
changing anything it checks the installed version (``importlib.metadata``); with any
other version it warns once per process (:class:`UnsupportedVersionWarning`) and leaves
the library alone. ``import mmmambaout`` calls :func:`apply`.

* :mod:`.mmengine_checkpoint` (mmengine 0.10.7): mmengine's checkpoint loader keeps
  ``torch.load(weights_only=True)`` on torch >= 2.6 and still reads the Runner's own
  checkpoints (``--resume``, ``load_from``).
* :mod:`.mmpretrain_multimodal` (mmpretrain 1.2.0, with transformers >= 5): multimodal
  models switched off so that ``import mmpretrain.models`` works.

The op backend for mmcv (``mmcv._ext`` from torchvision / Triton kernels, only when mmcv
has no compiled ops) is a provider, not a change to mmcv's code:
:mod:`mmmambaout.ops.mmcv_backend`.

NumPy 2 needs no change: the mmdet / mmseg / mmpretrain code paths this project uses
(COCO and ADE20K loading, CocoMetric, IoUMetric, Accuracy) use no name that NumPy 2
removed; the end-to-end tests run them on NumPy 2.4. Known removed names remain in code
paths we do not use (mmpretrain's retrieval metric ``np.in1d``, mmdet's YouTube-VIS
``np.float``).
"""
from ._version import UnsupportedVersionWarning

__all__ = ['UnsupportedVersionWarning', 'apply']


def apply():
    """Apply every change whose library is at a version it was written for.

    Returns ``{module name: applied}``; safe to call more than once."""
    from . import mmengine_checkpoint, mmpretrain_multimodal
    return {m.__name__.rsplit('.', 1)[-1]: m.apply()
            for m in (mmengine_checkpoint, mmpretrain_multimodal)}
