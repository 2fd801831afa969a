"""mmmambaout: MambaOut and Vim backbones for mmdetection, mmsegmentation and mmpretrain.

Importing the package, before anything else of OpenMMLab's:
1. provides ``mmcv._ext`` from torchvision's kernels when mmcv has no compiled ops,
   so that ``mmcv.ops``, ``mmdet.models`` and ``mmseg.models`` import and run;
2. mends what mmengine 0.10.7 gets wrong on today's PyTorch and NumPy;
3. registers the backbones and heads in the mmdet, mmseg and mmpretrain registries.
"""
import warnings

# mmengine 0.10.7 imports pkg_resources (kept by our setuptools<81 pin), which warns on
# every import; the warning is about mmengine, not something a user can act on.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from .ops.mmcv_backend import install_mmcv_ops_backend  # noqa: E402
from .utils.compat import apply_compat_patches  # noqa: E402
from .version import __version__  # noqa: E402

install_mmcv_ops_backend()
apply_compat_patches()

from . import engine, models  # noqa: E402,F401  (registers hooks and models)

__all__ = ['__version__']
