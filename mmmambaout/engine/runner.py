"""A Runner that writes the environment report and the config to the log file only.

mmengine's Runner logs, at INFO when it is built, the environment (~40 lines) and the whole
config (~900 lines for Mask R-CNN) to the terminal and to the log file; tools/run_demo.sh
builds two runners (training, then testing), so the terminal got both twice. Here they go
to the log file only, and the terminal gets one line saying where. So do the table of
hooks by stage (~100 lines) and the ~600 lines with which mmengine's optimizer
constructor reports each parameter's weight decay. Warnings that no user of these configs
can act on (OpenMMLab about its own code or its deliberate defaults) are left out while
the model and the hooks are built; each is named where it is. Named by
``runner_type`` in the runtime bases, so mmdet's and mmseg's own tools/train.py and
tools/test.py build it too (they do when a config has ``runner_type``).
"""
import contextlib
import logging
import warnings

from mmengine.registry import RUNNERS
from mmengine.runner import Runner


class _Nothing(logging.Filter):

    def filter(self, record):
        return False


class _FirstStartingWith(logging.Filter):
    """Drops the first record whose message starts with ``prefix``, then removes itself."""

    def __init__(self, handler, prefix):
        super().__init__()
        self.handler, self.prefix = handler, prefix

    def filter(self, record):
        if not record.getMessage().startswith(self.prefix):
            return True
        self.handler.removeFilter(self)
        return False


class _StartingWith(logging.Filter):

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not record.getMessage().startswith(self.prefix)


def _screen_handlers(logger):
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def log_file_only(logger):
    """Records logged by ``logger`` inside the block reach its file handlers only."""
    screens = _screen_handlers(logger)
    nothing = _Nothing()
    for handler in screens:
        handler.addFilter(nothing)
    try:
        yield
    finally:
        for handler in screens:
            handler.removeFilter(nothing)


@RUNNERS.register_module()
class LogFileConfigRunner(Runner):
    """mmengine's Runner, with the environment, the config, the hooks and the optimizer's
    parameter settings logged to the log file only."""

    def _log_env(self, env_cfg):
        with log_file_only(self.logger):
            super()._log_env(env_cfg)
        for handler in _screen_handlers(self.logger):
            # the Runner then logs its hooks, ~100 lines, one table per stage
            handler.addFilter(_FirstStartingWith(handler, 'Hooks will be executed in the'))
            # mmengine, for each metric without a default prefix (mmseg's IoUMetric):
            # giving one would rename the metrics that configs and save_best refer to
            handler.addFilter(_StartingWith('The prefix is not set in metric class'))
        files = [h.baseFilename for h in self.logger.handlers if isinstance(h, logging.FileHandler)]
        if files:
            self.logger.info(f'environment and config: {files[0]}')

    def build_model(self, model):
        with warnings.catch_warnings():
            # mmseg about its own code: its heads build their losses with build_loss, and
            # CrossEntropyLoss warns about its default avg_non_ignore=False, which the
            # configs keep on purpose (mmseg's recipe, the paper's numbers)
            warnings.filterwarnings('ignore', '``build_loss`` would be deprecated', UserWarning)
            warnings.filterwarnings('ignore', 'Default ``avg_non_ignore`` is False', UserWarning)
            return super().build_model(model)

    def register_hooks(self, default_hooks=None, custom_hooks=None):
        with warnings.catch_warnings():
            # mmseg's visualization hook, built with draw=False for training (tools/test.py
            # --show-dir sets draw=True), warns that it will draw nothing
            warnings.filterwarnings('ignore', 'The draw is False', UserWarning)
            return super().register_hooks(default_hooks, custom_hooks)

    def test(self):
        with warnings.catch_warnings():
            # mmengine's visualizer, drawing a prediction that reaches the image border
            # (boxes are in the resized image's float coordinates): it is drawn clipped
            warnings.filterwarnings('ignore', 'Warning: The (bbox|polygon) is out of bounds',
                                    UserWarning)
            return super().test()

    def build_optim_wrapper(self, optim_wrapper):
        with log_file_only(self.logger):  # a line per parameter with its own decay or lr
            return super().build_optim_wrapper(optim_wrapper)
