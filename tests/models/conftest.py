import logging
import re

import pytest
import torch
from mmengine.logging import MMLogger


@pytest.fixture
def fresh_dynamo():
    """No compiled function or graph leaks between tests (nor into other test files)."""
    from torch._dynamo.utils import counters

    from mmmambaout.models.layers.compiled_blocks import compiled_blocks_runner

    def reset():
        compiled_blocks_runner.cache_clear()
        torch._dynamo.reset()
        counters.clear()
    reset()
    yield
    reset()


@pytest.fixture(scope='module')
def timm_femto():
    """timm's mambaout_femto with every parameter perturbed (LN weights too)."""
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    model = timm.create_model('mambaout_femto').eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _timm_to_official_key(k):
    """timm -> official key names: the documented mapping (reference/mambaout.md), backwards."""
    k = re.sub(r'^stem\.', 'downsample_layers.0.', k)
    k = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', k)
    k = re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.', k)
    k = re.sub(r'^head\.norm\.', 'norm.', k)
    k = re.sub(r'^head\.pre_logits\.fc\.', 'head.fc1.', k)
    k = re.sub(r'^head\.pre_logits\.norm\.', 'head.norm.', k)
    return re.sub(r'^head\.fc\.', 'head.fc2.', k)


@pytest.fixture(scope='module')
def femto_official_state_dict(timm_femto):
    """``timm_femto``'s weights under the official release's key names."""
    return {_timm_to_official_key(k): v for k, v in timm_femto.state_dict().items()}


class _Capture(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level=logging.WARNING):
        return '\n'.join(r.getMessage() for r in self.records if r.levelno >= level)


@pytest.fixture
def log():
    """What the mmengine logger printed during the test (``log.text(level)``)."""
    logger = MMLogger.get_current_instance()
    handler = _Capture()
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
