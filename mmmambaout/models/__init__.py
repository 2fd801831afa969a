from . import backbones, data_preprocessors, heads, roi_extractors, task_modules  # noqa: F401
