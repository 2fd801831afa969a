from .lazy_mask_pad import LazyMaskPadDetDataPreprocessor, LazyPaddedBitmapMasks  # noqa: F401
