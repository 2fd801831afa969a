from . import backbones, heads, task_modules  # noqa: F401
