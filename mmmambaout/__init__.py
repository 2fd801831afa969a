"""mmmambaout: MambaOut and Vim backbones for mmdetection, mmsegmentation and mmpretrain.

Importing the package, before anything else of OpenMMLab's:
1. provides ``mmcv._ext`` from torchvision's kernels when mmcv has no compiled ops,
   so that ``mmcv.ops``, ``mmdet.models`` and ``mmseg.models`` import and run;
2. applies :mod:`mmmambaout.compat`, every change we make to a third-party library
   (mmengine's checkpoint loader, mmpretrain's multimodal switch), each only on the
   library version it was written for;
3. registers the backbones, heads and hooks in the mmdet, mmseg, mmpretrain and mmengine
   registries, and the loaders of released weights by URL in mmengine's CheckpointLoader.

Nothing else global: no warning filters, no library settings.
"""
from . import compat
from .ops.mmcv_backend import install_mmcv_ops_backend
from .version import __version__

install_mmcv_ops_backend()
compat.apply()

from . import engine, models  # noqa: E402,F401  (registers hooks and models)
from .checkpoint import register_release_loaders  # noqa: E402

register_release_loaders()

__all__ = ['__version__']
