"""``compiled_blocks_runner``: one compiled function per stage name, mode and budget; the
one torch setting it changes, and only for CUDA graph mode. (Its outputs and gradients
against eager: tests/models/backbones/test_mambaout_compile.py, through MambaOut.)"""
import pytest
import torch

from mmmambaout.models.layers.compiled_blocks import compiled_blocks_runner


@pytest.fixture(autouse=True)
def fresh_dynamo():
    compiled_blocks_runner.cache_clear()
    yield
    compiled_blocks_runner.cache_clear()
    torch._dynamo.reset()


def test_one_function_per_name_mode_and_budget():
    first = compiled_blocks_runner('probe')
    assert compiled_blocks_runner('probe') is first
    assert compiled_blocks_runner('probe', 'max-autotune') is not first
    assert compiled_blocks_runner('probe', 'default', 0.5) is not first
    assert compiled_blocks_runner('other') is not first


def test_cuda_graph_mode_silences_the_per_size_warning(monkeypatch):
    from torch._inductor import config as inductor_config
    monkeypatch.setattr(inductor_config.triton, 'cudagraph_dynamic_shape_warn_limit', 8)
    compiled_blocks_runner('warn_limit_probe')
    assert inductor_config.triton.cudagraph_dynamic_shape_warn_limit == 8
    compiled_blocks_runner('warn_limit_probe', 'reduce-overhead')
    assert inductor_config.triton.cudagraph_dynamic_shape_warn_limit is None
