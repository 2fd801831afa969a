# mmmambaout_mmcv_finder may have loaded mmcv_backend before this package (by path, when
# mmcv.ops was imported first): bind it here as the package's attribute either way
from . import mmcv_backend  # noqa: F401
