from . import backbones, data_preprocessors, heads, task_modules  # noqa: F401
